use super::*;
use crate::testing::push_registry::{Auth, SERVICE};

fn basic(username: &str, password: &str) -> Auth {
    Auth::Basic {
        username: username.into(),
        password: password.into(),
    }
}

fn bearer(username: &str, password: &str) -> Auth {
    Auth::Bearer {
        username: username.into(),
        password: password.into(),
    }
}

/// A layout with an image of two blobs (config and a layer of several upload chunks).
fn image(tmp: &Path) -> (ImageLayout, Descriptor) {
    layout_with_image(tmp, &vec![3u8; 1 << 20], "uid-1")
}

#[tokio::test]
async fn basic_credentials_are_sent_once_asked_for() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = image(tmp.path());
    let registry = fake::Registry::start().await;
    registry.require(basic("noded", "s3cret"));
    let credentials = Credentials::new("noded", "s3cret");
    let to = destination(&registry, "ns/cc");
    let image = pusher(&registry)
        .push(&layout, &manifest, &to, "uid-1", Some(&credentials))
        .await
        .unwrap();
    assert_eq!(image, format!("{to}@{}", manifest.digest()));

    let state = registry.state.lock().unwrap();
    let (first, rest) = state.requests.split_first().unwrap();
    assert_eq!(first.authorization, None, "anonymous until asked");
    // base64("noded:s3cret")
    assert!(
        rest.iter()
            .all(|r| r.authorization.as_deref() == Some("Basic bm9kZWQ6czNjcmV0")),
        "{:?}",
        state.requests
    );
    assert!(state.manifests.contains_key("ns/cc:uid-1"));
}

#[tokio::test]
async fn a_bearer_push_fetches_one_token_for_all_its_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = image(tmp.path());
    let registry = fake::Registry::start().await;
    registry.require(bearer("robot$ci", "t0ken:pass"));
    let credentials = Credentials::new("robot$ci", "t0ken:pass");
    let to = destination(&registry, "team/ns/cc");
    pusher(&registry)
        .push(&layout, &manifest, &to, "uid-1", Some(&credentials))
        .await
        .unwrap();

    let state = registry.state.lock().unwrap();
    assert_eq!(state.token_requests, ["repository:team/ns/cc:pull,push"]);
    assert!(state.manifests.contains_key("team/ns/cc:uid-1"));
    assert_eq!(state.blobs.len(), 2, "config and layer");
    let (first, rest) = state.requests.split_first().unwrap();
    assert_eq!(first.authorization, None);
    let tokens: std::collections::BTreeSet<_> =
        rest.iter().map(|r| r.authorization.clone()).collect();
    assert_eq!(
        tokens.len(),
        1,
        "one token throughout: {:?}",
        state.requests
    );
    assert!(
        tokens
            .first()
            .unwrap()
            .as_deref()
            .is_some_and(|t| t.starts_with("Bearer ")),
        "{tokens:?}"
    );
    // HEAD 401, HEAD again, POST, PUT; HEAD, POST, PUT; manifest PUT.
    assert_eq!(state.requests.len(), 8, "{:?}", state.requests);
}

#[tokio::test]
async fn wrong_credentials_name_the_registry_and_push_nothing() {
    for auth in [basic("noded", "right"), bearer("noded", "right")] {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, manifest) = image(tmp.path());
        let registry = fake::Registry::start().await;
        registry.require(auth.clone());
        let wrong = Credentials::new("noded", "wrong-password");
        let e = pusher(&registry)
            .push(
                &layout,
                &manifest,
                &destination(&registry, "ns/cc"),
                "uid-1",
                Some(&wrong),
            )
            .await
            .unwrap_err();
        let message = error_chain(&e);
        assert!(matches!(e, PushError::Denied { .. }), "{message}");
        assert!(
            message.starts_with(&format!(
                "registry {} refused the credentials: ",
                registry.addr
            )),
            "{message}"
        );
        assert!(message.contains("401 Unauthorized"), "{message}");
        assert!(!message.contains("wrong-password"), "{message}");
        assert!(e.is_refusal());
        let state = registry.state.lock().unwrap();
        assert!(state.manifests.is_empty() && state.blobs.is_empty());
        assert!(
            !state.requests.iter().any(|r| r.method == Method::POST),
            "{:?}",
            state.requests
        );
    }
}

