//! The pure decision of a PodMigration reconcile. The phases:
//!
//! - **Pending**: the pod must be running and bare or a ReplicaSet's or StatefulSet's; a named
//!   target must differ from its node and run a node daemon. Then a PodCheckpoint of the same
//!   name is asked for (the source freezes for it) → Checkpointing.
//! - **Checkpointing** until that PodCheckpoint is final → Restoring, or Failed with the source
//!   still running.
//! - **Restoring**. A bare pod's copy (named `<base>-<5 of the migration's UID>`) is created
//!   on the target while the source still runs, and the source is deleted only once the copy
//!   runs. A workload's pod is deleted first: its controller makes the replacement, which the
//!   webhook restores on the target, under the same owner (and, for a StatefulSet, the same
//!   name: never two of them live).
//! - **Succeeded** once every restored container runs: `downtimeMilliseconds` is from the
//!   checkpoint request to then, split at `restoreStartTime` (the checkpoint seen Completed)
//!   into its checkpoint and restore phases. **Failed** says what is left where, and how to
//!   retry.

use std::time::Duration;

use checkpointing::crd::{
    CheckpointState, MIGRATION_TIMEOUT_SECONDS, MigrationPhase, PodCheckpoint, PodCheckpointSpec,
    PodMigration, PodMigrationStatus,
};
use checkpointing::names::{
    CANNOT_RESTORE_ANNOTATION, DNS_LABEL_MAX, MIGRATION_LABEL, RESTORE_FROM_ANNOTATION,
    RESTORED_FROM_DIGEST_ANNOTATION, is_dns_subdomain, noded_lease_name,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

use super::health::{all_running, stuck};
use super::restored;
use crate::pending;
use crate::placement::Placement;
use crate::status::condition;
use crate::validation::{check_node_daemon, quoted_list, shown};
use crate::webhook::workload::WORKLOAD_KINDS;

pub use failure::Failure;

mod failure;

/// Default of `timeoutSeconds` (the schema's).
const MIGRATION_TIMEOUT: Duration = Duration::from_secs(MIGRATION_TIMEOUT_SECONDS.unsigned_abs());
/// How often a migration waiting on something unwatched (a pod going away) looks again.
const POLL: Duration = Duration::from_secs(1);
/// How often a failed migration looks again whether the containers it released still dump.
const RELEASE_POLL: Duration = Duration::from_secs(2);
/// The condition: `True` once the pod runs on the target.
pub const SUCCEEDED: &str = "Succeeded";

pub struct Observed<'a> {
    pub migration: &'a PodMigration,
    /// The pod named `spec.podName`, whichever it is now.
    pub pod: Option<&'a Pod>,
    pub checkpoint: Option<&'a PodCheckpoint>,
    /// The pods labelled with this migration.
    pub labelled: &'a [Pod],
    /// The noded Lease of `spec.targetNode`, if any.
    pub target_lease: Option<&'a Lease>,
    pub lease_namespace: &'a str,
    /// How long the migration may wait on a state that passes by itself.
    pub pending_timeout: Duration,
    pub now: Timestamp,
}

#[derive(Debug, Clone)]
pub enum Action {
    /// Server-side apply.
    CreateCheckpoint(Box<PodCheckpoint>),
    /// Create (an existing one of that name is ours from an earlier try).
    CreatePod(Box<Pod>),
    /// Delete the source: UID precondition, a second's grace (the checkpoint holds its state).
    DeleteSource { name: String, uid: String },
    /// Thaw the source's containers, frozen since their dump (the migration failed): annotate
    /// these Contents for their noded. Carried out before the status that makes the
    /// migration final, which is never planned again.
    ReleaseSource { contents: Vec<String> },
}

#[derive(Debug, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: Option<PodMigrationStatus>,
    pub requeue_after: Option<Duration>,
    /// Why the migration failed, when this plan fails it.
    pub failure: Option<Failure>,
}

