//! The peer port as someone holding a node's credential would use it, as root on that node: a
//! noded's peer token fetches only the checkpoint images a pod bound to its own node was
//! admitted to restore. And the ports listen on the node's address, not on every interface,
//! and a stranger there costs little.

use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpointContent};
use checkpointing::reference::ImageRef;
use e2e::{
    TestNamespace, Testbed, checkpoint, checkpoint_request, counter_log, counter_pod, eventually,
    outcome, pull_credential, run_pod, sample,
};
use kube::api::Api;

/// `curl` of `url` inside `node` with the bearer `token`: the status code and the body.
fn curl(tb: &Testbed, node: &str, url: &str, token: Option<&str>) -> (String, String) {
    let header = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["curl", "-sk", "--max-time", "20", "-w", "\n%{http_code}"];
    if let Some(header) = &header {
        args.extend(["-H", header]);
    }
    args.push(url);
    let out = tb.node_exec(node, &args);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_owned(), body.to_owned())
}

#[tokio::test]
async fn a_nodes_peer_token_fetches_only_what_a_pod_on_that_node_restores() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "peers").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("src", "node1", 1)).await;
    counter_log(&tb, &ns.name, "src", 2, Duration::from_secs(60)).await;
    let cc = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("cp", "src", "counter"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    let content = contents.get("cp").await.unwrap();
    let uid = content.metadata.uid.unwrap();
    let status = content.status.unwrap();
    let image = status.image.unwrap();
    let layer = status.archive_digest.unwrap();
    let (repo, digest) = ImageRef::parse(&image)
        .ok()
        .filter(|r| r.is_node_local(5050))
        .and_then(|r| Some((r.repository.clone(), r.digest?)))
        .unwrap_or_else(|| panic!("{image} is not a node-local image"));

    // Restored on node2 only: a pod there the webhook admitted (pull policy Never: its kubelet
    // never pulls), for which node2's noded fetches the image ahead, with its own peer token.
    pull_credential(&client, &ns.name, "node2", "cp", &image).await;
    eventually(
        "node2's noded to fetch the image a pod on node2 restores",
        Duration::from_secs(60),
        || async { tb.node_holds_image("node2", &uid).then_some(()) },
    )
    .await;

    let node1 = tb.node_ip("node1");
    let manifest = format!("https://{node1}:5051/v2/{repo}/manifests/{digest}");
    let blob = format!("https://{node1}:5051/v2/{repo}/blobs/{layer}");
    // Root on node3 holds node3's noded's peer token: valid, for the peer audience, of the
    // allowed ServiceAccount, bound to node3's noded pod. No pod on node3 restores this.
    let node3 = tb.noded_peer_token(&client, Some("node3")).await;
    for url in [&manifest, &blob] {
        let (code, body) = curl(&tb, "node3", url, Some(&node3));
        assert_eq!(code, "403", "{url}: {body}");
        assert!(
            body.contains("no pod on node node3 was admitted to restore"),
            "{url}: {body}"
        );
        assert!(!body.contains("schemaVersion"), "no manifest: {body}");
    }
    assert!(!tb.node_holds_image("node3", &uid));
    // Nor a peer token bound to no pod (what `kubectl create token` makes).
    let unbound = tb.noded_peer_token(&client, None).await;
    let (code, body) = curl(&tb, "node3", &manifest, Some(&unbound));
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("not bound to a pod on a node"), "{body}");
    // The same request with node2's credential is answered: the refusals above are node3's.
    let node2 = tb.noded_peer_token(&client, Some("node2")).await;
    let (code, body) = curl(&tb, "node3", &manifest, Some(&node2));
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("schemaVersion"), "{body}");
}

/// The peer port and the admin port listen on the node's IP (deploy/ passes `status.hostIP`),
/// not on every interface: not on the node's loopback, for one.
#[test]
fn noded_listens_on_the_node_ip_only() {
    let tb = Testbed::get();
    let ip = tb.node_ip("node1");
    let code = |url: &str| curl(&tb, "node1", url, None).0;
    assert_eq!(code(&format!("https://{ip}:5051/v2/")), "401");
    assert_eq!(code(&format!("http://{ip}:9811/healthz")), "200");
    assert_eq!(
        code("https://127.0.0.1:5051/v2/"),
        "000",
        "peer port on loopback"
    );
    assert_eq!(
        code("http://127.0.0.1:9811/healthz"),
        "000",
        "admin on loopback"
    );
}

/// A stranger at the peer port, on the node's network: the same bogus token sent 30 times
/// costs the API server one TokenReview (a refusal is remembered), and a connection that sends
/// nothing, to the peer or the admin port, is closed by noded (10 s for a TLS handshake or a
/// request's headers) rather than held for as long as the stranger likes.
#[test]
fn a_stranger_at_noded_s_ports_costs_one_review_and_holds_no_connection() {
    let tb = Testbed::get();
    let ip = tb.node_ip("node1");
    let refused = |t: &str| {
        sample(
            t,
            "checkpointing_noded_token_reviews_total",
            "result=\"unauthenticated\"",
        )
    };
    let before = refused(&tb.noded_metrics("node1"));
    let token = format!(
        "bogus-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let url = format!("https://{ip}:5051/v2/default/x/manifests/latest");
    let header = format!("Authorization: Bearer {token}");
    let mut args = vec![
        "curl",
        "-sk",
        "--max-time",
        "60",
        "-w",
        "%{http_code}\n",
        "-H",
        &header,
    ];
    // One connection, 30 requests; each body to /dev/null, the codes printed.
    for _ in 0..30 {
        args.extend(["-o", "/dev/null", url.as_str()]);
    }
    let out = tb.node_exec("node1", &args);
    let codes = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        codes.lines().filter(|c| *c == "401").count(),
        30,
        "every request refused: {codes}"
    );
    let after = refused(&tb.noded_metrics("node1"));
    assert_eq!(after - before, 1.0, "TokenReviews for 30 requests");

    for port in [5051, 9811] {
        // Reads until noded closes the connection; `timeout` would end it otherwise (124).
        let silent = format!("exec 3<>/dev/tcp/{ip}/{port}; cat <&3 >/dev/null");
        let out = tb.node_exec("node1", &["timeout", "60", "bash", "-c", &silent]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "noded closed a silent connection to port {port}"
        );
    }
}
