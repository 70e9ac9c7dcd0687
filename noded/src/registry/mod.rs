//! The node-local registry: a read-only OCI distribution API over the node-local image layout.
//!
//! The runtime on this node pulls `localhost:5050/<namespace>/<name>@<digest>` from it, where
//! `<namespace>/<name>` is a ContainerCheckpointContent and the layout tag is the Content's UID.
//! When the image lives on another node, the registry fetches it from that node's noded first
//! (see [`peer`]) and keeps it. Before it answers a manifest request it makes sure the
//! runtime holds the checkpoint's base image: CRI-O never pulls it itself.
//!
//! The same routes, authenticated and never fetching further, form the peer server other
//! nodes' noded fetch from. Decisions ([`route`], [`wanted_digest`], [`source`]) are pure.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use checkpointing::archive::{self, CheckpointConfig};
use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::Runtime;
use checkpointing::digest::sha256_hex;
use checkpointing::names::parse_digest;
use checkpointing::oci::{ImageLayout, MANIFEST_MEDIA_TYPE};
use futures::TryStreamExt as _;
use oci_spec::image::ImageManifest;
use tokio_util::io::ReaderStream;

use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;

pub mod peer;
mod problem;
mod route;

use peer::{Auth, PeerClient};

use problem::API_VERSION;
pub use problem::Problem;
pub use route::{Reference, Repo, Route, route};

/// The one tag besides the Content UID a repository answers to.
const LATEST: &str = "latest";

// ---------------------------------------------------------------- decisions (pure)

/// Why a repository has no image to serve.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("checkpoint {0} has no image yet")]
    NotReady(String),
    #[error("checkpoint {repo} is image {image}, not {wanted}")]
    OtherReference {
        repo: String,
        image: String,
        wanted: String,
    },
    #[error("checkpoint {repo} belongs to node {node}, which should hold its image but does not")]
    Lost { repo: String, node: String },
    #[error("checkpoint {0} names no node")]
    NoNode(String),
}

fn repo_of(content: &ContainerCheckpointContent) -> String {
    format!(
        "{}/{}",
        content.metadata.namespace.as_deref().unwrap_or_default(),
        content.metadata.name.as_deref().unwrap_or_default()
    )
}

/// The layout tag of a Content's image: its UID.
pub fn tag_of(content: &ContainerCheckpointContent) -> &str {
    content.metadata.uid.as_deref().unwrap_or_default()
}

/// The manifest digest a request for `reference` in `content`'s repository may be answered
/// with: the one in the Content's `status.image`, asked for by that digest, by the Content's UID
/// or as `latest`.
pub fn wanted_digest(
    content: &ContainerCheckpointContent,
    reference: &Reference,
) -> Result<String, Unavailable> {
    let repo = repo_of(content);
    let status = content.status.as_ref();
    let image = status
        .filter(|s| s.ready)
        .and_then(|s| s.image.as_deref())
        .ok_or_else(|| Unavailable::NotReady(repo.clone()))?;
    let digest = image
        .rsplit_once('@')
        .and_then(|(_, d)| parse_digest(d))
        .ok_or_else(|| Unavailable::NotReady(repo.clone()))?;
    let matches = match reference {
        Reference::Digest(d) => d == digest,
        Reference::Tag(t) => t == LATEST || (t == tag_of(content) && !t.is_empty()),
    };
    if !matches {
        return Err(Unavailable::OtherReference {
            repo,
            image: image.to_owned(),
            wanted: match reference {
                Reference::Digest(d) | Reference::Tag(d) => d.clone(),
            },
        });
    }
    Ok(digest.to_owned())
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The local layout has it.
    Local,
    /// Fetch it from the noded on this node.
    Peer(String),
}

/// Where `content`'s image comes from on `this_node`, given whether the local layout holds it.
pub fn source(
    content: &ContainerCheckpointContent,
    this_node: &str,
    held: bool,
) -> Result<Source, Unavailable> {
    let node = &content.spec.node_name;
    if held {
        Ok(Source::Local)
    } else if node.is_empty() {
        Err(Unavailable::NoNode(repo_of(content)))
    } else if node == this_node {
        Err(Unavailable::Lost {
            repo: repo_of(content),
            node: node.clone(),
        })
    } else {
        Ok(Source::Peer(node.clone()))
    }
}