/// What the reconcile must read besides the migration: the PodCheckpoint and the pods, until
/// it is final.
pub fn is_final(migration: &PodMigration) -> bool {
    phase(migration).is_some_and(MigrationPhase::is_final)
}

/// Whether deciding needs the pod named `spec.podName`: not once final, nor while its
/// checkpoint is being taken (only the PodCheckpoint's end moves the migration on then), and
/// never for a name that is not a pod's (it would reach an API path).
pub fn needs_pod(migration: &PodMigration, checkpoint: Option<&PodCheckpoint>) -> bool {
    let taken = checkpoint
        .and_then(|c| c.status.as_ref()?.state)
        .is_some_and(CheckpointState::is_final);
    let waiting = phase(migration) == Some(MigrationPhase::Checkpointing) && !taken;
    !is_final(migration) && !waiting && is_dns_subdomain(&migration.spec.pod_name)
}

fn phase(migration: &PodMigration) -> Option<MigrationPhase> {
    migration.status.as_ref().and_then(|s| s.phase)
}

pub fn plan(o: &Observed) -> Plan {
    let mut plan = decide(o);
    let failed =
        |s: Option<&PodMigrationStatus>| s.and_then(|s| s.phase) == Some(MigrationPhase::Failed);
    let Some(checkpoint) = o
        .checkpoint
        .filter(|c| c.spec.hold_source && holds(o.migration))
    else {
        return plan;
    };
    if !(failed(plan.status.as_ref()) || failed(o.migration.status.as_ref())) {
        return plan;
    }
    // Failed with its source held: release every container of it, until none is still being
    // dumped (one that completes after a release was asked for would stay frozen).
    let containers = checkpoint
        .status
        .as_ref()
        .map_or(&[][..], |s| &s.containers);
    let contents: Vec<String> = containers
        .iter()
        .map(|c| c.container_checkpoint.clone())
        .collect();
    if !contents.is_empty() {
        plan.actions.insert(0, Action::ReleaseSource { contents });
    }
    let dumping = containers.is_empty()
        || containers
            .iter()
            .any(|c| !c.state.is_some_and(CheckpointState::is_final));
    if dumping {
        plan.requeue_after = Some(RELEASE_POLL);
    }
    plan
}

/// Whether the migration asked for a PodCheckpoint that holds its source (it may have to
/// release it, even once final).
pub fn holds(m: &PodMigration) -> bool {
    m.spec.deletes_source()
        && m.status
            .as_ref()
            .is_some_and(|s| s.pod_checkpoint.is_some())
}

fn decide(o: &Observed) -> Plan {
    let m = o.migration;
    if m.metadata.deletion_timestamp.is_some() || is_final(m) {
        return Plan::default();
    }
    let status = m.status.clone().unwrap_or_default();
    if let Some(failure) = timed_out(o, &status) {
        return fail(m, status, failure, o.now);
    }
    match status.phase.unwrap_or(MigrationPhase::Pending) {
        MigrationPhase::Pending => start(o, status),
        MigrationPhase::Checkpointing => checkpointing(o, status),
        _ => restoring(o, status),
    }
}

fn timed_out(o: &Observed, status: &PodMigrationStatus) -> Option<Failure> {
    let m = o.migration;
    let limit = m
        .spec
        .timeout_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(MIGRATION_TIMEOUT, Duration::from_secs);
    let created = m.metadata.creation_timestamp.as_ref()?.0;
    let elapsed = o.now.duration_since(created);
    if elapsed.as_secs() < limit.as_secs() as i64 {
        return None;
    }
    let secs = limit.as_secs();
    Some(match status.phase {
        Some(MigrationPhase::Restoring) => Failure::RestoreTimedOut {
            secs,
            checkpoint: kept(m, status),
        },
        _ => Failure::CheckpointTimedOut { secs },
    })
}

