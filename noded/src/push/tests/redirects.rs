use super::*;
use crate::testing::push_registry::Auth;
use checkpointing::digest::sha256_hex;

/// A registry behind bearer tokens holding a pushed image, its layer's digest, and the
/// credentials and destination the image is fetched back with.
async fn pushed(tmp: &Path) -> (fake::Registry, String, Credentials, Destination) {
    let (layout, manifest) = layout_with_image(tmp, b"process memory", "uid-1");
    let registry = fake::Registry::start().await;
    registry.require(Auth::Bearer {
        username: "robot".into(),
        password: "s3cret".into(),
    });
    let credentials = Credentials::new("robot", "s3cret");
    let to = destination(&registry, "team/cp");
    pusher(&registry)
        .push(&layout, &manifest, &to, "uid-1", Some(&credentials))
        .await
        .unwrap();
    let parsed = ImageManifest::from_file(layout.blob_path(manifest.digest())).unwrap();
    let layer = parsed.layers()[0].digest().to_string();
    (registry, layer, credentials, to)
}

#[tokio::test]
async fn a_blob_in_storage_elsewhere_is_fetched_there_without_the_registrys_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (registry, layer, credentials, to) = pushed(tmp.path()).await;
    let storage = fake::Registry::start().await;
    let blobs = registry.state.lock().unwrap().blobs.clone();
    storage.state.lock().unwrap().blobs = blobs;
    registry.state.lock().unwrap().blob_redirect =
        Some(format!("http://{}/v2/bucket/blobs/", storage.addr));

    let response = pusher(&registry)
        .reaching_loopback()
        .pull(&to, &format!("blobs/{layer}"), Some(&credentials))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&body)), layer);

    let asked = registry.state.lock().unwrap().requests.clone();
    let blob_get = asked
        .iter()
        .rfind(|r| r.method == Method::GET && r.target.ends_with(&layer))
        .unwrap();
    assert!(
        blob_get
            .authorization
            .as_deref()
            .is_some_and(|a| a.starts_with("Bearer ")),
        "{blob_get:?}"
    );
    let fetched = storage.state.lock().unwrap().requests.clone();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(fetched[0].target, format!("/v2/bucket/blobs/{layer}"));
    assert_eq!(
        fetched[0].authorization, None,
        "the token stays with its registry"
    );
}

#[tokio::test]
async fn a_redirect_where_a_push_may_not_go_is_refused_without_a_packet_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let (registry, layer, credentials, to) = pushed(tmp.path()).await;
    let node_service = fake::Registry::start().await;
    for (storage, class) in [
        (
            "http://169.254.169.254/latest/meta-data/".to_owned(),
            "link-local",
        ),
        (format!("http://{}/", node_service.addr), "loopback"),
    ] {
        registry.state.lock().unwrap().blob_redirect = Some(storage.clone());
        let e = pusher(&registry)
            .pull(&to, &format!("blobs/{layer}"), Some(&credentials))
            .await
            .unwrap_err();
        assert!(matches!(e, PushError::RedirectRefused { .. }), "{e:?}");
        let message = error_chain(&e);
        let expected = format!(
            "registry {} redirected GET http://{}/v2/team/cp/blobs/{layer} to {storage}{layer}, \
             which noded may not reach: push target",
            registry.addr, registry.addr
        );
        assert!(message.starts_with(&expected), "{message}");
        assert!(message.contains(&format!("a {class} address")), "{message}");
    }
    assert!(node_service.requests().is_empty());
}

#[tokio::test]
async fn a_redirect_loop_stops() {
    let tmp = tempfile::tempdir().unwrap();
    let (registry, layer, credentials, to) = pushed(tmp.path()).await;
    registry.state.lock().unwrap().blob_redirect = Some("/v2/team/cp/blobs/".into());
    let before = registry.requests().len();
    let e = pusher(&registry)
        .pull(&to, &format!("blobs/{layer}"), Some(&credentials))
        .await
        .unwrap_err();
    assert!(
        error_chain(&e).contains(&format!("more than {} times", redirect::MAX_REDIRECTS)),
        "{e}"
    );
    let gets = registry.requests()[before..]
        .iter()
        .filter(|(method, target)| *method == Method::GET && target.ends_with(&layer))
        .count();
    // The first GET (asked for a token, then sent again with it), then one per redirect.
    assert_eq!(
        gets,
        2 + redirect::MAX_REDIRECTS,
        "{:?}",
        registry.requests()
    );
}
