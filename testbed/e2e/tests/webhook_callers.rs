//! Restores authorised where a caller cannot forge the requester (issue 28): the chart's default
//! install serves the webhook to any caller (no client CA), so what the webhook answers must
//! gain a caller posing as the API server nothing, and who may restore is checked by the API
//! server itself (ValidatingAdmissionPolicy checkpointing-restore-needs-get). The testbed keeps
//! the client CA as opt-in hardening; these tests hold with or without it.

use std::time::Duration;

use checkpointing::names::RESTORE_FROM_ANNOTATION;
use e2e::drain::{NODE, eviction_migrations, labelled, protect};
use e2e::{CONTROLLER_NAMESPACE, TestNamespace, Testbed, counter_pod, grant, run_pod};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

const POLICY: &str = "checkpointing-restore-needs-get";

/// POSTs `review` to the webhook Service from a node, as any pod could, without a client
/// certificate; the HTTP status (`000`: no HTTP answer, the TLS handshake failed) and body.
async fn post_as_a_pod(tb: &Testbed, review: &Value) -> (String, String) {
    let service = Api::<Service>::namespaced(tb.client().await, CONTROLLER_NAMESPACE)
        .get("checkpoint-controller-webhook")
        .await
        .unwrap();
    let ip = service.spec.unwrap().cluster_ip.unwrap();
    let out = tb.node_exec(
        NODE,
        &[
            "curl",
            "-sk",
            "-w",
            "\n%{http_code}",
            "-H",
            "Content-Type: application/json",
            "-d",
            &review.to_string(),
            &format!("https://{ip}/mutate"),
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

/// An AdmissionReview as the API server would send it, claiming the cluster's admin.
fn review(
    namespace: &str,
    resource: &str,
    sub_resource: Option<&str>,
    name: &str,
    object: Value,
) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "forged", "operation": "CREATE", "namespace": namespace, "name": name,
            "kind": {"group": "", "version": "v1", "kind": if sub_resource.is_some() { "Eviction" } else { "Pod" }},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "subResource": sub_resource,
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": object,
            "dryRun": false,
        },
    })
}

/// A pod posing as the API server: a forged eviction of a pod a CheckpointPolicy protects (its
/// node not cordoned) starts no migration, and a forged restore-from pod creates nothing; the
/// protected pod runs on untouched. With the client CA the handshake fails; without it the
/// answers are the webhook's, and change nothing.
#[tokio::test]
async fn a_pod_posing_as_the_api_server_gains_nothing() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "forged-review").await;
    protect(&client, &ns.name).await;
    let pod = run_pod(
        &client,
        &ns.name,
        labelled(counter_pod("protected", NODE, 1), &ns.name, true),
    )
    .await;

    let eviction = review(
        &ns.name,
        "pods",
        Some("eviction"),
        "protected",
        json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "protected", "namespace": ns.name}}),
    );
    let (code, body) = post_as_a_pod(&tb, &eviction).await;
    assert!(code == "000" || code == "200", "{code}: {body}");
    if code == "200" {
        assert!(body.contains("cordon node"), "{body}");
    }

    let restore = review(
        &ns.name,
        "pods",
        None,
        "thief",
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "thief", "namespace": ns.name,
                            "annotations": {RESTORE_FROM_ANNOTATION: "protected-checkpoint"}},
               "spec": {"containers": [{"name": "counter", "image": "busybox"}]}}),
    );
    let (code, body) = post_as_a_pod(&tb, &restore).await;
    assert!(code == "000" || code == "200", "{code}: {body}");

    // Whatever the answers were, nothing happened: give the controller time to act on them.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert!(
        eviction_migrations(&client, &ns.name, &pod)
            .await
            .is_empty()
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    let names: Vec<_> = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    assert_eq!(names, ["protected"]);
    assert_eq!(
        pods.items[0].metadata.uid, pod.metadata.uid,
        "the same pod, not a copy"
    );
}

/// A user who may create pods but not read checkpoints is refused a restore, by the webhook and
/// by the API server's own policy, which is installed, bound and type-checks clean.
#[tokio::test]
async fn a_user_without_get_on_the_checkpoint_is_refused_a_restore() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let policy = Api::<ValidatingAdmissionPolicy>::all(client.clone())
        .get(POLICY)
        .await
        .unwrap();
    let warnings = policy
        .status
        .and_then(|s| s.type_checking)
        .and_then(|t| t.expression_warnings)
        .unwrap_or_default();
    assert!(warnings.is_empty(), "{warnings:?}");
    Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
        .get(POLICY)
        .await
        .unwrap();

    let ns = TestNamespace::create(&tb, "restore-needs-get").await;
    grant(
        &client,
        &ns.name,
        "pods-only",
        "mallory",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "get"]}]),
    )
    .await;
    let mut pod = counter_pod("thief", NODE, 1);
    pod.metadata.annotations = Some(
        [(
            RESTORE_FROM_ANNOTATION.to_owned(),
            "someones-checkpoint".to_owned(),
        )]
        .into(),
    );
    let mallory = tb.client_as("mallory", &[], &[]).await;
    let refused = Api::<Pod>::namespaced(mallory, &ns.name)
        .create(&PostParams::default(), &pod)
        .await
        .expect_err("a restore without get on the checkpoint is refused");
    let kube::Error::Api(status) = refused else {
        panic!("{refused}");
    };
    assert_eq!(status.code, 403, "{status:?}");
    assert!(status.message.contains("may not get"), "{}", status.message);
}
