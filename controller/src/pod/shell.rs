//! The I/O around the pod-level decisions: read what they need, carry the plan out, write the
//! status, tell state changes through Events.

use std::sync::Arc;

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointContent, MigrationPhase,
    PodCheckpoint, PodCheckpointStatus, PodMigration, PodMigrationStatus,
};
use checkpointing::names::{
    CONTROLLER_MANAGER, MIGRATION_LABEL, POD_CHECKPOINT_LABEL, RELEASE_SOURCE_ANNOTATION,
    is_dns_subdomain, noded_lease_name,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Resource, ResourceExt};
use tracing::info;

use super::Context;
use super::checkpoint::{self, needs_pod};
use super::migration::{self, Action as Step};
use crate::shell::{Error, RETRY, announce, failed, write_status};
use crate::status::{self, MAX_EVENT_NOTE, truncated};

pub async fn reconcile_checkpoint(
    request: Arc<PodCheckpoint>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    // Final or going: nothing left to decide, so nothing to read.
    if checkpoint::is_final(&request) || request.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    let pod = if needs_pod(&request) {
        let pod_name = &request.spec.pod_name;
        Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(pod_name)
            .await
            .map_err(failed(format!("reading Pod {namespace}/{pod_name}")))?
    } else {
        None
    };
    let requests = Api::<ContainerCheckpoint>::namespaced(ctx.client.clone(), &namespace);
    let owned = ListParams::default().labels(&format!("{POD_CHECKPOINT_LABEL}={name}"));
    let children: Vec<_> = requests
        .list(&owned)
        .await
        .map_err(failed(format!(
            "listing the ContainerCheckpoints of {namespace}/{name}"
        )))?
        .items
        .into_iter()
        .filter(|c| owned_by(c, request.as_ref()))
        .collect();
    let now = Timestamp::now();
    let mut plan = checkpoint::plan(&checkpoint::Observed {
        request: &request,
        pod: pod.as_ref(),
        children: &children,
        now,
    });
    let apply = PatchParams::apply(CONTROLLER_MANAGER).force();
    for child in &plan.create {
        let child_name = child.name_any();
        match requests
            .patch(&child_name, &apply, &Patch::Apply(child))
            .await
        {
            Ok(_) => {
                info!(request = %name, %namespace, container_checkpoint = %child_name, "created ContainerCheckpoint")
            }
            // Refused (a policy, a quota): final, and the user is told why.
            Err(kube::Error::Api(s)) if (400..500).contains(&s.code) && s.code != 429 => {
                plan.status = Some(PodCheckpointStatus {
                    state: Some(CheckpointState::Failed),
                    message: Some(format!(
                        "creating ContainerCheckpoint {child_name:?} was refused: {} {}",
                        s.code, s.message
                    )),
                    ..Default::default()
                });
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
        write_status(&ctx.client, request.as_ref(), &status).await?;
        if let Some(transition) = status::transition(old, status.state) {
            let note = status.message.as_deref().unwrap_or_default();
            announce(
                &ctx.recorder,
                request.as_ref(),
                status::event(transition, note),
            )
            .await;
        }
    }
    Ok(Action::await_change())
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
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let releasing = migration.status.as_ref().and_then(|s| s.phase) == Some(MigrationPhase::Failed)
        && migration::holds(&migration);
    let done = migration::is_final(&migration) && !releasing;
    if done || migration.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = migration.namespace().unwrap_or_default();
    let name = migration.name_any();
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace);
    let pod_name = &migration.spec.pod_name;
    // A name that is not a pod's never reaches an API path; the plan refuses it.
    let pod = if is_dns_subdomain(pod_name) {
        pods.get_opt(pod_name)
            .await
            .map_err(failed(format!("reading Pod {namespace}/{pod_name}")))?
    } else {
        None
    };
    let checkpoint_name = migration
        .status
        .as_ref()
        .and_then(|s| s.pod_checkpoint.clone())
        .or_else(|| migration.spec.from_checkpoint.clone());
    let checkpoint = match &checkpoint_name {
        Some(pc) => Api::<PodCheckpoint>::namespaced(ctx.client.clone(), &namespace)
            .get_opt(pc)
            .await
            .map_err(failed(format!("reading PodCheckpoint {namespace}/{pc}")))?,
        None => None,
    };
    let labelled = match &checkpoint_name {
        Some(_) => {
            pods.list(&ListParams::default().labels(&format!("{MIGRATION_LABEL}={name}")))
                .await
                .map_err(failed(format!(
                    "listing the pods of PodMigration {namespace}/{name}"
                )))?
                .items
        }
        None => Vec::new(),
    };
    let target_lease = migration.spec.target_node.as_deref().and_then(|node| {
        ctx.leases
            .get(&ObjectRef::new(&noded_lease_name(node)).within(&ctx.lease_namespace))
    });
    let plan = migration::plan(&migration::Observed {
        migration: &migration,
        pod: pod.as_ref(),
        checkpoint: checkpoint.as_ref(),
        labelled: &labelled,
        target_lease: target_lease.as_deref(),
        lease_namespace: &ctx.lease_namespace,
        now: Timestamp::now(),
    });
    let (release, actions): (Vec<_>, Vec<_>) = plan
        .actions
        .iter()
        .partition(|a| matches!(a, Step::ReleaseSource { .. }));
    for step in release {
        act(&ctx, &namespace, &name, step).await?;
    }
    // The status first: a workload makes the replacement the moment its pod is deleted, and
    // the webhook knows it for one only once the migration reads Restoring. Every step is
    // planned again from that status if it fails.
    if let Some(status) = &plan.status {
        let old = migration.status.as_ref().and_then(|s| s.phase);
        write_status(&ctx.client, migration.as_ref(), status).await?;
        if old != status.phase {
            announce(&ctx.recorder, migration.as_ref(), phase_event(status)).await;
        }
    }
    for step in actions {
        let Err(error) = act(&ctx, &namespace, &name, step).await else {
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
            write_status(&ctx.client, migration.as_ref(), &status).await?;
            announce(&ctx.recorder, migration.as_ref(), phase_event(&status)).await;
        }
        return Ok(Action::requeue(RETRY));
    }
    Ok(plan
        .requeue_after
        .map_or_else(Action::await_change, Action::requeue))
}

async fn act(ctx: &Context, namespace: &str, migration: &str, step: &Step) -> Result<(), Error> {
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace);
    match step {
        Step::CreateCheckpoint(pc) => {
            let apply = PatchParams::apply(CONTROLLER_MANAGER).force();
            Api::<PodCheckpoint>::namespaced(ctx.client.clone(), namespace)
                .patch(&pc.name_any(), &apply, &Patch::Apply(pc))
                .await
                .map_err(failed(format!(
                    "creating PodCheckpoint {namespace}/{}",
                    pc.name_any()
                )))?;
        }
        Step::CreatePod(pod) => match pods.create(&PostParams::default(), pod).await {
            Ok(_) => {
                info!(%migration, %namespace, pod = %pod.name_any(), "created the restored pod")
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
                        info!(%migration, %namespace, %content, "released the source's container")
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
                Ok(_) => info!(%migration, %namespace, pod = %pod_name, "deleted the source pod"),
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
