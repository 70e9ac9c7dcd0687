use super::*;
use serde_json::Value;

// The eviction webhook's answers, as controller/src/webhook/eviction.rs words them.
const STARTS_MIGRATION: &str = "pod \"web\" on node node1 is protected by CheckpointPolicy \
     \"protect\": PodMigration \"evict-web-1a2b3c4d-1\" moves it to another node (attempt 1 of \
     3); the eviction completes when it is done";
const MIGRATING: &str = "PodMigration \"evict-web-1a2b3c4d-1\" of CheckpointPolicy \"protect\" \
     is moving pod \"web\" (on node node1); the eviction completes when it is done";
const MIGRATION_FAILED: &str = "PodMigration \"evict-web-1a2b3c4d-1\" failed: PodCheckpoint \
     \"evict-web-1a2b3c4d-1\" failed: no space; pod \"web\" stays on node node1; another \
     attempt starts after 2026-01-01T00:01:00Z";
const STARTS_CHECKPOINT: &str = "pod \"db\" on node node1 is protected by CheckpointPolicy \
     \"keep\": PodCheckpoint \"keep-db-0a1b.1700000000\" checkpoints it first (attempt 1 of 3); \
     the eviction completes when it is done";
const BUDGET: &str = "pod \"web\" is protected by CheckpointPolicy \"protect\" (onEviction: \
     Migrate), but moving it now would take PodDisruptionBudget \"guarded\" below its minimum \
     (no disruption allowed); it is moved once the budget allows";
const LEFT: &str = "pod \"db-0\" left node node1, which is being drained, by PodMigration \
     \"evict-db-0-5e6f7a8b-1\"; the pod of this name runs on another node now";
// The API server's own.
const SERVERS_BUDGET: &str = "Cannot evict pod as it would violate the pod's disruption budget.";
const LOOKUP_FAILED: &str = "could not check whether pod \"web\" is protected by a \
     CheckpointPolicy (timed out); the eviction is tried again";

#[test]
fn answers_say_what_an_eviction_does() {
    assert_eq!(classify(None), What::Evict);
    for (message, what) in [
        (STARTS_MIGRATION, What::Migrate),
        (MIGRATING, What::Migrate),
        (MIGRATION_FAILED, What::Migrate),
        (STARTS_CHECKPOINT, What::Checkpoint),
        (BUDGET, What::Wait),
        (SERVERS_BUDGET, What::Wait),
        (LOOKUP_FAILED, What::Wait),
    ] {
        assert_eq!(classify(Some((429, message))), what, "{message}");
    }
    assert_eq!(classify(Some((404, LEFT))), What::Gone);
    assert_eq!(classify(Some((404, "pods \"web\" not found"))), What::Gone);
    assert_eq!(classify(Some((403, "forbidden"))), What::Refused);
    // Only a 429 waits, whatever a refusal names.
    assert_eq!(classify(Some((500, STARTS_MIGRATION))), What::Refused);
}

#[test]
fn the_migration_that_moved_a_pod_is_the_one_named_first() {
    assert_eq!(
        moved_by(Some(STARTS_MIGRATION)),
        Some("evict-web-1a2b3c4d-1")
    );
    assert_eq!(
        moved_by(Some(MIGRATION_FAILED)),
        Some("evict-web-1a2b3c4d-1")
    );
    assert_eq!(moved_by(Some(LEFT)), Some("evict-db-0-5e6f7a8b-1"));
    assert_eq!(moved_by(Some(STARTS_CHECKPOINT)), None);
    assert_eq!(moved_by(Some(BUDGET)), None);
    assert_eq!(moved_by(Some("PodMigration without a name")), None);
    assert_eq!(moved_by(None), None);
}

