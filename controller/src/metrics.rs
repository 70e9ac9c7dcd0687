//! The controller's metrics, served on the admin port (`checkpointing::admin`).

use checkpointing::admin::Telemetry;
use checkpointing::crd::CheckpointState;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    state: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AdmissionLabels {
    result: &'static str,
    reason: &'static str,
}

/// The controller's metrics, in one registry.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ReconcileLabels, Counter>,
    reconcile_seconds: Histogram,
    requests: Family<RequestLabels, Counter>,
    admissions: Family<AdmissionLabels, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("checkpoint_controller");
        let reconciles = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciles",
            "Reconciles of ContainerCheckpoints, by result (success or error)",
            reconciles.clone(),
        );
        // 1 ms to ~33 s: a reconcile is a few API calls, slow ones wait on a struggling apiserver.
        let reconcile_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of a ContainerCheckpoint took, API calls included",
            reconcile_seconds.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "ContainerCheckpoints that reached a final state, by state and reason",
            requests.clone(),
        );
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
            reconciles,
            reconcile_seconds,
            requests,
            admissions,
            leader,
        }
    }
}

impl Metrics {
    pub fn reconciled(&self, result: &'static str, took: std::time::Duration) {
        self.reconciles
            .get_or_create(&ReconcileLabels { result })
            .inc();
        self.reconcile_seconds.observe(took.as_secs_f64());
    }

    pub fn finished(&self, state: CheckpointState, reason: &str) {
        let state = match state {
            CheckpointState::Pending => "Pending",
            CheckpointState::Running => "Running",
            CheckpointState::Completed => "Completed",
            CheckpointState::Failed => "Failed",
        };
        self.requests
            .get_or_create(&RequestLabels {
                state,
                reason: reason.to_owned(),
            })
            .inc();
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
    use std::time::Duration;

    #[test]
    fn metrics_count_reconciles_and_final_states() {
        let m = Metrics::default();
        m.reconciled("success", Duration::from_micros(700));
        m.reconciled("success", Duration::from_millis(3));
        m.reconciled("error", Duration::from_secs(60));
        m.finished(CheckpointState::Failed, "PodNotFound");
        let text = m.render();
        // Cumulative buckets: 0.7 ms is under the first bound, 3 ms under 4 ms, 60 s only +Inf.
        for line in [
            "checkpoint_controller_reconcile_duration_seconds_count 3",
            "checkpoint_controller_reconcile_duration_seconds_bucket{le=\"0.001\"} 1",
            "checkpoint_controller_reconcile_duration_seconds_bucket{le=\"0.004\"} 2",
            "checkpoint_controller_reconcile_duration_seconds_bucket{le=\"32.768\"} 2",
            "checkpoint_controller_reconcile_duration_seconds_bucket{le=\"+Inf\"} 3",
        ] {
            assert!(text.contains(line), "{line} missing from\n{text}");
        }
        assert!(
            text.contains("checkpoint_controller_reconciles_total{result=\"success\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("checkpoint_controller_reconciles_total{result=\"error\"} 1"),
            "{text}"
        );
        assert!(
            text.contains(
                "checkpoint_controller_requests_total{state=\"Failed\",reason=\"PodNotFound\"} 1"
            ),
            "{text}"
        );
    }

    #[test]
    fn metrics_show_the_leader() {
        let m = Metrics::default();
        m.set_leader(true);
        let text = m.render();
        assert!(text.contains("checkpoint_controller_leader 1"), "{text}");
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
                "checkpoint_controller_webhook_decisions_total{result=\"denied\",reason=\"NotFound\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "checkpoint_controller_webhook_decisions_total{result=\"patched\",reason=\"Restored\"} 2"
            ),
            "{text}"
        );
    }
}
