use super::*;
use checkpointing::crd::{CheckpointPolicySpec, PodMigrationStatus, RetentionSpec};
use k8s_openapi::api::policy::v1::{PodDisruptionBudgetSpec, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

const NOW: &str = "2026-12-05T12:00:00Z";
const UID: &str = "0a1b2c3d-0000-1111-2222-333333333333";

fn pod(labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": "web-0", "namespace": "team", "uid": UID, "labels": labels},
        "spec": {"nodeName": "node1", "containers": [{"name": "c", "image": "busybox"}]},
        "status": {"phase": "Running"},
    }))
    .unwrap()
}

fn policy(name: &str, on_eviction: Option<OnEviction>) -> CheckpointPolicy {
    let mut p = CheckpointPolicy::new(
        name,
        CheckpointPolicySpec {
            selector: serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap(),
            schedule: None,
            retention: RetentionSpec::default(),
            registry: None,
            containers: Vec::new(),
            timeout_seconds: None,
            on_eviction,
            on_node_loss: None,
        },
    );
    p.metadata.namespace = Some("team".into());
    p
}

fn budget(allowed: i32) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: kube::api::ObjectMeta {
            name: Some("web".into()),
            ..Default::default()
        },
        spec: Some(PodDisruptionBudgetSpec {
            selector: Some(serde_json::from_value(json!({"matchLabels": {"app": "web"}})).unwrap()),
            ..Default::default()
        }),
        status: Some(PodDisruptionBudgetStatus {
            disruptions_allowed: allowed,
            ..Default::default()
        }),
    }
}

fn attempt(n: usize, created: &str, phase: Option<MigrationPhase>) -> PodMigration {
    let mut m = PodMigration::new(
        &migration_name("web-0", UID, n),
        PodMigrationSpec {
            pod_name: "web-0".into(),
            target_node: None,
            delete_source: None,
            timeout_seconds: None,
            registry: None,
            from_checkpoint: None,
        },
    );
    m.metadata.labels = Some([(EVICTION_LABEL.to_owned(), UID.to_owned())].into());
    m.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
    m.status = Some(PodMigrationStatus {
        phase,
        message: Some("the checkpoint failed: CRIU could not dump".into()),
        ..Default::default()
    });
    m
}

struct Given {
    pod: Pod,
    policies: Vec<CheckpointPolicy>,
    budgets: Vec<PodDisruptionBudget>,
    migrations: Vec<PodMigration>,
    checkpoints: Vec<PodCheckpoint>,
    left: Option<&'static str>,
    trusted: bool,
}

impl Given {
    fn protected(action: OnEviction) -> Self {
        Self {
            pod: pod(json!({"app": "web"})),
            policies: vec![policy("keep", Some(action))],
            budgets: Vec::new(),
            migrations: Vec::new(),
            checkpoints: Vec::new(),
            left: None,
            trusted: true,
        }
    }

    fn decide(&self) -> Decision {
        decide(&Observed {
            pod: &self.pod,
            policies: &self.policies,
            budgets: &self.budgets,
            migrations: &self.migrations,
            checkpoints: &self.checkpoints,
            left_drained_node: self.left,
            now: NOW.parse().unwrap(),
            trusted: self.trusted,
        })
    }
}

fn waits(d: Decision) -> (String, Option<Start>) {
    match d {
        Decision::Wait { message, start } => (message, start),
        other => panic!("expected the eviction to wait: {other:?}"),
    }
}

#[test]
fn an_unprotected_pod_is_evicted_as_any() {
    let mut g = Given::protected(OnEviction::Migrate);
    g.pod = pod(json!({"app": "other"}));
    assert!(matches!(g.decide(), Decision::Allow), "not selected");
    g.pod = pod(json!({"app": "web"}));
    g.policies = vec![policy("schedule-only", None)];
    assert!(matches!(g.decide(), Decision::Allow), "no onEviction");
    let mut g = Given::protected(OnEviction::Migrate);
    g.pod.status.as_mut().unwrap().phase = Some("Pending".into());
    assert!(matches!(g.decide(), Decision::Allow), "not running");
}

#[test]
fn a_protected_pod_waits_while_a_migration_moves_it() {
    let mut g = Given::protected(OnEviction::Migrate);
    let (message, start) = waits(g.decide());
    let Some(Start::Migration(m)) = start else {
        panic!("a migration starts: {message}");
    };
    assert_eq!(m.name_any(), "evict-web-0-0a1b2c3d-1");
    assert_eq!(m.spec.pod_name, "web-0");
    assert_eq!(
        m.labels().get(EVICTION_LABEL).map(String::as_str),
        Some(UID)
    );
    assert_eq!(
        m.labels().get(POLICY_LABEL).map(String::as_str),
        Some("keep")
    );
    assert!(
        message.contains("PodMigration") && message.contains("keep"),
        "{message}"
    );

    g.migrations = vec![attempt(
        1,
        "2026-12-05T11:59:50Z",
        Some(MigrationPhase::Restoring),
    )];
    let (message, start) = waits(g.decide());
    assert!(start.is_none() && message.contains("moving"), "{message}");

    g.migrations = vec![attempt(
        1,
        "2026-12-05T11:59:50Z",
        Some(MigrationPhase::Succeeded),
    )];
    assert!(
        matches!(g.decide(), Decision::Allow),
        "moved: the eviction goes on"
    );
}

