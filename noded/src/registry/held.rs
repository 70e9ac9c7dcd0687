//! The images this node serves: read from the local layout and checked against their digest,
//! after fetching them, for the node-local registry, from the node that holds them.

use std::net::SocketAddr;

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::Runtime;
use checkpointing::digest::sha256_hex;
use oci_spec::image::ImageManifest;

use super::peer::FetchError;
use super::problem::Problem;
use super::resolve::{Source, source, tag_of};
use super::route::Repo;
use super::{LocalImage, Mode, Registry};
use crate::cluster::Cluster;
use crate::error::error_chain;

impl<R: Runtime + 'static, C: Cluster> Registry<R, C> {
    /// The image `digest` of `content` from the local layout, fetched from the node holding it
    /// first when this is the local registry and the layout does not have it.
    pub(super) async fn local_image(
        &self,
        mode: Mode,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
    ) -> Result<LocalImage, Problem> {
        let tag = tag_of(content);
        let held = self.layout.resolve(tag)?.is_some();
        match source(content, &self.node, held)
            .map_err(|e| Problem::ManifestUnknown(e.to_string()))?
        {
            Source::Local => {}
            Source::Peer(node) if mode == Mode::Local => {
                self.fetch(repo, tag, &node, digest).await?;
            }
            Source::Peer(node) => {
                return Err(Problem::ManifestUnknown(format!(
                    "this node does not hold the image of {repo} (node {node} does)"
                )));
            }
        }
        self.read_local(tag, digest).await
    }

    /// Fetches the image from `node` once, however many requests ask at the same time.
    async fn fetch(&self, repo: &Repo, tag: &str, node: &str, digest: &str) -> Result<(), Problem> {
        let lock = self.locks.get(tag);
        let _fetching = lock.lock().await;
        if self.layout.resolve(tag)?.is_some() {
            return Ok(()); // fetched by the request we waited for
        }
        let ip = self
            .cluster
            .node_ip(node)
            .await
            .map_err(|e| {
                Problem::Unavailable(format!("looking up node {node}: {}", error_chain(&e)))
            })?
            .ok_or_else(|| Problem::Upstream(format!("node {node} has no InternalIP")))?;
        let pin = self
            .cluster
            .peer_pin(node)
            .await
            .map_err(|e| {
                Problem::Unavailable(format!("looking up node {node}'s Lease: {}", error_chain(&e)))
            })?
            .ok_or_else(|| {
                Problem::Upstream(format!(
                    "node {node}'s noded publishes no peer certificate in its Lease (not running, or an older version)"
                ))
            })?;
        let peer = SocketAddr::new(ip, self.peers.port);
        tracing::info!(%repo, %node, %peer, %digest, "fetching checkpoint image from its node");
        let started = std::time::Instant::now();
        let fetched = self
            .peers
            .fetch(peer, &pin, repo, digest, tag, &self.layout)
            .await;
        self.metrics.fetched(started.elapsed().as_secs_f64());
        match fetched {
            Ok(bytes) => {
                self.metrics.transferred("fetched", bytes);
                tracing::info!(%repo, %node, bytes, total = self.peers.transferred(), "checkpoint image fetched");
                Ok(())
            }
            Err(e) if e.is_not_found() => Err(Problem::ManifestUnknown(error_chain(&e))),
            // Our disk, not the peer, is short: the pull may succeed once space is freed.
            Err(e @ FetchError::Space(_)) => Err(Problem::Unavailable(error_chain(&e))),
            Err(e) => Err(Problem::Upstream(error_chain(&e))),
        }
    }

    /// The manifest tagged `tag`, which must be `digest`, read and checked.
    async fn read_local(&self, tag: &str, digest: &str) -> Result<LocalImage, Problem> {
        let desc = self
            .layout
            .resolve(tag)?
            .ok_or_else(|| Problem::ManifestUnknown(format!("no image tagged {tag}")))?;
        if desc.digest().to_string() != digest {
            return Err(Problem::ManifestUnknown(format!(
                "the local image of {tag} is {}, not {digest}",
                desc.digest()
            )));
        }
        let path = self.layout.blob_path(desc.digest());
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| Problem::Internal(format!("reading {}: {e}", path.display())))?;
        let found = sha256_hex(&bytes);
        if desc.digest().digest() != found {
            return Err(Problem::Internal(format!(
                "manifest {digest} on disk hashes to sha256:{found}"
            )));
        }
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(|e| Problem::Internal(format!("parsing manifest {digest}: {e}")))?;
        Ok(LocalImage {
            digest: digest.to_owned(),
            bytes,
            manifest,
        })
    }
}
