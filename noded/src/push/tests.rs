//! Pushing to the fake registry.

use super::*;
use crate::testing::push_registry as fake;
use checkpointing::oci::CheckpointMeta;
use oci_spec::image::MediaType;
use std::path::Path;

#[test]
fn targets_are_host_and_optional_prefix() {
    let t = |s: &str| s.parse::<Target>();
    assert_eq!(
        t("10.77.0.1:5000"),
        Ok(Target {
            host: "10.77.0.1:5000".into(),
            prefix: String::new()
        })
    );
    assert_eq!(
        t("registry.example.com/team/checkpoints/"),
        Ok(Target {
            host: "registry.example.com".into(),
            prefix: "team/checkpoints".into()
        })
    );
    assert_eq!(t("localhost/x").unwrap().to_string(), "localhost/x");
    assert!(t("https://registry.example.com").is_err());
    assert!(t("myregistry/x").unwrap_err().contains("dot or a port"));
    assert!(t("registry.example.com/Team").is_err());
    assert!(t("registry.example.com//x").is_err());
    assert!(t("").is_err());
}

#[test]
fn upload_locations_are_resolved_and_get_the_digest() {
    let post = "http://r:5000/v2/ns/name/blobs/uploads/";
    let d = "sha256:ab";
    assert_eq!(
        upload_url(post, "/v2/ns/name/blobs/uploads/u1?_state=x", d).unwrap(),
        "http://r:5000/v2/ns/name/blobs/uploads/u1?_state=x&digest=sha256%3Aab"
    );
    assert_eq!(
        upload_url(post, "https://other/upload/u1", d).unwrap(),
        "https://other/upload/u1?digest=sha256%3Aab"
    );
    assert_eq!(
        upload_url(post, "u1", d).unwrap(),
        "http://r:5000/v2/ns/name/blobs/uploads/u1?digest=sha256%3Aab"
    );
    assert_eq!(
        upload_url(post, "//cdn/u1?", d).unwrap(),
        "http://cdn/u1?digest=sha256%3Aab"
    );
    assert_eq!(upload_url(post, " ", d), None);
}

/// A layout holding one checkpoint image tagged `tag`, its layer the bytes `archive`.
fn layout_with_image(dir: &Path, archive: &[u8], tag: &str) -> (ImageLayout, Descriptor) {
    let layout = ImageLayout::open(dir.join("oci")).unwrap();
    let path = dir.join("archive.tar");
    std::fs::write(&path, archive).unwrap();
    let (digest, size) = checkpointing::oci::sha256_file(&path).unwrap();
    let meta = CheckpointMeta {
        container: "counter".into(),
        created: "2026-11-24T10:00:00Z".into(),
        ..Default::default()
    };
    let manifest = layout
        .add_checkpoint(&path, &digest, size, None, &meta, tag)
        .unwrap();
    (layout, manifest)
}

fn pusher(registry: &fake::Registry, prefix: &str) -> Pusher {
    let target = format!("{}/{prefix}", registry.addr).parse().unwrap();
    Pusher::new(target, true, None).unwrap()
}

#[tokio::test]
async fn pushes_both_blobs_then_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = vec![7u8; 3 << 20]; // several upload chunks
    let (layout, manifest) = layout_with_image(tmp.path(), &archive, "content-uid");
    let registry = fake::Registry::start().await;
    let pusher = pusher(&registry, "checkpoints");
    let repo = pusher.repository("default", "counter-checkpoint");
    assert_eq!(repo, "checkpoints/default/counter-checkpoint");

    let image = pusher
        .push(&layout, &manifest, &repo, "content-uid")
        .await
        .unwrap();
    assert_eq!(
        image,
        format!(
            "{}/checkpoints/default/counter-checkpoint@{}",
            registry.addr,
            manifest.digest()
        )
    );

    let parsed = ImageManifest::from_file(layout.blob_path(manifest.digest())).unwrap();
    let config = parsed.config().digest().to_string();
    let layer = parsed.layers()[0].digest().to_string();
    let base = "/v2/checkpoints/default/counter-checkpoint";
    let paths: Vec<_> = registry.requests();
    let expected = [
        (Method::HEAD, format!("{base}/blobs/{config}")),
        (Method::POST, format!("{base}/blobs/uploads/")),
        (
            Method::PUT,
            format!(
                "{base}/blobs/uploads/u1?_state=s&digest={}",
                config.replace(':', "%3A")
            ),
        ),
        (Method::HEAD, format!("{base}/blobs/{layer}")),
        (Method::POST, format!("{base}/blobs/uploads/")),
        (
            Method::PUT,
            format!(
                "{base}/blobs/uploads/u2?_state=s&digest={}",
                layer.replace(':', "%3A")
            ),
        ),
        (Method::PUT, format!("{base}/manifests/content-uid")),
    ];
    assert_eq!(paths, expected);

    let state = registry.state.lock().unwrap();
    assert_eq!(state.blobs[&layer], archive);
    assert_eq!(
        state.blobs[&config],
        std::fs::read(layout.blob_path(parsed.config().digest())).unwrap()
    );
    let layer_put = &state.requests[5];
    assert_eq!(
        layer_put.content_type.as_deref(),
        Some("application/octet-stream")
    );
    assert_eq!(
        layer_put.content_length.as_deref(),
        Some(archive.len().to_string().as_str())
    );
    assert!(!layer_put.chunked, "a monolithic upload has a length");
    let (content_type, bytes) =
        &state.manifests["checkpoints/default/counter-checkpoint:content-uid"];
    assert_eq!(content_type, MANIFEST_MEDIA_TYPE);
    assert_eq!(
        bytes,
        &std::fs::read(layout.blob_path(manifest.digest())).unwrap(),
        "the manifest's exact bytes"
    );
    assert!(state.requests.iter().all(|r| r.authorization.is_none()));
    assert_eq!(parsed.layers()[0].media_type(), &MediaType::ImageLayer);
}

