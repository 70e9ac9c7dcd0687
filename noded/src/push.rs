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
pub(crate) mod fake {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Body;
    use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};

    /// One request as the registry saw it.
    #[derive(Clone, Debug)]
    pub struct Seen {
        pub method: Method,
        /// Path and query.
        pub target: String,
        pub content_type: Option<String>,
        pub content_length: Option<String>,
        pub chunked: bool,
        pub authorization: Option<String>,
    }

    #[derive(Default)]
    pub struct State {
        pub requests: Vec<Seen>,
        /// Blobs by digest.
        pub blobs: HashMap<String, Vec<u8>>,
        /// Manifests by `<repo>:<tag>`, with their content type.
        pub manifests: HashMap<String, (String, Vec<u8>)>,
        /// Answer manifest PUTs with this status.
        pub manifest_status: Option<StatusCode>,
        uploads: u64,
    }

    pub struct Registry {
        pub addr: SocketAddr,
        pub state: Arc<Mutex<State>>,
    }

    impl Registry {
        pub async fn start() -> Self {
            let state = Arc::new(Mutex::new(State::default()));
            let shared = state.clone();
            let router = Router::new().fallback(
                move |method: Method, uri: Uri, headers: HeaderMap, body: Body| {
                    let state = shared.clone();
                    async move { handle(&state, method, uri, headers, body).await }
                },
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
            Self { addr, state }
        }

        pub fn requests(&self) -> Vec<(Method, String)> {
            let state = self.state.lock().unwrap();
            state
                .requests
                .iter()
                .map(|r| (r.method.clone(), r.target.clone()))
                .collect()
        }
    }

    fn answer(status: StatusCode, headers: &[(&str, String)], body: &str) -> Response<Body> {
        let mut response = Response::builder().status(status);
        for (k, v) in headers {
            response = response.header(*k, v);
        }
        response.body(Body::from(body.to_owned())).unwrap()
    }

    async fn handle(
        state: &Mutex<State>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Body,
    ) -> Response<Body> {
        let body = axum::body::to_bytes(body, 64 << 20).await.unwrap().to_vec();
        let text = |name| {
            headers
                .get(name)
                .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let mut state = state.lock().unwrap();
        state.requests.push(Seen {
            method: method.clone(),
            target: uri.to_string(),
            content_type: text(header::CONTENT_TYPE),
            content_length: text(header::CONTENT_LENGTH),
            chunked: text(header::TRANSFER_ENCODING).is_some(),
            authorization: text(header::AUTHORIZATION),
        });
        let path = uri.path().strip_prefix("/v2/").unwrap_or_default();
        let query: HashMap<String, String> = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":")))
            .collect();
        if let Some((_, digest)) = path.split_once("/blobs/")
            && !digest.starts_with("uploads/")
            && method == Method::HEAD
        {
            return match state.blobs.get(digest) {
                Some(b) => answer(
                    StatusCode::OK,
                    &[("content-length", b.len().to_string())],
                    "",
                ),
                None => answer(StatusCode::NOT_FOUND, &[], ""),
            };
        }
        if let Some(repo) = path.strip_suffix("/blobs/uploads/")
            && method == Method::POST
        {
            state.uploads += 1;
            let location = format!("/v2/{repo}/blobs/uploads/u{}?_state=s", state.uploads);
            return answer(StatusCode::ACCEPTED, &[("location", location)], "");
        }
        if path.contains("/blobs/uploads/u") && method == Method::PUT {
            let digest = query.get("digest").cloned().unwrap_or_default();
            if query.get("_state").map(String::as_str) != Some("s")
                || digest != format!("sha256:{}", checkpointing::digest::sha256_hex(&body))
            {
                return answer(StatusCode::BAD_REQUEST, &[], "DIGEST_INVALID");
            }
            state.blobs.insert(digest, body);
            return answer(StatusCode::CREATED, &[], "");
        }
        if let Some((repo, tag)) = path.split_once("/manifests/")
            && method == Method::PUT
        {
            if let Some(status) = state.manifest_status {
                return answer(status, &[], "{\"errors\":[{\"code\":\"UNKNOWN\"}]}");
            }
            let digest = format!("sha256:{}", checkpointing::digest::sha256_hex(&body));
            let content_type = text(header::CONTENT_TYPE).unwrap_or_default();
            state
                .manifests
                .insert(format!("{repo}:{tag}"), (content_type, body));
            return answer(
                StatusCode::CREATED,
                &[("docker-content-digest", digest)],
                "",
            );
        }
        answer(StatusCode::NOT_FOUND, &[], "no such route")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpointing::oci::CheckpointMeta;
    use oci_spec::image::MediaType;
    use std::path::Path;

    #[test]
    fn targets_are_host_and_optional_prefix() {
        let t = |s: &str| s.parse::<Target>();
        assert_eq!(
            t("10.77.0.1:5000"),
            Ok(Target {
                host: "10.77.0.1:5000".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            t("registry.example.com/team/checkpoints/"),
            Ok(Target {
                host: "registry.example.com".into(),
                prefix: "team/checkpoints".into()
            })
        );
        assert_eq!(t("localhost/x").unwrap().to_string(), "localhost/x");
        assert!(t("https://registry.example.com").is_err());
        assert!(t("myregistry/x").unwrap_err().contains("dot or a port"));
        assert!(t("registry.example.com/Team").is_err());
        assert!(t("registry.example.com//x").is_err());
        assert!(t("").is_err());
    }

    #[test]
    fn upload_locations_are_resolved_and_get_the_digest() {
        let post = "http://r:5000/v2/ns/name/blobs/uploads/";
        let d = "sha256:ab";
        assert_eq!(
            upload_url(post, "/v2/ns/name/blobs/uploads/u1?_state=x", d).unwrap(),
            "http://r:5000/v2/ns/name/blobs/uploads/u1?_state=x&digest=sha256%3Aab"
        );
        assert_eq!(
            upload_url(post, "https://other/upload/u1", d).unwrap(),
            "https://other/upload/u1?digest=sha256%3Aab"
        );
        assert_eq!(
            upload_url(post, "u1", d).unwrap(),
            "http://r:5000/v2/ns/name/blobs/uploads/u1?digest=sha256%3Aab"
        );
        assert_eq!(
            upload_url(post, "//cdn/u1?", d).unwrap(),
            "http://cdn/u1?digest=sha256%3Aab"
        );
        assert_eq!(upload_url(post, " ", d), None);
    }

    /// A layout holding one checkpoint image tagged `tag`, its layer the bytes `archive`.
    fn layout_with_image(dir: &Path, archive: &[u8], tag: &str) -> (ImageLayout, Descriptor) {
        let layout = ImageLayout::open(dir.join("oci")).unwrap();
        let path = dir.join("archive.tar");
        std::fs::write(&path, archive).unwrap();
        let (digest, size) = checkpointing::oci::sha256_file(&path).unwrap();
        let meta = CheckpointMeta {
            container: "counter".into(),
            created: "2026-11-24T10:00:00Z".into(),
            ..Default::default()
        };
        let manifest = layout
            .add_checkpoint(&path, &digest, size, &meta, tag)
            .unwrap();
        (layout, manifest)
    }

    fn pusher(registry: &fake::Registry, prefix: &str) -> Pusher {
        let target = format!("{}/{prefix}", registry.addr).parse().unwrap();
        Pusher::new(target, true, None).unwrap()
    }

    #[tokio::test]
    async fn pushes_both_blobs_then_the_manifest() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = vec![7u8; 3 << 20]; // several upload chunks
        let (layout, manifest) = layout_with_image(tmp.path(), &archive, "content-uid");
        let registry = fake::Registry::start().await;
        let pusher = pusher(&registry, "checkpoints");
        let repo = pusher.repository("default", "counter-checkpoint");
        assert_eq!(repo, "checkpoints/default/counter-checkpoint");

        let image = pusher
            .push(&layout, &manifest, &repo, "content-uid")
            .await
            .unwrap();
        assert_eq!(
            image,
            format!(
                "{}/checkpoints/default/counter-checkpoint@{}",
                registry.addr,
                manifest.digest()
            )
        );

        let parsed = ImageManifest::from_file(layout.blob_path(manifest.digest())).unwrap();
        let config = parsed.config().digest().to_string();
        let layer = parsed.layers()[0].digest().to_string();
        let base = "/v2/checkpoints/default/counter-checkpoint";
        let paths: Vec<_> = registry.requests();
        let expected = [
            (Method::HEAD, format!("{base}/blobs/{config}")),
            (Method::POST, format!("{base}/blobs/uploads/")),
            (
                Method::PUT,
                format!(
                    "{base}/blobs/uploads/u1?_state=s&digest={}",
                    config.replace(':', "%3A")
                ),
            ),
            (Method::HEAD, format!("{base}/blobs/{layer}")),
            (Method::POST, format!("{base}/blobs/uploads/")),
            (
                Method::PUT,
                format!(
                    "{base}/blobs/uploads/u2?_state=s&digest={}",
                    layer.replace(':', "%3A")
                ),
            ),
            (Method::PUT, format!("{base}/manifests/content-uid")),
        ];
        assert_eq!(paths, expected);

        let state = registry.state.lock().unwrap();
        assert_eq!(state.blobs[&layer], archive);
        assert_eq!(
            state.blobs[&config],
            std::fs::read(layout.blob_path(parsed.config().digest())).unwrap()
        );
        let layer_put = &state.requests[5];
        assert_eq!(
            layer_put.content_type.as_deref(),
            Some("application/octet-stream")
        );
        assert_eq!(
            layer_put.content_length.as_deref(),
            Some(archive.len().to_string().as_str())
        );
        assert!(!layer_put.chunked, "a monolithic upload has a length");
        let (content_type, bytes) =
            &state.manifests["checkpoints/default/counter-checkpoint:content-uid"];
        assert_eq!(content_type, MANIFEST_MEDIA_TYPE);
        assert_eq!(
            bytes,
            &std::fs::read(layout.blob_path(manifest.digest())).unwrap(),
            "the manifest's exact bytes"
        );
        assert!(state.requests.iter().all(|r| r.authorization.is_none()));
        assert_eq!(parsed.layers()[0].media_type(), &MediaType::ImageLayer);
    }

    #[tokio::test]
    async fn blobs_the_registry_has_are_not_uploaded_again() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
        let registry = fake::Registry::start().await;
        let parsed = ImageManifest::from_file(layout.blob_path(manifest.digest())).unwrap();
        let layer = parsed.layers()[0].digest().clone();
        registry
            .state
            .lock()
            .unwrap()
            .blobs
            .insert(layer.to_string(), b"archive".to_vec());
        let pusher = pusher(&registry, "");
        let repo = pusher.repository("ns", "cc");
        assert_eq!(repo, "ns/cc");
        pusher
            .push(&layout, &manifest, &repo, "uid-1")
            .await
            .unwrap();

        let requests = registry.requests();
        let uploads: Vec<_> = requests.iter().filter(|(m, _)| m == Method::POST).collect();
        assert_eq!(
            uploads.len(),
            1,
            "only the config is uploaded: {requests:?}"
        );
        assert!(
            requests.contains(&(Method::HEAD, format!("/v2/ns/cc/blobs/{layer}"))),
            "{requests:?}"
        );
        assert!(
            !requests.iter().any(
                |(m, t)| m == Method::PUT && t.contains(&layer.to_string().replace(':', "%3A"))
            ),
            "{requests:?}"
        );
        assert_eq!(requests.last().unwrap().1, "/v2/ns/cc/manifests/uid-1");
    }

    #[tokio::test]
    async fn basic_credentials_are_sent_with_every_request() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
        let registry = fake::Registry::start().await;
        let password = tmp.path().join("password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let target = registry.addr.to_string().parse().unwrap();
        let credentials = Credentials {
            username: "noded".into(),
            password_file: password,
        };
        let pusher = Pusher::new(target, true, Some(credentials)).unwrap();
        pusher
            .push(&layout, &manifest, "ns/cc", "uid-1")
            .await
            .unwrap();
        let state = registry.state.lock().unwrap();
        // base64("noded:s3cret")
        assert!(
            state
                .requests
                .iter()
                .all(|r| r.authorization.as_deref() == Some("Basic bm9kZWQ6czNjcmV0")),
            "{:?}",
            state.requests
        );
    }

    #[tokio::test]
    async fn a_refused_manifest_names_the_url_status_and_body() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
        let registry = fake::Registry::start().await;
        registry.state.lock().unwrap().manifest_status = Some(StatusCode::INTERNAL_SERVER_ERROR);
        let pusher = pusher(&registry, "");
        let e = pusher
            .push(&layout, &manifest, "ns/cc", "uid-1")
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "PUT http://{}/v2/ns/cc/manifests/uid-1 answered 500 Internal Server Error: \
                 {{\"errors\":[{{\"code\":\"UNKNOWN\"}}]}}",
                registry.addr
            )
        );
    }

    #[tokio::test]
    async fn an_unreachable_registry_is_a_request_error() {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let pusher = Pusher::new(addr.to_string().parse().unwrap(), true, None).unwrap();
        let e = pusher
            .push(&layout, &manifest, "ns/cc", "uid-1")
            .await
            .unwrap_err();
        assert!(matches!(e, PushError::Request { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("HEAD http://{addr}/v2/ns/cc/blobs/sha256:"))
        );
    }
}