/// The image the runtime needs before it can restore from the archive whose `config.dump` is
/// `config`: `rootfsImageRef` (name and digest), else `rootfsImageName`. A bare image id cannot
/// be pulled, so it is used only when nothing else is recorded.
pub fn base_image(config: &CheckpointConfig) -> Option<String> {
    let by_ref = &config.rootfs_image_ref;
    let bare_id = by_ref.starts_with("sha256:") || !by_ref.contains(['/', ':', '@']);
    [
        (!bare_id).then_some(by_ref),
        Some(&config.rootfs_image_name),
        Some(by_ref),
    ]
    .into_iter()
    .flatten()
    .find(|s| !s.is_empty())
    .cloned()
}

/// Tags of the layout no Content has any more: cached copies of deleted checkpoints.
pub fn stale_tags(tags: &[String], live: &HashSet<String>) -> Vec<String> {
    tags.iter()
        .filter(|t| !live.contains(*t))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------- the servers

/// Which server a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The node-local registry the runtime pulls from: fetches from peers, ensures base images.
    Local,
    /// The peer server: authenticated, serves only what the local layout holds.
    Peer,
}

pub struct Registry<R, C> {
    pub layout: Arc<ImageLayout>,
    pub runtime: R,
    pub cluster: C,
    /// This node's name.
    pub node: String,
    pub peers: PeerClient,
    pub auth: Auth,
    locks: KeyedLocks,
    /// Base image of each tag, read once from its archive's `config.dump`.
    bases: Mutex<HashMap<String, Option<String>>>,
    pub metrics: Arc<Metrics>,
}

/// A manifest found in the local layout, its bytes verified against its digest.
struct LocalImage {
    digest: String,
    bytes: Vec<u8>,
    manifest: ImageManifest,
}

