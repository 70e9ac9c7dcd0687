//! The seed's guide, step by step, as a user follows it on a real cluster: the CRDs, the
//! controller's and the node daemons' pods and logs, a checkpoint of `samples/` listed from
//! inside the noded pod and read by checkpointctl, the migration of `samples/` (unchanged) to
//! node2 with crictl's view of it, and the kubelet's own checkpoint endpoint beside ours.

use std::process::Command;
use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use checkpointing::reference::Spelling;
use e2e::{
    CONTROLLER_NAMESPACE, CONTROLLER_SELECTOR, NODED_NAMESPACE, NODED_SELECTOR, TestNamespace,
    Testbed, assert_counter_resumes, counter_log, counter_pod, eventually, run_pod,
    value_at_checkpoint, wait_checkpoint, wait_running,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};

/// The samples name namespace `default`: what the user applied, deleted however the test ends
/// (and before it starts, should an earlier run have left it).
struct Samples<'a>(&'a Testbed);

impl<'a> Samples<'a> {
    fn clean(tb: &'a Testbed) -> Self {
        delete_samples(tb, true);
        Self(tb)
    }
}

impl Drop for Samples<'_> {
    fn drop(&mut self) {
        delete_samples(self.0, false);
    }
}

fn delete_samples(tb: &Testbed, wait: bool) {
    let _ = tb.kubectl(&[
        "delete",
        "--ignore-not-found",
        &format!("--wait={wait}"),
        "-f",
        "samples/restored-app-node2.yaml",
        "-f",
        "samples/app-checkpoint.yaml",
        "-f",
        "samples/sample-app.yaml",
    ]);
}

