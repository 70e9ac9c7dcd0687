//! The node-local registry: a read-only OCI distribution API over the checkpoint images this
//! node can serve ([`crate::images`]). HTTP only: routes ([`route`]), authentication and
//! authorization ([`auth`]), OCI error responses ([`problem`]), the Events left on the pods
//! it pulls for ([`told`]), and thin manifest and blob handlers.
//!
//! The runtime on this node pulls `localhost:5050/<namespace>/<name>@<digest>` from it, where
//! `<namespace>/<name>` is a ContainerCheckpointContent, with the credentials the kubelet got
//! for the pod from our credential provider; every restore does, pushed checkpoints' too. A
//! manifest is answered once the pod's restore is prepared ([`crate::restore`]): that is the
//! gate.
//!
//! The same routes, authenticated and never fetching further, form the peer server other
//! nodes' noded fetch from, each only what a pod on its node restores. Decisions ([`route`],
//! [`resolve`], [`auth`]) are pure.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::Runtime;
use checkpointing::oci::MANIFEST_MEDIA_TYPE;
use futures::TryStreamExt as _;
use tokio_util::io::ReaderStream;
use tracing::Instrument as _;

use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::images::{Image, ImageError, Images, Repo, Unavailable, ready_image};
use crate::metrics::Metrics;
use crate::recent::Recent;
use crate::restore::{ForPod, Restore};
use crate::volumes::Owners;

mod auth;
mod problem;
mod resolve;
mod route;
mod serve;
#[cfg(test)]
mod tests;
mod told;

pub use auth::PeerAuth;
use auth::{Caller, PullAuth};
use problem::{API_VERSION, Problem};
use resolve::wanted_digest;
use route::{Reference, Route, route};
pub use serve::{router, serve};
use told::Told;

/// How long the Content a manifest request looked up answers for the blob requests after it
/// (a pull asks for the blobs right after the manifest).
const RESOLVED_TTL: Duration = Duration::from_secs(60);

/// Which server a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The node-local registry the runtime pulls from: answers once the restore is prepared.
    Local,
    /// The peer server: authenticated, serves only what the local layout holds.
    Peer,
}

pub struct Registry<R, C> {
    pub images: Arc<Images<C>>,
    /// Prepares what a pod's restore needs before its manifest is answered.
    pub restore: Arc<Restore<R, C>>,
    pub cluster: C,
    /// This node's name.
    pub node: String,
    pub peer_auth: PeerAuth,
    pull_auth: PullAuth,
    /// The Content each manifest request looked up, by repository: the blob requests that
    /// follow a manifest are answered from it instead of asking the API server again.
    resolved: Recent<Arc<ContainerCheckpointContent>>,
    /// What the pods pulled for were told lately.
    told: Told,
    pub metrics: Arc<Metrics>,
}

