//! The I/O around the pod-level decisions: observe through the watches' stores (reading only
//! the pod), carry the plan out, write the status, tell state changes through Events.

use std::sync::Arc;
use std::time::Duration;

use checkpointing::crd::{
    ContainerCheckpoint, ContainerCheckpointContent, MigrationPhase, PodCheckpoint, PodMigration,
    PodMigrationStatus,
};
use checkpointing::names::{
    CONTROLLER_MANAGER, MIGRATION_LABEL, POD_CHECKPOINT_LABEL, RELEASE_SOURCE_ANNOTATION,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use super::checkpoint::{self, needs_pod};
use super::migration::{self, Action as Step};
use super::outcome::{self, pod_event};
use crate::kinds::{Kind, Request};
use crate::reconciles::{Context, on_node};
use crate::shell::{Error, RETRY, apply_status, failed, tell, tell_regarding};
use crate::status::{self, MAX_EVENT_NOTE, truncated};

/// How soon a reconcile that came before the watches had listed is tried again.
const UNSYNCED_RETRY: Duration = Duration::from_secs(1);

/// What a PodCheckpoint's reconciles share; they create its ContainerCheckpoints.
pub type CheckpointContext = Context<PodCheckpoint, ContainerCheckpoint>;
/// What a PodMigration's reconciles share; they create its PodCheckpoint.
pub type MigrationContext = Context<PodMigration, PodCheckpoint>;

pub async fn reconcile_checkpoint(
    request: Arc<PodCheckpoint>,
    ctx: Arc<CheckpointContext>,
) -> Result<Action, Error> {
    ctx.run(&request, checkpoint(&request, &ctx)).await
}

async fn checkpoint(request: &PodCheckpoint, ctx: &CheckpointContext) -> Result<Action, Error> {
    // Before the ContainerCheckpoints are listed, one not seen yet would pass for deleted.
    if !ctx.stores.synced.for_pod_checkpoints() {
        return Ok(Action::requeue(UNSYNCED_RETRY));
    }
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    let stored = ctx.stores.requests.state();
    let owned = stored.iter().map(AsRef::as_ref).filter(|c| {
        c.namespace().as_deref() == Some(namespace.as_str())
            && c.labels().get(POD_CHECKPOINT_LABEL) == Some(&name)
            && owned_by(c, request)
    });
    let (request, children) = ctx.written.catch_up(request, owned);
    // Final or going: nothing left to decide, so nothing to read.
    if checkpoint::is_final(&request) || request.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pod = if needs_pod(&request) {
        let pod_name = &request.spec.pod_name;
        Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(pod_name)
            .await
            .map_err(failed(format!("reading Pod {namespace}/{pod_name}")))?
    } else {
        None
    };
    if let Some(node) = pod
        .as_ref()
        .and_then(|p| p.spec.as_ref()?.node_name.as_deref())
    {
        on_node(node);
    }
    let now = Timestamp::now();
    let mut plan = checkpoint::plan(&checkpoint::Observed {
        request: &request,
        pod: pod.as_ref(),
        children: &children,
        now,
    });
    let requests = Api::<ContainerCheckpoint>::namespaced(ctx.client.clone(), &namespace);
    let apply = PatchParams::apply(CONTROLLER_MANAGER).force();
    for child in std::mem::take(&mut plan.create) {
        let child_name = child.name_any();
        match requests
            .patch(&child_name, &apply, &Patch::Apply(&child))
            .await
        {
            Ok(created) => {
                info!(container_checkpoint = %child_name, "created ContainerCheckpoint");
                ctx.written.created(&request, created);
            }
            // Refused (a policy, a quota): final, and the user is told why.
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 429 => {
                plan = checkpoint::child_refused(&request, &child_name, s.code, &s.message, now);
                break;
            }
            Err(source) => {
                return Err(failed(format!(
                    "creating ContainerCheckpoint {namespace}/{child_name}"
                ))(source));
            }
        }
    }
    if let Some(status) = plan.status {
        let old = request.status.as_ref().and_then(|s| s.state);
        if !report(ctx, &request, &status).await? {
            return Ok(Action::await_change());
        }
        if let Some(failure) = &plan.failure {
            info!(reason = failure.reason(), %failure, "failed");
        }
        if let Some(state) = status.state.filter(|s| s.is_final()) {
            ctx.metrics
                .of(Kind::PodCheckpoint)
                .finished(state, status::reason(&status.conditions));
        }
        if let Some(transition) = status::transition(old, status.state) {
            let note = status.message.as_deref().unwrap_or_default();
            tell(&ctx.recorder, &request, status::event(transition, note));
        }
    }
    Ok(Action::await_change())
}

/// Writes `status` and remembers it until the store shows it; `false`: the request is gone.
async fn report<K: Request, C: ResourceExt + Clone>(
    ctx: &Context<K, C>,
    request: &K,
    status: &K::Status,
) -> Result<bool, Error> {
    let written = apply_status(&ctx.client, request, status)
        .await
        .map_err(failed(format!(
            "writing the status of {:?} {}/{}",
            K::KIND,
            request.namespace().unwrap_or_default(),
            request.name_any()
        )))?;
    if written {
        info!("status written");
        ctx.written.status(request, status.clone());
    }
    Ok(written)
}

fn owned_by<K: Resource<DynamicType = ()>>(child: &ContainerCheckpoint, owner: &K) -> bool {
    let uid = owner.meta().uid.as_deref();
    child
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

pub async fn reconcile_migration(
    migration: Arc<PodMigration>,
    ctx: Arc<MigrationContext>,
) -> Result<Action, Error> {
    ctx.run(&migration, migrate(&migration, &ctx)).await
}

async fn migrate(migration: &PodMigration, ctx: &MigrationContext) -> Result<Action, Error> {
    // Before the stores are listed, a PodCheckpoint or restored pod not seen yet would pass
    // for one that does not exist.
    if !ctx.stores.synced.for_migrations() {
        return Ok(Action::requeue(UNSYNCED_RETRY));
    }
    let namespace = migration.namespace().unwrap_or_default();
    let name = migration.name_any();
    let named = |m: &PodMigration| {
        let status = m.status.as_ref().and_then(|s| s.pod_checkpoint.clone());
        status.or_else(|| m.spec.from_checkpoint.clone())
    };
    let stored = named(migration).and_then(|pc| {
        let key = ObjectRef::new(&pc).within(&namespace);
        ctx.stores.pod_checkpoints.get(&key)
    });
    let (migration, created) = ctx.written.catch_up(migration, stored.as_deref());
    let releasing = migration.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::Failed)
        && migration::holds(&migration);
    let done = migration::is_final(&migration) && !releasing;
    if done || migration.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let checkpoint_name = named(&migration);
    let checkpoint = created
        .into_iter()
        .find(|c| Some(c.name_any()) == checkpoint_name);
    let pod_name = &migration.spec.pod_name;
    let read = migration::needs_pod(&migration, checkpoint.as_ref());
    let pod = if read {
        Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(pod_name)
            .await
            .map_err(failed(format!("reading Pod {namespace}/{pod_name}")))?
    } else {
        None
    };
    if let Some(node) = pod
        .as_ref()
        .and_then(|p| p.spec.as_ref()?.node_name.as_deref())
    {
        on_node(node);
    }
    let labelled: Vec<Pod> = match &checkpoint_name {
        Some(_) => ctx
            .stores
            .restored
            .state()
            .iter()
            .filter(|p| {
                p.namespace().as_deref() == Some(namespace.as_str())
                    && p.labels().get(MIGRATION_LABEL) == Some(&name)
            })
            .map(|p| p.as_ref().clone())
            .collect(),
        None => Vec::new(),
    };
    let target = migration.spec.target_node.as_deref();
    let target_lease = target.and_then(|node| ctx.stores.lease(node));
    let plan = migration::plan(&migration::Observed {
        migration: &migration,
        pod: pod.as_ref(),
        checkpoint: checkpoint.as_ref(),
        labelled: &labelled,
        target_lease: target_lease.as_deref(),
        lease_namespace: &ctx.stores.lease_namespace,
        pending_timeout: ctx.settings.pending_timeout,
        now: Timestamp::now(),
    });
    let (release, actions): (Vec<_>, Vec<_>) = plan
        .actions
        .iter()
        .partition(|a| matches!(a, Step::ReleaseSource { .. }));
    for step in release {
        act(ctx, &migration, step).await?;
    }
    // The status first: a workload makes the replacement the moment its pod is deleted, and
    // the webhook knows it for one only once the migration reads Restoring. Every step is
    // planned again from that status if it fails.
    let seen = outcome::Seen {
        source: read.then_some(pod.as_ref()),
        restored: &labelled,
    };
    if let Some(status) = &plan.status
        && !moved(ctx, &migration, status, &seen).await?
    {
        return Ok(Action::await_change());
    }
    if let Some(failure) = &plan.failure {
        info!(reason = failure.reason(), %failure, "failed");
    }
    for step in actions {
        let Err(error) = act(ctx, &migration, step).await else {
            continue;
        };
        // A copy the webhook (or a policy) refuses is refused again on every retry: the
        // migration fails saying why, and the next reconcile releases the held source.
        let refusal = matches!(step, Step::CreatePod(_))
            .then(|| error.refusal())
            .flatten();
        let Some(why) = refusal else {
            return Err(error);
        };
        let why = truncated(why, MAX_EVENT_NOTE);
        if let Some(status) = migration::copy_refused(&migration, &why, Timestamp::now()).status {
            moved(ctx, &migration, &status, &seen).await?;
        }
        return Ok(Action::requeue(RETRY));
    }
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

/// Writes the migration's new `status`, telling a new phase through an Event (a final one to
/// the pod it concerns too, among those `seen`); `false`: the migration is gone.
async fn moved(
    ctx: &MigrationContext,
    migration: &PodMigration,
    status: &PodMigrationStatus,
    seen: &outcome::Seen<'_>,
) -> Result<bool, Error> {
    let old = migration.status.as_ref().and_then(|s| s.phase);
    if !report(ctx, migration, status).await? {
        return Ok(false);
    }
    if old != status.phase {
        if let Some(phase) = status.phase.filter(|p| p.is_final()) {
            ctx.metrics
                .of(Kind::PodMigration)
                .finished(phase, status::reason(&status.conditions));
        }
        tell(&ctx.recorder, migration, phase_event(status));
        if let Some((pod, event)) = pod_event(migration, status, seen) {
            tell_regarding(&ctx.recorder, pod, event);
        }
    }
    Ok(true)
}

async fn act(ctx: &MigrationContext, migration: &PodMigration, step: &Step) -> Result<(), Error> {
    let namespace = &migration.namespace().unwrap_or_default();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    match step {
        Step::CreateCheckpoint(pc) => {
            let apply = PatchParams::apply(CONTROLLER_MANAGER).force();
            let created = Api::<PodCheckpoint>::namespaced(ctx.client.clone(), namespace)
                .patch(&pc.name_any(), &apply, &Patch::Apply(pc))
                .await
                .map_err(failed(format!(
                    "creating PodCheckpoint {namespace}/{}",
                    pc.name_any()
                )))?;
            ctx.written.created(migration, created);
        }
        Step::CreatePod(pod) => match pods.create(&PostParams::default(), pod).await {
            Ok(_) => {
                info!(pod = %pod.name_any(), "created the restored pod")
            }
            // Ours, from an earlier try (the name carries the migration's UID).
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => {
                return Err(failed(format!(
                    "creating Pod {namespace}/{}",
                    pod.name_any()
                ))(source));
            }
        },
        Step::ReleaseSource { contents } => {
            let api = Api::<ContainerCheckpointContent>::namespaced(ctx.client.clone(), namespace);
            let patch = Patch::Merge(serde_json::json!({
                "metadata": {"annotations": {RELEASE_SOURCE_ANNOTATION: "true"}}
            }));
            for content in contents {
                let params = PatchParams {
                    field_manager: Some(CONTROLLER_MANAGER.into()),
                    ..PatchParams::default()
                };
                match api.patch(content, &params, &patch).await {
                    Ok(_) => {
                        info!(%content, "released the source's container")
                    }
                    // Gone: its deletion thaws what it held.
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(source) => {
                        return Err(failed(format!(
                            "releasing the source held by ContainerCheckpointContent {namespace}/{content}"
                        ))(source));
                    }
                }
            }
        }
        Step::DeleteSource {
            name: pod_name,
            uid,
        } => {
            let params = DeleteParams {
                grace_period_seconds: Some(1),
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match pods.delete(pod_name, &params).await {
                Ok(_) => info!(pod = %pod_name, "deleted the source pod"),
                // Gone already, or another pod of that name now.
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(source) => {
                    return Err(failed(format!("deleting Pod {namespace}/{pod_name}"))(
                        source,
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The Event of a migration's new phase.
fn phase_event(status: &PodMigrationStatus) -> Event {
    use checkpointing::crd::MigrationPhase::*;
    let (type_, reason) = match status.phase {
        Some(Failed) => (EventType::Warning, "MigrationFailed"),
        Some(Succeeded) => (EventType::Normal, "MigrationSucceeded"),
        Some(Restoring) => (EventType::Normal, "Restoring"),
        _ => (EventType::Normal, "Checkpointing"),
    };
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncated(
            status.message.as_deref().unwrap_or_default(),
            MAX_EVENT_NOTE,
        )),
        action: "Migrate".to_owned(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests;