#[test]
fn a_finished_pod_says_how_it_went() {
    assert_eq!(
        done_line("ns/plain", true, None, None),
        "pod ns/plain evicted"
    );
    assert_eq!(
        done_line("ns/web", false, Some(MIGRATING), Some("node2")),
        "pod ns/web moved to node2 by PodMigration \"evict-web-1a2b3c4d-1\""
    );
    assert_eq!(
        done_line("ns/db-0", false, Some(LEFT), None),
        "pod ns/db-0 moved by PodMigration \"evict-db-0-5e6f7a8b-1\""
    );
    assert_eq!(
        done_line("ns/db", true, Some(STARTS_CHECKPOINT), None),
        "pod ns/db evicted after PodCheckpoint \"keep-db-0a1b.1700000000\""
    );
    // Allowed once the migration succeeded, while the pod was stopping: moved.
    assert_eq!(
        done_line("ns/web", true, Some(MIGRATING), Some("node2")),
        "pod ns/web moved to node2 by PodMigration \"evict-web-1a2b3c4d-1\""
    );
    // Evicted after all (taken out of its policy, say): not moved.
    assert_eq!(
        done_line("ns/web", true, Some(MIGRATION_FAILED), None),
        "pod ns/web evicted"
    );
    assert_eq!(done_line("ns/x", false, None, None), "pod ns/x gone");
    assert_eq!(
        done_line("ns/x", false, Some(BUDGET), None),
        "pod ns/x gone"
    );
}

fn pod(value: Value) -> Pod {
    serde_json::from_value(value).unwrap()
}

#[test]
fn daemonset_mirror_and_finished_pods_stay_as_kubectl_drain_leaves_them() {
    assert!(evicts(&pod(json!({"status": {"phase": "Running"}}))));
    assert!(evicts(&pod(json!({}))));
    let owned = |kind: &str, controller: bool| {
        pod(json!({"metadata": {"ownerReferences": [{
            "apiVersion": "apps/v1", "kind": kind, "name": "o", "uid": "u",
            "controller": controller,
        }]}}))
    };
    assert!(!evicts(&owned("DaemonSet", true)));
    assert!(evicts(&owned("DaemonSet", false)));
    assert!(evicts(&owned("ReplicaSet", true)));
    assert!(!evicts(&pod(
        json!({"metadata": {"annotations": {MIRROR_ANNOTATION: "abc"}}})
    )));
    for phase in ["Succeeded", "Failed"] {
        assert!(
            !evicts(&pod(json!({"status": {"phase": phase}}))),
            "{phase}"
        );
    }
    assert!(evicts(&pod(json!({"status": {"phase": "Pending"}}))));
}

#[test]
fn the_servers_words_include_its_causes() {
    let status = Status::failure(SERVERS_BUDGET, "TooManyRequests").with_code(429);
    assert_eq!(said(&status), SERVERS_BUDGET);
    let status: Status = serde_json::from_value(json!({
        "code": 429, "message": SERVERS_BUDGET,
        "details": {"causes": [{
            "reason": "DisruptionBudget",
            "message": "The disruption budget guarded needs 1 healthy pods and has 1 currently",
        }]},
    }))
    .unwrap();
    assert_eq!(
        said(&status),
        format!(
            "{SERVERS_BUDGET} (The disruption budget guarded needs 1 healthy pods and has 1 \
             currently)"
        )
    );
}

#[test]
fn the_dry_run_table() {
    let rows = [
        (
            "ns".to_owned(),
            "web".to_owned(),
            What::Migrate,
            STARTS_MIGRATION.to_owned(),
        ),
        ("ns".into(), "plain".into(), What::Evict, String::new()),
        ("other".into(), "db-0".into(), What::Gone, "gone".into()),
    ];
    assert_eq!(
        dry_run_table(&rows),
        format!(
            "NAMESPACE   POD     WHAT      MESSAGE\n\
             ns          web     migrate   {STARTS_MIGRATION}\n\
             ns          plain   evict\n\
             other       db-0    gone      gone\n"
        )
    );
    let names: Vec<&str> = [
        What::Migrate,
        What::Checkpoint,
        What::Evict,
        What::Wait,
        What::Gone,
        What::Refused,
    ]
    .map(What::as_str)
    .to_vec();
    assert_eq!(
        names,
        ["migrate", "checkpoint", "evict", "wait", "gone", "refused"]
    );
}
