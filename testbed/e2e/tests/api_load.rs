//! What one checkpoint request costs the API server: every call our two daemons make for it,
//! read from the testbed apiserver's audit log (testbed/files/kubernetes/audit-policy.yaml).
//! Watches and lists are shared by all requests and not counted; namespaced reads and writes
//! are, and only this test's namespace is looked at, so tests running beside it do not count
//! (which also leaves out reads of noded's Lease in the lease namespace).

use std::time::Duration;

use checkpointing::crd::CheckpointState;
use e2e::{
    TestNamespace, Testbed, checkpoint, checkpoint_request, counter_pod, eventually, outcome,
    run_pod,
};
use serde_json::Value;

const NODED: &str = "system:serviceaccount:kube-system:checkpoint-noded";
const CONTROLLER: &str = "system:serviceaccount:external-checkpointer-system:checkpoint-controller";
/// The bound: end to end, both daemons together.
const BUDGET: usize = 8;

/// One audited call: who, verb, `resource[/subresource]` and name.
#[derive(Debug, Clone, PartialEq)]
struct Call {
    user: &'static str,
    verb: String,
    resource: String,
    name: String,
}

/// The calls our daemons made in `namespace`, in log order.
fn calls(tb: &Testbed, namespace: &str) -> Vec<Call> {
    let log = std::fs::read_to_string(tb.state.join("logs/audit.log")).unwrap_or_default();
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["objectRef"]["namespace"] == namespace)
        .filter(|e| !matches!(e["verb"].as_str(), Some("watch" | "list")))
        .filter_map(|e| {
            let user = match e["user"]["username"].as_str()? {
                NODED => "noded",
                CONTROLLER => "controller",
                _ => return None,
            };
            let object = &e["objectRef"];
            let mut resource = object["resource"].as_str()?.to_owned();
            if let Some(sub) = object["subresource"].as_str() {
                resource = format!("{resource}/{sub}");
            }
            Some(Call {
                user,
                verb: e["verb"].as_str()?.to_owned(),
                resource,
                name: object["name"].as_str().unwrap_or_default().to_owned(),
            })
        })
        .collect()
}

#[tokio::test]
async fn one_checkpoint_request_costs_at_most_eight_api_calls() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "apiload").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", "node2", 1)).await;

    let cc = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("counted", "app", "counter"),
    )
    .await;
    assert_eq!(
        outcome(&cc).0,
        CheckpointState::Completed,
        "{}",
        outcome(&cc).1
    );

    // The final status comes before its Event; count once the log has not grown for this
    // namespace over four polls (two seconds).
    let (mut last, mut unchanged) = (Vec::new(), 0);
    let calls = eventually(
        "the daemons' calls for the request to settle",
        Duration::from_secs(60),
        || {
            let now = calls(&tb, &ns.name);
            unchanged = if now == last { unchanged + 1 } else { 0 };
            last = now.clone();
            let settled = unchanged >= 4;
            async move { settled.then_some(now) }
        },
    )
    .await;
    let listing: Vec<String> = calls
        .iter()
        .map(|c| format!("{} {} {} {}", c.user, c.verb, c.resource, c.name))
        .collect();
    println!("{} API calls:\n{}", calls.len(), listing.join("\n"));
    assert!(
        calls.len() <= BUDGET,
        "{} API calls for one checkpoint request (at most {BUDGET}):\n{}",
        calls.len(),
        listing.join("\n")
    );
}
