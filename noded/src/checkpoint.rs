//! Taking a checkpoint: find the container through CRI, have the runtime write the archive into
//! a temporary file, make it final, and package it as an OCI checkpoint image. Written against
//! the [`Runtime`] trait so it is tested with a recording fake.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpointing::archive::{self, ArchiveError};
use checkpointing::cri::{CriError, Runtime, api};
use checkpointing::names::kubelet;
use checkpointing::oci::{CheckpointMeta, ImageLayout, OciError, sha256_file};
use k8s_openapi::jiff::Timestamp;
use oci_spec::image::Descriptor;

use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::push::{PushError, Pusher};
use crate::store::{ArchiveKey, CheckpointDir};

/// What to checkpoint, from one Content.
#[derive(Clone, Debug)]
pub struct Job<'a> {
    /// Name of the request (and Content): the image repository's last component.
    pub name: &'a str,
    pub key: ArchiveKey<'a>,
    pub pod_uid: &'a str,
    pub timeout: Duration,
}

/// A finished checkpoint, as recorded in the Content status.
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    pub container_id: String,
    pub path: PathBuf,
    pub size: u64,
    /// `sha256:<hex>` of the archive (also the image's layer digest).
    pub digest: String,
    /// Image reference with the manifest digest.
    pub image: String,
    pub checkpoint_time: Timestamp,
    pub runtime: String,
}

/// Why a checkpoint did not happen, in words for the request's status message.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("container {container:?} of pod {namespace}/{pod} is not running on this node")]
    NotRunning {
        namespace: String,
        pod: String,
        container: String,
    },
    #[error(transparent)]
    Runtime(#[from] CriError),
    #[error("the runtime reported success but wrote no archive at {0}")]
    NoArchive(PathBuf),
    #[error("storing the archive")]
    Store(#[source] std::io::Error),
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Image(#[from] OciError),
    #[error("pushing the checkpoint image to registry {registry}")]
    Push {
        registry: String,
        #[source]
        source: Box<PushError>,
    },
    #[error(
        "noded restarted while this checkpoint was being taken and no archive was completed; create a new ContainerCheckpoint"
    )]
    Interrupted,
}

impl Failure {
    /// A short fixed name of the failure's kind, for metrics (messages are free text).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotRunning { .. } => "NotRunning",
            Self::Runtime(e) => match e {
                CriError::SocketMissing { .. }
                | CriError::Connect { .. }
                | CriError::Unavailable { .. } => "RuntimeUnavailable",
                CriError::DeadlineExceeded { .. } => "RuntimeTimeout",
                CriError::Unimplemented { .. } => "RuntimeUnsupported",
                CriError::NotFound { .. } => "ContainerNotFound",
                CriError::InvalidEndpoint { .. } | CriError::Rpc { .. } => "RuntimeError",
            },
            Self::NoArchive(_) => "NoArchive",
            Self::Store(e) if e.kind() == std::io::ErrorKind::StorageFull => "DiskFull",
            Self::Store(_) => "StoreError",
            Self::Archive(_) => "ArchiveInvalid",
            Self::Image(_) => "ImageError",
            Self::Push { .. } => "PushFailed",
            Self::Interrupted => "Interrupted",
        }
    }
}

#[derive(Debug)]
pub struct Checkpointer<R> {
    pub runtime: R,
    pub dir: CheckpointDir,
    /// Shared with the registry, which serves and imports images in it.
    pub layout: Arc<ImageLayout>,
    /// Registry host images are referenced under, e.g. `localhost:5050`.
    pub registry: String,
    /// External registry every image is pushed to, and then referenced in (`--push-registry`).
    pub pusher: Option<Pusher>,
    /// Serialises checkpoints of the same container: duplicate requests queue instead of racing
    /// inside the runtime.
    locks: KeyedLocks,
    pub metrics: Arc<Metrics>,
}

impl<R: Runtime> Checkpointer<R> {
    pub fn new(runtime: R, dir: CheckpointDir, layout: Arc<ImageLayout>, registry: String) -> Self {
        Self {
            runtime,
            dir,
            layout,
            registry,
            pusher: None,
            locks: KeyedLocks::default(),
            metrics: Arc::default(),
        }
    }

    /// Records checkpoints in `metrics` (the daemon's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Counts one checkpoint that ended, with its duration since `started` and archive size.
    fn record(&self, outcome: &Result<Artifact, Failure>, started: Instant) {
        let seconds = started.elapsed().as_secs_f64();
        match outcome {
            Ok(a) => {
                self.metrics.checkpoint("completed", "Completed", seconds);
                self.metrics.archive_size(a.size);
            }
            Err(e) => self.metrics.checkpoint("failed", e.reason(), seconds),
        }
    }

