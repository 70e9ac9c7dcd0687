//! Garbage collection of copies of deleted checkpoints: cached images in the layout, the
//! runtime's pulled images (see [`images`]), archives whose finalizer was released without
//! this node (see [`archives`]), and what interrupted downloads left behind. This node's own
//! layout images and archives go with their Content's finalizer; copies fetched from peers,
//! the runtime's images and files left behind only here.

mod archives;
mod images;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::Runtime;
use checkpointing::oci::{ImageLayout, OciError};
use checkpointing::reference::Spelling;

use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::images::Images;
use crate::metrics::Metrics;
use crate::restore::Restore;

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("listing the checkpoints of the cluster")]
    Cluster(#[source] kube::Error),
    #[error("removing a cached image")]
    Layout(#[from] OciError),
}

/// What of the cluster's checkpoints is still there, from one list of its Contents.
#[derive(Debug, Default)]
pub struct Live {
    /// Content UIDs: the layout tags of their images.
    uids: HashSet<String>,
    /// Manifest digests by `<namespace>/<name>`: the path the node-local registry serves each
    /// Content's image under, whichever registry its `status.image` names (it serves pushed
    /// checkpoints too).
    images: HashMap<String, HashSet<String>>,
}

impl Live {
    pub fn of(contents: &[ContainerCheckpointContent]) -> Self {
        let mut live = Self::default();
        for content in contents {
            let meta = &content.metadata;
            live.uids.extend(meta.uid.clone());
            let (Some(namespace), Some(name)) = (&meta.namespace, &meta.name) else {
                continue;
            };
            let digests = live
                .images
                .entry(format!("{namespace}/{name}"))
                .or_default();
            let image = content.status.as_ref().and_then(|s| s.image.as_deref());
            if let Some(digest) = image.and_then(|i| Spelling::of(i).sha256()) {
                digests.insert(digest.to_owned());
            }
        }
        live
    }

    /// A Content `repo` (`<namespace>/<name>`) exists.
    fn has_repo(&self, repo: &str) -> bool {
        self.images.contains_key(repo)
    }

    /// The image `digest` of Content `repo` exists.
    fn has_image(&self, repo: &str, digest: &str) -> bool {
        self.images.get(repo).is_some_and(|d| d.contains(digest))
    }
}

/// Tags of the layout no Content has any more: cached copies of deleted checkpoints.
pub fn stale_tags(tags: &[String], live: &Live) -> Vec<String> {
    tags.iter()
        .filter(|t| !live.uids.contains(*t))
        .cloned()
        .collect()
}

/// What one round removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Layout tags (Content UIDs) of the cached copies.
    pub tags: Vec<String>,
    /// Ids of the runtime's images.
    pub images: Vec<String>,
    /// Files of the checkpoint directory.
    pub archives: Vec<String>,
}

/// What [`prune`] looks through.
pub struct Stores<'a, R> {
    pub layout: &'a ImageLayout,
    pub runtime: &'a R,
    /// Registry host the runtime's checkpoint images are named under (`--image-registry`).
    pub registry: &'a str,
    /// The checkpoint directory, where archives are.
    pub archives: &'a Path,
}

/// Removes the layout's and the runtime's copies, and the archives, of checkpoints whose
/// Content is gone. A runtime image that cannot be removed (a container uses it) is left for
/// the next round.
pub async fn prune<C: Cluster, R: Runtime>(
    cluster: &C,
    stores: Stores<'_, R>,
    metrics: &Metrics,
) -> Result<Pruned, GcError> {
    let Stores {
        layout,
        runtime,
        registry,
        archives,
    } = stores;
    // What is held is read before the Contents are listed: a copy made after that had its
    // Content looked up first, so it is in the list and never taken for a deleted one.
    let tags = layout.tags()?;
    let files = archives::list(archives).unwrap_or_else(|error| {
        tracing::warn!(dir = %archives.display(), %error, "listing the checkpoint directory failed; \
            its files of deleted checkpoints are removed next round");
        Vec::new()
    });
    let runtime_images = runtime.list_images().await.unwrap_or_else(|error| {
        tracing::warn!(error = %error_chain(&error), "listing the runtime's images failed; \
            its copies of deleted checkpoints are removed next round");
        Vec::new()
    });
    let live = Live::of(&cluster.all_contents().await.map_err(GcError::Cluster)?);

    let mut pruned = Pruned {
        tags: stale_tags(&tags, &live),
        images: Vec::new(),
        archives: archives::sweep(archives, &files, &live),
    };
    for image in images::stale(&runtime_images, registry, &live) {
        let references: Vec<&String> = image.repo_digests.iter().chain(&image.repo_tags).collect();
        match runtime.remove_image(&image.id).await {
            Ok(()) => {
                tracing::info!(id = %image.id, ?references, "removed the runtime's image of a deleted checkpoint");
                metrics.runtime_image_removal("removed");
                pruned.images.push(image.id.clone());
            }
            Err(error) => {
                tracing::warn!(id = %image.id, ?references, error = %error_chain(&error),
                    "removing the runtime's image of a deleted checkpoint failed; retrying next round");
                metrics.runtime_image_removal("failed");
            }
        }
    }
    // Last, so a layout error, which ends the round, leaves no runtime copy behind.
    for tag in &pruned.tags {
        tokio::task::block_in_place(|| layout.remove(tag))?;
        tracing::info!(%tag, "removed the cached image of a deleted checkpoint");
    }
    Ok(pruned)
}

