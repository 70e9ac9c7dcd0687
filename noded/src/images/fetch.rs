//! Fetching a checkpoint image into the layout from wherever it is ([`Upstream`]: the noded
//! holding it, or the registry it was pushed to), verifying every blob's size and digest while
//! streaming it into the layout's ingest directory, and importing it under the image's tag
//! only when all of it verified. Before the first blob it checks that the ingest directory's
//! disk has room for all of them.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Response, StatusCode};
use bytes::Bytes;
use checkpointing::digest::{Mismatch, Verifier, sha256_hex};
use checkpointing::oci::{ImageLayout, OciError};
use oci_spec::image::{DigestAlgorithm, ImageManifest};
use tokio::io::AsyncWriteExt;

use super::Repo;
use crate::http::{self, ReadError};
use crate::push::PushError;
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
    /// The registry a copy was pushed to, asked for it.
    #[error("fetching the pushed copy")]
    Registry(#[source] PushError),
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

/// Where an image is fetched from: answers `GET`s of its manifest and blobs.
pub trait Upstream: Sync {
    /// The URL of `path` (`manifests/<digest>`, `blobs/<digest>`), for messages.
    fn url(&self, path: &str) -> String;

    /// The answer to `GET <path>`, whatever its status.
    fn get(&self, path: &str) -> impl Future<Output = Result<Response<Body>, FetchError>> + Send;
}

pub struct Fetcher {
    /// Refuses an image the ingest directory has no room for, before any blob.
    space: DiskSpace,
    transferred: AtomicU64,
    sequence: AtomicU64,
}

impl Fetcher {
    pub fn new(space: DiskSpace) -> Self {
        Self {
            space,
            transferred: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
        }
    }

    /// Bytes of blobs fetched since start.
    pub fn transferred(&self) -> u64 {
        self.transferred.load(Ordering::Relaxed)
    }

    /// Fetches the image `digest` of `repo` from `from` into `layout` under `tag`. Returns the
    /// number of blob bytes transferred.
    pub async fn fetch(
        &self,
        from: &impl Upstream,
        repo: &Repo,
        digest: &str,
        tag: &str,
        layout: &ImageLayout,
    ) -> Result<u64, FetchError> {
        let manifest_path = format!("manifests/{digest}");
        let url = from.url(&manifest_path);
        let manifest_digest = oci_spec::image::Digest::try_from(digest)
            .map_err(|_| FetchError::Algorithm(digest.to_owned()))?;
        let bytes = Self::manifest(from, &manifest_path).await?;
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
            let blob = format!("blobs/{}", desc.digest());
            Self::blob(from, &blob, desc.digest().digest(), desc.size(), &path).await?;
            transferred += desc.size();
            self.transferred.fetch_add(desc.size(), Ordering::Relaxed);
        }
        tokio::task::block_in_place(|| layout.import(tag, &manifest_digest, &bytes, &staged.0))
            .map_err(FetchError::Import)?;
        Ok(transferred)
    }

    /// The body of `path` from `from`, which must answer `200 OK`.
    async fn get(from: &impl Upstream, path: &str) -> Result<Body, FetchError> {
        let response = from.get(path).await?;
        if response.status() != StatusCode::OK {
            return Err(FetchError::Status {
                url: from.url(path),
                status: response.status(),
            });
        }
        Ok(response.into_body())
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

    async fn manifest(from: &impl Upstream, path: &str) -> Result<Vec<u8>, FetchError> {
        let url = &from.url(path);
        let mut body = Self::get(from, path).await?;
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

    /// Streams the blob at `blob` into `path`, verifying it on the way, and makes it durable.
    async fn blob(
        from: &impl Upstream,
        blob: &str,
        hex: &str,
        size: u64,
        path: &Path,
    ) -> Result<(), FetchError> {
        let io = |source| FetchError::Io {
            path: path.to_owned(),
            source,
        };
        let url = &from.url(blob);
        let mut body = Self::get(from, blob).await?;
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
