//! The controller's two replicas (deploy/'s Deployment) elect one leader on a Lease. When the
//! leader dies without releasing it (SIGKILL of its process, its pod deleted at once) with a
//! checkpoint request in flight, another replica takes the Lease over once it expires and the
//! request still completes. Runs alone (see .config/nextest.toml): it kills the controller.

use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use e2e::{
    CONTROLLER_DEPLOYMENT, CONTROLLER_NAMESPACE, CONTROLLER_SELECTOR, TestNamespace, Testbed,
    checkpoint_request, eventually, kill_process, memory_hog, outcome, pod_process,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};

#[tokio::test]
async fn a_checkpoint_completes_after_the_leader_is_killed() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);

    // Exactly one of the two replicas leads, and the Lease names it.
    let leader = tb.controller_leader(&client).await;
    let leader_name = leader.metadata.name.clone().unwrap();
    eventually(
        "one leader and one follower",
        Duration::from_secs(30),
        || async {
            let replicas = pods
                .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
                .await
                .ok()?
                .items;
            let gauges: Vec<(String, i64)> = replicas
                .iter()
                .map(|p| Some((p.metadata.name.clone()?, leader_gauge(&tb, p)?)))
                .collect::<Option<_>>()?;
            let expected: Vec<(String, i64)> = gauges
                .iter()
                .map(|(name, _)| (name.clone(), i64::from(*name == leader_name)))
                .collect();
            (gauges.len() == 2 && gauges == expected).then_some(())
        },
    )
    .await;

    let ns = TestNamespace::create(&tb, "failover").await;
    // Its checkpoint takes seconds, so the leader dies with it in flight.
    memory_hog(&tb, &client, &ns.name, "counter", "node1", 200).await;
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    requests
        .create(
            &PostParams::default(),
            &checkpoint_request("in-flight", "counter", "counter"),
        )
        .await
        .unwrap();
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        "the leader to hand the request to noded",
        Duration::from_secs(30),
        || async { contents.get_opt("in-flight").await.ok()?.map(|_| ()) },
    )
    .await;

    // No release: SIGKILL, and the pod deleted at once so the kubelet does not start it again;
    // its ReplicaSet makes a new one.
    let pid = pod_process(leader.metadata.uid.as_deref().unwrap(), "controller")
        .expect("the leader's controller process");
    kill_process(pid).await;
    pods.delete(
        &leader_name,
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();

    let done = eventually(
        "the request to finish via another replica",
        Duration::from_secs(90),
        || async {
            let cc = requests.get("in-flight").await.ok()?;
            cc.status.as_ref()?.state?.is_final().then_some(cc)
        },
    )
    .await;
    let (state, message) = outcome(&done);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let new_leader = tb.controller_leader(&client).await;
    assert_ne!(
        new_leader.metadata.name.as_deref(),
        Some(leader_name.as_str()),
        "another replica holds the Lease"
    );
    assert_eq!(leader_gauge(&tb, &new_leader), Some(1));

    // Two replicas again for the tests that follow.
    tb.rollout_status(
        CONTROLLER_NAMESPACE,
        &format!("deployment/{CONTROLLER_DEPLOYMENT}"),
    );
}

/// `checkpointing_controller_leader` from the replica's /metrics; None when it does not answer.
fn leader_gauge(tb: &Testbed, pod: &Pod) -> Option<i64> {
    tb.controller_metrics(pod)?
        .lines()
        .find_map(|l| l.strip_prefix("checkpointing_controller_leader "))?
        .trim()
        .parse()
        .ok()
}
