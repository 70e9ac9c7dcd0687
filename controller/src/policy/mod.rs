//! CheckpointPolicies: PodCheckpoints of the pods a policy selects, on its schedule, and
//! retention of them ([`plan`] decides; [`shell`] reads, acts and reports). The policy owns
//! nothing: its PodCheckpoints carry its name in a label, and outlive it. Runs on the leader
//! only, beside the pod-level controllers.

mod plan;

pub use plan::checkpoint;
mod shell;

use std::collections::BTreeMap;
use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

use checkpointing::crd::{CheckpointPolicy, PodCheckpoint};
use checkpointing::names::{CONTROLLER_MANAGER, POLICY_LABEL};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::core::{Selector, SelectorExt};
use kube::runtime::controller::Controller;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};

use crate::shell::{log, retry};

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
}

/// Runs the policy controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), CONTROLLER_MANAGER.into()),
        client: client.clone(),
    });
    let config = watcher::Config::default;
    let controller = Controller::new(Api::<CheckpointPolicy>::all(client.clone()), config());
    let policies = controller.store();
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
