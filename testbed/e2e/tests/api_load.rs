//! What one checkpoint request costs the API server: every call our two daemons make for it in
//! this test's namespace, read from the testbed apiserver's audit log (see `e2e::audit`).

use checkpointing::crd::CheckpointState;
use e2e::audit::settled_calls;
use e2e::{TestNamespace, Testbed, checkpoint, checkpoint_request, counter_pod, outcome, run_pod};

/// The bound: end to end, both daemons together.
const BUDGET: usize = 8;

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

    let calls = settled_calls(&tb, &ns.name).await;
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
