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
//! nodes' noded fetch from ([`held`]), each only what a pod on its node restores. Decisions
//! ([`route`], [`resolve`], [`auth`]) are pure.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::Runtime;
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
use crate::volumes::Owners;

mod auth;
mod held;
pub mod peer;
mod problem;
mod resolve;
mod route;
mod serve;
#[cfg(test)]
mod tests;

pub use auth::PeerAuth;
use auth::{Caller, PullAuth};
use peer::PeerClient;
use problem::{API_VERSION, Problem};
use resolve::{ready_image, tag_of, wanted_digest};
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
        let caller = match mode {
            Mode::Peer => Caller::Peer {
                node: (self.peer_auth)
                    .authenticate(&self.cluster, authorization)
                    .await?,
            },
            Mode::Local => Caller::Pod(
                self.pull_auth
                    .authenticate(&self.cluster, authorization, &self.node)
                    .await?,
            ),
        };
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
                self.manifest(mode, &caller, &repo, &reference, head).await
            }
            Route::Blob { repo, digest } => self.blob(mode, &caller, &repo, &digest, head).await,
        }
    }

    async fn manifest(
        &self,
        mode: Mode,
        caller: &Caller,
        repo: &Repo,
        reference: &Reference,
        head: bool,
    ) -> Result<Response, Problem> {
        let (content, owners) = self.readable(caller, repo, None).await?;
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
            if let (Some(layer), Caller::Pod(puller)) = (volumes, caller) {
                let path = self.layout.blob_path(layer.digest());
                self.restore
                    .place_volumes(&puller.uid, &path, owners)
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
        caller: &Caller,
        repo: &Repo,
        digest: &str,
        head: bool,
    ) -> Result<Response, Problem> {
        let (content, _) = self
            .readable(caller, repo, self.resolved.get(&repo.to_string()))
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
        let (content, _) = self.readable(&Caller::Noded, &repo, known).await?;
        let digest = wanted_digest(&content, &reference)
            .map_err(|e| Problem::ManifestUnknown(e.to_string()))?;
        self.local_image(Mode::Local, &repo, &content, &digest)
            .await
            .map(drop)
    }

    /// The Content of `repo` (`known` when just looked up), once `caller` may have its image,
    /// and who the volumes placed for a pod pulling it belong to.
    async fn readable(
        &self,
        caller: &Caller,
        repo: &Repo,
        known: Option<Arc<ContainerCheckpointContent>>,
    ) -> Result<(Arc<ContainerCheckpointContent>, Owners), Problem> {
        if let Caller::Pod(puller) = caller {
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
        let ready = || ready_image(&content).map_err(|e| Problem::ManifestUnknown(e.to_string()));
        let owners = match caller {
            Caller::Noded => Owners::default(),
            Caller::Pod(puller) => {
                let (image, _) = ready()?;
                self.pull_auth
                    .authorize(&self.cluster, puller, &self.node, image)
                    .await?
            }
            Caller::Peer { node } => {
                let (image, digest) = ready()?;
                (self.peer_auth)
                    .authorize(&self.cluster, node, &repo.namespace, image, digest)
                    .await?;
                Owners::default()
            }
        };
        Ok((content, owners))
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

    /// Removes the cached and the runtime's images, and the archives in `checkpoint_dir`, of
    /// checkpoints whose Content is gone; the runtime's are those named under `image_registry`
    /// (see [`gc::prune`]).
    pub async fn prune(
        &self,
        image_registry: &str,
        checkpoint_dir: &Path,
    ) -> Result<gc::Pruned, GcError> {
        let stores = gc::Stores {
            layout: &self.layout,
            runtime: self.restore.runtime(),
            registry: image_registry,
            archives: checkpoint_dir,
        };
        let pruned = gc::prune(&self.cluster, stores, &self.metrics).await?;
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
