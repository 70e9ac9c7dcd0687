//! The restore admission webhook's shell: the HTTPS endpoint the API server calls on every pod
//! CREATE, the look-ups a decision needs (a SubjectAccessReview, the ContainerCheckpoint), and
//! the `MutatingWebhookConfiguration` that registers it. The decision itself is
//! [`crate::admission`].

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use checkpointing::crd::ContainerCheckpoint;
use checkpointing::names::{CONTROLLER_MANAGER, GROUP, RESTORE_FROM_ANNOTATION};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, RuleWithOperations, ServiceReference,
    WebhookClientConfig,
};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta,
};
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::{Api, Client};
use serde_json::Value;
use tracing::{info, warn};

use crate::admin::Metrics;
use crate::admission::{self, Access, CHECKPOINT_RESOURCE, Denial, Restore};
use crate::backoff::backoff;
use crate::kube_error::cause;

/// Name of the `MutatingWebhookConfiguration` the controller keeps.
pub const CONFIGURATION_NAME: &str = "checkpointing-restore";
/// Name of its one webhook (the API server names it in every denial).
pub const WEBHOOK_NAME: &str = "restore.checkpointing.zacchaeuschok.github.io";
/// Path the API server posts AdmissionReviews to.
pub const PATH: &str = "/mutate";
/// Default Service name in front of the controller's webhook port.
pub const DEFAULT_SERVICE_NAME: &str = "checkpoint-controller-webhook";

/// How long the API server waits for an answer.
const TIMEOUT_SECONDS: i32 = 5;
/// How long our look-ups may take: under [`TIMEOUT_SECONDS`], so a slow API server yields our
/// clear denial rather than the API server's timeout (which `Ignore` would turn into an
/// un-restored pod).
const LOOKUP_BUDGET: Duration = Duration::from_secs(4);
/// How often the registration is applied again once it succeeded.
const REAPPLY: Duration = Duration::from_secs(300);
/// Largest AdmissionReview accepted (a pod is far smaller; the API server caps objects at 3 MiB).
const MAX_BODY: usize = 8 << 20;

/// Where the API server reaches the webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// An `https://` URL, e.g. when the controller runs outside the cluster.
    Url(String),
    /// A Service in front of the controller's pods; the path is [`PATH`].
    Service { namespace: String, name: String },
}

/// The webhook registration: pod CREATE only, scoped and failing open so that a controller
/// outage never blocks ordinary pods.
pub fn configuration(endpoint: &Endpoint, ca_pem: &str) -> MutatingWebhookConfiguration {
    let (url, service) = match endpoint {
        Endpoint::Url(url) => (Some(url.clone()), None),
        Endpoint::Service { namespace, name } => (
            None,
            Some(ServiceReference {
                namespace: namespace.clone(),
                name: name.clone(),
                path: Some(PATH.to_owned()),
                port: None,
            }),
        ),
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some(CONFIGURATION_NAME.to_owned()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_owned(),
                    CONTROLLER_MANAGER.to_owned(),
                )]
                .into(),
            ),
            ..ObjectMeta::default()
        },
        webhooks: Some(vec![MutatingWebhook {
            name: WEBHOOK_NAME.to_owned(),
            admission_review_versions: vec!["v1".to_owned()],
            client_config: WebhookClientConfig {
                ca_bundle: Some(ByteString(ca_pem.as_bytes().to_vec())),
                service,
                url,
            },
            // Ignore, not Fail: every pod CREATE in the cluster passes through here, and a
            // controller that is down, restarting or unreachable must never stop ordinary pods
            // from being created. The price: a restore pod created while the webhook cannot
            // answer starts un-restored, from its own image (it carries no
            // restored-from-digest annotation, which tells it apart).
            failure_policy: Some("Ignore".to_owned()),
            match_policy: Some("Equivalent".to_owned()),
            // Leaves kube-system alone where namespaces carry their name as a label (Kubernetes
            // 1.21 and later label every namespace so; before, only where someone did).
            namespace_selector: Some(LabelSelector {
                match_expressions: Some(vec![LabelSelectorRequirement {
                    key: "kubernetes.io/metadata.name".to_owned(),
                    operator: "NotIn".to_owned(),
                    values: Some(vec!["kube-system".to_owned()]),
                }]),
                match_labels: None,
            }),
            object_selector: None,
            reinvocation_policy: Some("Never".to_owned()),
            rules: Some(vec![RuleWithOperations {
                api_groups: Some(vec![String::new()]),
                api_versions: Some(vec!["v1".to_owned()]),
                operations: Some(vec!["CREATE".to_owned()]),
                resources: Some(vec!["pods".to_owned()]),
                scope: Some("Namespaced".to_owned()),
            }]),
            side_effects: "None".to_owned(),
            timeout_seconds: Some(TIMEOUT_SECONDS),
            match_conditions: None,
        }]),
    }
}

