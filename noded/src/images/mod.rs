//! The checkpoint images this node can serve: the node-local OCI layout, tagged by Content
//! UID; the image behind a Content, its manifest read and checked against its digest once; and
//! fetching an image this node does not hold from the node that does ([`peer`]). Where an
//! image comes from is decided from its Content alone ([`source`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::digest::sha256_hex;
use checkpointing::names::checkpoint_image;
use checkpointing::oci::{ImageLayout, OciError};
use oci_spec::image::{Descriptor, ImageManifest};

use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;

mod peer;
mod repo;
mod source;

pub use peer::{FetchError, PeerClient};
pub use repo::Repo;
use source::{Source, source};
pub use source::{Unavailable, ready_image, repo_of, tag_of};

/// Why an image cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not here, and not to be had from where it should be.
    #[error("{0}")]
    Unknown(String),
    /// A dependency (the API server, this node's disk) is short: asking again may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The node holding the image failed us.
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Internal(String),
}

impl From<OciError> for ImageError {
    fn from(e: OciError) -> Self {
        Self::Internal(error_chain(&e))
    }
}

/// A manifest of the layout, its bytes verified against its digest.
pub struct Image {
    pub digest: String,
    pub bytes: Vec<u8>,
    pub manifest: ImageManifest,
}

impl Image {
    /// The checkpoint archive: the first layer.
    pub fn archive(&self) -> Result<&Descriptor, ImageError> {
        self.manifest
            .layers()
            .first()
            .ok_or_else(|| ImageError::Internal(format!("image {} has no layer", self.digest)))
    }

    /// The layer of emptyDir volumes that travelled with the checkpoint, when there is one.
    pub fn volumes(&self) -> Option<&Descriptor> {
        self.manifest.layers().iter().find(|l| {
            l.annotations()
                .as_ref()
                .is_some_and(|a| a.contains_key(checkpoint_image::VOLUMES_LAYER))
        })
    }

    /// The config or layer `digest` of the image.
    pub fn blob(&self, digest: &str) -> Option<&Descriptor> {
        std::iter::once(self.manifest.config())
            .chain(self.manifest.layers())
            .find(|d| d.digest().to_string() == digest)
    }
}

/// Whether an image this node does not hold is fetched from where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Only what the layout holds: what the peer server serves, so it never fetches further.
    Held,
    /// Fetched first when not held: what this node restores.
    Fetched,
}

pub struct Images<C> {
    pub layout: Arc<ImageLayout>,
    cluster: C,
    /// This node's name.
    node: String,
    pub peers: PeerClient,
    /// One fetch per image, however many requests ask at once.
    locks: KeyedLocks,
    /// Manifests read and checked, by tag: a pull's blob requests, and other pods' pulls,
    /// neither re-read nor re-hash them. A tag (a Content UID) never names another image.
    read: Mutex<HashMap<String, Arc<Image>>>,
    metrics: Arc<Metrics>,
}

impl<C: Cluster> Images<C> {
    pub fn new(layout: Arc<ImageLayout>, cluster: C, node: String, peers: PeerClient) -> Self {
        Self {
            layout,
            cluster,
            node,
            peers,
            locks: KeyedLocks::default(),
            read: Mutex::default(),
            metrics: Arc::default(),
        }
    }

    /// Records fetches and fetched bytes in `metrics` (the daemon's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The image `digest` of `content` if this node holds it.
    pub async fn held(
        &self,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
    ) -> Result<Arc<Image>, ImageError> {
        self.image(Reach::Held, repo, content, digest).await
    }

    /// The image `digest` of `content`, fetched first from the node holding it when this one
    /// does not.
    pub async fn fetched(
        &self,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
    ) -> Result<Arc<Image>, ImageError> {
        self.image(Reach::Fetched, repo, content, digest).await
    }

