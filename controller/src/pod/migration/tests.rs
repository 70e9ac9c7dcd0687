use super::*;
use crate::fixtures::{self, lease, now, pod, running};
use checkpointing::crd::{ContainerResult, PodCheckpointStatus};
use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};

const PENDING_TIMEOUT: Duration = Duration::from_secs(300);

fn migration(target: Option<&str>) -> PodMigration {
    let mut m = fixtures::migration(target);
    m.metadata.creation_timestamp = Some(Time(now()));
    m
}

fn owned_by(mut pod: Pod, kind: &str) -> Pod {
    pod.metadata.owner_references = Some(vec![OwnerReference {
        kind: kind.into(),
        name: "web".into(),
        uid: "uid-owner".into(),
        controller: Some(true),
        ..Default::default()
    }]);
    pod
}

struct World {
    pod: Option<Pod>,
    checkpoint: Option<PodCheckpoint>,
    labelled: Vec<Pod>,
    lease: Option<Lease>,
    /// The reconcile's clock.
    now: Timestamp,
}

impl World {
    fn new(pod: Option<Pod>) -> Self {
        Self {
            pod,
            checkpoint: None,
            labelled: Vec::new(),
            lease: Some(lease("2025-01-01T00:00:50Z")),
            now: now(),
        }
    }

    fn plan(&self, m: &PodMigration) -> Plan {
        plan(&Observed {
            migration: m,
            pod: self.pod.as_ref(),
            checkpoint: self.checkpoint.as_ref(),
            labelled: &self.labelled,
            target_lease: self.lease.as_ref(),
            lease_namespace: "checkpoint-node-leases",
            pending_timeout: PENDING_TIMEOUT,
            now: self.now,
        })
    }
}

/// Runs one reconcile and records its status, as the API server would.
fn step(m: &mut PodMigration, world: &World) -> Vec<Action> {
    let plan = world.plan(m);
    if let Some(status) = plan.status {
        m.status = Some(status);
    }
    plan.actions
}

fn outcome(m: &PodMigration) -> (MigrationPhase, String) {
    let s = m.status.as_ref().unwrap();
    (s.phase.unwrap(), s.message.clone().unwrap_or_default())
}

fn completed_checkpoint() -> PodCheckpoint {
    let mut pc = PodCheckpoint::new(
        "move-app",
        PodCheckpointSpec {
            pod_name: "app".into(),
            containers: vec![],
            timeout_seconds: None,
            registry: None,
            hold_source: false,
        },
    );
    pc.status = Some(PodCheckpointStatus {
        state: Some(CheckpointState::Completed),
        containers: vec![ContainerResult {
            name: "counter".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    pc
}

/// What the webhook makes of a copy or a replacement: marked and scheduled on node2.
fn restored(mut pod: Pod, up: bool) -> Pod {
    pod.metadata.uid = Some("uid-new".into());
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(RESTORE_FROM_ANNOTATION.into(), "move-app".into());
    annotations.insert(RESTORED_FROM_DIGEST_ANNOTATION.into(), "sha256:x".into());
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(MIGRATION_LABEL.into(), "move-app".into());
    pod.spec.as_mut().unwrap().node_name = Some("node2".into());
    if up { running(pod) } else { pod }
}

#[test]
fn a_bare_pod_is_copied_to_the_target_and_the_source_goes_once_the_copy_runs() {
    let mut m = migration(Some("node2"));
    let registry = checkpointing::crd::RegistrySpec {
        compression: None,
        repository: Some("reg.example:5443/team/ckpt".into()),
        secret_ref: None,
    };
    m.spec.registry = Some(registry.clone());
    let mut world = World::new(Some(running(pod())));
    let actions = step(&mut m, &world);
    assert!(matches!(&actions[..], [Action::CreateCheckpoint(pc)]
        if pc.name_any() == "move-app" && pc.spec.registry == Some(registry.clone())));
    let status = m.status.clone().unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::Checkpointing));
    assert_eq!(status.source_node.as_deref(), Some("node1"));
    assert_eq!(status.source_pod_uid.as_deref(), Some("uid-pod"));
    assert!(status.checkpoint_request_time.is_some());

    world.checkpoint = Some(completed_checkpoint());
    world.now = now() + k8s_openapi::jiff::SignedDuration::from_millis(1200);
    let actions = step(&mut m, &world);
    let [Action::CreatePod(copy)] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(copy.name_any(), "app-c0ffe");
    assert_eq!(
        m.status.as_ref().unwrap().phase,
        Some(MigrationPhase::Restoring)
    );

    // Starting: the source stays.
    world.labelled = vec![restored((**copy).clone(), false)];
    assert!(step(&mut m, &world).is_empty());
    assert_eq!(
        m.status.as_ref().unwrap().restored_pod.as_deref(),
        Some("app-c0ffe")
    );

    world.labelled = vec![restored((**copy).clone(), true)];
    world.now = now() + k8s_openapi::jiff::SignedDuration::from_millis(4500);
    let actions = step(&mut m, &world);
    assert!(
        matches!(&actions[..], [Action::DeleteSource { name, uid }] if name == "app" && uid == "uid-pod")
    );
    // Final only once the source is gone: a final migration is never looked at again.
    assert_eq!(
        m.status.as_ref().unwrap().phase,
        Some(MigrationPhase::Restoring)
    );
    world.pod = None;
    world.now = now() + k8s_openapi::jiff::SignedDuration::from_millis(6000);
    assert!(step(&mut m, &world).is_empty());
    let status = m.status.clone().unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::Succeeded));
    assert_eq!(status.target_node.as_deref(), Some("node2"));
    // From the checkpoint request to the copy first seen running, not to the source's end.
    assert_eq!(status.downtime_milliseconds, Some(4500));
    let message = status.message.unwrap_or_default();
    assert!(
        message.ends_with("downtime 4500 ms (checkpoint 1200 ms, restore 3300 ms)"),
        "{message}"
    );
    assert_eq!(status.conditions[0].status, "True");
    // Final: nothing more.
    assert!(world.plan(&m).status.is_none());
}

