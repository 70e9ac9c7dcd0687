//! One checkpoint, many replicas: a Deployment whose pod template carries `restore-from`
//! (samples/warm-start.yaml, applied as its comment says) starts every replica from that
//! checkpoint, however many it is scaled to, on any node. Scaled from 0 to 3, three counters go
//! on from the checkpointed value, each a process of its own.

use std::time::Duration;

use checkpointing::crd::CheckpointState;
use e2e::{
    TestNamespace, Testbed, app_pods, assert_counter_resumes, checkpoint, checkpoint_request,
    counter_at_checkpoint, counter_log, counter_pod, outcome, run_pod,
};

#[tokio::test]
async fn a_deployment_scaled_from_zero_starts_every_replica_from_one_checkpoint() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "warm-start").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    run_pod(&client, ns, counter_pod("seed", "node1", 1)).await;
    counter_log(&tb, ns, "seed", 3, Duration::from_secs(60)).await;
    // The name samples/warm-start.yaml restores from.
    let request = checkpoint_request("counter-checkpoint", "seed", "counter");
    let cc = checkpoint(&client, ns, request).await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let at_checkpoint =
        counter_at_checkpoint(&tb, &client, ns, "counter-checkpoint", "node1").await;
    // As the sample says: apply it (the Deployment at 0 replicas, and the right of its pods'
    // ServiceAccount to read the checkpoint), then scale it.
    tb.kubectl_ok(&["apply", "-n", ns, "-f", "samples/warm-start.yaml"]);
    tb.kubectl_ok(&["scale", "-n", ns, "deployment/warm-app", "--replicas", "3"]);

    let replicas = app_pods(&client, ns, "warm-app", 3).await;
    for pod in &replicas {
        assert_counter_resumes(&tb, ns, pod, at_checkpoint).await;
        // The restore brings back the checkpointed pod's UTS namespace: its hostname, in every
        // replica (the README says so: a name to renew where it must be unique).
        let name = pod.metadata.name.as_deref().unwrap();
        let hostname = tb.kubectl_ok(&["exec", "-n", ns, name, "--", "hostname"]);
        assert_eq!(hostname.trim(), "seed", "{name}");
    }
    // Each replica is a process of its own: one stopped, the others count on.
    let first = replicas[0].metadata.name.clone().unwrap();
    let out = tb.kubectl(&["delete", "pod", "-n", ns, &first, "--wait=false"]);
    assert!(out.status.success(), "{out:?}");
    for pod in &replicas[1..] {
        let name = pod.metadata.name.as_deref().unwrap();
        let before = counter_log(&tb, ns, name, 1, Duration::from_secs(30)).await;
        let last = *before.last().unwrap();
        let after = counter_log(&tb, ns, name, before.len() + 2, Duration::from_secs(30)).await;
        assert!(after.last().unwrap() > &last, "{name} counts on");
    }
}
