//! The testbed itself: pods run on the node they are pinned to, their logs are readable, and a
//! CRI checkpoint through the project's client yields an archive checkpointctl reads.

use std::time::Duration;

use checkpointing::cri::Runtime;
use e2e::{TestNamespace, Testbed, counter_log, counter_pod, run_pod, sample_pod};

#[tokio::test]
async fn sample_app_runs_on_node1_and_counts() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "smoke").await;
    let client = tb.client().await;
    let pod = run_pod(&client, &ns.name, sample_pod(&tb, "sample-app.yaml")).await;
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node1")
    );
    assert!(
        pod.status.as_ref().unwrap().pod_ip.is_some(),
        "a running pod has an IP"
    );

    let wide = tb.kubectl_ok(&[
        "get",
        "pod",
        "stateful-app",
        "-n",
        &ns.name,
        "-o",
        "wide",
        "--no-headers",
    ]);
    let columns: Vec<&str> = wide.split_whitespace().collect();
    assert_eq!(columns[0], "stateful-app");
    assert_eq!(columns[2], "Running", "{wide}");
    assert!(columns.contains(&"node1"), "{wide}");

    // The seed's counter prints every 10 s.
    let values = counter_log(&tb, &ns.name, "stateful-app", 2, Duration::from_secs(60)).await;
    assert_eq!(values[0], 0);
    assert!(
        values.windows(2).all(|w| w[1] == w[0] + 1),
        "counter increases by one: {values:?}"
    );
}

#[tokio::test]
async fn cri_checkpoint_yields_an_archive_checkpointctl_reads() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "cri").await;
    let client = tb.client().await;
    let pod = run_pod(&client, &ns.name, counter_pod("ticker", "node1", 1)).await;
    let status = &pod.status.unwrap().container_statuses.unwrap()[0];
    let id = status
        .container_id
        .as_deref()
        .unwrap()
        .split("://")
        .nth(1)
        .unwrap()
        .to_owned();

    let location = format!("/var/lib/kubelet/checkpoints/e2e-{}.tar", ns.name);
    let cri = tb.cri("node1").await;
    cri.checkpoint_container(&id, location.as_ref(), Duration::from_secs(60))
        .await
        .unwrap();
    let archive = tb.node_path("node1", &location);
    assert!(
        archive.metadata().unwrap().len() > 0,
        "archive written at {}",
        archive.display()
    );

    let show = tb.node_exec("node1", &["checkpointctl", "show", &location]);
    let stdout = String::from_utf8_lossy(&show.stdout);
    std::fs::remove_file(&archive).unwrap();
    assert!(
        show.status.success(),
        "checkpointctl show failed: {}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(
        stdout.contains("counter"),
        "checkpointctl names the container: {stdout}"
    );

    // Checkpointing leaves the container running.
    let running = cri
        .list_containers(&[
            ("io.kubernetes.pod.namespace", ns.name.as_str()),
            ("io.kubernetes.container.name", "counter"),
        ])
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(
        running[0].state,
        checkpointing::cri::api::ContainerState::ContainerRunning as i32
    );
}
