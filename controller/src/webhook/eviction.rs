//! What an eviction (`kubectl drain`, the Eviction API) of a pod a CheckpointPolicy protects
//! does first. Pure: the shell ([`super::evict`]) looks up the pod, its namespace's policies,
//! budgets and earlier attempts, and creates what this decides.
//!
//! With `onEviction: Migrate` the eviction waits (429, which `kubectl drain` retries every 5 s)
//! while a PodMigration moves the pod to another node; the migration deletes the pod, and the
//! drain's next try finds it gone. With `Checkpoint` it waits for a PodCheckpoint, then goes
//! on. A failed attempt keeps the pod where it is, the eviction refused with its reason, and
//! is tried again a minute later, at most [`MAX_ATTEMPTS`] times. A migration would disrupt
//! the pod as an eviction does, so it waits for the pod's PodDisruptionBudgets as one would.
//!
//! A StatefulSet's pod comes back under its name, and `kubectl drain` evicts by name: its next
//! try would evict the restored pod from the node it moved to. So an eviction of the restored
//! copy of such a migration, while the node it left is cordoned and its own is not, is
//! answered 404: the pod the drain means is gone from the drained node.
//!
//! Starting a migration or checkpoint is the one thing a webhook answer does besides answering.
//! When the webhook cannot tell the API server from another caller (no client CA), a pod could
//! post a made-up eviction review: so it starts one only for a pod on a cordoned node, whose
//! drain is under way and would start the same ([`Observed::trusted`]).

use std::collections::BTreeMap;
use std::time::Duration;

use checkpointing::crd::{
    CheckpointPolicy, CheckpointState, MigrationPhase, OnEviction, PodCheckpoint, PodMigration,
    PodMigrationSpec,
};
use checkpointing::names::{EVICTION_LABEL, POLICY_LABEL, for_pod};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::core::{Selector, SelectorExt};
use kube::{Resource, ResourceExt};

use crate::policy::checkpoint;

/// Attempts per pod before the eviction is refused for good (until someone acts).
pub const MAX_ATTEMPTS: usize = 3;
/// Wait after a failed attempt before the next eviction starts another.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// What the decision reads.
pub struct Observed<'a> {
    pub pod: &'a Pod,
    /// The policies of the pod's namespace.
    pub policies: &'a [CheckpointPolicy],
    /// The PodDisruptionBudgets of the pod's namespace.
    pub budgets: &'a [PodDisruptionBudget],
    /// The PodMigrations and PodCheckpoints of the namespace started for evictions.
    pub migrations: &'a [PodMigration],
    pub checkpoints: &'a [PodCheckpoint],
    /// When the pod is the restored copy of an eviction's migration ([`copy_of`]): the node
    /// it left, if that node is cordoned while the pod's own is not.
    pub left_drained_node: Option<&'a str>,
    pub now: Timestamp,
    /// Whether this eviction may start a migration or checkpoint: the caller proved to be the
    /// API server (client certificate), or the pod's node is cordoned.
    pub trusted: bool,
}

/// The answer to one eviction.
#[derive(Debug)]
pub enum Decision {
    /// Not protected, or protected already: the eviction goes on as for any pod.
    Allow,
    /// The eviction waits (429); `start` is created first.
    Wait {
        message: String,
        start: Option<Start>,
    },
    /// 404: the pod the eviction means has left the node being drained.
    Gone { message: String },
}

/// What an eviction starts.
#[derive(Debug)]
pub enum Start {
    Migration(Box<PodMigration>),
    Checkpoint(Box<PodCheckpoint>),
}

/// One earlier attempt, reduced to what the decision needs.
struct Attempt {
    kind: &'static str,
    name: String,
    created: Timestamp,
    /// None while it runs; Some(None) succeeded; Some(Some(why)) failed.
    outcome: Option<Option<String>>,
}

