//! The webhook's TLS: a certificate authority and serving certificate made in memory at start
//! (nobody runs openssl; the CA's PEM becomes the webhook configuration's `caBundle`), served by
//! the shared [`TlsListener`], to every client or, given a [`ClientCa`], to those it signed.

use std::net::IpAddr;
use std::sync::Arc;

pub use checkpointing::tls::{ClientCa, TlsListener};
use k8s_openapi::jiff::{SignedDuration, Timestamp, tz::TimeZone};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// How long the certificates are valid. They live only in this process's memory and a new pair
/// is made at every start, so a long life costs nothing.
const VALIDITY_DAYS: i64 = 3650;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("generating the webhook certificates")]
    Generate(#[from] rcgen::Error),
    #[error("building the TLS server configuration")]
    Config(#[from] tokio_rustls::rustls::Error),
    #[error("reading the shared {0} (PEM)")]
    Pem(String),
}

/// A CA and the serving certificate it signed.
pub struct Certificates {
    /// PEM of the CA certificate: what the API server must trust (`caBundle`).
    pub ca_pem: String,
    #[cfg(test)]
    pub ca_der: CertificateDer<'static>,
    pub cert_der: CertificateDer<'static>,
    key_der: Vec<u8>,
    cert_pem: String,
    key_pem: String,
}

impl Certificates {
    /// A fresh CA (ECDSA P-256) and a serving certificate for `dns_names` and `ips`.
    pub fn generate(dns_names: &[String], ips: &[IpAddr]) -> Result<Self, TlsError> {
        let now = Timestamp::now();
        let (ca_cert, issuer) = new_ca("checkpoint-controller webhook CA", now)?;
        let (cert, key) = new_leaf(
            dns_names,
            ips,
            ExtendedKeyUsagePurpose::ServerAuth,
            &issuer,
            now,
        )?;
        Ok(Self {
            ca_pem: ca_cert.pem(),
            #[cfg(test)]
            ca_der: ca_cert.der().clone(),
            cert_der: cert.der().clone(),
            key_der: key.serialize_der(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// PEM of the serving certificate and of its key (PKCS#8), to be shared with other replicas.
    pub fn to_pem(&self) -> (&str, &str) {
        (&self.cert_pem, &self.key_pem)
    }

    /// Certificates another replica made ([`Self::to_pem`] and `ca_pem`); checks they load.
    pub fn from_pem(ca_pem: &str, cert_pem: &str, key_pem: &str) -> Result<Self, TlsError> {
        use tokio_rustls::rustls::pki_types::pem::PemObject;
        let bad = |what: &str| TlsError::Pem(what.to_owned());
        #[cfg(test)]
        let ca_der =
            CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|_| bad("CA certificate"))?;
        let cert_der =
            CertificateDer::from_pem_slice(cert_pem.as_bytes()).map_err(|_| bad("certificate"))?;
        let key = PrivatePkcs8KeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|_| bad("private key"))?;
        let certificates = Self {
            ca_pem: ca_pem.to_owned(),
            #[cfg(test)]
            ca_der,
            cert_der,
            key_der: key.secret_pkcs8_der().to_vec(),
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
        };
        // Refuses a key that does not match the certificate.
        certificates.server_config(None)?;
        Ok(certificates)
    }

    /// A TLS server configuration presenting the serving certificate, HTTP/1.1 only; with
    /// `client_ca`, only for clients presenting a certificate it signed.
    pub fn server_config(
        &self,
        client_ca: Option<&ClientCa>,
    ) -> Result<Arc<ServerConfig>, TlsError> {
        Ok(checkpointing::tls::server_config(
            self.cert_der.clone(),
            self.key_der.clone(),
            client_ca,
        )?)
    }
}

/// A fresh CA (ECDSA P-256) named `name`, and what signs with it.
fn new_ca(
    name: &str,
    now: Timestamp,
) -> Result<(rcgen::Certificate, Issuer<'static, KeyPair>), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut ca = CertificateParams::default();
    ca.distinguished_name.push(DnType::CommonName, name);
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    set_validity(&mut ca, now);
    let cert = ca.self_signed(&key)?;
    Ok((cert, Issuer::new(ca, key)))
}

/// A fresh key (ECDSA P-256) and a certificate for `dns_names` and `ips`, for `usage`, signed
/// by `issuer`.
fn new_leaf(
    dns_names: &[String],
    ips: &[IpAddr],
    usage: ExtendedKeyUsagePurpose,
    issuer: &Issuer<'_, KeyPair>,
    now: Timestamp,
) -> Result<(rcgen::Certificate, KeyPair), rcgen::Error> {
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(dns_names.to_vec())?;
    leaf.subject_alt_names
        .extend(ips.iter().copied().map(SanType::IpAddress));
    let common_name = dns_names
        .first()
        .map_or_else(|| "checkpoint-controller-webhook".to_owned(), Clone::clone);
    leaf.distinguished_name
        .push(DnType::CommonName, common_name);
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![usage];
    leaf.use_authority_key_identifier_extension = true;
    set_validity(&mut leaf, now);
    let cert = leaf.signed_by(&key, issuer)?;
    Ok((cert, key))
}

/// Valid from a day ago (clock skew) for [`VALIDITY_DAYS`].
fn set_validity(params: &mut CertificateParams, now: Timestamp) {
    let at = |t: Timestamp| {
        let date = t.to_zoned(TimeZone::UTC).date();
        // Months and days are positive and small.
        rcgen::date_time_ymd(
            date.year().into(),
            date.month().unsigned_abs(),
            date.day().unsigned_abs(),
        )
    };
    let start = now
        .checked_sub(SignedDuration::from_hours(24))
        .unwrap_or(now);
    let end = now
        .checked_add(SignedDuration::from_hours(24 * VALIDITY_DAYS))
        .unwrap_or(now);
    params.not_before = at(start);
    params.not_after = at(end);
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream as ClientTlsStream;
    use tokio_rustls::rustls::crypto::ring;
    use tokio_rustls::rustls::pki_types::{PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    pub const DNS: &str = "checkpoint-controller-webhook.default.svc";

    /// A client's certificate and its PKCS#8 key.
    pub struct ClientIdentity {
        cert: CertificateDer<'static>,
        key: Vec<u8>,
    }

    /// A fresh CA, as the PEM bundle a server is given, and a client certificate it signed.
    pub fn client_ca_and_identity() -> (String, ClientIdentity) {
        let now = Timestamp::now();
        let (ca, issuer) = new_ca("webhook client CA", now).unwrap();
        let (cert, key) = new_leaf(
            &["kube-apiserver".to_owned()],
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            &issuer,
            now,
        )
        .unwrap();
        let identity = ClientIdentity {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        };
        (ca.pem(), identity)
    }

    /// Serves `router` over TLS with certificates for [`DNS`] and 127.0.0.1, to clients with a
    /// certificate `client_ca` signed if given; returns the address and the certificates.
    pub async fn serve(
        router: axum::Router,
        client_ca: Option<&ClientCa>,
    ) -> (SocketAddr, Certificates) {
        let certs =
            Certificates::generate(&[DNS.to_owned()], &["127.0.0.1".parse().unwrap()]).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let listener = TlsListener::new(tcp, certs.server_config(client_ca).unwrap()).unwrap();
        let addr = axum::serve::Listener::local_addr(&listener).unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await });
        (addr, certs)
    }

    /// A TLS connection to `addr` that trusts only `ca` and checks the certificate for `name`;
    /// presents `client`'s certificate if given.
    pub async fn connect(
        addr: SocketAddr,
        ca: &CertificateDer<'static>,
        name: &str,
        client: Option<&ClientIdentity>,
    ) -> io::Result<ClientTlsStream<TcpStream>> {
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone()).unwrap();
        let builder = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let config = match client {
            Some(client) => builder
                .with_client_auth_cert(
                    vec![client.cert.clone()],
                    PrivateKeyDer::Pkcs8(client.key.clone().into()),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        let name = ServerName::try_from(name.to_owned()).unwrap();
        let tcp = TcpStream::connect(addr).await?;
        TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    }

    /// One HTTP/1.1 request over `stream`; the whole response.
    pub async fn http(
        mut stream: ClientTlsStream<TcpStream>,
        method: &str,
        path: &str,
        body: &str,
    ) -> String {
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        // A peer that closes without close_notify is fine here.
        let _ = stream.read_to_string(&mut response).await;
        response
    }

    #[tokio::test]
    async fn certificate_is_valid_for_its_names_and_addresses_only() {
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (addr, certs) = serve(router, None).await;
        assert!(
            certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"),
            "{}",
            certs.ca_pem
        );

        for name in [DNS, "127.0.0.1"] {
            let stream = connect(addr, &certs.ca_der, name, None)
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let response = http(stream, "GET", "/", "").await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            assert!(response.ends_with("hello"), "{response}");
        }
        for wrong in ["other.default.svc", "127.0.0.2"] {
            let err = connect(addr, &certs.ca_der, wrong, None).await.unwrap_err();
            assert!(err.to_string().contains("certificate"), "{wrong}: {err}");
        }
        // Another CA's client does not trust it.
        let other = Certificates::generate(&[DNS.to_owned()], &[]).unwrap();
        assert!(connect(addr, &other.ca_der, DNS, None).await.is_err());
        // A failed handshake does not stop the listener.
        let stream = connect(addr, &certs.ca_der, DNS, None).await.unwrap();
        assert!(
            http(stream, "GET", "/", "")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }

    #[test]
    fn certificates_survive_pem_and_a_mismatched_key_is_refused() {
        let certs = Certificates::generate(&[DNS.to_owned()], &[]).unwrap();
        let (cert, key) = certs.to_pem();
        let back = Certificates::from_pem(&certs.ca_pem, cert, key).unwrap();
        assert_eq!(back.cert_der, certs.cert_der);
        assert_eq!(back.ca_der, certs.ca_der);
        assert_eq!(back.key_der, certs.key_der);

        let other = Certificates::generate(&[DNS.to_owned()], &[]).unwrap();
        assert!(Certificates::from_pem(&certs.ca_pem, cert, other.to_pem().1).is_err());
        assert!(Certificates::from_pem(&certs.ca_pem, "junk", key).is_err());
    }

    #[tokio::test]
    async fn a_silent_client_does_not_hold_up_others() {
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (addr, certs) = serve(router, None).await;
        // Connected, never says hello.
        let _silent = TcpStream::connect(addr).await.unwrap();
        let stream = tokio::time::timeout(
            Duration::from_secs(5),
            connect(addr, &certs.ca_der, DNS, None),
        )
        .await
        .expect("handshake not blocked")
        .unwrap();
        assert!(
            http(stream, "GET", "/", "")
                .await
                .starts_with("HTTP/1.1 200")
        );
    }

    #[tokio::test]
    async fn with_a_client_ca_only_clients_it_signed_reach_http() {
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let (ca_pem, signed) = client_ca_and_identity();
        let client_ca = ClientCa::from_pem(ca_pem.as_bytes()).unwrap();
        let (addr, certs) = serve(router, Some(&client_ca)).await;

        let stream = connect(addr, &certs.ca_der, DNS, Some(&signed))
            .await
            .unwrap();
        let response = http(stream, "GET", "/", "").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");

        // Its CA has the trusted one's name, not its key: the signature check fails.
        let (_, stranger) = client_ca_and_identity();
        for (client, alert) in [
            (None, "CertificateRequired"),
            (Some(&stranger), "DecryptError"),
        ] {
            let error = refusal(addr, &certs, client).await;
            assert!(error.contains(alert), "{error}");
        }
    }

    /// The error of a client the server refuses: from the handshake, or from the first read
    /// (a TLS 1.3 client is done before the server has checked its certificate). Panics if
    /// it gets an HTTP response instead.
    async fn refusal(
        addr: SocketAddr,
        certs: &Certificates,
        client: Option<&ClientIdentity>,
    ) -> String {
        let mut stream = match connect(addr, &certs.ca_der, DNS, client).await {
            Ok(stream) => stream,
            Err(error) => return error.to_string(),
        };
        // May fail already; the read below tells why.
        let _ = stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await;
        let mut response = Vec::new();
        match stream.read_to_end(&mut response).await {
            Ok(_) => panic!("answered: {}", String::from_utf8_lossy(&response)),
            Err(error) => error.to_string(),
        }
    }
}
