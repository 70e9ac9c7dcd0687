//! Harness for tests that run against the testbed brought up by `testbed/up`: kube clients
//! from its kubeconfig, kubectl, commands inside a node, CRI clients per node, the product's
//! pods and processes, polling.
//!
//! Every test works in a namespace of its own (see [`TestNamespace`]). The testbed's nodes all
//! run one runtime ([`Testbed::runtime`]); `testbed/test` runs the suite once per runtime.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use checkpointing::crd::{CheckpointState, ContainerCheckpoint};
use checkpointing::cri::{CriClient, CriConfig};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// The running testbed. Tests fail (never skip) when it is not up: an e2e test that silently
/// passes without a cluster proves nothing.
#[derive(Clone, Debug)]
pub struct Testbed {
    pub state: PathBuf,
    pub repo: PathBuf,
}

impl Testbed {
    pub fn get() -> Self {
        let state = PathBuf::from(
            std::env::var("TESTBED_STATE").unwrap_or_else(|_| "/var/lib/ckpt-testbed".into()),
        );
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()
            .unwrap();
        assert!(
            state.join("kubeconfig").exists(),
            "the testbed is not up ({} has no kubeconfig): run `testbed/up` first",
            state.display()
        );
        Self { state, repo }
    }

    pub async fn client(&self) -> kube::Client {
        let kubeconfig = Kubeconfig::read_from(self.state.join("kubeconfig"))
            .expect("reading the testbed kubeconfig");
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .expect("loading the testbed kubeconfig");
        kube::Client::try_from(config).expect("building a kube client")
    }

    fn script(&self, name: &str) -> PathBuf {
        self.repo.join("testbed").join(name)
    }

    /// Runs `kubectl` (the testbed's, with its kubeconfig).
    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new(self.script("kubectl"))
            .current_dir(&self.repo)
            .args(args)
            .output()
            .expect("running testbed/kubectl")
    }

    /// Runs `kubectl`, asserting success; returns stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("kubectl output is UTF-8")
    }

    /// Runs a command inside a node's namespaces (what a DaemonSet pod on it would see).
    pub fn node_exec(&self, node: &str, args: &[&str]) -> Output {
        Command::new(self.script("node-exec"))
            .arg(node)
            .args(args)
            .output()
            .expect("running testbed/node-exec")
    }

    /// Host path of `path` inside `node`'s filesystem.
    pub fn node_path(&self, node: &str, path: &str) -> PathBuf {
        self.state
            .join("nodes")
            .join(node)
            .join("root")
            .join(path.trim_start_matches('/'))
    }

    /// The nodes' container runtime: `crio` or `containerd`.
    pub fn runtime(&self) -> String {
        std::fs::read_to_string(self.state.join("runtime"))
            .expect("the testbed records its runtime")
            .trim()
            .to_owned()
    }

    /// A CRI client for `node`'s runtime, through the socket the testbed exposes on the host.
    pub async fn cri(&self, node: &str) -> CriClient {
        let socket = self.state.join("nodes").join(node).join("cri.sock");
        CriClient::connect(&CriConfig::new(format!("unix://{}", socket.display())))
            .await
            .unwrap_or_else(|e| panic!("connecting to {node}'s CRI socket: {e}"))
    }
}

