//! A registry like the ones users run: HTTPS, and Docker/OCI bearer tokens from a token service.
//! Debian's `docker-registry` (distribution 2.8) stores the images; the token service is ours,
//! running in the test process, so a test decides who may pull, push and delete.
//!
//! The token service signs ES256 JWTs with a key made at start; its self-signed certificate is
//! the registry's `rootcertbundle`. The JWT header names the key by its libtrust key id (`kid`),
//! which distribution 2.8 looks up among the keys of that bundle (an `x5c` header holding the
//! certificate works as well; `kid` keeps tokens short).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use checkpointing::tls::{TlsListener, server_config};
use k8s_openapi::jiff::Timestamp;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};

/// The `service` the registry names in its challenges and expects as the tokens' audience.
const SERVICE: &str = "e2e-registry";
/// The `iss` of the tokens, as the registry's configuration expects it.
const ISSUER: &str = "e2e-token-issuer";
/// A token's lifetime: every request made with one is over well inside.
const TOKEN_SECONDS: u64 = 300;
/// `docker-registry` is up within a second or two; more means it failed.
const STARTS_WITHIN: Duration = Duration::from_secs(30);
/// What a manifest GET accepts: the OCI and the Docker v2 form (skopeo pushes either).
const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// A user of the token service and the actions it may be granted on any repository
/// (`pull`, `push`, `delete`).
#[derive(Clone, Copy, Debug)]
pub struct RegistryUser {
    pub name: &'static str,
    pub password: &'static str,
    pub actions: &'static [&'static str],
}

/// A running `docker-registry` requiring bearer tokens, and its token service. Dropping it
/// stops both and removes the registry's storage.
pub struct TokenRegistry {
    /// `IP:PORT` of the registry, as image references name it.
    pub host: String,
    /// The CA certificate (PEM file) the registry's and the token service's certificate
    /// verify against.
    pub ca: PathBuf,
    /// The token service's URL (the realm of the registry's challenges).
    pub realm: String,
    registry: Child,
    /// Stops the token service's thread, and the thread.
    issuer: Option<(oneshot::Sender<()>, std::thread::JoinHandle<()>)>,
    dir: TempDir,
}

impl TokenRegistry {
    /// Starts the registry and its token service on `ip` (the testbed's host side, 10.77.0.1),
    /// each on a free port, both serving `pki`'s `docker-hub.crt` (the testbed CA `ca.crt`
    /// signed it, the nodes trust it; its key is PKCS#8, as `openssl genpkey` writes it).
    /// `users` are those the token service knows.
    pub async fn start(ip: &str, pki: &Path, users: &[RegistryUser]) -> Self {
        let read = |name: &str| {
            let path = pki.join(name);
            std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
        };
        let tls = Tls {
            ca: pki.join("ca.crt"),
            cert_pem: read("docker-hub.crt"),
            key_pem: read("docker-hub.key"),
        };
        Self::start_with(ip, tls, users, tempfile::tempdir().expect("a temp dir")).await
    }

