//! Two nodes' registries over real sockets.

use checkpointing::admin::Telemetry as _;
use checkpointing::digest::sha256_hex;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::StatusCode;
use bytes::Bytes;
use checkpointing::oci::{CheckpointMeta, ImageLayout, sha256_file};
use checkpointing::tls::TlsListener;
use http_body_util::BodyExt;

use super::*;
use checkpointing::names::REGISTRY_AUDIENCE;

use crate::http::{HttpClient, Tls};
use crate::identity::PeerIdentity;
use crate::images::PeerClient;
use crate::space::{DEFAULT_RESERVE_MIB, DiskSpace};
use crate::testing::{
    FakeCluster, FakeRuntime, GOOD_TOKEN, NODED, archive_bytes, content, digest, pod, pod_token,
    restoring_pod, roomy_disk,
};

const BASE: &str = "docker.io/library/busybox@sha256:00";
/// What the kubelet hands the runtime for the restore pod on node1 and on node2.
const PULL1: &str = "pull-token-node1";
const PULL2: &str = "pull-token-node2";

// ------------------------------------------------------------ two nodes over real sockets

type TestRegistry = Registry<FakeRuntime, Arc<FakeCluster>>;

/// A node's registry over `layout`, wired as the daemon wires it.
fn registry(
    layout: Arc<ImageLayout>,
    runtime: FakeRuntime,
    cluster: Arc<FakeCluster>,
    node: String,
    peers: PeerClient,
    space: DiskSpace,
    peer_auth: PeerAuth,
) -> TestRegistry {
    let metrics = Arc::new(Metrics::default());
    let local = "localhost:5050".to_owned();
    let images = Images::new(layout, cluster.clone(), (node, local), peers, space)
        .with_metrics(metrics.clone());
    let images = Arc::new(images);
    let restore = Restore::new(images.clone(), cluster.clone(), runtime)
        .with_pods_dir(PathBuf::from("/nonexistent/pods"));
    Registry::new(images, Arc::new(restore), cluster, peer_auth).with_metrics(metrics)
}

