//! The restores landing on this node, prepared while the kubelet is still making their sandbox.
//! noded watches the pods bound to its node that the webhook admitted to restore:
//! - a checkpoint image of the node-local registry is fetched from the node that holds it at
//!   once, so the runtime's pull, moments later, finds it here;
//! - for a checkpoint image the runtime pulls from an external registry, noded does not serve
//!   the pull, so nothing would make the checkpoint's base image present first, and CRI-O never
//!   pulls it itself: noded pulls the base image the checkpoint's Content names.

use std::sync::Arc;

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::Runtime;
use checkpointing::names::RESTORED_FROM_DIGEST_ANNOTATION;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};

use super::Restore;
use crate::cluster::Cluster;
use crate::error::error_chain;

/// Pods handled at once: each may wait for a pull.
const CONCURRENCY: usize = 4;

/// The checkpoint images a pod admitted to restore, and not running yet, pulls: those of the
/// node-local registry `local` as `<namespace>/<name>@<digest>` (what follows `local/`), and
/// the others whole.
pub fn restored_images<'a>(pod: &'a Pod, local: &str) -> (Vec<&'a str>, Vec<&'a str>) {
    let restoring = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(RESTORED_FROM_DIGEST_ANNOTATION));
    let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    let Some(spec) = pod.spec.as_ref().filter(|_| restoring && pending) else {
        return (Vec::new(), Vec::new());
    };
    let local = format!("{local}/");
    let (mut here, mut external) = (Vec::new(), Vec::new());
    for image in spec.containers.iter().filter_map(|c| c.image.as_deref()) {
        match image.strip_prefix(&local) {
            Some(repo) => here.push(repo),
            None if image.contains('@') => external.push(image),
            None => {}
        }
    }
    (here, external)
}

/// The base image of the checkpoint whose image is `image`, as its Content records it.
pub fn recorded_base<'a>(
    contents: &'a [ContainerCheckpointContent],
    image: &str,
) -> Option<&'a str> {
    contents
        .iter()
        .filter_map(|c| c.status.as_ref())
        .find(|s| s.image.as_deref() == Some(image))
        .and_then(|s| s.base_image.as_deref())
}

/// Watches the pods of `node` until the stream ends, making the base image of each arriving
/// external restore present.
pub async fn run<R: Runtime + 'static, C: Cluster>(
    client: kube::Client,
    node: String,
    local: String,
    restore: Arc<Restore<R, C>>,
) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    watcher(pods, config)
        .default_backoff()
        .applied_objects()
        .filter_map(|pod| async move {
            pod.map_err(|e| tracing::warn!(error = %error_chain(&e), "watching this node's pods"))
                .ok()
        })
        .for_each_concurrent(CONCURRENCY, |pod| {
            let (client, local, restore) = (client.clone(), local.as_str(), restore.clone());
            async move { prepare(&client, &pod, local, &restore).await }
        })
        .await;
}

/// Fetches the node-local checkpoint images `pod` restores from, and pulls the base image of
/// each external one.
async fn prepare<R: Runtime + 'static, C: Cluster>(
    client: &kube::Client,
    pod: &Pod,
    local: &str,
    restore: &Restore<R, C>,
) {
    let (here, external) = restored_images(pod, local);
    for image in here {
        if let Err(e) = restore.ahead(image).await {
            // The runtime's own pull asks again and fails with the same reason, for the kubelet.
            tracing::info!(pod = ?pod.metadata.name, %image, error = %error_chain(&e), "fetching a checkpoint image ahead of its pull");
        }
    }
    let Some(namespace) = pod
        .metadata
        .namespace
        .as_deref()
        .filter(|_| !external.is_empty())
    else {
        return;
    };
    let contents = match Api::<ContainerCheckpointContent>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(e) => {
            tracing::warn!(%namespace, error = %error_chain(&e), "listing Contents for a restore");
            return;
        }
    };
    for image in external {
        let Some(base) = recorded_base(&contents, image) else {
            continue;
        };
        if let Err(e) = restore.ensure_image(base).await {
            // The kubelet's restore then fails, and is retried, with the runtime's own reason.
            tracing::warn!(pod = ?pod.metadata.name, %base, error = %error_chain(&e),
                "making the base image of a restore present");
        }
    }
}

#[cfg(test)]
mod tests;