/// Pending: checks, then the PodCheckpoint.
fn start(o: &Observed, mut status: PodMigrationStatus) -> Plan {
    let m = o.migration;
    let namespace = m.namespace().unwrap_or_default();
    let pod_name = &m.spec.pod_name;
    let refuse = |status, failure| fail(m, status, failure, o.now);
    let name = m.name_any();
    if name.len() > DNS_LABEL_MAX {
        return refuse(status, Failure::NameTooLong { name });
    }
    if !is_dns_subdomain(pod_name) {
        let failure = Failure::InvalidPodName {
            pod: pod_name.clone(),
        };
        return refuse(status, failure);
    }
    let Some(pod) = o.pod else {
        let failure = Failure::PodNotFound {
            pod: pod_name.clone(),
            namespace,
        };
        return refuse(status, failure);
    };
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let from = m.spec.from_checkpoint.as_deref();
    // From a checkpoint, the pod's node is lost: what its phase says no longer matters.
    let node = match (phase, node) {
        (Some("Running"), Some(node)) => Some(node),
        (_, Some(node)) if from.is_some() => Some(node),
        _ => None,
    };
    let Some(node) = node else {
        let failure = Failure::PodNotRunning {
            pod: pod_name.clone(),
            phase: phase.map(str::to_owned),
        };
        let created = m.metadata.creation_timestamp.as_ref();
        let wait = failure
            .waits_for()
            .and_then(|what| pending::wait(what, created, o.pending_timeout, o.now));
        let Some(wait) = wait else {
            return refuse(status, failure);
        };
        status.phase = Some(MigrationPhase::Pending);
        status.message = Some(wait.message);
        return Plan {
            requeue_after: Some(wait.next_look),
            ..finish(m, status, failure.reason(), o.now)
        };
    };
    let owner = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if let Some(owner) = owner {
        let (kind, owner_name) = (owner.kind.clone(), owner.name.clone());
        if !WORKLOAD_KINDS.contains(&kind.as_str()) {
            let failure = Failure::UnsupportedOwner {
                pod: pod_name.clone(),
                kind,
                owner: owner_name,
            };
            return refuse(status, failure);
        }
        if !m.spec.deletes_source() {
            let failure = Failure::SourceMustGo {
                pod: pod_name.clone(),
                kind,
                owner: owner_name,
            };
            return refuse(status, failure);
        }
        status.owner = Some(format!("{kind}/{owner_name}"));
        status.owner_uid = Some(owner.uid.clone());
    }
    if let Some(target) = m.spec.target_node.as_deref() {
        if target == node {
            let failure = Failure::SameNode {
                pod: pod_name.clone(),
                target: target.to_owned(),
            };
            return refuse(status, failure);
        }
        let lease_ref = format!("{}/{}", o.lease_namespace, noded_lease_name(target));
        if let Err(refusal) = check_node_daemon(target, o.target_lease, &lease_ref, o.now) {
            return refuse(status, Failure::TargetUnavailable(refusal));
        }
        let cannot = o.target_lease.and_then(|l| {
            l.metadata
                .annotations
                .as_ref()?
                .get(CANNOT_RESTORE_ANNOTATION)
        });
        if let Some(why) = cannot {
            let failure = Failure::TargetCannotRestore {
                target: target.to_owned(),
                why: why.clone(),
            };
            return refuse(status, failure);
        }
        status.target_node = Some(target.to_owned());
    }
    if let Some(from) = from {
        return from_checkpoint(o, status, pod, node, from);
    }
    status.phase = Some(MigrationPhase::Checkpointing);
    status.source_node = Some(node.clone());
    status.source_pod_uid = pod.metadata.uid.clone();
    status.pod_checkpoint = Some(name.clone());
    status.checkpoint_request_time = Some(MicroTime(o.now));
    status.message = Some(format!(
        "checkpointing every container of pod {} on node {node:?} (PodCheckpoint {name:?})",
        shown(pod_name)
    ));
    Plan {
        actions: vec![Action::CreateCheckpoint(Box::new(pod_checkpoint(m)))],
        ..finish(m, status, "Checkpointing", o.now)
    }
}