pub fn decide(o: &Observed) -> Decision {
    let pod = o.pod;
    if let (Some(from), Some(m)) = (o.left_drained_node, copy_of(pod, o.migrations)) {
        return Decision::Gone {
            message: format!(
                "pod {:?} left node {from}, which is being drained, by PodMigration {:?}; \
                 the pod of this name runs on another node now",
                pod.name_any(),
                m.name_any()
            ),
        };
    }
    let running = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running");
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let (Some(node), true, None) = (node, running, &pod.metadata.deletion_timestamp) else {
        return Decision::Allow;
    };
    let Some((policy, action)) = protecting(o.policies, pod) else {
        return Decision::Allow;
    };
    let name = pod.name_any();
    let attempts = attempts(o, pod, action);
    let Some(newest) = attempts.first() else {
        if action == OnEviction::Migrate
            && let Some(budget) = exhausted_budget(o.budgets, pod)
        {
            return Decision::Wait {
                message: format!(
                    "pod {name:?} is protected by CheckpointPolicy {:?} (onEviction: Migrate), \
                     but moving it now would take PodDisruptionBudget {budget:?} below its \
                     minimum (no disruption allowed); it is moved once the budget allows",
                    policy.name_any()
                ),
                start: None,
            };
        }
        return start(o, policy, action, &node, 1);
    };
    let policy_name = policy.name_any();
    match &newest.outcome {
        None => Decision::Wait {
            message: format!(
                "{} {:?} of CheckpointPolicy {policy_name:?} is {} pod {name:?} (on node \
                 {node}); the eviction completes when it is done",
                newest.kind,
                newest.name,
                if action == OnEviction::Migrate {
                    "moving"
                } else {
                    "checkpointing"
                }
            ),
            start: None,
        },
        Some(None) => Decision::Allow,
        Some(Some(why)) => {
            let failed = format!(
                "{} {:?} failed: {why}; pod {name:?} stays on node {node}",
                newest.kind, newest.name
            );
            let retry_at = newest.created.checked_add(RETRY_AFTER).unwrap_or(o.now);
            if attempts.len() >= MAX_ATTEMPTS {
                Decision::Wait {
                    message: format!(
                        "{failed}. {MAX_ATTEMPTS} attempts failed: fix the cause and delete \
                         the {}s labelled {EVICTION_LABEL}={} to try again, or take the pod \
                         out of CheckpointPolicy {policy_name:?} to evict it as any pod",
                        newest.kind,
                        pod.uid().unwrap_or_default()
                    ),
                    start: None,
                }
            } else if o.now < retry_at {
                Decision::Wait {
                    message: format!("{failed}; another attempt starts after {retry_at}"),
                    start: None,
                }
            } else {
                start(o, policy, action, &node, attempts.len() + 1)
            }
        }
    }
}

/// The succeeded eviction migration whose restored copy `pod` is, under the evicted pod's own
/// name (a StatefulSet's pod).
pub fn copy_of<'a>(pod: &Pod, migrations: &'a [PodMigration]) -> Option<&'a PodMigration> {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    migrations.iter().find(|m| {
        let Some(status) = m.status.as_ref() else {
            return false;
        };
        m.labels().contains_key(EVICTION_LABEL)
            && status.phase == Some(MigrationPhase::Succeeded)
            && status.restored_pod.as_deref() == pod.metadata.name.as_deref()
            && status.source_pod_uid.is_some()
            && status.source_pod_uid != pod.metadata.uid
            && status.source_node.is_some()
            && status.source_node.as_deref() != node
    })
}

/// The first policy (by name) that selects `pod` and says what an eviction does.
fn protecting<'a>(
    policies: &'a [CheckpointPolicy],
    pod: &Pod,
) -> Option<(&'a CheckpointPolicy, OnEviction)> {
    let mut protecting: Vec<(&CheckpointPolicy, OnEviction)> = policies
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| selects(Some(&p.spec.selector), pod))
        .filter_map(|p| Some((p, p.spec.on_eviction?)))
        .collect();
    protecting.sort_by_key(|(p, _)| p.name_any());
    protecting.into_iter().next()
}

/// Whether `selector` picks `pod`; an empty one picks every pod, a missing or unreadable one
/// none (as for a PodDisruptionBudget).
fn selects(selector: Option<&LabelSelector>, pod: &Pod) -> bool {
    let Some(Ok(selector)) = selector.cloned().map(Selector::try_from) else {
        return false;
    };
    selector.matches(&pod.labels().clone())
}

/// The name of a budget of `pod` that allows no disruption now.
fn exhausted_budget(budgets: &[PodDisruptionBudget], pod: &Pod) -> Option<String> {
    budgets
        .iter()
        .filter(|b| selects(b.spec.as_ref().and_then(|s| s.selector.as_ref()), pod))
        .find(|b| b.status.as_ref().is_none_or(|s| s.disruptions_allowed < 1))
        .map(ResourceExt::name_any)
}