#[tokio::test]
async fn without_credentials_the_registry_is_named_as_requiring_them() {
    for auth in [basic("noded", "pw"), bearer("noded", "pw")] {
        let tmp = tempfile::tempdir().unwrap();
        let (layout, manifest) = image(tmp.path());
        let registry = fake::Registry::start().await;
        registry.require(auth);
        let e = pusher(&registry)
            .push(
                &layout,
                &manifest,
                &destination(&registry, "ns/cc"),
                "uid-1",
                None,
            )
            .await
            .unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "registry {} requires credentials and none were given",
                registry.addr
            )),
            "{e}"
        );
        assert!(registry.state.lock().unwrap().manifests.is_empty());
    }
}

#[tokio::test]
async fn a_delete_gets_a_token_for_deleting() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = image(tmp.path());
    let registry = fake::Registry::start().await;
    registry.require(bearer("noded", "pw"));
    let credentials = Credentials::new("noded", "pw");
    let pusher = pusher(&registry);
    let image = pusher
        .push(
            &layout,
            &manifest,
            &destination(&registry, "ns/cc"),
            "uid-1",
            Some(&credentials),
        )
        .await
        .unwrap();
    pusher.delete(&image, Some(&credentials)).await.unwrap();
    {
        let state = registry.state.lock().unwrap();
        assert!(state.manifests.is_empty());
        assert_eq!(
            state.token_requests,
            ["repository:ns/cc:pull,push", "repository:ns/cc:delete"]
        );
    }
    // Gone already: 404, with the cached delete token.
    pusher.delete(&image, Some(&credentials)).await.unwrap();
    assert_eq!(registry.state.lock().unwrap().token_requests.len(), 2);
}

#[test]
fn the_fake_registry_challenge_parses() {
    let header = format!(
        "Bearer realm=\"http://127.0.0.1:1/token\",service=\"{SERVICE}\",scope=\"repository:a/b:pull\""
    );
    assert_eq!(
        auth::parse_challenge(&header),
        Some(auth::Challenge::Bearer {
            realm: "http://127.0.0.1:1/token".into(),
            service: Some(SERVICE.into())
        })
    );
}

/// A CA, and a server configuration for 127.0.0.1 with a certificate it signed.
fn private_ca() -> (String, std::sync::Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
    leaf.subject_alt_names = vec![SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    let config =
        checkpointing::tls::server_config(cert.der().clone(), key.serialize_der(), None).unwrap();
    (ca_cert.pem(), config)
}

#[tokio::test]
async fn https_with_a_private_ca_needs_the_ca_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = image(tmp.path());
    let (ca_pem, config) = private_ca();
    let registry = fake::Registry::start_tls(config).await;
    registry.require(bearer("noded", "pw"));
    let credentials = Credentials::new("noded", "pw");
    let to = destination(&registry, "ns/cc");

    let trusting = Pusher::new(Vec::new(), Some(ca_pem.as_bytes()), own(registry.addr)).unwrap();
    trusting
        .push(&layout, &manifest, &to, "uid-1", Some(&credentials))
        .await
        .unwrap();
    assert!(
        registry
            .state
            .lock()
            .unwrap()
            .manifests
            .contains_key("ns/cc:uid-1")
    );

    let system_only = Pusher::new(Vec::new(), None, own(registry.addr)).unwrap();
    let e = system_only
        .push(&layout, &manifest, &to, "uid-2", Some(&credentials))
        .await
        .unwrap_err();
    let message = error_chain(&e);
    assert!(
        message.starts_with(&format!("HEAD https://{}/v2/ns/cc/blobs/", registry.addr)),
        "{message}"
    );
    assert!(message.contains("UnknownIssuer"), "{message}");
    assert!(!e.is_refusal());
}

#[test]
fn a_ca_bundle_without_certificates_is_refused() {
    for bundle in [&b""[..], b"not pem", b"-----BEGIN CERTIFICATE-----\nnope\n"] {
        assert!(Pusher::new(Vec::new(), Some(bundle), Targets::default()).is_err());
    }
}
