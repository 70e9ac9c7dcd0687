use std::future::Future;

use checkpointing::crd::{CheckpointState, ContainerCheckpointStatus, PodCheckpointSpec};
use checkpointing::names::{RESTORE_FROM_ANNOTATION, RESTORED_FROM_DIGEST_ANNOTATION};
use checkpointing::testing::{FakeApi, Seen};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::fixtures::{self, Watches, deliver, pod, running, settings};

const GROUP: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/namespaces/default";
const POD_PATH: &str = "/api/v1/namespaces/default/pods/app";
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

/// Reconciles `object` as the store shows it, lets the Event tasks it spawned reach the fake
/// API, and returns what it asked.
async fn reconciled<K: Request, F, E: std::fmt::Debug>(
    reconcile: impl FnOnce(Arc<K>) -> F,
    object: &K,
    api: &FakeApi,
) -> Vec<Seen>
where
    F: Future<Output = Result<Action, E>>,
{
    reconcile(Arc::new(object.clone())).await.unwrap();
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    api.take()
}

/// `object` as the store shows it once our last status write among `seen` came back.
fn shown<K>(object: &K, seen: &[Seen]) -> K
where
    K: Request<Status: k8s_openapi::serde::de::DeserializeOwned>,
{
    let status = seen
        .iter()
        .rev()
        .find(|s| s.uri.contains("/status"))
        .and_then(|s| s.body.as_ref())
        .expect("a status write");
    let mut shown = object.clone();
    *shown.status_mut() = serde_json::from_value(status["status"].clone()).unwrap();
    shown
}

/// The calls, sorted: an Event goes out on a task of its own, whenever that task runs.
fn calls(seen: &[Seen]) -> Vec<String> {
    let mut calls: Vec<_> = seen
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s.method,
                s.uri.split('?').next().unwrap_or_default()
            )
        })
        .collect();
    calls.sort();
    calls
}

/// One PodCheckpoint of a two-container pod, from creation to Completed, as the watches deliver
/// it: the stores a step behind our own writes. This is its whole API cost.
#[tokio::test]
async fn a_pod_checkpoint_costs_seven_calls_from_creation_to_completed() {
    let api = FakeApi::default();
    api.put(POD_PATH, pod());
    let mut watches = Watches::listed(&["node1"]);
    let ctx = Arc::new(CheckpointContext::new(
        api.client(),
        watches.stores.clone(),
        Arc::default(),
        settings(),
    ));
    let reconcile = |pc| reconcile_checkpoint(pc, ctx.clone());
    let mut created = PodCheckpoint::new(
        "pc1",
        PodCheckpointSpec {
            pod_name: "app".into(),
            containers: Vec::new(),
            timeout_seconds: None,
            registry: None,
            hold_source: false,
        },
    );
    created.metadata.namespace = Some("default".into());
    created.metadata.uid = Some("uid-pc1".into());
    api.put(&format!("{GROUP}/podcheckpoints/pc1"), &created);
    let mut all = Vec::new();

    let first = reconciled(reconcile, &created, &api).await;
    let pending = shown(&created, &first);
    let children: Vec<ContainerCheckpoint> = first
        .iter()
        .filter(|s| s.uri.contains("/containercheckpoints/"))
        .map(|s| serde_json::from_value(s.body.clone().unwrap()).unwrap())
        .collect();
    all.extend(first);
    // Our writes come back late: nothing is created or written again.
    all.extend(reconciled(reconcile, &created, &api).await);
    for child in &children {
        deliver(&mut watches.requests, child.clone());
    }
    all.extend(reconciled(reconcile, &pending, &api).await);
    // Each container's checkpoint completes.
    let mut latest = pending;
    for child in children {
        let mut done = child;
        done.status = Some(ContainerCheckpointStatus {
            state: Some(CheckpointState::Completed),
            node_name: Some("node1".into()),
            ..Default::default()
        });
        deliver(&mut watches.requests, done);
        let seen = reconciled(reconcile, &latest, &api).await;
        latest = shown(&latest, &seen);
        all.extend(seen);
    }
    all.extend(reconciled(reconcile, &latest, &api).await);

    let path = format!("{GROUP}/podcheckpoints/pc1/status");
    assert_eq!(
        calls(&all),
        [
            format!("GET {POD_PATH}"),
            format!("PATCH {GROUP}/containercheckpoints/pc1-counter"),
            format!("PATCH {GROUP}/containercheckpoints/pc1-sidecar"),
            format!("PATCH {path}"),
            format!("PATCH {path}"),
            format!("PATCH {path}"),
            format!("POST {EVENTS_PATH}"),
        ]
    );
    let status = latest.status.unwrap();
    assert_eq!(status.state, Some(CheckpointState::Completed));
}