/// The node daemons' DaemonSet and the controller's Deployment, as `deploy/` names them.
pub const NODED_NAMESPACE: &str = "kube-system";
pub const NODED_SELECTOR: &str = "app=container-checkpoint-sidecar";
pub const CONTROLLER_NAMESPACE: &str = "external-checkpointer-system";
pub const CONTROLLER_DEPLOYMENT: &str = "external-checkpointer-controller-manager";
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
                    .list(&ListParams::default().labels("control-plane=controller-manager"))
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
        let out = self.0.kubectl(&[
            "rollout",
            "status",
            "-n",
            CONTROLLER_NAMESPACE,
            "deployment",
            CONTROLLER_DEPLOYMENT,
            "--timeout=180s",
        ]);
        assert!(
            out.status.success() || std::thread::panicking(),
            "the controller serves again: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Polls `check` every half second until it yields a value; panics naming `what` on timeout.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A namespace for one test, deleted when the test ends (also when it fails).
pub struct TestNamespace {
    pub name: String,
    testbed: Testbed,
}

impl TestNamespace {
    pub async fn create(testbed: &Testbed, prefix: &str) -> Self {
        let suffix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
            % 1_000_000_000;
        let name = format!("e2e-{prefix}-{suffix}");
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
        Api::<Namespace>::all(testbed.client().await)
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        Self {
            name,
            testbed: testbed.clone(),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Drop cannot be async; kubectl is a plain process. The namespace controller removes
        // what is inside, the kubelets the pods' containers.
        let _ = self
            .testbed
            .kubectl(&["delete", "namespace", &self.name, "--wait=false"]);
    }
}

/// A busybox pod printing `Counter: N` every `period_s` seconds (the seed's program), pinned to
/// `node`.
pub fn counter_pod(name: &str, node: &str, period_s: u32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{
                "name": "counter",
                "image": "busybox",
                "command": ["/bin/sh", "-c"],
                "args": [format!("counter=0\nwhile true; do\n  echo \"Counter: $counter\"\n  counter=$((counter+1))\n  sleep {period_s}\ndone\n")],
            }],
        },
    }))
    .unwrap()
}

/// Reads a pod manifest from `samples/`.
pub fn sample_pod(testbed: &Testbed, file: &str) -> Pod {
    let text =
        std::fs::read_to_string(testbed.repo.join("samples").join(file)).expect("reading sample");
    serde_saphyr::from_str(&text).expect("parsing sample pod")
}

/// Creates `pod` in `namespace` and waits until it runs; returns it as running.
pub async fn run_pod(client: &kube::Client, namespace: &str, mut pod: Pod) -> Pod {
    pod.metadata.namespace = Some(namespace.to_owned());
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let name = pod.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &pod)
        .await
        .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
    wait_running(client, namespace, &name).await
}

pub async fn wait_running(client: &kube::Client, namespace: &str, name: &str) -> Pod {
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    eventually(
        &format!("pod {namespace}/{name} to run"),
        Duration::from_secs(120),
        || async {
            let pod = api.get(name).await.ok()?;
            let status = pod.status.as_ref()?;
            (status.phase.as_deref() == Some("Running")).then_some(pod.clone())
        },
    )
    .await
}

/// The `Counter: N` values in a log.
pub fn counter_values(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix("Counter: ")?.trim().parse().ok())
        .collect()
}

/// Waits until `kubectl logs` of the pod shows at least `n` counter values; returns them.
pub async fn counter_log(
    testbed: &Testbed,
    namespace: &str,
    pod: &str,
    n: usize,
    timeout: Duration,
) -> Vec<u64> {
    eventually(
        &format!("{n} counter lines from {namespace}/{pod}"),
        timeout,
        || async {
            let out = testbed.kubectl(&["logs", "-n", namespace, pod, "-c", "counter"]);
            let values = counter_values(&String::from_utf8_lossy(&out.stdout));
            (values.len() >= n).then_some(values)
        },
    )
    .await
}

/// A ContainerCheckpoint for `container` of `pod` (in whatever namespace it is created).
pub fn checkpoint_request(name: &str, pod: &str, container: &str) -> ContainerCheckpoint {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "checkpointing.zacchaeuschok.github.io/v1alpha1",
        "kind": "ContainerCheckpoint",
        "metadata": {"name": name},
        "spec": {"podName": pod, "container": container},
    }))
    .unwrap()
}

/// Creates the request and waits until it is final; returns it.
pub async fn checkpoint(
    client: &kube::Client,
    ns: &str,
    cc: ContainerCheckpoint,
) -> ContainerCheckpoint {
    let api: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), ns);
    let name = cc.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &cc)
        .await
        .unwrap_or_else(|e| panic!("creating {name}: {e}"));
    wait_checkpoint(client, ns, &name).await
}

/// Waits until the request `ns/name` is Completed or Failed; returns it.
pub async fn wait_checkpoint(client: &kube::Client, ns: &str, name: &str) -> ContainerCheckpoint {
    let api: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("ContainerCheckpoint {ns}/{name} to finish"),
        Duration::from_secs(180),
        || async {
            let cc = api.get(name).await.ok()?;
            cc.status.as_ref()?.state?.is_final().then_some(cc)
        },
    )
    .await
}

