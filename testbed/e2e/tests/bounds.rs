//! Bounded inputs, as a user meets them: the API server refuses out-of-range fields by the CRD's
//! schema, naming the field, and a node daemon that once panicked on a huge `timeoutSeconds`
//! keeps serving the next checkpoint on its node without a restart.

use checkpointing::crd::{CheckpointState, ContainerCheckpoint};
use e2e::{TestNamespace, Testbed, checkpoint, checkpoint_request, counter_pod, outcome, run_pod};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

/// noded's pod on `node`: its UID and the restarts of its containers.
async fn noded_incarnation(tb: &Testbed, client: &kube::Client, node: &str) -> (String, i32) {
    let pod: Pod = tb.wait_noded(client, node).await;
    let restarts = pod
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .map(|c| c.restart_count)
        .sum();
    (pod.metadata.uid.unwrap_or_default(), restarts)
}

/// Creating `cc` fails as invalid, with a message naming `field`, and leaves no object behind.
async fn assert_refused(api: &Api<ContainerCheckpoint>, cc: &ContainerCheckpoint, field: &str) {
    let name = cc.metadata.name.clone().unwrap();
    match api.create(&PostParams::default(), cc).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{name}: {status:?}");
            assert!(
                status.message.contains(field),
                "{name}: message {:?} names {field}",
                status.message
            );
        }
        other => panic!("{name}: the API server accepted it: {other:?}"),
    }
    assert!(
        api.get_opt(&name).await.unwrap().is_none(),
        "{name}: nothing stored"
    );
}

#[tokio::test]
async fn out_of_range_fields_are_refused_and_noded_keeps_serving() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "bounds").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;
    let before = noded_incarnation(&tb, &client, "node1").await;
    let pid = tb.noded_pid(&client, "node1").await;
    let api: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);

    // The value that once panicked noded, and its neighbours outside 1..=3600.
    for (i, timeout) in [400_000_000_000, i64::MAX, 3601, 0, -1]
        .into_iter()
        .enumerate()
    {
        let mut cc = checkpoint_request(&format!("timeout-{i}"), "app", "counter");
        cc.spec.timeout_seconds = Some(timeout);
        assert_refused(&api, &cc, "spec.timeoutSeconds").await;
    }
    let long_pod = checkpoint_request("long-pod", &"p".repeat(254), "counter");
    assert_refused(&api, &long_pod, "spec.podName").await;
    let long_container = checkpoint_request("long-container", "app", &"c".repeat(64));
    assert_refused(&api, &long_container, "spec.container").await;

    // The node still checkpoints, with the longest timeout allowed, in the same process.
    let mut cc = checkpoint_request("after", "app", "counter");
    cc.spec.timeout_seconds = Some(3600);
    let done = checkpoint(&client, &ns.name, cc).await;
    let (state, message) = outcome(&done);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    assert_eq!(
        noded_incarnation(&tb, &client, "node1").await,
        before,
        "noded's pod and restart count"
    );
    assert_eq!(tb.noded_pid(&client, "node1").await, pid, "noded's process");
}
