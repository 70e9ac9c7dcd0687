//! Putting the emptyDir volumes that travelled with a checkpoint into the restored pod's
//! directories, each volume once per pod.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::RestoreError;
use crate::locks::KeyedLocks;
use crate::volumes::{self, Owners};

pub struct Placement {
    /// The kubelet's pods directory, where restored pods' emptyDir volumes are.
    pods_dir: PathBuf,
    /// One image at a time per pod: its containers' pulls must not interleave.
    locks: KeyedLocks,
    /// (pod UID, volume) already placed: a second image of the same pod (another container)
    /// must not overwrite what a restored process is already writing.
    placed: Mutex<HashSet<(String, String)>>,
}

impl Placement {
    pub fn new(pods_dir: PathBuf) -> Self {
        Self {
            pods_dir,
            locks: KeyedLocks::default(),
            placed: Mutex::default(),
        }
    }

    /// Unpacks the volumes layer at `layer` into the emptyDir directories of pod `uid`, each
    /// volume once per pod, its files belonging to `owners` (see [`super::owners_of`]).
    pub async fn place(&self, uid: &str, layer: &Path, owners: Owners) -> Result<(), RestoreError> {
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
}
