//! The base image a checkpoint restores on top of: read once from its archive's `config.dump`
//! and made present in the runtime before the runtime restores. CRI-O never pulls it itself, so
//! a failed pull fails the restore; containerd pulls it when missing (anonymously), so there a
//! failed pull (noded's, with the node's credentials, and ahead) is only logged.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use checkpointing::archive::{self, CheckpointConfig};
use checkpointing::cri::Runtime;
use checkpointing::reference::Spelling;
use checkpointing::runtime::RuntimeKind;

use super::RestoreError;
use crate::error::error_chain;
use crate::locks::KeyedLocks;

/// The image the runtime needs before it can restore from the archive whose `config.dump` is
/// `config`: `rootfsImageRef` (name and digest), else `rootfsImageName`. A bare image id cannot
/// be pulled, so it is used only when nothing else is recorded.
pub fn base_image(config: &CheckpointConfig) -> Option<String> {
    let by_ref = &config.rootfs_image_ref;
    let bare_id = is_bare_id(by_ref);
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

/// Whether `image` is an image id (`sha256:<hex>`, or a word naming no host, tag, digest or
/// second path component) rather than a reference a runtime pulls.
fn is_bare_id(image: &str) -> bool {
    let spelling = Spelling::of(image);
    spelling.path == "sha256"
        || (spelling.host, spelling.tag, spelling.digest) == (None, None, None)
            && !spelling.path.contains('/')
}

/// The base images of checkpoints, made present through the runtime `R`.
pub struct BaseImages<R> {
    runtime: R,
    /// One pull per base image, however many checkpoints of it are requested at once.
    locks: KeyedLocks,
    /// Base image of each checkpoint (by tag), read once from its archive's `config.dump`.
    bases: Mutex<HashMap<String, Option<String>>>,
}

impl<R: Runtime> BaseImages<R> {
    pub fn new(runtime: R) -> Self {
        Self {
            runtime,
            locks: KeyedLocks::default(),
            bases: Mutex::default(),
        }
    }

    /// The runtime restores go through.
    pub fn runtime(&self) -> &R {
        &self.runtime
    }

    /// Makes sure the runtime holds the base image of the checkpoint `tag`, whose archive is
    /// at `archive`, zstd-compressed when `zstd` (a pushed image's).
    pub async fn ensure_base(
        &self,
        tag: &str,
        archive: PathBuf,
        zstd: bool,
    ) -> Result<(), RestoreError> {
        let cached = self
            .bases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .cloned();
        let image = match cached {
            Some(image) => image,
            None => {
                let image = read_base_image(archive, zstd).await?;
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
    async fn ensure_image(&self, image: &str) -> Result<(), RestoreError> {
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
        if let Err(e) = self.runtime.pull_image(image).await {
            if !self.runtime_pulls_it().await {
                return Err(failed(e));
            }
            tracing::warn!(%image, error = %error_chain(&e),
                "pulling the checkpoint's base image failed; the runtime pulls it itself as it restores");
        }
        Ok(())
    }

    /// Whether the runtime pulls a checkpoint's base image itself when it is missing; not when
    /// which runtime it is cannot be told.
    async fn runtime_pulls_it(&self) -> bool {
        self.runtime
            .version()
            .await
            .ok()
            .and_then(|v| RuntimeKind::detect(&v.runtime_name))
            .is_some_and(RuntimeKind::pulls_base_image)
    }

    /// Drops what is remembered of the checkpoint `tag` (its image is gone).
    pub fn forget(&self, tag: &str) {
        self.bases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tag);
    }
}

async fn read_base_image(archive: PathBuf, zstd: bool) -> Result<Option<String>, RestoreError> {
    let config = tokio::task::spawn_blocking(move || {
        if !zstd {
            return archive::read_config(&archive);
        }
        let file = std::fs::File::open(&archive).and_then(zstd::Decoder::new);
        match file {
            Ok(decoded) => archive::read_config_from(&archive, decoded),
            Err(source) => Err(archive::ArchiveError::Io {
                path: archive.display().to_string(),
                source,
            }),
        }
    })
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
