//! Restore preparation: what must be on this node before the runtime can restore a
//! checkpoint image: its base image (CRI-O never pulls it itself) and the emptyDir volumes
//! that travelled with it, in the restored pod's directories. CRI `RestorePod` plugs in here
//! too.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use checkpointing::archive::{self, CheckpointConfig};
use checkpointing::cri::{CriError, Runtime};

use crate::error::error_chain;
use crate::locks::KeyedLocks;
use crate::volumes;

/// Why a checkpoint cannot be made restorable.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
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
    /// The runtime could not make the base image present.
    #[error("making base image {image} present")]
    BaseImage {
        image: String,
        #[source]
        source: CriError,
    },
}

/// The image the runtime needs before it can restore from the archive whose `config.dump` is
/// `config`: `rootfsImageRef` (name and digest), else `rootfsImageName`. A bare image id cannot
/// be pulled, so it is used only when nothing else is recorded.
pub fn base_image(config: &CheckpointConfig) -> Option<String> {
    let by_ref = &config.rootfs_image_ref;
    let bare_id = by_ref.starts_with("sha256:") || !by_ref.contains(['/', ':', '@']);
    [
        (!bare_id).then_some(by_ref),
        Some(&config.rootfs_image_name),
        Some(by_ref),
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.is_empty())
    .cloned()
}

/// Makes checkpoints restorable through the runtime `R`.
pub struct Restore<R> {
    runtime: R,
    locks: KeyedLocks,
    /// Base image of each checkpoint (by tag), read once from its archive's `config.dump`.
    bases: Mutex<HashMap<String, Option<String>>>,
    /// The kubelet's pods directory, where restored pods' emptyDir volumes are.
    pods_dir: PathBuf,
    /// (pod UID, volume) already placed: a second image of the same pod (another container)
    /// must not overwrite what a restored process is already writing.
    placed: Mutex<HashSet<(String, String)>>,
}

impl<R: Runtime> Restore<R> {
    pub fn new(runtime: R) -> Self {
        Self {
            runtime,
            locks: KeyedLocks::default(),
            bases: Mutex::default(),
            pods_dir: PathBuf::from(volumes::DEFAULT_PODS_DIR),
            placed: Mutex::default(),
        }
    }

    /// Places volumes under `dir` (the kubelet's pods directory as mounted here).
    pub fn with_pods_dir(mut self, dir: PathBuf) -> Self {
        self.pods_dir = dir;
        self
    }

    /// Unpacks the volumes layer at `layer` into the emptyDir directories of pod `uid`, each
    /// volume once per pod.
    pub async fn place_volumes(&self, uid: &str, layer: &Path) -> Result<(), RestoreError> {
        // One image at a time per pod: its containers' pulls must not interleave.
        let lock = self.locks.get(uid);
        let _placing = lock.lock().await;
        let placed = tokio::task::block_in_place(|| {
            // Owned like the directory the kubelet made for the pod (no pod spec at hand).
            let owner: Option<volumes::Ownership> = None;
            volumes::place(layer, &self.pods_dir, uid, owner, |volume| {
                !self
                    .placed
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&(uid.to_owned(), volume.to_owned()))
            })
        })
        .map_err(|source| RestoreError::Volumes {
            pod: uid.to_owned(),
            source,
        })?;
        if !placed.is_empty() {
            tracing::info!(pod = %uid, volumes = ?placed, "placed the checkpoint's emptyDir volumes");
        }
        let mut done = self.placed.lock().unwrap_or_else(|p| p.into_inner());
        done.extend(placed.into_iter().map(|v| (uid.to_owned(), v)));
        Ok(())
    }

    /// The runtime restores go through.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Makes sure the runtime holds the base image of the checkpoint `tag`, whose archive is
    /// at `archive`.
    pub async fn ensure_base(&self, tag: &str, archive: PathBuf) -> Result<(), RestoreError> {
        let cached = self
            .bases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .cloned();
        let image = match cached {
            Some(image) => image,
            None => {
                let image = read_base_image(archive).await?;
                self.bases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(tag.to_owned(), image.clone());
                image
            }
        };
        let Some(image) = image else {
            tracing::warn!(%tag, "the checkpoint names no base image; restoring may fail");
            return Ok(());
        };
        self.ensure_image(&image).await
    }

    /// Makes sure the runtime holds `image`, pulling it if not.
    pub async fn ensure_image(&self, image: &str) -> Result<(), RestoreError> {
        // One pull per base image, however many checkpoints of it are requested at once.
        let lock = self.locks.get(image);
        let _pulling = lock.lock().await;
        let failed = |source| RestoreError::BaseImage {
            image: image.to_owned(),
            source,
        };
        if self
            .runtime
            .image_status(image)
            .await
            .map_err(failed)?
            .is_some()
        {
            return Ok(());
        }
        tracing::info!(%image, "pulling the checkpoint's base image");
        self.runtime.pull_image(image).await.map_err(failed)?;
        Ok(())
    }

    /// Drops what is remembered of the checkpoint `tag` (its image is gone).
    pub fn forget(&self, tag: &str) {
        self.bases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tag);
    }
}

async fn read_base_image(archive: PathBuf) -> Result<Option<String>, RestoreError> {
    let config = tokio::task::spawn_blocking(move || archive::read_config(&archive))
        .await
        .map_err(|e| RestoreError::Archive(format!("reading config.dump: {e}")))?
        .map_err(|e| RestoreError::Archive(error_chain(&e)))?;
    Ok(base_image(&config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::digest;

    const BASE: &str = "docker.io/library/busybox@sha256:00";

    #[test]
    fn the_base_image_is_the_ref_unless_it_is_a_bare_id() {
        let config = |r: &str, n: &str| CheckpointConfig {
            rootfs_image_ref: r.into(),
            rootfs_image_name: n.into(),
            ..Default::default()
        };
        let name = "docker.io/library/busybox:latest";
        assert_eq!(base_image(&config(BASE, name)).as_deref(), Some(BASE));
        assert_eq!(base_image(&config("", name)).as_deref(), Some(name));
        assert_eq!(
            base_image(&config(&digest('1'), name)).as_deref(),
            Some(name)
        );
        assert_eq!(
            base_image(&config(&digest('1'), "")),
            Some(digest('1')),
            "better than nothing"
        );
        assert_eq!(base_image(&config("", "")), None);
    }
}
