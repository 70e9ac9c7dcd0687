//! The daemons' /metrics move with the work: a checkpoint raises noded's and the controller's
//! counters.

use e2e::{
    TestNamespace, Testbed, checkpoint, checkpoint_request, counter_pod, outcome, run_pod, sample,
};

/// noded's admin port on `node`: its IP, on which alone it listens.
fn noded_admin(tb: &Testbed, node: &str, path: &str) -> String {
    format!("http://{}:9811{path}", tb.node_ip(node))
}

/// The leading replica's /metrics: it is the one that reconciles.
async fn controller_metrics(tb: &Testbed, client: &kube::Client) -> String {
    let leader = tb.controller_leader(client).await;
    tb.controller_metrics(&leader)
        .expect("the leading controller serves /metrics")
}

#[tokio::test]
async fn a_checkpoint_moves_the_counters() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "metrics").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", "node2", 1)).await;

    let completed = |t: &str| {
        sample(
            t,
            "checkpointing_noded_checkpoints_total",
            "result=\"completed\"",
        )
    };
    let sizes = |t: &str| sample(t, "checkpointing_noded_archive_size_bytes_count", "");
    let rereads = |t: &str| sample(t, "checkpointing_noded_archive_rereads_total", "");
    let finished = |t: &str| {
        sample(
            t,
            "checkpointing_controller_requests_total",
            "state=\"Completed\"",
        )
    };
    let (noded_before, controller_before) = (
        tb.noded_metrics("node2"),
        controller_metrics(&tb, &client).await,
    );

    let cc = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("measured", "app", "counter"),
    )
    .await;
    assert_eq!(
        outcome(&cc).0,
        checkpointing::crd::CheckpointState::Completed,
        "{}",
        outcome(&cc).1
    );

    let (noded_after, controller_after) = (
        tb.noded_metrics("node2"),
        controller_metrics(&tb, &client).await,
    );
    assert!(
        completed(&noded_after) > completed(&noded_before),
        "noded counts completed checkpoints"
    );
    assert!(
        sizes(&noded_after) > sizes(&noded_before),
        "noded records archive sizes"
    );
    assert_eq!(
        rereads(&noded_after),
        rereads(&noded_before),
        "the runtime wrote the archive front to back: hashed while written, never read again"
    );
    assert!(
        finished(&controller_after) > finished(&controller_before),
        "the controller counts finished requests"
    );
}

/// Whether the runtime serves Kubernetes 1.37's pod-level CheckpointPod and RestorePod is
/// probed over the real socket and reported: the testbed's CRI-O 1.36 and containerd 2.3 do
/// not, and noded says so in /readyz and its metrics while staying ready.
#[test]
fn noded_reports_that_the_runtime_has_no_pod_level_checkpoint() {
    let tb = Testbed::get();
    let url = noded_admin(&tb, "node1", "/readyz");
    let out = tb.node_exec("node1", &["curl", "-s", &url]);
    let readyz = String::from_utf8_lossy(&out.stdout);
    assert!(readyz.starts_with("ready\n"), "{readyz}");
    assert!(
        readyz.contains("pod_level: ")
            && readyz.contains("does not serve CRI CheckpointPod or RestorePod"),
        "{readyz}"
    );
    let metrics = tb.noded_metrics("node1");
    for line in [
        "checkpointing_noded_prerequisite{check=\"pod_level\"} 0",
        "checkpointing_noded_prerequisite{check=\"cri\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing: {metrics}"
        );
    }
}
