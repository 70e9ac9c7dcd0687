//! PodMigration on the real cluster: a bare pod of two containers, a StatefulSet's pod and a
//! Deployment's pod each move to another node and go on counting; a migration that cannot
//! happen leaves the source running and says why.

use std::time::Duration;

use checkpointing::crd::MigrationPhase;
use checkpointing::names::SKIP_VOLUMES_ANNOTATION;
use e2e::{
    TestNamespace, Testbed, app_pods, assert_file_resumes, assert_moved, counter_deployment,
    counter_log, counter_pod, counter_template, eventually, migrate, migration_outcome,
    migration_request, node_of, run_pod, two_counter_pod, values_at_checkpoint,
};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use serde_json::json;

/// The one node of node1 and node2 that `node` is not: where a workload's pod moves.
fn other(node: &str) -> &'static str {
    if node == "node1" { "node2" } else { "node1" }
}

#[tokio::test]
async fn a_two_container_pod_moves_with_both_counters_and_reports_its_downtime() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "migrate-pair").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let source = run_pod(&client, ns, two_counter_pod("pair", "node1")).await;
    counter_log(&tb, ns, "pair", 2, Duration::from_secs(60)).await;

    let pm = migrate(
        &client,
        ns,
        migration_request("move-pair", "pair", Some("node2")),
    )
    .await;
    let restored = assert_moved(&tb, &client, ns, &pm, Some("node2")).await;
    // Both containers, restored from one PodCheckpoint.
    let containers: Vec<_> = restored
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(containers, ["counter", "counter2"]);
    assert!(
        restored.spec.as_ref().unwrap().containers.iter().all(|c| c
            .image
            .as_deref()
            .unwrap()
            .contains("@sha256:"))
    );
    // The source is gone once the copy runs.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually("the source pod to go", Duration::from_secs(60), || async {
        let pod = pods.get_opt("pair").await.ok()?;
        (pod.is_none() || pod.unwrap().metadata.uid != source.metadata.uid).then_some(())
    })
    .await;
    // What users see: the printer columns, with the downtime.
    let table = tb.kubectl_ok(&["get", "pm", "-n", ns]);
    assert!(
        table.contains("DOWNTIME(MS)") && table.contains("Succeeded"),
        "{table}"
    );
    let downtime = pm
        .status
        .as_ref()
        .unwrap()
        .downtime_milliseconds
        .unwrap()
        .to_string();
    assert!(table.contains(&downtime), "{table}");
}

#[tokio::test]
async fn a_pods_empty_dir_data_travels_and_is_in_place_before_its_processes_resume() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "migrate-volume").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    // The seed's counter, also appending each value to a file on disk and one in memory, both
    // emptyDirs, beside a second counter that shares the disk one; a third emptyDir is opted
    // out.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {
            "name": "writer",
            "annotations": {SKIP_VOLUMES_ANNOTATION: "scratch"},
        },
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "node1"},
            "containers": [{
                "name": "counter",
                "image": "busybox",
                "command": ["/bin/sh", "-c"],
                "args": ["echo kept > /scratch/marker\ncounter=0\nwhile true; do\n  echo \"Counter: $counter\"\n  echo $counter >> /data/log\n  echo $counter >> /memory/log\n  counter=$((counter+1))\n  sleep 1\ndone\n"],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/data"},
                    {"name": "memory", "mountPath": "/memory"},
                    {"name": "scratch", "mountPath": "/scratch"},
                ],
            }, {
                "name": "counter2",
                "image": "busybox",
                "command": ["/bin/sh", "-c"],
                "args": ["counter=0\nwhile true; do\n  echo \"Counter: $counter\"\n  counter=$((counter+1))\n  sleep 1\ndone\n"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "memory", "emptyDir": {"medium": "Memory"}},
                {"name": "scratch", "emptyDir": {}},
            ],
        },
    }))
    .unwrap();
    run_pod(&client, ns, pod).await;
    counter_log(&tb, ns, "writer", 3, Duration::from_secs(60)).await;

    let pm = migrate(
        &client,
        ns,
        migration_request("move-writer", "writer", Some("node2")),
    )
    .await;
    let restored = assert_moved(&tb, &client, ns, &pm, Some("node2")).await;
    let name = restored.metadata.name.clone().unwrap();
    // Both counters went on (assert_moved); the files are the writer's.
    let values = values_at_checkpoint(&tb, &client, ns, "move-writer").await;
    let at_checkpoint = values.iter().find(|(c, _)| c == "counter").unwrap().1;
    // On disk and in memory alike: what the source wrote up to the checkpoint is there, and
    // the restored process went on appending to it; it never started again.
    for file in ["/data/log", "/memory/log"] {
        assert_file_resumes(&tb, ns, (&name, "counter"), file, at_checkpoint).await;
    }
    // The opted-out volume did not travel.
    let out = tb.kubectl(&[
        "exec", "-n", ns, &name, "-c", "counter", "--", "ls", "/scratch",
    ]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
}

