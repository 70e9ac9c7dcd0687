//! Pushing checkpoint images to an external OCI registry (distribution, Harbor, Zot…), for
//! clusters that outgrow node-to-node transfer: each push names its [`Destination`] and
//! credentials; the image's reference there, by digest, becomes the Content's `status.image`.
//!
//! The OCI distribution API, monolithic uploads: for each blob, `HEAD` it and skip it when the
//! registry has it, else `POST …/blobs/uploads/` and `PUT <Location>?digest=…` with the whole
//! blob streamed from the layout; then `PUT …/manifests/<tag>` with the manifest's exact bytes.
//! Registries asking for Basic or bearer-token authentication get it ([`send`]).
//!
//! Many registries forbid deletes, or only untag: a refused delete is final
//! ([`PushError::is_refusal`]), and expiring old images is left to their retention policies.

pub mod auth;
mod names;
mod send;
mod summary;

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use bytes::Bytes;
use checkpointing::oci::{ImageLayout, MANIFEST_MEDIA_TYPE, OciError};
use checkpointing::reference::normalise_host;
use futures::StreamExt;
use oci_spec::image::{Descriptor, ImageManifest};

pub use auth::Credentials;
pub use names::{Destination, Target, parse_image};

use crate::http::{self, HttpClient, Progress, Tls};
use auth::Scope;
use send::Retryable;

/// How much of an error response's body is read for its summary.
const MAX_ERROR_BODY: usize = 4096;
/// Read size when streaming a blob from disk.
const UPLOAD_CHUNK: usize = 256 << 10;
/// Token scope actions of everything a push does, and of a delete.
const PUSH_ACTIONS: &str = "pull,push";
const DELETE_ACTIONS: &str = "delete";

fn summary_suffix(summary: &Option<String>) -> String {
    summary
        .as_deref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{method} {url}")]
    Request {
        method: Method,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: std::time::Duration,
    },
    /// `summary`: the registry's error codes and messages, never its body as it came
    /// ([`summary::summarise`]).
    #[error("{method} {url} answered {status}{}", summary_suffix(summary))]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        summary: Option<String>,
    },
    #[error("{method} {url} not sent: {reason}")]
    NotSent {
        method: Method,
        url: String,
        reason: String,
    },
    #[error("{method} {url} answered {status} without a usable Location header")]
    NoLocation {
        method: Method,
        url: String,
        status: StatusCode,
    },
    #[error(
        "registry {host} requires credentials and none were given ({method} {url} answered {status})"
    )]
    NoCredentials {
        host: String,
        method: Method,
        url: String,
        status: StatusCode,
    },
    #[error(
        "registry {host} refused the credentials: {method} {url} answered {status}{}",
        summary_suffix(summary)
    )]
    Denied {
        host: String,
        method: Method,
        url: String,
        status: StatusCode,
        summary: Option<String>,
    },
    #[error(
        "registry {host} answered {method} {url} with 401 and no usable WWW-Authenticate challenge ({challenge:?})"
    )]
    Challenge {
        host: String,
        method: Method,
        url: String,
        challenge: String,
    },
    #[error("getting a token for registry {host}")]
    Token {
        host: String,
        #[source]
        source: Box<PushError>,
    },
    #[error("getting a token for registry {host}: {url} answered without a token")]
    NoToken { host: String, url: String },
    #[error("registry {host} stored the manifest as {found}, not {expected}")]
    ManifestDigest {
        host: String,
        found: String,
        expected: String,
    },
    #[error("not an image pushed by digest: {0}")]
    Image(String),
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} is {found} bytes in the local layout, its descriptor says {expected}")]
    Size {
        digest: String,
        found: u64,
        expected: u64,
    },
    #[error("parsing the local manifest {digest}")]
    Manifest {
        digest: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error(transparent)]
    Layout(#[from] OciError),
}

