//! Node-to-node transfer of checkpoint images: [`PeerClient`] fetches an image from the noded
//! holding it (whose peer server admits it by `registry::PeerAuth`), verifying every
//! blob's size and digest while streaming it into the layout's ingest directory, and imports it
//! under the image's tag only when all of it verified. Before the first blob
//! it checks that the ingest directory's disk has room for all of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use bytes::Bytes;
use checkpointing::digest::{Mismatch, Verifier, sha256_hex};
use checkpointing::oci::{ImageLayout, MANIFEST_MEDIA_TYPE, OciError};
use oci_spec::image::{DigestAlgorithm, ImageManifest};
use tokio::io::AsyncWriteExt;

use super::Repo;
use crate::http::{self, HttpClient, ReadError, SendError, Tls};
use crate::size::Size;
use crate::space::{DiskSpace, Need, SpaceError};

/// Manifests are small; a peer sending more is broken or hostile.
const MAX_MANIFEST: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("reading the peer token {}", path.display())]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the peer token file {} is empty", .0.display())]
    EmptyToken(PathBuf),
    #[error("making the peer client")]
    Client(#[source] std::io::Error),
    #[error("requesting {url}")]
    Request {
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
    #[error("{url} answered {status}")]
    Status { url: String, status: StatusCode },
    #[error("reading {url}")]
    Body {
        url: String,
        #[source]
        source: axum::Error,
    },
    #[error("{url}: the manifest is larger than {MAX_MANIFEST} bytes")]
    ManifestTooLarge { url: String },
    #[error("{url}")]
    Verify {
        url: String,
        #[source]
        source: Mismatch,
    },
    #[error("parsing the manifest from {url}")]
    Manifest {
        url: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("blob {0} is not a sha256 digest")]
    Algorithm(String),
    #[error("writing {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("adding the fetched image to the local layout")]
    Import(#[source] OciError),
    #[error(transparent)]
    Space(SpaceError),
}

impl FetchError {
    /// The peer does not have what we asked for.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::Status { status, .. } if *status == StatusCode::NOT_FOUND)
    }
}

/// Files in the ingest directory that are removed when dropped, unless moved into place.
#[derive(Default)]
struct Staged(Vec<(oci_spec::image::Digest, PathBuf)>);

impl Drop for Staged {
    fn drop(&mut self) {
        for (_, path) in &self.0 {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    tracing::warn!(path = %path.display(), error = %e, "removing a staged blob failed");
                }
                _ => {}
            }
        }
    }
}

pub struct PeerClient {
    /// Port of every node's peer server.
    pub port: u16,
    token_file: PathBuf,
    /// Refuses an image the ingest directory has no room for, before any blob.
    space: DiskSpace,
    transferred: AtomicU64,
    sequence: AtomicU64,
}

impl PeerClient {
    pub fn new(port: u16, token_file: PathBuf, space: DiskSpace) -> Self {
        Self {
            port,
            token_file,
            space,
            transferred: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
        }
    }

    /// Bytes of blobs fetched from peers since start.
    pub fn transferred(&self) -> u64 {
        self.transferred.load(Ordering::Relaxed)
    }

    /// Fetches the image `digest` of `repo` from the peer server at `peer`, which must present
    /// the certificate with SHA-256 `pin`, into `layout` under `tag`. Returns the number of
    /// blob bytes transferred.
    pub async fn fetch(
        &self,
        peer: SocketAddr,
        pin: &str,
        repo: &Repo,
        digest: &str,
        tag: &str,
        layout: &ImageLayout,
    ) -> Result<u64, FetchError> {
        // Re-read every time: projected ServiceAccount tokens rotate.
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| FetchError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(FetchError::EmptyToken(self.token_file.clone()));
        }
        let http = http::client(Tls::Pinned(pin.to_owned())).map_err(FetchError::Client)?;
        let base = format!("https://{peer}/v2/{}/{}", repo.namespace, repo.name);

        let url = format!("{base}/manifests/{digest}");
        let manifest_digest = oci_spec::image::Digest::try_from(digest)
            .map_err(|_| FetchError::Algorithm(digest.to_owned()))?;
        let bytes = Self::manifest(&http, &url, token).await?;
        let hex = sha256_hex(&bytes);
        if hex != manifest_digest.digest() {
            return Err(FetchError::Verify {
                url,
                source: Mismatch::Digest {
                    found: hex,
                    expected: manifest_digest.digest().to_owned(),
                },
            });
        }
        let manifest = ImageManifest::from_reader(&bytes[..])
            .map_err(|source| FetchError::Manifest { url, source })?;