/// Pending, with `fromCheckpoint`: no checkpoint to take (the pod's node is lost), straight to
/// Restoring from that one, if it is the pod's and Completed.
fn from_checkpoint(
    o: &Observed,
    mut status: PodMigrationStatus,
    pod: &Pod,
    node: String,
    from: &str,
) -> Plan {
    let m = o.migration;
    let pod_name = &m.spec.pod_name;
    let found = o
        .checkpoint
        .filter(|c| c.metadata.name.as_deref() == Some(from) && &c.spec.pod_name == pod_name);
    let Some(checkpoint) = found else {
        let failure = Failure::CheckpointNotFound {
            from: from.to_owned(),
            pod: pod_name.clone(),
        };
        return fail(m, status, failure, o.now);
    };
    let state = checkpoint.status.as_ref().and_then(|s| s.state);
    if state != Some(CheckpointState::Completed) {
        let failure = Failure::CheckpointNotCompleted {
            from: from.to_owned(),
            state: state.map_or("not started".to_owned(), |s| format!("{s:?}")),
        };
        return fail(m, status, failure, o.now);
    }
    let taken = checkpoint.metadata.creation_timestamp.as_ref().map(|t| t.0);
    let age = taken.map_or_else(String::new, |t| {
        format!(
            ", taken {}s before",
            o.now.duration_since(t).as_secs().max(0)
        )
    });
    status.source_node = Some(node.clone());
    status.source_pod_uid = pod.metadata.uid.clone();
    status.pod_checkpoint = Some(from.to_owned());
    status.checkpoint_request_time = Some(MicroTime(o.now));
    status.restore_start_time = Some(MicroTime(o.now));
    status.phase = Some(MigrationPhase::Restoring);
    status.message = Some(format!(
        "restoring pod {} away from node {node:?} from PodCheckpoint {from:?}{age}",
        shown(pod_name)
    ));
    restoring(o, status)
}

/// The PodCheckpoint of the migration: same name, owned by it, every container, same registry.
fn pod_checkpoint(m: &PodMigration) -> PodCheckpoint {
    let spec = PodCheckpointSpec {
        pod_name: m.spec.pod_name.clone(),
        containers: Vec::new(),
        timeout_seconds: None,
        registry: m.spec.registry.clone(),
        // From its dump on, a source that goes must not acknowledge anything its copy would not
        // know; a copy's source (deleteSource false) runs on.
        hold_source: m.spec.deletes_source(),
    };
    let mut checkpoint = PodCheckpoint::new(&m.name_any(), spec);
    checkpoint.metadata.namespace = m.namespace();
    checkpoint.metadata.owner_references = m.controller_owner_ref(&()).map(|o| vec![o]);
    checkpoint
}

fn checkpointing(o: &Observed, mut status: PodMigrationStatus) -> Plan {
    let m = o.migration;
    let pc_status = o.checkpoint.and_then(|c| c.status.as_ref());
    match pc_status.and_then(|s| s.state) {
        Some(CheckpointState::Completed) => {
            status.phase = Some(MigrationPhase::Restoring);
            status.restore_start_time = Some(MicroTime(o.now));
            status.message = Some(restoring_message(m, &status));
            // Straight on: a bare pod's copy is created, a workload's pod deleted, right now.
            restoring(o, status)
        }
        Some(CheckpointState::Failed) => {
            let why = pc_status
                .and_then(|s| s.message.clone())
                .unwrap_or_default();
            fail(m, status, Failure::CheckpointFailed { why }, o.now)
        }
        // Not there (yet, or no longer): apply it again, which changes nothing if it is.
        _ if o.checkpoint.is_none() => Plan {
            actions: vec![Action::CreateCheckpoint(Box::new(pod_checkpoint(m)))],
            ..Plan::default()
        },
        _ => Plan::default(),
    }
}

