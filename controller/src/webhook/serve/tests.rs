use super::*;
use crate::fixtures::{DIGEST, apply, checkpoint, image};
use axum::body::Body;
use axum::http::Request;
use checkpointing::admin::Telemetry as _;
use checkpointing::crd::CheckpointState;
use checkpointing::names::{
    ARCH_ANNOTATION, RESTORE_FROM_ANNOTATION, RESTORED_FROM_DIGEST_ANNOTATION, RUNTIME_ANNOTATION,
    noded_lease_name,
};
use checkpointing::testing::FakeApi;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;
use tower::ServiceExt;

const SAR_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
const CC_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/namespaces/\
                       default/containercheckpoints/counter-checkpoint";
const CONTENT_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/namespaces/\
                            default/containercheckpointcontents/counter-checkpoint";
const UID: &str = "0c9a8d74-9cb7-44dd-b98e-09fd62def2f4";

/// An AdmissionReview as kube-apiserver posts it for `kubectl apply` of the seed's
/// restored pod (with a sidecar before `counter`); `from` sets the annotation.
fn review(from: Option<&str>) -> String {
    let mut annotations = json!({
        "kubectl.kubernetes.io/last-applied-configuration": "{}\n",
    });
    if let Some(from) = from {
        annotations[RESTORE_FROM_ANNOTATION] = json!(from);
    }
    json!({
        "kind": "AdmissionReview",
        "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": UID,
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "name": "restored-app",
            "namespace": "default",
            "operation": "CREATE",
            "userInfo": {
                "username": "alice",
                "uid": "u-1",
                "groups": ["devs", "system:authenticated"],
                "extra": {"scopes": ["a", "b"]},
            },
            "object": {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "name": "restored-app",
                    "namespace": "default",
                    "creationTimestamp": null,
                    "annotations": annotations,
                },
                "spec": {
                    "nodeSelector": {"kubernetes.io/hostname": "node2"},
                    "containers": [
                        {"name": "sidecar", "image": "nginx", "imagePullPolicy": "Always"},
                        {
                            "name": "counter",
                            "image": "busybox",
                            "command": ["/bin/sh", "-c"],
                            "args": ["sleep 1"],
                            "imagePullPolicy": "Always",
                        },
                    ],
                    "restartPolicy": "Always",
                    "dnsPolicy": "ClusterFirst",
                },
                "status": {},
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    })
    .to_string()
}

fn pod_of(review: &str) -> Pod {
    let review: Value = serde_json::from_str(review).unwrap();
    serde_json::from_value(review["request"]["object"].clone()).unwrap()
}

/// A fake API server where the SubjectAccessReview answers `allowed` and the checkpoint is
/// `cc` (absent when `None`).
fn cluster(allowed: bool, cc: Option<checkpointing::crd::ContainerCheckpoint>) -> FakeApi {
    let api = FakeApi::default();
    let reason = if allowed { "" } else { "no RBAC rule" };
    api.put(
        SAR_PATH,
        json!({"status": {"allowed": allowed, "reason": reason}}),
    );
    if let Some(cc) = cc {
        api.put(CC_PATH, cc);
    }
    api
}

fn hook(api: &FakeApi) -> Webhook {
    Webhook {
        client: api.client(),
        metrics: Arc::default(),
        checkpoints: CheckpointImages {
            port: 5050,
            repositories: Vec::new(),
        },
        leases: leases(&[
            ("node1", "containerd"),
            ("node2", "containerd"),
            ("node3", "cri-o"),
        ]),
        leases_listed: Arc::new(AtomicBool::new(true)),
        callers_authenticated: true,
    }
}

/// A store of live noded Leases on amd64, one per (node, runtime).
fn leases(nodes: &[(&str, &str)]) -> Store<Lease> {
    let (store, mut writer) = kube::runtime::reflector::store();
    for (node, runtime) in nodes {
        let mut lease = crate::fixtures::lease(&Timestamp::now().to_string());
        lease.metadata.name = Some(noded_lease_name(node));
        lease.metadata.annotations = Some(
            [
                (RUNTIME_ANNOTATION.to_owned(), (*runtime).to_owned()),
                (ARCH_ANNOTATION.to_owned(), "amd64".to_owned()),
            ]
            .into(),
        );
        writer.apply_watcher_event(&kube::runtime::watcher::Event::Apply(lease));
    }
    store
}

