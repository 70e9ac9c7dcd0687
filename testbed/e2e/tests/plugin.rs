//! The kubectl plugin, the real binary (built beside this test by `cargo build --workspace
//! --all-targets`), against the testbed: checkpoint, list and restore the seed's counter; move a
//! two-container counter pod to another node.

use std::time::Duration;

use checkpointing::crd::PodMigration;
use checkpointing::names::RESTORE_FROM_ANNOTATION;
use e2e::{
    TestNamespace, Testbed, assert_container_resumes, assert_counter_resumes,
    counter_at_checkpoint, counter_log, eventually, plugin, run_pod, sample_pod, stderr, stdout,
    two_counter_pod, values_at_checkpoint, wait_running,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams};

#[tokio::test]
async fn the_plugin_checkpoints_lists_and_restores_the_counter() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "plugin").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    run_pod(&client, ns, sample_pod(&tb, "sample-app.yaml")).await;
    counter_log(&tb, ns, "stateful-app", 2, Duration::from_secs(60)).await;

    let out = plugin(
        &tb,
        &[
            "pod/stateful-app",
            "-c",
            "counter",
            "-n",
            ns,
            "--name",
            "cp1",
        ],
    );
    assert!(out.status.success(), "checkpoint: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("checkpoint cp1 Completed"), "{text}");
    assert!(text.contains("node:  node1"), "{text}");
    assert!(
        text.contains("@sha256:"),
        "the image with its digest: {text}"
    );

    let out = plugin(&tb, &["list", "-n", ns]);
    assert!(out.status.success(), "list: {}", stderr(&out));
    let text = stdout(&out);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "POD", "CONTAINER", "STATE", "NODE", "SIZE", "AGE"]
    );
    let row: Vec<&str> = text.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(
        row[..5],
        ["cp1", "stateful-app", "counter", "Completed", "node1"]
    );

    let at_checkpoint = counter_at_checkpoint(&tb, &client, ns, "cp1", "node1").await;

    let out = plugin(
        &tb,
        &[
            "restore", "cp1", "--as", "restored", "-n", ns, "--node", "node2",
        ],
    );
    assert!(out.status.success(), "restore: {}", stderr(&out));
    assert!(
        stdout(&out).contains("pod/restored Running on node2"),
        "{}",
        stdout(&out)
    );
    let running = wait_running(&client, ns, "restored").await;
    let annotations = running.metadata.annotations.as_ref().unwrap();
    assert_eq!(
        annotations[RESTORE_FROM_ANNOTATION], "cp1",
        "the copy is annotated"
    );
    assert_counter_resumes(&tb, ns, &running, at_checkpoint).await;

    // Without the checkpointed pod there is no spec to copy: the plugin says so.
    Api::<Pod>::namespaced(client.clone(), ns)
        .delete(
            "stateful-app",
            &DeleteParams {
                grace_period_seconds: Some(0),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    eventually("stateful-app to go", Duration::from_secs(60), || async {
        let gone = Api::<Pod>::namespaced(client.clone(), ns)
            .get_opt("stateful-app")
            .await
            .unwrap()
            .is_none();
        gone.then_some(())
    })
    .await;
    let out = plugin(&tb, &["restore", "cp1", "--as", "again", "-n", ns]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("is gone") && stderr(&out).contains("restore-from: cp1"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test]
async fn the_plugin_reports_a_missing_pod_in_the_servers_words() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "plugin-missing").await;
    let out = plugin(&tb, &["pod/no-such-pod", "-n", &ns.name]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(r#"pods "no-such-pod" not found"#),
        "the API server's message: {err}"
    );
    assert!(
        !err.contains("ErrorResponse") && !err.contains("Status {"),
        "no debug dump: {err}"
    );
}

#[tokio::test]
async fn migrate_moves_a_two_container_pod_and_reports_the_downtime() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "plugin-migrate").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let source = run_pod(&client, ns, two_counter_pod("pair", "node1")).await;
    counter_log(&tb, ns, "pair", 2, Duration::from_secs(60)).await;

    let out = plugin(&tb, &["-n", ns, "migrate", "pod/pair", "--to", "node2"]);
    assert!(out.status.success(), "migrate: {}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("Succeeded") && text.contains("downtime"),
        "{text}"
    );
    // Progress went to stderr as the migration went through its phases.
    assert!(stderr(&out).contains("Restoring"), "{}", stderr(&out));

    let migrations = Api::<PodMigration>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap()
        .items;
    let [migration] = &migrations[..] else {
        panic!("one PodMigration: {migrations:?}")
    };
    let status = migration.status.clone().unwrap();
    let moved = wait_running(&client, ns, status.restored_pod.as_deref().unwrap()).await;
    assert_ne!(moved.metadata.uid, source.metadata.uid);
    assert_eq!(
        moved.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node2")
    );
    let name = migration.metadata.name.as_deref().unwrap();
    for (container, value) in values_at_checkpoint(&tb, &client, ns, name).await {
        assert_container_resumes(&tb, ns, &moved, &container, value).await;
    }
}
