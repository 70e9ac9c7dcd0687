//! CheckpointPolicies: PodCheckpoints of the pods a policy selects, on its schedule, and
//! retention of them ([`plan`] decides; [`shell`] reads, acts and reports). The policy owns
//! nothing: its PodCheckpoints carry its name in a label, and outlive it. Runs on the leader
//! only, beside the pod-level controllers.

mod lost;
mod plan;

pub use plan::checkpoint;
mod shell;

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use checkpointing::crd::{CheckpointPolicy, PodCheckpoint};
use checkpointing::names::{CONTROLLER_MANAGER, POLICY_LABEL};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Controller;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{self, ObjectRef, Store, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::shell::{log, retry};

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// The cluster's Nodes: which are lost (`onNodeLoss`).
    pub nodes: Store<Node>,
    /// How long a node may not be Ready before it counts as lost.
    pub node_loss_after: Duration,
}

/// Runs the policy controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    node_loss_after: Duration,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let config = watcher::Config::default;
    let (nodes, writer) = reflector::store();
    // Only what can make a node lost or not: Ready's status and the out-of-service taint, not
    // every heartbeat.
    let node_events = reflector(writer, watcher(Api::<Node>::all(client.clone()), config()))
        .default_backoff()
        .touched_objects()
        .predicate_filter(loss_state, Default::default());
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), CONTROLLER_MANAGER.into()),
        client: client.clone(),
        nodes,
        node_loss_after,
    });
    let controller = Controller::new(Api::<CheckpointPolicy>::all(client.clone()), config());
    let policies = controller.store();
    let guarding = policies.clone();
    // Only what can make a pod due or not: appearing, its labels, running, going. Status
    // changes of running pods (most pod events) reconcile nothing.
    let pods = watcher(Api::<Pod>::all(client.clone()), config())
        .default_backoff()
        .touched_objects()
        .predicate_filter(selection_state, Default::default());
    controller
        // A policy's PodCheckpoints carry its name: their changes reconcile it.
        .watches(
            Api::<PodCheckpoint>::all(client),
            config().labels(POLICY_LABEL),
            |pc: PodCheckpoint| {
                let policy = pc.labels().get(POLICY_LABEL)?.clone();
                Some(ObjectRef::new(&policy).within(&pc.namespace()?))
            },
        )
        .watches_stream(pods, move |pod: Pod| selecting(&policies, &pod))
        .watches_stream(node_events, move |_: Node| restoring(&guarding))
        .graceful_shutdown_on(shutdown)
        .run(shell::reconcile, retry, ctx)
        .for_each(|result| async move { log("CheckpointPolicy", result) })
        .await;
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
