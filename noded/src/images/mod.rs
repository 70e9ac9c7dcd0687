//! The checkpoint images this node can serve: the node-local OCI layout, tagged by Content
//! UID; the image behind a Content, its manifest read and checked against its digest once; and
//! fetching an image this node does not hold ([`fetch`]) from the node that does ([`peer`]),
//! or, when no node can serve it, from the registry it was pushed to ([`pushed`]). Where an
//! image comes from is decided from its Content alone ([`source`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::digest::sha256_hex;
use checkpointing::names::checkpoint_image;
use checkpointing::oci::{ImageLayout, OciError};
use oci_spec::image::{Descriptor, ImageManifest};

use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::space::DiskSpace;

mod fetch;
mod peer;
mod pushed;
mod repo;
mod source;

use fetch::{FetchError, Fetcher, Upstream};
pub use peer::PeerClient;
pub use pushed::Copies;
pub use repo::Repo;
use source::{Source, source};
pub use source::{Unavailable, ready_image, repo_of, tag_of};

/// Why an image cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// Not here, and not to be had from where it should be.
    #[error("{0}")]
    Unknown(String),
    /// A dependency (the API server, this node's disk) is short: asking again may succeed.
    #[error("{0}")]
    Unavailable(String),
    /// The node holding the image failed us.
    #[error("{0}")]
    Upstream(String),
    #[error("{0}")]
    Internal(String),
}

impl From<OciError> for ImageError {
    fn from(e: OciError) -> Self {
        Self::Internal(error_chain(&e))
    }
}

/// A manifest of the layout, its bytes verified against its digest.
pub struct Image {
    pub digest: String,
    pub bytes: Vec<u8>,
    pub manifest: ImageManifest,
    /// Where this node got it.
    pub origin: Origin,
}

/// Where this node got an image: what a restore's Event tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The local layout held it.
    Local,
    /// Fetched from the noded on that node.
    Peer(String),
    /// Fetched from its pushed copy at that registry.
    Copy(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local => f.write_str("this node"),
            Self::Peer(node) => write!(f, "node {node}"),
            Self::Copy(registry) => write!(f, "its pushed copy at {registry}"),
        }
    }
}

impl Image {
    /// The checkpoint archive: the first layer.
    pub fn archive(&self) -> Result<&Descriptor, ImageError> {
        self.manifest
            .layers()
            .first()
            .ok_or_else(|| ImageError::Internal(format!("image {} has no layer", self.digest)))
    }

    /// The layer of emptyDir volumes that travelled with the checkpoint, when there is one.
    pub fn volumes(&self) -> Option<&Descriptor> {
        self.manifest.layers().iter().find(|l| {
            l.annotations()
                .as_ref()
                .is_some_and(|a| a.contains_key(checkpoint_image::VOLUMES_LAYER))
        })
    }

    /// The config or layer `digest` of the image.
    pub fn blob(&self, digest: &str) -> Option<&Descriptor> {
        std::iter::once(self.manifest.config())
            .chain(self.manifest.layers())
            .find(|d| d.digest().to_string() == digest)
    }
}

/// Whether an image this node does not hold is fetched from where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reach {
    /// Only what the layout holds: what the peer server serves, so it never fetches further.
    Held,
    /// Fetched first when not held: what this node restores.
    Fetched,
}

pub struct Images<C> {
    pub layout: Arc<ImageLayout>,
    cluster: C,
    /// This node's name.
    node: String,
    /// The node-local registry's host (`--image-registry`), which runtimes pull from.
    local: String,
    pub peers: PeerClient,
    fetcher: Fetcher,
    /// Pushed copies, fetched from when no node can serve an image; none without.
    copies: Option<Copies>,
    /// One fetch per image, however many requests ask at once.
    locks: KeyedLocks,
    /// Manifests read and checked, by tag: a pull's blob requests, and other pods' pulls,
    /// neither re-read nor re-hash them. A tag (a Content UID) never names another image.
    read: Mutex<HashMap<String, Arc<Image>>>,
    metrics: Arc<Metrics>,
}

impl<C: Cluster> Images<C> {
    /// Fetches into `layout` what `space` has room for.
    pub fn new(
        layout: Arc<ImageLayout>,
        cluster: C,
        (node, local): (String, String),
        peers: PeerClient,
        space: DiskSpace,
    ) -> Self {
        Self {
            layout,
            cluster,
            node,
            local,
            peers,
            fetcher: Fetcher::new(space),
            copies: None,
            locks: KeyedLocks::default(),
            read: Mutex::default(),
            metrics: Arc::default(),
        }
    }

