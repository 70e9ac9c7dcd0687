//! The pure decision of one reconcile: from what was observed to what to do.

use std::collections::BTreeMap;
use std::time::Duration;

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointContent,
    ContainerCheckpointContentSpec, ContainerCheckpointStatus,
};
use checkpointing::names::{NODE_LABEL, noded_lease_name};
use checkpointing::volumes;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use crate::kube_error::cause;
use crate::pending;
use crate::status::{self, Transition};
use crate::validation::{self, Refusal};

/// How often a request that is not final is looked at again without any watch event: a safety
/// net, not the driver (Content events are).
pub(super) const RESYNC: Duration = Duration::from_secs(300);

/// How soon to look again while an earlier Content of the same name is being deleted.
const PREVIOUS_CONTENT_POLL: Duration = Duration::from_secs(5);

/// Everything the decision depends on, as read from the cluster.
pub struct Observed<'a> {
    pub request: &'a ContainerCheckpoint,
    /// The Content of the request's name, whoever owns it.
    pub content: Option<&'a ContainerCheckpointContent>,
    /// Read only while a Content is still to be created.
    pub pod: Option<&'a Pod>,
    /// The noded Lease of the pod's node, read only while a Content is still to be created.
    pub lease: Option<&'a Lease>,
    pub lease_namespace: &'a str,
    /// How long the request may wait on a state that passes by itself.
    pub pending_timeout: Duration,
    pub now: Timestamp,
}

/// What to do. `Plan::default()` is "nothing".
#[derive(Debug, Default)]
pub struct Plan {
    /// Content to create (server-side apply of metadata and spec).
    pub create_content: Option<ContainerCheckpointContent>,
    /// New request status, only when it differs from the current one.
    pub status: Option<ContainerCheckpointStatus>,
    /// Event to publish once the status is written.
    pub transition: Option<Transition>,
    /// Look again after this long even without a watch event.
    pub requeue_after: Option<Duration>,
}

/// Whether deciding needs the request's pod (and its node's Lease): only until a Content
/// exists, and only for a request that passes the checks that need nothing else (which also
/// keeps hostile names out of API paths).
pub fn needs_pod(
    request: &ContainerCheckpoint,
    content: Option<&ContainerCheckpointContent>,
) -> bool {
    content.is_none()
        && request.metadata.deletion_timestamp.is_none()
        && !is_final(request)
        && validation::check_request(request).is_ok()
}

fn is_final(request: &ContainerCheckpoint) -> bool {
    request
        .status
        .as_ref()
        .and_then(|s| s.state)
        .is_some_and(CheckpointState::is_final)
}

/// Decides what one reconcile does, from what was observed alone.
pub fn plan(o: &Observed) -> Plan {
    let request = o.request;
    // Being deleted: garbage collection removes the Content; nothing is left to decide.
    if request.metadata.deletion_timestamp.is_some() {
        return Plan::default();
    }
    let mut create_content = None;
    let mut requeue_after = None;
    let desired = match o.content {
        // Once the Content exists it is the truth, even for a request already final.
        Some(content) if owned_by(content, request) => {
            let mirrored = status::mirror(request, content, o.now);
            // noded's Running is not worth a status write: the request stays Pending, saying
            // where its Content went, until the Content is final.
            let current = request.status.as_ref().and_then(|s| s.state);
            if current == Some(CheckpointState::Pending)
                && mirrored.state == Some(CheckpointState::Running)
            {
                return with_status(request, request.status.clone().unwrap_or_default());
            }
            mirrored
        }
        _ if is_final(request) => return Plan::default(),
        Some(content) if content.metadata.deletion_timestamp.is_some() => {
            requeue_after = Some(PREVIOUS_CONTENT_POLL);
            status::waiting(
                request,
                "PreviousContentDeleting",
                format!(
                    "waiting for ContainerCheckpointContent {} of an earlier request with this \
                     name to be deleted",
                    content_ref(content)
                ),
                o.now,
            )
        }
        Some(content) => status::failed(
            request,
            "ContentConflict",
            format!(
                "ContainerCheckpointContent {} already exists and belongs to another request; \
                 delete it or give the request another name",
                content_ref(content)
            ),
            o.now,
        ),
        None => match validate(o) {
            Err(refusal) => match waiting(o, &refusal) {
                Some(wait) => {
                    requeue_after = Some(wait.next_look);
                    status::waiting(request, refusal.reason(), wait.message, o.now)
                }
                None => status::refused(request, &refusal, o.now),
            },
            Ok((pod, node)) => {
                let Some(content) = desired_content(request, pod, node) else {
                    // Only objects read from the API server reach here, and they have a uid.
                    return Plan::default();
                };
                let desired = status::mirror(request, &content, o.now);
                create_content = Some(content);
                desired
            }
        },
    };
    let mut plan = with_status(request, desired);
    plan.create_content = create_content;
    plan.requeue_after = requeue_after.or(plan.requeue_after);
    plan
}