#[tokio::test]
async fn the_seed_guide_works_on_the_real_cluster() {
    let tb = Testbed::get();
    let client = tb.client().await;

    // Nodes run real kubelets and their runtimes (a kubelet reports "Unknown" for a while after
    // its runtime was restarted, as the fault tests do).
    let prefix = |node: &str| match tb.runtime(node).as_str() {
        "crio" => "cri-o://1.36.",
        _ => "containerd://2.3.",
    };
    let all_report = |wide: &str| {
        wide.lines().all(|line| {
            let columns: Vec<&str> = line.split_whitespace().collect();
            columns[1] == "Ready"
                && columns[4].starts_with("v1.37.")
                && columns.last().unwrap().starts_with(prefix(columns[0]))
        })
    };
    let wide = eventually(
        "every node Ready with kubelet v1.37 and the runtime's version",
        Duration::from_secs(180),
        || async {
            let wide = tb.kubectl_ok(&["get", "nodes", "-o", "wide", "--no-headers"]);
            all_report(&wide).then_some(wide)
        },
    )
    .await;
    assert!(!wide.is_empty());

    // `kubectl get crds | grep checkpoint`
    let crds = tb.kubectl_ok(&["get", "crds"]);
    for crd in [
        "containercheckpoints.checkpointing.zacchaeuschok.github.io",
        "containercheckpointcontents.checkpointing.zacchaeuschok.github.io",
    ] {
        assert!(crds.contains(crd), "{crds}");
    }

    // The controller's two replicas and their logs.
    let controllers = tb.kubectl_ok(&[
        "get",
        "pods",
        "-n",
        CONTROLLER_NAMESPACE,
        "-l",
        CONTROLLER_SELECTOR,
        "--no-headers",
    ]);
    assert_eq!(
        controllers
            .lines()
            .filter(|l| l.contains(" 1/1 ") && l.contains("Running"))
            .count(),
        2,
        "{controllers}"
    );
    let logs = tb.controller_logs();
    assert!(
        logs.contains("leader election on"),
        "the controller logs: {logs}"
    );

    // The DaemonSet is ready on every node, and its logs say what it checked.
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .len();
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), NODED_NAMESPACE);
    let status = daemonsets
        .get("container-checkpoint-sidecar")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.desired_number_scheduled as usize, nodes);
    assert_eq!(status.number_ready as usize, nodes);
    let logs = tb.kubectl_ok(&["logs", "-n", NODED_NAMESPACE, "-l", NODED_SELECTOR]);
    assert!(!logs.trim().is_empty(), "noded logs");

    // The sample app runs on node1 and counts; the sample checkpoint completes.
    let _samples = Samples::clean(&tb);
    tb.kubectl_ok(&["apply", "-f", "samples/sample-app.yaml"]);
    wait_running(&client, "default", "stateful-app").await;
    counter_log(&tb, "default", "stateful-app", 2, Duration::from_secs(60)).await;
    tb.kubectl_ok(&["apply", "-f", "samples/app-checkpoint.yaml"]);
    let cc: ContainerCheckpoint = wait_checkpoint(&client, "default", "counter-checkpoint").await;
    let status = cc.status.unwrap();
    assert_eq!(
        status.state,
        Some(CheckpointState::Completed),
        "{:?}",
        status.message
    );
    let content = Api::<ContainerCheckpointContent>::namespaced(client.clone(), "default")
        .get("counter-checkpoint")
        .await
        .unwrap()
        .status
        .unwrap();
    let path = content.checkpoint_path.unwrap();
    let file = path.rsplit('/').next().unwrap();

    // `kubectl exec` into node1's noded lists the archive.
    let noded = tb.wait_noded(&client, "node1").await;
    let listing = tb.kubectl_ok(&[
        "exec",
        "-n",
        NODED_NAMESPACE,
        noded.metadata.name.as_deref().unwrap(),
        "--",
        "ls",
        "/var/lib/kubelet/checkpoints/",
    ]);
    assert!(listing.contains(file), "{listing}");

    // checkpointctl reads the archive on the node.
    for command in ["show", "inspect"] {
        let out = tb.node_exec("node1", &["checkpointctl", command, &path]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("counter"),
            "checkpointctl {command}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let at_checkpoint = value_at_checkpoint(&tb, "node1", &path);

    // The migration: the original goes, samples/restored-app-node2.yaml resumes on node2.
    tb.kubectl_ok(&["delete", "-f", "samples/sample-app.yaml", "--wait=false"]);
    tb.kubectl_ok(&["apply", "-f", "samples/restored-app-node2.yaml"]);
    let restored = wait_running(&client, "default", "restored-app").await;
    assert_eq!(
        restored.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node2")
    );
    assert_counter_resumes(&tb, "default", &restored, at_checkpoint).await;

    // It runs as any pod does: a projected ServiceAccount token mounted (CRI-O mounts every
    // bind mount the archive recorded again), restartPolicy Always, no restarts.
    let spec = restored.spec.as_ref().unwrap();
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert!(
        spec.volumes
            .iter()
            .flatten()
            .any(|v| v.projected.is_some() && v.name.starts_with("kube-api-access")),
        "the restored pod mounts a projected ServiceAccount token"
    );
    let namespace = tb.kubectl_ok(&[
        "exec",
        "restored-app",
        "--",
        "cat",
        "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
    ]);
    assert_eq!(namespace, "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let status = pods.get("restored-app").await.unwrap().status.unwrap();
    assert_eq!(status.container_statuses.unwrap()[0].restart_count, 0);

    // crictl on node2: the checkpoint image with its annotations (as image labels), and the
    // restored container running.
    let image = spec.containers[0].image.clone().unwrap();
    let images = tb.node_exec("node2", &["crictl", "images", "--digests"]);
    let images = String::from_utf8_lossy(&images.stdout);
    let repository = Spelling::of(&image).name;
    assert!(images.contains(repository), "crictl images: {images}");
    let inspect = tb.node_exec("node2", &["crictl", "inspecti", &image]);
    let inspect = String::from_utf8_lossy(&inspect.stdout);
    for label in [
        "org.criu.checkpoint.container.name",
        "io.kubernetes.cri-o.annotations.checkpoint.name",
    ] {
        assert!(
            inspect.contains(label),
            "crictl inspecti shows {label}: {inspect}"
        );
    }
    let ps = tb.node_exec(
        "node2",
        &[
            "crictl",
            "ps",
            "--name",
            "counter",
            "--namespace",
            "default",
        ],
    );
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        ps.lines()
            .any(|l| l.contains("Running") && l.contains("restored-app")),
        "crictl ps: {ps}"
    );
}

#[tokio::test]
async fn the_kubelets_checkpoint_endpoint_works_beside_ours() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "kubelet-api").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("ticker", "node1", 1)).await;

    // POST https://<node>:10250/checkpoint/<ns>/<pod>/<container>, as the kubelet documents it,
    // with a client the kubelet authorizes (the admin's certificate).
    let pki = tb.state.join("pki");
    let out = Command::new("curl")
        .args(["-sS", "--fail-with-body", "-X", "POST", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg(format!(
            "https://10.77.0.11:10250/checkpoint/{}/ticker/counter",
            ns.name
        ))
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{body} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let reply: serde_json::Value = serde_json::from_str(&body).unwrap();
    let path = reply["items"][0]
        .as_str()
        .expect("the archive's path")
        .to_owned();
    let archive = tb.node_path("node1", &path);
    assert!(archive.metadata().unwrap().len() > 0, "{path}");
    let show = tb.node_exec("node1", &["checkpointctl", "show", &path]);
    std::fs::remove_file(&archive).unwrap();
    assert!(show.status.success());

    // Ours, of the same container, beside it.
    let cc = e2e::checkpoint(
        &client,
        &ns.name,
        e2e::checkpoint_request("ours", "ticker", "counter"),
    )
    .await;
    let (state, message) = e2e::outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let pod = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .get("ticker")
        .await
        .unwrap();
    assert_eq!(pod.status.unwrap().phase.as_deref(), Some("Running"));
}
