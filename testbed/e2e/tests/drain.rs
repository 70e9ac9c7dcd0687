//! `kubectl drain` of a node with pods a CheckpointPolicy protects (`onEviction: Migrate`):
//! each protected pod (bare, a Deployment's, a StatefulSet's) moves to another node and counts
//! on, a pod of no policy is evicted as usual, and the drain completes with kubectl's usual
//! flags. A real server (Debian's redis-server) keeps every key it held in memory through the
//! drain. A PodDisruptionBudget that allows no disruption holds the drain, which says why, until
//! it allows one.

use std::process::Output;
use std::time::Duration;

use checkpointing::crd::MigrationPhase;
use e2e::drain::{
    Cordoned, NODE, create, eviction_migration, eviction_migrations, labelled, protect, template,
};
use e2e::{
    TestNamespace, Testbed, app_pods, assert_moved, counter_log, counter_pod, eventually,
    kv_preload, kv_server_pod, migration_outcome, node_of, redis_cli, run_pod, wait_running,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use serde_json::json;

/// `kubectl drain NODE` of this test's pods alone.
fn drain(tb: &Testbed, ns: &str, timeout: &str) -> Output {
    e2e::drain::drain(tb, &format!("drain-test={ns}"), timeout)
}

#[tokio::test]
async fn a_drain_migrates_the_pods_a_policy_protects_and_evicts_the_others() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "drain").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    protect(&client, ns).await;
    let bare = run_pod(
        &client,
        ns,
        labelled(counter_pod("bare", NODE, 1), ns, true),
    )
    .await;
    for (app, protected) in [("web", true), ("plain", false)] {
        create::<Deployment>(
            &client,
            ns,
            json!({
                "metadata": {"name": app},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": app}},
                    "template": template(app, ns, protected),
                },
            }),
        )
        .await;
    }
    create::<StatefulSet>(
        &client,
        ns,
        json!({
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 1,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "db"}},
                "template": template("db", ns, true),
            },
        }),
    )
    .await;
    let mut sources = vec![bare];
    for app in ["web", "db", "plain"] {
        sources.extend(app_pods(&client, ns, app, 1).await);
    }
    for pod in &sources {
        assert_eq!(
            node_of(pod),
            NODE,
            "{:?} starts on {NODE}",
            pod.metadata.name
        );
        let name = pod.metadata.name.as_deref().unwrap();
        counter_log(&tb, ns, name, 2, Duration::from_secs(60)).await;
    }

    let _uncordon = Cordoned(&tb);
    let out = drain(&tb, ns, "300s");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the drain completes: {said}");
    // kubectl says what held it: the protected pods' migrations.
    assert!(said.contains("PodMigration"), "{said}");

    for source in &sources[..3] {
        let pm = eviction_migration(&client, ns, source).await;
        assert_moved(&tb, &client, ns, &pm, None).await;
    }
    // The unprotected pod was evicted, not moved: its Deployment's new pod starts afresh.
    let plain = &sources[3];
    assert!(
        eviction_migrations(&client, ns, plain).await.is_empty(),
        "no migration of plain"
    );
    let [fresh] = &app_pods(&client, ns, "plain", 1).await[..] else {
        unreachable!()
    };
    assert_ne!(fresh.metadata.uid, plain.metadata.uid);
    assert_ne!(node_of(fresh), NODE);
    let name = fresh.metadata.name.as_deref().unwrap();
    let values = counter_log(&tb, ns, name, 1, Duration::from_secs(60)).await;
    assert_eq!(values[0], 0, "a plain eviction starts over");
    // Nothing of this test is left on the drained node.
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    let on_node: Vec<String> = pods
        .items
        .iter()
        .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(NODE))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert!(on_node.is_empty(), "left on {NODE}: {on_node:?}");
}

#[tokio::test]
async fn a_drain_waits_for_a_budget_that_allows_no_disruption() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "drain-budget").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    protect(&client, ns).await;
    create::<Deployment>(
        &client,
        ns,
        json!({
            "metadata": {"name": "guarded"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "guarded"}},
                "template": template("guarded", ns, true),
            },
        }),
    )
    .await;
    create::<k8s_openapi::api::policy::v1::PodDisruptionBudget>(
        &client,
        ns,
        json!({
            "metadata": {"name": "guarded"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "guarded"}}},
        }),
    )
    .await;
    let [source] = &app_pods(&client, ns, "guarded", 1).await[..] else {
        unreachable!()
    };
    assert_eq!(node_of(source), NODE);
    let name = source.metadata.name.as_deref().unwrap();
    counter_log(&tb, ns, name, 2, Duration::from_secs(60)).await;

    let _uncordon = Cordoned(&tb);
    let out = drain(&tb, ns, "30s");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "the budget holds the drain: {said}");
    assert!(
        said.contains("PodDisruptionBudget \"guarded\""),
        "the drain says why: {said}"
    );
    // The pod runs on where it was, untouched.
    let [still] = &app_pods(&client, ns, "guarded", 1).await[..] else {
        unreachable!()
    };
    assert_eq!(still.metadata.uid, source.metadata.uid);

    // The budget allows one disruption: the drain goes on and the pod moves.
    let budgets: Api<k8s_openapi::api::policy::v1::PodDisruptionBudget> =
        Api::namespaced(client.clone(), ns);
    let patch = json!({"spec": {"minAvailable": 0}});
    budgets
        .patch(
            "guarded",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .unwrap();
    eventually(
        "the budget to allow a disruption",
        Duration::from_secs(60),
        || async {
            let b = budgets.get("guarded").await.ok()?;
            (b.status?.disruptions_allowed > 0).then_some(())
        },
    )
    .await;
    let out = drain(&tb, ns, "300s");
    assert!(
        out.status.success(),
        "the drain completes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pm = eviction_migration(&client, ns, source).await;
    assert_moved(&tb, &client, ns, &pm, None).await;
}

/// Keys the server holds in memory alone (`--save ""`): only the checkpoint can carry them.
const KEYS: u32 = 1000;

#[tokio::test]
async fn a_drained_kv_server_comes_back_elsewhere_with_every_key() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "drain-kv").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    protect(&client, ns).await;
    let kv = labelled(kv_server_pod("kv", NODE, None), ns, true);
    let kv = run_pod(&client, ns, kv).await;
    kv_preload(&tb, ns, "kv", KEYS);

    let _uncordon = Cordoned(&tb);
    let out = drain(&tb, ns, "300s");
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "the drain completes: {said}");
    let pm = eviction_migration(&client, ns, &kv).await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Succeeded, "{message}");
    let restored = pm.status.as_ref().unwrap().restored_pod.clone().unwrap();
    let running = wait_running(&client, ns, &restored).await;
    assert_ne!(node_of(&running), NODE, "off the drained node");
    assert_eq!(redis_cli(&tb, ns, &restored, &["DBSIZE"]), KEYS.to_string());
    let last = format!("key:{}", KEYS - 1);
    assert_eq!(
        redis_cli(&tb, ns, &restored, &["GET", &last]),
        format!("value:{}", KEYS - 1)
    );
}
