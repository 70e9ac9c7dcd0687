//! `kubectl checkpoint drain`, the real plugin binary, on node1 with a bare counter pod a
//! CheckpointPolicy protects (`onEviction: Migrate`) and a Deployment's pod of no policy:
//! `--dry-run` says `migrate` for the one and `evict` for the other and changes nothing; the
//! drain then moves the protected pod (its counter goes on elsewhere), evicts the other, and
//! completes with no extra flags.

use std::time::Duration;

use checkpointing::crd::PodMigration;
use e2e::drain::{
    Cordoned, NODE, create, eviction_migration, eviction_migrations, labelled, protect, template,
};
use e2e::{
    TestNamespace, Testbed, app_pods, assert_moved, counter_log, counter_pod, node_of, plugin,
    run_pod, stderr, stdout, wait_running,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use serde_json::json;

/// The WHAT column of the dry run's row for `pod` in `ns`.
fn what<'a>(table: &'a str, ns: &str, pod: &str) -> &'a str {
    table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.len() >= 3 && cells[0] == ns && cells[1] == pod)
        .map(|cells| cells[2])
        .unwrap_or_else(|| panic!("no row for {ns}/{pod}: {table}"))
}

#[tokio::test]
async fn the_plugins_drain_says_what_it_would_do_then_moves_the_protected_pod() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "plugin-drain").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    protect(&client, ns).await;
    let bare = run_pod(
        &client,
        ns,
        labelled(counter_pod("bare", NODE, 1), ns, true),
    )
    .await;
    create::<Deployment>(
        &client,
        ns,
        json!({
            "metadata": {"name": "plain"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "plain"}},
                "template": template("plain", ns, false),
            },
        }),
    )
    .await;
    let [plain] = &app_pods(&client, ns, "plain", 1).await[..] else {
        unreachable!()
    };
    assert_eq!(node_of(plain), NODE, "plain starts on {NODE}");
    let plain_name = plain.metadata.name.as_deref().unwrap();
    for name in ["bare", plain_name] {
        counter_log(&tb, ns, name, 2, Duration::from_secs(60)).await;
    }
    // Set before the dry run too: were it to cordon by mistake, the node comes back.
    let _uncordon = Cordoned(&tb);
    let selector = format!("drain-test={ns}");

    let out = plugin(
        &tb,
        &["drain", NODE, "--dry-run", "--pod-selector", &selector],
    );
    assert!(out.status.success(), "dry run: {}", stderr(&out));
    let table = stdout(&out);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAMESPACE", "POD", "WHAT", "MESSAGE"]);
    assert_eq!(table.lines().count(), 3, "this test's two pods: {table}");
    assert_eq!(what(&table, ns, "bare"), "migrate", "{table}");
    assert_eq!(what(&table, ns, plain_name), "evict", "{table}");
    // The message is the webhook's: it names the policy.
    assert!(table.contains("CheckpointPolicy \"protect\""), "{table}");

    // The dry run changed nothing: no cordon, no migration, both pods run on as they were.
    let node = Api::<Node>::all(client.clone()).get(NODE).await.unwrap();
    let cordoned = node.spec.and_then(|s| s.unschedulable);
    assert_ne!(cordoned, Some(true), "the dry run cordoned {NODE}");
    let migrations = Api::<PodMigration>::namespaced(client.clone(), ns)
        .list(&Default::default())
        .await
        .unwrap();
    assert!(migrations.items.is_empty(), "{:?}", migrations.items);
    for source in [&bare, plain] {
        let name = source.metadata.name.as_deref().unwrap();
        let now = wait_running(&client, ns, name).await;
        assert_eq!(now.metadata.uid, source.metadata.uid, "{name} untouched");
    }

    let out = plugin(
        &tb,
        &[
            "drain",
            NODE,
            "--pod-selector",
            &selector,
            "--timeout",
            "300",
        ],
    );
    let said = stdout(&out);
    assert!(
        out.status.success(),
        "the drain completes: {said}{}",
        stderr(&out)
    );
    assert!(said.contains(&format!("node/{NODE} cordoned")), "{said}");
    assert!(
        said.contains(&format!("pod {ns}/bare moved ")),
        "one line when the protected pod is moved: {said}"
    );
    assert!(
        said.contains(&format!("pod {ns}/{plain_name} evicted")),
        "{said}"
    );
    assert!(said.contains(&format!("node/{NODE} drained")), "{said}");

    let pm = eviction_migration(&client, ns, &bare).await;
    assert_moved(&tb, &client, ns, &pm, None).await;
    // The other pod was evicted, not moved: its Deployment's new pod starts afresh elsewhere.
    assert!(
        eviction_migrations(&client, ns, plain).await.is_empty(),
        "no migration of {plain_name}"
    );
    let [fresh] = &app_pods(&client, ns, "plain", 1).await[..] else {
        unreachable!()
    };
    assert_ne!(fresh.metadata.uid, plain.metadata.uid);
    assert_ne!(node_of(fresh), NODE);
}
