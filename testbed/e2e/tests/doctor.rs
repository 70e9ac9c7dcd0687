//! `kubectl checkpoint doctor`, the real plugin binary, on the testbed: it passes, lists every
//! node with its runtime and every noded node with its checks; `--trial` (with the
//! image the testbed's counters run) checkpoints on one node, restores on another, passes, and
//! leaves no pod or checkpoint with its label behind.

use checkpointing::crd::ContainerCheckpoint;
use checkpointing::names::DOCTOR_TRIAL_LABEL;
use e2e::{TestNamespace, Testbed, plugin, stderr, stdout};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;

/// The image the testbed's counter pods run (its registry mirrors Docker Hub's).
const TESTBED_BUSYBOX: &str = "busybox";

#[tokio::test]
async fn the_doctor_lists_every_node_with_its_runtime_and_finds_the_install_ready() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let out = plugin(&tb, &["doctor", "-o", "json"]);
    assert!(out.status.success(), "doctor: {}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("doctor's JSON");
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["problems"], Value::Array(vec![]));
    assert!(report["webhook"].is_string(), "{report:#}");
    let crds = report["crds"].as_array().unwrap();
    assert!(!crds.is_empty() && crds.iter().all(|c| c["installed"] == true));

    let nodes = Api::<Node>::all(client)
        .list(&ListParams::default())
        .await
        .unwrap();
    let reported = report["nodes"].as_array().unwrap();
    assert_eq!(reported.len(), nodes.items.len(), "{report:#}");
    let mut with_noded = 0;
    for node in &nodes.items {
        let name = node.metadata.name.as_deref().unwrap();
        let entry = reported
            .iter()
            .find(|n| n["name"] == name)
            .unwrap_or_else(|| panic!("node {name} is not listed: {report:#}"));
        assert_eq!(entry["runtime"], tb.cri_name(name), "{entry:#}");
        if entry["daemon"]["state"] == "running" {
            with_noded += 1;
            let checks: Vec<&str> = entry["checks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            for check in ["cri", "criu", "restore", "checkpoint_dir", "tcp_close"] {
                assert!(checks.contains(&check), "{name} has no {check}: {entry:#}");
            }
        }
    }
    assert!(
        with_noded >= 2,
        "noded runs on the testbed's workers: {report:#}"
    );

    // The text lists every node too, one row each, with its runtime.
    let out = plugin(&tb, &["doctor"]);
    assert!(out.status.success(), "doctor: {}", stderr(&out));
    let text = stdout(&out);
    for node in &nodes.items {
        let name = node.metadata.name.as_deref().unwrap();
        assert!(
            text.lines().any(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                cells.first() == Some(&name) && cells.contains(&tb.cri_name(name))
            }),
            "no row for {name}: {text}"
        );
    }
    assert!(
        text.ends_with("every node with a node daemon is ready\n"),
        "{text}"
    );
}

#[tokio::test]
async fn the_doctors_trial_checkpoints_restores_and_leaves_nothing_behind() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "doctor").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let out = plugin(
        &tb,
        &[
            "doctor",
            "--trial",
            "--namespace-for-trial",
            ns,
            "--trial-image",
            TESTBED_BUSYBOX,
        ],
    );
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "doctor --trial: {text}{}",
        stderr(&out)
    );
    assert!(text.contains("trial passed"), "{text}");
    for step in ["checkpoint", "restore", "count on", "clean up"] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(step) && l.contains(" ok ")),
            "step {step}: {text}"
        );
    }

    let labelled = ListParams::default().labels(DOCTOR_TRIAL_LABEL);
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&labelled)
        .await
        .unwrap();
    assert!(pods.items.is_empty(), "pods left: {:?}", pods.items);
    let checkpoints = Api::<ContainerCheckpoint>::namespaced(client, ns)
        .list(&labelled)
        .await
        .unwrap();
    assert!(
        checkpoints.items.is_empty(),
        "checkpoints left: {:?}",
        checkpoints.items
    );
}
