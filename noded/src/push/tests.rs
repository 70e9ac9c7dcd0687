//! Pushing to the fake registry.

use super::*;
use crate::error::error_chain;
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
    assert_eq!(
        t("registry.example.com/team")
            .unwrap()
            .destination("ns", "cc"),
        Destination {
            host: "registry.example.com".into(),
            repository: "team/ns/cc".into()
        }
    );
    assert_eq!(
        t("localhost:5000")
            .unwrap()
            .destination("ns", "cc")
            .to_string(),
        "localhost:5000/ns/cc"
    );
}

#[test]
fn destinations_are_host_and_required_repository() {
    let d = |s: &str| s.parse::<Destination>();
    assert_eq!(
        d("registry.example.com:5443/team/cp"),
        Ok(Destination {
            host: "registry.example.com:5443".into(),
            repository: "team/cp".into()
        })
    );
    assert_eq!(
        d("localhost/a.b_c-d").unwrap().to_string(),
        "localhost/a.b_c-d"
    );
    assert!(
        d("registry.example.com")
            .unwrap_err()
            .contains("repository")
    );
    assert!(d("registry.example.com/").is_err());
    assert!(d("https://registry.example.com/x").is_err());
    assert!(d("myregistry/x").unwrap_err().contains("dot or a port"));
    assert!(d("registry.example.com/Team/x").is_err());
    assert!(d("registry.example.com/x//y").is_err());
    assert!(d("registry.example.com/x/").is_err());
}

/// One registry, one name: the cluster's registry, its default Secret and the webhook's
/// guard all compare normalised hosts.
#[test]
fn destinations_and_targets_are_normalised() {
    let d = |s: &str| s.parse::<Destination>().unwrap().to_string();
    assert_eq!(
        d("Registry.Example.com:443/team/cp"),
        "registry.example.com/team/cp"
    );
    assert_eq!(
        d("registry.example.com:05000/cp"),
        "registry.example.com:5000/cp"
    );
    assert_eq!(d("[0:0::1]:5000/x"), "[::1]:5000/x");
    assert_eq!(d("[::ffff:10.77.0.1]:5000/x"), "10.77.0.1:5000/x");
    assert_eq!(d("index.docker.io/busybox"), "docker.io/library/busybox");
    assert_eq!(d("docker.io/team/cp"), "docker.io/team/cp");
    assert!("r.example.com:0/x".parse::<Destination>().is_err());
    assert!("[::1/x".parse::<Destination>().is_err());
    let t = |s: &str| s.parse::<Target>().unwrap().host;
    assert_eq!(t("Registry.Example.com:443/ckpt"), "registry.example.com");
    assert_eq!(t("INDEX.docker.io"), "docker.io");
    assert!("r.example.com:99999".parse::<Target>().is_err());
}

#[test]
fn pushed_images_are_parsed_back() {
    let (at, digest) = names::parse_image("r.example.com:5000/ns/cc@sha256:0a1f").unwrap();
    assert_eq!(at.to_string(), "r.example.com:5000/ns/cc");
    assert_eq!(digest, "sha256:0a1f");
    for bad in [
        "r.example.com/ns/cc:tag",
        "r.example.com/ns/cc@",
        "r.example.com/ns/cc@sha256:",
        "r.example.com/ns/cc@sha256:xyz",
        "r.example.com@sha256:0a",
        "cc@sha256:0a",
    ] {
        assert!(names::parse_image(bad).is_err(), "{bad}");
    }
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
        upload_url(post, "http://R:5000/upload/u1", d).unwrap(),
        "http://R:5000/upload/u1?digest=sha256%3Aab"
    );
    assert_eq!(
        upload_url(post, "u1", d).unwrap(),
        "http://r:5000/v2/ns/name/blobs/uploads/u1?digest=sha256%3Aab"
    );
    assert_eq!(
        upload_url(post, "u1?next=http://r:5000/x", d).unwrap(),
        "http://r:5000/v2/ns/name/blobs/uploads/u1?next=http://r:5000/x&digest=sha256%3Aab"
    );
    assert_eq!(
        upload_url(post, "//r:5000/u1?", d).unwrap(),
        "http://r:5000/u1?digest=sha256%3Aab"
    );
    assert_eq!(upload_url(post, " ", d), Err(UploadUrl::Unusable));
}