    /// Drops what is remembered of the image tagged `tag` (it is gone).
    pub fn forget(&self, tag: &str) {
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tag);
    }

    async fn image(
        &self,
        reach: Reach,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
    ) -> Result<Arc<Image>, ImageError> {
        let tag = tag_of(content);
        let known = self
            .read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .cloned();
        if let Some(image) = known {
            return same_digest(tag, image, digest);
        }
        let held = self.layout.resolve(tag)?.is_some();
        match source(content, &self.node, held).map_err(|e| ImageError::Unknown(e.to_string()))? {
            Source::Local => {}
            Source::Peer(node) if reach == Reach::Fetched => {
                self.fetch(repo, tag, &node, digest).await?;
            }
            Source::Peer(node) => {
                return Err(ImageError::Unknown(format!(
                    "this node does not hold the image of {repo} (node {node} does)"
                )));
            }
        }
        let image = Arc::new(self.read_local(tag, digest).await?);
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag.to_owned(), image.clone());
        Ok(image)
    }

    /// Fetches the image from `node` once, however many requests ask at the same time.
    async fn fetch(
        &self,
        repo: &Repo,
        tag: &str,
        node: &str,
        digest: &str,
    ) -> Result<(), ImageError> {
        let lock = self.locks.get(tag);
        let _fetching = lock.lock().await;
        if self.layout.resolve(tag)?.is_some() {
            return Ok(()); // fetched by the request we waited for
        }
        let ip = self
            .cluster
            .node_ip(node)
            .await
            .map_err(|e| {
                ImageError::Unavailable(format!("looking up node {node}: {}", error_chain(&e)))
            })?
            .ok_or_else(|| ImageError::Upstream(format!("node {node} has no InternalIP")))?;
        let pin = self
            .cluster
            .peer_pin(node)
            .await
            .map_err(|e| {
                ImageError::Unavailable(format!(
                    "looking up node {node}'s Lease: {}",
                    error_chain(&e)
                ))
            })?
            .ok_or_else(|| {
                ImageError::Upstream(format!(
                    "node {node}'s noded publishes no peer certificate in its Lease (not running, or an older version)"
                ))
            })?;
        let peer = SocketAddr::new(ip, self.peers.port);
        tracing::info!(%repo, %node, %peer, %digest, "fetching checkpoint image from its node");
        let started = std::time::Instant::now();
        let fetched = self
            .peers
            .fetch(peer, &pin, repo, digest, tag, &self.layout)
            .await;
        self.metrics.fetched(started.elapsed().as_secs_f64());
        match fetched {
            Ok(bytes) => {
                self.metrics.transferred("fetched", bytes);
                tracing::info!(%repo, %node, bytes, total = self.peers.transferred(), "checkpoint image fetched");
                Ok(())
            }
            Err(e) if e.is_not_found() => Err(ImageError::Unknown(error_chain(&e))),
            // Our disk, not the peer, is short: the pull may succeed once space is freed.
            Err(e @ FetchError::Space(_)) => Err(ImageError::Unavailable(error_chain(&e))),
            Err(e) => Err(ImageError::Upstream(error_chain(&e))),
        }
    }

    /// The manifest tagged `tag`, which must be `digest`, read and checked.
    async fn read_local(&self, tag: &str, digest: &str) -> Result<Image, ImageError> {
        let desc = self
            .layout
            .resolve(tag)?
            .ok_or_else(|| ImageError::Unknown(format!("no image tagged {tag}")))?;
        if desc.digest().to_string() != digest {
            return Err(other_digest(tag, desc.digest().as_ref(), digest));
        }
        let path = self.layout.blob_path(desc.digest());
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| ImageError::Internal(format!("reading {}: {e}", path.display())))?;
        let found = sha256_hex(&bytes);
        if desc.digest().digest() != found {
            return Err(ImageError::Internal(format!(
                "manifest {digest} on disk hashes to sha256:{found}"
            )));
        }
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(|e| ImageError::Internal(format!("parsing manifest {digest}: {e}")))?;
        Ok(Image {
            digest: digest.to_owned(),
            bytes,
            manifest,
        })
    }
}

fn same_digest(tag: &str, image: Arc<Image>, digest: &str) -> Result<Arc<Image>, ImageError> {
    if image.digest == digest {
        Ok(image)
    } else {
        Err(other_digest(tag, &image.digest, digest))
    }
}

fn other_digest(tag: &str, found: &str, wanted: &str) -> ImageError {
    ImageError::Unknown(format!("the local image of {tag} is {found}, not {wanted}"))
}