/// The plan when creating the Content failed: a rejected object (invalid, e.g. a node name too
/// long for a label) fails the request; anything else leaves it Pending and is retried.
pub fn content_not_created(
    request: &ContainerCheckpoint,
    content: &ContainerCheckpointContent,
    error: &kube::Error,
    now: Timestamp,
) -> Plan {
    let name = content_ref(content);
    let desired = match error {
        kube::Error::Api(s) if s.code == 400 || s.is_invalid() => status::failed(
            request,
            "ContentRejected",
            format!(
                "the API server rejected ContainerCheckpointContent {name}: {}",
                s.message
            ),
            now,
        ),
        other => status::waiting(
            request,
            "ContentNotCreated",
            format!(
                "creating ContainerCheckpointContent {name} failed ({}); retrying",
                cause(other)
            ),
            now,
        ),
    };
    with_status(request, desired)
}

/// Plan the write of `desired`, only if it changes something, with the Event its state change
/// deserves.
fn with_status(request: &ContainerCheckpoint, desired: ContainerCheckpointStatus) -> Plan {
    let current = request.status.as_ref();
    if current == Some(&desired) {
        return Plan {
            requeue_after: resync(desired.state),
            ..Plan::default()
        };
    }
    Plan {
        transition: status::transition(current.and_then(|s| s.state), desired.state),
        requeue_after: resync(desired.state),
        status: Some(desired),
        create_content: None,
    }
}

fn resync(state: Option<CheckpointState>) -> Option<Duration> {
    match state {
        Some(s) if s.is_final() => None,
        _ => Some(RESYNC),
    }
}

/// How a request refused for a state that passes by itself waits; `None` once it has waited
/// long enough, or for a refusal for good.
fn waiting(o: &Observed, refusal: &Refusal) -> Option<pending::Wait> {
    let created = o.request.metadata.creation_timestamp.as_ref();
    pending::wait(refusal.waits_for()?, created, o.pending_timeout, o.now)
}

/// All checks in order; on success the pod and its node.
fn validate<'a>(o: &Observed<'a>) -> Result<(&'a Pod, &'a str), Refusal> {
    validation::check_request(o.request)?;
    let (pod, node) = validation::check_pod(o.request, o.pod)?;
    let lease_ref = format!("{}/{}", o.lease_namespace, noded_lease_name(node));
    validation::check_node_daemon(node, o.lease, &lease_ref, o.now)?;
    Ok((pod, node))
}

/// The Content a valid request asks for: same name and namespace, labelled with its node so
/// only that node's noded picks it up, owned by the request so deleting the request deletes it.
fn desired_content(
    request: &ContainerCheckpoint,
    pod: &Pod,
    node: &str,
) -> Option<ContainerCheckpointContent> {
    let owner = OwnerReference {
        block_owner_deletion: Some(true),
        ..request.controller_owner_ref(&())?
    };
    let name = request.name_any();
    let namespace = request.namespace().unwrap_or_default();
    Some(ContainerCheckpointContent {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(NODE_LABEL.to_owned(), node.to_owned())])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: ContainerCheckpointContentSpec {
            container_checkpoint_ref: name,
            namespace,
            pod_name: request.spec.pod_name.clone(),
            container_name: request.spec.container.clone(),
            node_name: node.to_owned(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            timeout_seconds: request.spec.timeout_seconds,
            volumes: volumes::to_capture(pod, &request.spec.container),
            registry: request.spec.registry.clone(),
            credentials_secret: super::credentials::copy_name(request),
            hold_source: request.spec.hold_source,
        },
        status: None,
    })
}

fn owned_by(content: &ContainerCheckpointContent, request: &ContainerCheckpoint) -> bool {
    let Some(uid) = request.metadata.uid.as_deref() else {
        return false;
    };
    content
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

fn content_ref(content: &ContainerCheckpointContent) -> String {
    format!(
        "{}/{}",
        content.namespace().unwrap_or_default(),
        content.name_any()
    )
}

#[cfg(test)]
mod tests;
