//! One install on a cluster of both runtimes (`TESTBED_RUNTIME=mixed`: node3 runs containerd,
//! the others CRI-O): the one noded DaemonSet finds each node's runtime, labels the node with
//! it, and a checkpoint restores only where its runtime runs. These tests need nodes of both
//! runtimes: testbed/test runs this binary on its mixed testbed only, and they fail (saying
//! so) on a testbed of one runtime.

use std::time::Duration;

use checkpointing::crd::CheckpointState;
use checkpointing::names::{RESTORE_FROM_ANNOTATION, RUNTIME_ANNOTATION};
use e2e::{
    TestNamespace, Testbed, assert_counter_resumes, checkpoint, checkpoint_request,
    counter_at_checkpoint, counter_pod, eventually, outcome, run_pod,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};

/// The Lease annotation's key, which noded also labels its node with.
const RUNTIME_LABEL: &str = RUNTIME_ANNOTATION;
const VERSION_LABEL: &str = "checkpointing.zacchaeuschok.github.io/runtime-version";
const CAN_RESTORE_LABEL: &str = "checkpointing.zacchaeuschok.github.io/can-restore";

/// The testbed's nodes, and the first of them that runs each runtime.
fn nodes_by_runtime(tb: &Testbed) -> (Vec<String>, String, String) {
    let nodes = tb.nodes();
    let first = |runtime: &str| nodes.iter().find(|n| tb.runtime(n) == runtime).cloned();
    let (Some(crio), Some(containerd)) = (first("crio"), first("containerd")) else {
        panic!(
            "these tests need nodes of both runtimes (TESTBED_RUNTIME=mixed); this testbed's: {:?}",
            nodes.iter().map(|n| tb.runtime(n)).collect::<Vec<_>>()
        );
    };
    (nodes, crio, containerd)
}

#[tokio::test]
async fn every_node_is_labelled_with_the_runtime_its_node_daemon_found() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let (nodes, _, _) = nodes_by_runtime(&tb);
    let api: Api<Node> = Api::all(client);
    for node in &nodes {
        let want = tb.cri_name(node);
        let labels = eventually(
            &format!("{node} labelled {RUNTIME_LABEL}={want}"),
            Duration::from_secs(60),
            || async {
                let labels = api.get(node).await.ok()?.metadata.labels?;
                (labels.get(RUNTIME_LABEL).map(String::as_str) == Some(want)).then_some(labels)
            },
        )
        .await;
        assert_eq!(labels[CAN_RESTORE_LABEL], "true", "{node}: {labels:?}");
        // The version the kubelet reports too (cri-o://1.36.1, containerd://2.3.0).
        let reported = api
            .get(node)
            .await
            .unwrap()
            .status
            .unwrap()
            .node_info
            .unwrap();
        let version = &labels[VERSION_LABEL];
        assert!(
            reported
                .container_runtime_version
                .ends_with(version.trim_start_matches('v')),
            "{node}: label {version}, kubelet {}",
            reported.container_runtime_version
        );
    }
}

/// The counter checkpointed on `source` and restored by a pod nobody placed: it resumes on a
/// node of `source`'s runtime.
async fn restores_among_its_runtime(tb: &Testbed, source: &str) {
    let ns = TestNamespace::create(tb, &format!("mixed-{source}")).await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", source, 1)).await;
    let cc = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("counter-checkpoint", "app", "counter"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let at_checkpoint =
        counter_at_checkpoint(tb, &client, &ns.name, "counter-checkpoint", source).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.delete("app", &DeleteParams::default()).await.unwrap();

    let mut restore = counter_pod("restored", source, 1);
    restore.metadata.annotations = Some(
        [(
            RESTORE_FROM_ANNOTATION.to_owned(),
            "counter-checkpoint".to_owned(),
        )]
        .into(),
    );
    restore.spec.as_mut().unwrap().node_selector = None;
    let running = run_pod(&client, &ns.name, restore).await;
    let node = running.spec.as_ref().unwrap().node_name.clone().unwrap();
    assert_eq!(
        tb.runtime(&node),
        tb.runtime(source),
        "a checkpoint from {source} restored on {node}"
    );
    assert_counter_resumes(tb, &ns.name, &running, at_checkpoint).await;
}

#[tokio::test]
async fn a_containerd_checkpoint_restores_on_a_containerd_node_and_a_crio_one_on_crio() {
    let tb = Testbed::get();
    let (_, crio, containerd) = nodes_by_runtime(&tb);
    restores_among_its_runtime(&tb, &containerd).await;
    restores_among_its_runtime(&tb, &crio).await;
}
