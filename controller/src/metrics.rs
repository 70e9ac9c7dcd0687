//! The controller's metrics, served on the admin port (`checkpointing::admin`).

use checkpointing::admin::{self, Telemetry};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::kinds::Kind;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    state: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    result: &'static str,
    reason: &'static str,
}

/// The reconcile metrics of one kind.
pub struct Reconciles {
    reconciles: Family<ReconcileLabels, Counter>,
    seconds: Histogram,
    finished: Family<RequestLabels, Counter>,
}

impl Reconciles {
    /// Registers the families of `kind`: the ContainerCheckpoint's under the names they had
    /// before the other kinds came (dashboards and the scale bench read them), the others'
    /// prefixed with their kind.
    fn registered(registry: &mut Registry, kind: Kind) -> Self {
        let prefix = match kind {
            Kind::ContainerCheckpoint => "",
            Kind::PodCheckpoint => "pod_checkpoint_",
            Kind::PodMigration => "pod_migration_",
            Kind::CheckpointPolicy => "checkpoint_policy_",
        };
        let plural = format!("{kind:?}s");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            format!("{prefix}reconciles"),
            format!("Reconciles of {plural}, by result (success or error)"),
            reconciles.clone(),
        );
        // 1 ms to ~33 s: a reconcile is a few API calls, slow ones wait on a struggling apiserver.
        let seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            format!("{prefix}reconcile_duration_seconds"),
            format!("Time one reconcile of {plural} took, API calls included"),
            seconds.clone(),
        );
        let finished = Family::<RequestLabels, Counter>::default();
        registry.register(
            format!("{prefix}requests"),
            format!("{plural} that reached a final state, by state and reason"),
            finished.clone(),
        );
        Self {
            reconciles,
            seconds,
            finished,
        }
    }

    pub fn reconciled(&self, result: &'static str, took: std::time::Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { result })
            .inc();
        self.seconds.observe(took.as_secs_f64());
    }

    /// A request reached final `state` (a checkpoint's state, a migration's phase), labelled
    /// with its variant's name.
    pub fn finished(&self, state: impl std::fmt::Debug, reason: &str) {
        self.finished
            .get_or_create(&RequestLabels {
                state: format!("{state:?}"),
                reason: reason.to_owned(),
            })
            .inc();
    }
}

/// The controller's metrics, in one registry.
pub struct Metrics {
    registry: Registry,
    container_checkpoints: Reconciles,
    pod_checkpoints: Reconciles,
    pod_migrations: Reconciles,
    checkpoint_policies: Reconciles,
    admissions: Family<AdmissionLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = admin::registry("controller");
        let container_checkpoints =
            Reconciles::registered(&mut registry, Kind::ContainerCheckpoint);
        let pod_checkpoints = Reconciles::registered(&mut registry, Kind::PodCheckpoint);
        let pod_migrations = Reconciles::registered(&mut registry, Kind::PodMigration);
        let checkpoint_policies = Reconciles::registered(&mut registry, Kind::CheckpointPolicy);
        let admissions = Family::<AdmissionLabels, Counter>::default();
        registry.register(
            "webhook_decisions",
            "Pod CREATEs decided by the restore admission webhook, by result (allowed, patched, \
             denied) and reason",
            admissions.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the leader (reconciles and registers the webhook), else 0",
            leader.clone(),
        );
        Self {
            registry,
            container_checkpoints,
            pod_checkpoints,
            pod_migrations,
            checkpoint_policies,
            admissions,
            leader,
        }
    }
}

impl Metrics {
    /// The reconcile metrics of `kind`.
    pub fn of(&self, kind: Kind) -> &Reconciles {
        match kind {
            Kind::ContainerCheckpoint => &self.container_checkpoints,
            Kind::PodCheckpoint => &self.pod_checkpoints,
            Kind::PodMigration => &self.pod_migrations,
            Kind::CheckpointPolicy => &self.checkpoint_policies,
        }
    }

    /// One restore admission decision: `allowed` (not a restore), `patched` or `denied`.
    pub fn admitted(&self, result: &'static str, reason: &'static str) {
        self.admissions
            .get_or_create(&AdmissionLabels { result, reason })
            .inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
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
    use checkpointing::crd::CheckpointState;
    use std::time::Duration;

    #[test]
    fn metrics_count_reconciles_and_final_states() {
        let m = Metrics::default();
        let cc = m.of(Kind::ContainerCheckpoint);
        cc.reconciled("success", Duration::from_micros(700));
        cc.reconciled("success", Duration::from_millis(3));
        cc.reconciled("error", Duration::from_secs(60));
        cc.finished(CheckpointState::Failed, "PodNotFound");
        let text = m.render();
        // Cumulative buckets: 0.7 ms is under the first bound, 3 ms under 4 ms, 60 s only +Inf.
        for line in [
            "checkpointing_controller_reconcile_duration_seconds_count 3",
            "checkpointing_controller_reconcile_duration_seconds_bucket{le=\"0.001\"} 1",
            "checkpointing_controller_reconcile_duration_seconds_bucket{le=\"0.004\"} 2",
            "checkpointing_controller_reconcile_duration_seconds_bucket{le=\"32.768\"} 2",
            "checkpointing_controller_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            text.contains("checkpointing_controller_reconciles_total{result=\"success\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("checkpointing_controller_reconciles_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "checkpointing_controller_requests_total{state=\"Failed\",reason=\"PodNotFound\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn every_family_is_named_checkpointing_controller() {
        let m = Metrics::default();
        for kind in [
            Kind::ContainerCheckpoint,
            Kind::PodCheckpoint,
            Kind::PodMigration,
            Kind::CheckpointPolicy,
        ] {
            m.of(kind).reconciled("success", Duration::ZERO);
            m.of(kind).finished(CheckpointState::Completed, "Completed");
        }
        m.admitted("allowed", "NoRestore");
        admin::assert_namespaced(&m, "controller");
    }

    #[test]
    fn metrics_show_the_leader() {
        let m = Metrics::default();
        m.set_leader(true);
        let text = m.render();
        assert!(text.contains("checkpointing_controller_leader 1"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn metrics_count_webhook_decisions() {
        let m = Metrics::default();
        m.admitted("denied", "NotFound");
        m.admitted("patched", "Restored");
        m.admitted("patched", "Restored");
        let text = m.render();
        assert!(
            text.contains(
                "checkpointing_controller_webhook_decisions_total{result=\"denied\",reason=\"NotFound\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "checkpointing_controller_webhook_decisions_total{result=\"patched\",reason=\"Restored\"} 2"
            ),
            "{text}"
        );
    }
}
