//! What a checkpoint moves stays private, tried as the attackers would: a tenant holding every
//! right in its own namespace, a node daemon taken over (noded's ServiceAccount with its node's
//! token claim) and a controller taken over (its ServiceAccount). Writes to objects other tests
//! share are dry runs: admission decides them the same, and a policy that failed to refuse one
//! changes nothing.

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointContent,
    ContainerCheckpointContentSpec,
};
use checkpointing::names::{MIGRATION_LABEL, NODE_LABEL, RESTORE_FROM_ANNOTATION};
use e2e::{
    NODED_NAMESPACE, NODED_SELECTOR, TestNamespace, Testbed, checkpoint, checkpoint_request,
    counter_pod, eventually, grant, outcome, run_pod, wait_checkpoint,
};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::time::Duration;

/// An attacker's change to an object, as JSON.
type Change = dyn Fn(&mut serde_json::Value);

/// The tenant: only what its own namespace's Roles give it.
const MALLORY: &str = "mallory";

/// A completed checkpoint `name` of a counter on node1 in `ns`; returns its image.
async fn completed(client: &kube::Client, ns: &str, name: &str) -> String {
    run_pod(client, ns, counter_pod(&format!("{name}-app"), "node1", 1)).await;
    let request = checkpoint_request(name, &format!("{name}-app"), "counter");
    let cc = checkpoint(client, ns, request).await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    cc.status.unwrap().image.unwrap()
}

/// The API server's message for a refused write; panics if it was accepted.
fn refused<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) -> String {
    match result {
        Ok(accepted) => panic!("{what} was accepted: {accepted:?}"),
        Err(kube::Error::Api(status)) => status.message,
        Err(other) => panic!("{what}: {other}"),
    }
}

fn status(body: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(json!({ "status": body }))
}

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

#[tokio::test]
async fn a_node_daemon_taken_over_neither_takes_nor_reopens_a_checkpoint() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "noded-taken").await;
    let image = completed(&client, &ns.name, "cp").await;
    let params = PatchParams::default();
    let node1: Api<ContainerCheckpointContent> =
        Api::namespaced(tb.as_noded("node1").await, &ns.name);
    let node2: Api<ContainerCheckpointContent> =
        Api::namespaced(tb.as_noded("node2").await, &ns.name);
    let relabel = |node: &str| Patch::Merge(json!({"metadata": {"labels": {NODE_LABEL: node}}}));

    // node2's daemon takes node1's Content by relabelling it, to write its status next.
    let message = refused(
        node2.patch("cp", &params, &relabel("node2")).await,
        "relabel",
    );
    assert!(
        message.contains("may write only the ContainerCheckpointContents of its own node; cp belongs to node node1"),
        "{message}"
    );
    // node1's daemon gives it away, or points it at another pod.
    let message = refused(node1.patch("cp", &params, &relabel("node2")).await, "give");
    assert!(message.contains("never relabels one"), "{message}");
    // The schema refuses it before any policy is asked: no one changes a Content's spec.
    let other_pod = Patch::Merge(json!({"spec": {"podName": "victim"}}));
    let message = refused(node1.patch("cp", &params, &other_pod).await, "spec");
    assert!(message.contains("spec is immutable"), "{message}");
    let annotate = Patch::Merge(json!({"metadata": {"annotations": {"x": "y"}}}));
    let message = refused(node1.patch("cp", &params, &annotate).await, "annotation");
    assert!(
        message.contains("may change only its finalizer"),
        "{message}"
    );

    // Completed -> Failed -> Completed with an image of its choice.
    let failed = status(json!({"state": "Failed", "message": "again"}));
    let message = refused(node1.patch_status("cp", &params, &failed).await, "Failed");
    assert!(
        message.contains("ContainerCheckpointContent cp is Completed, which is final"),
        "{message}"
    );
    let other = format!("localhost:5050/elsewhere/other@sha256:{}", "0".repeat(64));
    let swapped = status(json!({"image": other}));
    let message = refused(node1.patch_status("cp", &params, &swapped).await, "image");
    assert!(message.contains("which is final"), "{message}");

    let content = Api::<ContainerCheckpointContent>::namespaced(client, &ns.name)
        .get("cp")
        .await
        .unwrap();
    assert_eq!(content.metadata.labels.unwrap()[NODE_LABEL], "node1");
    let status = content.status.unwrap();
    assert_eq!(status.state, Some(CheckpointState::Completed));
    assert_eq!(status.image.as_deref(), Some(image.as_str()));
}