    /// Pushes every packaged image to `pusher`'s registry.
    pub fn with_pusher(mut self, pusher: Option<Pusher>) -> Self {
        self.pusher = pusher;
        self
    }

    /// The running CRI container of the job's pod (by the kubelet's labels and the pod UID).
    pub async fn resolve(&self, job: &Job<'_>) -> Result<api::Container, Failure> {
        let labels = [
            (kubelet::POD_NAMESPACE, job.key.namespace),
            (kubelet::POD_NAME, job.key.pod),
            (kubelet::POD_UID, job.pod_uid),
            (kubelet::CONTAINER_NAME, job.key.container),
        ];
        let running = api::ContainerState::ContainerRunning as i32;
        self.runtime
            .list_containers(&labels)
            .await?
            .into_iter()
            .filter(|c| c.state == running)
            .max_by_key(|c| c.created_at)
            .ok_or_else(|| Failure::NotRunning {
                namespace: job.key.namespace.to_owned(),
                pod: job.key.pod.to_owned(),
                container: job.key.container.to_owned(),
            })
    }

    /// Checkpoints the job's container into its archive and image.
    pub async fn take(&self, job: &Job<'_>) -> Result<Artifact, Failure> {
        let started = Instant::now();
        let outcome = self.take_unrecorded(job).await;
        self.record(&outcome, started);
        outcome
    }

    async fn take_unrecorded(&self, job: &Job<'_>) -> Result<Artifact, Failure> {
        let container = self.resolve(job).await?;
        let packaged = {
            let lock = self.locks.get(&container.id);
            let _serial = lock.lock().await;
            self.take_locked(job, container.id).await?
        };
        // Outside the container's lock: the next checkpoint of it need not wait for the upload.
        self.publish(job, packaged).await
    }

    async fn take_locked(
        &self,
        job: &Job<'_>,
        container_id: String,
    ) -> Result<(Artifact, Descriptor), Failure> {
        let partial = self.dir.partial_path(&job.key);
        let called = Instant::now();
        let written = self
            .runtime
            .checkpoint_container(&container_id, &partial, job.timeout)
            .await;
        self.metrics.cri_call(called.elapsed().as_secs_f64());
        if let Err(e) = written {
            self.dir.remove(&job.key).map_err(Failure::Store)?;
            return Err(e.into());
        }
        if !partial.exists() {
            return Err(Failure::NoArchive(partial));
        }
        self.dir.finalize(&job.key).map_err(Failure::Store)?;
        self.package(job, container_id).await
    }

    /// Resolves an attempt a previous noded process left unfinished: a completed archive is
    /// packaged, anything else is removed and reported.
    pub async fn recover(
        &self,
        job: &Job<'_>,
        container_id: Option<&str>,
    ) -> Result<Artifact, Failure> {
        let started = Instant::now();
        let outcome = self.recover_unrecorded(job, container_id).await;
        self.record(&outcome, started);
        outcome
    }

    async fn recover_unrecorded(
        &self,
        job: &Job<'_>,
        container_id: Option<&str>,
    ) -> Result<Artifact, Failure> {
        if self.dir.archive_path(&job.key).exists() {
            let id = container_id.map(str::to_owned).unwrap_or_default();
            let packaged = self.package(job, id).await?;
            return self.publish(job, packaged).await;
        }
        self.dir.remove(&job.key).map_err(Failure::Store)?;
        Err(Failure::Interrupted)
    }

    /// Removes the job's archive, temporary file and image. An image pushed to an external
    /// registry stays there: registries often forbid deletes (see [`crate::push`]).
    pub fn remove(&self, job: &Job<'_>) -> Result<(), Failure> {
        self.layout.remove(job.key.uid)?;
        self.dir.remove(&job.key).map_err(Failure::Store)
    }

