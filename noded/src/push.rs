//! Pushing checkpoint images to an external OCI registry (distribution, Harbor, Zot…), for
//! clusters that outgrow node-to-node transfer: with `--push-registry`, every packaged image is
//! pushed to `<registry>/<prefix>/<namespace>/<name>` under its Content's UID as tag, and its
//! reference there becomes the Content's `status.image`.
//!
//! The OCI distribution API, monolithic uploads: for each blob, `HEAD` it and skip it when the
//! registry has it, else `POST …/blobs/uploads/` and `PUT <Location>?digest=…` with the whole
//! blob streamed from the layout; then `PUT …/manifests/<tag>` with the manifest's exact bytes.
//!
//! Pushed images are never deleted: deleting a Content removes the node's archive and image
//! only. Many registries forbid deletes, or only untag; expiring old checkpoint images is left
//! to the registry's own retention policies.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use base64::Engine as _;
use checkpointing::oci::{ImageLayout, MANIFEST_MEDIA_TYPE, OciError};
use futures::StreamExt;
use oci_spec::image::{Descriptor, ImageManifest};

use crate::http::{self, HttpClient, Progress, SendError, Tls};

/// How much of an error response's body goes into the message.
const MAX_ERROR_BODY: usize = 512;
/// Read size when streaming a blob from disk.
const UPLOAD_CHUNK: usize = 256 << 10;

/// `HOST[:PORT][/PREFIX]` of `--push-registry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    /// Repository path before `<namespace>/<name>`, without slashes at its ends; may be empty.
    pub prefix: String,
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().trim_end_matches('/');
        if s.contains("://") {
            return Err(format!(
                "{s:?}: give HOST[:PORT][/PREFIX] without a scheme (--push-insecure selects plain HTTP)"
            ));
        }
        let (host, prefix) = s.split_once('/').unwrap_or((s, ""));
        // Runtimes read the first component of a reference as a registry only if it has a dot
        // or a port, or is localhost; otherwise the image would be looked for on Docker Hub.
        if host.is_empty()
            || !(host.contains('.') || host.contains(':') || host == "localhost")
            || host.contains(|c: char| c.is_whitespace() || c == '@')
        {
            return Err(format!(
                "{s:?}: the registry host must contain a dot or a port, or be localhost"
            ));
        }
        let valid_component = |c: &str| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        };
        if !prefix.is_empty() && !prefix.split('/').all(valid_component) {
            return Err(format!(
                "{s:?}: the repository prefix must be lowercase path components"
            ));
        }
        Ok(Self {
            host: host.to_owned(),
            prefix: prefix.to_owned(),
        })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            f.write_str(&self.host)
        } else {
            write!(f, "{}/{}", self.host, self.prefix)
        }
    }
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
    #[error("{method} {url} answered {status}{}", if body.is_empty() { String::new() } else { format!(": {body}") })]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        body: String,
    },
    #[error("{method} {url} answered {status} without a usable Location header")]
    NoLocation {
        method: Method,
        url: String,
        status: StatusCode,
    },
    #[error("the registry stored the manifest as {found}, not {expected}")]
    ManifestDigest { found: String, expected: String },
    #[error("reading the password file {}", path.display())]
    Password {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
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
    /// The registry answered and will not do it (deletes disabled, not allowed, bad request):
    /// asking again changes nothing. Timeouts, 5xx, 408 and 429 may pass.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Status { status, .. }
            if status.is_client_error()
                && *status != StatusCode::REQUEST_TIMEOUT
                && *status != StatusCode::TOO_MANY_REQUESTS)
    }
}

/// Basic-auth credentials; the password is re-read for every push, so it can be rotated.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub username: String,
    pub password_file: PathBuf,
}

pub struct Pusher {
    pub target: Target,
    scheme: &'static str,
    http: HttpClient,
    credentials: Option<Credentials>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("target", &self.target)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

impl Pusher {
    /// A pusher to `target` over HTTPS verified with the system's roots, or plain HTTP when
    /// `insecure`.
    pub fn new(
        target: Target,
        insecure: bool,
        credentials: Option<Credentials>,
    ) -> std::io::Result<Self> {
        let (scheme, tls) = if insecure {
            ("http", Tls::PlainOnly)
        } else {
            ("https", Tls::SystemRoots)
        };
        Ok(Self {
            target,
            scheme,
            http: http::client(tls)?,
            credentials,
        })
    }

    /// The repository `namespace/name` of a checkpoint lands in, under the prefix.
    pub fn repository(&self, namespace: &str, name: &str) -> String {
        [self.target.prefix.as_str(), namespace, name]
            .into_iter()
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join("/")
    }

    /// Pushes the image whose manifest is `manifest` in `layout` to `repository` under `tag`.
    /// Returns the image's reference in the registry, by digest.
    pub async fn push(
        &self,
        layout: &ImageLayout,
        manifest: &Descriptor,
        repository: &str,
        tag: &str,
    ) -> Result<String, PushError> {
        let authorization = self.authorization().await?;
        let auth = authorization.as_ref();
        let base = format!("{}://{}/v2/{repository}", self.scheme, self.target.host);
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
            self.push_blob(layout, &base, blob, auth).await?;
        }