#[tokio::test]
async fn a_node_daemon_taken_over_changes_no_node_but_the_runtime_labels_of_its_own() {
    let tb = Testbed::get();
    // Dry runs: the policy is asked all the same, and no node changes.
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let nodes: Api<Node> = Api::all(tb.as_noded("node1").await);
    let label =
        |key: &str, value: &str| Patch::Merge(json!({"metadata": {"labels": {key: value}}}));
    let runtime = "checkpointing.zacchaeuschok.github.io/can-restore";

    // What noded itself does: its runtime labels on its own node.
    nodes
        .patch("node1", &params, &label(runtime, "false"))
        .await
        .expect("noded labels its own node");
    // Another node made to look able (or unable) to restore.
    let message = refused(
        nodes
            .patch("node2", &params, &label(runtime, "false"))
            .await,
        "other node",
    );
    assert!(message.contains("may only label its own Node"), "{message}");
    // Workloads attracted to its node, or its node cordoned or tainted.
    let role = label("node-role.kubernetes.io/control-plane", "");
    let message = refused(nodes.patch("node1", &params, &role).await, "role label");
    assert!(
        message.contains("may change only its runtime labels"),
        "{message}"
    );
    let cordon = Patch::Merge(json!({"spec": {"unschedulable": true}}));
    let message = refused(nodes.patch("node1", &params, &cordon).await, "cordon");
    assert!(
        message.contains("may change only its runtime labels"),
        "{message}"
    );
}

#[tokio::test]
async fn a_tenant_writes_no_content_no_request_status_and_no_other_namespace() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "tenant").await;
    // Every right in its namespace, as a namespace admin might be given.
    let all = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
    grant(&client, &ns.name, "everything", MALLORY, all).await;
    completed(&client, &ns.name, "mine").await;
    let mallory = tb.client_as(MALLORY, &["system:authenticated"], &[]).await;
    let params = PatchParams::default();

    // Its request's status names another namespace's checkpoint for the webhook to restore.
    let victims = format!("localhost:5050/victim/secret@sha256:{}", "0".repeat(64));
    let requests: Api<ContainerCheckpoint> = Api::namespaced(mallory.clone(), &ns.name);
    let forged = status(json!({"image": victims}));
    let message = refused(
        requests.patch_status("mine", &params, &forged).await,
        "status",
    );
    assert!(
        message.contains("may not write the status of ContainerCheckpoint mine; only the checkpoint controller writes it"),
        "{message}"
    );
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(mallory.clone(), &ns.name);
    let message = refused(
        contents.patch_status("mine", &params, &forged).await,
        "Content",
    );
    assert!(
        message.contains("only the node daemon that took the checkpoint writes it"),
        "{message}"
    );

    // A Content of its own making, which node1's daemon would take up.
    let mut made = ContainerCheckpointContent::new(
        "made",
        ContainerCheckpointContentSpec {
            container_checkpoint_ref: "made".into(),
            namespace: ns.name.clone(),
            pod_name: "mine-app".into(),
            container_name: "counter".into(),
            node_name: "node1".into(),
            pod_uid: "forged".into(),
            timeout_seconds: None,
            volumes: Vec::new(),
            registry: None,
            credentials_secret: None,
            hold_source: false,
        },
    );
    made.metadata.labels = Some([(NODE_LABEL.to_owned(), "node1".to_owned())].into());
    let message = refused(
        contents.create(&PostParams::default(), &made).await,
        "Content",
    );
    assert!(
        message.contains("only the checkpoint controller writes Contents"),
        "{message}"
    );

    // A request reaching into another namespace.
    let mut elsewhere = checkpoint_request("elsewhere", "mine-app", "counter");
    elsewhere.spec.namespace = Some("kube-system".into());
    let created = requests.create(&PostParams::default(), &elsewhere).await;
    let message = refused(created, "request");
    assert!(
        message.contains(&format!(
            "spec.namespace kube-system differs from the namespace {}",
            ns.name
        )),
        "{message}"
    );
}

