//! Checkpoint end to end: ContainerCheckpoint → controller → noded → CRI → archive → OCI image,
//! against the real testbed with both binaries running.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use checkpointing::oci::ImageLayout;
use e2e::{
    TestNamespace, Testbed, checkpoint, checkpoint_request, counter_pod, eventually, outcome,
    run_pod, wait_checkpoint,
};
use futures::future::join_all;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};

const CHECKPOINTS: &str = "/var/lib/kubelet/checkpoints";

/// Archives of one namespace's requests on a node (file names carry the namespace).
fn archives(tb: &Testbed, node: &str, ns: &str) -> Vec<String> {
    let dir = tb.node_path(node, CHECKPOINTS);
    let prefix = format!("checkpoint-{ns}_");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix) || n.starts_with(&format!(".{prefix}")))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn seed_steps_checkpoint_the_counter_on_node1() {
    let tb = Testbed::get();
    let client = tb.client().await;
    // The seed's own files, unchanged, in the namespace they name.
    tb.kubectl_ok(&["apply", "-f", "samples/sample-app.yaml"]);
    e2e::wait_running(&client, "default", "stateful-app").await;
    tb.kubectl_ok(&["apply", "-f", "samples/app-checkpoint.yaml"]);
    let cc = wait_checkpoint(&client, "default", "counter-checkpoint").await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    // `kubectl describe pod` tells it too.
    let told = e2e::pod_event(&client, "default", "stateful-app", "Checkpointed").await;
    assert!(told.contains("counter-checkpoint"), "{told}");

    let row = tb.kubectl_ok(&[
        "get",
        "containercheckpoint",
        "counter-checkpoint",
        "--no-headers",
    ]);
    let status = cc.status.clone().unwrap();
    let size = status.archive_size.unwrap();
    assert!(
        row.contains("Completed") && row.contains("node1") && row.contains(&size.to_string()),
        "{row}"
    );
    let image = status.image.unwrap();
    assert!(image.contains("@sha256:"), "image has a digest: {image}");

    let content: ContainerCheckpointContent = serde_json::from_str(&tb.kubectl_ok(&[
        "get",
        "containercheckpointcontent",
        "counter-checkpoint",
        "-o",
        "json",
    ]))
    .unwrap();
    let yaml = tb.kubectl_ok(&[
        "get",
        "containercheckpointcontent",
        "counter-checkpoint",
        "-o",
        "yaml",
    ]);
    for field in ["checkpointPath:", "archiveDigest: sha256:", "image:"] {
        assert!(yaml.contains(field), "{field} in {yaml}");
    }
    let cs = content.status.unwrap();
    let path = cs.checkpoint_path.unwrap();

    // On node1 only, 0600, readable by checkpointctl.
    let on_node1 = tb.node_path("node1", &path);
    let meta = on_node1
        .metadata()
        .unwrap_or_else(|e| panic!("{}: {e}", on_node1.display()));
    assert_eq!(meta.len() as i64, size);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(
        !tb.node_path("node2", &path).exists(),
        "the archive is not on node2"
    );
    let show = tb.node_exec("node1", &["checkpointctl", "show", &path]);
    assert!(
        show.status.success(),
        "checkpointctl: {}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert!(String::from_utf8_lossy(&show.stdout).contains("counter"));

    // The OCI layout verifies and the manifest carries both runtimes' annotations.
    let layout = ImageLayout::open(tb.node_path("node1", &format!("{CHECKPOINTS}/oci"))).unwrap();
    let manifest = layout
        .verify(content.metadata.uid.as_deref().unwrap())
        .unwrap();
    let annotations = manifest.annotations().clone().unwrap();
    assert_eq!(
        annotations["io.kubernetes.cri-o.annotations.checkpoint.name"],
        "counter"
    );
    assert_eq!(annotations["org.criu.checkpoint.container.name"], "counter");
    assert_eq!(
        format!("{}", manifest.layers()[0].digest()),
        cs.archive_digest.unwrap()
    );

    // Deleting the request removes the Content, the archive and its blobs.
    let layer_blob = layout.blob_path(manifest.layers()[0].digest());
    tb.kubectl_ok(&["delete", "-f", "samples/app-checkpoint.yaml"]);
    eventually(
        "the archive and its image to be removed",
        Duration::from_secs(60),
        || async { (!on_node1.exists() && !layer_blob.exists()).then_some(()) },
    )
    .await;
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), "default");
    eventually(
        "the Content to be deleted",
        Duration::from_secs(60),
        || async {
            contents
                .get_opt("counter-checkpoint")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        },
    )
    .await;
    tb.kubectl_ok(&["delete", "-f", "samples/sample-app.yaml", "--wait=false"]);
}

