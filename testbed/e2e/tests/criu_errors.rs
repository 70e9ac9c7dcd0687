//! What CRIU meets in real servers, on either runtime: an established TCP connection is
//! checkpointed (the node's /etc/criu/runc.conf, deploy/node/criu-runc.conf, sets tcp-close), and
//! a dump CRIU refuses ends Failed with one plain line and CRIU's log kept on the Content.

use checkpointing::crd::{CheckpointState, ContainerCheckpointContent};
use e2e::{
    TestNamespace, Testbed, busybox_pod, checkpoint, checkpoint_request, outcome, run_pod,
    wait_logged,
};
use kube::api::Api;

#[tokio::test]
async fn a_server_with_an_established_connection_is_checkpointed() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "criu-tcp").await;
    let ns = ns.name.as_str();
    // stdin that never ends keeps each nc on its connection.
    let forever = "while true; do sleep 1; done";
    let server = busybox_pod("server", "node1", &format!("({forever}) | nc -l -p 7000"));
    let server = run_pod(&client, ns, server).await;
    let ip = server
        .status
        .and_then(|s| s.pod_ip)
        .expect("the server's IP");
    let script = format!("(echo hello; {forever}) | nc {ip} 7000");
    run_pod(&client, ns, busybox_pod("client", "node2", &script)).await;
    wait_logged(&tb, ns, "server", "hello").await;

    let cc = checkpoint(
        &client,
        ns,
        checkpoint_request("server-cp", "server", "server"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let content = Api::<ContainerCheckpointContent>::namespaced(client, ns)
        .get("server-cp")
        .await
        .unwrap();
    let status = content.status.unwrap_or_default();
    assert_eq!(status.criu_log, None, "a log is kept only for a failure");
}

#[tokio::test]
async fn a_dump_criu_refuses_fails_with_one_plain_line_and_its_log() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "criu-refused").await;
    let ns = ns.name.as_str();
    // A deleted file held open is dumped whole, up to CRIU's ghost limit (1 MiB by default).
    let script = "dd if=/dev/urandom of=/tmp/big bs=1M count=2 2>/dev/null; exec 3</tmp/big; \
                  rm /tmp/big; echo ready; while true; do sleep 1; done";
    run_pod(&client, ns, busybox_pod("holder", "node1", script)).await;
    wait_logged(&tb, ns, "holder", "ready").await;

    let cc = checkpoint(
        &client,
        ns,
        checkpoint_request("holder-cp", "holder", "holder"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Failed, "{message}");
    assert!(!message.contains('\n'), "one line: {message}");
    assert!(message.len() < 700, "not CRIU's whole log: {message}");
    assert!(message.contains("deleted file"), "{message}");
    assert!(
        message.ends_with("CRIU's log: kubectl checkpoint logs holder-cp"),
        "{message}"
    );

    // The log is there for whoever may read the Content, without the node.
    let log = tb.kubectl_ok(&[
        "get",
        "-n",
        ns,
        "containercheckpointcontent",
        "holder-cp",
        "-o",
        "jsonpath={.status.criuLog}",
    ]);
    assert!(log.contains("Can't dump ghost file"), "{log}");
    assert!(
        log.len() <= checkpointing::crd::CRIU_LOG_MAX,
        "{}",
        log.len()
    );
}
