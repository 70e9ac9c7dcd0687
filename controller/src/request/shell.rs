//! The I/O around the plan: observes through the watches' stores (reading only the pod), carries
//! the plan out, reports.

use std::sync::Arc;

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointContent, ContainerCheckpointStatus,
    RegistrySpec,
};
use checkpointing::names::CONTROLLER_MANAGER;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::info;

use super::Context;
use super::error::Error;
use super::outcome::pod_event;
use super::plan::{Observed, content_not_created, needs_pod, plan};
use crate::kinds::Kind;
use crate::reconciles::on_node;
use crate::shell::{apply_status, tell, tell_regarding};
use crate::status::{self, Transition};

/// How soon a reconcile that came before the watches had listed is tried again.
const UNSYNCED_RETRY: std::time::Duration = std::time::Duration::from_secs(1);

/// The controller's reconcile function.
pub async fn reconcile(
    object: Arc<ContainerCheckpoint>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    ctx.run(&object, run(&object, &ctx)).await
}

async fn run(object: &ContainerCheckpoint, ctx: &Context) -> Result<Action, Error> {
    // Before the watches have listed everything, a Lease or Content not seen yet would pass for
    // one that does not exist: decide once they have.
    if !ctx.stores.synced.for_reconciles() {
        return Ok(Action::requeue(UNSYNCED_RETRY));
    }
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let stored = ctx
        .stores
        .contents
        .get(&ObjectRef::new(&name).within(&namespace));
    let (request, content) = ctx.written.catch_up(object, stored.as_deref());
    let content = content.into_iter().next();

    let (mut pod, mut lease, mut read_now) = (None, None, false);
    if needs_pod(&request, content.as_ref()) {
        pod = match ctx.reads.recall(&request, Timestamp::now()) {
            Some(recalled) => recalled,
            None => {
                read_now = true;
                read_pod(ctx, &namespace, &request.spec.pod_name).await?
            }
        };
        let node = pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.as_deref());
        node.inspect(|node| on_node(node));
        lease = node.and_then(|node| ctx.stores.lease(node));
    }

    let now = Timestamp::now();
    let mut plan = plan(&Observed {
        request: &request,
        content: content.as_ref(),
        pod: pod.as_ref(),
        lease: lease.as_deref(),
        lease_namespace: &ctx.stores.lease_namespace,
        pending_timeout: ctx.settings.pending_timeout,
        now,
    });
    // Until the look the plan asks for, a reconcile decides from this read (a failed write's
    // retry too); a Content made takes its place.
    if let Some(span) = plan.requeue_after.filter(|_| read_now) {
        ctx.reads.remember(&request, pod, now, span);
    }

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
                on_node(&content.spec.node_name);
                info!("created ContainerCheckpointContent");
                ctx.written.created(&request, created);
                ctx.reads.forget(&request);
            }
        }
    }

    if let Some(status) = &plan.status {
        match apply_status(&ctx.client, &request, status).await {
            Ok(true) => ctx.written.status(&request, status.clone()),
            Ok(false) => return Ok(Action::await_change()),
            Err(source) => {
                return Err(failure.unwrap_or(Error::WriteStatus {
                    namespace,
                    name,
                    source,
                }));
            }
        }
        info!(
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

/// Reads pod `namespace/name`; `None`: there is none.
async fn read_pod(ctx: &Context, namespace: &str, name: &str) -> Result<Option<Pod>, Error> {
    Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|source| Error::ReadPod {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            source,
        })
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
    if let Err(source) =
        super::credentials::copy(&ctx.client, &ctx.settings.credentials_namespace, content).await
    {
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

/// Publishes the Events of a state change and counts final states. The pod hears of every
/// outcome (related to the request); the request itself only of a failure, the one a user
/// looks for there: a Completed request says so in its status, and one Event fewer keeps a
/// checkpoint within its API-call budget (e2e api_load).
fn announce(
    ctx: &Context,
    request: &ContainerCheckpoint,
    transition: Transition,
    status: &ContainerCheckpointStatus,
) {
    if let Some(state) = status.state.filter(|s| s.is_final()) {
        ctx.metrics
            .of(Kind::ContainerCheckpoint)
            .finished(state, status::reason(&status.conditions));
    }
    if transition == Transition::Failed {
        let event = status::event(transition, status.message.as_deref().unwrap_or_default());
        tell(&ctx.recorder, request, event);
    }
    let (pod, event) = pod_event(request, transition, status);
    tell_regarding(&ctx.recorder, pod, event);
}

#[cfg(test)]
mod tests;
