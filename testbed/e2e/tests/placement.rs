//! Placement of restores: a restore lands only on a node whose node daemon is live, runs the
//! checkpoint's runtime and architecture, and whose runtime can restore; a restore pinned
//! elsewhere is refused at admission with the reason. The testbed's nodes all run one runtime,
//! so node3's Lease is made to say otherwise: its node daemon is taken away first (kubelet
//! stopped, noded killed, as the fault tests do), so nothing rewrites the Lease meanwhile. Runs
//! one at a time with the other e2e tests (see .config/nextest.toml).

use std::time::Duration;

use checkpointing::crd::CheckpointState;
use checkpointing::names::{
    ARCH_ANNOTATION, CANNOT_RESTORE_ANNOTATION, DEFAULT_LEASE_NAMESPACE, RESTORE_FROM_ANNOTATION,
    RUNTIME_ANNOTATION, noded_lease_name, noded_lease_node,
};
use e2e::{
    NodedDown, TestNamespace, Testbed, assert_counter_resumes, checkpoint, checkpoint_request,
    counter_at_checkpoint, counter_pod, eventually, outcome, run_pod,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// The node whose Lease the test rewrites (no other test but the fault tests uses it).
const NODE: &str = "node3";
const CHECKPOINT: &str = "counter-checkpoint";
/// What the test says on node3's Lease where a runtime would say why it cannot restore.
const CANNOT: &str = "simulated by the e2e test";

/// The checkpointed counter restored as `name`: bound to `node` (`spec.nodeName`), pinned to
/// it by hostname, or (`None`) placed by the scheduler.
fn restore_pod(name: &str, node: Option<&str>, by_hostname: bool) -> Pod {
    let mut pod = counter_pod(name, node.unwrap_or_default(), 1);
    pod.metadata.annotations =
        Some([(RESTORE_FROM_ANNOTATION.to_owned(), CHECKPOINT.to_owned())].into());
    let spec = pod.spec.as_mut().unwrap();
    if node.is_none() || !by_hostname {
        spec.node_selector = None;
    }
    if !by_hostname {
        spec.node_name = node.map(Into::into);
    }
    pod
}

/// The denial of a restore pinned to node3, once the webhook sees the Lease as patched: a
/// dry-run create (the webhook has no side effects, so the API server calls it for dry runs
/// too), asked until its message says `says`.
async fn denial(pods: &Api<Pod>, pod: &Pod, says: &str) -> String {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    eventually(
        &format!("a restore pinned to {NODE} to be denied saying {says:?}"),
        Duration::from_secs(30),
        || async {
            match pods.create(&dry_run, pod).await {
                Err(kube::Error::Api(s)) if s.message.contains(says) => Some(s.message),
                _ => None,
            }
        },
    )
    .await
}

/// Takes the annotation the test added off node3's Lease however the test ends (noded, back,
/// rewrites everything else of it).
struct TestAnnotation<'a>(&'a Testbed);

impl Drop for TestAnnotation<'_> {
    fn drop(&mut self) {
        let _ = self.0.kubectl(&[
            "annotate",
            "lease",
            "-n",
            DEFAULT_LEASE_NAMESPACE,
            &noded_lease_name(NODE),
            &format!("{CANNOT_RESTORE_ANNOTATION}-"),
        ]);
    }
}

