//! The product as the testbed runs it: noded's DaemonSet pods and the controller's Deployment,
//! their processes on the host, and breaking them as a user would.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use checkpointing::names::PEER_AUDIENCE;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};

use crate::{Testbed, eventually};

/// The node daemons' DaemonSet and the controller's Deployment, as `deploy/` names them.
pub const NODED_NAMESPACE: &str = "kube-system";
pub const NODED_SELECTOR: &str = "app=container-checkpoint-sidecar";
pub const CONTROLLER_NAMESPACE: &str = "external-checkpointer-system";
pub const CONTROLLER_DEPLOYMENT: &str = "external-checkpointer-controller-manager";
pub const CONTROLLER_SELECTOR: &str = "control-plane=controller-manager";
/// The controller's leader-election Lease (holder: the leading pod's name).
pub const CONTROLLER_LEASE: &str = "checkpoint-controller";

/// A pod that runs and is ready, and is not being deleted.
fn serving(pod: &Pod) -> bool {
    let ready = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && pod.metadata.deletion_timestamp.is_none()
}

/// Host PID of the process named `comm` in a container of the pod with `uid`: the kubelets'
/// cgroupfs paths carry the pod UID.
pub fn pod_process(uid: &str, comm: &str) -> Option<u32> {
    let needle = format!("/pod{uid}/");
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let pid: u32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        (name.trim() == comm && cgroup.contains(&needle)).then_some(pid)
    })
}

/// SIGKILLs the host process `pid` and waits until it is gone.
pub async fn kill_process(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -KILL {pid}");
    eventually(
        &format!("process {pid} to exit"),
        Duration::from_secs(30),
        || async { (!Path::new(&format!("/proc/{pid}")).exists()).then_some(()) },
    )
    .await;
}

