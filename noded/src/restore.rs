//! Restore preparation: what must be on this node before the runtime can restore a
//! checkpoint image: its base image (CRI-O never pulls it itself) and the emptyDir volumes
//! that travelled with it, in the restored pod's directories. CRI `RestorePod` plugs in here
//! too.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use checkpointing::archive::{self, CheckpointConfig};
use checkpointing::cri::{CriError, Runtime};
use k8s_openapi::api::core::v1::Pod;

use crate::error::error_chain;
use crate::locks::KeyedLocks;
use crate::volumes::{self, Owners};

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

/// Who the volumes placed for `pod`, restoring `image`, belong to. When the containers running
/// the image run as a user other than root (their `runAsUser`, else the pod's), that user, who
/// must be able to write them, with the pod's `fsGroup`, else the `runAsGroup`, else group 0.
/// When one may run as root (no `runAsUser`, or 0), the owners the layer records: root may
/// change anything in its volume anyway, and the restored processes keep their own users.
pub fn owners_of(pod: &Pod, image: &str) -> Owners {
    let Some(spec) = pod.spec.as_ref() else {
        return Owners::Recorded;
    };
    let of_pod = spec.security_context.as_ref();
    let mut users = spec
        .containers
        .iter()
        .filter(|c| c.image.as_deref() == Some(image))
        .map(|c| {
            let own = c.security_context.as_ref();
            let uid = own.and_then(|s| s.run_as_user);
            let gid = own.and_then(|s| s.run_as_group);
            (
                uid.or(of_pod.and_then(|s| s.run_as_user)),
                gid.or(of_pod.and_then(|s| s.run_as_group)),
            )
        });
    let Some(first) = users.next() else {
        return Owners::Recorded;
    };
    let id = |raw: Option<i64>| raw.and_then(|raw| u32::try_from(raw).ok());
    let not_root = |(uid, _): &(Option<i64>, Option<i64>)| id(*uid).is_some_and(|uid| uid != 0);
    if !not_root(&first) || !users.all(|user| not_root(&user)) {
        return Owners::Recorded;
    }
    let (uid, group) = first;
    let gid = of_pod.and_then(|s| s.fs_group).or(group);
    Owners::Pod {
        uid: id(uid).unwrap_or_default(),
        gid: id(gid).unwrap_or(0),
    }
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
    /// volume once per pod, its files belonging to `owners` (see [`owners_of`]).
    pub async fn place_volumes(
        &self,
        uid: &str,
        layer: &Path,
        owners: Owners,
    ) -> Result<(), RestoreError> {
        // One image at a time per pod: its containers' pulls must not interleave.
        let lock = self.locks.get(uid);
        let _placing = lock.lock().await;
        let placed = tokio::task::block_in_place(|| {
            volumes::place(layer, &self.pods_dir, uid, owners, |volume| {
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
    use crate::testing::{digest, pod};
    use k8s_openapi::api::core::v1::{Container, PodSecurityContext, SecurityContext};

    #[test]
    fn volumes_belong_to_the_pods_user_unless_it_may_run_as_root() {
        const IMAGE: &str = "localhost:5050/team-a/cp@sha256:aa";
        let restoring = |of_pod: Option<PodSecurityContext>, own: Option<SecurityContext>| {
            let mut p = pod("team-a", "web", "uid-web", "node1", IMAGE);
            let spec = p.spec.as_mut().unwrap();
            spec.security_context = of_pod;
            spec.containers[0].security_context = own;
            // A sidecar running as root does not count: it does not run the image.
            spec.containers.push(Container {
                name: "sidecar".into(),
                image: Some("busybox".into()),
                ..Default::default()
            });
            p
        };
        let pod_sc = |user, group, fs_group| PodSecurityContext {
            run_as_user: user,
            run_as_group: group,
            fs_group,
            ..Default::default()
        };
        let own_sc = |user, group| SecurityContext {
            run_as_user: user,
            run_as_group: group,
            ..Default::default()
        };
        let owners = |p: &Pod| owners_of(p, IMAGE);
        let as_pod = |uid, gid| Owners::Pod { uid, gid };
        // The pod's user, with its fsGroup, else its runAsGroup, else group 0.
        let p = restoring(Some(pod_sc(Some(1000), Some(3000), Some(2000))), None);
        assert_eq!(owners(&p), as_pod(1000, 2000));
        let p = restoring(Some(pod_sc(Some(1000), Some(3000), None)), None);
        assert_eq!(owners(&p), as_pod(1000, 3000));
        let p = restoring(Some(pod_sc(Some(1000), None, None)), None);
        assert_eq!(owners(&p), as_pod(1000, 0));
        // The container's own settings win over the pod's; fsGroup is the pod's alone.
        let p = restoring(
            Some(pod_sc(Some(1000), Some(3000), Some(2000))),
            Some(own_sc(Some(1500), Some(4000))),
        );
        assert_eq!(owners(&p), as_pod(1500, 2000));
        let p = restoring(None, Some(own_sc(Some(1500), Some(4000))));
        assert_eq!(owners(&p), as_pod(1500, 4000));
        // May run as root: the recorded owners.
        for p in [
            restoring(None, None),
            restoring(Some(pod_sc(None, Some(3000), Some(2000))), None),
            restoring(Some(pod_sc(Some(0), None, Some(2000))), None),
            restoring(
                Some(pod_sc(Some(1000), None, None)),
                Some(own_sc(Some(0), None)),
            ),
            restoring(Some(pod_sc(Some(-1), None, None)), None),
        ] {
            assert_eq!(owners(&p), Owners::Recorded, "{:?}", p.spec);
        }
        let mut no_spec = restoring(None, None);
        no_spec.spec = None;
        assert_eq!(owners(&no_spec), Owners::Recorded);
    }

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