/// Stands in for a node daemon taken over, or any status forged past the API's guards: the
/// cluster admin writes a request's status naming another namespace's checkpoint image. The
/// webhook still restores only an image where the checkpoint's own names put it.
#[tokio::test]
async fn a_restore_runs_only_its_own_checkpoints_image() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let victim = TestNamespace::create(&tb, "victim").await;
    let attacker = TestNamespace::create(&tb, "borrower").await;
    let image = completed(&client, &victim.name, "secret").await;
    let rules = json!([
        {"apiGroups": [checkpointing::names::GROUP], "resources": ["containercheckpoints"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "create"]},
    ]);
    grant(&client, &attacker.name, "restorer", MALLORY, rules).await;

    // A request the controller fails (no such pod) and then leaves alone, as it is final.
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &attacker.name);
    requests
        .create(
            &PostParams::default(),
            &checkpoint_request("borrowed", "gone", "counter"),
        )
        .await
        .unwrap();
    let failed = wait_checkpoint(&client, &attacker.name, "borrowed").await;
    assert_eq!(outcome(&failed).0, CheckpointState::Failed);
    let forged = status(json!({"state": "Completed", "image": image}));
    requests
        .patch_status("borrowed", &PatchParams::default(), &forged)
        .await
        .unwrap();

    let mut pod = counter_pod("thief", "node2", 1);
    pod.metadata.annotations =
        Some([(RESTORE_FROM_ANNOTATION.to_owned(), "borrowed".to_owned())].into());
    let mallory = tb.client_as(MALLORY, &["system:authenticated"], &[]).await;
    let pods: Api<Pod> = Api::namespaced(mallory, &attacker.name);
    let message = refused(pods.create(&PostParams::default(), &pod).await, "restore");
    assert!(
        message.contains("which is not where this checkpoint's images lie")
            && message.contains(&format!("\"localhost:5050/{}/borrowed\"", attacker.name)),
        "{message}"
    );
}

#[tokio::test]
async fn the_controller_may_change_only_the_ca_of_its_webhook_registration() {
    let tb = Testbed::get();
    let name = "checkpointing-restore";
    let current = Api::<MutatingWebhookConfiguration>::all(tb.client().await)
        .get(name)
        .await
        .unwrap();
    let registrations = Api::<MutatingWebhookConfiguration>::all(tb.as_controller().await);
    let params = PatchParams {
        dry_run: true,
        ..PatchParams::default()
    };
    let with = |change: &Change| {
        let mut webhooks = serde_json::to_value(current.webhooks.clone().unwrap()).unwrap();
        change(&mut webhooks[0]);
        Patch::Merge(json!({ "webhooks": webhooks }))
    };
    let attacks: [(&str, &Change); 4] = [
        ("every pod", &|w| {
            w["matchConditions"][0]["expression"] = json!("true")
        }),
        ("elsewhere", &|w| {
            w["clientConfig"] = json!({"url": "https://attacker.example/mutate"})
        }),
        ("secrets", &|w| {
            w["rules"][0]["resources"] = json!(["secrets"])
        }),
        ("fail open", &|w| w["failurePolicy"] = json!("Ignore")),
    ];
    for (what, change) in attacks {
        let message = refused(
            registrations.patch(name, &params, &with(change)).await,
            what,
        );
        assert!(
            message.contains(
                "may change only the CA bundle of webhook configuration checkpointing-restore"
            ),
            "{what}: {message}"
        );
    }
    // What it does: its CA, here the one already there.
    registrations
        .patch(name, &params, &with(&|_| {}))
        .await
        .expect("the controller keeps its registration");
}

