//! The one HTTP client noded uses to talk to other servers — peers' registries (HTTPS with the
//! peer's pinned certificate) and, when configured, an external registry it pushes checkpoint
//! images to (HTTPS or plain HTTP) —
//! with its timeouts: connecting, waiting for response headers, and pauses in a streamed body.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::identity::Pinned;
pub use connect::{AddressCheck, Connector, resolve};

mod connect;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Until the response headers arrive (after the request body, if any, was sent).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest pause in a body being received or sent before the transfer is given up.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// After a large upload was sent, until the server answers: it may still be writing it out.
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(300);

pub type HttpClient = Client<HttpsConnector<Connector>, Body>;

/// Which servers the client may reach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tls {
    /// `http://` URLs only (an `https://` URL fails: the client trusts no certificate).
    #[cfg(test)]
    PlainOnly,
    /// `https://` URLs verified against the system's roots and these certificates (a private
    /// registry's CA), and `http://` URLs.
    SystemRootsAnd(Vec<CertificateDer<'static>>),
    /// `https://` URLs only, to the server presenting the certificate with this SHA-256 (a
    /// peer, see [`Pinned`]).
    Pinned(String),
}

/// The certificates of a PEM bundle (anything else in it is ignored); none is an error, as a
/// bundle given on purpose that trusts nothing is a mistake.
pub fn pem_certificates(pem: &[u8]) -> std::io::Result<Vec<CertificateDer<'static>>> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if certificates.is_empty() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no PEM certificate in it",
        ));
    }
    Ok(certificates)
}

/// The system's roots and `extra`. Unloadable system roots are only logged: plain-HTTP
/// registries and `extra` still work without them.
fn roots_and(extra: Vec<CertificateDer<'static>>) -> std::io::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "loading the system's root certificates");
    }
    let (_, unusable) = roots.add_parsable_certificates(native.certs);
    if unusable > 0 {
        tracing::debug!(unusable, "system root certificates skipped");
    }
    for certificate in extra {
        roots.add(certificate).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("an extra root certificate: {e}"),
            )
        })?;
    }
    Ok(roots)
}

/// A client for `tls`. Fails when an extra root is not a usable CA certificate.
pub fn client(tls: Tls) -> std::io::Result<HttpClient> {
    checked_client(tls, None)
}

/// A client for `tls` that connects only to addresses `check` allows (every address a host
/// resolves to is checked first).
pub fn checked_client(tls: Tls, check: Option<AddressCheck>) -> std::io::Result<HttpClient> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?;
    let https_only = matches!(tls, Tls::Pinned(_));
    let config = match tls {
        #[cfg(test)]
        Tls::PlainOnly => config.with_root_certificates(rustls::RootCertStore::empty()),
        Tls::SystemRootsAnd(extra) => config.with_root_certificates(roots_and(extra)?),
        Tls::Pinned(fingerprint) => config
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned::new(fingerprint))),
    }
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = HttpsConnectorBuilder::new().with_tls_config(config);
    let connector = if https_only {
        connector.https_only()
    } else {
        connector.https_or_http()
    };
    let connector = connector
        .enable_http1()
        .wrap_connector(Connector::new(http, check));
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Bytes of a request body sent so far, out of `total`: lets [`send`] tell a slow upload from a
/// stalled one.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub total: u64,
}

/// Sends `request`. Without `progress`, the response must start within [`RESPONSE_TIMEOUT`];
/// with it, the body may take as long as it keeps moving (no pause over [`IDLE_TIMEOUT`]), and
/// the server then gets [`COMMIT_TIMEOUT`] to answer.
pub async fn send(
    client: &HttpClient,
    request: Request<Body>,
    progress: Option<&Progress>,
) -> Result<Response<Body>, SendError> {
    let response = client.request(request);
    let Some(progress) = progress else {
        return tokio::time::timeout(RESPONSE_TIMEOUT, response)
            .await
            .map_err(|_| SendError::Timeout(RESPONSE_TIMEOUT))?
            .map(|r| r.map(Body::new))
            .map_err(SendError::Request);
    };
    tokio::pin!(response);
    let mut seen = progress.sent.load(Ordering::Relaxed);
    let mut waited = Duration::ZERO;
    let tick = Duration::from_secs(1).min(IDLE_TIMEOUT);
    loop {
        if let Ok(answer) = tokio::time::timeout(tick, &mut response).await {
            return answer.map(|r| r.map(Body::new)).map_err(SendError::Request);
        }
        let now = progress.sent.load(Ordering::Relaxed);
        if now != seen {
            seen = now;
            waited = Duration::ZERO;
            continue;
        }
        waited += tick;
        let limit = if now >= progress.total {
            COMMIT_TIMEOUT
        } else {
            IDLE_TIMEOUT
        };
        if waited >= limit {
            return Err(SendError::Timeout(limit));
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("no data within {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Body(#[from] axum::Error),
}

/// The next chunk of `body`, `None` at its end; a pause over [`IDLE_TIMEOUT`] is an error.
pub async fn chunk(body: &mut Body) -> Result<Option<Bytes>, ReadError> {
    loop {
        let frame = tokio::time::timeout(IDLE_TIMEOUT, body.frame())
            .await
            .map_err(|_| ReadError::Timeout(IDLE_TIMEOUT))?;
        match frame {
            None => return Ok(None),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    return Ok(Some(data));
                }
            }
        }
    }
}

/// At most `limit` bytes of `body` (the rest is left unread), for error messages and tokens;
/// all of it within [`RESPONSE_TIMEOUT`], so that a server dripping a byte at a time cannot
/// hold the caller either.
pub async fn read_prefix(body: &mut Body, limit: usize) -> Result<Vec<u8>, ReadError> {
    read_prefix_within(body, limit, RESPONSE_TIMEOUT).await
}

async fn read_prefix_within(
    body: &mut Body,
    limit: usize,
    deadline: Duration,
) -> Result<Vec<u8>, ReadError> {
    let read = async {
        let mut bytes = Vec::new();
        while bytes.len() < limit {
            let Some(data) = chunk(body).await? else {
                break;
            };
            let take = data.len().min(limit - bytes.len());
            bytes.extend_from_slice(&data[..take]);
        }
        Ok(bytes)
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(ReadError::Timeout(deadline)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt as _;

    #[tokio::test]
    async fn a_body_dripping_forever_is_given_up_on() {
        let drip = futures::stream::once(async { Ok::<_, std::io::Error>(Bytes::from("{")) })
            .chain(futures::stream::pending());
        let mut body = Body::from_stream(drip);
        let read = read_prefix_within(&mut body, 100, Duration::from_millis(50)).await;
        assert!(matches!(read, Err(ReadError::Timeout(_))), "{read:?}");
        let mut whole = Body::from("short");
        assert_eq!(read_prefix(&mut whole, 100).await.unwrap(), b"short");
    }
}
