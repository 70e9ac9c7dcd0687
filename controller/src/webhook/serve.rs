//! Serving the restore admission webhook (every replica): the HTTPS endpoint the API server
//! calls for the pods its registration matches and the look-ups a decision needs (a
//! SubjectAccessReview, the checkpoint and its Content, the node daemons' Leases; for a
//! workload's new pod, the namespace's PodMigrations and the workload). The decisions
//! themselves are [`super::admission`], [`super::eligible`], [`super::replacement`] and
//! [`super::workload`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use checkpointing::crd::{ContainerCheckpoint, PodCheckpoint, PodMigration};
use checkpointing::names::GROUP;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{ListParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::runtime::reflector::Store;
use kube::{Api, Client};
use serde_json::Value;
use tracing::{info, warn};

use super::admission::{
    self, Access, CHECKPOINT_RESOURCE, Denial, POD_CHECKPOINT_RESOURCE, Restore, Source,
};
use super::eligible::Asked;
use super::guard::{self, CheckpointImages};
use super::{LOOKUP_BUDGET, evict, replacement, workload};
use crate::kube_error::cause;
use crate::metrics::Metrics;
use placement::{placement, set_affinity};

/// Path the API server posts AdmissionReviews to.
pub const PATH: &str = "/mutate";
/// Largest AdmissionReview accepted (a pod is far smaller; the API server caps objects at 3 MiB).
const MAX_BODY: usize = 8 << 20;

/// What the endpoint needs.
#[derive(Clone)]
pub struct Webhook {
    pub client: Client,
    pub metrics: Arc<Metrics>,
    /// Port of the node-local checkpoint registry: images naming it are checkpoint images.
    pub checkpoints: CheckpointImages,
    /// The node daemons' Leases as the controller's watch keeps them, and whether it has
    /// listed them all: where a checkpoint can be restored.
    pub leases: Store<Lease>,
    pub leases_listed: Arc<AtomicBool>,
    /// Whether every caller showed the API server's client certificate (a client CA is set):
    /// only then may any eviction review start a migration or checkpoint.
    pub callers_authenticated: bool,
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
    /// Not a restore, admitted with the user's change to the restored-from marker undone.
    ResetMarker(Vec<Value>),
    Deny(Denial),
}

async fn mutate(State(webhook): State<Webhook>, body: Bytes) -> Response {
    let request = match read_review(&body) {
        Ok(request) => request,
        Err(refused) => return *refused,
    };
    if request.sub_resource.as_deref() == Some("eviction") {
        return answer(
            evict::evict(
                &webhook.client,
                &webhook.metrics,
                &request,
                webhook.callers_authenticated,
            )
            .await,
        );
    }
    let verdict = admit(&webhook, &request).await;
    let pod = request.name.as_str();
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let user = request.user_info.username.as_deref().unwrap_or_default();
    let mut response = AdmissionResponse::from(&request);
    match verdict {
        Verdict::Pass => webhook.metrics.admitted("allowed", "NoRestore"),
        Verdict::ResetMarker(ops) => {
            response = match with_patch(response, Value::Array(ops)) {
                Ok(patched) => patched,
                Err(failed) => return *failed,
            };
            info!(
                pod,
                namespace, user, "undid a change to the restored-from marker"
            );
            webhook.metrics.admitted("patched", "MarkerReset");
        }
        Verdict::Restore(restore) => {
            response = match with_patch(response, restore.patch) {
                Ok(patched) => patched,
                Err(failed) => return *failed,
            };
            info!(
                pod, namespace, user,
                containers = ?restore.containers,
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
                Denial::Forbidden { .. }
                | Denial::CheckpointImage(_)
                | Denial::ForeignImage { .. } => (403, "Forbidden"),
                Denial::AccessCheckFailed { .. }
                | Denial::LookupFailed { .. }
                | Denial::LeasesNotListed => (503, "ServiceUnavailable"),
                _ => (400, "BadRequest"),
            };
            response = response.deny(&denial);
            response.result.code = code;
            response.result.reason = reason.to_owned();
        }
    }
    answer(response)
}

/// The request of the AdmissionReview in `body`, or the 400 answer, logged.
fn read_review(body: &[u8]) -> Result<AdmissionRequest<DynamicObject>, Box<Response>> {
    serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
        .map_err(|e| e.to_string())
        .and_then(|review| {
            review
                .try_into()
                .map_err(|e: kube::core::admission::ConvertAdmissionReviewError| e.to_string())
        })
        .map_err(|error| {
            warn!(%error, "unreadable AdmissionReview");
            Box::new(
                (
                    StatusCode::BAD_REQUEST,
                    format!("not an AdmissionReview with a request: {error}\n"),
                )
                    .into_response(),
            )
        })
}

/// `response` as the AdmissionReview the API server reads.
fn answer(response: AdmissionResponse) -> Response {
    match serde_json::to_vec(&response.into_review()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response(),
    }
}

/// `response` with the JSON patch `patch` (an array of operations, as [`admission::decide`]
/// or [`guard::marker_reset`] make it), or the 500 answer, logged, if it cannot be built.
fn with_patch(
    response: AdmissionResponse,
    patch: Value,
) -> Result<AdmissionResponse, Box<Response>> {
    serde_json::from_value(patch)
        .map_err(|e| format!("invalid JSON patch: {e}"))
        .and_then(|patch| response.with_patch(patch).map_err(|e| e.to_string()))
        .map_err(|error| {
            warn!(%error, "building the admission patch failed");
            Box::new((StatusCode::INTERNAL_SERVER_ERROR, format!("{error}\n")).into_response())
        })
}

/// Decides one request: no checkpoint image the webhook did not write, then (on create) the
/// restore's look-ups and [`admission::decide`], and no user change to the restored-from
/// marker.
async fn admit(webhook: &Webhook, request: &AdmissionRequest<DynamicObject>) -> Verdict {
    let is_pod = request.kind.group.is_empty() && request.kind.kind == "Pod";
    let creating = request.operation == Operation::Create;
    let Some(object) = request
        .object
        .as_ref()
        .filter(|_| is_pod && (creating || request.operation == Operation::Update))
    else {
        return Verdict::Pass;
    };
    // Fail closed: the registration sends only pods that carry our annotations or checkpoint
    // images, and one of those that cannot be read cannot be checked.
    let parse = |object: &DynamicObject| {
        object
            .clone()
            .try_parse::<Pod>()
            .map_err(|error| Denial::UnreadablePod {
                error: error.to_string(),
            })
    };
    let pod = match parse(object) {
        Ok(pod) => pod,
        Err(denial) => return Verdict::Deny(denial),
    };
    let old = match request.old_object.as_ref().map(parse).transpose() {
        Ok(old) => old,
        Err(denial) => return Verdict::Deny(denial),
    };
    let namespace = request
        .namespace
        .clone()
        .or_else(|| pod.metadata.namespace.clone())
        .unwrap_or_default();
    // A restore is decided when the pod is created; later updates only keep its images.
    let restore = if creating {
        match admission::requested(&pod, &namespace) {
            Ok(Some(name)) => match restore(webhook, request, &pod, &namespace, name).await {
                Ok(restore) => Some(restore),
                Err(denial) => return Verdict::Deny(denial),
            },
            Ok(None) => match replacement(webhook, request, &pod, &namespace).await {
                Ok(restore) => restore,
                Err(denial) => return Verdict::Deny(denial),
            },
            Err(denial) => return Verdict::Deny(denial),
        }
    } else {
        None
    };
    let restored: Vec<&str> = restore
        .iter()
        .flat_map(|r| r.containers.iter().map(|(c, _)| c.as_str()))
        .collect();
    if let Some(found) = guard::smuggled(&pod, old.as_ref(), &restored, &webhook.checkpoints) {
        return Verdict::Deny(Denial::CheckpointImage(found));
    }
    match restore {
        Some(restore) => Verdict::Restore(restore),
        // The ephemeral-containers subresource cannot change annotations.
        None if request.sub_resource.is_some() => Verdict::Pass,
        None => match guard::marker_reset(&pod, old.as_ref()) {
            ops if ops.is_empty() => Verdict::Pass,
            ops => Verdict::ResetMarker(ops),
        },
    }
}

/// The look-ups of a restore from checkpoint `name`, then [`admission::decide`].
async fn restore(
    webhook: &Webhook,
    request: &AdmissionRequest<DynamicObject>,
    pod: &Pod,
    namespace: &str,
    name: String,
) -> Result<Restore, Denial> {
    let reader = admission::reader(&request.user_info, pod, namespace);
    let user = reader.username.clone().unwrap_or_default();
    let lookup = look_up(&webhook.client, &reader, namespace, &name);
    let (access, source) = within_budget(&name, namespace, lookup).await?;
    let mut restore = admission::decide(
        pod,
        namespace,
        &name,
        &user,
        &access,
        source.as_ref(),
        &webhook.checkpoints,
    )?;
    let asked = Asked::of(pod.spec.as_ref());
    if let Some(source) = &source
        && let Some(affinity) = placement(webhook, namespace, source, asked).await?
        && let Value::Array(ops) = &mut restore.patch
    {
        ops.push(set_affinity(&affinity));
    }
    Ok(restore)
}

/// A workload's new pod that replaces a migrating one becomes its restore; any other pod is
/// left alone. The PodMigration's author was checked when it was created (exec into and
/// delete the pod); the pod must be its workload's own ([`workload::genuine`]), not one a
/// tenant gave the owner reference. A look-up that fails leaves the pod alone: this
/// registration fails open, and the migration says its pod started afresh.
async fn replacement(
    webhook: &Webhook,
    request: &AdmissionRequest<DynamicObject>,
    pod: &Pod,
    namespace: &str,
) -> Result<Option<Restore>, Denial> {
    let client = &webhook.client;
    if workload::controller_of(pod).is_none() {
        return Ok(None);
    }
    let migrations = match Api::<PodMigration>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            warn!(namespace, error = %cause(&error), "listing PodMigrations for a workload's new pod");
            return Ok(None);
        }
    };
    let Some(migration) = replacement::migration_of(pod, &migrations) else {
        return Ok(None);
    };
    if !owner::genuine(client, &request.user_info, pod, namespace).await {
        return Ok(None);
    }
    let name = migration
        .status
        .as_ref()
        .and_then(|s| s.pod_checkpoint.clone())
        .unwrap_or_default();
    let checkpoint = within_budget(
        &name,
        namespace,
        get::<PodCheckpoint>(client, namespace, &name),
    )
    .await?;
    let author = format!(
        "PodMigration {}",
        migration.metadata.name.as_deref().unwrap_or_default()
    );
    let access = Access {
        allowed: true,
        reason: String::new(),
    };
    let source = checkpoint.as_ref().map(Source::from);
    let mut restore = admission::decide(
        pod,
        namespace,
        &name,
        &author,
        &access,
        source.as_ref(),
        &webhook.checkpoints,
    )?;
    let mut affinity = replacement::affinity(pod, migration);
    let asked = Asked {
        affinity: Some(&affinity),
        ..Asked::of(pod.spec.as_ref())
    };
    if let Some(source) = &source
        && let Some(placed) = placement(webhook, namespace, source, asked).await?
    {
        affinity = placed;
    }
    let mut ops = replacement::marks(pod, migration);
    ops.extend(restore.patch.as_array().cloned().unwrap_or_default());
    ops.push(set_affinity(&affinity));
    restore.patch = Value::Array(ops);
    Ok(Some(restore))
}

