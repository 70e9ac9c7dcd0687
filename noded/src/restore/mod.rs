//! Everything a restore needs on this node, gathered by purpose: the checkpoint image here,
//! the base image it restores on top of present in the runtime ([`base`]), and the emptyDir
//! volumes that travelled with it in the restored pod's directories ([`place`]).
//!
//! One trigger drives it: a pod bound to this node that the webhook admitted to restore
//! ([`arrivals`]). The image is fetched at once, while the kubelet still makes the pod's
//! sandbox ([`Restore::ahead`]); the rest waits for the runtime's pull of that image, which
//! the node-local registry answers only once [`Restore::prepared`] says the pod's restore is
//! ready: the kubelet has made the pod's emptyDir directories by then. CRI `RestorePod` would
//! plug in at [`Restore::prepared`] too.

use std::path::PathBuf;
use std::sync::Arc;

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::{CriError, Runtime};
use checkpointing::reference::ImageRef;
use oci_spec::image::MediaType;
use tracing::Instrument as _;

use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::images::{Image, ImageError, Images, Repo, ready_image, tag_of};
use crate::volumes::{self, Owners};

pub mod arrivals;
mod base;
mod owners;
mod place;

use base::BaseImages;
pub use base::base_image;
pub use owners::owners_of;
use place::Placement;

/// Why a checkpoint cannot be made restorable.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// The checkpoint image cannot be had here.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The checkpoint's own files cannot be read.
    #[error("{0}")]
    Archive(String),
    /// The volumes could not be put in the pod's directories.
    #[error("placing the checkpoint's emptyDir volumes into pod {pod}")]
    Volumes {
        pod: String,
        #[source]
        source: volumes::Error,
    },
    /// The runtime could not make the base image present, and will not pull it itself.
    #[error("making base image {image} present")]
    BaseImage {
        image: String,
        #[source]
        source: CriError,
    },
}

/// The pod a restore is prepared for: its UID, and who the files placed in its volumes
/// belong to (see [`owners_of`]).
#[derive(Clone, Copy, Debug)]
pub struct ForPod<'a> {
    pub uid: &'a str,
    pub owners: Owners,
}

/// Makes checkpoints restorable on this node through the runtime `R`.
pub struct Restore<R, C> {
    images: Arc<Images<C>>,
    cluster: C,
    base: BaseImages<R>,
    placement: Placement,
}

impl<R: Runtime, C: Cluster> Restore<R, C> {
    pub fn new(images: Arc<Images<C>>, cluster: C, runtime: R) -> Self {
        Self {
            images,
            cluster,
            base: BaseImages::new(runtime),
            placement: Placement::new(PathBuf::from(volumes::DEFAULT_PODS_DIR)),
        }
    }

    /// Places volumes under `dir` (the kubelet's pods directory as mounted here).
    pub fn with_pods_dir(mut self, dir: PathBuf) -> Self {
        self.placement = Placement::new(dir);
        self
    }

    /// The runtime restores go through.
    pub fn runtime(&self) -> &R {
        self.base.runtime()
    }

    /// Fetches the checkpoint image `<local>/<namespace>/<name>@<digest>` a pod admitted here
    /// will pull, before the runtime asks (overlapping the kubelet's sandbox).
    pub async fn ahead(&self, image: &ImageRef) -> Result<(), RestoreError> {
        let unknown = || ImageError::Unknown(format!("{image}: no checkpoint"));
        let (repo, digest) = Repo::of_image(image).ok_or_else(unknown)?;
        let content = self
            .cluster
            .content(&repo.namespace, &repo.name)
            .await
            .map_err(|e| {
                ImageError::Unavailable(format!(
                    "looking up checkpoint {repo}: {}",
                    error_chain(&e)
                ))
            })?
            .ok_or_else(unknown)?;
        let (_, wanted) = ready_image(&content).map_err(|e| ImageError::Unknown(e.to_string()))?;
        if wanted != digest {
            return Err(unknown().into());
        }
        let span = tracing::info_span!("restore ahead", checkpoint = %repo, %digest,
            node = %self.images.node());
        self.images
            .fetched(&repo, &content, &digest)
            .instrument(span)
            .await?;
        Ok(())
    }

    /// The image `digest` of `content`, once everything `pod` needs to restore from it is on
    /// this node: the image, its base image in the runtime, its volumes in the pod's
    /// directories. Each part is done once, so asking again is cheap.
    pub async fn prepared(
        &self,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
        pod: ForPod<'_>,
    ) -> Result<Arc<Image>, RestoreError> {
        let span = tracing::info_span!("restore", pod = %pod.uid, checkpoint = %repo, %digest,
            node = %self.images.node());
        async {
            let image = self.images.fetched(repo, content, digest).await?;
            let archive = image.archive()?;
            let zstd = archive.media_type() == &MediaType::ImageLayerZstd;
            let path = self.images.layout.blob_path(archive.digest());
            self.base.ensure_base(tag_of(content), path, zstd).await?;
            if let Some(layer) = image.volumes() {
                let path = self.images.layout.blob_path(layer.digest());
                self.placement.place(pod.uid, &path, pod.owners).await?;
            }
            Ok(image)
        }
        .instrument(span)
        .await
    }

    /// Drops what is remembered of the checkpoint `tag` (its image is gone).
    pub fn forget(&self, tag: &str) {
        self.base.forget(tag);
        self.images.forget(tag);
    }
}