    /// With a push registry, pushes the packaged image there and names it by its reference
    /// there. On failure the archive and local image stay, for the normal deletion path.
    async fn publish(
        &self,
        job: &Job<'_>,
        (mut artifact, manifest): (Artifact, Descriptor),
    ) -> Result<Artifact, Failure> {
        let Some(pusher) = &self.pusher else {
            return Ok(artifact);
        };
        let repository = pusher.repository(job.key.namespace, job.name);
        let pushed = pusher
            .push(&self.layout, &manifest, &repository, job.key.uid)
            .await;
        self.metrics.pushed(if pushed.is_ok() {
            "succeeded"
        } else {
            "failed"
        });
        artifact.image = pushed.map_err(|source| Failure::Push {
            registry: pusher.target.host.clone(),
            source: Box::new(source),
        })?;
        tracing::info!(image = %artifact.image, "checkpoint image pushed");
        Ok(artifact)
    }

    async fn package(
        &self,
        job: &Job<'_>,
        container_id: String,
    ) -> Result<(Artifact, Descriptor), Failure> {
        let path = self.dir.archive_path(&job.key);
        let version = self.runtime.version().await?;
        let config = archive::read_config(&path)?;
        let checkpoint_time = config
            .checkpointed_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or_else(Timestamp::now);
        let meta = CheckpointMeta {
            container: job.key.container.to_owned(),
            pod: job.key.pod.to_owned(),
            namespace: job.key.namespace.to_owned(),
            rootfs_image_name: config.rootfs_image_name,
            rootfs_image_id: config.rootfs_image,
            runtime_name: version.runtime_name.clone(),
            runtime_version: version.runtime_version.clone(),
            created: checkpoint_time.to_string(),
        };
        // Hashing a large archive is blocking work: keep it off the async workers.
        let (digest, size) = tokio::task::block_in_place(|| sha256_file(&path))?;
        let manifest = tokio::task::block_in_place(|| {
            self.layout
                .add_checkpoint(&path, &digest, size, &meta, job.key.uid)
        })?;
        let artifact = Artifact {
            container_id,
            size,
            digest: format!("sha256:{}", digest.digest()),
            image: format!(
                "{}/{}/{}@{}",
                self.registry,
                job.key.namespace,
                job.name,
                manifest.digest()
            ),
            path,
            checkpoint_time,
            runtime: format!("{} {}", version.runtime_name, version.runtime_version),
        };
        Ok((artifact, manifest))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeRuntime;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn container(id: &str, state: api::ContainerState, created_at: i64) -> api::Container {
        let labels = [
            (kubelet::POD_NAMESPACE, "default"),
            (kubelet::POD_NAME, "stateful-app"),
            (kubelet::POD_UID, "pod-uid"),
            (kubelet::CONTAINER_NAME, "counter"),
        ];
        api::Container {
            id: id.into(),
            state: state as i32,
            created_at,
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            ..Default::default()
        }
    }

    fn job() -> Job<'static> {
        Job {
            name: "counter-checkpoint",
            key: ArchiveKey {
                namespace: "default",
                pod: "stateful-app",
                container: "counter",
                uid: "content-uid",
            },
            pod_uid: "pod-uid",
            timeout: Duration::from_secs(42),
        }
    }

    fn checkpointer(runtime: FakeRuntime, tmp: &Path) -> Checkpointer<FakeRuntime> {
        let dir = CheckpointDir::open(tmp.join("checkpoints")).unwrap();
        let layout = ImageLayout::open(tmp.join("checkpoints/oci")).unwrap();
        Checkpointer::new(runtime, dir, Arc::new(layout), "localhost:5050".into())
    }