/// Posts `body` to the webhook in-process; status and parsed body.
async fn post(webhook: &Webhook, body: String) -> (StatusCode, Value) {
    let response = router(webhook.clone())
        .oneshot(
            Request::post(PATH)
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (status, value)
}

/// The JSON patch of a response (kube sends it as an array of bytes, which Go's
/// encoding/json reads into `[]byte` like base64).
fn patch_of(review: &Value) -> Value {
    let bytes: Vec<u8> = serde_json::from_value(review["response"]["patch"].clone()).unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn completed() -> checkpointing::crd::ContainerCheckpoint {
    checkpoint(Some(CheckpointState::Completed), "done")
}

#[tokio::test]
async fn pods_without_the_annotation_pass_untouched_without_lookups() {
    let api = cluster(true, Some(completed()));
    let webhook = hook(&api);
    let (status, body) = post(&webhook, review(None)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(body["kind"], "AdmissionReview");
    assert_eq!(body["response"]["uid"], UID);
    assert_eq!(body["response"]["allowed"], true);
    assert!(body["response"].get("patch").is_none(), "{body}");
    assert!(body["response"].get("patchType").is_none(), "{body}");
    assert!(api.take().is_empty(), "no API calls for an ordinary pod");
    assert!(webhook.metrics.render().contains(
        "checkpointing_controller_webhook_decisions_total{result=\"allowed\",reason=\"NoRestore\"} 1"
    ));
}

#[tokio::test]
async fn restore_is_admitted_with_a_patch_of_its_container_only() {
    let api = cluster(true, Some(completed()));
    let webhook = hook(&api);
    let body = review(Some("counter-checkpoint"));
    let (status, response) = post(&webhook, body.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(response["response"]["uid"], UID);
    assert_eq!(response["response"]["allowed"], true, "{response}");
    assert_eq!(response["response"]["patchType"], "JSONPatch");

    let pod = pod_of(&body);
    let patched = apply(&pod, &patch_of(&response));
    let containers = &patched.spec.as_ref().unwrap().containers;
    assert_eq!(containers[1].image.as_deref(), Some(image().as_str()));
    assert_eq!(containers[0], pod.spec.as_ref().unwrap().containers[0]);
    assert_eq!(
        patched.metadata.annotations.as_ref().unwrap()[RESTORED_FROM_DIGEST_ANNOTATION],
        DIGEST
    );

    // The access check asked about exactly this user and checkpoint; then its Content (for
    // its runtime) was read.
    let seen = api.take();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2].uri, CONTENT_PATH);
    assert_eq!(seen[0].method, "POST");
    assert!(seen[0].uri.starts_with(SAR_PATH), "{}", seen[0].uri);
    let spec = &seen[0].body.as_ref().unwrap()["spec"];
    assert_eq!(spec["user"], "alice");
    assert_eq!(spec["uid"], "u-1");
    assert_eq!(spec["groups"], json!(["devs", "system:authenticated"]));
    assert_eq!(spec["extra"], json!({"scopes": ["a", "b"]}));
    assert_eq!(
        spec["resourceAttributes"],
        json!({
            "verb": "get",
            "group": "checkpointing.zacchaeuschok.github.io",
            "resource": "containercheckpoints",
            "namespace": "default",
            "name": "counter-checkpoint",
        })
    );
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].uri, CC_PATH);
    assert!(webhook.metrics.render().contains(
        "checkpointing_controller_webhook_decisions_total{result=\"patched\",reason=\"Restored\"} 1"
    ));
}

#[tokio::test]
async fn user_without_read_access_is_denied_without_reading_the_checkpoint() {
    let api = cluster(false, Some(completed()));
    let webhook = hook(&api);
    let (status, response) = post(&webhook, review(Some("counter-checkpoint"))).await;
    assert_eq!(status, StatusCode::OK);
    let response = &response["response"];
    assert_eq!(response["uid"], UID);
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    assert_eq!(response["status"]["reason"], "Forbidden");
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "user \"alice\" may not get ContainerCheckpoint \"counter-checkpoint\" in \
             namespace \"default\" (no RBAC rule)"
        ),
        "{message}"
    );
    assert!(response.get("patch").is_none());
    let seen = api.take();
    // The access checks for both kinds of checkpoint, and no read of either.
    let resources: Vec<_> = seen
        .iter()
        .map(|s| s.body.as_ref().unwrap()["spec"]["resourceAttributes"]["resource"].clone())
        .collect();
    assert_eq!(
        resources,
        [json!("containercheckpoints"), json!("podcheckpoints")],
        "{seen:?}"
    );
    assert!(webhook.metrics.render().contains(
        "checkpointing_controller_webhook_decisions_total{result=\"denied\",reason=\"Forbidden\"} 1"
    ));
}

