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
    }

    async fn manifest_request(
        &self,
        method: &str,
        repository: &str,
        reference: &str,
        user: &RegistryUser,
        action: &str,
    ) -> u16 {
        let scope = format!("repository:{repository}:{action}");
        let token = match self.token(user.name, user.password, &scope).await {
            Ok(token) => token,
            Err(status) => return status,
        };
        let url = format!(
            "https://{}/v2/{repository}/manifests/{reference}",
            self.host
        );
        let bearer = format!("Authorization: Bearer {token}");
        let accept = format!("Accept: {MANIFEST_TYPES}");
        let args = ["-X", method, "-H", &bearer, "-H", &accept, &url];
        self.curl(&args).await.0
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

/// The token service's signing key and its self-signed certificate (the registry's
/// `rootcertbundle`).
struct Signer {
    key: EcdsaKeyPair,
    cert_pem: String,
    /// base64url of the JWT header, the same for every token.
    header: String,
}

impl Signer {
    fn generate() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .expect("a P-256 key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .expect("loading the P-256 key");
        let cert_key = KeyPair::try_from(pkcs8.as_ref()).expect("the P-256 key for rcgen");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "e2e token signer");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params
            .self_signed(&cert_key)
            .expect("the token signer certificate");
        let header = serde_json::json!({
            "typ": "JWT",
            "alg": "ES256",
            "kid": libtrust_key_id(&cert_key.subject_public_key_info()),
        });
        Self {
            key,
            cert_pem: cert.pem(),
            header: URL_SAFE_NO_PAD.encode(header.to_string()),
        }
    }

    /// A JWT of `claims`: header.payload.signature, each base64url; ES256 signatures are the
    /// 64 bytes r‖s (JWS), not DER.
    fn sign(&self, claims: &serde_json::Value, rng: &SystemRandom) -> String {
        let signed = format!(
            "{}.{}",
            self.header,
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self
            .key
            .sign(rng, signed.as_bytes())
            .expect("signing a token");
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()))
    }
}

/// libtrust's key id, which distribution gives each key of its `rootcertbundle`: the first 30
/// bytes of the SHA-256 of the DER SubjectPublicKeyInfo, in base32 (standard alphabet, no
/// padding: 30 bytes are 48 characters), in groups of 4 joined by ':'.
fn libtrust_key_id(spki: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let digest = ring::digest::digest(&ring::digest::SHA256, spki);
    let mut base32 = String::new();
    for chunk in digest.as_ref()[..30].chunks(5) {
        let bits = chunk.iter().fold(0u64, |n, b| n << 8 | u64::from(*b));
        for i in (0..8).rev() {
            base32.push(char::from(ALPHABET[(bits >> (i * 5)) as usize & 31]));
        }
    }
    let groups: Vec<&str> = (0..base32.len())
        .step_by(4)
        .map(|i| &base32[i..i + 4])
        .collect();
    groups.join(":")
}

struct TokenService {
    users: Vec<RegistryUser>,
    signer: Signer,
    rng: SystemRandom,
}