fn restoring(o: &Observed, mut status: PodMigrationStatus) -> Plan {
    let m = o.migration;
    let source_uid = status.source_pod_uid.clone().unwrap_or_default();
    let source = o
        .pod
        .filter(|p| p.metadata.uid.as_deref() == Some(source_uid.as_str()));
    let source_live = source.is_some_and(|p| p.metadata.deletion_timestamp.is_none());
    let delete_source = Action::DeleteSource {
        name: m.spec.pod_name.clone(),
        uid: source_uid.clone(),
    };
    let bare = status.owner_uid.is_none();
    let mut actions = Vec::new();
    let restored = restored_pod(m, &status, o.labelled);
    let Some(restored) = restored else {
        if bare {
            match source {
                Some(pod) => {
                    let copy = restored::copy(pod, m, &status);
                    actions.push(Action::CreatePod(Box::new(copy)));
                }
                None => {
                    let checkpoint = kept(m, &status);
                    return fail(m, status, Failure::SourceGone { checkpoint }, o.now);
                }
            }
        } else if source_live && m.spec.deletes_source() {
            actions.push(delete_source);
        } else if let Some(fresh) = started_afresh(o.pod, &status) {
            return fail(m, status, fresh, o.now);
        }
        let mut plan = finish(m, status, "Restoring", o.now);
        plan.actions = actions;
        plan.requeue_after = Some(POLL);
        return plan;
    };
    status.restored_pod = Some(restored.name_any());
    status.target_node = restored
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .or(status.target_node);
    if let Some(problem) = stuck(restored) {
        let failure = Failure::RestoreFailed {
            restored: restored.name_any(),
            problem,
            source_live,
            checkpoint: kept(m, &status),
        };
        return fail(m, status, failure, o.now);
    }
    if !all_running(restored) {
        status.message = Some(format!(
            "restored pod {:?} is starting on node {:?}",
            restored.name_any(),
            status
                .target_node
                .as_deref()
                .unwrap_or("(not scheduled yet)")
        ));
        // The labelled pods are watched: their changes bring the next reconcile.
        return finish(m, status, "Restoring", o.now);
    }
    // The downtime ends when every restored container is first seen running.
    let running_at = status.running_time.get_or_insert(MicroTime(o.now)).0;
    let started = status.checkpoint_request_time.as_ref().map(|t| t.0);
    status.downtime_milliseconds = started.map(|t| millis(t, running_at));
    if bare && source_live && m.spec.deletes_source() {
        // Not Succeeded before the source is gone: a final migration is never looked at again.
        status.message = Some(format!(
            "restored pod {:?} runs on node {:?}; deleting the source pod",
            restored.name_any(),
            status.target_node.as_deref().unwrap_or_default()
        ));
        let mut plan = finish(m, status, "Restoring", o.now);
        plan.actions = vec![delete_source];
        plan.requeue_after = Some(POLL);
        return plan;
    }
    status.phase = Some(MigrationPhase::Succeeded);
    // From a lost node's checkpoint, what was lost is how old it was when the restore began.
    let taken = o
        .checkpoint
        .and_then(|c| c.metadata.creation_timestamp.as_ref());
    let age = match (&m.spec.from_checkpoint, taken, started) {
        (Some(_), Some(taken), Some(began)) => format!(
            " (taken {}s before the restore began)",
            began.duration_since(taken.0).as_secs().max(0)
        ),
        _ => String::new(),
    };
    let phases = match (started, status.restore_start_time.as_ref()) {
        (Some(started), Some(restore)) => format!(
            " (checkpoint {} ms, restore {} ms)",
            millis(started, restore.0),
            millis(restore.0, running_at)
        ),
        _ => String::new(),
    };
    status.message = Some(format!(
        "pod {:?} runs on node {:?} from PodCheckpoint {:?}{age}; downtime {} ms{phases}",
        restored.name_any(),
        status.target_node.as_deref().unwrap_or_default(),
        status.pod_checkpoint.as_deref().unwrap_or_default(),
        status.downtime_milliseconds.unwrap_or_default()
    ));
    finish(m, status, "Succeeded", o.now)
}

/// Milliseconds from `from` to `to` (none before it).
fn millis(from: Timestamp, to: Timestamp) -> i64 {
    to.duration_since(from)
        .as_millis()
        .max(0)
        .try_into()
        .unwrap_or(i64::MAX)
}