#[tokio::test]
async fn bad_restores_are_denied_with_their_message() {
    let cases = [
        (
            Some(completed()),
            "other/counter-checkpoint",
            "OtherNamespace",
            "in namespace \"other\", but a pod can only restore",
        ),
        (
            Some(completed()),
            "Bad_Name",
            "InvalidReference",
            "not a valid ContainerCheckpoint name",
        ),
        (
            None,
            "counter-checkpoint",
            "NotFound",
            "not found in namespace \"default\"",
        ),
        (
            Some(checkpoint(Some(CheckpointState::Failed), "boom")),
            "counter-checkpoint",
            "NotCompleted",
            "is Failed, not Completed (boom)",
        ),
    ];
    for (cc, from, reason, says) in cases {
        let webhook = hook(&cluster(true, cc));
        let (_, response) = post(&webhook, review(Some(from))).await;
        let response = &response["response"];
        assert_eq!(response["uid"], UID);
        assert_eq!(response["allowed"], false, "{from}");
        assert_eq!(response["status"]["reason"], "BadRequest", "{response}");
        assert_eq!(response["status"]["code"], 400);
        let message = response["status"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message}");
        let counted = format!(
            "checkpointing_controller_webhook_decisions_total{{result=\"denied\",reason=\"{reason}\"}} 1"
        );
        assert!(webhook.metrics.render().contains(&counted), "{counted}");
    }

    // API errors deny, saying so, rather than let the pod start un-restored.
    let api = cluster(true, None);
    api.fail_writes(SAR_PATH, 500, "InternalError");
    let (_, response) = post(&hook(&api), review(Some("counter-checkpoint"))).await;
    let status = &response["response"]["status"];
    assert_eq!(status["reason"], "ServiceUnavailable");
    assert_eq!(status["code"], 503);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .starts_with("could not check whether user \"alice\" may get"),
        "{status}"
    );
}

#[tokio::test]
async fn unreadable_requests_are_bad_requests() {
    let webhook = hook(&FakeApi::default());
    let (status, _) = post(&webhook, "{".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = post(
        &webhook,
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1"}).to_string(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn other_operations_and_kinds_pass() {
    let webhook = hook(&FakeApi::default());
    let mut update: Value = serde_json::from_str(&review(Some("x"))).unwrap();
    update["request"]["operation"] = json!("UPDATE");
    let (_, response) = post(&webhook, update.to_string()).await;
    assert_eq!(response["response"]["allowed"], true);
    assert!(response["response"].get("patch").is_none());
}

#[tokio::test]
async fn serves_admission_reviews_over_tls() {
    let api = cluster(true, Some(completed()));
    let (addr, certs) = crate::tls::tests::serve(router(hook(&api)), None).await;
    let stream = crate::tls::tests::connect(addr, &certs.ca_der, crate::tls::tests::DNS, None)
        .await
        .unwrap();
    let response =
        crate::tls::tests::http(stream, "POST", PATH, &review(Some("counter-checkpoint"))).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.contains("content-type: application/json"),
        "{response}"
    );
    let body: Value = serde_json::from_str(response.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["response"]["uid"], UID);
    assert_eq!(body["response"]["allowed"], true);
    assert_eq!(patch_of(&body)[0]["value"], image());
}

#[tokio::test]
async fn a_checkpoint_image_without_restore_from_is_forbidden_without_lookups() {
    let api = cluster(true, Some(completed()));
    let webhook = hook(&api);
    let mut create: Value = serde_json::from_str(&review(None)).unwrap();
    create["request"]["object"]["spec"]["containers"][1]["image"] =
        json!("127.0.0.1:5050/other-namespace/their-checkpoint@sha256:00");
    let (status, response) = post(&webhook, create.to_string()).await;
    assert_eq!(status, StatusCode::OK);
    let response = &response["response"];
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 403);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("container \"counter\"") && message.contains("restore-from"),
        "{message}"
    );
    assert!(api.take().is_empty(), "nothing looked up");
    assert!(webhook.metrics.render().contains(
        "checkpointing_controller_webhook_decisions_total{result=\"denied\",reason=\"CheckpointImage\"} 1"
    ));
}

#[tokio::test]
async fn an_update_may_keep_but_not_add_checkpoint_images() {
    let webhook = hook(&FakeApi::default());
    let mut update: Value = serde_json::from_str(&review(Some("counter-checkpoint"))).unwrap();
    update["request"]["operation"] = json!("UPDATE");
    update["request"]["object"]["spec"]["containers"][1]["image"] = json!(image());
    update["request"]["oldObject"] = update["request"]["object"].clone();
    let (_, kept) = post(&webhook, update.to_string()).await;
    assert_eq!(kept["response"]["allowed"], true, "{kept}");

    // kubectl debug: an ephemeral container through the subresource.
    update["request"]["subResource"] = json!("ephemeralcontainers");
    update["request"]["object"]["spec"]["ephemeralContainers"] =
        json!([{"name": "debugger", "image": "LOCALHOST:5050/default/counter-checkpoint"}]);
    let (_, added) = post(&webhook, update.to_string()).await;
    assert_eq!(added["response"]["allowed"], false, "{added}");
    let message = added["response"]["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("ephemeral container \"debugger\""),
        "{message}"
    );
}