impl<R: Runtime + 'static, C: Cluster> Registry<R, C> {
    pub fn new(
        layout: Arc<ImageLayout>,
        runtime: R,
        cluster: C,
        node: String,
        peers: PeerClient,
        auth: Auth,
    ) -> Self {
        Self {
            layout,
            runtime,
            cluster,
            node,
            peers,
            auth,
            locks: KeyedLocks::default(),
            bases: Mutex::default(),
            metrics: Arc::default(),
        }
    }

    /// Records requests and transferred bytes in `metrics` (the daemon's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answers one request; failures become OCI error responses and are logged.
    pub async fn serve(
        &self,
        mode: Mode,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Response {
        let path = uri.path();
        let mode_label = match mode {
            Mode::Local => "local",
            Mode::Peer => "peer",
        };
        match self.answer(mode, method, path, headers).await {
            Ok(response) => {
                self.metrics.registry_request(mode_label, "ok");
                response
            }
            Err(problem) => {
                let status = problem.status().0;
                self.metrics.registry_request(
                    mode_label,
                    if status.is_server_error() {
                        "failed"
                    } else {
                        "refused"
                    },
                );
                if status.is_server_error() {
                    tracing::warn!(?mode, %method, path, %status, error = %problem, "registry request failed");
                } else {
                    tracing::info!(?mode, %method, path, %status, error = %problem, "registry request refused");
                }
                problem.into_response()
            }
        }
    }

    async fn answer(
        &self,
        mode: Mode,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Response, Problem> {
        if method != Method::GET && method != Method::HEAD {
            return Err(Problem::Unsupported);
        }
        if mode == Mode::Peer {
            // Before anything else: an unauthenticated caller learns nothing, not even names.
            self.auth
                .check(&self.cluster, headers.get(header::AUTHORIZATION))
                .await?;
        }
        let head = method == Method::HEAD;
        match route(path)
            .ok_or_else(|| Problem::BadPath(format!("{path:?} is not a registry path")))?
        {
            Route::Base => Ok(respond(
                "application/json",
                None,
                2,
                if head {
                    Body::empty()
                } else {
                    Body::from("{}")
                },
            )),
            Route::Manifest { repo, reference } => {
                self.manifest(mode, &repo, &reference, head).await
            }
            Route::Blob { repo, digest } => self.blob(mode, &repo, &digest, head).await,
        }
    }

    async fn manifest(
        &self,
        mode: Mode,
        repo: &Repo,
        reference: &Reference,
        head: bool,
    ) -> Result<Response, Problem> {
        let content = self.content(repo).await?;
        let digest = wanted_digest(&content, reference)
            .map_err(|e| Problem::ManifestUnknown(e.to_string()))?;
        let image = self.local_image(mode, repo, &content, &digest).await?;
        if mode == Mode::Local {
            self.ensure_base(tag_of(&content), &image.manifest).await?;
        }
        let len = image.bytes.len() as u64;
        let body = if head {
            Body::empty()
        } else {
            Body::from(image.bytes)
        };
        Ok(respond(MANIFEST_MEDIA_TYPE, Some(&image.digest), len, body))
    }

    /// Streams a blob of the repository's image from disk.
    async fn blob(
        &self,
        mode: Mode,
        repo: &Repo,
        digest: &str,
        head: bool,
    ) -> Result<Response, Problem> {
        let content = self.content(repo).await?;
        let manifest_digest = wanted_digest(&content, &Reference::Tag(LATEST.into()))
            .map_err(|e| Problem::BlobUnknown(e.to_string()))?;
        let image = self
            .local_image(mode, repo, &content, &manifest_digest)
            .await?;
        let desc = std::iter::once(image.manifest.config())
            .chain(image.manifest.layers())
            .find(|d| d.digest().to_string() == digest)
            .ok_or_else(|| Problem::BlobUnknown(format!("{repo} has no blob {digest}")))?;
        let path = self.layout.blob_path(desc.digest());
        let io = |e: std::io::Error| Problem::Internal(format!("reading {}: {e}", path.display()));
        let file = tokio::fs::File::open(&path).await.map_err(io)?;
        let len = file.metadata().await.map_err(io)?.len();
        if len != desc.size() {
            return Err(Problem::Internal(format!(
                "blob {digest} is {len} bytes on disk, its descriptor says {}",
                desc.size()
            )));
        }
        let body = if head {
            Body::empty()
        } else if mode == Mode::Peer {
            // Counted as sent, so an interrupted transfer counts what actually left.
            let metrics = self.metrics.clone();
            Body::from_stream(ReaderStream::with_capacity(file, 256 << 10).inspect_ok(
                move |chunk| {
                    metrics.transferred("served", chunk.len() as u64);
                },
            ))
        } else {
            Body::from_stream(ReaderStream::with_capacity(file, 256 << 10))
        };
        Ok(respond("application/octet-stream", Some(digest), len, body))
    }

    async fn content(&self, repo: &Repo) -> Result<ContainerCheckpointContent, Problem> {
        self.cluster
            .content(&repo.namespace, &repo.name)
            .await
            .map_err(|e| {
                Problem::Unavailable(format!("looking up checkpoint {repo}: {}", error_chain(&e)))
            })?
            .ok_or_else(|| Problem::NameUnknown(format!("no checkpoint {repo}")))
    }

    /// The image `digest` of `content` from the local layout, fetched from the node holding it
    /// first when this is the local registry and the layout does not have it.
    async fn local_image(
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
        let peer = SocketAddr::new(ip, self.peers.port);
        tracing::info!(%repo, %node, %peer, %digest, "fetching checkpoint image from its node");
        match self
            .peers
            .fetch(peer, repo, digest, tag, &self.layout)
            .await
        {
            Ok(bytes) => {
                self.metrics.transferred("fetched", bytes);
                tracing::info!(%repo, %node, bytes, total = self.peers.transferred(), "checkpoint image fetched");
                Ok(())
            }
            Err(e) if e.is_not_found() => Err(Problem::ManifestUnknown(error_chain(&e))),
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

    /// Makes sure the runtime holds the base image of the checkpoint image `tag`.
    async fn ensure_base(&self, tag: &str, manifest: &ImageManifest) -> Result<(), Problem> {
        let cached = self
            .bases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(tag)
            .cloned();
        let image = match cached {
            Some(image) => image,
            None => {
                let layer = manifest
                    .layers()
                    .first()
                    .ok_or_else(|| Problem::Internal(format!("image {tag} has no layer")))?;
                let path = self.layout.blob_path(layer.digest());
                let image = read_base_image(path).await?;
                self.bases
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(tag.to_owned(), image.clone());
                image
            }
        };
        let Some(image) = image else {
            tracing::warn!(%tag, "the checkpoint names no base image; restoring may fail");
            return Ok(());
        };
        // One pull per base image, however many checkpoints of it are requested at once.
        let lock = self.locks.get(&format!("base image {image}"));
        let _pulling = lock.lock().await;
        let failed = |e: &dyn std::error::Error| {
            Problem::Unavailable(format!(
                "making base image {image} present: {}",
                error_chain(e)
            ))
        };
        if self
            .runtime
            .image_status(&image)
            .await
            .map_err(|e| failed(&e))?
            .is_some()
        {
            return Ok(());
        }
        tracing::info!(%image, %tag, "pulling the checkpoint's base image");
        self.runtime
            .pull_image(&image)
            .await
            .map_err(|e| failed(&e))?;
        Ok(())
    }

    /// Removes cached images whose Content is gone; this node's own are removed by the
    /// Content's finalizer, copies fetched from peers only here.
    pub async fn prune(&self) -> Result<usize, Problem> {
        let live = self
            .cluster
            .content_uids()
            .await
            .map_err(|e| Problem::Unavailable(error_chain(&e)))?;
        let stale = stale_tags(&self.layout.tags()?, &live);
        for tag in &stale {
            tokio::task::block_in_place(|| self.layout.remove(tag))?;
            self.bases
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(tag);
            tracing::info!(%tag, "removed the cached image of a deleted checkpoint");
        }
        Ok(stale.len())
    }
}

async fn read_base_image(archive: PathBuf) -> Result<Option<String>, Problem> {
    let config = tokio::task::spawn_blocking(move || archive::read_config(&archive))
        .await
        .map_err(|e| Problem::Internal(format!("reading config.dump: {e}")))?
        .map_err(|e| Problem::internal(&e))?;
    Ok(base_image(&config))
}

fn respond(content_type: &'static str, digest: Option<&str>, len: u64, body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    headers.insert(
        header::HeaderName::from_static(API_VERSION.0),
        HeaderValue::from_static(API_VERSION.1),
    );
    if let Some(d) = digest.and_then(|d| HeaderValue::from_str(d).ok()) {
        headers.insert("docker-content-digest", d);
    }
    response
}

/// The routes of `mode`, all answered by [`Registry::serve`].
pub fn router<R: Runtime + 'static, C: Cluster>(
    registry: Arc<Registry<R, C>>,
    mode: Mode,
) -> Router {
    Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
        let registry = registry.clone();
        async move { registry.serve(mode, &method, &uri, &headers).await }
    })
}