#[test]
fn a_budget_that_allows_no_disruption_holds_the_migration() {
    let mut g = Given::protected(OnEviction::Migrate);
    g.budgets = vec![budget(0)];
    let (message, start) = waits(g.decide());
    assert!(start.is_none());
    assert!(message.contains("PodDisruptionBudget \"web\""), "{message}");
    g.budgets = vec![budget(1)];
    assert!(waits(g.decide()).1.is_some(), "the budget allows one");
}

#[test]
fn a_failed_migration_keeps_the_pod_and_is_tried_again_a_minute_later_three_times() {
    let mut g = Given::protected(OnEviction::Migrate);
    g.migrations = vec![attempt(
        1,
        "2026-12-05T11:59:30Z",
        Some(MigrationPhase::Failed),
    )];
    let (message, start) = waits(g.decide());
    assert!(start.is_none());
    assert!(
        message.contains("CRIU could not dump") && message.contains("stays on node node1"),
        "{message}"
    );
    g.migrations = vec![attempt(
        1,
        "2026-12-05T11:58:00Z",
        Some(MigrationPhase::Failed),
    )];
    let Some(Start::Migration(m)) = waits(g.decide()).1 else {
        panic!("a second attempt starts");
    };
    assert_eq!(m.name_any(), "evict-web-0-0a1b2c3d-2");
    g.migrations = (1..=3)
        .map(|n| {
            attempt(
                n,
                &format!("2026-12-05T11:5{n}:00Z"),
                Some(MigrationPhase::Failed),
            )
        })
        .collect();
    let (message, start) = waits(g.decide());
    assert!(start.is_none(), "no fourth attempt");
    assert!(
        message.contains("3 attempts failed") && message.contains(UID),
        "{message}"
    );
}

#[test]
fn checkpoint_on_eviction_takes_a_labelled_checkpoint_then_lets_it_go() {
    let mut g = Given::protected(OnEviction::Checkpoint);
    let Some(Start::Checkpoint(pc)) = waits(g.decide()).1 else {
        panic!("a checkpoint starts");
    };
    assert_eq!(pc.spec.pod_name, "web-0");
    assert_eq!(
        pc.labels().get(EVICTION_LABEL).map(String::as_str),
        Some(UID)
    );
    assert_eq!(
        pc.labels().get(POLICY_LABEL).map(String::as_str),
        Some("keep")
    );
    let mut done = (*pc).clone();
    done.metadata.creation_timestamp = Some(Time(NOW.parse().unwrap()));
    done.status = Some(checkpointing::crd::PodCheckpointStatus {
        state: Some(CheckpointState::Completed),
        ..Default::default()
    });
    g.checkpoints = vec![done];
    assert!(matches!(g.decide(), Decision::Allow));
}

#[test]
fn the_restored_copy_of_a_drained_statefulset_pod_is_gone_for_the_drain() {
    let mut g = Given::protected(OnEviction::Migrate);
    // The migration of the pod that had this name before, on node2.
    let mut moved = attempt(1, "2026-12-05T11:59:00Z", Some(MigrationPhase::Succeeded));
    moved.metadata.labels = Some([(EVICTION_LABEL.to_owned(), "old-uid".to_owned())].into());
    let status = moved.status.as_mut().unwrap();
    status.restored_pod = Some("web-0".into());
    status.source_pod_uid = Some("old-uid".into());
    status.source_node = Some("node2".into());
    g.migrations = vec![moved];
    assert!(copy_of(&g.pod, &g.migrations).is_some());
    g.left = Some("node2");
    assert!(matches!(g.decide(), Decision::Gone { message } if message.contains("node2")));
    // Its old node is no longer drained: this is an eviction of the pod where it runs now.
    g.left = None;
    assert!(waits(g.decide()).1.is_some());
}

#[test]
fn an_untrusted_eviction_starts_nothing_but_waits_for_a_cordon() {
    for action in [OnEviction::Migrate, OnEviction::Checkpoint] {
        let mut g = Given::protected(action);
        g.trusted = false;
        let (message, start) = waits(g.decide());
        assert!(start.is_none(), "{action:?}");
        assert!(message.contains("cordon node node1 first"), "{message}");
        assert!(message.contains("CheckpointPolicy \"keep\""), "{message}");
    }
    // What needs no start is answered as before.
    let mut g = Given::protected(OnEviction::Migrate);
    g.trusted = false;
    g.pod = pod(json!({"app": "other"}));
    assert!(matches!(g.decide(), Decision::Allow));
}