#[test]
fn a_statefulset_pod_is_deleted_and_its_replacement_is_the_restore() {
    let mut m = migration(Some("node2"));
    let source = owned_by(running(pod()), "StatefulSet");
    let mut world = World::new(Some(source.clone()));
    step(&mut m, &world);
    assert_eq!(
        m.status.as_ref().unwrap().owner.as_deref(),
        Some("StatefulSet/web")
    );
    assert_eq!(
        m.status.as_ref().unwrap().owner_uid.as_deref(),
        Some("uid-owner")
    );
    world.checkpoint = Some(completed_checkpoint());
    let actions = step(&mut m, &world);
    assert!(
        matches!(&actions[..], [Action::DeleteSource { .. }]),
        "{actions:?}"
    );
    // Terminating: nothing to do but wait.
    let mut terminating = source.clone();
    terminating.metadata.deletion_timestamp = Some(Time(now()));
    world.pod = Some(terminating);
    assert!(world.plan(&m).actions.is_empty());
    // The StatefulSet's new pod, restored by the webhook.
    let replacement = restored(source, true);
    world.pod = Some(replacement.clone());
    world.labelled = vec![replacement];
    let actions = step(&mut m, &world);
    assert!(
        actions.is_empty(),
        "the replacement is not deleted: {actions:?}"
    );
    assert_eq!(
        m.status.as_ref().unwrap().phase,
        Some(MigrationPhase::Succeeded)
    );
    assert_eq!(
        m.status.as_ref().unwrap().restored_pod.as_deref(),
        Some("app")
    );
}

#[test]
fn a_statefulset_pod_recreated_without_restore_fails_the_migration() {
    let mut m = migration(Some("node2"));
    let source = owned_by(running(pod()), "StatefulSet");
    let mut world = World::new(Some(source.clone()));
    step(&mut m, &world);
    world.checkpoint = Some(completed_checkpoint());
    step(&mut m, &world);
    let mut fresh = source;
    fresh.metadata.uid = Some("uid-fresh".into());
    world.pod = Some(fresh);
    step(&mut m, &world);
    let (phase, message) = outcome(&m);
    assert_eq!(phase, MigrationPhase::Failed);
    assert!(message.contains("started afresh"), "{message}");
    assert!(
        message.contains("PodCheckpoint \"move-app\" is kept"),
        "{message}"
    );
}

