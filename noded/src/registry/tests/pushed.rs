//! A checkpoint pushed to a registry, restored on a node when no node can serve its image:
//! the node-local registry fetches the pushed copy, with the Content's credentials, verified.

use super::*;
use crate::images::Copies;
use crate::outbound::Defaults;
use crate::push::{self, Credentials, Destination, Pusher, Targets};
use crate::testing::push_registry::{self, Auth, Seen};
use checkpointing::crd::Compression;
use oci_spec::image::{ImageManifest, MediaType};

/// node1's image pushed to a token registry, the Content naming the pushed copy, node1's noded
/// gone (its Lease publishes no certificate); and node2's registry, which fetches pushed
/// copies.
async fn pushed_and_node1_gone(t: &Cluster2) -> (push_registry::Registry, TestRegistry) {
    let (fake, registry, digest) = pushed_as(t, Compression::None).await;
    assert_eq!(digest, t.digest);
    (fake, registry)
}

/// [`pushed_and_node1_gone`], its archive layer pushed as `compression` asks; the image's
/// digest, which the Content and the restoring pods then name.
async fn pushed_as(
    t: &Cluster2,
    compression: Compression,
) -> (push_registry::Registry, TestRegistry, String) {
    let fake = push_registry::Registry::start().await;
    fake.require(Auth::Bearer {
        username: "robot".into(),
        password: "secret".into(),
    });
    let host = fake.addr.to_string();
    let pusher = || {
        let targets = Targets {
            own: Some(host.clone()),
            ..Default::default()
        };
        Pusher::new(vec![host.clone()], None, targets).unwrap()
    };
    let credentials = Credentials::new("robot", "secret");
    let layout = &t.node1.registry.images.layout;
    let manifest = layout.resolve("uid-1").unwrap().unwrap();
    let prepared = push::prepare(layout, &manifest, "uid-1", compression).unwrap();
    let digest = prepared.manifest.digest().to_string();
    let to: Destination = format!("{host}/team/cp").parse().unwrap();
    let image = pusher()
        .push(layout, &prepared.manifest, &to, "uid-1", Some(&credentials))
        .await
        .unwrap();
    assert_eq!(image, format!("{host}/team/cp@{digest}"));
    *t.cluster.credentials.lock().unwrap() = Some(credentials);
    for content in t.cluster.contents.lock().unwrap().iter_mut() {
        content.status.as_mut().unwrap().image = Some(image.clone());
    }
    let local = format!("localhost:5050/default/cp@{digest}");
    for pod in t.cluster.pods.lock().unwrap().iter_mut() {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        *pod = restoring_pod("default", &name, &uid, &node.unwrap_or_default(), &local);
    }
    t.cluster.pins.lock().unwrap().remove("node1");

    let metrics = Arc::new(Metrics::default());
    let node2 = (String::from("node2"), String::from("localhost:5050"));
    let peers = PeerClient::new(t.node1.peer.port(), t._tmp.path().join("token"));
    let images = Images::new(
        t.node2.registry.images.layout.clone(),
        t.cluster.clone(),
        node2,
        peers,
        roomy_disk(),
    )
    .with_copies(Copies::new(pusher(), Defaults::default()))
    .with_metrics(metrics.clone());
    let images = Arc::new(images);
    let restore = Restore::new(images.clone(), t.cluster.clone(), FakeRuntime::default());
    let registry = Registry::new(
        images,
        Arc::new(restore),
        t.cluster.clone(),
        PeerAuth::new(Vec::new()),
    )
    .with_metrics(metrics);
    (fake, registry, digest)
}

async fn pull(registry: &TestRegistry, path: String) -> (StatusCode, Bytes) {
    let uri: Uri = path.parse().unwrap();
    let headers = HeaderMap::from_iter([(header::AUTHORIZATION, basic(PULL2))]);
    let response = registry
        .serve(Mode::Local, &Method::GET, &uri, &headers)
        .await;
    let status = response.status();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn with_no_node_to_serve_it_the_pushed_copy_is_fetched_verified_and_served() {
    let t = two_nodes(&vec![7u8; 100_000]).await;
    let (fake, node2) = pushed_and_node1_gone(&t).await;

    let (status, manifest) = pull(&node2, format!("/v2/default/cp/manifests/{}", t.digest)).await;
    assert_eq!(status, StatusCode::OK, "{manifest:?}");
    assert_eq!(format!("sha256:{}", sha256_hex(&manifest)), t.digest);
    let (status, layer) = pull(&node2, format!("/v2/default/cp/blobs/{}", t.layer)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(format!("sha256:{}", sha256_hex(&layer)), t.layer);
    node2.images.layout.verify("uid-1").unwrap();
    assert!(node2.images.transferred() > 100_000);
    // Fetched with a pull token of the Content's credentials (after the push's own).
    let state = fake.state.lock().unwrap();
    assert_eq!(
        state.token_requests.last().map(String::as_str),
        Some("repository:team/cp:pull")
    );
    let gets: Vec<&Seen> = state
        .requests
        .iter()
        .filter(|r| r.method == Method::GET)
        .collect();
    assert!(!gets.is_empty());
    for get in gets.iter().filter(|r| r.authorization.is_some()) {
        assert!(get.authorization.as_deref().unwrap().starts_with("Bearer "));
    }
    assert!(
        gets.iter()
            .any(|r| r.target.contains("/blobs/") && r.authorization.is_some()),
        "{gets:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_pushed_copy_is_rejected_and_nothing_is_kept() {
    let t = two_nodes(b"original memory").await;
    let (fake, node2) = pushed_and_node1_gone(&t).await;
    for blob in fake.state.lock().unwrap().blobs.values_mut() {
        let last = blob.len() - 1;
        blob[last] ^= 1;
    }
    let (status, body) = pull(&node2, format!("/v2/default/cp/manifests/{}", t.digest)).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let message = String::from_utf8_lossy(&body);
    assert!(
        message.contains("publishes no peer certificate"),
        "{message}"
    );
    assert!(message.contains("digest"), "{message}");
    assert!(node2.images.layout.tags().unwrap().is_empty());
    assert!(blob_files(&node2.images.layout).is_empty());
}

/// A copy pushed with its archive compressed is fetched as pushed, every blob checked against
/// its digest (the compressed layer's included), and served to the runtime as it is: the
/// runtime checks the decompressed layer against the config's diff_id. The restore reads the
/// base image out of the compressed archive.
#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_pushed_copy_is_fetched_verified_and_served_as_pushed() {
    let t = two_nodes(&vec![7u8; 300_000]).await;
    let (_fake, node2, digest) = pushed_as(&t, Compression::Zstd).await;
    assert_ne!(digest, t.digest);

    let (status, bytes) = pull(&node2, format!("/v2/default/cp/manifests/{digest}")).await;
    assert_eq!(status, StatusCode::OK, "{bytes:?}");
    assert_eq!(format!("sha256:{}", sha256_hex(&bytes)), digest);
    let manifest = ImageManifest::from_reader(&bytes[..]).unwrap();
    let layer = &manifest.layers()[0];
    assert_eq!(layer.media_type(), &MediaType::ImageLayerZstd);
    let (status, sent) = pull(&node2, format!("/v2/default/cp/blobs/{}", layer.digest())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        format!("sha256:{}", sha256_hex(&sent)),
        layer.digest().to_string()
    );
    let archive = zstd::decode_all(&sent[..]).unwrap();
    assert_eq!(format!("sha256:{}", sha256_hex(&archive)), t.layer);
    assert!(node2.images.transferred() < 300_000, "fetched compressed");
    node2.images.layout.verify("uid-1").unwrap();
}
