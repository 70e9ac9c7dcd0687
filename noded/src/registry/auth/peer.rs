//! The peer server's gate. A peer is another node's noded: its token, for [`PEER_AUDIENCE`],
//! names an allowed user and, being bound to the noded pod, the node that pod runs on. A fetch
//! needs a reason there: a pod bound to that node that the restore webhook admitted to restore
//! exactly that image. So a node's credential reaches only checkpoints restored on that node.

use axum::http::HeaderValue;
use checkpointing::names::{PEER_AUDIENCE, RESTORED_FROM_DIGEST_ANNOTATION};
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use k8s_openapi::api::core::v1::Pod;

use super::{BEARER, Denied, NODE_NAME, REVIEW_TTL, Reviews, authenticated, bearer, claim};
use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::recent::Recent;
use crate::registry::problem::Problem;

/// The node a peer's token speaks for: the API server authenticated it for [`PEER_AUDIENCE`]
/// as one of `allowed`, bound to a pod on that node.
pub fn decide_peer(status: &TokenReviewStatus, allowed: &[String]) -> Result<String, Denied> {
    let user = authenticated(status, PEER_AUDIENCE)?;
    if !allowed.iter().any(|a| a == user) {
        return Err(Denied::NotAllowed(user.to_owned()));
    }
    claim(status, NODE_NAME)
        .filter(|node| !node.is_empty())
        .ok_or_else(|| Denied::Unbound(user.to_owned()))
}

/// Whether one of `pods` is bound to `node` and was admitted to restore `image` (manifest
/// `digest`): a container of it runs exactly that image, and it carries the webhook's
/// restored-from marker naming the digest (which no one else can set). Finished pods pull
/// nothing more.
pub fn restoring_on(pods: &[Pod], node: &str, image: &str, digest: &str) -> Result<(), Denied> {
    let admitted = |pod: &&Pod| {
        let marked = pod
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(RESTORED_FROM_DIGEST_ANNOTATION))
            .is_some_and(|digests| digests.split(',').any(|d| d.trim() == digest));
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        let finished = matches!(phase, Some("Succeeded" | "Failed"));
        let spec = pod.spec.as_ref();
        let here = spec.and_then(|s| s.node_name.as_deref()) == Some(node);
        let runs = spec.is_some_and(|s| {
            s.containers
                .iter()
                .any(|c| c.image.as_deref() == Some(image))
        });
        marked && !finished && here && runs
    };
    if pods.iter().any(|p| admitted(&p)) {
        Ok(())
    } else {
        Err(Denied::NotRestoring {
            node: node.to_owned(),
            image: image.to_owned(),
        })
    }
}

pub struct PeerAuth {
    allowed: Vec<String>,
    /// Nodes by the token's hash.
    reviews: Reviews<String>,
    /// Authorized (node, image) pairs: a fetch's blob requests follow its manifest's.
    authorized: Recent<()>,
}

impl PeerAuth {
    pub fn new(allowed: Vec<String>) -> Self {
        Self {
            allowed,
            reviews: Reviews::new(),
            authorized: Recent::new(REVIEW_TTL),
        }
    }

    /// The node the peer asking fetches for, before anything else is looked at.
    pub async fn authenticate<C: Cluster>(
        &self,
        cluster: &C,
        authorization: Option<&HeaderValue>,
    ) -> Result<String, Problem> {
        let token = bearer(authorization).map_err(|d| d.problem(BEARER))?;
        let node = self
            .reviews
            .decide(cluster, token, PEER_AUDIENCE, BEARER, |status| {
                decide_peer(status, &self.allowed)
            })
            .await?;
        tracing::debug!(%node, "peer authenticated");
        Ok(node)
    }

    /// Whether the peer fetching for `node` may have `image` (manifest `digest`) of
    /// `namespace`: a pod of that namespace on that node restores it.
    pub async fn authorize<C: Cluster>(
        &self,
        cluster: &C,
        node: &str,
        namespace: &str,
        image: &str,
        digest: &str,
    ) -> Result<(), Problem> {
        let key = format!("{node} {image}");
        if self.authorized.get(&key).is_some() {
            return Ok(());
        }
        let pods = cluster.pods_on_node(namespace, node).await.map_err(|e| {
            Problem::Unavailable(format!(
                "listing the pods of {namespace} on node {node}: {}",
                error_chain(&e)
            ))
        })?;
        restoring_on(&pods, node, image, digest).map_err(|d| d.problem(BEARER))?;
        self.authorized.put(key, ());
        Ok(())
    }
}

#[cfg(test)]
mod tests;
