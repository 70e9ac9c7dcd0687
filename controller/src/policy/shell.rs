//! The I/O around a policy's decision: list its pods and PodCheckpoints, create and delete
//! PodCheckpoints, write the status, tell what happened through Events on the policy.

use std::sync::Arc;
use std::time::Duration;

use checkpointing::crd::{CheckpointPolicy, PodCheckpoint, PodMigration};
use checkpointing::names::{LOST_POD_LABEL, POLICY_LABEL};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams, Preconditions};
use kube::core::Selector;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Api, ResourceExt};
use tracing::info;

use super::Context;
use super::lost;
use super::plan::{self, Doomed, Observed};
use crate::shell::{Error, announce, failed, write_status};
use crate::status::{MAX_EVENT_NOTE, truncated};

/// How soon a policy restoring lost nodes' pods looks again when the Nodes were not listed yet.
const UNSYNCED_RETRY: Duration = Duration::from_secs(1);

pub async fn reconcile(policy: Arc<CheckpointPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.run(&policy, run(&policy, &ctx)).await
}

async fn run(policy: &CheckpointPolicy, ctx: &Context) -> Result<Action, Error> {
    if policy.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let namespace = policy.namespace().unwrap_or_default();
    let name = policy.name_any();
    let pods = selected(ctx, policy, &namespace).await?;
    let api = Api::<PodCheckpoint>::namespaced(ctx.client.clone(), &namespace);
    let own = ListParams::default().labels(&format!("{POLICY_LABEL}={name}"));
    let checkpoints = api
        .list(&own)
        .await
        .map_err(failed(format!(
            "listing the PodCheckpoints of CheckpointPolicy {namespace}/{name}"
        )))?
        .items;
    let plan = plan::plan(&Observed {
        policy,
        pods: pods.as_deref().map_err(String::as_str),
        checkpoints: &checkpoints,
        now: Timestamp::now(),
    });
    for pc in &plan.create {
        create(ctx, &api, policy, pc).await?;
    }
    for doomed in &plan.delete {
        delete(ctx, &api, policy, doomed).await?;
    }
    if let Some(status) = &plan.status {
        write_status(&ctx.client, policy, status).await?;
    }
    for failure in &plan.failures {
        let event = event(
            EventType::Warning,
            "CheckpointFailed",
            "Checkpoint",
            failure,
        );
        announce(&ctx.recorder, policy, event).await;
    }
    let mut requeue = plan.requeue_after;
    if policy.spec.on_node_loss.is_some()
        && let Ok(pods) = &pods
    {
        let next = restore_lost(ctx, policy, pods, &checkpoints).await?;
        requeue = [requeue, next].into_iter().flatten().min();
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Starts the restores of the policy's pods of lost nodes ([`lost`]), saying each in an Event;
/// returns when a node would next become lost.
async fn restore_lost(
    ctx: &Context,
    policy: &CheckpointPolicy,
    pods: &[Pod],
    checkpoints: &[PodCheckpoint],
) -> Result<Option<Duration>, Error> {
    let namespace = policy.namespace().unwrap_or_default();
    if !ctx.stores.synced.for_lost_nodes() {
        return Ok(Some(UNSYNCED_RETRY));
    }
    let nodes = ctx.stores.nodes.state();
    let listed: Vec<&Node> = nodes.iter().map(AsRef::as_ref).collect();
    let now = Timestamp::now();
    let (lost_nodes, next) = lost::lost_nodes(&listed, ctx.settings.node_loss_after, now);
    let migrations = Api::<PodMigration>::namespaced(ctx.client.clone(), &namespace);
    let started = migrations
        .list(&ListParams::default().labels(LOST_POD_LABEL))
        .await
        .map_err(failed(format!(
            "listing the restores of lost pods in namespace {namespace}"
        )))?
        .items;
    let exists = |name: &str| {
        listed
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(name))
    };
    let (restores, cannot) = lost::restores(&lost::Observed {
        policy,
        pods,
        checkpoints,
        migrations: &started,
        lost: &lost_nodes,
        node_exists: &exists,
        now,
    });
    for restore in restores {
        let name = restore.migration.name_any();
        match migrations
            .create(&PostParams::default(), &restore.migration)
            .await
        {
            Ok(_) => {
                info!(policy = %policy.name_any(), %namespace, migration = %name, note = %restore.note, "restoring a pod of a lost node");
                let event = event(EventType::Warning, "NodeLost", "Restore", &restore.note);
                announce(&ctx.recorder, policy, event).await;
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(source) => {
                return Err(failed(format!("creating PodMigration {name}"))(source));
            }
        }
    }
    for why in cannot {
        let event = event(EventType::Warning, "CannotRestore", "Restore", &why);
        announce(&ctx.recorder, policy, event).await;
    }
    Ok(next.map(|at| {
        let wait = at.duration_since(now).as_secs().max(1);
        Duration::from_secs(u64::try_from(wait).unwrap_or(1))
    }))
}

/// The pods the selector picks, or the words refusing the selector (ours or the API server's).
async fn selected(
    ctx: &Context,
    policy: &CheckpointPolicy,
    namespace: &str,
) -> Result<Result<Vec<Pod>, String>, Error> {
    let selector = match Selector::try_from(policy.spec.selector.clone()) {
        Ok(selector) => selector,
        Err(refused) => return Ok(Err(refused.to_string())),
    };
    let listed = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels_from(&selector))
        .await;
    match listed {
        Ok(list) => Ok(Ok(list.items)),
        Err(kube::Error::Api(s)) if s.code == 400 => Ok(Err(s.message)),
        Err(source) => Err(failed(format!(
            "listing the pods of CheckpointPolicy {namespace}/{}",
            policy.name_any()
        ))(source)),
    }
}

/// Creates `pc`; a name taken already is the PodCheckpoint an earlier try created. One the API
/// server refuses for good (a quota, an admission policy) is told in an Event and tried again
/// at the pod's next due time, not in a loop.
async fn create(
    ctx: &Context,
    api: &Api<PodCheckpoint>,
    policy: &CheckpointPolicy,
    pc: &PodCheckpoint,
) -> Result<(), Error> {
    let (name, pod) = (pc.name_any(), &pc.spec.pod_name);
    let error = match api.create(&PostParams::default(), pc).await {
        Ok(_) => {
            info!(policy = %policy.name_any(), namespace = %policy.namespace().unwrap_or_default(), pod_checkpoint = %name, "created PodCheckpoint");
            let note = format!("PodCheckpoint {name} of pod {pod:?}");
            let event = event(EventType::Normal, "CheckpointCreated", "Checkpoint", &note);
            announce(&ctx.recorder, policy, event).await;
            return Ok(());
        }
        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
        Err(source) => failed(format!("creating PodCheckpoint {name}"))(source),
    };
    let Some(refusal) = error.refusal() else {
        return Err(error);
    };
    let note = format!("creating PodCheckpoint {name} of pod {pod:?} was refused: {refusal}");
    let event = event(EventType::Warning, "CheckpointRefused", "Checkpoint", &note);
    announce(&ctx.recorder, policy, event).await;
    Ok(())
}

/// Deletes a PodCheckpoint retention lets go, only if it is still the object the plan saw;
/// its ContainerCheckpoints, their Contents and every copy of their images follow through
/// owner references and noded's finalizer.
async fn delete(
    ctx: &Context,
    api: &Api<PodCheckpoint>,
    policy: &CheckpointPolicy,
    doomed: &Doomed,
) -> Result<(), Error> {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(doomed.uid.clone()),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(&doomed.name, &params).await {
        Ok(_) => {
            info!(policy = %policy.name_any(), namespace = %policy.namespace().unwrap_or_default(), pod_checkpoint = %doomed.name, why = %doomed.why, "deleted PodCheckpoint");
            let note = format!("PodCheckpoint {}: {}", doomed.name, doomed.why);
            let event = event(EventType::Normal, "CheckpointDeleted", "Retain", &note);
            announce(&ctx.recorder, policy, event).await;
            Ok(())
        }
        // Gone already, or another object of that name now.
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Ok(()),
        Err(source) => Err(failed(format!("deleting PodCheckpoint {}", doomed.name))(
            source,
        )),
    }
}

fn event(type_: EventType, reason: &str, action: &str, note: &str) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncated(note, MAX_EVENT_NOTE)),
        action: action.to_owned(),
        secondary: None,
    }
}

#[cfg(test)]
mod tests;