/// Prunes the copies of deleted checkpoints on this node, round after round, and has restores
/// and images forget them.
pub struct Collector<R, C> {
    pub images: Arc<Images<C>>,
    pub restore: Arc<Restore<R, C>>,
    pub cluster: C,
    /// Registry host the runtime's checkpoint images are named under (`--image-registry`).
    pub registry: String,
    /// The checkpoint directory, where archives are.
    pub archives: PathBuf,
    pub metrics: Arc<Metrics>,
}

impl<R: Runtime, C: Cluster> Collector<R, C> {
    /// One round of [`prune`], forgetting what was removed.
    pub async fn round(&self) -> Result<Pruned, GcError> {
        let stores = Stores {
            layout: &self.images.layout,
            runtime: self.restore.runtime(),
            registry: &self.registry,
            archives: &self.archives,
        };
        let pruned = prune(&self.cluster, stores, &self.metrics).await?;
        for tag in &pruned.tags {
            self.restore.forget(tag);
        }
        Ok(pruned)
    }

    /// A round every `interval`, the first at once: what was left behind while noded was
    /// down goes now.
    pub async fn run(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if let Err(error) = self.round().await {
                tracing::warn!(error = %error_chain(&error), "pruning copies of deleted checkpoints failed");
            }
        }
    }
}

impl<R: Runtime, C: Cluster> Collector<R, C> {
    /// The last round, as noded stops: copies of checkpoints deleted since the previous one go
    /// too (at `helm uninstall`, every checkpoint: the cleanup hook waited until they were all
    /// deleted, and then stops the node daemons). Bounded: stopping must not hang on it.
    pub async fn last_round(&self, bound: Duration) {
        match tokio::time::timeout(bound, self.round()).await {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => tracing::warn!(error = %error_chain(&error),
                "the last pruning of copies of deleted checkpoints failed"),
            Err(_) => tracing::warn!(
                bound_secs = bound.as_secs(),
                "the last pruning of copies of deleted checkpoints did not end in time"
            ),
        }
    }
}

