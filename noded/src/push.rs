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
mod compressed;
pub mod compression;
mod error;
mod location;
mod names;
mod redirect;
mod send;
mod summary;
mod targets;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::http::{Method, StatusCode, header};
use bytes::Bytes;
use checkpointing::oci::{ImageLayout, MANIFEST_MEDIA_TYPE};
use checkpointing::reference::normalise_host;
use futures::StreamExt;
use oci_spec::image::{Descriptor, ImageManifest};

pub use auth::Credentials;
pub use compressed::prepare;
pub use error::PushError;
pub use location::{UploadUrl, upload_url};
pub use names::{Destination, Target, parse_image};
pub use targets::{TargetError, Targets};

use crate::http::{self, HttpClient, Progress, Tls};
use auth::Scope;
use send::Retryable;
use targets::Reach;

/// How much of an error response's body is read for its summary.
const MAX_ERROR_BODY: usize = 4096;
/// Read size when streaming a blob from disk.
const UPLOAD_CHUNK: usize = 256 << 10;
/// Token scope actions of everything a push does, and of a delete.
const PUSH_ACTIONS: &str = "pull,push";
/// Token scope actions of fetching a pushed copy back.
const PULL_ACTIONS: &str = "pull";
const DELETE_ACTIONS: &str = "delete";

/// Pushes to the registries `targets` allows: plain HTTP to `insecure_hosts`, HTTPS verified
/// with the system's roots and the configured CA bundle to every other.
pub struct Pusher {
    insecure_hosts: Vec<String>,
    targets: Arc<Targets>,
    /// For the cluster's own registry ([`Reach::Own`]).
    own: HttpClient,
    /// For every other: connects only to addresses `targets` allows.
    checked: HttpClient,
    tokens: auth::Cache,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("insecure_hosts", &self.insecure_hosts)
            .field("targets", &self.targets)
            .finish_non_exhaustive()
    }
}

impl Pusher {
    /// Fails when `extra_roots_pem` holds no usable certificate.
    pub fn new(
        insecure_hosts: Vec<String>,
        extra_roots_pem: Option<&[u8]>,
        targets: Targets,
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
        let targets = Arc::new(targets);
        let check = address_check(targets.clone(), |_| false);
        Ok(Self {
            insecure_hosts,
            targets,
            own: http::client(Tls::SystemRootsAnd(extra.clone()))?,
            checked: http::checked_client(Tls::SystemRootsAnd(extra), Some(check))?,
            tokens: auth::Cache::default(),
        })
    }

    /// The same, but reaching loopback addresses through checked connections too: every test
    /// registry listens there.
    #[cfg(test)]
    pub fn reaching_loopback(mut self) -> Self {
        let check = address_check(self.targets.clone(), |ip| ip.is_loopback());
        self.checked = http::checked_client(Tls::SystemRootsAnd(Vec::new()), Some(check)).unwrap();
        self
    }

    /// The client for requests on behalf of registry `host` (its token endpoint's included),
    /// if noded may push there at all.
    fn client_for(&self, host: &str) -> Result<&HttpClient, TargetError> {
        Ok(match self.targets.reach(host)? {
            Reach::Own => &self.own,
            Reach::Checked => &self.checked,
        })
    }

    /// Refuses, before anything is dumped, a destination noded may not push to: not allowed,
    /// or (a request's own registry) resolving to an address it may not reach. A host that
    /// does not resolve now is left to the push, whose connections are checked again.
    pub async fn admit(&self, to: &Destination) -> Result<(), TargetError> {
        if self.targets.reach(&to.host)? == Reach::Own {
            return Ok(());
        }
        let origin = self.origin(&to.host);
        let Ok(uri) = origin.parse::<axum::http::Uri>() else {
            return Ok(());
        };
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let host = uri.host().unwrap_or_default();
        match http::resolve(host, port).await {
            Ok(found) => {
                let addresses: Vec<_> = found.iter().map(|a| a.ip()).collect();
                self.targets.check(&to.host, &addresses)
            }
            Err(error) => {
                tracing::info!(host = %to.host, %error, "push registry not resolved before the checkpoint");
                Ok(())
            }
        }
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
            accept: None,
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

    /// `GET <at>/<path>` (`manifests/<digest>`, `blobs/<digest>`) of a pushed image, with
    /// `credentials` as the registry asks, following its redirects ([`redirect`]). Any answer
    /// but a failed authentication is returned.
    pub async fn pull(
        &self,
        at: &Destination,
        path: &str,
        credentials: Option<&Credentials>,
    ) -> Result<axum::http::Response<Body>, PushError> {
        let scope = Scope {
            host: &at.host,
            repository: &at.repository,
            actions: PULL_ACTIONS,
            credentials,
        };
        let url = self.url(at, path);
        let request = Retryable {
            method: Method::GET,
            url: &url,
            content_type: None,
            // Blob requests ignore it.
            accept: Some(MANIFEST_MEDIA_TYPE),
            body: Bytes::new(),
        };
        let response = self.authorized(&scope, &request).await?;
        self.followed(&scope, &request, response).await
    }

    /// The URL of `<at>/<path>`, for messages and requests.
    pub fn url(&self, at: &Destination, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.origin(&at.host), at.repository)
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
            accept: None,
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
            accept: None,
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
            accept: None,
            body: Bytes::new(),
        };
        let response = self.authorized(scope, &request).await?;
        let response = Self::success(Method::POST, &url, response).await?;
        let location = response
            .headers()
            .get(header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let upload = match upload_url(&url, location, &digest) {
            Ok(upload) => upload,
            Err(UploadUrl::Unusable) => {
                return Err(PushError::NoLocation {
                    method: Method::POST,
                    url: summary::shown_url(&url),
                    status: response.status(),
                });
            }
            Err(UploadUrl::Elsewhere) => {
                return Err(PushError::ForeignLocation {
                    host: scope.host.to_owned(),
                    url: summary::shown_url(&url),
                    location: summary::shown_url(location),
                });
            }
        };

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
        let progress = Arc::new(Progress {
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

/// `targets`' check of the addresses a host resolves to, `exempt` ones left out.
fn address_check(targets: Arc<Targets>, exempt: fn(&IpAddr) -> bool) -> http::AddressCheck {
    Arc::new(move |host, addresses| {
        let checked: Vec<IpAddr> = addresses.iter().copied().filter(|a| !exempt(a)).collect();
        targets.check(host, &checked).map_err(Into::into)
    })
}

/// An in-process registry implementing the routes a push uses, recording every request.
#[cfg(test)]
mod tests;