    fn leftovers(tmp: &Path) -> Vec<String> {
        std::fs::read_dir(tmp.join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "oci")
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn takes_the_running_container_into_an_archive_and_image() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = FakeRuntime {
            containers: vec![
                container("old-exited", api::ContainerState::ContainerExited, 1),
                container("live", api::ContainerState::ContainerRunning, 2),
            ],
            ..Default::default()
        };
        let c = checkpointer(runtime, tmp.path());
        let a = c.take(&job()).await.unwrap();

        let calls = c.runtime.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].0, "live");
        assert!(
            calls[0]
                .1
                .file_name()
                .unwrap()
                .to_string_lossy()
                .ends_with(".partial")
        );
        assert_eq!(calls[0].2, Duration::from_secs(42));

        assert_eq!(a.container_id, "live");
        assert_eq!(std::fs::read(&a.path).unwrap(), FakeRuntime::archive());
        assert_eq!(
            std::fs::metadata(&a.path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            leftovers(tmp.path()),
            [a.path.file_name().unwrap().to_string_lossy().into_owned()]
        );
        assert!(
            a.image
                .starts_with("localhost:5050/default/counter-checkpoint@sha256:"),
            "{}",
            a.image
        );
        assert_eq!(a.runtime, "containerd v2.1.9");
        assert_eq!(a.checkpoint_time.to_string(), "2026-11-24T10:00:00Z");

        let manifest = c.layout.verify("content-uid").unwrap();
        assert_eq!(format!("{}", manifest.layers()[0].digest()), a.digest);
        let annotations = manifest.annotations().clone().unwrap();
        assert_eq!(annotations["org.criu.checkpoint.container.name"], "counter");
        assert_eq!(
            annotations["io.kubernetes.cri-o.annotations.checkpoint.name"],
            "counter"
        );
        assert_eq!(
            annotations["org.criu.checkpoint.rootfsImageName"],
            "docker.io/library/busybox:latest"
        );

        c.remove(&job()).unwrap();
        assert!(leftovers(tmp.path()).is_empty());
        assert!(c.layout.resolve("content-uid").unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn no_running_container_is_refused_without_calling_checkpoint() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = FakeRuntime {
            containers: vec![container("x", api::ContainerState::ContainerExited, 1)],
            ..Default::default()
        };
        let c = checkpointer(runtime, tmp.path());
        let e = c.take(&job()).await.unwrap_err();
        assert!(matches!(e, Failure::NotRunning { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "container \"counter\" of pod default/stateful-app is not running on this node"
        );
        assert!(c.runtime.calls.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_runtime_error_leaves_no_partial_file() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = FakeRuntime {
            containers: vec![container("live", api::ContainerState::ContainerRunning, 1)],
            fail_with: Some(|| CriError::Unimplemented {
                op: "CheckpointContainer",
                message: "criu not found".into(),
            }),
            ..Default::default()
        };
        let c = checkpointer(runtime, tmp.path());
        let e = c.take(&job()).await.unwrap_err();
        assert!(e.to_string().contains("criu not found"), "{e}");
        assert!(
            leftovers(tmp.path()).is_empty(),
            "{:?}",
            leftovers(tmp.path())
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn success_without_archive_is_a_failure() {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = FakeRuntime {
            containers: vec![container("live", api::ContainerState::ContainerRunning, 1)],
            write_nothing: true,
            ..Default::default()
        };
        let c = checkpointer(runtime, tmp.path());
        assert!(matches!(c.take(&job()).await, Err(Failure::NoArchive(_))));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn recovery_packages_a_finished_archive_and_discards_a_partial_one() {
        let tmp = tempfile::tempdir().unwrap();
        let c = checkpointer(FakeRuntime::default(), tmp.path());
        // Crash after the rename: the archive is complete, only the image is missing.
        std::fs::write(c.dir.archive_path(&job().key), FakeRuntime::archive()).unwrap();
        let a = c.recover(&job(), Some("live")).await.unwrap();
        assert_eq!(a.container_id, "live");
        c.layout.verify("content-uid").unwrap();
        c.remove(&job()).unwrap();

        // Crash mid-checkpoint: only the runtime's temporary file exists.
        std::fs::write(c.dir.partial_path(&job().key), b"half").unwrap();
        assert!(matches!(
            c.recover(&job(), None).await,
            Err(Failure::Interrupted)
        ));
        assert!(leftovers(tmp.path()).is_empty());
    }

    fn pushing_to(registry: &crate::push::fake::Registry) -> Option<Pusher> {
        let target = format!("{}/checkpoints", registry.addr).parse().unwrap();
        Some(Pusher::new(target, true, None).unwrap())
    }

    fn running() -> FakeRuntime {
        FakeRuntime {
            containers: vec![container("live", api::ContainerState::ContainerRunning, 1)],
            ..Default::default()
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn with_a_push_registry_the_image_is_referenced_there() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = crate::push::fake::Registry::start().await;
        let c = checkpointer(running(), tmp.path()).with_pusher(pushing_to(&registry));
        let a = c.take(&job()).await.unwrap();
        let manifest = c.layout.resolve("content-uid").unwrap().unwrap();
        assert_eq!(
            a.image,
            format!(
                "{}/checkpoints/default/counter-checkpoint@{}",
                registry.addr,
                manifest.digest()
            )
        );
        assert!(
            c.metrics
                .render()
                .contains("noded_pushes_total{result=\"succeeded\"} 1")
        );
        let state = registry.state.lock().unwrap();
        assert_eq!(state.blobs[&a.digest], FakeRuntime::archive());
        assert!(
            state
                .manifests
                .contains_key("checkpoints/default/counter-checkpoint:content-uid")
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_push_fails_the_checkpoint_naming_the_registry_and_status() {
        let tmp = tempfile::tempdir().unwrap();
        let registry = crate::push::fake::Registry::start().await;
        registry.state.lock().unwrap().manifest_status =
            Some(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let c = checkpointer(running(), tmp.path()).with_pusher(pushing_to(&registry));
        let outcome = c.take(&job()).await;
        let e = outcome.as_ref().unwrap_err();
        assert!(matches!(e, Failure::Push { .. }), "{e}");
        let text = c.metrics.render();
        assert!(
            text.contains("noded_pushes_total{result=\"failed\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("noded_checkpoints_total{result=\"failed\",reason=\"PushFailed\"} 1"),
            "{text}"
        );
        let status = crate::reconcile::final_status(&outcome, None);
        let message = status.message.unwrap();
        assert!(
            message.starts_with(&format!(
                "pushing the checkpoint image to registry {}: PUT http://{}/v2/checkpoints/default/counter-checkpoint/manifests/content-uid answered 500 Internal Server Error",
                registry.addr, registry.addr
            )),
            "{message}"
        );
        assert!(!status.ready);

        // The archive and local image are there, and go by the normal deletion path.
        assert_eq!(leftovers(tmp.path()).len(), 1);
        assert!(c.layout.resolve("content-uid").unwrap().is_some());
        c.remove(&job()).unwrap();
        assert!(leftovers(tmp.path()).is_empty());
        assert!(c.layout.resolve("content-uid").unwrap().is_none());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_completed_checkpoint_shows_in_the_metrics() {
        let tmp = tempfile::tempdir().unwrap();
        let c = checkpointer(running(), tmp.path());
        let a = c.take(&job()).await.unwrap();
        let text = c.metrics.render();
        for line in [
            "noded_checkpoints_total{result=\"completed\",reason=\"Completed\"} 1".to_owned(),
            "noded_archive_size_bytes_count 1".to_owned(),
            format!("noded_archive_size_bytes_sum {}.0", a.size),
            "noded_checkpoint_cri_duration_seconds_count 1".to_owned(),
            "noded_checkpoint_duration_seconds_count 1".to_owned(),
            "noded_archive_size_bytes_bucket{le=\"4294967296.0\"} 1".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} missing from {text}");
        }

        // A failure counts under its reason, with no archive size.
        let c = checkpointer(FakeRuntime::default(), tmp.path());
        c.take(&job()).await.unwrap_err();
        let text = c.metrics.render();
        assert!(
            text.contains("noded_checkpoints_total{result=\"failed\",reason=\"NotRunning\"} 1"),
            "{text}"
        );
        assert!(text.contains("noded_archive_size_bytes_count 0"), "{text}");
    }

    #[test]
    fn failures_map_to_a_fixed_set_of_reasons() {
        let cri = |e: CriError| Failure::Runtime(e).reason();
        let op = "CheckpointContainer";
        let message = String::new;
        assert_eq!(
            cri(CriError::SocketMissing {
                path: "/run/x.sock".into()
            }),
            "RuntimeUnavailable"
        );
        assert_eq!(
            cri(CriError::Unavailable {
                op,
                message: message()
            }),
            "RuntimeUnavailable"
        );
        assert_eq!(
            cri(CriError::DeadlineExceeded {
                op,
                message: message()
            }),
            "RuntimeTimeout"
        );
        assert_eq!(
            cri(CriError::Unimplemented {
                op,
                message: message()
            }),
            "RuntimeUnsupported"
        );
        assert_eq!(
            cri(CriError::NotFound {
                op,
                message: message()
            }),
            "ContainerNotFound"
        );
        assert_eq!(
            cri(CriError::Rpc {
                op,
                code: CriError::Unavailable {
                    op,
                    message: message()
                }
                .code(),
                message: message()
            }),
            "RuntimeError"
        );
        let store = |kind| Failure::Store(std::io::Error::from(kind)).reason();
        assert_eq!(store(std::io::ErrorKind::StorageFull), "DiskFull");
        assert_eq!(store(std::io::ErrorKind::PermissionDenied), "StoreError");
        assert_eq!(Failure::NoArchive("/x".into()).reason(), "NoArchive");
        assert_eq!(Failure::Interrupted.reason(), "Interrupted");
        assert_eq!(
            Failure::NotRunning {
                namespace: "n".into(),
                pod: "p".into(),
                container: "c".into()
            }
            .reason(),
            "NotRunning"
        );
    }
}
