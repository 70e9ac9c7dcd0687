//! Why a PodMigration fails. `Display` is the status message; [`Failure::reason`] the
//! condition reason. Failures after the checkpoint name the PodCheckpoint that is kept
//! (`checkpoint`) and say how to restore from it.

use checkpointing::health::Stuck;
use checkpointing::names::{DNS_LABEL_MAX, RESTORE_FROM_ANNOTATION};

use crate::validation::{Refusal, shown};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error(
        "the checkpoint did not complete within {secs}s; the source pod keeps running: delete \
         this PodMigration and create it again"
    )]
    CheckpointTimedOut { secs: u64 },
    #[error(
        "the pod did not run on the target within {secs}s; {}",
        advice(.checkpoint)
    )]
    RestoreTimedOut { secs: u64, checkpoint: String },
    #[error(
        "the name {} is longer than {DNS_LABEL_MAX} characters: it labels the restored pod, and \
         label values are at most {DNS_LABEL_MAX}; give the PodMigration a shorter name",
        shown(.name)
    )]
    NameTooLong { name: String },
    #[error(
        "podName {} is not a pod name (lowercase letters, digits, '-' and '.')",
        shown(.pod)
    )]
    InvalidPodName { pod: String },
    #[error("pod {} not found in namespace {namespace:?}", shown(.pod))]
    PodNotFound { pod: String, namespace: String },
    /// `phase`: the pod's phase, if it has one.
    #[error(
        "pod {} is {}, not Running on a node; only a running pod can move",
        shown(.pod),
        in_words(.phase)
    )]
    PodNotRunning { pod: String, phase: Option<String> },
    #[error(
        "pod {} belongs to {kind} {owner:?}, whose pods cannot move; bare pods and the pods of \
         Deployments, ReplicaSets and StatefulSets can",
        shown(.pod)
    )]
    UnsupportedOwner {
        pod: String,
        kind: String,
        owner: String,
    },
    #[error(
        "pod {} belongs to {kind} {owner:?}, which would replace a copy: a workload's pod moves \
         only with deleteSource true",
        shown(.pod)
    )]
    SourceMustGo {
        pod: String,
        kind: String,
        owner: String,
    },
    #[error(
        "pod {} already runs on node {target:?}; name another targetNode",
        shown(.pod)
    )]
    SameNode { pod: String, target: String },
    #[error("{0}")]
    TargetUnavailable(Refusal),
    #[error("node {target:?} cannot restore checkpoints ({why}); name another targetNode")]
    TargetCannotRestore { target: String, why: String },
    #[error(
        "fromCheckpoint names PodCheckpoint {}, which is not a checkpoint of pod {} in this \
         namespace",
        shown(.from),
        shown(.pod)
    )]
    CheckpointNotFound { from: String, pod: String },
    /// `state`: the checkpoint's state, or "not started".
    #[error(
        "PodCheckpoint {} is {state}, not Completed: only a completed checkpoint restores",
        shown(.from)
    )]
    CheckpointNotCompleted { from: String, state: String },
    #[error(
        "the checkpoint failed ({why}); the source pod keeps running: fix the cause, delete \
         this PodMigration and create it again"
    )]
    CheckpointFailed { why: String },
    #[error(
        "the source pod was deleted before its copy was made; {}",
        advice(.checkpoint)
    )]
    SourceGone { checkpoint: String },
    /// A StatefulSet's pod of the source's name that the webhook did not restore.
    #[error(
        "the StatefulSet recreated pod {pod:?} without restoring it (the migration webhook was \
         not reachable), so it started afresh; PodCheckpoint {checkpoint:?} is kept"
    )]
    NotRestored { pod: String, checkpoint: String },
    #[error(
        "restored pod {restored:?} does not run: {problem}; {}; {}",
        if *.source_live { "the source pod keeps running" } else { "the source pod is gone" },
        advice(.checkpoint)
    )]
    RestoreFailed {
        restored: String,
        problem: Stuck,
        source_live: bool,
        checkpoint: String,
    },
    /// Creating a bare pod's copy was refused for good (`why`: the API server's words).
    #[error(
        "creating the restored pod was refused ({why}); the source pod keeps running; {}",
        advice(.checkpoint)
    )]
    CopyRefused { why: String, checkpoint: String },
}

impl Failure {
    /// CamelCase reason for the `Succeeded` condition and the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::CheckpointTimedOut { .. } | Self::RestoreTimedOut { .. } => "Timeout",
            Self::NameTooLong { .. } => "NameTooLong",
            Self::InvalidPodName { .. } => "InvalidPodName",
            Self::PodNotFound { .. } => "PodNotFound",
            Self::PodNotRunning { .. } => "PodNotRunning",
            Self::UnsupportedOwner { .. } => "UnsupportedOwner",
            Self::SourceMustGo { .. } => "SourceMustGo",
            Self::SameNode { .. } => "SameNode",
            Self::TargetUnavailable(_) => "TargetUnavailable",
            Self::TargetCannotRestore { .. } => "TargetCannotRestore",
            Self::CheckpointNotFound { .. } => "CheckpointNotFound",
            Self::CheckpointNotCompleted { .. } => "CheckpointNotCompleted",
            Self::CheckpointFailed { .. } => "CheckpointFailed",
            Self::SourceGone { .. } => "SourceGone",
            Self::NotRestored { .. } => "NotRestored",
            Self::RestoreFailed { .. } => "RestoreFailed",
            Self::CopyRefused { .. } => "CopyRefused",
        }
    }

    /// What the migration waits for when the failure is of a state that passes by itself (its
    /// pod not Running yet: no phase or Pending), for the message of a migration that waits;
    /// `None` for a failure for good.
    pub fn waits_for(&self) -> Option<String> {
        match self {
            Self::PodNotRunning { pod, phase }
                if phase.as_deref().is_none_or(|p| p == "Pending") =>
            {
                Some(format!(
                    "pod {} is {}, not Running on a node yet",
                    shown(pod),
                    in_words(phase)
                ))
            }
            _ => None,
        }
    }
}

fn in_words(phase: &Option<String>) -> &str {
    phase.as_deref().unwrap_or("not scheduled")
}

/// How to retry once the source may be gone: the checkpoint stays.
fn advice(checkpoint: &str) -> String {
    format!(
        "PodCheckpoint {checkpoint:?} is kept: fix the cause, then create the pod again \
         annotated {RESTORE_FROM_ANNOTATION}: {checkpoint} (deleting this PodMigration deletes \
         the checkpoint)"
    )
}