struct TestNode {
    registry: Arc<TestRegistry>,
    runtime: FakeRuntime,
    local: SocketAddr,
    peer: SocketAddr,
    /// The SHA-256 of the peer server's certificate.
    pin: String,
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
    let identity = PeerIdentity::generate(node).unwrap();
    let pin = identity.fingerprint();
    cluster
        .pins
        .lock()
        .unwrap()
        .insert(node.into(), pin.clone());
    let registry = Arc::new(registry(
        layout,
        runtime.clone(),
        cluster,
        node.into(),
        PeerClient::new(peer_port, token_file),
        roomy_disk(),
        PeerAuth::new(vec![NODED.into()]),
    ));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let stop = futures::future::FutureExt::shared(async move {
        let _ = stop_rx.await;
    });
    let bind = || tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0));
    let local = bind().await.unwrap();
    let peer = TlsListener::new(bind().await.unwrap(), identity.server_config().unwrap()).unwrap();
    let addrs = [
        local.local_addr().unwrap(),
        axum::serve::Listener::local_addr(&peer).unwrap(),
    ];
    let grace = Duration::from_secs(1);
    let local_router = router(registry.clone(), Mode::Local);
    tokio::spawn(serve(local, local_router, stop.clone(), grace));
    tokio::spawn(serve(
        peer,
        router(registry.clone(), Mode::Peer),
        stop,
        grace,
    ));
    TestNode {
        registry,
        runtime,
        local: addrs[0],
        peer: addrs[1],
        pin,
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
        .add_checkpoint(&path, &layer, size, None, &meta, "uid-1")
        .unwrap();
    let digest = desc.digest().to_string();
    let token = tmp.path().join("token");
    std::fs::write(&token, format!("{GOOD_TOKEN}\n")).unwrap();

    let mut cluster = FakeCluster::default();
    let image = format!("localhost:5050/default/cp@{digest}");
    cluster
        .contents
        .lock()
        .unwrap()
        .push(content("node1", Some(image.clone())));
    // On each node a pod the restore webhook admitted, and its pull credential.
    for (node, token) in [("node1", PULL1), ("node2", PULL2)] {
        let (name, uid) = (format!("restore-{node}"), format!("uid-{node}"));
        cluster
            .pods
            .lock()
            .unwrap()
            .push(restoring_pod("default", &name, &uid, node, &image));
        cluster.tokens.lock().unwrap().insert(
            token.into(),
            pod_token("default", &name, &uid, node, REGISTRY_AUDIENCE),
        );
    }
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

/// Credentials a request carries.
#[derive(Clone, Copy, Debug)]
enum Cred<'a> {
    None,
    /// A peer's token.
    Bearer(&'a str),
    /// A pull credential as the runtime sends it.
    Basic(&'a str),
}

async fn request(method: Method, addr: SocketAddr, path: &str, cred: Cred<'_>) -> Answer {
    send(
        crate::http::client(Tls::PlainOnly).unwrap(),
        method,
        format!("http://{addr}{path}"),
        cred,
    )
    .await
}

/// A request to `node`'s peer server, over TLS to exactly its certificate.
async fn peer_request(node: &TestNode, method: Method, path: &str, cred: Cred<'_>) -> Answer {
    let client = crate::http::client(Tls::Pinned(node.pin.clone())).unwrap();
    send(client, method, format!("https://{}{path}", node.peer), cred).await
}

async fn send(client: HttpClient, method: Method, url: String, cred: Cred<'_>) -> Answer {
    let mut req = axum::http::Request::builder().method(method).uri(url);
    match cred {
        Cred::None => {}
        Cred::Bearer(token) => req = req.header(header::AUTHORIZATION, format!("Bearer {token}")),
        Cred::Basic(token) => req = req.header(header::AUTHORIZATION, basic(token)),
    }
    let response = client
        .request(req.body(Body::empty()).unwrap())
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

/// `Authorization` of a runtime pulling with `token` as the password.
fn basic(token: &str) -> HeaderValue {
    let pair = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("kubelet:{token}"),
    );
    HeaderValue::from_str(&format!("Basic {pair}")).unwrap()
}

/// A GET as the runtime pulling for the admitted pod on node2 sends it.
async fn get(addr: SocketAddr, path: &str) -> Answer {
    request(Method::GET, addr, path, Cred::Basic(PULL2)).await
}

/// A GET as the runtime pulling for the admitted pod on node1 sends it.
async fn get1(addr: SocketAddr, path: &str) -> Answer {
    request(Method::GET, addr, path, Cred::Basic(PULL1)).await
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
    let once = node2.images.transferred();
    assert!(once > 300_000, "{once}");
    node2.images.layout.verify("uid-1").unwrap();
    assert!(
        node2
            .images
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
    let head = request(
        Method::HEAD,
        t.node2.local,
        &manifest_path,
        Cred::Basic(PULL2),
    )
    .await;
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
    assert_eq!(node2.images.transferred(), once);
    // Never by tag: the pod was admitted for one digest.
    let by_tag = get(t.node2.local, "/v2/default/cp/manifests/latest").await;
    assert_eq!(
        (by_tag.status, error_code(&by_tag).as_str()),
        (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN")
    );
    assert!(String::from_utf8_lossy(&by_tag.body).contains("by digest only"));

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
    let put = request(
        Method::PUT,
        t.node2.local,
        &manifest_path,
        Cred::Basic(PULL2),
    )
    .await;
    assert_eq!(put.status, StatusCode::METHOD_NOT_ALLOWED);

    // Metrics: bytes fetched by node2 are bytes served by node1; requests by result.
    let text = node2.metrics.render();
    for line in [
        format!("checkpointing_noded_transfer_bytes_total{{direction=\"fetched\"}} {once}"),
        "checkpointing_noded_registry_requests_total{mode=\"local\",result=\"ok\"} 7".to_owned(),
        "checkpointing_noded_registry_requests_total{mode=\"local\",result=\"refused\"} 6"
            .to_owned(),
    ] {
        assert!(text.contains(&line), "{line} missing from {text}");
    }
    let text = t.node1.registry.metrics.render();
    let served = format!("checkpointing_noded_transfer_bytes_total{{direction=\"served\"}} {once}");
    assert!(text.contains(&served), "{served} missing from {text}");

    // Once the Content is gone, the cached copy goes too.
    t.cluster.contents.lock().unwrap().clear();
    let collector = crate::gc::Collector {
        images: node2.images.clone(),
        restore: node2.restore.clone(),
        cluster: t.cluster.clone(),
        registry: "localhost:5050".into(),
        archives: t._tmp.path().to_owned(),
        metrics: node2.metrics.clone(),
    };
    let pruned = collector.round().await.unwrap();
    assert_eq!(pruned.tags.len(), 1);
    assert!(node2.images.layout.tags().unwrap().is_empty());
    assert!(blob_files(&node2.images.layout).is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prefetched_image_is_here_before_the_runtime_pulls_it() {
    let t = two_nodes(&vec![7u8; 300_000]).await;
    let node2 = &t.node2.registry;
    let image = |reference: &str| {
        checkpointing::reference::ImageRef::parse(&format!("localhost:5050/{reference}")).unwrap()
    };
    for bad in [
        "default/cp",
        "default/cp@sha256:nothex",
        "default/none@sha256:00",
    ] {
        assert!(node2.restore.ahead(&image(bad)).await.is_err(), "{bad}");
    }
    assert_eq!(node2.images.transferred(), 0);

    node2
        .restore
        .ahead(&image(&format!("default/cp@{}", t.digest)))
        .await
        .unwrap();
    let fetched = node2.images.transferred();
    assert!(fetched > 300_000, "{fetched}");
    node2.images.layout.verify("uid-1").unwrap();
    assert!(
        t.node2.runtime.pulls.lock().unwrap().is_empty(),
        "the base image waits for the runtime's own pull"
    );

    let path = format!("/v2/default/cp/manifests/{}", t.digest);
    let manifest = get(t.node2.local, &path).await;
    assert_eq!(manifest.status, StatusCode::OK, "{:?}", manifest.body);
    assert_eq!(node2.images.transferred(), fetched, "nothing fetched twice");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tampered_blob_from_the_peer_is_rejected_and_nothing_is_kept() {
    let t = two_nodes(b"original memory").await;
    // The layer blob on node1 is the archive itself: change it behind the layout's back.
    let layer = t
        .node1
        .registry
        .images
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
    let node2 = &t.node2.registry.images.layout;
    assert!(node2.tags().unwrap().is_empty());
    assert!(blob_files(node2).is_empty(), "{:?}", blob_files(node2));
    assert!(t.node2.runtime.pulls.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_peer_server_wants_an_allowed_token_and_never_fetches_further() {
    let t = two_nodes(b"memory").await;
    let path = format!("/v2/default/cp/manifests/{}", t.digest);
    for cred in [
        Cred::None,
        Cred::Bearer("forged"),
        Cred::Bearer(PULL1),
        Cred::Basic(GOOD_TOKEN),
    ] {
        let a = peer_request(&t.node1, Method::GET, &path, cred).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{cred:?}");
        assert_eq!(error_code(&a), "UNAUTHORIZED");
        assert_eq!(
            a.headers[header::WWW_AUTHENTICATE],
            "Bearer realm=\"checkpoint-noded\""
        );
        assert!(a.headers.get("docker-content-digest").is_none());
    }
    // Someone the API server knows, but not a noded.
    let a = peer_request(&t.node1, Method::GET, &path, Cred::Bearer("other-user")).await;
    assert_eq!(
        (a.status, error_code(&a).as_str()),
        (StatusCode::FORBIDDEN, "DENIED")
    );
    assert!(a.headers.get("docker-content-digest").is_none());
    let base = peer_request(&t.node1, Method::GET, "/v2/", Cred::None).await;
    assert_eq!(
        base.status,
        StatusCode::UNAUTHORIZED,
        "even /v2/ needs a token"
    );

    let reviews = t.cluster.reviews.load(Ordering::SeqCst);
    for _ in 0..3 {
        let a = peer_request(&t.node1, Method::GET, &path, Cred::Bearer(GOOD_TOKEN)).await;
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
    let a = peer_request(&t.node2, Method::GET, &path, Cred::Bearer(GOOD_TOKEN)).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(t.node2.registry.images.transferred(), 0);
    assert!(t.node2.registry.images.layout.tags().unwrap().is_empty());
}

/// node1's own image served locally through `runtime`, and a manifest pull of it by node1's
/// admitted pod.
fn node1_through(t: &Cluster2, runtime: FakeRuntime) -> impl AsyncFn() -> Response {
    let registry = registry(
        t.node1.registry.images.layout.clone(),
        runtime,
        t.cluster.clone(),
        "node1".into(),
        PeerClient::new(1, PathBuf::from("/nonexistent")),
        roomy_disk(),
        PeerAuth::new(Vec::new()),
    );
    let uri: Uri = format!("/v2/default/cp/manifests/{}", t.digest)
        .parse()
        .unwrap();
    let headers = HeaderMap::from_iter([(header::AUTHORIZATION, basic(PULL1))]);
    async move || {
        registry
            .serve(Mode::Local, &Method::GET, &uri, &headers)
            .await
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_image_that_cannot_be_pulled_fails_the_manifest() {
    let t = two_nodes(b"memory").await;
    // A CRI-O (which never pulls a base image itself) that cannot pull the base image.
    let runtime = FakeRuntime {
        fail_pulls: true,
        crio_config: Some(String::new()),
        ..Default::default()
    };
    let pull = node1_through(&t, runtime.clone());
    let response = pull().await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains(BASE), "{body:?}");
    assert_eq!(*runtime.pulls.lock().unwrap(), [BASE]);
    // The pod hears why.
    let told = reasons(&t.cluster);
    assert_eq!(
        told,
        [("restore-node1".into(), "RestorePreparationFailed".into())]
    );
    let note = t.cluster.told.lock().unwrap()[0].1.note.clone().unwrap();
    assert!(note.contains(BASE), "{note}");

    // Present already: no pull.
    runtime.images.lock().unwrap().insert(BASE.into());
    assert_eq!(pull().await.status(), StatusCode::OK);
    assert_eq!(runtime.pulls.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_is_left_to_pull_a_base_image_noded_could_not() {
    let t = two_nodes(b"memory").await;
    let runtime = FakeRuntime {
        fail_pulls: true,
        ..Default::default()
    };
    let pull = node1_through(&t, runtime.clone());
    assert_eq!(pull().await.status(), StatusCode::OK);
    assert_eq!(
        *runtime.pulls.lock().unwrap(),
        [BASE],
        "tried first, with the node's credentials"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_blobs_of_a_pull_need_no_second_lookup() {
    let t = two_nodes(b"memory").await;
    let pull = |path: String| async move { get1(t.node1.local, &path).await };
    let manifest = pull(format!("/v2/default/cp/manifests/{}", t.digest)).await;
    assert_eq!(manifest.status, StatusCode::OK);
    let counts = || {
        [
            &t.cluster.lookups,
            &t.cluster.reviews,
            &t.cluster.pod_lookups,
        ]
        .map(|c| c.load(Ordering::SeqCst))
    };
    assert_eq!(counts(), [1, 1, 1]);
    for _ in 0..3 {
        let blob = pull(format!("/v2/default/cp/blobs/{}", t.layer)).await;
        assert_eq!(blob.status, StatusCode::OK);
    }
    assert_eq!(
        counts(),
        [1, 1, 1],
        "the pull's credential and pod are remembered too"
    );
    let reads = "checkpointing_noded_manifest_reads_total 1\n";
    let text = t.node1.registry.metrics.render();
    assert!(
        text.contains(reads),
        "the manifest is read and hashed once for the whole pull: {text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_blob_of_a_checkpoint_deleted_here_is_unknown_not_a_failure() {
    let t = two_nodes(b"memory").await;
    let pull = |path: String| async move { get1(t.node1.local, &path).await };
    let blob = format!("/v2/default/cp/blobs/{}", t.layer);
    let manifest = pull(format!("/v2/default/cp/manifests/{}", t.digest)).await;
    assert_eq!(manifest.status, StatusCode::OK);
    assert_eq!(pull(blob.clone()).await.status, StatusCode::OK);

    // The checkpoint is deleted on node1, as its reconcile does, wired as the daemon wires it.
    let restore = t.node1.registry.restore.clone();
    let checkpointer = crate::checkpoint::Checkpointer::new(
        FakeRuntime::default(),
        crate::store::CheckpointDir::open(t._tmp.path().join("checkpoints")).unwrap(),
        t.node1.registry.images.layout.clone(),
        "localhost:5050".into(),
        crate::push::Pusher::new(Vec::new(), None, Default::default()).unwrap(),
        roomy_disk(),
    )
    .with_forget(crate::checkpoint::Forget::new(move |tag| {
        restore.forget(tag)
    }));
    let job = crate::checkpoint::Job {
        name: "cp",
        key: crate::store::ArchiveKey {
            namespace: "default",
            pod: "p",
            container: "c",
            uid: "uid-1",
        },
        pod_uid: "pod",
        timeout: Duration::from_secs(10),
        volumes: Vec::new(),
        push: None,
        hold: false,
    };
    checkpointer.remove(&job).unwrap();
    assert!(t.node1.registry.images.layout.tags().unwrap().is_empty());

    let gone = pull(blob).await;
    assert_eq!(
        (gone.status, error_code(&gone).as_str()),
        (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
        "{:?}",
        gone.body
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_runtime_pulling_for_an_admitted_pod_on_this_node_gets_the_image() {
    let t = two_nodes(b"memory").await;
    let manifest = format!("/v2/default/cp/manifests/{}", t.digest);
    let blob = format!("/v2/default/cp/blobs/{}", t.layer);
    let other_ns = format!("/v2/team-b/cp/manifests/{}", t.digest);
    let image = format!("localhost:5050/default/cp@{}", t.digest);
    {
        let mut tokens = t.cluster.tokens.lock().unwrap();
        let mut pods = t.cluster.pods.lock().unwrap();
        // A pod of the same namespace on node1 that runs something else.
        pods.push(pod("default", "plain", "uid-plain", "node1", "busybox"));
        tokens.insert(
            "plain".into(),
            pod_token("default", "plain", "uid-plain", "node1", REGISTRY_AUDIENCE),
        );
        // A pod of another namespace on node1 that names the image anyway.
        pods.push(pod("team-b", "thief", "uid-thief", "node1", &image));
        tokens.insert(
            "thief".into(),
            pod_token("team-b", "thief", "uid-thief", "node1", REGISTRY_AUDIENCE),
        );
    }
    let cases: [(Cred, &str, StatusCode, &str); 9] = [
        (
            Cred::None,
            &manifest,
            StatusCode::UNAUTHORIZED,
            "no credentials",
        ),
        (
            Cred::None,
            "/v2/",
            StatusCode::UNAUTHORIZED,
            "no credentials",
        ),
        (
            Cred::Bearer(PULL1),
            &manifest,
            StatusCode::UNAUTHORIZED,
            "no credentials",
        ),
        (
            Cred::Basic("forged"),
            &blob,
            StatusCode::UNAUTHORIZED,
            "not authenticated",
        ),
        (
            Cred::Basic(GOOD_TOKEN),
            &manifest,
            StatusCode::UNAUTHORIZED,
            "not authenticated",
        ),
        (
            Cred::Basic(PULL2),
            &manifest,
            StatusCode::FORBIDDEN,
            "not bound to a pod on node node1",
        ),
        (
            Cred::Basic("plain"),
            &manifest,
            StatusCode::FORBIDDEN,
            "does not reference",
        ),
        (
            Cred::Basic("plain"),
            &blob,
            StatusCode::FORBIDDEN,
            "does not reference",
        ),
        (
            Cred::Basic("thief"),
            &manifest,
            StatusCode::FORBIDDEN,
            "may not pull images of namespace default",
        ),
    ];
    for (cred, path, status, why) in cases {
        let a = request(Method::GET, t.node1.local, path, cred).await;
        let body = String::from_utf8_lossy(&a.body);
        assert_eq!(a.status, status, "{cred:?} {path}: {body}");
        assert!(body.contains(why), "{cred:?} {path}: {body}");
        assert!(a.headers.get("docker-content-digest").is_none());
        if status == StatusCode::UNAUTHORIZED {
            // What makes the runtime answer with the kubelet's credentials.
            assert_eq!(
                a.headers[header::WWW_AUTHENTICATE],
                "Basic realm=\"checkpoint-noded\""
            );
        }
    }
    // A pod learns nothing about another namespace's names: refused before any lookup.
    let lookups = t.cluster.lookups.load(Ordering::SeqCst);
    let a = request(Method::GET, t.node1.local, &other_ns, Cred::Basic(PULL1)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(t.cluster.lookups.load(Ordering::SeqCst), lookups);
    let a = request(Method::GET, t.node1.local, &other_ns, Cred::Basic("thief")).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "its own namespace");
    assert_eq!(t.cluster.lookups.load(Ordering::SeqCst), lookups + 1);

    let ok = request(Method::GET, t.node1.local, &manifest, Cred::Basic(PULL1)).await;
    assert_eq!(ok.status, StatusCode::OK);
    let base = request(Method::GET, t.node1.local, "/v2/", Cred::Basic(PULL1)).await;
    assert_eq!(base.status, StatusCode::OK);
}

/// The pods told, and the reasons, in order.
fn reasons(cluster: &FakeCluster) -> Vec<(String, String)> {
    let told = cluster.told.lock().unwrap();
    told.iter()
        .map(|(pod, event)| (pod.name.clone().unwrap(), event.reason.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pod_hears_why_its_pull_is_refused_and_where_its_restore_came_from() {
    let t = two_nodes(b"memory").await;
    let manifest = format!("/v2/default/cp/manifests/{}", t.digest);
    {
        let mut pods = t.cluster.pods.lock().unwrap();
        pods.push(pod("default", "plain", "uid-plain", "node2", "busybox"));
        t.cluster.tokens.lock().unwrap().insert(
            "plain".into(),
            pod_token("default", "plain", "uid-plain", "node2", REGISTRY_AUDIENCE),
        );
    }
    // The kubelet retries: one Event a minute.
    for _ in 0..3 {
        let a = request(Method::GET, t.node2.local, &manifest, Cred::Basic("plain")).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN);
    }
    // No pod to tell: nothing told.
    let a = request(Method::GET, t.node2.local, &manifest, Cred::Basic("forged")).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    // The admitted pod pulls twice (two containers, say): told once, with the image's source.
    for _ in 0..2 {
        let a = request(Method::GET, t.node2.local, &manifest, Cred::Basic(PULL2)).await;
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(
        reasons(&t.cluster),
        [
            ("plain".into(), "CheckpointImageRefused".into()),
            ("restore-node2".into(), "RestorePrepared".into()),
        ]
    );
    let told = t.cluster.told.lock().unwrap();
    let (pod, refused) = &told[0];
    assert_eq!(pod.uid.as_deref(), Some("uid-plain"));
    let note = refused.note.as_deref().unwrap();
    assert!(
        note.contains("pod default/plain") && note.contains("does not reference"),
        "{note}"
    );
    let prepared = told[1].1.note.as_deref().unwrap();
    assert!(
        prepared.contains("default/cp") && prepared.contains("node node1"),
        "{prepared}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fetch_the_disk_has_no_room_for_fails_before_any_blob() {
    let t = two_nodes(&vec![7u8; 300_000]).await;
    // node2's disk has about 256 MiB free: the reserve leaves less than the image needs.
    let layout = t.node2.registry.images.layout.clone();
    let space =
        DiskSpace::new("node2".into(), DEFAULT_RESERVE_MIB).with_free(|_| Ok((256 << 20) + 1000));
    let registry = registry(
        layout.clone(),
        FakeRuntime::default(),
        t.cluster.clone(),
        "node2".into(),
        PeerClient::new(t.node1.peer.port(), t._tmp.path().join("token")),
        space,
        PeerAuth::new(Vec::new()),
    );
    let uri: Uri = format!("/v2/default/cp/manifests/{}", t.digest)
        .parse()
        .unwrap();
    let headers = HeaderMap::from_iter([(header::AUTHORIZATION, basic(PULL2))]);
    let response = registry
        .serve(Mode::Local, &Method::GET, &uri, &headers)
        .await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let message = String::from_utf8_lossy(&body);
    for part in [
        "not enough disk space on node node2 for checkpoint image default/cp: ",
        &format!(
            "{} has 256 MiB free, about 256.3 MiB needed",
            layout.ingest_dir().display()
        ),
        "KiB of its 2 blobs this node does not hold yet, plus 256 MiB kept free by noded's --disk-reserve-mib)",
    ] {
        assert!(message.contains(part), "{part:?} missing from {message}");
    }
    // node1 answered the manifest and nothing else; node2 kept nothing.
    let served = t.node1.registry.metrics.render();
    let one = "checkpointing_noded_registry_requests_total{mode=\"peer\",result=\"ok\"} 1\n";
    assert!(served.contains(one), "{one} missing from {served}");
    assert_eq!(registry.images.transferred(), 0);
    assert!(blob_files(&layout).is_empty(), "{:?}", blob_files(&layout));
    assert!(layout.tags().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_is_trusted_only_with_the_certificate_its_lease_publishes() {
    let t = two_nodes(b"memory").await;
    let manifest = format!("/v2/default/cp/manifests/{}", t.digest);
    // Someone answering on node1's address with a certificate of their own.
    let impostor = PeerIdentity::generate("node1").unwrap().fingerprint();
    t.cluster
        .pins
        .lock()
        .unwrap()
        .insert("node1".into(), impostor);
    let a = get(t.node2.local, &manifest).await;
    let body = String::from_utf8_lossy(&a.body);
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("https://127.0.0.1:"), "{body}");
    assert_eq!(t.node2.registry.images.transferred(), 0);
    assert!(t.node2.registry.images.layout.tags().unwrap().is_empty());

    t.cluster.pins.lock().unwrap().remove("node1");
    let a = get(t.node2.local, &manifest).await;
    let body = String::from_utf8_lossy(&a.body);
    assert_eq!(a.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("publishes no peer certificate"), "{body}");

    let pin = t.node1.pin.clone();
    t.cluster.pins.lock().unwrap().insert("node1".into(), pin);
    assert_eq!(get(t.node2.local, &manifest).await.status, StatusCode::OK);
}

mod peers;
mod pushed;