/// Keeps the registration applied (server-side apply): retried with backoff until it succeeds,
/// then re-applied every [`REAPPLY`], so a deleted or edited configuration (or a caBundle from an
/// earlier run) is put right. Runs until aborted.
pub async fn register(client: Client, configuration: MutatingWebhookConfiguration) {
    let api: Api<MutatingWebhookConfiguration> = Api::all(client);
    let mut failures = 0;
    let mut registered = false;
    loop {
        let wait = match apply_configuration(&api, &configuration).await {
            Ok(()) => {
                if !registered {
                    info!(
                        name = CONFIGURATION_NAME,
                        "registered the restore admission webhook"
                    );
                }
                (registered, failures) = (true, 0);
                REAPPLY
            }
            Err(error) => {
                failures += 1;
                let retry = backoff(failures);
                warn!(
                    error = %cause(&error),
                    name = CONFIGURATION_NAME,
                    retry_secs = retry.as_secs(),
                    "registering the restore admission webhook failed"
                );
                retry
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// One server-side apply of the registration.
async fn apply_configuration(
    api: &Api<MutatingWebhookConfiguration>,
    configuration: &MutatingWebhookConfiguration,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(CONTROLLER_MANAGER).force();
    api.patch(CONFIGURATION_NAME, &params, &Patch::Apply(configuration))
        .await
        .map(drop)
}

/// What the endpoint needs.
#[derive(Clone)]
pub struct Webhook {
    pub client: Client,
    pub metrics: Arc<Metrics>,
}

pub fn router(webhook: Webhook) -> Router {
    Router::new()
        .route(PATH, post(mutate))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(webhook)
}

/// What became of one pod.
#[derive(Debug)]
enum Verdict {
    /// Not a restore: admitted unchanged.
    Pass,
    Restore(Restore),
    Deny(Denial),
}

async fn mutate(State(webhook): State<Webhook>, body: Bytes) -> Response {
    let request = match serde_json::from_slice::<AdmissionReview<DynamicObject>>(&body)
        .map_err(|e| e.to_string())
        .and_then(|review| {
            let request: Result<AdmissionRequest<DynamicObject>, _> = review.try_into();
            request.map_err(|e| e.to_string())
        }) {
        Ok(request) => request,
        Err(error) => {
            warn!(%error, "unreadable AdmissionReview");
            return (
                StatusCode::BAD_REQUEST,
                format!("not an AdmissionReview with a request: {error}\n"),
            )
                .into_response();
        }
    };
    let verdict = admit(&webhook.client, &request).await;
    let pod = request.name.as_str();
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let user = request.user_info.username.as_deref().unwrap_or_default();
    let mut response = AdmissionResponse::from(&request);
    match verdict {
        Verdict::Pass => webhook.metrics.admitted("allowed", "NoRestore"),
        Verdict::Restore(restore) => {
            response = match with_patch(response, restore.patch) {
                Ok(patched) => patched,
                Err(error) => {
                    warn!(%error, "building the admission patch failed");
                    return (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n"))
                        .into_response();
                }
            };
            info!(
                pod, namespace, user,
                container = %restore.container,
                image = %restore.image,
                "admitted a restore"
            );
            webhook.metrics.admitted("patched", "Restored");
        }
        Verdict::Deny(denial) => {
            info!(
                pod, namespace, user,
                reason = denial.reason(),
                denial = %denial,
                "denied a restore"
            );
            webhook.metrics.admitted("denied", denial.reason());
            // Standard reasons only: clients act on them (IsNotFound, IsForbidden…); the
            // message and the metrics carry ours.
            let (code, reason) = match denial {
                Denial::Forbidden { .. } => (403, "Forbidden"),
                Denial::AccessCheckFailed { .. } | Denial::LookupFailed { .. } => {
                    (503, "ServiceUnavailable")
                }
                _ => (400, "BadRequest"),
            };
            response = response.deny(&denial);
            response.result.code = code;
            response.result.reason = reason.to_owned();
        }
    }
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// `response` with the JSON patch `patch` (an array of operations, as
/// [`admission::decide`] makes it).
fn with_patch(response: AdmissionResponse, patch: Value) -> Result<AdmissionResponse, String> {
    let patch = serde_json::from_value(patch).map_err(|e| format!("invalid JSON patch: {e}"))?;
    response.with_patch(patch).map_err(|e| e.to_string())
}

/// Decides one request: the look-ups, then [`admission::decide`].
async fn admit(client: &Client, request: &AdmissionRequest<DynamicObject>) -> Verdict {
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let Some(object) = request
        .object
        .as_ref()
        .filter(|_| is_pod && request.operation == Operation::Create)
    else {
        return Verdict::Pass;
    };
    let asks_restore = object
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(RESTORE_FROM_ANNOTATION));
    let pod: Pod = match object.clone().try_parse() {
        Ok(pod) => pod,
        // Only a restore pod is worth refusing: anything else goes through untouched.
        Err(_) if !asks_restore => return Verdict::Pass,
        Err(error) => {
            return Verdict::Deny(Denial::UnreadablePod {
                error: error.to_string(),
            });
        }
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    let name = match admission::requested(&pod, &namespace) {
        Ok(Some(name)) => name,
        Ok(None) => return Verdict::Pass,
        Err(denial) => return Verdict::Deny(denial),
    };
    let user = request.user_info.username.clone().unwrap_or_default();
    let looked_up = tokio::time::timeout(
        LOOKUP_BUDGET,
        look_up(client, &request.user_info, &namespace, &name),
    )
    .await
    .unwrap_or_else(|_| {
        Err(Denial::LookupFailed {
            name: name.clone(),
            namespace: namespace.clone(),
            error: format!("no answer from the API server within {LOOKUP_BUDGET:?}"),
        })
    });
    let (access, checkpoint) = match looked_up {
        Ok(found) => found,
        Err(denial) => return Verdict::Deny(denial),
    };
    match admission::decide(&pod, &namespace, &name, &user, &access, checkpoint.as_ref()) {
        Ok(restore) => Verdict::Restore(restore),
        Err(denial) => Verdict::Deny(denial),
    }
}

/// Whether the user may read the checkpoint and, only if so, the checkpoint.
async fn look_up(
    client: &Client,
    user: &UserInfo,
    namespace: &str,
    name: &str,
) -> Result<(Access, Option<ContainerCheckpoint>), Denial> {
    let review = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SubjectAccessReviewSpec {
            user: user.username.clone(),
            groups: user.groups.clone(),
            uid: user.uid.clone(),
            extra: user.extra.clone(),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("get".to_owned()),
                group: Some(GROUP.to_owned()),
                resource: Some(CHECKPOINT_RESOURCE.to_owned()),
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ResourceAttributes::default()
            }),
            non_resource_attributes: None,
        },
        status: None,
    };
    let reviewed = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .map_err(|error| Denial::AccessCheckFailed {
            user: user.username.clone().unwrap_or_default(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            error: cause(&error),
        })?;
    let status = reviewed.status.unwrap_or_default();
    let access = Access {
        allowed: status.allowed && status.denied != Some(true),
        reason: [status.reason, status.evaluation_error]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    };
    if !access.allowed {
        return Ok((access, None));
    }
    let checkpoint = Api::<ContainerCheckpoint>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|error| Denial::LookupFailed {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            error: cause(&error),
        })?;
    Ok((access, checkpoint))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::tests::{DIGEST, apply, checkpoint, image};
    use axum::body::Body;
    use axum::http::Request;
    use checkpointing::crd::CheckpointState;
    use checkpointing::names::RESTORED_FROM_DIGEST_ANNOTATION;
    use checkpointing::testing::FakeApi;
    use serde_json::json;
    use tower::ServiceExt;

    const SAR_PATH: &str = "/apis/authorization.k8s.io/v1/subjectaccessreviews";
    const CC_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/namespaces/\
                           default/containercheckpoints/counter-checkpoint";
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
        }
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
        assert!(
            webhook.metrics.render().contains(
                "checkpoint_controller_webhook_decisions_total{result=\"allowed\",reason=\"NoRestore\"} 1"
            )
        );
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

        // The access check asked about exactly this user and checkpoint.
        let seen = api.take();
        assert_eq!(seen.len(), 2, "{seen:?}");
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
        assert!(
            webhook.metrics.render().contains(
                "checkpoint_controller_webhook_decisions_total{result=\"patched\",reason=\"Restored\"} 1"
            )
        );
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
        assert_eq!(seen.len(), 1, "only the access check: {seen:?}");
        assert!(
            webhook.metrics.render().contains(
                "checkpoint_controller_webhook_decisions_total{result=\"denied\",reason=\"Forbidden\"} 1"
            )
        );
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
                "checkpoint_controller_webhook_decisions_total{{result=\"denied\",reason=\"{reason}\"}} 1"
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
        let (addr, certs) = crate::tls::tests::serve(router(hook(&api))).await;
        let stream = crate::tls::tests::connect(addr, &certs.ca_der, crate::tls::tests::DNS)
            .await
            .unwrap();
        let response =
            crate::tls::tests::http(stream, "POST", PATH, &review(Some("counter-checkpoint")))
                .await;
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

    #[test]
    fn registration_fails_open_for_pod_creates_only() {
        let config = configuration(
            &Endpoint::Url("https://10.77.0.1:8443/mutate".into()),
            "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n",
        );
        let json = serde_json::to_value(&config).unwrap();
        assert_eq!(json["apiVersion"], "admissionregistration.k8s.io/v1");
        assert_eq!(json["kind"], "MutatingWebhookConfiguration");
        assert_eq!(json["metadata"]["name"], "checkpointing-restore");
        let hook = &json["webhooks"][0];
        assert_eq!(hook["name"], WEBHOOK_NAME);
        assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
        assert_eq!(hook["failurePolicy"], "Ignore");
        assert_eq!(hook["sideEffects"], "None");
        assert_eq!(hook["timeoutSeconds"], 5);
        assert_eq!(
            hook["rules"],
            json!([{
                "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
                "resources": ["pods"], "scope": "Namespaced",
            }])
        );
        assert_eq!(
            hook["namespaceSelector"]["matchExpressions"][0]["values"],
            json!(["kube-system"])
        );
        assert!(hook.get("matchConditions").is_none());
        assert_eq!(hook["clientConfig"]["url"], "https://10.77.0.1:8443/mutate");
        assert!(hook["clientConfig"].get("service").is_none());
        // caBundle is base64 of the PEM.
        assert_eq!(
            hook["clientConfig"]["caBundle"],
            "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCngKLS0tLS1FTkQgQ0VSVElGSUNBVEUtLS0tLQo="
        );

        let config = configuration(
            &Endpoint::Service {
                namespace: "checkpointing".into(),
                name: "checkpoint-controller-webhook".into(),
            },
            "pem",
        );
        let client = serde_json::to_value(&config.webhooks.unwrap()[0].client_config).unwrap();
        assert_eq!(
            client["service"],
            json!({
                "namespace": "checkpointing",
                "name": "checkpoint-controller-webhook",
                "path": "/mutate",
            })
        );
        assert!(client.get("url").is_none());
    }

    #[tokio::test]
    async fn registration_is_applied_by_the_controller() {
        let api = FakeApi::default();
        let config = configuration(&Endpoint::Url("https://h/mutate".into()), "pem");
        apply_configuration(&Api::all(api.client()), &config)
            .await
            .unwrap();
        let seen = api.take();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].method, "PATCH");
        assert_eq!(
            seen[0].uri,
            "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/\
             checkpointing-restore?&force=true&fieldManager=checkpoint-controller"
        );
        assert_eq!(
            seen[0].content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
    }
}