/// Serves `router` on `listener` until `stop` resolves; connections still open then get
/// `grace` to finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        stop.await;
        let _ = stopped_tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result,
        _ = stopped_rx => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("registry connections still open after {grace:?}; closing them");
            Ok(())
        }
    }
}

/// Removes what interrupted downloads left in the layout's ingest directory.
pub fn clear_ingest(layout: &ImageLayout) -> std::io::Result<()> {
    let dir = layout.ingest_dir();
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(&dir)? {
        std::fs::remove_file(entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    use axum::http::StatusCode;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use checkpointing::crd::{ContainerCheckpointContentSpec, ContainerCheckpointContentStatus};
    use checkpointing::cri::{CriError, api};
    use checkpointing::oci::{CheckpointMeta, sha256_file};
    use http_body_util::{BodyExt, Empty};
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};

    const NODED: &str = "system:serviceaccount:kube-system:checkpoint-noded";
    const GOOD_TOKEN: &str = "good-token";
    const BASE: &str = "docker.io/library/busybox@sha256:00";

    // ------------------------------------------------------------ pure decisions

    fn digest(c: char) -> String {
        format!("sha256:{}", c.to_string().repeat(64))
    }

    fn content(node: &str, image: Option<String>) -> ContainerCheckpointContent {
        let mut c = ContainerCheckpointContent::new(
            "cp",
            ContainerCheckpointContentSpec {
                container_checkpoint_ref: "cp".into(),
                namespace: "default".into(),
                pod_name: "p".into(),
                container_name: "c".into(),
                node_name: node.into(),
                pod_uid: "pod".into(),
                timeout_seconds: None,
            },
        );
        c.metadata.namespace = Some("default".into());
        c.metadata.uid = Some("uid-1".into());
        c.status = Some(ContainerCheckpointContentStatus {
            ready: image.is_some(),
            image,
            ..Default::default()
        });
        c
    }

    #[test]
    fn only_the_checkpoints_own_digest_is_wanted() {
        let image = format!("localhost:5050/default/cp@{}", digest('a'));
        let c = content("node1", Some(image));
        let ok = Ok(digest('a'));
        assert_eq!(wanted_digest(&c, &Reference::Digest(digest('a'))), ok);
        assert_eq!(wanted_digest(&c, &Reference::Tag("latest".into())), ok);
        assert_eq!(wanted_digest(&c, &Reference::Tag("uid-1".into())), ok);
        assert!(matches!(
            wanted_digest(&c, &Reference::Digest(digest('b'))),
            Err(Unavailable::OtherReference { .. })
        ));
        assert!(matches!(
            wanted_digest(&c, &Reference::Tag("v1".into())),
            Err(Unavailable::OtherReference { .. })
        ));
        let pending = content("node1", None);
        assert_eq!(
            wanted_digest(&pending, &Reference::Tag("latest".into())),
            Err(Unavailable::NotReady("default/cp".into()))
        );
        let garbled = content("node1", Some("localhost:5050/default/cp:latest".into()));
        assert!(matches!(
            wanted_digest(&garbled, &Reference::Tag("latest".into())),
            Err(Unavailable::NotReady(_))
        ));
    }

    #[test]
    fn the_image_comes_from_here_or_from_its_node() {
        let c = content("node1", None);
        assert_eq!(source(&c, "node1", true), Ok(Source::Local));
        assert_eq!(source(&c, "node2", true), Ok(Source::Local), "cached");
        assert_eq!(source(&c, "node2", false), Ok(Source::Peer("node1".into())));
        assert!(matches!(
            source(&c, "node1", false),
            Err(Unavailable::Lost { .. })
        ));
        assert!(matches!(
            source(&content("", None), "node1", false),
            Err(Unavailable::NoNode(_))
        ));
    }

    #[test]
    fn the_base_image_is_the_ref_unless_it_is_a_bare_id() {
        let config = |r: &str, n: &str| CheckpointConfig {
            rootfs_image_ref: r.into(),
            rootfs_image_name: n.into(),
            ..Default::default()
        };
        let name = "docker.io/library/busybox:latest";
        assert_eq!(base_image(&config(BASE, name)).as_deref(), Some(BASE));
        assert_eq!(base_image(&config("", name)).as_deref(), Some(name));
        assert_eq!(
            base_image(&config(&digest('1'), name)).as_deref(),
            Some(name)
        );
        assert_eq!(
            base_image(&config(&digest('1'), "")),
            Some(digest('1')),
            "better than nothing"
        );
        assert_eq!(base_image(&config("", "")), None);
    }

    #[test]
    fn only_tags_without_a_content_are_stale() {
        let tags = vec!["a".to_owned(), "b".to_owned()];
        let live = HashSet::from(["b".to_owned(), "c".to_owned()]);
        assert_eq!(stale_tags(&tags, &live), ["a"]);
    }

    // ------------------------------------------------------------ two nodes over real sockets

    #[derive(Default)]
    struct FakeCluster {
        contents: Mutex<Vec<ContainerCheckpointContent>>,
        nodes: HashMap<String, IpAddr>,
        reviews: AtomicUsize,
    }

    impl Cluster for Arc<FakeCluster> {
        async fn content(
            &self,
            namespace: &str,
            name: &str,
        ) -> Result<Option<ContainerCheckpointContent>, kube::Error> {
            Ok(self
                .contents
                .lock()
                .unwrap()
                .iter()
                .find(|c| {
                    c.metadata.namespace.as_deref() == Some(namespace)
                        && c.metadata.name.as_deref() == Some(name)
                })
                .cloned())
        }
        async fn node_ip(&self, node: &str) -> Result<Option<IpAddr>, kube::Error> {
            Ok(self.nodes.get(node).copied())
        }
        async fn review_token(&self, token: &str) -> Result<TokenReviewStatus, kube::Error> {
            self.reviews.fetch_add(1, Ordering::SeqCst);
            let user = match token {
                GOOD_TOKEN => NODED,
                "other-user" => "system:serviceaccount:default:default",
                _ => return Ok(TokenReviewStatus::default()),
            };
            Ok(TokenReviewStatus {
                authenticated: Some(true),
                user: Some(UserInfo {
                    username: Some(user.into()),
                    ..Default::default()
                }),
                ..Default::default()
            })
        }
        async fn content_uids(&self) -> Result<HashSet<String>, kube::Error> {
            Ok(self
                .contents
                .lock()
                .unwrap()
                .iter()
                .filter_map(|c| c.metadata.uid.clone())
                .collect())
        }
    }

    /// A runtime that holds the images it has pulled.
    #[derive(Clone, Default)]
    struct FakeRuntime {
        images: Arc<Mutex<HashSet<String>>>,
        pulls: Arc<Mutex<Vec<String>>>,
        fail_pulls: bool,
    }

    impl Runtime for FakeRuntime {
        async fn version(&self) -> Result<api::VersionResponse, CriError> {
            Ok(Default::default())
        }
        async fn list_containers(
            &self,
            _: &[(&str, &str)],
        ) -> Result<Vec<api::Container>, CriError> {
            Ok(Vec::new())
        }
        async fn checkpoint_container(
            &self,
            _: &str,
            _: &Path,
            _: Duration,
        ) -> Result<(), CriError> {
            Ok(())
        }
        async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
            Ok(self
                .images
                .lock()
                .unwrap()
                .contains(image)
                .then(|| api::Image {
                    id: "sha256:00".into(),
                    ..Default::default()
                }))
        }
        async fn pull_image(&self, image: &str) -> Result<String, CriError> {
            self.pulls.lock().unwrap().push(image.into());
            if self.fail_pulls {
                return Err(CriError::NotFound {
                    op: "PullImage",
                    message: format!("{image}: not found"),
                });
            }
            self.images.lock().unwrap().insert(image.into());
            Ok(image.into())
        }
    }

    type TestRegistry = Registry<FakeRuntime, Arc<FakeCluster>>;

    struct TestNode {
        registry: Arc<TestRegistry>,
        runtime: FakeRuntime,
        local: SocketAddr,
        peer: SocketAddr,
        _stop: tokio::sync::oneshot::Sender<()>,
    }

    async fn start(
        node: &str,
        layout: Arc<ImageLayout>,
        cluster: Arc<FakeCluster>,
        peer_port: u16,
        token_file: PathBuf,
    ) -> TestNode {
        let runtime = FakeRuntime::default();
        let registry = Arc::new(Registry::new(
            layout,
            runtime.clone(),
            cluster,
            node.into(),
            PeerClient::new(peer_port, token_file),
            Auth::new(vec![NODED.into()]),
        ));
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = futures::future::FutureExt::shared(async move {
            let _ = stop_rx.await;
        });
        let mut addrs = Vec::new();
        for mode in [Mode::Local, Mode::Peer] {
            let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .unwrap();
            addrs.push(listener.local_addr().unwrap());
            tokio::spawn(serve(
                listener,
                router(registry.clone(), mode),
                stop.clone(),
                Duration::from_secs(1),
            ));
        }
        TestNode {
            registry,
            runtime,
            local: addrs[0],
            peer: addrs[1],
            _stop: stop_tx,
        }
    }

    fn archive(dir: &Path, payload: &[u8]) -> PathBuf {
        let config = format!(
            r#"{{"id":"c1","name":"counter","rootfsImageName":"docker.io/library/busybox:latest","rootfsImageRef":"{BASE}"}}"#
        );
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("config.dump", config.as_bytes()),
            ("checkpoint/pages-1.img", payload),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        let path = dir.join("archive.tar");
        std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
        path
    }

    /// node1 holds a checkpoint image of `default/cp`; node2 has an empty layout. Returns both
    /// nodes and the image reference.
    struct Cluster2 {
        node1: TestNode,
        node2: TestNode,
        cluster: Arc<FakeCluster>,
        digest: String,
        layer: String,
        _tmp: tempfile::TempDir,
    }

    async fn two_nodes(payload: &[u8]) -> Cluster2 {
        let tmp = tempfile::tempdir().unwrap();
        let layout1 = Arc::new(ImageLayout::open(tmp.path().join("node1")).unwrap());
        let layout2 = Arc::new(ImageLayout::open(tmp.path().join("node2")).unwrap());
        let path = archive(tmp.path(), payload);
        let (layer, size) = sha256_file(&path).unwrap();
        let meta = CheckpointMeta {
            container: "c".into(),
            ..Default::default()
        };
        let desc = layout1
            .add_checkpoint(&path, &layer, size, &meta, "uid-1")
            .unwrap();
        let digest = desc.digest().to_string();
        let token = tmp.path().join("token");
        std::fs::write(&token, format!("{GOOD_TOKEN}\n")).unwrap();

        let mut cluster = FakeCluster::default();
        cluster.contents.lock().unwrap().push(content(
            "node1",
            Some(format!("localhost:5050/default/cp@{digest}")),
        ));
        cluster
            .nodes
            .insert("node1".into(), Ipv4Addr::LOCALHOST.into());
        let cluster = Arc::new(cluster);
        let node1 = start("node1", layout1, cluster.clone(), 0, token.clone()).await;
        let node2 = start("node2", layout2, cluster.clone(), node1.peer.port(), token).await;
        Cluster2 {
            node1,
            node2,
            cluster,
            digest,
            layer: format!("sha256:{}", layer.digest()),
            _tmp: tmp,
        }
    }

    struct Answer {
        status: StatusCode,
        headers: HeaderMap,
        body: Bytes,
    }

    async fn request(method: Method, addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
        let client: Client<HttpConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"));
        if let Some(token) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = client
            .request(req.body(Empty::new()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> Answer {
        request(Method::GET, addr, path, None).await
    }

    fn error_code(a: &Answer) -> String {
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        v["errors"][0]["code"].as_str().unwrap().to_owned()
    }

    fn blob_files(layout: &ImageLayout) -> Vec<String> {
        let mut names: Vec<String> = ["blobs/sha256", "ingest"]
            .iter()
            .filter_map(|d| std::fs::read_dir(layout.root().join(d)).ok())
            .flatten()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn another_nodes_image_is_fetched_once_verified_and_served() {
        let t = two_nodes(&vec![7u8; 300_000]).await;
        let manifest_path = format!("/v2/default/cp/manifests/{}", t.digest);

        let v2 = get(t.node2.local, "/v2/").await;
        assert_eq!(v2.status, StatusCode::OK);
        assert_eq!(&v2.body[..], b"{}");
        assert_eq!(v2.headers[API_VERSION.0], "registry/2.0");

        // Several pulls at once: one transfer.
        let answers =
            futures::future::join_all((0..4).map(|_| get(t.node2.local, &manifest_path))).await;
        for a in &answers {
            assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
            assert_eq!(a.headers[header::CONTENT_TYPE], MANIFEST_MEDIA_TYPE);
            assert_eq!(a.headers["docker-content-digest"], t.digest.as_str());
            assert_eq!(a.headers["docker-distribution-api-version"], "registry/2.0");
            assert_eq!(format!("sha256:{}", sha256_hex(&a.body)), t.digest);
        }
        let node2 = &t.node2.registry;
        let once = node2.peers.transferred();
        assert!(once > 300_000, "{once}");
        node2.layout.verify("uid-1").unwrap();
        assert!(
            node2
                .layout
                .ingest_dir()
                .read_dir()
                .unwrap()
                .next()
                .is_none()
        );
        assert_eq!(
            *t.node2.runtime.pulls.lock().unwrap(),
            [BASE],
            "the base image is pulled before the manifest is answered, once"
        );

        // HEAD: headers, no body.
        let head = request(Method::HEAD, t.node2.local, &manifest_path, None).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(
            head.headers[header::CONTENT_LENGTH],
            answers[0].body.len().to_string().as_str()
        );
        assert!(head.body.is_empty());

        // Blobs stream from the local copy; later requests never touch the peer again.
        let blob = get(t.node2.local, &format!("/v2/default/cp/blobs/{}", t.layer)).await;
        assert_eq!(blob.status, StatusCode::OK);
        assert_eq!(blob.headers["docker-content-digest"], t.layer.as_str());
        assert_eq!(format!("sha256:{}", sha256_hex(&blob.body)), t.layer);
        let by_tag = get(t.node2.local, "/v2/default/cp/manifests/latest").await;
        assert_eq!(by_tag.status, StatusCode::OK);
        assert_eq!(node2.peers.transferred(), once);

        // A blob of another image, and a digest nobody asked for, are unknown.
        let other = get(
            t.node2.local,
            &format!("/v2/default/cp/blobs/{}", digest('e')),
        )
        .await;
        assert_eq!(
            (other.status, error_code(&other).as_str()),
            (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
        );
        let wrong = get(
            t.node2.local,
            &format!("/v2/default/cp/manifests/{}", digest('e')),
        )
        .await;
        assert_eq!(
            (wrong.status, error_code(&wrong).as_str()),
            (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
        );
        let missing = get(
            t.node2.local,
            &format!("/v2/default/nope/manifests/{}", t.digest),
        )
        .await;
        assert_eq!(
            (missing.status, error_code(&missing).as_str()),
            (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
        );
        let bad = get(t.node2.local, "/v2/../etc/passwd").await;
        assert_eq!(bad.status, StatusCode::NOT_FOUND);
        let put = request(Method::PUT, t.node2.local, &manifest_path, None).await;
        assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);

        // Metrics: bytes fetched by node2 are bytes served by node1; requests by result.
        let text = node2.metrics.render();
        for line in [
            format!("noded_transfer_bytes_total{{direction=\"fetched\"}} {once}"),
            "noded_registry_requests_total{mode=\"local\",result=\"ok\"} 8".to_owned(),
            "noded_registry_requests_total{mode=\"local\",result=\"refused\"} 5".to_owned(),
        ] {
            assert!(text.contains(&line), "{line} missing from {text}");
        }
        let text = t.node1.registry.metrics.render();
        let served = format!("noded_transfer_bytes_total{{direction=\"served\"}} {once}");
        assert!(text.contains(&served), "{served} missing from {text}");

        // Once the Content is gone, the cached copy goes too.
        t.cluster.contents.lock().unwrap().clear();
        assert_eq!(node2.prune().await.unwrap(), 1);
        assert!(node2.layout.tags().unwrap().is_empty());
        assert!(blob_files(&node2.layout).is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_tampered_blob_from_the_peer_is_rejected_and_nothing_is_kept() {
        let t = two_nodes(b"original memory").await;
        // The layer blob on node1 is the archive itself: change it behind the layout's back.
        let layer = t
            .node1
            .registry
            .layout
            .blob_path(&t.layer.as_str().try_into().unwrap());
        let mut bytes = std::fs::read(&layer).unwrap();
        let at = bytes.len() - 1030;
        bytes[at] ^= 1;
        std::fs::write(&layer, bytes).unwrap();

        let a = get(
            t.node2.local,
            &format!("/v2/default/cp/manifests/{}", t.digest),
        )
        .await;
        assert_eq!(a.status, StatusCode::BAD_GATEWAY);
        let message = String::from_utf8_lossy(&a.body);
        assert!(message.contains("digest sha256:"), "{message}");
        let node2 = &t.node2.registry.layout;
        assert!(node2.tags().unwrap().is_empty());
        assert!(blob_files(node2).is_empty(), "{:?}", blob_files(node2));
        assert!(t.node2.runtime.pulls.lock().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_peer_server_wants_an_allowed_token_and_never_fetches_further() {
        let t = two_nodes(b"memory").await;
        let path = format!("/v2/default/cp/manifests/{}", t.digest);
        for token in [None, Some("forged"), Some("other-user")] {
            let a = request(Method::GET, t.node1.peer, &path, token).await;
            assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{token:?}");
            assert_eq!(error_code(&a), "UNAUTHORIZED");
            assert!(a.headers.contains_key(header::WWW_AUTHENTICATE));
            assert!(a.headers.get("docker-content-digest").is_none());
        }
        let base = request(Method::GET, t.node1.peer, "/v2/", None).await;
        assert_eq!(
            base.status,
            StatusCode::UNAUTHORIZED,
            "even /v2/ needs a token"
        );

        let reviews = t.cluster.reviews.load(Ordering::SeqCst);
        for _ in 0..3 {
            let a = request(Method::GET, t.node1.peer, &path, Some(GOOD_TOKEN)).await;
            assert_eq!(a.status, StatusCode::OK);
        }
        assert_eq!(
            t.cluster.reviews.load(Ordering::SeqCst),
            reviews + 1,
            "a positive review is cached"
        );
        assert!(
            t.node1.runtime.pulls.lock().unwrap().is_empty(),
            "the peer server leaves base images to the node that restores"
        );

        // node2's peer server does not hold the image and must not fetch it from node1.
        let a = request(Method::GET, t.node2.peer, &path, Some(GOOD_TOKEN)).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND);
        assert_eq!(t.node2.registry.peers.transferred(), 0);
        assert!(t.node2.registry.layout.tags().unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_base_image_that_cannot_be_pulled_fails_the_manifest() {
        let t = two_nodes(b"memory").await;
        // node1 serves its own image locally, but its runtime cannot pull the base image.
        let runtime = FakeRuntime {
            fail_pulls: true,
            ..Default::default()
        };
        let registry = Registry::new(
            t.node1.registry.layout.clone(),
            runtime.clone(),
            t.cluster.clone(),
            "node1".into(),
            PeerClient::new(1, PathBuf::from("/nonexistent")),
            Auth::new(Vec::new()),
        );
        let uri: Uri = format!("/v2/default/cp/manifests/{}", t.digest)
            .parse()
            .unwrap();
        let response = registry
            .serve(Mode::Local, &Method::GET, &uri, &HeaderMap::new())
            .await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains(BASE), "{body:?}");
        assert_eq!(*runtime.pulls.lock().unwrap(), [BASE]);

        // Present already: no pull.
        runtime.images.lock().unwrap().insert(BASE.into());
        let ok = registry
            .serve(Mode::Local, &Method::GET, &uri, &HeaderMap::new())
            .await;
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(runtime.pulls.lock().unwrap().len(), 1);
    }
}