/// `GET /token?service=S&scope=repository:NAME:ACTIONS…` with Basic credentials: a token
/// granting, per requested repository, the requested actions the user may have. No anonymous
/// tokens: missing or wrong credentials get 401.
async fn token(
    State(service): State<Arc<TokenService>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(user) = basic_user(&headers, &service.users) else {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"e2e-token-issuer\"")],
            "unauthorized\n",
        )
            .into_response();
    };
    let mut access = Vec::new();
    for (name, value) in query.as_deref().unwrap_or("").split('&').filter_map(|p| {
        let (name, value) = p.split_once('=')?;
        Some((percent_decode(name), percent_decode(value)))
    }) {
        match name.as_str() {
            "service" if value != SERVICE => {
                return (
                    StatusCode::BAD_REQUEST,
                    format!("unknown service {value}\n"),
                )
                    .into_response();
            }
            "scope" => access.extend(grant(&value, user)),
            _ => {}
        }
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let mut jti = [0u8; 16];
    service.rng.fill(&mut jti).expect("random bytes");
    let claims = serde_json::json!({
        "iss": ISSUER,
        "sub": user.name,
        "aud": SERVICE,
        "exp": now + TOKEN_SECONDS,
        "nbf": now,
        "iat": now,
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "access": access,
    });
    let jwt = service.signer.sign(&claims, &service.rng);
    let issued_at = i64::try_from(now)
        .ok()
        .and_then(|s| Timestamp::from_second(s).ok())
        .unwrap_or_else(Timestamp::now);
    let body = serde_json::json!({
        "token": jwt,
        "access_token": jwt,
        "expires_in": TOKEN_SECONDS,
        "issued_at": issued_at.to_string(),
    });
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The user whose name and password the request's Basic credentials are.
fn basic_user<'a>(headers: &HeaderMap, users: &'a [RegistryUser]) -> Option<&'a RegistryUser> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(encoded.trim()).ok()?).ok()?;
    let (name, password) = decoded.split_once(':')?;
    users
        .iter()
        .find(|u| u.name == name && u.password == password)
}

/// The access entry a scope `repository:NAME:ACTIONS` grants `user`: the actions it asks for
/// that the user may have; none for other resource types or when nothing is left.
fn grant(scope: &str, user: &RegistryUser) -> Option<serde_json::Value> {
    let rest = scope.strip_prefix("repository:")?;
    // Names have no ':' of their own but may carry a registry port; actions never do.
    let (name, actions) = rest.rsplit_once(':')?;
    let granted: Vec<&str> = actions
        .split(',')
        .filter(|a| user.actions.contains(a))
        .collect();
    (!granted.is_empty())
        .then(|| serde_json::json!({"type": "repository", "name": name, "actions": granted}))
}

