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