    /// Like [`Self::start`], but serving a certificate of a CA made here that nobody trusts
    /// (it is [`Self::ca`]): what a pull from a registry with an unknown CA meets.
    pub async fn start_untrusted(ip: &str, users: &[RegistryUser]) -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let ip: IpAddr = ip.parse().unwrap_or_else(|e| panic!("IP {ip}: {e}"));
        let tls = throwaway_ca(ip, dir.path());
        Self::start_with(&ip.to_string(), tls, users, dir).await
    }

    async fn start_with(ip: &str, tls: Tls, users: &[RegistryUser], dir: TempDir) -> Self {
        let cert_path = dir.path().join("server.crt");
        let key_path = dir.path().join("server.key");
        std::fs::write(&cert_path, &tls.cert_pem).expect("writing the server certificate");
        std::fs::write(&key_path, &tls.key_pem).expect("writing the server key");
        let signer = Signer::generate();
        let bundle = dir.path().join("token-signer.crt");
        std::fs::write(&bundle, &signer.cert_pem).expect("writing the token signer certificate");

        let cert = CertificateDer::from_pem_slice(&tls.cert_pem).expect("a PEM certificate");
        let key = PrivatePkcs8KeyDer::from_pem_slice(&tls.key_pem).expect("a PKCS#8 PEM key");
        let config = server_config(cert, key.secret_pkcs8_der().to_vec(), None)
            .expect("a TLS configuration of the server certificate");
        let tcp = std::net::TcpListener::bind((ip, 0))
            .and_then(|tcp| tcp.set_nonblocking(true).map(|()| tcp))
            .unwrap_or_else(|e| panic!("binding the token service on {ip}: {e}"));
        let issuer_addr = tcp.local_addr().expect("the token service's address");
        let realm = format!("https://{issuer_addr}/token");
        let service = Arc::new(TokenService {
            users: users.to_vec(),
            signer,
            rng: SystemRandom::new(),
        });
        let app = Router::new()
            .route("/token", get(token))
            .with_state(service);
        let (stop, stopped) = oneshot::channel::<()>();
        // A runtime of its own: the service answers while the test's runtime is busy or blocked
        // (a test waiting in a blocking call for a pull that needs a token).
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the token service");
            runtime.block_on(async move {
                let tcp = TcpListener::from_std(tcp).expect("the token service's socket");
                let listener = TlsListener::new(tcp, config).expect("a TLS listener");
                tokio::select! {
                    _ = axum::serve(listener, app) => {}
                    _ = stopped => {}
                }
            });
            // Dropping the runtime ends the connections still open.
        });
        let issuer = Some((stop, thread));

        // docker-registry binds its own port: a free one, taken by the time it binds only if
        // something else grabs it in between (then it fails to start, and says so).
        let host = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a: SocketAddr| a.to_string())
            .unwrap_or_else(|e| panic!("finding a free port on {ip}: {e}"));
        let storage = dir.path().join("storage");
        let config_path = dir.path().join("config.yml");
        std::fs::write(
            &config_path,
            format!(
                "version: 0.1\n\
                 log:\n  level: info\n  formatter: text\n\
                 storage:\n  filesystem:\n    rootdirectory: {storage}\n  delete:\n    enabled: true\n\
                 http:\n  addr: {host}\n  tls:\n    certificate: {cert}\n    key: {key}\n\
                 auth:\n  token:\n    realm: {realm}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {bundle}\n",
                storage = storage.display(),
                cert = cert_path.display(),
                key = key_path.display(),
                bundle = bundle.display(),
            ),
        )
        .expect("writing the registry configuration");
        let log_path = dir.path().join("registry.log");
        let log = std::fs::File::create(&log_path).expect("creating the registry log");
        let registry = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file"))
            .stderr(log)
            .spawn()
            .expect("starting docker-registry (Debian package docker-registry)");
        let mut fixture = Self {
            host,
            ca: tls.ca,
            realm,
            registry,
            issuer,
            dir,
        };
        fixture.wait_up().await;
        fixture
    }

    /// Until the registry answers `/v2/` over TLS with its token challenge.
    async fn wait_up(&mut self) {
        let started = Instant::now();
        let url = format!("https://{}/v2/", self.host);
        loop {
            let (status, _) = self.curl(&[&url]).await;
            if status == 401 {
                return;
            }
            let exited = self.registry.try_wait().expect("checking docker-registry");
            if exited.is_some() || started.elapsed() > STARTS_WITHIN {
                let log = std::fs::read_to_string(self.dir.path().join("registry.log"))
                    .unwrap_or_default();
                panic!(
                    "docker-registry on {} did not come up ({exited:?}, last answer {status}); its log:\n{log}",
                    self.host
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The `.dockerconfigjson` of a `kubernetes.io/dockerconfigjson` Secret (before base64,
    /// as `stringData` takes it) with `user`'s credentials for this registry.
    pub fn docker_config(&self, user: &str, password: &str) -> String {
        let auth = STANDARD.encode(format!("{user}:{password}"));
        serde_json::json!({
            "auths": {
                &self.host: {"username": user, "password": password, "auth": auth}
            }
        })
        .to_string()
    }

    /// A token for `scope` (`repository:NAME:ACTIONS`) from the token service, as a client
    /// gets it with `user`'s Basic credentials; the service's status code when it refuses.
    pub async fn token(&self, user: &str, password: &str, scope: &str) -> Result<String, u16> {
        let url = format!("{}?service={SERVICE}&scope={scope}", self.realm);
        let credentials = format!("{user}:{password}");
        let (status, body) = self.curl(&["-u", &credentials, &url]).await;
        if status != 200 {
            return Err(status);
        }
        let answer: serde_json::Value = serde_json::from_slice(&body)
            .unwrap_or_else(|e| panic!("token service answer {body:?}: {e}"));
        Ok(answer["token"]
            .as_str()
            .expect("a token in the token service's answer")
            .to_owned())
    }

    /// Status code of `GET /v2/<repository>/manifests/<reference>` with a pull token for
    /// `user`: what a user checks through the registry API (200 there, 404 gone).
    pub async fn manifest_status(
        &self,
        repository: &str,
        reference: &str,
        user: &RegistryUser,
    ) -> u16 {
        self.manifest(repository, reference, user).await.0
    }

    /// Status code and body of `GET /v2/<repository>/manifests/<reference>` with a pull
    /// token for `user`: the manifest as the registry stores it.
    pub async fn manifest(
        &self,
        repository: &str,
        reference: &str,
        user: &RegistryUser,
    ) -> (u16, Vec<u8>) {
        self.manifest_request("GET", repository, reference, user, "pull")
            .await
    }

    /// Status code of `DELETE /v2/<repository>/manifests/<digest>` with a token `user` asked
    /// to delete with: 202 when granted, 401 when the token lacks `delete`.
    pub async fn delete_manifest(
        &self,
        repository: &str,
        digest: &str,
        user: &RegistryUser,
    ) -> u16 {
        self.manifest_request("DELETE", repository, digest, user, "delete")
            .await
            .0
    }

    async fn manifest_request(
        &self,
        method: &str,
        repository: &str,
        reference: &str,
        user: &RegistryUser,
        action: &str,
    ) -> (u16, Vec<u8>) {
        let scope = format!("repository:{repository}:{action}");
        let token = match self.token(user.name, user.password, &scope).await {
            Ok(token) => token,
            Err(status) => return (status, Vec::new()),
        };
        let url = format!(
            "https://{}/v2/{repository}/manifests/{reference}",
            self.host
        );
        let bearer = format!("Authorization: Bearer {token}");
        let accept = format!("Accept: {MANIFEST_TYPES}");
        let args = ["-X", method, "-H", &bearer, "-H", &accept, &url];
        self.curl(&args).await
    }

    /// curl with `args`, verifying the server against [`Self::ca`]: the status code (0 when
    /// there was no HTTP answer) and the body.
    async fn curl(&self, args: &[&str]) -> (u16, Vec<u8>) {
        let body = self.dir.path().join(format!(
            "curl-{}.out",
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos()
        ));
        let output = tokio::process::Command::new("curl")
            .args(["-s", "--max-time", "20", "--cacert"])
            .arg(&self.ca)
            .arg("-o")
            .arg(&body)
            .args(["-w", "%{http_code}"])
            .args(args)
            .output()
            .await
            .expect("running curl");
        let status = String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        let content = std::fs::read(&body).unwrap_or_default();
        let _ = std::fs::remove_file(&body);
        (status, content)
    }
}

impl Drop for TokenRegistry {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only; wait reaps it before its storage goes.
        let _ = self.registry.kill();
        let _ = self.registry.wait();
        if let Some((stop, thread)) = self.issuer.take() {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
}

/// What a registry and its token service serve: a certificate and its PKCS#8 key (PEM), and
/// the CA certificate file that verifies it.
struct Tls {
    ca: PathBuf,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

/// A CA nobody trusts (written to `dir`) and a server certificate for `ip` it signed.
fn throwaway_ca(ip: IpAddr, dir: &Path) -> Tls {
    let ca_key = KeyPair::generate().expect("a CA key");
    let mut ca = CertificateParams::default();
    ca.distinguished_name
        .push(DnType::CommonName, "e2e throwaway CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).expect("a CA certificate");
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().expect("a server key");
    let mut server = CertificateParams::default();
    server
        .distinguished_name
        .push(DnType::CommonName, "e2e untrusted registry");
    server.subject_alt_names = vec![SanType::IpAddress(ip)];
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = server
        .signed_by(&key, &issuer)
        .expect("a server certificate");
    let ca_path = dir.join("untrusted-ca.crt");
    std::fs::write(&ca_path, ca_cert.pem()).expect("writing the throwaway CA");
    Tls {
        ca: ca_path,
        cert_pem: cert.pem().into_bytes(),
        key_pem: key.serialize_pem().into_bytes(),
    }
}

mod issuer;
use issuer::{Signer, TokenService, token};

#[cfg(test)]
mod tests;

/// Creates the dockerconfigjson Secret `name` holding `config` (its `.dockerconfigjson`).
pub async fn push_secret(client: &kube::Client, ns: &str, name: &str, config: String) {
    let secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config},
    }))
    .unwrap();
    kube::Api::namespaced(client.clone(), ns)
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
}