/// The migration of the running bare pod `app` from node1 to node2, as created, in `api`; the
/// context its reconciles share and the watches that feed it.
fn migrating(api: &FakeApi) -> (Arc<MigrationContext>, Watches, PodMigration) {
    api.put(POD_PATH, running(pod()));
    let watches = Watches::listed(&["node1", "node2"]);
    let ctx = Arc::new(MigrationContext::new(
        api.client(),
        watches.stores.clone(),
        Arc::default(),
        settings(),
    ));
    let mut created = fixtures::migration(Some("node2"));
    created.metadata.creation_timestamp = Some(Time(Timestamp::now()));
    api.put(&format!("{GROUP}/podmigrations/move-app"), &created);
    (ctx, watches, created)
}

/// One PodMigration of a bare pod from node1 to node2, from creation to Succeeded, as the
/// watches deliver it: the stores a step behind our own writes. This is its whole API cost.
#[tokio::test]
async fn a_pod_migration_costs_eighteen_calls_from_creation_to_succeeded() {
    let api = FakeApi::default();
    let (ctx, mut watches, created) = migrating(&api);
    let reconcile = |m| reconcile_migration(m, ctx.clone());
    let mut all = Vec::new();

    // Checkpointing: the PodCheckpoint is asked for.
    let first = reconciled(reconcile, &created, &api).await;
    let checkpointing = shown(&created, &first);
    let asked: PodCheckpoint = first
        .iter()
        .find(|s| s.uri.contains("/podcheckpoints/"))
        .map(|s| serde_json::from_value(s.body.clone().unwrap()).unwrap())
        .unwrap();
    all.extend(first);
    // Our writes come back late, then come back: nothing to do while the checkpoint runs.
    all.extend(reconciled(reconcile, &created, &api).await);
    deliver(&mut watches.pod_checkpoints, asked.clone());
    all.extend(reconciled(reconcile, &checkpointing, &api).await);
    // The checkpoint completes: the copy is made on node2.
    let mut taken = asked;
    taken.status = Some(checkpointing::crd::PodCheckpointStatus {
        state: Some(CheckpointState::Completed),
        ..Default::default()
    });
    deliver(&mut watches.pod_checkpoints, taken);
    let copying = reconciled(reconcile, &checkpointing, &api).await;
    let restoring = shown(&checkpointing, &copying);
    let mut copy: Pod = copying
        .iter()
        .find(|s| s.method == "POST" && s.uri.starts_with(PODS_PATH))
        .map(|s| serde_json::from_value(s.body.clone().unwrap()).unwrap())
        .unwrap();
    all.extend(copying);
    // The webhook restores it on node2; it starts, then runs.
    copy.metadata.uid = Some("uid-copy".into());
    let annotations = copy
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    assert_eq!(annotations[RESTORE_FROM_ANNOTATION], "move-app");
    annotations.insert(RESTORED_FROM_DIGEST_ANNOTATION.into(), "sha256:x".into());
    copy.spec.as_mut().unwrap().node_name = Some("node2".into());
    deliver(&mut watches.restored, copy.clone());
    let starting = reconciled(reconcile, &restoring, &api).await;
    let restoring = shown(&restoring, &starting);
    all.extend(starting);
    deliver(&mut watches.restored, running(copy));
    let deleting = reconciled(reconcile, &restoring, &api).await;
    let restoring = shown(&restoring, &deleting);
    all.extend(deleting);
    // The source goes.
    let mut going = running(pod());
    going.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    api.put(POD_PATH, going);
    let last = reconciled(reconcile, &restoring, &api).await;
    let done = shown(&restoring, &last);
    all.extend(last);
    all.extend(reconciled(reconcile, &done, &api).await);

    let status = format!("PATCH {GROUP}/podmigrations/move-app/status");
    let mut expected = vec![
        format!("DELETE {POD_PATH}"),
        format!("PATCH {GROUP}/podcheckpoints/move-app"),
        format!("POST {PODS_PATH}"),
    ];
    expected.extend(std::iter::repeat_n(format!("GET {POD_PATH}"), 5));
    // Three phases on the migration, and `Migrated` on the restored pod.
    expected.extend(std::iter::repeat_n(format!("POST {EVENTS_PATH}"), 4));
    expected.extend(std::iter::repeat_n(status, 5));
    expected.sort();
    assert_eq!(calls(&all), expected);
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(MigrationPhase::Succeeded));
    assert_eq!(status.target_node.as_deref(), Some("node2"));
    let migrated = all
        .iter()
        .filter(|s| s.uri.starts_with(EVENTS_PATH))
        .filter_map(|s| s.body.clone())
        .find(|e| e["reason"] == "Migrated")
        .expect("a Migrated Event");
    assert_eq!(migrated["regarding"]["kind"], "Pod");
    assert_eq!(
        migrated["regarding"]["name"].as_str(),
        status.restored_pod.as_deref()
    );
    assert_eq!(migrated["regarding"]["uid"], "uid-copy");
    assert_eq!(migrated["related"]["name"], "move-app");
}