#[tokio::test]
async fn the_controller_creates_only_unprivileged_restores_outside_kube_system() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "controller-pods").await;
    completed(&client, &ns.name, "cp").await;
    let controller = tb.as_controller().await;
    let copy = |change: &Change| {
        let mut pod = serde_json::to_value(counter_pod("copy", "node2", 1)).unwrap();
        pod["metadata"]["labels"] = json!({MIGRATION_LABEL: "m"});
        pod["metadata"]["annotations"] = json!({RESTORE_FROM_ANNOTATION: "cp"});
        change(&mut pod);
        serde_json::from_value::<Pod>(pod).unwrap()
    };
    let pods: Api<Pod> = Api::namespaced(controller.clone(), &ns.name);

    let plain = counter_pod("plain", "node2", 1);
    let message = refused(pods.create(&dry_run(), &plain).await, "plain");
    assert!(
        message.contains("creates only the restored copies of its migrations"),
        "{message}"
    );
    let privileged: [(&str, &Change); 4] = [
        ("host network", &|p| p["spec"]["hostNetwork"] = json!(true)),
        ("privileged", &|p| {
            p["spec"]["containers"][0]["securityContext"] = json!({"privileged": true})
        }),
        ("capability", &|p| {
            p["spec"]["containers"][0]["securityContext"] =
                json!({"capabilities": {"add": ["SYS_ADMIN"]}})
        }),
        ("host path", &|p| {
            p["spec"]["volumes"] = json!([{"name": "root", "hostPath": {"path": "/"}}])
        }),
    ];
    for (what, change) in privileged {
        let message = refused(pods.create(&dry_run(), &copy(change)).await, what);
        assert!(
            message.contains("creates no privileged pods"),
            "{what}: {message}"
        );
    }
    let system: Api<Pod> = Api::namespaced(controller.clone(), NODED_NAMESPACE);
    let message = refused(
        system.create(&dry_run(), &copy(&|_| {})).await,
        "kube-system",
    );
    assert!(message.contains("no pods in kube-system"), "{message}");
    let noded = Api::<Pod>::namespaced(client, NODED_NAMESPACE)
        .list(&ListParams::default().labels(NODED_SELECTOR))
        .await
        .unwrap();
    let victim = noded.items[0].metadata.name.clone().unwrap();
    let delete = DeleteParams {
        dry_run: true,
        ..DeleteParams::default()
    };
    let message = refused(system.delete(&victim, &delete).await.map(drop), "delete");
    assert!(message.contains("no pods in kube-system"), "{message}");

    // What a migration does still passes.
    pods.create(&dry_run(), &copy(&|_| {}))
        .await
        .expect("the controller creates a migration's restored copy");
}

/// The runtime keeps a restored checkpoint image under its ID: pods of another namespace that
/// name it so (`imagePullPolicy: Never`) are refused, or at worst never run it.
#[tokio::test]
async fn pods_naming_a_checkpoint_image_by_id_never_run() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let victim = TestNamespace::create(&tb, "by-id-victim").await;
    let attacker = TestNamespace::create(&tb, "by-id-attacker").await;
    let image = completed(&client, &victim.name, "cp").await;
    let mut restored = counter_pod("restored", "node2", 1);
    restored.metadata.annotations =
        Some([(RESTORE_FROM_ANNOTATION.to_owned(), "cp".to_owned())].into());
    run_pod(&client, &victim.name, restored).await;

    let inspect = tb.node_exec("node2", &["crictl", "inspecti", "-o", "json", &image]);
    assert!(inspect.status.success(), "crictl inspecti {image}");
    let found: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let id = found["status"]["id"].as_str().unwrap();
    let hex = id.trim_start_matches("sha256:");
    assert_eq!(hex.len(), 64, "{id}");

    let pods: Api<Pod> = Api::namespaced(client.clone(), &attacker.name);
    for (i, reference) in [
        format!("sha256:{}", &hex[..12]),
        format!("sha256:{hex}"),
        hex[..12].to_owned(),
        hex.to_owned(),
    ]
    .into_iter()
    .enumerate()
    {
        let mut pod = counter_pod(&format!("by-id-{i}"), "node2", 1);
        let container = &mut pod.spec.as_mut().unwrap().containers[0];
        container.image = Some(reference.clone());
        container.image_pull_policy = Some("Never".into());
        match pods.create(&PostParams::default(), &pod).await {
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 403, "{reference}: {}", status.message);
                assert!(status.message.contains("by image ID"), "{}", status.message);
            }
            Err(other) => panic!("{reference}: {other}"),
            Ok(_) => never_runs(&pods, &format!("by-id-{i}"), &reference).await,
        }
    }
}

/// Pod `name` ends unable to get its image, never running meanwhile.
async fn never_runs(pods: &Api<Pod>, name: &str, reference: &str) {
    const REFUSED: [&str; 2] = ["ErrImageNeverPull", "InvalidImageName"];
    eventually(
        &format!("{name} ({reference}) to be refused its image"),
        Duration::from_secs(60),
        || async {
            let status = pods.get(name).await.ok()?.status?;
            assert_ne!(status.phase.as_deref(), Some("Running"), "{reference} runs");
            let waiting = status.container_statuses?[0].state.clone()?.waiting?;
            waiting.reason.filter(|r| REFUSED.contains(&r.as_str()))
        },
    )
    .await;
}