/// A registry may not send noded, with its credentials, to another server: another host,
/// port or scheme, a protocol-relative URL, userinfo that makes the host read otherwise.
#[test]
fn upload_locations_elsewhere_are_refused() {
    let post = "http://r:5000/v2/ns/name/blobs/uploads/";
    for location in [
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.1:9811/metrics",
        "http://r:5001/v2/ns/name/blobs/uploads/u1",
        "https://r:5000/v2/ns/name/blobs/uploads/u1",
        "//other/u1",
        "//r:5000@other/u1",
        "http://r:5000@other/u1",
        "file:///etc/shadow",
    ] {
        assert_eq!(
            upload_url(post, location, "sha256:ab"),
            Err(UploadUrl::Elsewhere),
            "{location}"
        );
    }
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

/// A pusher speaking plain HTTP to `registry`, the cluster's own.
fn pusher(registry: &fake::Registry) -> Pusher {
    Pusher::new(vec![registry.addr.to_string()], None, own(registry.addr)).unwrap()
}

/// Targets whose cluster registry is `host`.
fn own(host: impl ToString) -> Targets {
    Targets {
        own: Some(host.to_string()),
        ..Targets::default()
    }
}

fn destination(registry: &fake::Registry, repository: &str) -> Destination {
    format!("{}/{repository}", registry.addr).parse().unwrap()
}

#[tokio::test]
async fn pushes_both_blobs_then_the_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    let archive = vec![7u8; 3 << 20]; // several upload chunks
    let (layout, manifest) = layout_with_image(tmp.path(), &archive, "content-uid");
    let registry = fake::Registry::start().await;
    let pusher = pusher(&registry);
    let target: Target = format!("{}/checkpoints", registry.addr).parse().unwrap();
    let to = target.destination("default", "counter-checkpoint");
    assert_eq!(to.repository, "checkpoints/default/counter-checkpoint");

    let image = pusher
        .push(&layout, &manifest, &to, "content-uid", None)
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
    pusher(&registry)
        .push(
            &layout,
            &manifest,
            &destination(&registry, "ns/cc"),
            "uid-1",
            None,
        )
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
async fn a_refused_manifest_names_the_url_status_and_error_code() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
    let registry = fake::Registry::start().await;
    registry.state.lock().unwrap().manifest_status = Some(StatusCode::INTERNAL_SERVER_ERROR);
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
    assert_eq!(
        e.to_string(),
        format!(
            "PUT http://{}/v2/ns/cc/manifests/uid-1 answered 500 Internal Server Error: UNKNOWN",
            registry.addr
        )
    );
}

#[tokio::test]
async fn an_unreachable_registry_is_a_request_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"archive", "uid-1");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let pusher = Pusher::new(vec![addr.to_string()], None, own(addr)).unwrap();
    let to = format!("{addr}/ns/cc").parse().unwrap();
    let e = pusher
        .push(&layout, &manifest, &to, "uid-1", None)
        .await
        .unwrap_err();
    assert!(matches!(e, PushError::Request { .. }), "{e}");
    assert!(!e.is_refusal());
    let message = error_chain(&e);
    assert!(
        message.starts_with(&format!("HEAD http://{addr}/v2/ns/cc/blobs/sha256:")),
        "{message}"
    );
    assert!(message.contains("onnection refused"), "{message}");
}

#[tokio::test]
async fn a_pushed_copy_is_deleted_by_digest_and_a_refusal_is_final() {
    let tmp = tempfile::tempdir().unwrap();
    let (layout, manifest) = layout_with_image(tmp.path(), b"memory", "content-uid");
    let registry = fake::Registry::start().await;
    let pusher = pusher(&registry);
    let to = destination(&registry, "checkpoints/default/cp");
    let image = pusher
        .push(&layout, &manifest, &to, "content-uid", None)
        .await
        .unwrap();

    pusher.delete(&image, None).await.unwrap();
    assert!(registry.state.lock().unwrap().manifests.is_empty());
    let last = registry.requests().pop().unwrap();
    assert_eq!(
        last,
        (
            Method::DELETE,
            format!("/v2/checkpoints/default/cp/manifests/{}", manifest.digest())
        )
    );
    // The registry answers 404 now: already gone counts as deleted.
    pusher.delete(&image, None).await.unwrap();

    let requests = registry.requests().len();
    let error = pusher
        .delete("localhost:5050/default/cp:tag", None)
        .await
        .unwrap_err();
    assert!(matches!(error, PushError::Image(_)), "{error}");
    assert!(error.is_refusal());
    assert_eq!(registry.requests().len(), requests, "nothing asked");

    registry.state.lock().unwrap().delete_status = Some(StatusCode::METHOD_NOT_ALLOWED);
    let error = pusher.delete(&image, None).await.unwrap_err();
    assert!(error.is_refusal(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("405") && message.contains("UNSUPPORTED"),
        "{message}"
    );
    assert!(message.contains(&registry.addr.to_string()), "{message}");
    registry.state.lock().unwrap().delete_status = Some(StatusCode::SERVICE_UNAVAILABLE);
    assert!(!pusher.delete(&image, None).await.unwrap_err().is_refusal());
}

/// Basic and bearer authentication, HTTPS with a private CA.
mod authenticated;

/// A tenant, or the registry it runs, aiming noded at what only the node can reach.
mod hostile;

/// A compressed push: the layer sent, the image named, the layout left.
mod compressed;
/// Pushed copies fetched back from registries that send blob GETs elsewhere.
mod redirects;