#[test]
fn refusals_leave_the_source_alone_and_say_why() {
    // (pod, target, deleteSource, target has a noded, expected message)
    type Case = (
        Option<Pod>,
        Option<&'static str>,
        Option<bool>,
        bool,
        &'static str,
    );
    let cases: Vec<Case> = vec![
        (
            None,
            Some("node2"),
            None,
            true,
            "pod \"app\" not found in namespace \"default\"",
        ),
        (
            Some(pod()),
            Some("node2"),
            None,
            true,
            "is not scheduled, not Running",
        ),
        (
            Some(owned_by(running(pod()), "DaemonSet")),
            Some("node2"),
            None,
            true,
            "belongs to DaemonSet \"web\", whose pods cannot move",
        ),
        (
            Some(owned_by(running(pod()), "ReplicaSet")),
            Some("node2"),
            Some(false),
            true,
            "moves only with deleteSource true",
        ),
        (
            Some(running(pod())),
            Some("node1"),
            None,
            true,
            "already runs on node \"node1\"",
        ),
        (
            Some(running(pod())),
            Some("node3"),
            None,
            false,
            "no live node daemon on node \"node3\"",
        ),
    ];
    for (pod, target, delete_source, lease, expected) in cases {
        let mut m = migration(target);
        m.spec.delete_source = delete_source;
        // Waited long enough for a pod that is not Running yet.
        let created = now() - PENDING_TIMEOUT;
        m.metadata.creation_timestamp = Some(Time(created));
        let mut world = World::new(pod);
        if !lease {
            world.lease = None;
        }
        let actions = step(&mut m, &world);
        assert!(actions.is_empty(), "{expected}: {actions:?}");
        let (phase, message) = outcome(&m);
        assert_eq!(phase, MigrationPhase::Failed, "{message}");
        assert!(
            message.to_lowercase().contains(&expected.to_lowercase()),
            "{expected:?} not in {message:?}"
        );
    }
}

#[test]
fn a_target_whose_runtime_cannot_restore_is_refused_up_front() {
    let mut m = migration(Some("node2"));
    let mut world = World::new(Some(running(pod())));
    world.lease.as_mut().unwrap().metadata.annotations = Some(
        [(
            CANNOT_RESTORE_ANNOTATION.to_owned(),
            "containerd 2.4 restores no checkpoint image".to_owned(),
        )]
        .into(),
    );
    assert!(step(&mut m, &world).is_empty());
    let (phase, message) = outcome(&m);
    assert_eq!(phase, MigrationPhase::Failed);
    assert_eq!(
        message,
        "node \"node2\" cannot restore checkpoints (containerd 2.4 restores no checkpoint \
         image); name another targetNode"
    );
}

#[test]
fn a_name_that_is_not_a_pods_is_refused() {
    let mut m = migration(Some("node2"));
    m.spec.pod_name = "../../secrets/x".into();
    assert!(step(&mut m, &World::new(None)).is_empty());
    let (phase, message) = outcome(&m);
    assert_eq!(phase, MigrationPhase::Failed);
    assert!(message.contains("is not a pod name"), "{message}");
}

