//! noded's Prometheus metrics, in one registry served as `/metrics` on the admin port.

use checkpointing::admin::{self, Telemetry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckpointLabels {
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompressionLabels {
    compression: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    mode: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuntimeInfoLabels {
    runtime_name: String,
    runtime_version: String,
    criu_version: String,
}

/// The runtime and CRIU a prerequisites check found (empty when unknown).
pub struct RuntimeInfo<'a> {
    pub name: &'a str,
    pub version: &'a str,
    pub criu_version: &'a str,
}

/// Duration buckets: 50 ms to about 7 minutes.
fn duration_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(0.05, 2.0, 14)
}

/// Archive size buckets: 64 KiB to 4 GiB.
fn size_buckets() -> impl Iterator<Item = f64> {
    exponential_buckets(65536.0, 4.0, 9)
}

/// The daemon's metrics, in one registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    checkpoints: Family<CheckpointLabels, Counter>,
    cri_duration: Histogram,
    total_duration: Histogram,
    archive_size: Histogram,
    archive_rereads: Counter,
    transfer: Family<DirectionLabels, Counter>,
    pushes: Family<ResultLabels, Counter>,
    push_duration: Histogram,
    push_bytes: Family<CompressionLabels, Counter>,
    fetch_duration: Histogram,
    manifest_reads: Counter,
    registry_requests: Family<RequestLabels, Counter>,
    runtime_image_removals: Family<ResultLabels, Counter>,
    pushed_copy_deletions: Family<ResultLabels, Counter>,
    token_reviews: Family<ResultLabels, Counter>,
    prerequisites: Family<CheckLabels, Gauge>,
    runtime_info: Family<RuntimeInfoLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = admin::registry("noded");
        let checkpoints = Family::<CheckpointLabels, Counter>::default();
        registry.register(
            "checkpoints",
            "Checkpoints that ended, by result (completed or failed) and reason",
            checkpoints.clone(),
        );
        let cri_duration = Histogram::new(duration_buckets());
        registry.register_with_unit(
            "checkpoint_cri_duration",
            "Duration of the runtime's CheckpointContainer call",
            Unit::Seconds,
            cri_duration.clone(),
        );
        let total_duration = Histogram::new(duration_buckets());
        registry.register_with_unit(
            "checkpoint_duration",
            "Duration of a whole checkpoint: finding the container, CRI call, image, push",
            Unit::Seconds,
            total_duration.clone(),
        );
        let archive_size = Histogram::new(size_buckets());
        registry.register_with_unit(
            "archive_size",
            "Size of completed checkpoint archives",
            Unit::Bytes,
            archive_size.clone(),
        );
        let archive_rereads = Counter::default();
        registry.register(
            "archive_rereads",
            "Checkpoint archives read again after the runtime wrote them, because what was read \
             while it wrote them may not be what it left (or could not be read)",
            archive_rereads.clone(),
        );
        let transfer = Family::<DirectionLabels, Counter>::default();
        registry.register_with_unit(
            "transfer",
            "Checkpoint image blob bytes moved between nodes, by direction (fetched or served)",
            Unit::Bytes,
            transfer.clone(),
        );
        let manifest_reads = Counter::default();
        registry.register(
            "manifest_reads",
            "Checkpoint image manifests read from the layout and checked against their digest \
             (once per image while it is remembered, however many requests ask)",
            manifest_reads.clone(),
        );
        let pushes = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pushes",
            "Checkpoint images pushed to the external registry, by result (succeeded or failed)",
            pushes.clone(),
        );
        let push_duration = Histogram::new(duration_buckets());
        registry.register_with_unit(
            "push_duration",
            "Duration of a push of a checkpoint image to an external registry, whatever its result",
            Unit::Seconds,
            push_duration.clone(),
        );
        let push_bytes = Family::<CompressionLabels, Counter>::default();
        registry.register_with_unit(
            "push",
            "Bytes of the checkpoint images pushed to external registries (their config and \
             layers, as pushed), by how the archive layer went (zstd or none)",
            Unit::Bytes,
            push_bytes.clone(),
        );
        let fetch_duration = Histogram::new(duration_buckets());
        registry.register_with_unit(
            "fetch_duration",
            "Duration of a fetch of a checkpoint image from the node holding it (transfer, \
             verification, storage), whatever its result",
            Unit::Seconds,
            fetch_duration.clone(),
        );
        let registry_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "registry_requests",
            "Requests to the node-local registry and the peer server, by mode (local or peer) \
             and result (ok, refused: 4xx, failed: 5xx)",
            registry_requests.clone(),
        );
        let runtime_image_removals = Family::<ResultLabels, Counter>::default();
        registry.register(
            "runtime_image_removals",
            "The runtime's images of deleted checkpoints removed by garbage collection, by \
             result (removed, or failed: retried next round)",
            runtime_image_removals.clone(),
        );
        let pushed_copy_deletions = Family::<ResultLabels, Counter>::default();
        registry.register(
            "pushed_copy_deletions",
            "Copies in the push registry of deleted checkpoints, by result (deleted, or kept: \
             the registry refused, or stayed unreachable, and the copy stays there)",
            pushed_copy_deletions.clone(),
        );
        let token_reviews = Family::<ResultLabels, Counter>::default();
        registry.register(
            "token_reviews",
            "TokenReviews noded asked the API server for, to authenticate a pull or a peer, by \
             result (authenticated, unauthenticated, or error: no answer)",
            token_reviews.clone(),
        );
        let prerequisites = Family::<CheckLabels, Gauge>::default();
        registry.register(
            "prerequisite",
            "Start-up prerequisites (cri, criu, restore, checkpoint_dir): 1 met or assumed, 0 not",
            prerequisites.clone(),
        );
        let runtime_info = Family::<RuntimeInfoLabels, Gauge>::default();
        registry.register(
            "runtime_info",
            "The container runtime and CRIU found by the last prerequisites check (always 1)",
            runtime_info.clone(),
        );
        // Present from the start, so rates work from the first event.
        checkpoints
            .get_or_create(&CheckpointLabels {
                result: "completed",
                reason: "Completed",
            })
            .get();
        for direction in ["fetched", "served"] {
            transfer.get_or_create(&DirectionLabels { direction }).get();
        }
        for compression in ["none", "zstd"] {
            push_bytes
                .get_or_create(&CompressionLabels { compression })
                .get();
        }
        Self {
            registry,
            checkpoints,
            cri_duration,
            total_duration,
            archive_size,
            archive_rereads,
            transfer,
            pushes,
            push_duration,
            push_bytes,
            fetch_duration,
            manifest_reads,
            registry_requests,
            runtime_image_removals,
            pushed_copy_deletions,
            token_reviews,
            prerequisites,
            runtime_info,
        }
    }
}