/// A migration whose checkpoint failed tells the source pod, which still runs, why.
#[tokio::test]
async fn a_failed_migration_tells_its_source_pod() {
    let api = FakeApi::default();
    let (ctx, mut watches, created) = migrating(&api);
    let reconcile = |m| reconcile_migration(m, ctx.clone());
    let first = reconciled(reconcile, &created, &api).await;
    let checkpointing = shown(&created, &first);
    let mut asked: PodCheckpoint = first
        .iter()
        .find(|s| s.uri.contains("/podcheckpoints/"))
        .map(|s| serde_json::from_value(s.body.clone().unwrap()).unwrap())
        .unwrap();
    asked.status = Some(checkpointing::crd::PodCheckpointStatus {
        state: Some(CheckpointState::Failed),
        message: Some("container counter: the runtime said no".into()),
        ..Default::default()
    });
    deliver(&mut watches.pod_checkpoints, asked);
    let failing = reconciled(reconcile, &checkpointing, &api).await;
    let failed = shown(&checkpointing, &failing);
    assert_eq!(
        failed.status.as_ref().unwrap().phase,
        Some(MigrationPhase::Failed)
    );
    let on_pod: Vec<_> = failing
        .iter()
        .filter(|s| s.uri.starts_with(EVENTS_PATH))
        .filter_map(|s| s.body.clone())
        .filter(|e| e["regarding"]["kind"] == "Pod")
        .collect();
    assert_eq!(on_pod.len(), 1, "{on_pod:?}");
    assert_eq!(on_pod[0]["reason"], "MigrationFailed");
    assert_eq!(on_pod[0]["regarding"]["name"], "app");
    assert_eq!(on_pod[0]["related"]["name"], "move-app");
    assert!(
        on_pod[0]["note"].as_str().unwrap().contains("move-app"),
        "{}",
        on_pod[0]
    );
    // Told once: the final status coming back says nothing more.
    let again = reconciled(reconcile, &failed, &api).await;
    assert!(again.iter().all(|s| !s.uri.starts_with(EVENTS_PATH)));
}