        let ingest = layout.ingest_dir();
        tokio::fs::create_dir_all(&ingest)
            .await
            .map_err(|source| FetchError::Io {
                path: ingest.clone(),
                source,
            })?;
        let mut missing = Vec::new();
        for desc in std::iter::once(manifest.config()).chain(manifest.layers()) {
            if desc.digest().algorithm() != &DigestAlgorithm::Sha256 {
                return Err(FetchError::Algorithm(desc.digest().to_string()));
            }
            // A blob present is shared with an image we already hold.
            if !layout.blob_path(desc.digest()).exists() {
                missing.push(desc);
            }
        }
        // The sizes are the peer's word, but every blob is verified against its size: a peer
        // claiming more is refused here, one sending more fails verification.
        let needed = missing
            .iter()
            .fold(0u64, |sum, desc| sum.saturating_add(desc.size()));
        let need = Need {
            what: format!("checkpoint image {repo}"),
            bytes: needed,
            basis: format!(
                "the {} of its {} blobs this node does not hold yet",
                Size(needed),
                missing.len()
            ),
        };
        self.space
            .ensure(&ingest, need)
            .map_err(FetchError::Space)?;

        let mut staged = Staged::default();
        let mut transferred = 0;
        for desc in missing {
            let path = ingest.join(format!(
                "{}.{}.partial",
                desc.digest().digest(),
                self.sequence.fetch_add(1, Ordering::Relaxed)
            ));
            staged.0.push((desc.digest().clone(), path.clone()));
            let url = format!("{base}/blobs/{}", desc.digest());
            Self::blob(
                &http,
                &url,
                token,
                desc.digest().digest(),
                desc.size(),
                &path,
            )
            .await?;
            transferred += desc.size();
            self.transferred.fetch_add(desc.size(), Ordering::Relaxed);
        }
        tokio::task::block_in_place(|| layout.import(tag, &manifest_digest, &bytes, &staged.0))
            .map_err(FetchError::Import)?;
        Ok(transferred)
    }

    async fn get(http: &HttpClient, url: &str, token: &str) -> Result<Response<Body>, FetchError> {
        let request = Request::get(url)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(header::ACCEPT, MANIFEST_MEDIA_TYPE)
            .body(Body::empty())
            .map_err(|_| FetchError::Status {
                url: url.to_owned(),
                status: StatusCode::BAD_REQUEST,
            })?;
        let response = http::send(http, request, None).await.map_err(|e| match e {
            SendError::Timeout(timeout) => FetchError::Timeout {
                url: url.to_owned(),
                timeout,
            },
            SendError::Request(source) => FetchError::Request {
                url: url.to_owned(),
                source,
            },
        })?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                url: url.to_owned(),
                status: response.status(),
            });
        }
        Ok(response)
    }

    /// The next chunk of `body`, `None` at its end.
    async fn chunk(url: &str, body: &mut Body) -> Result<Option<Bytes>, FetchError> {
        http::chunk(body).await.map_err(|e| match e {
            ReadError::Timeout(timeout) => FetchError::Timeout {
                url: url.to_owned(),
                timeout,
            },
            ReadError::Body(source) => FetchError::Body {
                url: url.to_owned(),
                source,
            },
        })
    }

    async fn manifest(http: &HttpClient, url: &str, token: &str) -> Result<Vec<u8>, FetchError> {
        let mut body = Self::get(http, url, token).await?.into_body();
        let mut bytes = Vec::new();
        while let Some(data) = Self::chunk(url, &mut body).await? {
            if bytes.len() + data.len() > MAX_MANIFEST {
                return Err(FetchError::ManifestTooLarge {
                    url: url.to_owned(),
                });
            }
            bytes.extend_from_slice(&data);
        }
        Ok(bytes)
    }

    /// Streams the blob at `url` into `path`, verifying it on the way, and makes it durable.
    async fn blob(
        http: &HttpClient,
        url: &str,
        token: &str,
        hex: &str,
        size: u64,
        path: &Path,
    ) -> Result<(), FetchError> {
        let io = |source| FetchError::Io {
            path: path.to_owned(),
            source,
        };
        let mut body = Self::get(http, url, token).await?.into_body();
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .await
            .map_err(io)?;
        let mut verifier = Verifier::new(hex, size);
        let verify = |source| FetchError::Verify {
            url: url.to_owned(),
            source,
        };
        while let Some(data) = Self::chunk(url, &mut body).await? {
            verifier.update(&data).map_err(verify)?;
            file.write_all(&data).await.map_err(io)?;
        }
        verifier.finish().map_err(verify)?;
        file.sync_all().await.map_err(io)?;
        Ok(())
    }
}
