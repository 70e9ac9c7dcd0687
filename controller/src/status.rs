//! Pure construction of a request's status, its `Ready` condition, and the Event a state
//! change deserves.

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointContent, ContainerCheckpointStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::events::{Event, EventType};

use crate::validation::Refusal;

/// The one condition type: `True` once the checkpoint is usable.
pub const READY: &str = "Ready";

/// Condition reason of a request whose Content failed on its node.
const NODE_FAILURE: &str = "CheckpointFailed";

/// Kubernetes caps a condition message at 32768 bytes; noded may report long runtime errors.
const MAX_CONDITION_MESSAGE: usize = 32 * 1024;

pub use checkpointing::text::{MAX_EVENT_NOTE, truncated};

/// Status of a request that will never get a Content.
pub fn refused(
    request: &ContainerCheckpoint,
    refusal: &Refusal,
    now: Timestamp,
) -> ContainerCheckpointStatus {
    failed(request, refusal.reason(), refusal.to_string(), now)
}

/// Status of a request that failed for `reason` (CamelCase) before reaching a node.
pub fn failed(
    request: &ContainerCheckpoint,
    reason: &str,
    message: String,
    now: Timestamp,
) -> ContainerCheckpointStatus {
    finish(
        request,
        ContainerCheckpointStatus {
            state: Some(CheckpointState::Failed),
            message: Some(message),
            ..Default::default()
        },
        reason,
        now,
    )
}

/// Status of a request that waits, before it has a Content of its own.
pub fn waiting(
    request: &ContainerCheckpoint,
    reason: &str,
    message: String,
    now: Timestamp,
) -> ContainerCheckpointStatus {
    finish(
        request,
        ContainerCheckpointStatus {
            state: Some(CheckpointState::Pending),
            message: Some(message),
            ..Default::default()
        },
        reason,
        now,
    )
}

/// The request's status as its Content tells it. A Content noded has not touched yet reads as
/// Pending, with the same message the controller writes when it creates the Content, so the
/// first mirror after creation changes nothing.
pub fn mirror(
    request: &ContainerCheckpoint,
    content: &ContainerCheckpointContent,
    now: Timestamp,
) -> ContainerCheckpointStatus {
    let node = &content.spec.node_name;
    let cs = content.status.clone().unwrap_or_default();
    let state = match cs.state {
        Some(state) => state,
        None if cs.ready => CheckpointState::Completed,
        None => CheckpointState::Pending,
    };
    let message = cs.message.filter(|m| !m.is_empty()).unwrap_or_else(|| {
        let container = &content.spec.container_name;
        match state {
            CheckpointState::Pending => requested_message(node),
            CheckpointState::Running => {
                format!("checkpointing container {container:?} on node {node}")
            }
            CheckpointState::Completed => {
                format!("checkpoint of container {container:?} taken on node {node}")
            }
            CheckpointState::Failed => format!("checkpoint failed on node {node}"),
        }
    });
    let reason = match state {
        CheckpointState::Pending => "Pending",
        CheckpointState::Running => "Running",
        CheckpointState::Completed => "Completed",
        CheckpointState::Failed => NODE_FAILURE,
    };
    finish(
        request,
        ContainerCheckpointStatus {
            state: Some(state),
            message: Some(message),
            node_name: Some(node.clone()),
            content_name: Some(content.name_any()),
            pod_uid: Some(content.spec.pod_uid.clone()),
            container_id: cs.container_id,
            checkpoint_time: cs.checkpoint_time,
            archive_size: cs.archive_size,
            image: cs.image,
            ..Default::default()
        },
        reason,
        now,
    )
}

pub fn requested_message(node: &str) -> String {
    format!(
        "checkpoint requested from the node daemon on {node}; its ContainerCheckpointContent shows progress"
    )
}

/// Adds the `Ready` condition and `observedGeneration`. The condition keeps its
/// lastTransitionTime while its status stays the same, so re-reconciling writes nothing.
fn finish(
    request: &ContainerCheckpoint,
    mut status: ContainerCheckpointStatus,
    reason: &str,
    now: Timestamp,
) -> ContainerCheckpointStatus {
    let generation = request.metadata.generation;
    let previous = request.status.as_ref().map_or(&[][..], |s| &s.conditions);
    status.conditions = vec![ready(
        previous,
        status.state,
        reason,
        status.message.as_deref(),
        generation,
        now,
    )];
    status.observed_generation = generation;
    status
}

/// The `Ready` condition of a request in `state`: `True` once Completed.
pub fn ready(
    previous: &[Condition],
    state: Option<CheckpointState>,
    reason: &str,
    message: Option<&str>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let completed = state == Some(CheckpointState::Completed);
    condition(
        previous,
        READY,
        completed,
        reason,
        message.unwrap_or_default(),
        generation,
        now,
    )
}

/// Condition `type_`, keeping its lastTransitionTime from `previous` while its status stays
/// the same, so re-reconciling writes nothing.
pub fn condition(
    previous: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map_or_else(
            || Time(whole_seconds(now)),
            |c| c.last_transition_time.clone(),
        );
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message: truncated(message, MAX_CONDITION_MESSAGE),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// A change to a final state: users hear about it through an Event. Earlier states are told
/// by the status alone; an Event each would cost an API call per request and say nothing the
/// status does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Completed,
    Failed,
}

/// The Event a move from `old` to `new` deserves: only a real change to a final state counts,
/// so a re-reconcile that rewrites the same state stays quiet.
pub fn transition(
    old: Option<CheckpointState>,
    new: Option<CheckpointState>,
) -> Option<Transition> {
    if old == new {
        return None;
    }
    match new? {
        CheckpointState::Pending | CheckpointState::Running => None,
        CheckpointState::Completed => Some(Transition::Completed),
        CheckpointState::Failed => Some(Transition::Failed),
    }
}

pub fn event(transition: Transition, message: &str) -> Event {
    let (type_, reason) = match transition {
        Transition::Completed => (EventType::Normal, "CheckpointCompleted"),
        Transition::Failed => (EventType::Warning, "CheckpointFailed"),
    };
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncated(message, MAX_EVENT_NOTE)),
        action: "Checkpoint".to_owned(),
        secondary: None,
    }
}

/// The reason of a request's condition (each kind has one), for the metrics.
pub fn reason(conditions: &[Condition]) -> &str {
    conditions.first().map_or("", |c| c.reason.as_str())
}

/// `t` in whole seconds, as the API server keeps times: a status we write then reads back
/// equal, which lets `Written` forget it once the store shows it.
pub fn whole_seconds(t: Timestamp) -> Timestamp {
    Timestamp::from_second(t.as_second()).unwrap_or(t)
}

#[cfg(test)]
mod tests;