impl PushError {
    /// The registry answered and will not do it (deletes disabled, not allowed, bad request,
    /// credentials refused or missing): asking again changes nothing. Timeouts, 5xx, 408 and
    /// 429 may pass.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_client_error()
                    && *status != StatusCode::REQUEST_TIMEOUT
                    && *status != StatusCode::TOO_MANY_REQUESTS
            }
            Self::NoCredentials { .. }
            | Self::Denied { .. }
            | Self::Challenge { .. }
            | Self::Image(_) => true,
            Self::Token { source, .. } => source.is_refusal(),
            _ => false,
        }
    }
}

/// Pushes to any registry: plain HTTP to `insecure_hosts`, HTTPS verified with the system's
/// roots and the configured CA bundle to every other.
pub struct Pusher {
    insecure_hosts: Vec<String>,
    http: HttpClient,
    tokens: auth::Cache,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("insecure_hosts", &self.insecure_hosts)
            .finish_non_exhaustive()
    }
}

impl Pusher {
    /// Fails when `extra_roots_pem` holds no usable certificate.
    pub fn new(
        insecure_hosts: Vec<String>,
        extra_roots_pem: Option<&[u8]>,
    ) -> std::io::Result<Self> {
        let extra = match extra_roots_pem {
            Some(pem) => http::pem_certificates(pem)?,
            None => Vec::new(),
        };
        // Compared with normalised destination hosts.
        let insecure_hosts = insecure_hosts
            .into_iter()
            .map(|h| normalise_host(&h).unwrap_or(h))
            .collect();
        Ok(Self {
            insecure_hosts,
            http: http::client(Tls::SystemRootsAnd(extra))?,
            tokens: auth::Cache::default(),
        })
    }