/// Removes what interrupted downloads left in the layout's ingest directory.
pub fn clear_ingest(layout: &ImageLayout) -> std::io::Result<()> {
    let dir = layout.ingest_dir();
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use checkpointing::admin::Telemetry as _;

    use super::*;
    use crate::testing::{FakeCluster, FakeRuntime, content, digest};

    /// Content `<namespace>/<name>`, UID `uid`, ready as `image` when there is one.
    fn named(
        namespace: &str,
        name: &str,
        uid: &str,
        image: Option<String>,
    ) -> ContainerCheckpointContent {
        let mut c = content("node1", image);
        c.metadata.namespace = Some(namespace.into());
        c.metadata.name = Some(name.into());
        c.metadata.uid = Some(uid.into());
        c
    }

    #[test]
    fn only_tags_without_a_content_are_stale() {
        let tags = vec!["a".to_owned(), "b".to_owned()];
        let live = Live::of(&[named("ns", "b", "b", None), named("ns", "c", "c", None)]);
        assert_eq!(stale_tags(&tags, &live), ["a"]);
    }

    #[test]
    fn a_content_is_live_under_its_own_path_whichever_registry_it_names() {
        let live = Live::of(&[
            named(
                "ns",
                "local",
                "1",
                Some(format!("localhost:5050/ns/local@{}", digest('a'))),
            ),
            named(
                "ns",
                "pushed",
                "2",
                Some(format!("registry.example/x/ns/pushed@{}", digest('b'))),
            ),
            named("ns", "pending", "3", None),
        ]);
        assert!(live.has_image("ns/local", &digest('a')));
        assert!(live.has_image("ns/pushed", &digest('b')));
        assert!(!live.has_image("ns/local", &digest('b')));
        assert!(live.has_repo("ns/pending"));
        assert!(!live.has_repo("other/local"));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn prune_sweeps_the_old_archives_of_deleted_checkpoints_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = crate::store::CheckpointDir::open(tmp.path().join("checkpoints")).unwrap();
        let layout = ImageLayout::open(dir.root().join("oci")).unwrap();
        let key = |uid| crate::store::ArchiveKey {
            namespace: "ns",
            pod: "p",
            container: "c",
            uid,
        };
        let (live, gone, young) = (
            "11111111-2222-3333-4444-555555555555",
            "66666666-7777-8888-9999-aaaaaaaaaaaa",
            "bbbbbbbb-cccc-dddd-eeee-ffffffffffff",
        );
        let volumes = |uid| dir.volumes_path(&key(uid));
        let files = [
            dir.archive_path(&key(live)),
            // A checkpoint in flight, long running: its Content exists.
            dir.partial_path(&key(live)),
            volumes(live).with_extension("partial"),
            dir.archive_path(&key(gone)),
            volumes(gone),
            dir.partial_path(&key(gone)),
            volumes(gone).with_extension("partial"),
            // Just written: not yet anyone's to judge.
            dir.archive_path(&key(young)),
            dir.root().join("notes.txt"),
        ];
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for path in &files {
            let file = std::fs::File::create(path).unwrap();
            if !path.to_string_lossy().contains(young) {
                file.set_modified(hour_ago).unwrap();
            }
        }
        // A link named like an orphan is not a file of ours: neither it nor its target goes.
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "keep").unwrap();
        let link = dir.archive_path(&key("00000000-0000-0000-0000-000000000000"));
        std::os::unix::fs::symlink(&outside, &link).unwrap();

        let cluster = Arc::new(FakeCluster::default());
        cluster
            .contents
            .lock()
            .unwrap()
            .push(named("ns", "live", live, None));
        let stores = Stores {
            layout: &layout,
            runtime: &FakeRuntime::default(),
            registry: "localhost:5050",
            archives: dir.root(),
        };
        let pruned = prune(&cluster, stores, &Metrics::default()).await.unwrap();

        let name = |p: &std::path::PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
        let mut removed = pruned.archives.clone();
        removed.sort();
        let mut expected: Vec<String> = files[3..7].iter().map(name).collect();
        expected.sort();
        assert_eq!(removed, expected);
        for kept in files[..3].iter().chain(&files[7..]) {
            assert!(kept.exists(), "{}", kept.display());
        }
        assert!(dir.root().join("oci").is_dir());
        assert!(link.symlink_metadata().is_ok());
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "keep");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn prune_removes_the_runtime_images_of_deleted_checkpoints_only() {
        let tmp = tempfile::tempdir().unwrap();
        let layout = ImageLayout::open(tmp.path().join("oci")).unwrap();
        let image = |name: &str, d: char| format!("localhost:5050/ns/{name}@{}", digest(d));
        let live = image("live", 'a');
        let (dead, busy, also_dead) = (image("gone", 'b'), image("busy", 'c'), image("old", 'd'));
        let base = "docker.io/library/busybox@sha256:00".to_owned();
        let runtime = FakeRuntime {
            in_use: HashSet::from([busy.clone()]),
            ..Default::default()
        };
        runtime.images.lock().unwrap().extend([
            live.clone(),
            dead.clone(),
            busy.clone(),
            also_dead.clone(),
            base.clone(),
        ]);
        let cluster = Arc::new(FakeCluster::default());
        cluster
            .contents
            .lock()
            .unwrap()
            .push(named("ns", "live", "uid-live", Some(live.clone())));
        let metrics = Metrics::default();

        let stores = Stores {
            layout: &layout,
            runtime: &runtime,
            registry: "localhost:5050",
            archives: tmp.path(),
        };
        let pruned = prune(&cluster, stores, &metrics).await.unwrap();

        let mut removed = pruned.images.clone();
        removed.sort();
        assert_eq!(
            removed,
            [dead.clone(), also_dead.clone()],
            "the busy one failed"
        );
        let mut asked = runtime.removals.lock().unwrap().clone();
        asked.sort();
        assert_eq!(
            asked,
            [busy.clone(), dead, also_dead],
            "never the live or a foreign one"
        );
        let mut left: Vec<String> = runtime.images.lock().unwrap().iter().cloned().collect();
        left.sort();
        assert_eq!(left, [base, busy, live]);
        let text = metrics.render();
        for line in [
            "checkpointing_noded_runtime_image_removals_total{result=\"removed\"} 2",
            "checkpointing_noded_runtime_image_removals_total{result=\"failed\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
