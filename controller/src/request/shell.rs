//! The I/O around the plan: observes through the watches' stores (reading only the pod), carries
//! the plan out, reports.

use std::sync::Arc;

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointContent, ContainerCheckpointStatus,
    RegistrySpec,
};
use checkpointing::names::{CONTROLLER_MANAGER, noded_lease_name};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use super::error::Error;
use super::plan::{Observed, content_not_created, needs_pod, plan};
use crate::kube_error::cause;
use crate::status::{self, Transition};

/// How soon a reconcile that came before the watches had listed is tried again.
const UNSYNCED_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The controller's reconcile function.
pub async fn reconcile(
    object: Arc<ContainerCheckpoint>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = run(&object, &ctx).await;
    let label = if result.is_ok() {
        ctx.failures.succeeded(&ObjectRef::from(object.as_ref()));
        "success"
    } else {
        "error"
    };
    ctx.metrics.reconciled(label, started.elapsed());
    result
}

/// The controller's error policy: log and retry with a per-request backoff.
pub fn error_policy(object: Arc<ContainerCheckpoint>, error: &Error, ctx: Arc<Context>) -> Action {
    let (failures, retry) = ctx.failures.failed(ObjectRef::from(object.as_ref()));
    warn!(
        error = %error,
        cause = %error_source(error),
        request = %object.name_any(),
        namespace = %object.namespace().unwrap_or_default(),
        failures,
        retry_secs = retry.as_secs(),
        "reconcile failed"
    );
    Action::requeue(retry)
}

fn error_source(error: &Error) -> String {
    match error {
        Error::ReadPod { source, .. }
        | Error::CopyCredentials { source, .. }
        | Error::CreateContent { source, .. }
        | Error::WriteStatus { source, .. } => cause(source),
    }
}

async fn run(object: &ContainerCheckpoint, ctx: &Context) -> Result<Action, Error> {
    // Before the watches have listed everything, a Lease or Content not seen yet would pass for
    // one that does not exist: decide once they have.
    if !ctx.synced.for_reconciles() {
        return Ok(Action::requeue(UNSYNCED_RETRY));
    }
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let stored = ctx.contents.get(&ObjectRef::new(&name).within(&namespace));
    let (request, content) = ctx.written.catch_up(object, stored.as_deref());

    let (mut pod, mut lease) = (None, None);
    if needs_pod(&request, content.as_ref()) {
        let pod_name = &request.spec.pod_name;
        pod = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(pod_name)
            .await
            .map_err(|source| Error::ReadPod {
                namespace: namespace.clone(),
                name: pod_name.clone(),
                source,
            })?;
        let node = pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.as_deref());
        lease = node.and_then(|node| {
            ctx.leases
                .get(&ObjectRef::new(&noded_lease_name(node)).within(&ctx.lease_namespace))
        });
    }

    let now = Timestamp::now();
    let mut plan = plan(&Observed {
        request: &request,
        content: content.as_ref(),
        pod: pod.as_ref(),
        lease: lease.as_deref(),
        lease_namespace: &ctx.lease_namespace,
        now,
    });

    let apply = PatchParams::apply(CONTROLLER_MANAGER).force();
    let requests: Api<ContainerCheckpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut failure = None;
    if let Some(content) = plan.create_content.take() {
        // Apply, not create: a retry after a lost response finds its own object and changes
        // nothing. Only metadata and spec are sent; noded owns the status.
        match create_content(ctx, &contents, &content).await? {
            Err(source) => {
                plan = content_not_created(&request, &content, &source, now);
                let rejected =
                    plan.status.as_ref().and_then(|s| s.state) == Some(CheckpointState::Failed);
                if !rejected {
                    failure = Some(Error::CreateContent {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        source,
                    });
                }
            }
            Ok(created) => {
                info!(
                    request = %name,
                    namespace = %namespace,
                    node = %content.spec.node_name,
                    "created ContainerCheckpointContent"
                );
                ctx.written.content(&request, created);
            }
        }
    }

    if let Some(status) = &plan.status {
        let body = serde_json::json!({
            "apiVersion": ContainerCheckpoint::api_version(&()),
            "kind": ContainerCheckpoint::kind(&()),
            "metadata": { "name": name },
            "status": status,
        });
        match requests
            .patch_status(&name, &apply, &Patch::Apply(body))
            .await
        {
            Ok(_) => ctx.written.status(&request, status.clone()),
            // Deleted meanwhile: nothing left to report on.
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
            Err(source) => {
                return Err(failure.unwrap_or(Error::WriteStatus {
                    namespace,
                    name,
                    source,
                }));
            }
        }
        info!(
            request = %name,
            namespace = %namespace,
            state = ?status.state,
            message = status.message.as_deref().unwrap_or_default(),
            "status written"
        );
        if let Some(transition) = plan.transition {
            announce(ctx, &request, transition, status);
        }
    }

    match failure {
        Some(error) => Err(error),
        None => Ok(plan
            .requeue_after
            .map_or_else(Action::await_change, Action::requeue)),
    }
}

/// Applies `content`, after copying the registry Secret it names for noded, which reads no
/// Secret elsewhere and must find the copy once the Content exists. A dry run first: a Content
/// the API server rejects leaves no copy that no Content would delete. The outer error: the
/// copy failed, and nothing was written.
async fn create_content(
    ctx: &Context,
    contents: &Api<ContainerCheckpointContent>,
    content: &ContainerCheckpointContent,
) -> Result<Result<ContainerCheckpointContent, kube::Error>, Error> {
    let name = content.name_any();
    let apply = PatchParams::apply(CONTROLLER_MANAGER).force();
    if content.spec.credentials_secret.is_some() {
        let dry_run = PatchParams {
            dry_run: true,
            ..apply.clone()
        };
        if let Err(e) = contents
            .patch(&name, &dry_run, &Patch::Apply(content))
            .await
        {
            return Ok(Err(e));
        }
    }
    if let Err(source) = super::credentials::copy(&ctx.client, content).await {
        return Err(Error::CopyCredentials {
            namespace: content.spec.namespace.clone(),
            name: RegistrySpec::secret_name(content.spec.registry.as_ref())
                .unwrap_or_default()
                .to_owned(),
            source,
        });
    }
    Ok(contents.patch(&name, &apply, &Patch::Apply(content)).await)
}

/// Publishes the Event of a state change and counts final states. The Event is sent on its own
/// task: the status already says it all, so the reconcile (and the next one of this request)
/// need not wait for it; a lost Event is logged, not retried.
fn announce(
    ctx: &Context,
    request: &ContainerCheckpoint,
    transition: Transition,
    status: &ContainerCheckpointStatus,
) {
    if let Some(state) = status.state.filter(|s| s.is_final()) {
        ctx.metrics.finished(state, status::reason(status));
    }
    let event = status::event(transition, status.message.as_deref().unwrap_or_default());
    let recorder = ctx.recorder.clone();
    let reference = request.object_ref(&());
    tokio::spawn(async move {
        if let Err(error) = recorder.publish(&event, &reference).await {
            warn!(
                %error,
                request = reference.name.as_deref().unwrap_or_default(),
                reason = %event.reason,
                "publishing an Event failed"
            );
        }
    });
}

#[cfg(test)]
mod tests;