    /// Records fetches and fetched bytes in `metrics` (the daemon's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Fetches from the registries checkpoints were pushed to when no node can serve them.
    pub fn with_copies(mut self, copies: Copies) -> Self {
        self.copies = Some(copies);
        self
    }

    /// Bytes of blobs fetched since start.
    pub fn transferred(&self) -> u64 {
        self.fetcher.transferred()
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// What a pod restoring `content` on this node runs: its image in the node-local
    /// registry, `<local>/<namespace>/<name>@<digest>`, wherever else it was pushed.
    pub fn local_reference(
        &self,
        content: &ContainerCheckpointContent,
    ) -> Result<String, Unavailable> {
        let (_, digest) = ready_image(content)?;
        Ok(format!("{}/{}@{digest}", self.local, repo_of(content)))
    }

    /// The image `digest` of `content` if this node holds it.
    pub async fn held(
        &self,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
    ) -> Result<Arc<Image>, ImageError> {
        self.image(Reach::Held, repo, content, digest).await
    }

    /// The image `digest` of `content`, fetched first from the node holding it when this one
    /// does not.
    pub async fn fetched(
        &self,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
    ) -> Result<Arc<Image>, ImageError> {
        self.image(Reach::Fetched, repo, content, digest).await
    }

    /// Drops what is remembered of the image tagged `tag` (it is gone).
    pub fn forget(&self, tag: &str) {
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(tag);
    }

    async fn image(
        &self,
        reach: Reach,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
    ) -> Result<Arc<Image>, ImageError> {
        let tag = tag_of(content);
        let known = self
            .read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .cloned();
        if let Some(image) = known {
            return same_digest(tag, image, digest);
        }
        let held = self.layout.resolve(tag)?.is_some();
        let origin = match (source(content, &self.node, held), reach) {
            (Ok(Source::Local), _) => Origin::Local,
            (Ok(Source::Peer(node)), Reach::Fetched) => {
                self.fetch(repo, content, digest, Ok(node)).await?
            }
            (Err(why), Reach::Fetched) => self.fetch(repo, content, digest, Err(why)).await?,
            (Ok(Source::Peer(node)), Reach::Held) => {
                return Err(ImageError::Unknown(format!(
                    "this node does not hold the image of {repo} (node {node} does)"
                )));
            }
            (Err(why), Reach::Held) => return Err(ImageError::Unknown(why.to_string())),
        };
        let image = Arc::new(self.read_local(tag, digest, origin).await?);
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag.to_owned(), image.clone());
        Ok(image)
    }

    /// Fetches the image once, however many requests ask at the same time: from `holder`, the
    /// node holding it, and when that fails (or no node should), from its pushed copy.
    async fn fetch(
        &self,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
        holder: Result<String, Unavailable>,
    ) -> Result<Origin, ImageError> {
        let tag = tag_of(content);
        let lock = self.locks.get(tag);
        let _fetching = lock.lock().await;
        if self.layout.resolve(tag)?.is_some() {
            return Ok(Origin::Local); // fetched by the request we waited for
        }
        let from_node = match holder {
            Ok(node) => match self.fetch_from_node(repo, tag, &node, digest).await {
                Ok(()) => return Ok(Origin::Peer(node)),
                Err(e) => e,
            },
            Err(why) => ImageError::Unknown(why.to_string()),
        };
        let Some((copies, route)) = self
            .copies
            .as_ref()
            .and_then(|copies| Some((copies, copies.of(content, &self.local)?)))
        else {
            return Err(from_node);
        };
        tracing::info!(%repo, %digest, copy = %route.to, why = %from_node,
            "no node serves the checkpoint image; fetching its pushed copy");
        // As a delete does: a Secret gone leaves the registry to decide on an anonymous pull.
        let credentials = self
            .cluster
            .credentials(&route)
            .await
            .inspect_err(|e| {
                tracing::warn!(%repo, error = %error_chain(e), "fetching the pushed copy without credentials");
            })
            .unwrap_or_default();
        let upstream = copies.upstream(&route.to, credentials);
        self.transfer(&upstream, repo, tag, digest)
            .await
            .map_err(|e| e.after(&from_node))?;
        Ok(Origin::Copy(route.to.host.clone()))
    }

