//! A pod running as a user other than root keeps its emptyDir files when it moves: noded
//! places them as that user's (with the pod's fsGroup), so the restored process, running as
//! the same user, goes on writing them. Were they the kubelet's directory owner's (root), it
//! could no longer write its own 0644 files.

use std::time::Duration;

use checkpointing::crd::MigrationPhase;
use e2e::{
    TestNamespace, Testbed, assert_file_resumes, counter_log, migrate, migration_outcome,
    migration_request, run_pod, values_at_checkpoint, wait_running,
};
use k8s_openapi::api::core::v1::Pod;
use serde_json::json;

#[tokio::test]
async fn a_non_root_pods_volume_files_stay_its_own_and_writable_after_it_moves() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "volume-owner").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    // The seed's counter as user 1000, appending each value to a file of its emptyDir (made
    // 0644, the user's, group fsGroup) and saying so when it cannot.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "writer"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "node1"},
            "securityContext": {"runAsUser": 1000, "runAsGroup": 3000, "fsGroup": 2000},
            "containers": [{
                "name": "counter",
                "image": "busybox",
                "command": ["/bin/sh", "-c"],
                "args": ["counter=0\nwhile true; do\n  echo \"Counter: $counter\"\n  echo $counter >> /data/log || echo \"Unwritable: $counter\"\n  counter=$((counter+1))\n  sleep 1\ndone\n"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }))
    .unwrap();
    run_pod(&client, ns, pod).await;
    counter_log(&tb, ns, "writer", 3, Duration::from_secs(60)).await;
    let exec = |pod: &str, args: &[&str]| {
        let mut argv = vec!["exec", "-n", ns, pod, "-c", "counter", "--"];
        argv.extend(args);
        tb.kubectl_ok(&argv)
    };
    let owner = |pod: &str| exec(pod, &["stat", "-c", "%u:%g:%a", "/data/log"]);
    assert_eq!(owner("writer").trim(), "1000:2000:644", "at the source");

    let pm = migrate(
        &client,
        ns,
        migration_request("move-writer", "writer", Some("node2")),
    )
    .await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Succeeded, "{message}");
    let name = pm.status.unwrap().restored_pod.unwrap();
    let restored = wait_running(&client, ns, &name).await;
    assert_eq!(
        restored.spec.unwrap().node_name.as_deref(),
        Some("node2"),
        "moved"
    );
    let values = values_at_checkpoint(&tb, &client, ns, "move-writer").await;
    let at_checkpoint = values.iter().find(|(c, _)| c == "counter").unwrap().1;

    assert_eq!(owner(&name).trim(), "1000:2000:644", "placed on node2");
    assert_file_resumes(&tb, ns, (&name, "counter"), "/data/log", at_checkpoint).await;
    let logs = tb.kubectl_ok(&["logs", "-n", ns, &name, "-c", "counter"]);
    assert!(!logs.contains("Unwritable"), "{logs}");
}