#[tokio::test]
async fn bad_requests_fail_with_a_reason_and_write_nothing() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "refuse").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;

    // A request naming another namespace is refused outright (checkpointing-same-namespace).
    let mut other_ns = checkpoint_request("other-ns", "app", "counter");
    other_ns.spec.namespace = Some("kube-system".into());
    let error = Api::<ContainerCheckpoint>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &other_ns)
        .await
        .expect_err("a request naming another namespace is refused");
    assert!(
        error
            .to_string()
            .contains("spec.namespace kube-system differs from the namespace"),
        "{error}"
    );
    let mut unbound = counter_pod("unbound", "no-such-node", 1);
    unbound.metadata.namespace = Some(ns.name.clone());
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &unbound)
        .await
        .unwrap();
    let exited: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "exited", "namespace": ns.name},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": "node1"},
                 "containers": [{"name": "once", "image": "busybox", "command": ["true"]}]},
    }))
    .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(&PostParams::default(), &exited).await.unwrap();
    eventually(
        "container once to exit",
        Duration::from_secs(60),
        || async {
            let p = pods.get("exited").await.ok()?;
            let cs = p.status?.container_statuses?;
            cs[0].state.as_ref()?.terminated.as_ref().map(|_| ())
        },
    )
    .await;

    // Names longer than Kubernetes allows the API server refuses by the schema (tests/bounds.rs).
    let cases = [
        (
            checkpoint_request("no-pod", "missing-pod", "counter"),
            "missing-pod",
        ),
        (checkpoint_request("no-container", "app", "nope"), "nope"),
        (
            checkpoint_request("not-running", "exited", "once"),
            "not running",
        ),
        (
            checkpoint_request("hostile-pod", "../../../etc/passwd", "counter"),
            "not found",
        ),
        (
            checkpoint_request("hostile-container", "app", "Counter/.."),
            "fix spec.container",
        ),
    ];
    let before1 = std::fs::read_dir(tb.node_path("node1", "/"))
        .unwrap()
        .count();
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    for (cc, reason) in cases {
        let name = cc.metadata.name.clone().unwrap();
        let done = checkpoint(&client, &ns.name, cc).await;
        let (state, message) = outcome(&done);
        assert_eq!(state, CheckpointState::Failed, "{name}: {message}");
        assert!(
            message.contains(reason),
            "{name}: message {message:?} names {reason:?}"
        );
        assert!(
            contents.get_opt(&name).await.unwrap().is_none(),
            "{name}: no Content for a refused request"
        );
    }
    // A pod not scheduled yet may still be: the request waits, Pending and saying for what,
    // and fails only after the controller's --pending-timeout-seconds (30 s on the testbed).
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    let unbound = checkpoint_request("unbound", "unbound", "counter");
    requests
        .create(&PostParams::default(), &unbound)
        .await
        .unwrap();
    let waiting = eventually(
        "ContainerCheckpoint unbound to wait",
        Duration::from_secs(60),
        || async {
            let status = requests.get("unbound").await.ok()?.status?;
            let waits = status.message.as_deref()?.starts_with("waiting: ");
            waits.then_some(status)
        },
    )
    .await;
    assert_eq!(waiting.state, Some(CheckpointState::Pending));
    assert_eq!(
        waiting.message.as_deref(),
        Some("waiting: pod \"unbound\" is not scheduled to a node yet")
    );
    assert_eq!(waiting.conditions[0].reason, "PodNotScheduled");
    assert!(
        contents.get_opt("unbound").await.unwrap().is_none(),
        "no Content for a waiting request"
    );
    // A request's spec is read once: changing it later is refused, not silently ignored.
    let fix = Patch::Merge(serde_json::json!({"spec": {"container": "counter"}}));
    let error = Api::<ContainerCheckpoint>::namespaced(client.clone(), &ns.name)
        .patch("no-container", &PatchParams::default(), &fix)
        .await
        .expect_err("a spec change is refused");
    assert!(
        error.to_string().contains(
            "spec is immutable: delete this ContainerCheckpoint and create it again with the new spec"
        ),
        "{error}"
    );
    assert!(archives(&tb, "node1", &ns.name).is_empty());
    assert_eq!(
        std::fs::read_dir(tb.node_path("node1", "/"))
            .unwrap()
            .count(),
        before1
    );
}

#[tokio::test]
async fn concurrent_and_duplicate_requests_all_complete() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "many").await;
    let client = tb.client().await;
    let pods: Vec<String> = (0..10).map(|i| format!("app{i}")).collect();
    let started = pods.iter().enumerate().map(|(i, name)| {
        let node = if i % 2 == 0 { "node1" } else { "node2" };
        run_pod(&client, &ns.name, counter_pod(name, node, 1))
    });
    join_all(started).await;

    // Ten requests for ten containers at once, plus a duplicate for the first one.
    let mut requests: Vec<_> = pods
        .iter()
        .map(|p| checkpoint_request(&format!("ck-{p}"), p, "counter"))
        .collect();
    requests.push(checkpoint_request("ck-app0-again", "app0", "counter"));
    let done = join_all(
        requests
            .into_iter()
            .map(|cc| checkpoint(&client, &ns.name, cc)),
    )
    .await;
    for cc in &done {
        let (state, message) = outcome(cc);
        assert_eq!(
            state,
            CheckpointState::Completed,
            "{}: {message}",
            cc.metadata.name.as_deref().unwrap()
        );
    }
    assert_eq!(
        archives(&tb, "node1", &ns.name).len(),
        6,
        "5 pods + the duplicate on node1"
    );
    assert_eq!(archives(&tb, "node2", &ns.name).len(), 5);

    // Both archives of the duplicated container are intact images.
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    let layout = ImageLayout::open(tb.node_path("node1", &format!("{CHECKPOINTS}/oci"))).unwrap();
    let mut digests = Vec::new();
    for name in ["ck-app0", "ck-app0-again"] {
        let c = contents.get(name).await.unwrap();
        layout.verify(c.metadata.uid.as_deref().unwrap()).unwrap();
        digests.push(c.status.unwrap().archive_digest.unwrap());
    }
    assert_ne!(digests[0], digests[1], "two checkpoints, two archives");

    // Deleting the requests removes every archive.
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    requests
        .delete_collection(&DeleteParams::default(), &Default::default())
        .await
        .unwrap();
    eventually(
        "all archives and Contents of the namespace to be removed",
        Duration::from_secs(90),
        || async {
            let gone = archives(&tb, "node1", &ns.name).is_empty()
                && archives(&tb, "node2", &ns.name).is_empty()
                && contents
                    .list(&Default::default())
                    .await
                    .ok()?
                    .items
                    .is_empty();
            gone.then_some(())
        },
    )
    .await;
}