/// This pod's earlier attempts of `action`, newest first.
fn attempts(o: &Observed, pod: &Pod, action: OnEviction) -> Vec<Attempt> {
    let uid = pod.uid().unwrap_or_default();
    let ours = |labels: &BTreeMap<String, String>| labels.get(EVICTION_LABEL) == Some(&uid);
    let mut found: Vec<Attempt> = match action {
        OnEviction::Migrate => o
            .migrations
            .iter()
            .filter(|m| ours(m.labels()))
            .map(|m| {
                let status = m.status.as_ref();
                let done = status.and_then(|s| s.phase).filter(|p| p.is_final());
                let succeeded = done.map(|p| p == MigrationPhase::Succeeded);
                let message = status.and_then(|s| s.message.as_deref());
                Attempt::new("PodMigration", &m.metadata, succeeded, message)
            })
            .collect(),
        OnEviction::Checkpoint => o
            .checkpoints
            .iter()
            .filter(|c| ours(c.labels()))
            .map(|c| {
                let status = c.status.as_ref();
                let done = status.and_then(|s| s.state).filter(|s| s.is_final());
                let succeeded = done.map(|s| s == CheckpointState::Completed);
                let message = status.and_then(|s| s.message.as_deref());
                Attempt::new("PodCheckpoint", &c.metadata, succeeded, message)
            })
            .collect(),
    };
    found.sort_by_key(|a| std::cmp::Reverse((a.created, a.name.clone())));
    found
}

impl Attempt {
    /// The attempt `meta` names: `succeeded` once final, failing with `message`.
    fn new(
        kind: &'static str,
        meta: &ObjectMeta,
        succeeded: Option<bool>,
        message: Option<&str>,
    ) -> Self {
        let failed = || Some(message.unwrap_or("failed").to_owned());
        Self {
            kind,
            name: meta.name.clone().unwrap_or_default(),
            created: meta
                .creation_timestamp
                .as_ref()
                .map_or(Timestamp::MIN, |t| t.0),
            outcome: succeeded.map(|ok| if ok { None } else { failed() }),
        }
    }
}

/// Starts attempt `n` of `action` for the pod, and says so.
fn start(
    o: &Observed,
    policy: &CheckpointPolicy,
    action: OnEviction,
    node: &str,
    n: usize,
) -> Decision {
    let pod = o.pod.name_any();
    if !o.trusted {
        return Decision::Wait {
            message: format!(
                "pod {pod:?} is protected by CheckpointPolicy {:?}, which acts on the evictions \
                 of cordoned nodes only (the webhook cannot tell who calls it: no client CA); \
                 cordon node {node} first (kubectl drain does) and evict it again",
                policy.name_any()
            ),
            start: None,
        };
    }
    let uid = o.pod.uid().unwrap_or_default();
    let policy_name = policy.name_any();
    let (kind, name, start) = match action {
        OnEviction::Migrate => {
            let mut m = PodMigration::new(
                &migration_name(&pod, &uid, n),
                PodMigrationSpec {
                    pod_name: pod.clone(),
                    target_node: None,
                    delete_source: None,
                    timeout_seconds: None,
                    registry: policy.spec.registry.clone(),
                    from_checkpoint: None,
                },
            );
            m.meta_mut().labels = Some(
                [
                    (EVICTION_LABEL.to_owned(), uid.clone()),
                    (POLICY_LABEL.to_owned(), policy_name.clone()),
                ]
                .into(),
            );
            ("PodMigration", m.name_any(), Start::Migration(Box::new(m)))
        }
        OnEviction::Checkpoint => {
            let mut pc = checkpoint(policy, &pod, o.now.as_second());
            pc.meta_mut()
                .labels
                .get_or_insert_default()
                .insert(EVICTION_LABEL.to_owned(), uid.clone());
            (
                "PodCheckpoint",
                pc.name_any(),
                Start::Checkpoint(Box::new(pc)),
            )
        }
    };
    let what = match action {
        OnEviction::Migrate => "moves it to another node",
        OnEviction::Checkpoint => "checkpoints it first",
    };
    // Present tense: a dry run answers the same, starting nothing.
    Decision::Wait {
        message: format!(
            "pod {pod:?} on node {node} is protected by CheckpointPolicy {policy_name:?}: \
             {kind} {name:?} {what} (attempt {n} of {MAX_ATTEMPTS}); the eviction completes \
             when it is done"
        ),
        start: Some(start),
    }
}

/// `evict-<pod>-<8 of its UID>-<attempt>` (see [`for_pod`]).
pub fn migration_name(pod: &str, uid: &str, attempt: usize) -> String {
    format!("{}-{attempt}", for_pod("evict", pod, uid))
}

#[cfg(test)]
mod tests;