impl Testbed {
    /// Waits for the rollout of `workload` (`deployment/NAME`, `daemonset/NAME`) in `namespace`.
    /// Also called from `Drop`: a failure while already panicking is not raised again.
    pub fn rollout_status(&self, namespace: &str, workload: &str) {
        let out = self.kubectl(&[
            "rollout",
            "status",
            "-n",
            namespace,
            workload,
            "--timeout=180s",
        ]);
        assert!(
            out.status.success() || std::thread::panicking(),
            "{workload} rolls out: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The serving noded pod on `node`, if any.
    pub async fn noded_pod(&self, client: &kube::Client, node: &str) -> Option<Pod> {
        let pods: Api<Pod> = Api::namespaced(client.clone(), NODED_NAMESPACE);
        let params = ListParams::default()
            .labels(NODED_SELECTOR)
            .fields(&format!("spec.nodeName={node}"));
        pods.list(&params)
            .await
            .ok()?
            .items
            .into_iter()
            .find(serving)
    }

    /// Waits until noded serves on `node` again (after a restart or a new pod); returns its pod.
    pub async fn wait_noded(&self, client: &kube::Client, node: &str) -> Pod {
        eventually(
            &format!("noded to serve on {node}"),
            Duration::from_secs(120),
            || self.noded_pod(client, node),
        )
        .await
    }

    /// A token of noded's ServiceAccount for the peer audience, as noded's own projected one:
    /// bound to the serving noded pod on `node`, whose node it then speaks for. `None`: bound
    /// to no pod.
    pub async fn noded_peer_token(&self, client: &kube::Client, node: Option<&str>) -> String {
        let mut args = vec![
            "create",
            "token",
            "checkpoint-noded",
            "-n",
            NODED_NAMESPACE,
            "--audience",
            PEER_AUDIENCE,
        ];
        let pod: String;
        if let Some(node) = node {
            pod = self.wait_noded(client, node).await.metadata.name.unwrap();
            args.extend(["--bound-object-kind", "Pod", "--bound-object-name", &pod]);
        }
        self.kubectl_ok(&args).trim().to_owned()
    }

    /// Host PID of noded's process on `node`.
    pub async fn noded_pid(&self, client: &kube::Client, node: &str) -> u32 {
        let pod = self.wait_noded(client, node).await;
        let uid = pod.metadata.uid.unwrap();
        pod_process(&uid, "noded").unwrap_or_else(|| panic!("no noded process of pod {uid}"))
    }

    /// Kills noded on `node` as a crash would (SIGKILL of its process); the kubelet restarts it.
    pub async fn kill_noded(&self, client: &kube::Client, node: &str) {
        kill_process(self.noded_pid(client, node).await).await;
    }

    /// Replaces noded's pod on `node` (the DaemonSet makes a new one, which sees the node's
    /// mounts as they are now) and waits until the new one serves.
    pub async fn replace_noded(&self, client: &kube::Client, node: &str) {
        let old = self.wait_noded(client, node).await;
        let name = old.metadata.name.unwrap();
        Api::<Pod>::namespaced(client.clone(), NODED_NAMESPACE)
            .delete(&name, &DeleteParams::default())
            .await
            .unwrap_or_else(|e| panic!("deleting {name}: {e}"));
        eventually(
            &format!("a new noded pod to serve on {node}"),
            Duration::from_secs(120),
            || async {
                let pod = self.noded_pod(client, node).await?;
                (pod.metadata.name.as_deref() != Some(name.as_str())).then_some(())
            },
        )
        .await;
    }

    /// The controller pod that holds the leader Lease.
    pub async fn controller_leader(&self, client: &kube::Client) -> Pod {
        let leases: Api<Lease> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
        let pods: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
        eventually(
            "a controller replica to lead",
            Duration::from_secs(60),
            || async {
                let holder = leases
                    .get(CONTROLLER_LEASE)
                    .await
                    .ok()?
                    .spec?
                    .holder_identity?;
                pods.get(&holder).await.ok().filter(serving)
            },
        )
        .await
    }

    /// Everything the controller's pods (both replicas) have logged.
    pub fn controller_logs(&self) -> String {
        self.kubectl_ok(&[
            "logs",
            "-n",
            CONTROLLER_NAMESPACE,
            "-l",
            CONTROLLER_SELECTOR,
            "--tail=-1",
        ])
    }

    /// noded's /metrics on `node`, from its admin port on the node's IP (on which alone it
    /// listens).
    pub fn noded_metrics(&self, node: &str) -> String {
        let url = format!("http://{}:9811/metrics", self.node_ip(node));
        let out = self.node_exec(node, &["curl", "-sf", "--max-time", "10", &url]);
        assert!(out.status.success(), "noded /metrics on {node}");
        String::from_utf8(out.stdout).unwrap()
    }

    /// `GET http://<pod IP>:8080/metrics` of a controller pod (the host routes pod subnets).
    pub fn controller_metrics(&self, pod: &Pod) -> Option<String> {
        let ip = pod.status.as_ref()?.pod_ip.as_deref()?;
        let out = Command::new("curl")
            .args(["-sf", "--max-time", "5"])
            .arg(format!("http://{ip}:8080/metrics"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Testbed {
    /// `testbed/agents ARGS`: stops, starts or restarts a node's kubelet or runtime. Also
    /// called from `Drop`: a failure while already panicking is not raised again.
    pub fn agents(&self, args: &[&str]) {
        let out = Command::new(self.repo.join("testbed/agents"))
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success() || std::thread::panicking(),
            "testbed/agents {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A node without its daemon: its kubelet, which would restart noded, stopped, and noded
/// killed. Dropped, the kubelet starts again (and with it noded: wait for it with
/// [`Testbed::wait_noded`]).
pub struct NodedDown<'a> {
    tb: &'a Testbed,
    node: String,
}

impl<'a> NodedDown<'a> {
    pub async fn new(tb: &'a Testbed, client: &kube::Client, node: &str) -> Self {
        tb.agents(&["stop", "kubelet", node]);
        let down = Self {
            tb,
            node: node.to_owned(),
        };
        kill_process(tb.noded_pid(client, node).await).await;
        down
    }
}

impl Drop for NodedDown<'_> {
    fn drop(&mut self) {
        self.tb.agents(&["start", "kubelet", &self.node]);
    }
}

/// Scales the controller's Deployment to zero and waits until no replica runs; scales it back
/// (two replicas, as deploy/ ships it) and waits until it serves again when dropped.
pub struct ControllerDown<'a>(&'a Testbed);

impl<'a> ControllerDown<'a> {
    pub async fn new(tb: &'a Testbed, client: &kube::Client) -> Self {
        scale_controller(client, 0).await;
        let pods: Api<Pod> = Api::namespaced(client.clone(), CONTROLLER_NAMESPACE);
        eventually(
            "every controller pod to be gone",
            Duration::from_secs(90),
            || async {
                let list = pods
                    .list(&ListParams::default().labels(CONTROLLER_SELECTOR))
                    .await
                    .ok()?;
                list.items.is_empty().then_some(())
            },
        )
        .await;
        Self(tb)
    }
}

async fn scale_controller(client: &kube::Client, replicas: i32) {
    Api::<Deployment>::namespaced(client.clone(), CONTROLLER_NAMESPACE)
        .patch(
            CONTROLLER_DEPLOYMENT,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": replicas}})),
        )
        .await
        .unwrap_or_else(|e| panic!("scaling the controller to {replicas}: {e}"));
}

impl Drop for ControllerDown<'_> {
    fn drop(&mut self) {
        // Drop cannot be async: kubectl does it.
        let _ = self.0.kubectl(&[
            "scale",
            "-n",
            CONTROLLER_NAMESPACE,
            "deployment",
            CONTROLLER_DEPLOYMENT,
            "--replicas=2",
        ]);
        self.0.rollout_status(
            CONTROLLER_NAMESPACE,
            &format!("deployment/{CONTROLLER_DEPLOYMENT}"),
        );
    }
}

/// Sum of the samples of `metric` in the Prometheus text `text` whose labels contain `labels`.
pub fn sample(text: &str, metric: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