#[tokio::test]
async fn a_statefulset_pod_moves_under_its_name_and_owner() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "migrate-sts").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let sts: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "serviceName": "web",
            "selector": {"matchLabels": {"app": "web"}},
            "template": counter_template("web"),
        },
    }))
    .unwrap();
    let sts = Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sts)
        .await
        .unwrap();
    let [source] = &app_pods(&client, ns, "web", 1).await[..] else {
        unreachable!()
    };
    counter_log(&tb, ns, "web-0", 2, Duration::from_secs(60)).await;
    let target = other(&node_of(source));

    let pm = migrate(
        &client,
        ns,
        migration_request("move-web", "web-0", Some(target)),
    )
    .await;
    let restored = assert_moved(&tb, &client, ns, &pm, Some(target)).await;
    assert_eq!(
        restored.metadata.name.as_deref(),
        Some("web-0"),
        "the same name"
    );
    assert_ne!(restored.metadata.uid, source.metadata.uid);
    let owner = &restored.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), Some(&owner.uid)),
        ("StatefulSet", sts.metadata.uid.as_ref())
    );
    // Never two: the StatefulSet has its one pod.
    assert_eq!(app_pods(&client, ns, "web", 1).await.len(), 1);
}

#[tokio::test]
async fn a_deployment_pod_moves_and_the_other_replica_is_untouched() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "migrate-deploy").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    counter_deployment(&client, ns, "api", 2).await;
    let pods = app_pods(&client, ns, "api", 2).await;
    let (moving, staying) = (&pods[0], &pods[1]);
    let moving_name = moving.metadata.name.clone().unwrap();
    counter_log(&tb, ns, &moving_name, 2, Duration::from_secs(60)).await;
    let target = other(&node_of(moving));

    let pm = migrate(
        &client,
        ns,
        migration_request("move-api", &moving_name, Some(target)),
    )
    .await;
    let restored = assert_moved(&tb, &client, ns, &pm, Some(target)).await;
    let owner = |p: &Pod| p.metadata.owner_references.as_ref().unwrap()[0].uid.clone();
    assert_eq!(
        owner(&restored),
        owner(moving),
        "the same ReplicaSet owns it"
    );
    let after = app_pods(&client, ns, "api", 2).await;
    let untouched = after
        .iter()
        .find(|p| p.metadata.uid == staying.metadata.uid)
        .expect("the other replica is still there");
    let restarts = |p: &Pod| -> i32 {
        p.status
            .as_ref()
            .unwrap()
            .container_statuses
            .iter()
            .flatten()
            .map(|c| c.restart_count)
            .sum()
    };
    assert_eq!(restarts(untouched), restarts(staying));
}

#[tokio::test]
async fn a_migration_that_cannot_happen_leaves_the_source_running() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "migrate-fail").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let source = run_pod(&client, ns, counter_pod("app", "node1", 1)).await;

    let pm = migrate(
        &client,
        ns,
        migration_request("nowhere", "app", Some("no-such-node")),
    )
    .await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Failed);
    assert!(
        message.contains("no live node daemon on node \"no-such-node\""),
        "{message}"
    );
    let pm = migrate(&client, ns, migration_request("same", "app", Some("node1"))).await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Failed);
    assert!(
        message.contains("already runs on node \"node1\""),
        "{message}"
    );

    let now = Api::<Pod>::namespaced(client.clone(), ns)
        .get("app")
        .await
        .unwrap();
    assert_eq!(
        now.metadata.uid, source.metadata.uid,
        "the source is the same pod"
    );
    assert_eq!(now.status.unwrap().phase.as_deref(), Some("Running"));
    let events = tb.kubectl_ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "involvedObject.name=nowhere",
    ]);
    assert!(events.contains("MigrationFailed"), "{events}");
}
