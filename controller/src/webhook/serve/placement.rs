//! Where a restore may run: the look-ups [`eligible::place`] decides from (the node daemons'
//! Leases from the controller's watch, the checkpoint's Content) and the patch that applies
//! its answer.

use std::sync::atomic::Ordering;
use std::time::Duration;

use checkpointing::crd::ContainerCheckpointContent;
use k8s_openapi::api::core::v1::Affinity;
use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use serde_json::{Value, json};
use tracing::warn;

use super::Webhook;
use crate::kube_error::cause;
use crate::webhook::admission::{Denial, Source};
use crate::webhook::eligible::{self, Asked, NodeDaemon, Wanted};

/// How long reading a checkpoint's Content (for its runtime) may take; without it the Lease of
/// the checkpoint's node tells.
const CONTENT_BUDGET: Duration = Duration::from_secs(1);

/// Where a restore from `source` may run ([`eligible::place`]): the nodes as their daemons'
/// Leases tell, the checkpoint's runtime as its Content does. `None`: the pod is bound to a
/// node that can restore it.
pub(super) async fn placement(
    webhook: &Webhook,
    namespace: &str,
    source: &Source,
    asked: Asked<'_>,
) -> Result<Option<Affinity>, Denial> {
    if !webhook.leases_listed.load(Ordering::Relaxed) {
        return Err(Denial::LeasesNotListed);
    }
    let daemons: Vec<NodeDaemon> = webhook
        .leases
        .state()
        .iter()
        .filter_map(|lease| NodeDaemon::from_lease(lease))
        .collect();
    let runtime = match &source.content {
        Some(content) => content_runtime(&webhook.client, namespace, content).await,
        None => None,
    };
    let origin = source
        .node
        .as_deref()
        .and_then(|node| daemons.iter().find(|d| d.node == node));
    let wanted = Wanted::of(runtime.as_deref(), origin);
    eligible::place(asked, &daemons, &wanted, Timestamp::now()).map_err(Denial::Unplaceable)
}

/// The runtime that took a checkpoint, as its Content says; `None` when that cannot be read
/// in time (then the Lease of the checkpoint's node tells).
async fn content_runtime(client: &Client, namespace: &str, name: &str) -> Option<String> {
    let contents = Api::<ContainerCheckpointContent>::namespaced(client.clone(), namespace);
    match tokio::time::timeout(CONTENT_BUDGET, contents.get_opt(name)).await {
        Ok(Ok(content)) => content?.status?.runtime,
        Ok(Err(error)) => {
            warn!(namespace, content = name, error = %cause(&error), "reading a checkpoint's Content for its runtime");
            None
        }
        Err(_) => {
            warn!(
                namespace,
                content = name,
                "reading a checkpoint's Content for its runtime timed out"
            );
            None
        }
    }
}

/// The JSON patch operation that sets the pod's affinity (`add` replaces a member).
pub(super) fn set_affinity(affinity: &Affinity) -> Value {
    json!({"op": "add", "path": "/spec/affinity", "value": affinity})
}