#[test]
fn a_failed_checkpoint_or_restore_says_what_is_left_and_how_to_retry() {
    let mut m = migration(None);
    let mut world = World::new(Some(running(pod())));
    step(&mut m, &world);
    let mut pc = completed_checkpoint();
    pc.status.as_mut().unwrap().state = Some(CheckpointState::Failed);
    pc.status.as_mut().unwrap().message = Some("container \"counter\": CRIU failed".into());
    world.checkpoint = Some(pc);
    let mut failed = m.clone();
    step(&mut failed, &world);
    let (phase, message) = outcome(&failed);
    assert_eq!(phase, MigrationPhase::Failed);
    assert!(
        message.contains("CRIU failed") && message.contains("the source pod keeps running"),
        "{message}"
    );

    world.checkpoint = Some(completed_checkpoint());
    let actions = step(&mut m, &world);
    let [Action::CreatePod(copy)] = &actions[..] else {
        panic!()
    };
    // No target: anywhere but the source's node.
    let term = &copy
        .spec
        .as_ref()
        .unwrap()
        .affinity
        .as_ref()
        .unwrap()
        .node_affinity
        .as_ref()
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .unwrap()
        .node_selector_terms[0];
    assert_eq!(term.match_fields.as_ref().unwrap()[0].operator, "NotIn");
    let mut broken = restored((**copy).clone(), false);
    broken.status = Some(k8s_openapi::api::core::v1::PodStatus {
        container_statuses: Some(vec![ContainerStatus {
            name: "counter".into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CreateContainerError".into()),
                    message: Some("restore failed".into()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }]),
        ..Default::default()
    });
    world.labelled = vec![broken];
    assert!(step(&mut m, &world).is_empty());
    let (phase, message) = outcome(&m);
    assert_eq!(phase, MigrationPhase::Failed);
    assert!(
        message.contains("CreateContainerError: restore failed"),
        "{message}"
    );
    assert!(
        message.contains("the source pod keeps running"),
        "{message}"
    );
    assert!(message.contains("restore-from: move-app"), "{message}");
}

#[test]
fn a_migration_that_fails_after_the_dump_thaws_its_source_before_it_says_so() {
    let mut m = migration(None);
    let mut world = World::new(Some(running(pod())));
    let actions = step(&mut m, &world);
    let [Action::CreateCheckpoint(asked)] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert!(asked.spec.hold_source, "held from its dump on");
    let mut pc = completed_checkpoint();
    pc.spec.hold_source = true;
    pc.status.as_mut().unwrap().containers[0].container_checkpoint = "move-app-counter".into();
    pc.status.as_mut().unwrap().state = Some(CheckpointState::Failed);
    world.checkpoint = Some(pc.clone());
    let actions = step(&mut m, &world);
    assert_eq!(outcome(&m).0, MigrationPhase::Failed);
    let [Action::ReleaseSource { contents }] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(contents, &["move-app-counter"]);
    assert!(
        outcome(&m).1.contains("the source pod keeps running"),
        "{}",
        outcome(&m).1
    );

    // Failed, it keeps releasing while a container may still be being dumped, then once more.
    let mut pc = pc.clone();
    pc.status.as_mut().unwrap().containers[0].state = Some(CheckpointState::Running);
    world.checkpoint = Some(pc.clone());
    let plan = world.plan(&m);
    assert!(plan.status.is_none(), "final: its status stays");
    assert!(matches!(&plan.actions[..], [Action::ReleaseSource { .. }]));
    assert!(plan.requeue_after.is_some(), "looks again while one dumps");
    pc.status.as_mut().unwrap().containers[0].state = Some(CheckpointState::Completed);
    world.checkpoint = Some(pc.clone());
    let plan = world.plan(&m);
    assert!(matches!(&plan.actions[..], [Action::ReleaseSource { .. }]));
    assert_eq!(plan.requeue_after, None);

    // A refusal before anything was dumped holds nothing.
    let mut refused = migration(Some("node1"));
    world.checkpoint = Some(pc);
    let actions = step(&mut refused, &world);
    assert_eq!(outcome(&refused).0, MigrationPhase::Failed);
    assert!(actions.is_empty(), "{actions:?}");
}

#[test]
fn a_copy_refused_at_admission_fails_the_migration_with_the_reason() {
    let mut m = migration(None);
    m.status = Some(PodMigrationStatus {
        phase: Some(MigrationPhase::Restoring),
        pod_checkpoint: Some("move-app".into()),
        ..Default::default()
    });
    let why = "no node can restore this checkpoint: node3 runs cri-o (checkpoint from containerd)";
    let status = copy_refused(&m, why, now()).status.unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::Failed));
    let message = status.message.unwrap();
    assert!(
        message.contains(why) && message.contains("the source pod keeps running"),
        "{message}"
    );
    assert_eq!(status.conditions[0].reason, "CopyRefused");
}

#[test]
fn a_copy_keeps_its_source_running() {
    let mut m = migration(None);
    m.spec.delete_source = Some(false);
    let world = World::new(Some(running(pod())));
    let actions = step(&mut m, &world);
    let [Action::CreateCheckpoint(asked)] = &actions[..] else {
        panic!("{actions:?}")
    };
    assert!(!asked.spec.hold_source);
}

#[test]
fn a_migration_past_its_timeout_fails() {
    let mut m = migration(Some("node2"));
    m.spec.timeout_seconds = Some(30);
    m.metadata.creation_timestamp = Some(Time("2025-01-01T00:00:00Z".parse().unwrap()));
    step(&mut m, &World::new(Some(running(pod()))));
    let (phase, message) = outcome(&m);
    assert_eq!(phase, MigrationPhase::Failed);
    assert!(
        message.contains("within 30s") && message.contains("keeps running"),
        "{message}"
    );
}

