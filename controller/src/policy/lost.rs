//! `onNodeLoss: Restore`: the selected pods of a lost node are made again on another node from
//! their newest Completed checkpoint of the policy that was pushed to a registry (the copy on
//! the lost node is gone with it), by a PodMigration `fromCheckpoint`. Pure; the policy's
//! shell reads the Nodes and creates the migrations.
//!
//! A node is lost once it carries the `node.kubernetes.io/out-of-service` taint (an
//! administrator's word that it is shut down) or its Node is deleted: its pods are known gone
//! (fenced). A node that has not been Ready for `after` is lost too, but only for pods that
//! cannot run twice by accident of their name: a StatefulSet's pod waits for the fence, since
//! a node that only stopped answering may still run it.

use std::collections::BTreeMap;
use std::time::Duration;

use checkpointing::crd::{
    CheckpointPolicy, CheckpointState, OnNodeLoss, PodCheckpoint, PodMigration, PodMigrationSpec,
};
use checkpointing::names::{LOST_POD_LABEL, OUT_OF_SERVICE_TAINT, POLICY_LABEL, for_pod};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};

/// Why a node is lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub why: String,
    /// Its pods are known gone: the taint, or the Node deleted.
    pub fenced: bool,
}

/// What the nodes say: the lost ones, and when the next one would be (a node not Ready, not
/// yet for `after`).
pub fn lost_nodes(
    nodes: &[&Node],
    after: Duration,
    now: Timestamp,
) -> (BTreeMap<String, Loss>, Option<Timestamp>) {
    let mut lost = BTreeMap::new();
    let mut next = None::<Timestamp>;
    let after = SignedDuration::try_from(after).unwrap_or(SignedDuration::MAX);
    for node in nodes {
        let name = node.name_any();
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
        if tainted {
            let why = format!("node {name} carries the taint {OUT_OF_SERVICE_TAINT}");
            lost.insert(name, Loss { why, fenced: true });
            continue;
        }
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"));
        let Some(ready) = ready.filter(|r| r.status != "True") else {
            continue;
        };
        let since = ready.last_transition_time.as_ref().map_or(now, |t| t.0);
        let at = since.checked_add(after).unwrap_or(Timestamp::MAX);
        if at <= now {
            let why = format!("node {name} has not been Ready since {since}");
            lost.insert(name, Loss { why, fenced: false });
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (lost, next)
}

/// What the policy reads to restore its pods of lost nodes.
pub struct Observed<'a> {
    pub policy: &'a CheckpointPolicy,
    /// The pods the selector picks, in any phase.
    pub pods: &'a [Pod],
    /// The PodCheckpoints labelled with the policy.
    pub checkpoints: &'a [PodCheckpoint],
    /// The PodMigrations of the namespace labelled `LOST_POD_LABEL`.
    pub migrations: &'a [PodMigration],
    pub lost: &'a BTreeMap<String, Loss>,
    /// Whether a Node of that name exists (one deleted is lost, fenced).
    pub node_exists: &'a dyn Fn(&str) -> bool,
    pub now: Timestamp,
}

/// A restore to start, and the Event that says which checkpoint and how old it is.
#[derive(Debug)]
pub struct Restore {
    pub migration: PodMigration,
    pub note: String,
}

/// The restores to start, and the pods of lost nodes that cannot be restored, in words.
pub fn restores(o: &Observed) -> (Vec<Restore>, Vec<String>) {
    let (mut start, mut cannot) = (Vec::new(), Vec::new());
    if o.policy.spec.on_node_loss != Some(OnNodeLoss::Restore) {
        return (start, cannot);
    }
    for pod in o.pods {
        let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        let loss = match o.lost.get(node) {
            Some(loss) => loss.clone(),
            None if !(o.node_exists)(node) => Loss {
                why: format!("node {node} was deleted"),
                fenced: true,
            },
            None => continue,
        };
        let name = pod.name_any();
        let uid = pod.uid().unwrap_or_default();
        let started = o
            .migrations
            .iter()
            .any(|m| m.labels().get(LOST_POD_LABEL) == Some(&uid));
        if started {
            continue;
        }
        if stateful(pod) && !loss.fenced {
            cannot.push(format!(
                "{}; StatefulSet pod {name:?} is restored once the node is known down (the \
                 taint {OUT_OF_SERVICE_TAINT}, or its Node deleted): it could still run there",
                loss.why
            ));
            continue;
        }
        let Some(checkpoint) = newest_pushed(o.checkpoints, &name) else {
            cannot.push(format!(
                "{}; pod {name:?} has no Completed checkpoint of this policy in a registry to \
                 restore from (set spec.registry: a copy on the lost node is gone with it)",
                loss.why
            ));
            continue;
        };
        let taken = checkpoint.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let age = taken.map_or_else(
            || "of unknown age".to_owned(),
            |t| format!("taken {}s ago", o.now.duration_since(t).as_secs().max(0)),
        );
        let migration = migration(o.policy, &name, &uid, &checkpoint.name_any());
        let note = format!(
            "{}: restoring pod {name:?} on another node from PodCheckpoint {:?} ({age}) by \
             PodMigration {:?}",
            loss.why,
            checkpoint.name_any(),
            migration.name_any()
        );
        start.push(Restore { migration, note });
    }
    (start, cannot)
}

fn stateful(pod: &Pod) -> bool {
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "StatefulSet")
}

/// The pod's newest Completed checkpoint that was pushed to a registry.
fn newest_pushed<'a>(checkpoints: &'a [PodCheckpoint], pod: &str) -> Option<&'a PodCheckpoint> {
    checkpoints
        .iter()
        .filter(|c| c.spec.pod_name == pod && c.spec.registry.is_some())
        .filter(|c| c.metadata.deletion_timestamp.is_none())
        .filter(|c| c.status.as_ref().and_then(|s| s.state) == Some(CheckpointState::Completed))
        .max_by_key(|c| {
            let created = c.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (created, c.name_any())
        })
}

/// `lost-<pod>-<8 of its UID>` ([`for_pod`]): one per pod of a lost node.
fn migration(policy: &CheckpointPolicy, pod: &str, uid: &str, checkpoint: &str) -> PodMigration {
    let name = for_pod("lost", pod, uid);
    let mut m = PodMigration::new(
        &name,
        PodMigrationSpec {
            pod_name: pod.to_owned(),
            target_node: None,
            delete_source: None,
            timeout_seconds: None,
            registry: None,
            from_checkpoint: Some(checkpoint.to_owned()),
        },
    );
    m.metadata.namespace = policy.namespace();
    m.meta_mut().labels = Some(
        [
            (LOST_POD_LABEL.to_owned(), uid.to_owned()),
            (POLICY_LABEL.to_owned(), policy.name_any()),
        ]
        .into(),
    );
    m
}

#[cfg(test)]
mod tests;
