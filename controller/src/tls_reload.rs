//! A serving certificate someone else issues and renews (cert-manager writes it into a Secret
//! the pod mounts): read from `tls.crt` and `tls.key` of a directory, and read again every
//! [`RELOAD_EVERY`], so that new TLS handshakes present the renewed certificate without a
//! restart. Connections already open keep the one they shook hands with.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio_rustls::rustls::crypto::ring::sign::any_supported_type;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tracing::{info, warn};

/// The certificate chain (leaf first) and its key, as a `kubernetes.io/tls` Secret holds them.
pub const CERT: &str = "tls.crt";
pub const KEY: &str = "tls.key";
/// How often the files are read again. The kubelet refreshes a mounted Secret within about a
/// minute, and cert-manager renews a third of a certificate's life before it ends: seconds
/// here cost a few small reads and lose nothing.
const RELOAD_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum CertDirError {
    #[error("reading {}", .0.display())]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("{} holds no PEM private key", .0.display())]
    NoKey(PathBuf),
    #[error("the key of {} does not fit its certificate", .0.display())]
    Mismatch(PathBuf, #[source] tokio_rustls::rustls::Error),
}

/// The certificate of a directory, as last read: what every handshake presents.
#[derive(Debug)]
pub struct CertDir {
    dir: PathBuf,
    current: RwLock<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    /// The files' bytes, to tell a renewal from a reread of the same files.
    pem: (Vec<u8>, Vec<u8>),
    key: Arc<CertifiedKey>,
}

impl CertDir {
    /// The certificate in `dir` now; an error if it cannot be served.
    pub fn load(dir: &Path) -> Result<Self, CertDirError> {
        let pem = read(dir)?;
        let key = certified(dir, &pem)?;
        Ok(Self {
            dir: dir.to_owned(),
            current: RwLock::new(Loaded { pem, key }),
        })
    }

    /// Reads the files again; whether they changed and the new certificate is now served. A
    /// certificate that cannot be served (e.g. read while the kubelet swaps the files) is an
    /// error, and the one before stays.
    pub fn reload(&self) -> Result<bool, CertDirError> {
        let pem = read(&self.dir)?;
        if self.current().pem == pem {
            return Ok(false);
        }
        let key = certified(&self.dir, &pem)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Loaded { pem, key };
        Ok(true)
    }

    fn current(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        // Only whole values are ever written: a poisoned lock still holds a good one.
        self.current.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Rereads the directory every [`RELOAD_EVERY`] until aborted.
    pub async fn keep_reloading(self: Arc<Self>) {
        loop {
            tokio::time::sleep(RELOAD_EVERY).await;
            match self.reload() {
                Ok(true) => {
                    info!(dir = %self.dir.display(), "serving the renewed webhook certificate")
                }
                Ok(false) => {}
                Err(error) => warn!(
                    error = format!("{:#}", anyhow::Error::from(error)),
                    "reloading the webhook certificate failed; still serving the one before"
                ),
            }
        }
    }
}

impl ResolvesServerCert for CertDir {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().key.clone())
    }
}

fn read(dir: &Path) -> Result<(Vec<u8>, Vec<u8>), CertDirError> {
    let file = |name| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|e| CertDirError::Read(path, e))
    };
    Ok((file(CERT)?, file(KEY)?))
}

/// The chain and key of `pem` as rustls serves them, checked to belong together.
fn certified(
    dir: &Path,
    (cert, key): &(Vec<u8>, Vec<u8>),
) -> Result<Arc<CertifiedKey>, CertDirError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .filter_map(Result::ok)
        .collect();
    if chain.is_empty() {
        return Err(CertDirError::NoCertificate(dir.join(CERT)));
    }
    // PKCS#8, PKCS#1 (cert-manager's default for RSA) or SEC1.
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|_| CertDirError::NoKey(dir.join(KEY)))?;
    let signing = any_supported_type(&key).map_err(|e| CertDirError::Mismatch(dir.join(KEY), e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| CertDirError::Mismatch(dir.join(KEY), e))?;
    Ok(Arc::new(certified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::tests::{DNS, connect, http};
    use crate::tls::{Certificates, TlsListener};

    fn write(dir: &Path, certificates: &Certificates) {
        let (cert, key) = certificates.to_pem();
        std::fs::write(dir.join(CERT), cert).unwrap();
        std::fs::write(dir.join(KEY), key).unwrap();
    }

    fn issue() -> Certificates {
        Certificates::generate(&[DNS.to_owned()], &[]).unwrap()
    }

    #[tokio::test]
    async fn new_handshakes_present_the_renewed_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let (first, renewed) = (issue(), issue());
        write(dir.path(), &first);
        let certs = Arc::new(CertDir::load(dir.path()).unwrap());
        let config = checkpointing::tls::server_config_resolving(certs.clone(), None).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TlsListener::new(tcp, config).unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        tokio::spawn(async move { axum::serve(listener, router).await });

        let trusting = |c: &Certificates| {
            let ca = c.ca_der.clone();
            async move { connect(addr, &ca, DNS, None).await }
        };
        // Open before the renewal: keeps the certificate it shook hands with.
        let open = trusting(&first).await.unwrap();
        assert!(!certs.reload().unwrap(), "the same files are no renewal");

        write(dir.path(), &renewed);
        assert!(certs.reload().unwrap());
        assert!(trusting(&first).await.is_err());
        let stream = trusting(&renewed).await.unwrap();
        assert!(http(stream, "GET", "/", "").await.ends_with("hello"));
        assert!(http(open, "GET", "/", "").await.ends_with("hello"));

        // Half-swapped files (the first's certificate, the renewed key) are refused; the
        // renewed certificate stays.
        let (cert, _) = first.to_pem();
        std::fs::write(dir.path().join(CERT), cert).unwrap();
        let error = certs.reload().unwrap_err();
        assert!(matches!(error, CertDirError::Mismatch(..)), "{error}");
        assert!(trusting(&renewed).await.is_ok());
    }

    #[test]
    fn a_directory_without_a_usable_certificate_is_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let error = CertDir::load(dir.path()).unwrap_err();
        assert!(matches!(error, CertDirError::Read(..)), "{error}");
        write(dir.path(), &issue());
        std::fs::write(dir.path().join(KEY), "junk").unwrap();
        let error = CertDir::load(dir.path()).unwrap_err();
        assert!(matches!(error, CertDirError::NoKey(..)), "{error}");
        std::fs::write(dir.path().join(CERT), "junk").unwrap();
        let error = CertDir::load(dir.path()).unwrap_err();
        assert!(matches!(error, CertDirError::NoCertificate(..)), "{error}");
    }
}