impl Metrics {
    /// One checkpoint that ended: `reason` is `Completed` or a failure reason.
    pub fn checkpoint(&self, result: &'static str, reason: &'static str, seconds: f64) {
        self.checkpoints
            .get_or_create(&CheckpointLabels { result, reason })
            .inc();
        self.total_duration.observe(seconds);
    }

    pub fn cri_call(&self, seconds: f64) {
        self.cri_duration.observe(seconds);
    }

    pub fn archive_size(&self, bytes: u64) {
        self.archive_size.observe(bytes as f64);
    }

    /// One archive read again after it was written (see `checkpoint::follow`).
    pub fn archive_reread(&self) {
        self.archive_rereads.inc();
    }

    /// Blob bytes moved: `direction` is `fetched` or `served`.
    pub fn transferred(&self, direction: &'static str, bytes: u64) {
        self.transfer
            .get_or_create(&DirectionLabels { direction })
            .inc_by(bytes);
    }

    /// One push to an external registry that took `seconds`: `succeeded` or `failed`.
    pub fn pushed(&self, result: &'static str, seconds: f64) {
        self.pushes.get_or_create(&ResultLabels { result }).inc();
        self.push_duration.observe(seconds);
    }

    /// `bytes` of an image pushed with its archive layer `compression` (`zstd` or `none`).
    pub fn pushed_bytes(&self, compression: &'static str, bytes: u64) {
        self.push_bytes
            .get_or_create(&CompressionLabels { compression })
            .inc_by(bytes);
    }

    /// One fetch of a checkpoint image from its node that took `seconds`.
    pub fn fetched(&self, seconds: f64) {
        self.fetch_duration.observe(seconds);
    }

    /// One manifest read from the layout and hashed.
    pub fn manifest_read(&self) {
        self.manifest_reads.inc();
    }

    /// A deleted checkpoint's copy in the push registry: `deleted` or `kept`.
    pub fn pushed_copy_deletion(&self, result: &'static str) {
        self.pushed_copy_deletions
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// One TokenReview: `authenticated`, `unauthenticated` or `error`.
    pub fn token_review(&self, result: &'static str) {
        self.token_reviews
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    pub fn registry_request(&self, mode: &'static str, result: &'static str) {
        self.registry_requests
            .get_or_create(&RequestLabels { mode, result })
            .inc();
    }

    /// One RemoveImage of a deleted checkpoint's image: `result` is `removed` or `failed`.
    pub fn runtime_image_removal(&self, result: &'static str) {
        self.runtime_image_removals
            .get_or_create(&ResultLabels { result })
            .inc();
    }

    /// Replaces the prerequisite gauges (`(check, met)`) and the runtime info.
    pub fn prerequisites(
        &self,
        checks: impl IntoIterator<Item = (&'static str, bool)>,
        runtime: RuntimeInfo<'_>,
    ) {
        for (check, met) in checks {
            self.prerequisites
                .get_or_create(&CheckLabels { check })
                .set(i64::from(met));
        }
        self.runtime_info.clear();
        self.runtime_info
            .get_or_create(&RuntimeInfoLabels {
                runtime_name: runtime.name.to_owned(),
                runtime_version: runtime.version.to_owned(),
                criu_version: runtime.criu_version.to_owned(),
            })
            .set(1);
    }
}

impl Telemetry for Metrics {
    fn registry(&self) -> &Registry {
        &self.registry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_named_checkpointing_noded() {
        let m = Metrics::default();
        m.checkpoint("completed", "Completed", 1.0);
        m.cri_call(1.0);
        m.archive_size(1);
        m.transferred("fetched", 1);
        m.pushed("succeeded", 1.0);
        m.fetched(1.0);
        m.manifest_read();
        m.pushed_copy_deletion("deleted");
        m.token_review("authenticated");
        m.registry_request("local", "ok");
        m.runtime_image_removal("removed");
        let runtime = RuntimeInfo {
            name: "containerd",
            version: "v2.1.4",
            criu_version: "4.1",
        };
        m.prerequisites([("cri", true)], runtime);
        admin::assert_namespaced(&m, "noded");
    }
}
