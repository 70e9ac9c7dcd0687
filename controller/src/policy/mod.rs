//! CheckpointPolicies: PodCheckpoints of the pods a policy selects, on its schedule, and
//! retention of them ([`plan`] decides; [`shell`] reads, acts and reports). The policy owns
//! nothing: its PodCheckpoints carry its name in a label, and outlive it. Runs on the leader
//! only, a peer of the request controllers over the same stores.

mod lost;
mod plan;
mod shell;

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use checkpointing::crd::{CheckpointPolicy, PodCheckpoint};
use checkpointing::names::POLICY_LABEL;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{ObjectRef, Store};

pub use plan::checkpoint;
pub use shell::reconcile;

use crate::stores::{PolicyTriggers, Stores};

/// What a policy's reconciles share; they create PodCheckpoints, which they list themselves.
pub type Context = crate::reconciles::Context<CheckpointPolicy, PodCheckpoint>;

/// The controller of the policies: a change of one, of a PodCheckpoint carrying its name, of a
/// pod it may select, or of a Node's readiness (for the policies that restore lost nodes' pods)
/// reconciles it.
pub fn controller(
    stores: &Stores,
    (policies, checkpoints, pods, nodes): PolicyTriggers,
) -> Controller<CheckpointPolicy> {
    let (selecting_from, restoring_from) = (stores.policies.clone(), stores.policies.clone());
    // Only what can make a pod due or not: appearing, its labels, running, going. Status
    // changes of running pods (most pod events) reconcile nothing.
    let pods = pods.predicate_filter(selection_state, Default::default());
    // Only what can make a node lost or not: Ready's status and the out-of-service taint, not
    // every heartbeat.
    let nodes = nodes.predicate_filter(loss_state, Default::default());
    Controller::for_stream(policies, stores.policies.clone())
        // A policy's PodCheckpoints carry its name: their changes reconcile it.
        .watches_stream(checkpoints, |pc: PodCheckpoint| {
            let policy = pc.labels().get(POLICY_LABEL)?.clone();
            Some(ObjectRef::new(&policy).within(&pc.namespace()?))
        })
        .watches_stream(pods, move |pod: Pod| selecting(&selecting_from, &pod))
        .watches_stream(nodes, move |_: Node| restoring(&restoring_from))
}

/// What of a pod decides whether a policy checkpoints it.
fn selection_state(pod: &Pod) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    pod.labels().hash(&mut hasher);
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .hash(&mut hasher);
    pod.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    Some(hasher.finish())
}

/// What of a node decides whether it is lost.
fn loss_state(node: &Node) -> Option<u64> {
    let mut hasher = DefaultHasher::new();
    let conditions = node.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| &c.status)
        .hash(&mut hasher);
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_ref());
    taints
        .iter()
        .flat_map(|t| t.iter())
        .map(|t| &t.key)
        .for_each(|k| k.hash(&mut hasher));
    Some(hasher.finish())
}

/// The policies that restore the pods of lost nodes.
fn restoring(policies: &Store<CheckpointPolicy>) -> Vec<ObjectRef<CheckpointPolicy>> {
    policies
        .state()
        .iter()
        .filter(|p| p.spec.on_node_loss.is_some())
        .map(|p| ObjectRef::from_obj(p.as_ref()))
        .collect()
}

/// The policies of the pod's namespace whose selector picks it.
fn selecting(policies: &Store<CheckpointPolicy>, pod: &Pod) -> Vec<ObjectRef<CheckpointPolicy>> {
    let namespace = pod.namespace();
    let no_labels = BTreeMap::new();
    let labels = pod.metadata.labels.as_ref().unwrap_or(&no_labels);
    policies
        .state()
        .iter()
        .filter(|policy| policy.namespace() == namespace)
        .filter(|policy| {
            Selector::try_from(policy.spec.selector.clone()).is_ok_and(|s| s.matches(labels))
        })
        .map(|policy| ObjectRef::from_obj(policy.as_ref()))
        .collect()
}
