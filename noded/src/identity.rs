//! This node's identity towards other nodes' noded: a self-signed certificate made at start
//! (its key never leaves this process), published by its SHA-256 in the node's Lease, which
//! only this node's noded may write. Peers connect with TLS and accept exactly the published
//! certificate ([`Pinned`]); no CA to run, nothing to rotate but the process.

use std::sync::Arc;

use checkpointing::digest::sha256_hex;
use rcgen::{CertificateParams, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, ServerConfig, SignatureScheme};

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("making the peer certificate")]
    Generate(#[from] rcgen::Error),
    #[error("building the peer TLS configuration")]
    Config(#[from] rustls::Error),
}

/// The certificate and key the peer server presents.
pub struct PeerIdentity {
    cert: CertificateDer<'static>,
    key: Vec<u8>,
}

impl PeerIdentity {
    /// A fresh ECDSA P-256 key and a certificate for `node`.
    pub fn generate(node: &str) -> Result<Self, IdentityError> {
        let key = KeyPair::generate()?;
        let cert = CertificateParams::new(vec![node.to_owned()])?.self_signed(&key)?;
        Ok(Self {
            cert: cert.der().clone(),
            key: key.serialize_der(),
        })
    }

    /// What the Lease publishes and peers pin: the certificate's SHA-256, hex.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.cert)
    }

    /// The peer server's TLS configuration.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, IdentityError> {
        Ok(checkpointing::tls::server_config(
            self.cert.clone(),
            self.key.clone(),
            None,
        )?)
    }
}

/// Accepts exactly the certificate whose SHA-256 is `fingerprint`, whatever name or address
/// it was reached at, and checks the handshake is signed by its key.
#[derive(Debug)]
pub struct Pinned {
    fingerprint: String,
    algorithms: WebPkiSupportedAlgorithms,
}

impl Pinned {
    pub fn new(fingerprint: String) -> Self {
        Self {
            fingerprint,
            algorithms: ring::default_provider().signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if intermediates.is_empty() && sha256_hex(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
