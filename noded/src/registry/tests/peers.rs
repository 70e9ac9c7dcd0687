//! The peer server as another node's credential holder would attack it: a node's noded gets
//! only the images a pod bound to its node was admitted to restore.

use super::*;
use crate::testing::{PEER_NODE, noded_token};

/// node3's noded's peer token.
const NODE3: &str = "noded-node3-token";
/// A peer token of noded's ServiceAccount bound to no pod (`kubectl create token`).
const UNBOUND: &str = "noded-unbound-token";

fn peer_tokens(cluster: &FakeCluster) {
    let mut tokens = cluster.tokens.lock().unwrap();
    tokens.insert(NODE3.into(), noded_token("node3"));
    let mut unbound = noded_token("node3");
    unbound.user.as_mut().unwrap().extra = None;
    tokens.insert(UNBOUND.into(), unbound);
}

/// The status and message of a GET of `path` from node1's peer server with `token`.
async fn fetch(t: &Cluster2, path: &str, token: &str) -> (StatusCode, String) {
    let a = peer_request(&t.node1, Method::GET, path, Cred::Bearer(token)).await;
    assert!(a.headers.get("docker-content-digest").is_none() || a.status == StatusCode::OK);
    (a.status, String::from_utf8_lossy(&a.body).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_gets_only_the_images_restored_on_it() {
    let t = two_nodes(b"memory").await;
    peer_tokens(&t.cluster);
    let manifest = format!("/v2/default/cp/manifests/{}", t.digest);
    let blob = format!("/v2/default/cp/blobs/{}", t.layer);
    let restore_pod = |name: &str| {
        let mut pods = t.cluster.pods.lock().unwrap();
        let at = pods
            .iter()
            .position(|p| p.metadata.name.as_deref() == Some(name));
        at.map(|at| pods.remove(at))
    };

    // No pod on node2 restores the checkpoint: node2's noded gets nothing, however it asks.
    let admitted = restore_pod("restore-node2").expect("two_nodes admits one on node2");
    // A pod there that runs the image without the webhook's marker is no reason either.
    let image = format!("localhost:5050/default/cp@{}", t.digest);
    t.cluster.pods.lock().unwrap().push(pod(
        "default",
        "unmarked",
        "uid-unmarked",
        PEER_NODE,
        &image,
    ));
    for path in [&manifest, &blob] {
        let (status, message) = fetch(&t, path, GOOD_TOKEN).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {message}");
        assert!(
            message.contains("no pod on node node2 was admitted to restore"),
            "{message}"
        );
    }
    // Nor does node2's local registry, pulling for the unmarked pod, get it from node1.
    t.cluster.tokens.lock().unwrap().insert(
        "unmarked".into(),
        pod_token(
            "default",
            "unmarked",
            "uid-unmarked",
            PEER_NODE,
            REGISTRY_AUDIENCE,
        ),
    );
    let pull = request(
        Method::GET,
        t.node2.local,
        &manifest,
        Cred::Basic("unmarked"),
    )
    .await;
    assert_eq!(pull.status, StatusCode::BAD_GATEWAY);
    assert!(String::from_utf8_lossy(&pull.body).contains("403"));
    assert_eq!(t.node2.registry.images.transferred(), 0);

    // Once the webhook admitted a pod on node2, node2's noded gets the image.
    t.cluster.pods.lock().unwrap().push(admitted);
    let (status, message) = fetch(&t, &manifest, GOOD_TOKEN).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(fetch(&t, &blob, GOOD_TOKEN).await.0, StatusCode::OK);

    // node3's noded, with its own valid peer token, gets nothing restored on node2 only.
    for path in [&manifest, &blob] {
        let (status, message) = fetch(&t, path, NODE3).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}: {message}");
        assert!(
            message.contains("no pod on node node3 was admitted to restore"),
            "{message}"
        );
    }
    // A peer token bound to no pod speaks for no node.
    let (status, message) = fetch(&t, &manifest, UNBOUND).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{message}");
    assert!(
        message.contains("not bound to a pod on a node"),
        "{message}"
    );
    let (status, _) = fetch(&t, "/v2/", UNBOUND).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "not even /v2/");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_repeating_a_bogus_token_costs_one_review() {
    let t = two_nodes(b"memory").await;
    let manifest = format!("/v2/default/cp/manifests/{}", t.digest);
    let reviews = || t.cluster.reviews.load(Ordering::SeqCst);
    let before = reviews();
    for _ in 0..5 {
        let (status, _) = fetch(&t, &manifest, "forged").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(reviews(), before + 1);
}