#[tokio::test]
async fn a_forged_restored_from_marker_is_removed() {
    let webhook = hook(&FakeApi::default());
    let mut create: Value = serde_json::from_str(&review(None)).unwrap();
    create["request"]["object"]["metadata"]["annotations"][RESTORED_FROM_DIGEST_ANNOTATION] =
        json!(DIGEST);
    let (_, response) = post(&webhook, create.to_string()).await;
    assert_eq!(response["response"]["allowed"], true, "{response}");
    let patch = patch_of(&response);
    assert_eq!(patch.as_array().unwrap().len(), 1, "{patch}");
    assert_eq!(patch[0]["op"], "remove", "{patch}");
}

/// `completed()` as taken on node1 by containerd (its Content says so).
fn taken_by_containerd(api: &FakeApi) {
    let mut cc = completed();
    cc.status.as_mut().unwrap().node_name = Some("node1".into());
    api.put(CC_PATH, cc);
    api.put(
        CONTENT_PATH,
        json!({
            "apiVersion": "checkpointing.zacchaeuschok.github.io/v1alpha1",
            "kind": "ContainerCheckpointContent",
            "metadata": {"name": "counter-checkpoint", "namespace": "default"},
            "spec": {
                "containerCheckpointRef": "counter-checkpoint", "namespace": "default",
                "podName": "stateful-app", "containerName": "counter", "nodeName": "node1",
                "podUID": "uid",
            },
            "status": {"runtime": "containerd v2.3.7"},
        }),
    );
}

#[tokio::test]
async fn a_restore_is_required_onto_the_nodes_that_can_restore_it() {
    let api = cluster(true, None);
    taken_by_containerd(&api);
    let mut create: Value = serde_json::from_str(&review(Some("counter-checkpoint"))).unwrap();
    // Not pinned by hostname: any node that can.
    create["request"]["object"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("nodeSelector");
    let body = create.to_string();
    let (_, response) = post(&hook(&api), body.clone()).await;
    assert_eq!(response["response"]["allowed"], true, "{response}");
    let patched = apply(&pod_of(&body), &patch_of(&response));
    let affinity = patched.spec.unwrap().affinity.unwrap();
    let terms = affinity
        .node_affinity
        .unwrap()
        .required_during_scheduling_ignored_during_execution
        .unwrap()
        .node_selector_terms;
    // One term a node: the API server takes one value per node field selector.
    let nodes: Vec<_> = terms
        .iter()
        .map(|t| {
            let fields = t.match_fields.as_ref().unwrap();
            assert_eq!(fields.len(), 1, "{fields:?}");
            assert_eq!(fields[0].key, "metadata.name");
            assert_eq!(fields[0].operator, "In");
            fields[0].values.clone().unwrap()
        })
        .collect();
    assert_eq!(nodes, [["node1"], ["node2"]], "node3 runs cri-o");
}

#[tokio::test]
async fn a_restore_bound_to_a_node_that_cannot_restore_it_is_denied_with_the_reason() {
    let api = cluster(true, None);
    taken_by_containerd(&api);
    let mut create: Value = serde_json::from_str(&review(Some("counter-checkpoint"))).unwrap();
    create["request"]["object"]["spec"]["nodeName"] = json!("node3");
    let webhook = hook(&api);
    let (_, response) = post(&webhook, create.to_string()).await;
    let response = &response["response"];
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 400);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("node3 runs cri-o (checkpoint from containerd)")
            && message.contains("node1, node2"),
        "{message}"
    );
    assert!(webhook.metrics.render().contains(
        "checkpointing_controller_webhook_decisions_total{result=\"denied\",reason=\"Unplaceable\"} 1"
    ));

    // Bound to a node that can: admitted, and no affinity is added.
    create["request"]["object"]["spec"]["nodeName"] = json!("node2");
    let (_, response) = post(&webhook, create.to_string()).await;
    assert_eq!(response["response"]["allowed"], true, "{response}");
    let patch = patch_of(&response);
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .all(|op| op["path"] != "/spec/affinity"),
        "{patch}"
    );
}

#[tokio::test]
async fn a_restore_before_the_leases_are_listed_is_refused_for_now() {
    let api = cluster(true, Some(completed()));
    let webhook = Webhook {
        leases_listed: Arc::default(),
        ..hook(&api)
    };
    let (_, response) = post(&webhook, review(Some("counter-checkpoint"))).await;
    let status = &response["response"]["status"];
    assert_eq!(status["code"], 503, "{response}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("create the pod again"),
        "{status}"
    );
}