        let url = format!("{base}/manifests/{tag}");
        let mut request = Request::put(&url)
            .header(header::CONTENT_TYPE, MANIFEST_MEDIA_TYPE)
            .header(header::CONTENT_LENGTH, bytes.len());
        if let Some(auth) = auth {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = self
            .send(Method::PUT, &url, request.body(Body::from(bytes)), None)
            .await?;
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
                found: found.to_owned(),
                expected,
            });
        }
        Ok(format!("{}/{repository}@{expected}", self.target.host))
    }

    /// Deletes the pushed manifest `image` (`<host>/<repository>@<digest>`, as [`Self::push`]
    /// named it). `Ok(false)`: `image` is not in this registry; a manifest already gone counts
    /// as deleted.
    pub async fn delete(&self, image: &str) -> Result<bool, PushError> {
        let Some((repository, digest)) = image
            .strip_prefix(&format!("{}/", self.target.host))
            .and_then(|rest| rest.split_once('@'))
        else {
            return Ok(false);
        };
        let url = format!(
            "{}://{}/v2/{repository}/manifests/{digest}",
            self.scheme, self.target.host
        );
        let mut request = Request::delete(&url);
        if let Some(auth) = self.authorization().await? {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let response = self
            .send(Method::DELETE, &url, request.body(Body::empty()), None)
            .await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(true);
        }
        Self::success(Method::DELETE, &url, response).await?;
        Ok(true)
    }

    async fn authorization(&self) -> Result<Option<HeaderValue>, PushError> {
        let Some(c) = &self.credentials else {
            return Ok(None);
        };
        let password = tokio::fs::read_to_string(&c.password_file)
            .await
            .map_err(|source| PushError::Password {
                path: c.password_file.clone(),
                source,
            })?;
        let password = password.trim_end_matches(['\r', '\n']);
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{}:{password}", c.username));
        let mut value = HeaderValue::try_from(format!("Basic {encoded}"))
            .expect("base64 is a valid header value");
        value.set_sensitive(true);
        Ok(Some(value))
    }

    async fn push_blob(
        &self,
        layout: &ImageLayout,
        base: &str,
        blob: &Descriptor,
        auth: Option<&HeaderValue>,
    ) -> Result<(), PushError> {
        let digest = blob.digest().to_string();
        let with_auth = |mut r: axum::http::request::Builder| {
            if let Some(auth) = auth {
                r = r.header(header::AUTHORIZATION, auth);
            }
            r
        };

        let url = format!("{base}/blobs/{digest}");
        let request = with_auth(Request::head(&url)).body(Body::empty());
        let response = self.send(Method::HEAD, &url, request, None).await?;
        match response.status() {
            StatusCode::OK => return Ok(()), // the registry has it (another image shares it)
            StatusCode::NOT_FOUND => {}
            _ => {
                Self::success(Method::HEAD, &url, response).await?;
                return Ok(());
            }
        }

        let url = format!("{base}/blobs/uploads/");
        let request = with_auth(Request::post(&url))
            .header(header::CONTENT_LENGTH, 0)
            .body(Body::empty());
        let response = self.send(Method::POST, &url, request, None).await?;
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
        let request = with_auth(Request::put(&upload))
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size)
            .body(Body::from_stream(stream));
        let response = self
            .send(Method::PUT, &upload, request, Some(&progress))
            .await?;
        Self::success(Method::PUT, &upload, response).await?;
        tracing::debug!(blob = %digest, size, "blob pushed");
        Ok(())
    }

    async fn send(
        &self,
        method: Method,
        url: &str,
        request: Result<Request<Body>, axum::http::Error>,
        progress: Option<&Progress>,
    ) -> Result<axum::http::Response<Body>, PushError> {
        let request = request.map_err(|e| PushError::Status {
            method: method.clone(),
            url: url.to_owned(),
            status: StatusCode::BAD_REQUEST,
            body: format!("not sent: {e}"),
        })?;
        http::send(&self.http, request, progress)
            .await
            .map_err(|e| match e {
                SendError::Request(source) => PushError::Request {
                    method,
                    url: url.to_owned(),
                    source,
                },
                SendError::Timeout(timeout) => PushError::Timeout {
                    method,
                    url: url.to_owned(),
                    timeout,
                },
            })
    }

    /// The response if it is a success, else an error carrying the start of its body (the
    /// registry's explanation).
    async fn success(
        method: Method,
        url: &str,
        response: axum::http::Response<Body>,
    ) -> Result<axum::http::Response<Body>, PushError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let mut body = response.into_body();
        let text = http::read_prefix(&mut body, MAX_ERROR_BODY)
            .await
            .map(|b| String::from_utf8_lossy(&b).trim().replace('\n', " "))
            .unwrap_or_default();
        Err(PushError::Status {
            method,
            url: url.to_owned(),
            status,
            body: text,
        })
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