/// The pod that restores this migration: labelled with it, restoring from its PodCheckpoint
/// with the webhook's marker (which no user can set), and not the source.
fn restored_pod<'p>(
    m: &PodMigration,
    status: &PodMigrationStatus,
    labelled: &'p [Pod],
) -> Option<&'p Pod> {
    let name = m.name_any();
    labelled.iter().find(|p| {
        let annotations = p.metadata.annotations.as_ref();
        p.labels().get(MIGRATION_LABEL) == Some(&name)
            && annotations.and_then(|a| a.get(RESTORE_FROM_ANNOTATION))
                == status.pod_checkpoint.as_ref()
            && annotations.is_some_and(|a| a.contains_key(RESTORED_FROM_DIGEST_ANNOTATION))
            && p.metadata.uid != status.source_pod_uid
            && p.metadata.deletion_timestamp.is_none()
    })
}

/// A StatefulSet's pod of the source's name that the webhook did not restore (it was not
/// reachable): say so rather than wait.
fn started_afresh(pod: Option<&Pod>, status: &PodMigrationStatus) -> Option<Failure> {
    let pod = pod?;
    let statefulset = status
        .owner
        .as_deref()
        .is_some_and(|o| o.starts_with("StatefulSet/"));
    let other = pod.metadata.uid != status.source_pod_uid;
    let unrestored = !pod.labels().contains_key(MIGRATION_LABEL);
    (statefulset && other && unrestored).then(|| Failure::NotRestored {
        pod: pod.name_any(),
        checkpoint: status.pod_checkpoint.clone().unwrap_or_default(),
    })
}

fn restoring_message(m: &PodMigration, status: &PodMigrationStatus) -> String {
    let target = match Placement::of(&m.spec, status) {
        Placement::On(node) => format!("node {node:?}"),
        Placement::AwayFrom(node) => format!("a node other than {node:?}"),
        Placement::Among(nodes) => format!("one of {}", quoted_list(&nodes)),
    };
    format!(
        "checkpointed; restoring pod {:?} on {target}",
        m.spec.pod_name
    )
}

/// Restoring, when creating the bare pod's copy was refused for good (`why`: the API server's
/// words, e.g. the restore webhook's "no node can restore this checkpoint: …"): Failed, with
/// the source still running.
pub fn copy_refused(m: &PodMigration, why: &str, now: Timestamp) -> Plan {
    let status = m.status.clone().unwrap_or_default();
    let failure = Failure::CopyRefused {
        why: why.to_owned(),
        checkpoint: kept(m, &status),
    };
    fail(m, status, failure, now)
}

/// The PodCheckpoint a failure after the checkpoint keeps.
fn kept(m: &PodMigration, status: &PodMigrationStatus) -> String {
    status
        .pod_checkpoint
        .clone()
        .unwrap_or_else(|| m.name_any())
}

/// The plan that fails the migration for `failure`.
fn fail(
    m: &PodMigration,
    mut status: PodMigrationStatus,
    failure: Failure,
    now: Timestamp,
) -> Plan {
    status.phase = Some(MigrationPhase::Failed);
    status.message = Some(failure.to_string());
    Plan {
        failure: Some(failure.clone()),
        ..finish(m, status, failure.reason(), now)
    }
}

/// The plan that writes `status` (with its condition and observedGeneration) if it changed.
fn finish(m: &PodMigration, mut status: PodMigrationStatus, reason: &str, now: Timestamp) -> Plan {
    let previous = m.status.as_ref().map_or(&[][..], |s| &s.conditions);
    let generation = m.meta().generation;
    status.conditions = vec![condition(
        previous,
        SUCCEEDED,
        status.phase == Some(MigrationPhase::Succeeded),
        reason,
        status.message.as_deref().unwrap_or_default(),
        generation,
        now,
    )];
    status.observed_generation = generation;
    Plan {
        status: (m.status.as_ref() != Some(&status)).then_some(status),
        ..Plan::default()
    }
}

#[cfg(test)]
mod tests;