#[tokio::test]
async fn a_restore_lands_only_where_a_node_daemon_says_it_can_run() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "placement").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;
    let cc = checkpoint(
        &client,
        &ns.name,
        checkpoint_request(CHECKPOINT, "app", "counter"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let at_checkpoint = counter_at_checkpoint(&tb, &client, &ns.name, CHECKPOINT, "node1").await;
    // Gone, as in a migration: its restore may land on node1 too.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.delete("app", &DeleteParams::default()).await.unwrap();
    let runtime = tb.cri_name("node1");
    let other = if runtime == "cri-o" {
        "containerd"
    } else {
        "cri-o"
    };

    // node3 loses its daemon; its Lease is now the cluster admin's to write.
    let leases: Api<Lease> = Api::namespaced(client.clone(), DEFAULT_LEASE_NAMESPACE);
    let down = NodedDown::new(&tb, &client, NODE).await;
    let annotated = TestAnnotation(&tb);
    let write = |patch: Value| {
        let leases = leases.clone();
        async move {
            leases
                .patch(
                    &noded_lease_name(NODE),
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .unwrap_or_else(|e| panic!("patching {NODE}'s Lease: {e}"))
        }
    };
    let renewed = |ago: i64| json!(MicroTime(Timestamp::now() - SignedDuration::from_secs(ago)));
    let bound = restore_pod("bound", Some(NODE), false);
    let by_hostname = restore_pod("by-hostname", Some(NODE), true);

    // Live, but another runtime.
    write(json!({
        "metadata": {"annotations": {RUNTIME_ANNOTATION: other}},
        "spec": {"renewTime": renewed(0), "leaseDurationSeconds": 3600},
    }))
    .await;
    let says = format!("{NODE} runs {other} (checkpoint from {runtime})");
    let message = denial(&pods, &bound, &says).await;
    assert!(message.contains("bound to node node3"), "{message}");
    let message = denial(&pods, &by_hostname, &says).await;
    assert!(message.contains("node selector"), "{message}");

    // Meanwhile a restore the scheduler places is required onto the other nodes with a live
    // daemon, and resumes on one of them.
    let mut eligible: Vec<String> = leases
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|l| noded_lease_node(l.metadata.name.as_deref()?).map(str::to_owned))
        .filter(|node| node != NODE)
        .collect();
    eligible.sort();
    let running = run_pod(&client, &ns.name, restore_pod("placed", None, false)).await;
    let spec = running.spec.as_ref().unwrap();
    let terms = &spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .expect("a required node affinity")
        .node_selector_terms;
    // One term a node: the API server takes one value per node field selector.
    let named: Vec<String> = terms
        .iter()
        .map(|t| {
            let names = t.match_fields.as_ref().unwrap();
            assert_eq!(
                (names[0].key.as_str(), names[0].operator.as_str()),
                ("metadata.name", "In")
            );
            names[0].values.as_ref().unwrap().join(",")
        })
        .collect();
    assert_eq!(named, eligible);
    let node = spec.node_name.clone().unwrap();
    assert!(eligible.contains(&node), "{node} not in {eligible:?}");
    assert_counter_resumes(&tb, &ns.name, &running, at_checkpoint).await;

    // Live and of the runtime, but the runtime cannot restore.
    write(json!({
        "metadata": {"annotations": {
            RUNTIME_ANNOTATION: runtime,
            CANNOT_RESTORE_ANNOTATION: CANNOT,
        }},
    }))
    .await;
    let says = format!("{NODE}'s runtime cannot restore ({CANNOT})");
    denial(&pods, &bound, &says).await;

    // Able to restore, but its daemon's Lease ran out an hour ago.
    write(json!({
        "metadata": {"annotations": {CANNOT_RESTORE_ANNOTATION: null}},
        "spec": {"renewTime": renewed(3600), "leaseDurationSeconds": 30},
    }))
    .await;
    let says = format!("{NODE}'s node daemon is not running (its Lease expired");
    denial(&pods, &bound, &says).await;

    // node3 gets its daemon back, which publishes what it is again.
    drop(annotated);
    drop(down);
    tb.wait_noded(&client, NODE).await;
    eventually(
        "node3's Lease to say what its daemon publishes again",
        Duration::from_secs(180),
        || async {
            let lease = leases.get(&noded_lease_name(NODE)).await.ok()?;
            let annotations = lease.metadata.annotations.unwrap_or_default();
            let renewal = lease.spec?.renew_time?.0;
            let fresh = Timestamp::now().duration_since(renewal) < SignedDuration::from_secs(20);
            (fresh
                && annotations.get(RUNTIME_ANNOTATION).map(String::as_str) == Some(runtime)
                && annotations.contains_key(ARCH_ANNOTATION)
                && !annotations.contains_key(CANNOT_RESTORE_ANNOTATION))
            .then_some(())
        },
    )
    .await;
}