    /// Fetches the image from `node`'s peer server.
    async fn fetch_from_node(
        &self,
        repo: &Repo,
        tag: &str,
        node: &str,
        digest: &str,
    ) -> Result<(), ImageError> {
        let ip = self
            .cluster
            .node_ip(node)
            .await
            .map_err(|e| {
                ImageError::Unavailable(format!("looking up node {node}: {}", error_chain(&e)))
            })?
            .ok_or_else(|| ImageError::Upstream(format!("node {node} has no InternalIP")))?;
        let pin = self
            .cluster
            .peer_pin(node)
            .await
            .map_err(|e| {
                ImageError::Unavailable(format!(
                    "looking up node {node}'s Lease: {}",
                    error_chain(&e)
                ))
            })?
            .ok_or_else(|| {
                ImageError::Upstream(format!(
                    "node {node}'s noded publishes no peer certificate in its Lease (not running, or an older version)"
                ))
            })?;
        let peer = SocketAddr::new(ip, self.peers.port);
        tracing::info!(%repo, %node, %peer, %digest, "fetching checkpoint image from its node");
        let upstream = self
            .peers
            .upstream(peer, &pin, repo)
            .await
            .map_err(fetch_failed)?;
        self.transfer(&upstream, repo, tag, digest).await
    }

    /// Fetches the image from `upstream`, counted.
    async fn transfer(
        &self,
        upstream: &impl Upstream,
        repo: &Repo,
        tag: &str,
        digest: &str,
    ) -> Result<(), ImageError> {
        let started = std::time::Instant::now();
        let fetched = self
            .fetcher
            .fetch(upstream, repo, digest, tag, &self.layout)
            .await;
        self.metrics.fetched(started.elapsed().as_secs_f64());
        let bytes = fetched.map_err(fetch_failed)?;
        self.metrics.transferred("fetched", bytes);
        tracing::info!(%repo, from = %upstream.url(""), bytes, total = self.transferred(), "checkpoint image fetched");
        Ok(())
    }

    /// The manifest tagged `tag`, which must be `digest`, read and checked; got from `origin`.
    async fn read_local(
        &self,
        tag: &str,
        digest: &str,
        origin: Origin,
    ) -> Result<Image, ImageError> {
        let desc = self
            .layout
            .resolve(tag)?
            .ok_or_else(|| ImageError::Unknown(format!("no image tagged {tag}")))?;
        if desc.digest().to_string() != digest {
            return Err(other_digest(tag, desc.digest().as_ref(), digest));
        }
        let path = self.layout.blob_path(desc.digest());
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| ImageError::Internal(format!("reading {}: {e}", path.display())))?;
        self.metrics.manifest_read();
        let found = sha256_hex(&bytes);
        if desc.digest().digest() != found {
            return Err(ImageError::Internal(format!(
                "manifest {digest} on disk hashes to sha256:{found}"
            )));
        }
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(|e| ImageError::Internal(format!("parsing manifest {digest}: {e}")))?;
        Ok(Image {
            digest: digest.to_owned(),
            bytes,
            manifest,
            origin,
        })
    }
}

fn fetch_failed(e: FetchError) -> ImageError {
    match e {
        e if e.is_not_found() => ImageError::Unknown(error_chain(&e)),
        // Our disk, not the upstream, is short: the pull may succeed once space is freed.
        e @ FetchError::Space(_) => ImageError::Unavailable(error_chain(&e)),
        e => ImageError::Upstream(error_chain(&e)),
    }
}

impl ImageError {
    /// This error of a second attempt, telling why the first, `first`, failed too.
    fn after(self, first: &ImageError) -> Self {
        let both = |why: String| format!("{first}; then {why}");
        match self {
            Self::Unknown(why) => Self::Unknown(both(why)),
            Self::Unavailable(why) => Self::Unavailable(both(why)),
            Self::Upstream(why) => Self::Upstream(both(why)),
            Self::Internal(why) => Self::Internal(both(why)),
        }
    }
}

fn same_digest(tag: &str, image: Arc<Image>, digest: &str) -> Result<Arc<Image>, ImageError> {
    if image.digest == digest {
        Ok(image)
    } else {
        Err(other_digest(tag, &image.digest, digest))
    }
}

fn other_digest(tag: &str, found: &str, wanted: &str) -> ImageError {
    ImageError::Unknown(format!("the local image of {tag} is {found}, not {wanted}"))
}