/// State and message of a finished request.
pub fn outcome(cc: &ContainerCheckpoint) -> (CheckpointState, String) {
    let status = cc.status.as_ref().expect("a finished request has a status");
    (
        status.state.expect("and a state"),
        status.message.clone().unwrap_or_default(),
    )
}

/// Runs pod `name` (one container, also `name`) on `node`, holding `megabytes` of memory, so
/// its checkpoint takes seconds; returns once the memory is filled.
pub async fn memory_hog(
    tb: &Testbed,
    client: &kube::Client,
    ns: &str,
    name: &str,
    node: &str,
    megabytes: u32,
) {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [{
            "name": name, "image": "busybox",
            "command": ["/bin/sh", "-c", format!(
                "x=$(dd if=/dev/urandom bs=1M count={megabytes} 2>/dev/null); echo ready; while true; do sleep 1; done"
            )],
        }]},
    }))
    .unwrap();
    run_pod(client, ns, pod).await;
    eventually(
        &format!("{ns}/{name} to fill its memory"),
        Duration::from_secs(60),
        || async {
            let out = tb.kubectl(&["logs", "-n", ns, name]);
            String::from_utf8_lossy(&out.stdout)
                .contains("ready")
                .then_some(())
        },
    )
    .await;
}

/// The counter value the checkpointed process had printed last: the end of the container log
/// the runtime put into the archive (containerd names it `container.log`, CRI-O after the
/// annotation that held its path).
pub fn value_at_checkpoint(tb: &Testbed, node: &str, archive: &str) -> u64 {
    let member = match tb.runtime().as_str() {
        "crio" => "io.kubernetes.cri-o.LogPath",
        _ => "container.log",
    };
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tb.node_path(node, archive))
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "reading {member} from {archive}");
    *counter_values(
        &String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.splitn(4, ' ').last().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .last()
    .expect("the archive's log has counter lines")
}

/// Asserts that the restored `running` pod's counter goes on from `at_checkpoint`.
pub async fn assert_counter_resumes(tb: &Testbed, ns: &str, running: &Pod, at_checkpoint: u64) {
    let name = running.metadata.name.clone().unwrap();
    // The runtime carries the old log over into the restored container's log (containerd its
    // last line, again, CRI-O all of it); what the restored process prints itself must go on from
    // there, never start again at 0.
    let started = running
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .and_then(|s| s.running.as_ref())
        .and_then(|r| r.started_at.as_ref())
        .expect("a running container has a start time")
        .0;
    let lines = eventually(
        "the restored counter to tick",
        Duration::from_secs(60),
        || async {
            let out = tb.kubectl(&["logs", "--timestamps", "-n", ns, &name]);
            let lines = timestamped_counter(&String::from_utf8_lossy(&out.stdout));
            lines
                .iter()
                .any(|&(_, v)| v > at_checkpoint)
                .then_some(lines)
        },
    )
    .await;
    let values: Vec<u64> = lines.iter().map(|&(_, v)| v).collect();
    let first_new = values.iter().find(|&&v| v > at_checkpoint).unwrap();
    assert_eq!(
        *first_new,
        at_checkpoint + 1,
        "the restored counter goes on from {at_checkpoint}: {values:?}"
    );
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "the counter never starts again: {values:?}"
    );
    // Anything below the checkpoint's value was written by the old process, before this one.
    assert!(
        lines
            .iter()
            .all(|&(at, v)| v >= at_checkpoint || at < started),
        "the restored process printed nothing from before the checkpoint (started {started}): {lines:?}"
    );
}

/// `(timestamp, N)` of the `Counter: N` lines of `kubectl logs --timestamps`.
fn timestamped_counter(log: &str) -> Vec<(k8s_openapi::jiff::Timestamp, u64)> {
    log.lines()
        .filter_map(|l| {
            let (at, text) = l.split_once(' ')?;
            let value = counter_values(text).pop()?;
            Some((at.parse().ok()?, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_values_ignore_other_lines() {
        assert_eq!(
            super::counter_values("Counter: 0\nnoise\nCounter: 1\r\n Counter: x\n"),
            [0, 1]
        );
    }
}
