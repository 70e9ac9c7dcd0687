//! Taking a checkpoint: find the container through CRI, have the runtime write the archive into
//! a temporary file, make it final, and package it as an OCI checkpoint image. Written against
//! the [`Runtime`] trait so it is tested with a recording fake.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpointing::archive::{self, ArchiveError, Scanned};
use checkpointing::crd::Compression;
use checkpointing::cri::{CriError, Runtime, api};
use checkpointing::names::kubelet;
use checkpointing::oci::{CheckpointMeta, ImageLayout, OciError, VolumesLayer, sha256_file};
use k8s_openapi::jiff::Timestamp;
use oci_spec::image::Descriptor;

use crate::error::error_chain;
use crate::freeze::{self, FreezeError, Freezer};
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::outbound::OutboundError;
use crate::push::{self, Credentials, Destination, PushError, Pusher};
use crate::restore;
use crate::slots::FairSlots;
use crate::space::{DiskSpace, SpaceError, archive_need, volumes_need};
use crate::store::{ArchiveKey, CheckpointDir};
use crate::volumes;

mod follow;
mod hold;
use follow::Following;
use hold::{DUMP_TRIES, FREEZE_RETRY_AFTER, retryable};

/// What to checkpoint, from one Content.
#[derive(Clone, Debug)]
pub struct Job<'a> {
    /// Name of the request (and Content): the image repository's last component.
    pub name: &'a str,
    pub key: ArchiveKey<'a>,
    pub pod_uid: &'a str,
    pub timeout: Duration,
    /// The pod's emptyDir volumes that travel with the checkpoint.
    pub volumes: Vec<String>,
    /// The registry the image is pushed to, and then referenced in; `None`: it stays here.
    pub push: Option<Push>,
    /// Freeze the container before the dump and leave it frozen (`spec.holdSource`).
    pub hold: bool,
}