impl<R: Runtime + 'static, C: Cluster> Registry<R, C> {
    pub fn new(
        images: Arc<Images<C>>,
        restore: Arc<Restore<R, C>>,
        cluster: C,
        peer_auth: PeerAuth,
    ) -> Self {
        Self {
            node: images.node().to_owned(),
            images,
            restore,
            cluster,
            peer_auth,
            pull_auth: PullAuth::default(),
            resolved: Recent::new(RESOLVED_TTL),
            told: Told::default(),
            metrics: Arc::default(),
        }
    }

    /// Records requests and transferred bytes in `metrics` (the daemon's registry).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answers one request, in a span naming its route, checkpoint, pod and node; failures
    /// become OCI error responses and are logged.
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
        let span = tracing::info_span!("registry", mode = mode_label, %method, path,
            node = %self.node, route = tracing::field::Empty, checkpoint = tracing::field::Empty,
            pod = tracing::field::Empty, peer = tracing::field::Empty);
        match self
            .answer(mode, method, path, headers)
            .instrument(span.clone())
            .await
        {
            Ok(response) => {
                self.metrics.registry_request(mode_label, "ok");
                response
            }
            Err(problem) => {
                let _in = span.enter();
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
                    tracing::warn!(%status, error = %problem, "registry request failed");
                } else {
                    tracing::info!(%status, error = %problem, "registry request refused");
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
        let span = tracing::Span::current();
        match &caller {
            Caller::Pod(puller) => span.record("pod", tracing::field::display(puller)),
            Caller::Peer { node } => span.record("peer", node.as_str()),
        };
        let answered = self.answer_caller(&caller, mode, method, path).await;
        // The pod's user sees only the runtime's `ErrImagePull`: tell them why.
        if let (Caller::Pod(puller), Err(problem)) = (&caller, &answered)
            && let Some((pod, event)) = self.told.problem(puller, &self.node, path, problem)
        {
            self.cluster.tell(pod, event);
        }
        answered
    }

    /// Answers `caller`, once authenticated.
    async fn answer_caller(
        &self,
        caller: &Caller,
        mode: Mode,
        method: &Method,
        path: &str,
    ) -> Result<Response, Problem> {
        let span = tracing::Span::current();
        let head = method == Method::HEAD;
        let found = route(path)
            .ok_or_else(|| Problem::BadPath(format!("{path:?} is not a registry path")))?;
        if let Route::Manifest { repo, .. } | Route::Blob { repo, .. } = &found {
            span.record("checkpoint", tracing::field::display(repo));
        }
        span.record("route", found.name());
        match found {
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
                self.manifest(caller, &repo, &reference, head).await
            }
            Route::Blob { repo, digest } => self.blob(mode, caller, &repo, &digest, head).await,
        }
    }

    /// The manifest, once the pulling pod's restore is prepared (the peer server: once a
    /// peer may have it, from what this node holds).
    async fn manifest(
        &self,
        caller: &Caller,
        repo: &Repo,
        reference: &Reference,
        head: bool,
    ) -> Result<Response, Problem> {
        let (content, owners) = self.readable(caller, repo, None).await?;
        let digest = wanted_digest(&content, reference)
            .map_err(|e| Problem::ManifestUnknown(e.to_string()))?;
        let image = match caller {
            Caller::Pod(puller) => {
                let pod = ForPod {
                    uid: &puller.uid,
                    owners,
                };
                let image = self.restore.prepared(repo, &content, &digest, pod).await?;
                if let Some((pod, event)) = self.told.prepared(puller, repo, &image.origin) {
                    self.cluster.tell(pod, event);
                }
                image
            }
            Caller::Peer { .. } => self.images.held(repo, &content, &digest).await?,
        };
        let len = image.bytes.len() as u64;
        let body = if head {
            Body::empty()
        } else {
            Body::from(image.bytes.clone())
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
        let image = self.image(mode, repo, &content, &manifest_digest).await?;
        let desc = image
            .blob(digest)
            .ok_or_else(|| Problem::BlobUnknown(format!("{repo} has no blob {digest}")))?;
        let path = self.images.layout.blob_path(desc.digest());
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

    /// The image a blob request of `mode` reads from: the peer server's only from what this
    /// node holds. An image not to be had has no blob to give.
    async fn image(
        &self,
        mode: Mode,
        repo: &Repo,
        content: &ContainerCheckpointContent,
        digest: &str,
    ) -> Result<Arc<Image>, Problem> {
        match mode {
            Mode::Local => self.images.fetched(repo, content, digest).await,
            Mode::Peer => self.images.held(repo, content, digest).await,
        }
        .map_err(|e| match e {
            ImageError::Unknown(why) => Problem::BlobUnknown(why),
            e => e.into(),
        })
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
        let unknown = |e: Unavailable| Problem::ManifestUnknown(e.to_string());
        let (_, digest) = ready_image(&content).map_err(unknown)?;
        // What an admitted pod runs, wherever else the image was pushed.
        let image = self.images.local_reference(&content).map_err(unknown)?;
        let owners = match caller {
            Caller::Pod(puller) => {
                self.pull_auth
                    .authorize(&self.cluster, puller, &self.node, &image)
                    .await?
            }
            Caller::Peer { node } => {
                (self.peer_auth)
                    .authorize(&self.cluster, node, &repo.namespace, &image, digest)
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