#[tokio::test]
async fn blobs_the_registry_has_are_not_uploaded_again() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
    let registry = fake::Registry::start().await;
    let parsed = ImageManifest::from_file(layout.blob_path(manifest.digest())).unwrap();
    let layer = parsed.layers()[0].digest().clone();
    registry
        .state
        .lock()
        .unwrap()
        .blobs
        .insert(layer.to_string(), b"archive".to_vec());
    let pusher = pusher(&registry, "");
    let repo = pusher.repository("ns", "cc");
    assert_eq!(repo, "ns/cc");
    pusher
        .push(&layout, &manifest, &repo, "uid-1")
        .await
        .unwrap();

    let requests = registry.requests();
    let uploads: Vec<_> = requests.iter().filter(|(m, _)| m == Method::POST).collect();
    assert_eq!(
        uploads.len(),
        1,
        "only the config is uploaded: {requests:?}"
    );
    assert!(
        requests.contains(&(Method::HEAD, format!("/v2/ns/cc/blobs/{layer}"))),
        "{requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|(m, t)| m == Method::PUT && t.contains(&layer.to_string().replace(':', "%3A"))),
        "{requests:?}"
    );
    assert_eq!(requests.last().unwrap().1, "/v2/ns/cc/manifests/uid-1");
}

#[tokio::test]
async fn basic_credentials_are_sent_with_every_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
    let registry = fake::Registry::start().await;
    let password = tmp.path().join("password");
    std::fs::write(&password, "s3cret\n").unwrap();
    let target = registry.addr.to_string().parse().unwrap();
    let credentials = Credentials {
        username: "noded".into(),
        password_file: password,
    };
    let pusher = Pusher::new(target, true, Some(credentials)).unwrap();
    pusher
        .push(&layout, &manifest, "ns/cc", "uid-1")
        .await
        .unwrap();
    let state = registry.state.lock().unwrap();
    // base64("noded:s3cret")
    assert!(
        state
            .requests
            .iter()
            .all(|r| r.authorization.as_deref() == Some("Basic bm9kZWQ6czNjcmV0")),
        "{:?}",
        state.requests
    );
}

#[tokio::test]
async fn a_refused_manifest_names_the_url_status_and_body() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
    let registry = fake::Registry::start().await;
    registry.state.lock().unwrap().manifest_status = Some(StatusCode::INTERNAL_SERVER_ERROR);
    let pusher = pusher(&registry, "");
    let e = pusher
        .push(&layout, &manifest, "ns/cc", "uid-1")
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "PUT http://{}/v2/ns/cc/manifests/uid-1 answered 500 Internal Server Error: \
             {{\"errors\":[{{\"code\":\"UNKNOWN\"}}]}}",
            registry.addr
        )
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_a_request_error() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let pusher = Pusher::new(addr.to_string().parse().unwrap(), true, None).unwrap();
    let e = pusher
        .push(&layout, &manifest, "ns/cc", "uid-1")
        .await
        .unwrap_err();
    assert!(matches!(e, PushError::Request { .. }), "{e}");
    assert!(
        e.to_string()
            .starts_with(&format!("HEAD http://{addr}/v2/ns/cc/blobs/sha256:"))
    );
}

#[tokio::test]
async fn a_pushed_copy_is_deleted_by_digest_and_a_refusal_is_final() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"memory", "content-uid");
    let registry = fake::Registry::start().await;
    let pusher = pusher(&registry, "checkpoints");
    let repo = pusher.repository("default", "cp");
    let image = pusher
        .push(&layout, &manifest, &repo, "content-uid")
        .await
        .unwrap();

    assert!(pusher.delete(&image).await.unwrap());
    assert!(registry.state.lock().unwrap().manifests.is_empty());
    let last = registry.requests().pop().unwrap();
    assert_eq!(
        last,
        (
            Method::DELETE,
            format!("/v2/checkpoints/default/cp/manifests/{}", manifest.digest())
        )
    );
    assert!(
        pusher.delete(&image).await.unwrap(),
        "already gone counts as deleted"
    );

    let requests = registry.requests().len();
    let elsewhere = format!("localhost:5050/default/cp@{}", manifest.digest());
    assert!(
        !pusher.delete(&elsewhere).await.unwrap(),
        "not in this registry"
    );
    assert_eq!(registry.requests().len(), requests, "nothing asked");

    registry.state.lock().unwrap().delete_status = Some(StatusCode::METHOD_NOT_ALLOWED);
    let error = pusher.delete(&image).await.unwrap_err();
    assert!(error.is_refusal(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("405") && message.contains("UNSUPPORTED"),
        "{message}"
    );
    registry.state.lock().unwrap().delete_status = Some(StatusCode::SERVICE_UNAVAILABLE);
    assert!(!pusher.delete(&image).await.unwrap_err().is_refusal());
}