/// Where a job's image is pushed, with the credentials read for it.
#[derive(Clone, Debug)]
pub struct Push {
    pub to: Destination,
    pub credentials: Option<Credentials>,
    /// How the archive layer goes (`spec.registry.compression`).
    pub compression: Compression,
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
    /// The image a node needs before its runtime can restore the archive.
    pub base_image: Option<String>,
    /// The container stays frozen (the job's `hold`).
    pub held: bool,
    /// What a push sent, for the status message (none without a push).
    pub pushed: Option<String>,
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
    #[error(
        "could not hold the container still from its dump on (a migration's source must not run on after its checkpoint), so it was not moved and keeps running"
    )]
    Hold(#[source] FreezeError),
    #[error(transparent)]
    Space(#[from] SpaceError),
    #[error("the runtime reported success but wrote no archive at {0}")]
    NoArchive(PathBuf),
    #[error("storing the archive")]
    Store(#[source] std::io::Error),
    #[error("copying emptyDir volumes {volumes:?} of the pod")]
    Volumes {
        volumes: Vec<String>,
        #[source]
        source: volumes::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Image(#[from] OciError),
    #[error(transparent)]
    Registry(#[from] OutboundError),
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
            Self::Hold(_) => "HoldFailed",
            Self::Space(SpaceError::Short { .. }) => "NotEnoughDiskSpace",
            Self::Space(SpaceError::Unreadable { .. }) => "StoreError",
            Self::NoArchive(_) => "NoArchive",
            Self::Store(e) if e.kind() == std::io::ErrorKind::StorageFull => "DiskFull",
            Self::Store(_) => "StoreError",
            Self::Volumes { .. } => "VolumesError",
            Self::Archive(_) => "ArchiveInvalid",
            Self::Image(_) => "ImageError",
            Self::Registry(_) => "RegistryConfig",
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
    /// Pushes images to external registries.
    pub pusher: Pusher,
    /// Serialises checkpoints of the same container: duplicate requests queue instead of racing
    /// inside the runtime.
    locks: KeyedLocks,
    /// Bounds the CRIU dumps running at once on this node: each freezes a container and writes
    /// its memory, and many at once contend for CPU and disk until dumps fail. Shared fairly
    /// between namespaces.
    dumps: FairSlots,
    /// Refuses a checkpoint the checkpoint directory has no room for, before the dump.
    pub space: DiskSpace,
    pub metrics: Arc<Metrics>,
    /// The kubelet's pods directory, where emptyDir volumes are taken from.
    pub pods_dir: PathBuf,
    /// Holds the containers of jobs that say `hold` frozen.
    pub freezer: Freezer,
    /// Told the tag of each image [`Self::remove`] drops, so that what restores remember of it
    /// (its manifest, read once) goes with it.
    forget: Forget,
}

/// Drops what is remembered of an image, by its tag; by default nothing is.
#[derive(Clone)]
pub struct Forget(Arc<dyn Fn(&str) + Send + Sync>);

impl Forget {
    pub fn new(forget: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self(Arc::new(forget))
    }
}

impl Default for Forget {
    fn default() -> Self {
        Self::new(|_| {})
    }
}

impl std::fmt::Debug for Forget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Forget")
    }
}

/// CRIU dumps at once on a node unless configured otherwise (`--max-concurrent-dumps`).
pub const DEFAULT_CONCURRENT_DUMPS: usize = 2;

impl<R: Runtime> Checkpointer<R> {
    pub fn new(
        runtime: R,
        dir: CheckpointDir,
        layout: Arc<ImageLayout>,
        registry: String,
        pusher: Pusher,
        space: DiskSpace,
    ) -> Self {
        Self {
            runtime,
            dir,
            layout,
            registry,
            pusher,
            locks: KeyedLocks::default(),
            dumps: FairSlots::new(DEFAULT_CONCURRENT_DUMPS),
            space,
            metrics: Arc::default(),
            pods_dir: PathBuf::from(volumes::DEFAULT_PODS_DIR),
            freezer: Freezer::new(freeze::DEFAULT_CGROUP_ROOT),
            forget: Forget::default(),
        }
    }

    /// Has `forget` drop what is remembered of each image this removes (the restores' caches).
    pub fn with_forget(mut self, forget: Forget) -> Self {
        self.forget = forget;
        self
    }

    /// Freezes held containers through `freezer` (the node's cgroup file system as mounted
    /// here).
    pub fn with_freezer(mut self, freezer: Freezer) -> Self {
        self.freezer = freezer;
        self
    }

    /// Takes emptyDir volumes from `dir` (the kubelet's pods directory as mounted here).
    pub fn with_pods_dir(mut self, dir: PathBuf) -> Self {
        self.pods_dir = dir;
        self
    }

    /// At most `dumps` CRI CheckpointContainer calls at once (at least one).
    pub fn with_concurrent_dumps(mut self, dumps: usize) -> Self {
        self.dumps = FairSlots::new(dumps);
        self
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
        let id = container.id.clone();
        let taken = async {
            let packaged = {
                // A held dump may freeze its whole pod for a moment (`freeze::bridge`), which
                // would stop CRIU seizing a sibling: a pod's held dumps go one at a time.
                let key = if job.hold { job.pod_uid } else { &container.id };
                let lock = self.locks.get(key);
                let _serial = lock.lock().await;
                self.take_locked(job, container.id).await?
            };
            // Outside the container's lock: the next checkpoint of it need not wait for the
            // upload.
            self.publish(job, packaged).await
        }
        .await;
        if job.hold && taken.is_err() {
            // Nothing will move it: it runs on where it was, as if never checkpointed.
            self.release_after_failure(job, Some(&id)).await;
        }
        taken
    }

    async fn take_locked(
        &self,
        job: &Job<'_>,
        container_id: String,
    ) -> Result<(Artifact, Descriptor), Failure> {
        let partial = self.dir.partial_path(&job.key);
        let written = {
            let _dump = self.dumps.acquire(job.key.namespace).await;
            // Checked once the dump may start, not before the wait: what other dumps wrote
            // meanwhile counts. Refused here, nothing has been written yet.
            let stats = self.runtime.container_stats(&container_id).await;
            let stats = stats.unwrap_or_else(|error| {
                tracing::info!(container = %container_id, %error, "no container stats; checking only the disk reserve");
                None
            });
            let volumes = volumes_need(&self.pods_dir, job.pod_uid, &job.volumes);
            self.space
                .ensure(self.dir.root(), archive_need(stats.as_ref()).plus(volumes))?;
            let hold = match job.hold {
                true => Some(self.hold(&container_id).await?),
                false => None,
            };
            let dump = || {
                let hold = hold.as_ref();
                self.dump_following(&job.key, &container_id, &partial, job.timeout, hold)
            };
            let mut written = dump().await;
            for _ in 1..DUMP_TRIES {
                if !written.as_ref().is_err_and(retryable) {
                    break;
                }
                // Nothing was kept and the container ran on, unharmed: its cgroup did not
                // freeze in time, or a hold came too late (busy node). Again, from scratch.
                tracing::info!(container = %container_id, error = %error_chain(written.as_ref().unwrap_err()), "dump not kept; trying again");
                tokio::time::sleep(FREEZE_RETRY_AFTER).await;
                written = dump().await;
            }
            written
        };
        let following = match written {
            Ok(following) => following,
            Err(e) => {
                self.dir.remove(&job.key).map_err(Failure::Store)?;
                return Err(e);
            }
        };
        if !partial.exists() {
            return Err(Failure::NoArchive(partial));
        }
        let scanned = self.seal(&job.key, &partial, following)?;
        if !job.volumes.is_empty() {
            // Right after the dump: the files as close as can be to the memory beside them.
            let dest = self.dir.volumes_path(&job.key);
            let taken = tokio::task::block_in_place(|| {
                let limit = volumes::DEFAULT_LIMIT;
                volumes::capture(&self.pods_dir, job.pod_uid, &job.volumes, &dest, limit)
            });
            if let Err(source) = taken {
                self.dir.remove(&job.key).map_err(Failure::Store)?;
                return Err(Failure::Volumes {
                    volumes: job.volumes.clone(),
                    source,
                });
            }
        }
        self.package(job, container_id, scanned).await
    }

    /// Makes the runtime's file the archive, and has it read. The fsync waits on the disk while
    /// the pass that hashes the file and finds its `config.dump` reads the rest of it from the
    /// page cache, so the two cost one wait, not two; the rename comes only once the file is
    /// durable. A file that may not be what was read while it was written is read once more.
    fn seal(
        &self,
        key: &ArchiveKey,
        partial: &Path,
        following: Following,
    ) -> Result<Scanned, Failure> {
        let (synced, scanned) = tokio::task::block_in_place(|| {
            std::thread::scope(|s| {
                let synced = s.spawn(|| self.dir.sync_partial(key));
                let scanned = following.finish().or_else(|error| {
                    tracing::info!(error = %error_chain(&error), "archive read again after the runtime wrote it");
                    self.metrics.archive_reread();
                    archive::scan(partial)
                });
                let synced = synced
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (synced, scanned)
            })
        });
        synced.map_err(Failure::Store)?;
        let scanned = scanned?;
        self.dir.finalize(key).map_err(Failure::Store)?;
        Ok(scanned)
    }

    /// One dump, its archive read as the runtime writes it. Whatever an earlier attempt left goes
    /// first: the reader must start on the runtime's new file.
    async fn dump_following(
        &self,
        key: &ArchiveKey<'_>,
        id: &str,
        partial: &Path,
        timeout: Duration,
        hold: Option<&String>,
    ) -> Result<Following, Failure> {
        self.dir.remove(key).map_err(Failure::Store)?;
        let following = Following::start(partial);
        let written = self.dump_holding(id, partial, timeout, hold).await;
        following.ended(written.is_ok());
        written.map(|()| following)
    }

    /// One CRI CheckpointContainer call, timed in the metrics.
    async fn dump(&self, id: &str, partial: &Path, timeout: Duration) -> Result<(), CriError> {
        let called = Instant::now();
        let written = self
            .runtime
            .checkpoint_container(id, partial, timeout)
            .await;
        self.metrics.cri_call(called.elapsed().as_secs_f64());
        written
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
        let archive = self.dir.archive_path(&job.key);
        let recovered = if archive.exists() {
            let id = container_id.map(str::to_owned).unwrap_or_default();
            async {
                let scanned = tokio::task::block_in_place(|| archive::scan(&archive))?;
                let packaged = self.package(job, id, scanned).await?;
                self.publish(job, packaged).await
            }
            .await
        } else {
            self.dir.remove(&job.key).map_err(Failure::Store)?;
            Err(Failure::Interrupted)
        };
        if job.hold && recovered.is_err() {
            // The previous process may have frozen it before it stopped.
            self.release_after_failure(job, container_id).await;
        }
        recovered
    }

    /// Removes the job's archive, temporary file and image (a pushed copy: `reconcile::pushed::unpublish`).
    pub fn remove(&self, job: &Job<'_>) -> Result<(), Failure> {
        self.layout.remove(job.key.uid)?;
        // After, so that nothing reads the image back into a cache in between.
        (self.forget.0)(job.key.uid);
        self.dir.remove(&job.key).map_err(Failure::Store)
    }

    /// Pushes the packaged image where the job says, and names it by its reference there. On
    /// failure the archive and local image stay, for the normal deletion path.
    async fn publish(
        &self,
        job: &Job<'_>,
        (mut artifact, manifest): (Artifact, Descriptor),
    ) -> Result<Artifact, Failure> {
        let Some(push) = &job.push else {
            return Ok(artifact);
        };
        // Compressing counts as pushing: it is what a compressed push costs.
        let started = Instant::now();
        let pushed = async {
            let prepared = tokio::task::block_in_place(|| {
                push::prepare(&self.layout, &manifest, job.key.uid, push.compression)
            })?;
            let image = self
                .pusher
                .push(
                    &self.layout,
                    &prepared.manifest,
                    &push.to,
                    job.key.uid,
                    push.credentials.as_ref(),
                )
                .await?;
            Ok((image, prepared))
        }
        .await;
        let result = if pushed.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        self.metrics.pushed(result, started.elapsed().as_secs_f64());
        let (image, prepared) = pushed.map_err(|source| Failure::Push {
            registry: push.to.host.clone(),
            source: Box::new(source),
        })?;
        self.metrics
            .pushed_bytes(prepared.layer.label(), prepared.bytes);
        tracing::info!(%image, %prepared, "checkpoint image pushed");
        artifact.image = image;
        artifact.pushed = Some(prepared.to_string());
        Ok(artifact)
    }

    async fn package(
        &self,
        job: &Job<'_>,
        container_id: String,
        Scanned {
            config,
            digest,
            size,
        }: Scanned,
    ) -> Result<(Artifact, Descriptor), Failure> {
        let path = self.dir.archive_path(&job.key);
        let version = self.runtime.version().await?;
        let checkpoint_time = config
            .checkpointed_time
            .as_deref()
            .and_then(|t| t.parse::<Timestamp>().ok())
            .unwrap_or_else(Timestamp::now);
        let base_image = restore::base_image(&config);
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
        let volumes = self.dir.volumes_path(&job.key);
        let volumes = if volumes.exists() {
            let (digest, size) = tokio::task::block_in_place(|| sha256_file(&volumes))?;
            Some(VolumesLayer {
                path: volumes,
                digest,
                size,
            })
        } else {
            None
        };
        let manifest = tokio::task::block_in_place(|| {
            self.layout
                .add_checkpoint(&path, &digest, size, volumes.as_ref(), &meta, job.key.uid)
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
            base_image,
            held: job.hold,
            pushed: None,
        };
        Ok((artifact, manifest))
    }
}

#[cfg(test)]
mod tests;