    /// `http://host` or `https://host`.
    fn origin(&self, host: &str) -> String {
        let scheme = if self.insecure_hosts.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        };
        format!("{scheme}://{host}")
    }

    /// Pushes the image whose manifest is `manifest` in `layout` to `to` under `tag`.
    /// Returns the image's reference in the registry, by digest.
    pub async fn push(
        &self,
        layout: &ImageLayout,
        manifest: &Descriptor,
        to: &Destination,
        tag: &str,
        credentials: Option<&Credentials>,
    ) -> Result<String, PushError> {
        let scope = Scope {
            host: &to.host,
            repository: &to.repository,
            actions: PUSH_ACTIONS,
            credentials,
        };
        let base = format!("{}/v2/{}", self.origin(&to.host), to.repository);
        let manifest_path = layout.blob_path(manifest.digest());
        let bytes = tokio::fs::read(&manifest_path)
            .await
            .map_err(|source| PushError::Io {
                path: manifest_path,
                source,
            })?;
        let parsed =
            ImageManifest::from_reader(&bytes[..]).map_err(|source| PushError::Manifest {
                digest: manifest.digest().to_string(),
                source,
            })?;
        for blob in std::iter::once(parsed.config()).chain(parsed.layers()) {
            self.push_blob(layout, &scope, &base, blob).await?;
        }

        let url = format!("{base}/manifests/{tag}");
        let request = Retryable {
            method: Method::PUT,
            url: &url,
            content_type: Some(MANIFEST_MEDIA_TYPE),
            body: Bytes::from(bytes),
        };
        let response = self.authorized(&scope, &request).await?;
        let response = Self::success(Method::PUT, &url, response).await?;
        let expected = manifest.digest().to_string();
        // Registries answer with the digest they stored; one that rewrote the manifest would
        // serve something else under our digest.
        if let Some(found) = response
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            && found != expected
        {
            return Err(PushError::ManifestDigest {
                host: to.host.clone(),
                found: summary::one_line(found, 100),
                expected,
            });
        }
        Ok(format!("{to}@{expected}"))
    }

    /// Deletes the pushed manifest `image` (`<host>/<repository>@<digest>`, as [`Self::push`]
    /// named it). A manifest already gone counts as deleted.
    pub async fn delete(
        &self,
        image: &str,
        credentials: Option<&Credentials>,
    ) -> Result<(), PushError> {
        let (at, digest) = names::parse_image(image).map_err(PushError::Image)?;
        let scope = Scope {
            host: &at.host,
            repository: &at.repository,
            actions: DELETE_ACTIONS,
            credentials,
        };
        let url = format!(
            "{}/v2/{}/manifests/{digest}",
            self.origin(&at.host),
            at.repository
        );
        let request = Retryable {
            method: Method::DELETE,
            url: &url,
            content_type: None,
            body: Bytes::new(),
        };
        let response = self.authorized(&scope, &request).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Self::success(Method::DELETE, &url, response).await?;
        Ok(())
    }

    async fn push_blob(
        &self,
        layout: &ImageLayout,
        scope: &Scope<'_>,
        base: &str,
        blob: &Descriptor,
    ) -> Result<(), PushError> {
        let digest = blob.digest().to_string();
        let url = format!("{base}/blobs/{digest}");
        let request = Retryable {
            method: Method::HEAD,
            url: &url,
            content_type: None,
            body: Bytes::new(),
        };
        let response = self.authorized(scope, &request).await?;
        match response.status() {
            StatusCode::OK => return Ok(()), // the registry has it (another image shares it)
            StatusCode::NOT_FOUND => {}
            _ => {
                Self::success(Method::HEAD, &url, response).await?;
                return Ok(());
            }
        }

        // Bodyless, so it goes through the 401 retry: the upload below, which cannot be sent
        // twice, then finds the authorization cached.
        let url = format!("{base}/blobs/uploads/");
        let request = Retryable {
            method: Method::POST,
            url: &url,
            content_type: None,
            body: Bytes::new(),
        };
        let response = self.authorized(scope, &request).await?;
        let response = Self::success(Method::POST, &url, response).await?;
        let upload = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|location| upload_url(&url, location, &digest))
            .ok_or_else(|| PushError::NoLocation {
                method: Method::POST,
                url: url.clone(),
                status: response.status(),
            })?;

        // The layer is the checkpoint archive, possibly GiB: streamed from disk, never held.
        let path = layout.blob_path(blob.digest());
        let io = |source| PushError::Io {
            path: path.clone(),
            source,
        };
        let file = tokio::fs::File::open(&path).await.map_err(io)?;
        let size = file.metadata().await.map_err(io)?.len();
        if size != blob.size() {
            return Err(PushError::Size {
                digest,
                found: size,
                expected: blob.size(),
            });
        }
        let progress = std::sync::Arc::new(Progress {
            sent: Default::default(),
            total: size,
        });
        let counted = progress.clone();
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, UPLOAD_CHUNK).inspect(move |chunk| {
                if let Ok(chunk) = chunk {
                    counted
                        .sent
                        .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            });
        let response = self
            .streamed(scope, &upload, size, Body::from_stream(stream), &progress)
            .await?;
        Self::success(Method::PUT, &upload, response).await?;
        tracing::debug!(blob = %digest, size, "blob pushed");
        Ok(())
    }
}

/// Where to `PUT` a monolithic upload: the `Location` a `POST` to `post_url` answered (absolute,
/// absolute-path or relative), with `digest` added to its query.
pub fn upload_url(post_url: &str, location: &str, digest: &str) -> Option<String> {
    let location = location.trim();
    if location.is_empty() {
        return None;
    }
    let (scheme, rest) = post_url.split_once("://")?;
    let authority = rest.split('/').next()?;
    let mut url = if location.starts_with("http://") || location.starts_with("https://") {
        location.to_owned()
    } else if location.starts_with("//") {
        format!("{scheme}:{location}")
    } else if location.starts_with('/') {
        format!("{scheme}://{authority}{location}")
    } else {
        // Relative to the POST URL's directory.
        let path = post_url.split('?').next()?;
        let directory = &path[..=path.rfind('/')?];
        format!("{directory}{location}")
    };
    let encoded = digest.replace(':', "%3A");
    let separator = match url.find('?') {
        None => "?",
        Some(at) if at + 1 == url.len() || url.ends_with('&') => "",
        Some(_) => "&",
    };
    url.push_str(separator);
    url.push_str("digest=");
    url.push_str(&encoded);
    Some(url)
}

/// An in-process registry implementing the routes a push uses, recording every request.
#[cfg(test)]
mod tests;
