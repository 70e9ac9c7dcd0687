//! The trigger of every restore on this node: a pod bound here that the webhook admitted to
//! restore, seen while the kubelet is still making its sandbox. Its checkpoint images, all in
//! the node-local registry (pushed checkpoints' too), are fetched at once
//! ([`super::Restore::ahead`]), so the runtime's pull, moments later, finds them here.

use std::sync::Arc;

use checkpointing::cri::Runtime;
use checkpointing::names::RESTORED_FROM_DIGEST_ANNOTATION;
use checkpointing::reference::ImageRef;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::Restore;
use crate::cluster::Cluster;
use crate::error::error_chain;

/// Pods handled at once: each may wait for a fetch.
const CONCURRENCY: usize = 4;

/// The checkpoint images a pod admitted to restore, and not running yet, pulls from the
/// node-local registry (on loopback at `port`), however the pod spells its host.
pub fn restored_images(pod: &Pod, port: u16) -> Vec<ImageRef> {
    let restoring = pod
        .metadata
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(RESTORED_FROM_DIGEST_ANNOTATION));
    let pending = pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Pending");
    let Some(spec) = pod.spec.as_ref().filter(|_| restoring && pending) else {
        return Vec::new();
    };
    spec.containers
        .iter()
        .filter_map(|c| ImageRef::parse(c.image.as_deref()?).ok())
        .filter(|image| image.is_node_local(port))
        .collect()
}

/// Watches the pods of `node` until the stream ends, fetching ahead the checkpoint images of
/// each arriving restore (the node-local registry's on loopback at `port`).
pub async fn run<R: Runtime + 'static, C: Cluster>(
    client: kube::Client,
    node: String,
    port: u16,
    restore: Arc<Restore<R, C>>,
) {
    let pods: Api<Pod> = Api::all(client);
    let config = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    watcher(pods, config)
        .default_backoff()
        .applied_objects()
        .filter_map(|pod| async move {
            pod.map_err(|e| tracing::warn!(error = %error_chain(&e), "watching this node's pods"))
                .ok()
        })
        .for_each_concurrent(CONCURRENCY, |pod| {
            let restore = restore.clone();
            async move {
                for image in restored_images(&pod, port) {
                    if let Err(e) = restore.ahead(&image).await {
                        // The runtime's own pull asks again and fails with the same reason,
                        // for the kubelet.
                        tracing::info!(pod = ?pod.metadata.name, %image, error = %error_chain(&e),
                            "fetching a checkpoint image ahead of its pull");
                    }
                }
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