/// `application/x-www-form-urlencoded` decoding: `%XX` escapes and `+` for a space.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok());
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    //! The fixture against real clients, on 127.0.0.1 with a PKI made as the testbed makes its
    //! own (no testbed needed): `cargo test -p e2e --lib -- --ignored registry --nocapture`.
    //! Ignored by default: it needs docker-registry, skopeo, curl, openssl and tar.

    use super::*;

    const ADMIN: RegistryUser = RegistryUser {
        name: "admin",
        password: "admin-secret",
        actions: &["pull", "push", "delete"],
    };
    const DEV: RegistryUser = RegistryUser {
        name: "dev",
        password: "dev-secret",
        actions: &["pull", "push"],
    };
    const REPOSITORY: &str = "ns/img";

    fn run(command: &mut Command) -> std::process::Output {
        let output = command.output().expect("running a command");
        println!(
            "$ {command:?}\n  -> {}\n  stdout: {}\n  stderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout).trim(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        output
    }

    /// The testbed's PKI (lib.sh `pki_ca`, `pki_cert`) in `dir`, its docker-hub certificate
    /// for 127.0.0.1 instead of the host side.
    fn testbed_pki(dir: &Path) {
        let cnf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../files/openssl.cnf");
        let openssl = |args: &[&str]| {
            let output = run(Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .env("TESTBED_SAN", "IP:127.0.0.1"));
            assert!(output.status.success());
        };
        let cnf = cnf.to_str().unwrap();
        for key in ["ca.key", "docker-hub.key"] {
            openssl(&[
                "genpkey",
                "-quiet",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                key,
            ]);
        }
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-config",
            cnf,
            "-extensions",
            "v3_ca",
            "-key",
            "ca.key",
            "-subj",
            "/CN=ckpt-testbed-ca",
            "-days",
            "30",
            "-out",
            "ca.crt",
        ]);
        openssl(&[
            "req",
            "-new",
            "-config",
            cnf,
            "-key",
            "docker-hub.key",
            "-subj",
            "/CN=testbed-docker-hub",
            "-out",
            "docker-hub.csr",
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            "docker-hub.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "30",
            "-extfile",
            cnf,
            "-extensions",
            "v3_server",
            "-out",
            "docker-hub.crt",
        ]);
    }

    fn sha256(bytes: &[u8]) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// An OCI image layout in `dir` holding `image:v1`: one uncompressed layer of one file.
    fn oci_layout(dir: &Path) {
        let blobs = dir.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        let blob = |bytes: &[u8]| {
            let digest = sha256(bytes);
            std::fs::write(blobs.join(&digest["sha256:".len()..]), bytes).unwrap();
            serde_json::json!(digest)
        };
        let files = dir.join("files");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(
            files.join("hello.txt"),
            "hello from the token registry test\n",
        )
        .unwrap();
        let layer_tar = dir.join("layer.tar");
        assert!(
            run(Command::new("tar")
                .arg("-C")
                .arg(&files)
                .arg("-cf")
                .arg(&layer_tar)
                .arg("hello.txt"))
            .status
            .success()
        );
        let layer = std::fs::read(&layer_tar).unwrap();
        let layer_digest = blob(&layer);
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        })
        .to_string();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": blob(config.as_bytes()),
                "size": config.len(),
            },
            "layers": [{
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": layer_digest,
                "size": layer.len(),
            }],
        })
        .to_string();
        let index = serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": blob(manifest.as_bytes()),
                "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }],
        });
        std::fs::write(dir.join("index.json"), index.to_string()).unwrap();
        std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    }

    /// `skopeo copy` of the layout in `layout` to `host`, as `creds`, trusting the CA in
    /// `cert_dir`.
    fn push(
        layout: &Path,
        host: &str,
        creds: &str,
        cert_dir: &Path,
        digest_file: &Path,
    ) -> std::process::Output {
        let policy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../files/policy.json");
        run(Command::new("skopeo")
            .arg("--policy")
            .arg(policy)
            .args(["copy", "--retry-times", "0", "--dest-creds", creds])
            .arg("--dest-cert-dir")
            .arg(cert_dir)
            .arg("--digestfile")
            .arg(digest_file)
            .arg(format!("oci:{}:v1", layout.display()))
            .arg(format!("docker://{host}/{REPOSITORY}:v1")))
    }

    #[tokio::test]
    #[ignore = "needs docker-registry, skopeo, curl and openssl; run with --ignored"]
    async fn registry_fixture_with_real_clients() {
        let work = tempfile::tempdir().unwrap();
        let pki = work.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        testbed_pki(&pki);
        let layout = work.path().join("layout");
        oci_layout(&layout);
        let cert_dir = work.path().join("certs");
        std::fs::create_dir(&cert_dir).unwrap();
        std::fs::copy(pki.join("ca.crt"), cert_dir.join("ca.crt")).unwrap();
        let digest_file = work.path().join("digest");

        let registry = TokenRegistry::start("127.0.0.1", &pki, &[ADMIN, DEV]).await;
        println!(
            "registry {} with token service {}",
            registry.host, registry.realm
        );

        // No anonymous tokens, no wrong passwords.
        let scope = format!("repository:{REPOSITORY}:pull");
        assert_eq!(registry.token("", "", &scope).await, Err(401));
        assert_eq!(registry.token("admin", "wrong", &scope).await, Err(401));
        let answer = run(Command::new("curl")
            .args(["-s", "--max-time", "20", "--cacert"])
            .arg(&registry.ca)
            .args(["-u", "admin:admin-secret"])
            .arg(format!("{}?service={SERVICE}&scope=repository:{REPOSITORY}:pull,push,delete&scope=repository:other:pull", registry.realm)));
        let answer: serde_json::Value = serde_json::from_slice(&answer.stdout).unwrap();
        let token = answer["token"].as_str().unwrap();
        let claims = URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap();
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        println!(
            "JWT header {}\nJWT claims {}",
            String::from_utf8_lossy(&header),
            String::from_utf8_lossy(&claims)
        );
        assert_eq!(answer["access_token"], answer["token"]);
        assert_eq!(answer["expires_in"], 300);

        let wrong = push(
            &layout,
            &registry.host,
            "admin:wrong",
            &cert_dir,
            &digest_file,
        );
        assert!(!wrong.status.success());
        let stderr = String::from_utf8_lossy(&wrong.stderr);
        assert!(
            stderr.contains("401") || stderr.contains("nauthorized"),
            "{stderr}"
        );

        let pushed = push(
            &layout,
            &registry.host,
            "admin:admin-secret",
            &cert_dir,
            &digest_file,
        );
        assert!(pushed.status.success());
        let digest = std::fs::read_to_string(&digest_file).unwrap();
        let digest = digest.trim();
        println!("pushed {REPOSITORY}:v1 as {digest}");

        assert_eq!(
            registry.manifest_status(REPOSITORY, "v1", &ADMIN).await,
            200
        );
        // The registry checks signatures: the same claims under the same kid, signed by
        // another key, are refused.
        let good = registry
            .token("admin", "admin-secret", &scope)
            .await
            .unwrap();
        let (signed, _) = good.rsplit_once('.').unwrap();
        let signature = Signer::generate()
            .key
            .sign(&SystemRandom::new(), signed.as_bytes())
            .unwrap();
        let forged = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(signature.as_ref()));
        let url = format!("https://{}/v2/{REPOSITORY}/manifests/v1", registry.host);
        for (what, token, expected) in [("good", &good, 200), ("forged", &forged, 401)] {
            let bearer = format!("Authorization: Bearer {token}");
            let accept = format!("Accept: {MANIFEST_TYPES}");
            let (status, _) = registry.curl(&["-H", &bearer, "-H", &accept, &url]).await;
            println!("GET {url} with a {what} token: {status}");
            assert_eq!(status, expected);
        }
        assert_eq!(
            registry.manifest_status(REPOSITORY, digest, &DEV).await,
            200
        );
        assert_eq!(
            registry.manifest_status(REPOSITORY, "v2", &ADMIN).await,
            404
        );
        let refused = registry.delete_manifest(REPOSITORY, digest, &DEV).await;
        println!("dev deleting {digest}: {refused}");
        assert!(matches!(refused, 401 | 403), "{refused}");
        assert_eq!(
            registry.manifest_status(REPOSITORY, digest, &ADMIN).await,
            200
        );
        let deleted = registry.delete_manifest(REPOSITORY, digest, &ADMIN).await;
        println!("admin deleting {digest}: {deleted}");
        assert_eq!(deleted, 202);
        assert_eq!(
            registry.manifest_status(REPOSITORY, digest, &ADMIN).await,
            404
        );
        assert_eq!(
            registry.manifest_status(REPOSITORY, "v1", &ADMIN).await,
            404
        );

        let config: serde_json::Value =
            serde_json::from_str(&registry.docker_config("dev", "dev-secret")).unwrap();
        println!("docker config {config}");
        assert_eq!(
            config["auths"][&registry.host]["auth"],
            STANDARD.encode("dev:dev-secret")
        );
        drop(registry);

        // A CA nobody trusts: the testbed CA does not verify it, its own does.
        let untrusted = TokenRegistry::start_untrusted("127.0.0.1", &[ADMIN, DEV]).await;
        let url = format!("https://{}/v2/", untrusted.host);
        let curl = run(Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(pki.join("ca.crt"))
            .arg(&url));
        // 60: the peer's certificate cannot be verified with the given CA.
        assert_eq!(curl.status.code(), Some(60));
        let own = run(Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--cacert"])
            .arg(&untrusted.ca)
            .arg(&url));
        assert_eq!(String::from_utf8_lossy(&own.stdout), "401");
        let refused = push(
            &layout,
            &untrusted.host,
            "admin:admin-secret",
            &cert_dir,
            &digest_file,
        );
        assert!(!refused.status.success());
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("certificate signed by unknown authority"),
            "{stderr}"
        );
        assert_eq!(
            untrusted.manifest_status(REPOSITORY, "v1", &ADMIN).await,
            404
        );
    }
}
