//! One checkpoint, many replicas: a Deployment whose pod template carries `restore-from`
//! starts every replica from that checkpoint, however many it is scaled to, on any node. Scaled
//! from 0 to 3, three counters go on from the checkpointed value, each a process of its own.

use std::time::Duration;

use checkpointing::crd::CheckpointState;
use checkpointing::names::RESTORE_FROM_ANNOTATION;
use e2e::{
    TestNamespace, Testbed, app_pods, assert_counter_resumes, checkpoint, checkpoint_request,
    counter_at_checkpoint, counter_log, counter_pod, counter_template, grant, outcome, run_pod,
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

#[tokio::test]
async fn a_deployment_scaled_from_zero_starts_every_replica_from_one_checkpoint() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "warm-start").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    run_pod(&client, ns, counter_pod("seed", "node1", 1)).await;
    counter_log(&tb, ns, "seed", 3, Duration::from_secs(60)).await;
    let cc = checkpoint(
        &client,
        ns,
        checkpoint_request("seed-cp", "seed", "counter"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let at_checkpoint = counter_at_checkpoint(&tb, &client, ns, "seed-cp", "node1").await;
    // The replicas are the Deployment's: their ServiceAccount must be allowed to read it.
    let account = format!("system:serviceaccount:{ns}:default");
    let rules = json!([{
        "apiGroups": ["checkpointing.zacchaeuschok.github.io"],
        "resources": ["containercheckpoints"],
        "verbs": ["get"],
    }]);
    grant(&client, ns, "read-checkpoints", &account, rules).await;

    let mut template = counter_template("warm");
    template["metadata"]["annotations"] = json!({RESTORE_FROM_ANNOTATION: "seed-cp"});
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "warm"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "warm"}},
            "template": template,
        },
    }))
    .unwrap();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let scale = json!({"spec": {"replicas": 3}});
    deployments
        .patch_scale("warm", &PatchParams::default(), &Patch::Merge(&scale))
        .await
        .unwrap();

    let replicas = app_pods(&client, ns, "warm", 3).await;
    for pod in &replicas {
        assert_counter_resumes(&tb, ns, pod, at_checkpoint).await;
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
