//! An HTTPS listener for axum whose TLS handshakes run off the accept path: a slow or silent
//! client never holds up the others. The controller's webhook and noded's peer server use it.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::Listener;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio_rustls::rustls::server::danger::ClientCertVerifier;
use tokio_rustls::rustls::server::{
    ResolvesServerCert, VerifierBuilderError, WantsServerCert, WebPkiClientVerifier,
};
use tokio_rustls::rustls::{ConfigBuilder, Error, RootCertStore, ServerConfig};
use tokio_rustls::server::TlsStream;
use tracing::debug;

/// How long a client may take for its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS server configuration presenting `cert` (with its PKCS#8 `key`), HTTP/1.1 only. With
/// `client_ca`, a client must present a certificate that CA signed, or the handshake fails.
pub fn server_config(
    cert: CertificateDer<'static>,
    key: Vec<u8>,
    client_ca: Option<&ClientCa>,
) -> Result<Arc<ServerConfig>, Error> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key));
    Ok(http1(
        builder(client_ca)?.with_single_cert(vec![cert], key)?,
    ))
}

/// The same as [`server_config`], presenting whatever certificate `resolver` holds at each
/// handshake: one that is renewed while the server runs.
pub fn server_config_resolving(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca: Option<&ClientCa>,
) -> Result<Arc<ServerConfig>, Error> {
    Ok(http1(builder(client_ca)?.with_cert_resolver(resolver)))
}

fn builder(
    client_ca: Option<&ClientCa>,
) -> Result<ConfigBuilder<ServerConfig, WantsServerCert>, Error> {
    let builder = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()?;
    Ok(match client_ca {
        Some(ca) => builder.with_client_cert_verifier(ca.0.clone()),
        None => builder.with_no_client_auth(),
    })
}

fn http1(mut config: ServerConfig) -> Arc<ServerConfig> {
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// The CA certificates a server checks client certificates against (see [`server_config`]).
#[derive(Clone, Debug)]
pub struct ClientCa(Arc<dyn ClientCertVerifier>);

#[derive(Debug, thiserror::Error)]
pub enum ClientCaError {
    #[error("not PEM")]
    Pem(#[from] pem::Error),
    #[error("not a usable certificate")]
    Certificate(#[from] Error),
    #[error("no certificate in it")]
    NoCertificate,
    #[error(transparent)]
    Verifier(#[from] VerifierBuilderError),
}

impl ClientCa {
    /// The CA certificates of a PEM bundle; anything but certificates in it is ignored.
    pub fn from_pem(pem: &[u8]) -> Result<Self, ClientCaError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            roots.add(cert?)?;
        }
        if roots.is_empty() {
            return Err(ClientCaError::NoCertificate);
        }
        let verifier = WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(ring::default_provider()),
        )
        .build()?;
        Ok(Self(verifier))
    }
}

/// An HTTPS listener for `axum::serve`: a task accepts TCP connections (from `tcp`, a
/// [`crate::listen::Capped`] one to bound them, handshakes included) and runs each TLS
/// handshake in its own task, so a slow or broken client never holds up the others.
pub struct TlsListener<L: Listener = TcpListener> {
    handshaken: mpsc::Receiver<(TlsStream<L::Io>, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl<L: Listener<Addr = SocketAddr>> TlsListener<L> {
    pub fn new(mut tcp: L, config: Arc<ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, handshaken) = mpsc::channel(64);
        let tls = TlsAcceptor::from(config);
        let acceptor = tokio::spawn(async move {
            loop {
                // Failures (out of file descriptors and the like) are retried inside, paced.
                let (stream, peer) = tcp.accept().await;
                let (tls, tx) = (tls.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let _ = tx.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self {
            handshaken,
            local,
            acceptor,
        })
    }
}

impl<L: Listener> Drop for TlsListener<L> {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl<L: Listener<Addr = SocketAddr>> Listener for TlsListener<L> {
    type Io = TlsStream<L::Io>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.handshaken.recv().await {
            Some(accepted) => accepted,
            // The accept task is gone only once this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}
