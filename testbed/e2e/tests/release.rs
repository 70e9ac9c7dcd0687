//! A migration that fails after its dump lets its source go: the source was held still from the
//! dump on, and runs on where it was once the migration gives up.

use std::time::Duration;

use checkpointing::crd::{
    CheckpointState, ContainerCheckpointContent, MigrationPhase, PodCheckpoint,
};
use e2e::{
    TestNamespace, Testbed, counter_log, counter_pod, counter_values, eventually, migrate,
    migration_outcome, migration_request, run_pod,
};
use kube::Api;

#[tokio::test]
async fn a_migration_that_fails_after_the_dump_thaws_its_source_which_runs_on() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "release").await;
    let client = tb.client().await;
    // A host directory: the checkpoint is taken, but the controller may not create a copy that
    // mounts one (ValidatingAdmissionPolicy checkpointing-controller-pods), so the migration
    // fails after the dump, at its timeout.
    let mut pod = counter_pod("source", "node1", 1);
    let spec = pod.spec.as_mut().unwrap();
    spec.volumes = Some(vec![
        serde_json::from_value(serde_json::json!({
            "name": "host", "hostPath": {"path": "/tmp", "type": "Directory"},
        }))
        .unwrap(),
    ]);
    spec.containers[0].volume_mounts = Some(vec![
        serde_json::from_value(serde_json::json!({"name": "host", "mountPath": "/host-tmp"}))
            .unwrap(),
    ]);
    run_pod(&client, &ns.name, pod).await;
    counter_log(&tb, &ns.name, "source", 3, Duration::from_secs(60)).await;

    let mut pm = migration_request("move", "source", Some("node2"));
    pm.spec.timeout_seconds = Some(20);
    let pm = migrate(&client, &ns.name, pm).await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Failed, "{message}");
    let pc = Api::<PodCheckpoint>::namespaced(client.clone(), &ns.name)
        .get("move")
        .await
        .unwrap();
    assert!(pc.spec.hold_source, "a migration holds its source");
    let state = pc.status.as_ref().and_then(|s| s.state);
    assert_eq!(
        state,
        Some(CheckpointState::Completed),
        "the dump was taken"
    );

    // Released: its node daemon thaws it, and says so on the Content.
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        "the source's Content to say it is no longer held",
        Duration::from_secs(60),
        || async {
            let content = contents.get("move-counter").await.ok()?;
            (!content.status?.source_held).then_some(())
        },
    )
    .await;
    let last = *counter_values(&String::from_utf8_lossy(
        &tb.kubectl(&["logs", "-n", &ns.name, "source"]).stdout,
    ))
    .last()
    .unwrap();
    eventually(
        "the released source to count on",
        Duration::from_secs(30),
        || async {
            let log = tb.kubectl(&["logs", "-n", &ns.name, "source"]);
            let values = counter_values(&String::from_utf8_lossy(&log.stdout));
            values.iter().any(|&v| v > last + 1).then_some(())
        },
    )
    .await;
}
