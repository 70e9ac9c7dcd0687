//! The node-local registry: a read-only OCI distribution API over the node-local image layout.
//!
//! The runtime on this node pulls `localhost:5050/<namespace>/<name>@<digest>` from it, where
//! `<namespace>/<name>` is a ContainerCheckpointContent and the layout tag is the Content's UID,
//! with the credentials the kubelet got for the pod from our credential provider ([`auth`]).
//! When the image lives on another node, the registry fetches it from that node's noded first
//! (see [`peer`]) and keeps it. Before it answers a manifest request it makes sure the
//! runtime holds the checkpoint's base image: CRI-O never pulls it itself.
//!
//! The same routes, authenticated and never fetching further, form the peer server other
//! nodes' noded fetch from. Decisions ([`route`], [`resolve`]) are pure.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::Runtime;
use checkpointing::digest::sha256_hex;
use checkpointing::names::checkpoint_image;
use checkpointing::oci::{ImageLayout, MANIFEST_MEDIA_TYPE};
use futures::TryStreamExt as _;
use oci_spec::image::ImageManifest;
use tokio_util::io::ReaderStream;

use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::gc::{self, GcError};
use crate::locks::KeyedLocks;
use crate::metrics::Metrics;
use crate::recent::Recent;
use crate::restore::{Restore, RestoreError};

mod auth;
pub mod peer;
mod problem;
mod resolve;
mod route;
mod serve;
#[cfg(test)]
mod tests;

pub use auth::PeerAuth;
use auth::{PullAuth, Puller};
use peer::{FetchError, PeerClient};
use problem::{API_VERSION, Problem};
use resolve::{Source, ready_image, source, tag_of, wanted_digest};
use route::{Reference, Repo, Route, route};
pub use serve::{router, serve};

