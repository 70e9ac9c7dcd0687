//! Two nodes' registries over real sockets.

use checkpointing::admin::Telemetry as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use checkpointing::oci::{CheckpointMeta, sha256_file};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::*;
use crate::testing::{FakeCluster, FakeRuntime, GOOD_TOKEN, NODED, archive_bytes, content, digest};

const BASE: &str = "docker.io/library/busybox@sha256:00";

// ------------------------------------------------------------ two nodes over real sockets

type TestRegistry = Registry<FakeRuntime, Arc<FakeCluster>>;

struct TestNode {
    registry: Arc<TestRegistry>,
    runtime: FakeRuntime,
    local: SocketAddr,
    peer: SocketAddr,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(
    node: &str,
    layout: Arc<ImageLayout>,
    cluster: Arc<FakeCluster>,
    peer_port: u16,
    token_file: PathBuf,
) -> TestNode {
    let runtime = FakeRuntime::default();
    let registry = Arc::new(Registry::new(
        layout,
        runtime.clone(),
        cluster,
        node.into(),
        PeerClient::new(peer_port, token_file),
        Auth::new(vec![NODED.into()]),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = futures::future::FutureExt::shared(async move {
        let _ = stop_rx.await;
    });
    let mut addrs = Vec::new();
    for mode in [Mode::Local, Mode::Peer] {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        addrs.push(listener.local_addr().unwrap());
        tokio::spawn(serve(
            listener,
            router(registry.clone(), mode),
            stop.clone(),
            Duration::from_secs(1),
        ));
    }
    TestNode {
        registry,
        runtime,
        local: addrs[0],
        peer: addrs[1],
        _stop: stop_tx,
    }
}

fn archive(dir: &Path, payload: &[u8]) -> PathBuf {
    let config = format!(
        r#"{{"id":"c1","name":"counter","rootfsImageName":"docker.io/library/busybox:latest","rootfsImageRef":"{BASE}"}}"#
    );
    let path = dir.join("archive.tar");
    std::fs::write(&path, archive_bytes(config.as_bytes(), payload)).unwrap();
    path
}

/// node1 holds a checkpoint image of `default/cp`; node2 has an empty layout. Returns both
/// nodes and the image reference.
struct Cluster2 {
    node1: TestNode,
    node2: TestNode,
    cluster: Arc<FakeCluster>,
    digest: String,
    layer: String,
    _tmp: tempfile::TempDir,
}

async fn two_nodes(payload: &[u8]) -> Cluster2 {
    let tmp = tempfile::tempdir().unwrap();
    let layout1 = Arc::new(ImageLayout::open(tmp.path().join("node1")).unwrap());
    let layout2 = Arc::new(ImageLayout::open(tmp.path().join("node2")).unwrap());
    let path = archive(tmp.path(), payload);
    let (layer, size) = sha256_file(&path).unwrap();
    let meta = CheckpointMeta {
        container: "c".into(),
        ..Default::default()
    };
    let desc = layout1
        .add_checkpoint(&path, &layer, size, &meta, "uid-1")
        .unwrap();
    let digest = desc.digest().to_string();
    let token = tmp.path().join("token");
    std::fs::write(&token, format!("{GOOD_TOKEN}\n")).unwrap();

    let mut cluster = FakeCluster::default();
    cluster.contents.lock().unwrap().push(content(
        "node1",
        Some(format!("localhost:5050/default/cp@{digest}")),
    ));
    cluster
        .nodes
        .insert("node1".into(), Ipv4Addr::LOCALHOST.into());
    let cluster = Arc::new(cluster);
    let node1 = start("node1", layout1, cluster.clone(), 0, token.clone()).await;
    let node2 = start("node2", layout2, cluster.clone(), node1.peer.port(), token).await;
    Cluster2 {
        node1,
        node2,
        cluster,
        digest,
        layer: format!("sha256:{}", layer.digest()),
        _tmp: tmp,
    }
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

async fn request(method: Method, addr: SocketAddr, path: &str, token: Option<&str>) -> Answer {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut req = axum::http::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body,
    }
}

async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(Method::GET, addr, path, None).await
}

fn error_code(a: &Answer) -> String {
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    v["errors"][0]["code"].as_str().unwrap().to_owned()
}

fn blob_files(layout: &ImageLayout) -> Vec<String> {
    let mut names: Vec<String> = ["blobs/sha256", "ingest"]
        .iter()
        .filter_map(|d| std::fs::read_dir(layout.root().join(d)).ok())
        .flatten()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn another_nodes_image_is_fetched_once_verified_and_served() {
    let t = two_nodes(&vec![7u8; 300_000]).await;
    let manifest_path = format!("/v2/default/cp/manifests/{}", t.digest);

    let v2 = get(t.node2.local, "/v2/").await;
    assert_eq!(v2.status, StatusCode::OK);
    assert_eq!(&v2.body[..], b"{}");
    assert_eq!(v2.headers[API_VERSION.0], "registry/2.0");

    // Several pulls at once: one transfer.
    let answers =
        futures::future::join_all((0..4).map(|_| get(t.node2.local, &manifest_path))).await;
    for a in &answers {
        assert_eq!(a.status, StatusCode::OK, "{:?}", a.body);
        assert_eq!(a.headers[header::CONTENT_TYPE], MANIFEST_MEDIA_TYPE);
        assert_eq!(a.headers["docker-content-digest"], t.digest.as_str());
        assert_eq!(a.headers["docker-distribution-api-version"], "registry/2.0");
        assert_eq!(format!("sha256:{}", sha256_hex(&a.body)), t.digest);
    }
    let node2 = &t.node2.registry;
    let once = node2.peers.transferred();
    assert!(once > 300_000, "{once}");
    node2.layout.verify("uid-1").unwrap();
    assert!(
        node2
            .layout
            .ingest_dir()
            .read_dir()
            .unwrap()
            .next()
            .is_none()
    );
    assert_eq!(
        *t.node2.runtime.pulls.lock().unwrap(),
        [BASE],
        "the base image is pulled before the manifest is answered, once"
    );

    // HEAD: headers, no body.
    let head = request(Method::HEAD, t.node2.local, &manifest_path, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(
        head.headers[header::CONTENT_LENGTH],
        answers[0].body.len().to_string().as_str()
    );
    assert!(head.body.is_empty());

    // Blobs stream from the local copy; later requests never touch the peer again.
    let blob = get(t.node2.local, &format!("/v2/default/cp/blobs/{}", t.layer)).await;
    assert_eq!(blob.status, StatusCode::OK);
    assert_eq!(blob.headers["docker-content-digest"], t.layer.as_str());
    assert_eq!(format!("sha256:{}", sha256_hex(&blob.body)), t.layer);
    let by_tag = get(t.node2.local, "/v2/default/cp/manifests/latest").await;
    assert_eq!(by_tag.status, StatusCode::OK);
    assert_eq!(node2.peers.transferred(), once);

    // A blob of another image, and a digest nobody asked for, are unknown.
    let other = get(
        t.node2.local,
        &format!("/v2/default/cp/blobs/{}", digest('e')),
    )
    .await;
    assert_eq!(
        (other.status, error_code(&other).as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN")
    );
    let wrong = get(
        t.node2.local,
        &format!("/v2/default/cp/manifests/{}", digest('e')),
    )
    .await;
    assert_eq!(
        (wrong.status, error_code(&wrong).as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
    let missing = get(
        t.node2.local,
        &format!("/v2/default/nope/manifests/{}", t.digest),
    )
    .await;
    assert_eq!(
        (missing.status, error_code(&missing).as_str()),
        (StatusCode::NOT_FOUND, "NAME_UNKNOWN")
    );
    let bad = get(t.node2.local, "/v2/../etc/passwd").await;
    assert_eq!(bad.status, StatusCode::NOT_FOUND);
    let put = request(Method::PUT, t.node2.local, &manifest_path, None).await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);

    // Metrics: bytes fetched by node2 are bytes served by node1; requests by result.
    let text = node2.metrics.render();
    for line in [
        format!("noded_transfer_bytes_total{{direction=\"fetched\"}} {once}"),
        "noded_registry_requests_total{mode=\"local\",result=\"ok\"} 8".to_owned(),
        "noded_registry_requests_total{mode=\"local\",result=\"refused\"} 5".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} missing from {text}");
    }
    let text = t.node1.registry.metrics.render();
    let served = format!("noded_transfer_bytes_total{{direction=\"served\"}} {once}");
    assert!(text.contains(&served), "{served} missing from {text}");

    // Once the Content is gone, the cached copy goes too.
    t.cluster.contents.lock().unwrap().clear();
    assert_eq!(node2.prune("localhost:5050").await.unwrap().tags.len(), 1);
    assert!(node2.layout.tags().unwrap().is_empty());
    assert!(blob_files(&node2.layout).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_blob_from_the_peer_is_rejected_and_nothing_is_kept() {
    let t = two_nodes(b"original memory").await;
    // The layer blob on node1 is the archive itself: change it behind the layout's back.
    let layer = t
        .node1
        .registry
        .layout
        .blob_path(&t.layer.as_str().try_into().unwrap());
    let mut bytes = std::fs::read(&layer).unwrap();
    let at = bytes.len() - 1030;
    bytes[at] ^= 1;
    std::fs::write(&layer, bytes).unwrap();

    let a = get(
        t.node2.local,
        &format!("/v2/default/cp/manifests/{}", t.digest),
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    let message = String::from_utf8_lossy(&a.body);
    assert!(message.contains("digest sha256:"), "{message}");
    let node2 = &t.node2.registry.layout;
    assert!(node2.tags().unwrap().is_empty());
    assert!(blob_files(node2).is_empty(), "{:?}", blob_files(node2));
    assert!(t.node2.runtime.pulls.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_server_wants_an_allowed_token_and_never_fetches_further() {
    let t = two_nodes(b"memory").await;
    let path = format!("/v2/default/cp/manifests/{}", t.digest);
    for token in [None, Some("forged"), Some("other-user")] {
        let a = request(Method::GET, t.node1.peer, &path, token).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(error_code(&a), "UNAUTHORIZED");
        assert!(a.headers.contains_key(header::WWW_AUTHENTICATE));
        assert!(a.headers.get("docker-content-digest").is_none());
    }
    let base = request(Method::GET, t.node1.peer, "/v2/", None).await;
    assert_eq!(
        base.status,
        StatusCode::UNAUTHORIZED,
        "even /v2/ needs a token"
    );

    let reviews = t.cluster.reviews.load(Ordering::SeqCst);
    for _ in 0..3 {
        let a = request(Method::GET, t.node1.peer, &path, Some(GOOD_TOKEN)).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(
        t.cluster.reviews.load(Ordering::SeqCst),
        reviews + 1,
        "a positive review is cached"
    );
    assert!(
        t.node1.runtime.pulls.lock().unwrap().is_empty(),
        "the peer server leaves base images to the node that restores"
    );

    // node2's peer server does not hold the image and must not fetch it from node1.
    let a = request(Method::GET, t.node2.peer, &path, Some(GOOD_TOKEN)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(t.node2.registry.peers.transferred(), 0);
    assert!(t.node2.registry.layout.tags().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_image_that_cannot_be_pulled_fails_the_manifest() {
    let t = two_nodes(b"memory").await;
    // node1 serves its own image locally, but its runtime cannot pull the base image.
    let runtime = FakeRuntime {
        fail_pulls: true,
        ..Default::default()
    };
    let registry = Registry::new(
        t.node1.registry.layout.clone(),
        runtime.clone(),
        t.cluster.clone(),
        "node1".into(),
        PeerClient::new(1, PathBuf::from("/nonexistent")),
        Auth::new(Vec::new()),
    );
    let uri: Uri = format!("/v2/default/cp/manifests/{}", t.digest)
        .parse()
        .unwrap();
    let response = registry
        .serve(Mode::Local, &Method::GET, &uri, &HeaderMap::new())
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(BASE), "{body:?}");
    assert_eq!(*runtime.pulls.lock().unwrap(), [BASE]);

    // Present already: no pull.
    runtime.images.lock().unwrap().insert(BASE.into());
    let ok = registry
        .serve(Mode::Local, &Method::GET, &uri, &HeaderMap::new())
        .await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(runtime.pulls.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blobs_of_a_pull_need_no_second_lookup() {
    let t = two_nodes(b"memory").await;
    let manifest = get(
        t.node1.local,
        &format!("/v2/default/cp/manifests/{}", t.digest),
    )
    .await;
    assert_eq!(manifest.status, StatusCode::OK);
    let lookups = t.cluster.lookups.load(Ordering::SeqCst);
    assert_eq!(lookups, 1);
    for _ in 0..3 {
        let blob = get(t.node1.local, &format!("/v2/default/cp/blobs/{}", t.layer)).await;
        assert_eq!(blob.status, StatusCode::OK);
    }
    assert_eq!(t.cluster.lookups.load(Ordering::SeqCst), lookups);
}