/// A pod of a lost node: no checkpoint to take, restored from one the policy took before.
#[test]
fn from_a_checkpoint_a_lost_nodes_pod_is_restored_without_a_new_checkpoint() {
    let mut m = migration(None);
    m.spec.from_checkpoint = Some("move-app".into());
    let mut taken = completed_checkpoint();
    taken.metadata.creation_timestamp = Some(Time(
        now() - k8s_openapi::jiff::SignedDuration::from_secs(90),
    ));
    // The node stopped answering: the pod's phase is whatever was last reported.
    let mut lost = owned_by(pod(), "ReplicaSet");
    lost.status = Some(k8s_openapi::api::core::v1::PodStatus {
        phase: Some("Unknown".into()),
        ..Default::default()
    });
    let mut world = World::new(Some(lost.clone()));
    world.checkpoint = Some(taken);
    let actions = step(&mut m, &world);
    assert!(
        actions
            .iter()
            .all(|a| !matches!(a, Action::CreateCheckpoint(_))),
        "nothing to checkpoint: {actions:?}"
    );
    assert!(
        matches!(&actions[..], [Action::DeleteSource { .. }]),
        "{actions:?}"
    );
    let (phase, message) = outcome(&m);
    assert_eq!(phase, MigrationPhase::Restoring);
    assert_eq!(
        m.status.as_ref().unwrap().pod_checkpoint.as_deref(),
        Some("move-app")
    );
    let replacement = restored(lost, true);
    world.pod = Some(replacement.clone());
    world.labelled = vec![replacement];
    step(&mut m, &world);
    let (phase, done) = outcome(&m);
    assert_eq!(phase, MigrationPhase::Succeeded, "{message}");
    assert!(
        done.contains("taken 90s before the restore began"),
        "{done}"
    );

    // Only the pod's own, completed checkpoint restores.
    for (name, pod_name, state) in [
        ("move-app", "other", CheckpointState::Completed),
        ("move-app", "app", CheckpointState::Failed),
    ] {
        let mut m = migration(None);
        m.spec.from_checkpoint = Some(name.into());
        let mut pc = completed_checkpoint();
        pc.spec.pod_name = pod_name.into();
        pc.status.as_mut().unwrap().state = Some(state);
        let mut world = World::new(Some(owned_by(running(pod()), "ReplicaSet")));
        world.checkpoint = Some(pc);
        step(&mut m, &world);
        let (phase, message) = outcome(&m);
        assert_eq!(phase, MigrationPhase::Failed, "{message}");
        assert!(message.contains("PodCheckpoint"), "{message}");
    }
}

#[test]
fn a_failing_plan_says_which_failure_it_is() {
    let world = World::new(Some(running(pod())));
    let same = world.plan(&migration(Some("node1")));
    assert!(
        matches!(&same.failure, Some(Failure::SameNode { target, .. }) if target == "node1"),
        "{same:?}"
    );
    assert_eq!(same.status.unwrap().conditions[0].reason, "SameNode");
    assert_eq!(world.plan(&migration(Some("node2"))).failure, None);
}

#[test]
fn a_migration_waits_for_its_pod_to_run_then_fails_past_the_bound() {
    let mut m = migration(Some("node2"));
    m.metadata.creation_timestamp = Some(Time(now() - Duration::from_secs(10)));
    let mut starting = pod();
    starting.status.as_mut().unwrap().phase = Some("Pending".into());
    let world = World::new(Some(starting));
    let plan = world.plan(&m);
    assert!(plan.actions.is_empty(), "{plan:?}");
    assert_eq!(plan.failure, None);
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(10)));
    let status = plan.status.unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::Pending));
    assert_eq!(
        status.message.as_deref(),
        Some("waiting: pod \"app\" is Pending, not Running on a node yet")
    );
    assert_eq!(status.conditions[0].reason, "PodNotRunning");

    // Once the pod runs, the migration goes on.
    let mut waited = m.clone();
    waited.status = Some(status);
    let actions = step(&mut waited, &World::new(Some(running(pod()))));
    assert!(
        matches!(&actions[..], [Action::CreateCheckpoint(_)]),
        "{actions:?}"
    );

    // Still not running past the bound: Failed, with the refusal's own message.
    m.metadata.creation_timestamp = Some(Time(now() - PENDING_TIMEOUT));
    step(&mut m, &world);
    assert_eq!(
        outcome(&m),
        (
            MigrationPhase::Failed,
            "pod \"app\" is Pending, not Running on a node; only a running pod can move".into()
        )
    );

    // A pod that ended never runs again: Failed at once.
    let mut ended = running(pod());
    ended.status.as_mut().unwrap().phase = Some("Succeeded".into());
    let failed = World::new(Some(ended)).plan(&migration(Some("node2")));
    assert!(
        matches!(&failed.failure, Some(Failure::PodNotRunning { phase, .. })
            if phase.as_deref() == Some("Succeeded")),
        "{failed:?}"
    );
}