/// How long the Content a manifest request looked up answers for the blob requests after it
/// (a pull asks for the blobs right after the manifest).
const RESOLVED_TTL: Duration = Duration::from_secs(60);

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
    /// Makes what a manifest restores present before the manifest is answered.
    pub restore: Restore<R>,
    pub cluster: C,
    /// This node's name.
    pub node: String,
    pub peers: PeerClient,
    pub peer_auth: PeerAuth,
    pull_auth: PullAuth,
    /// One fetch per image, however many requests ask at once.
    locks: KeyedLocks,
    /// The Content each manifest request looked up, by repository: the blob requests that
    /// follow a manifest are answered from it instead of asking the API server again.
    resolved: Recent<Arc<ContainerCheckpointContent>>,
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
        peer_auth: PeerAuth,
        pods_dir: PathBuf,
    ) -> Self {
        Self {
            layout,
            restore: Restore::new(runtime).with_pods_dir(pods_dir),
            cluster,
            node,
            peers,
            peer_auth,
            pull_auth: PullAuth::default(),
            locks: KeyedLocks::default(),
            resolved: Recent::new(RESOLVED_TTL),
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
        // Before anything else: an unauthenticated caller learns nothing, not even names.
        let authorization = headers.get(header::AUTHORIZATION);
        let puller = match mode {
            Mode::Peer => {
                self.peer_auth.check(&self.cluster, authorization).await?;
                None
            }
            Mode::Local => Some(
                self.pull_auth
                    .authenticate(&self.cluster, authorization, &self.node)
                    .await?,
            ),
        };
        let puller = puller.as_ref();
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
                self.manifest(mode, puller, &repo, &reference, head).await
            }
            Route::Blob { repo, digest } => self.blob(mode, puller, &repo, &digest, head).await,
        }
    }

    async fn manifest(
        &self,
        mode: Mode,
        puller: Option<&Puller>,
        repo: &Repo,
        reference: &Reference,
        head: bool,
    ) -> Result<Response, Problem> {
        let content = self.readable(puller, repo, None).await?;
        let digest = wanted_digest(&content, reference)
            .map_err(|e| Problem::ManifestUnknown(e.to_string()))?;
        let image = self.local_image(mode, repo, &content, &digest).await?;
        if mode == Mode::Local {
            let layer =
                image.manifest.layers().first().ok_or_else(|| {
                    Problem::Internal(format!("image {} has no layer", image.digest))
                })?;
            let archive = self.layout.blob_path(layer.digest());
            let failed = |e| match e {
                RestoreError::Archive(why) => Problem::Internal(why),
                e @ (RestoreError::BaseImage { .. } | RestoreError::Volumes { .. }) => {
                    Problem::Unavailable(error_chain(&e))
                }
            };
            self.restore
                .ensure_base(tag_of(&content), archive)
                .await
                .map_err(failed)?;
            let volumes = image.manifest.layers().iter().find(|l| {
                l.annotations()
                    .as_ref()
                    .is_some_and(|a| a.contains_key(checkpoint_image::VOLUMES_LAYER))
            });
            if let (Some(layer), Some(puller)) = (volumes, puller) {
                let path = self.layout.blob_path(layer.digest());
                self.restore
                    .place_volumes(&puller.uid, &path)
                    .await
                    .map_err(failed)?;
            }
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
        puller: Option<&Puller>,
        repo: &Repo,
        digest: &str,
        head: bool,
    ) -> Result<Response, Problem> {
        let content = self
            .readable(puller, repo, self.resolved.get(&repo.to_string()))
            .await?;
        let manifest_digest = ready_image(&content)
            .map_err(|e| Problem::BlobUnknown(e.to_string()))?
            .1
            .to_owned();
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

    /// Fetches the image `<namespace>/<name>@<digest>` a pod admitted here will pull, before the
    /// runtime asks (overlapping the kubelet's sandbox); base image and volumes wait for the pull.
    pub async fn prefetch(&self, image: &str) -> Result<(), Problem> {
        let Some(Route::Manifest { repo, reference }) = image
            .split_once('@')
            .and_then(|(repo, digest)| route(&format!("/v2/{repo}/manifests/{digest}")))
        else {
            return Err(Problem::ManifestUnknown(format!("{image}: no checkpoint")));
        };
        let known = self.resolved.get(&repo.to_string());
        let content = self.readable(None, &repo, known).await?;
        let digest = wanted_digest(&content, &reference)
            .map_err(|e| Problem::ManifestUnknown(e.to_string()))?;
        self.local_image(Mode::Local, &repo, &content, &digest)
            .await
            .map(drop)
    }

    /// The Content of `repo` (`known` when just looked up), once `puller`, when the runtime
    /// pulls for one, may read its image.
    async fn readable(
        &self,
        puller: Option<&Puller>,
        repo: &Repo,
        known: Option<Arc<ContainerCheckpointContent>>,
    ) -> Result<Arc<ContainerCheckpointContent>, Problem> {
        if let Some(puller) = puller {
            self.pull_auth.admit_namespace(puller, &repo.namespace)?;
        }
        let content = match known {
            Some(content) => content,
            None => {
                let content = self.content(repo).await?;
                self.resolved.put(repo.to_string(), content.clone());
                content
            }
        };
        if let Some(puller) = puller {
            let (image, _) =
                ready_image(&content).map_err(|e| Problem::ManifestUnknown(e.to_string()))?;
            self.pull_auth
                .authorize(&self.cluster, puller, &self.node, image)
                .await?;
        }
        Ok(content)
    }

    async fn content(&self, repo: &Repo) -> Result<Arc<ContainerCheckpointContent>, Problem> {
        self.cluster
            .content(&repo.namespace, &repo.name)
            .await
            .map_err(|e| {
                Problem::Unavailable(format!("looking up checkpoint {repo}: {}", error_chain(&e)))
            })?
            .map(Arc::new)
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

    /// Removes the cached and the runtime's images of checkpoints whose Content is gone; the
    /// runtime's are those named under `image_registry` (see [`gc::prune`]).
    pub async fn prune(&self, image_registry: &str) -> Result<gc::Pruned, GcError> {
        let pruned = gc::prune(
            &self.cluster,
            &self.layout,
            self.restore.runtime(),
            image_registry,
            &self.metrics,
        )
        .await?;
        for tag in &pruned.tags {
            self.restore.forget(tag);
        }
        Ok(pruned)
    }
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