/// `lookup`, or a [`Denial::LookupFailed`] once it has taken [`LOOKUP_BUDGET`].
async fn within_budget<T>(
    name: &str,
    namespace: &str,
    lookup: impl Future<Output = Result<T, Denial>>,
) -> Result<T, Denial> {
    tokio::time::timeout(LOOKUP_BUDGET, lookup)
        .await
        .unwrap_or_else(|_| {
            Err(Denial::LookupFailed {
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                error: format!("no answer from the API server within {LOOKUP_BUDGET:?}"),
            })
        })
}

/// Whether the user may read the checkpoint and, only if so, the checkpoint: the
/// ContainerCheckpoint of that name, else the PodCheckpoint.
async fn look_up(
    client: &Client,
    user: &UserInfo,
    namespace: &str,
    name: &str,
) -> Result<(Access, Option<Source>), Denial> {
    let access = review(client, user, namespace, CHECKPOINT_RESOURCE, name).await?;
    if access.allowed
        && let Some(cc) = get::<ContainerCheckpoint>(client, namespace, name).await?
    {
        return Ok((access, Some(Source::from(&cc))));
    }
    let pod_access = review(client, user, namespace, POD_CHECKPOINT_RESOURCE, name).await?;
    if !pod_access.allowed {
        // Found nowhere the user may look: the first answer stands.
        return Ok((access, None));
    }
    let pc = get::<PodCheckpoint>(client, namespace, name).await?;
    Ok((pod_access, pc.as_ref().map(Source::from)))
}

/// Whether `user` may get `resource`/`name` in `namespace`, as a SubjectAccessReview answers.
async fn review(
    client: &Client,
    user: &UserInfo,
    namespace: &str,
    resource: &str,
    name: &str,
) -> Result<Access, Denial> {
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
                resource: Some(resource.to_owned()),
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
    Ok(Access {
        allowed: status.allowed && status.denied != Some(true),
        reason: [status.reason, status.evaluation_error]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; "),
    })
}

async fn get<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>, Denial>
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + for<'de> k8s_openapi::serde::Deserialize<'de>
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|error| Denial::LookupFailed {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            error: cause(&error),
        })
}

mod owner;
mod placement;
#[cfg(test)]
mod tests;
