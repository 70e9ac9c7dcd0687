//! Harness for tests that run against the testbed brought up by `testbed/up`: kube clients
//! from its kubeconfig, kubectl, commands inside a node, CRI clients per node, the product's
//! pods and processes, polling.
//!
//! Besides the seed's counter, real programs ([`kv_server_pod`], [`interpreter_pod`]) from
//! images of unmodified Debian packages.
//!
//! Every test works in a namespace of its own (see [`TestNamespace`]). The testbed's nodes all
//! run one runtime ([`Testbed::runtime`]); `testbed/test` runs the suite once per runtime.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use checkpointing::crd::{CheckpointState, ContainerCheckpoint};
use checkpointing::cri::{CriClient, CriConfig};
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

mod apps;
pub mod audit;
mod counter;
pub mod drain;
mod migration;
mod plugin;
mod product;
mod pull;
mod registry;

pub use apps::{
    INTERPRETER_IMAGE, KV_CLIENTS, KV_IMAGE, KV_PORT, Reply, client_replies, interpreter_pod,
    kv_client_logs, kv_clients_answered_after, kv_clients_pod, kv_preload, kv_server_pod,
    kv_service, redis_cli, unix_now,
};
pub use counter::{
    assert_container_resumes, assert_counter_resumes, assert_file_resumes, counter_at_checkpoint,
    counter_log, counter_pod, counter_values, value_at_checkpoint, volume_pod,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
pub use migration::{
    app_pods, assert_moved, counter_deployment, counter_template, migrate, migration_outcome,
    migration_request, node_of, running_pod, two_counter_pod, values_at_checkpoint, wait_migration,
};
pub use plugin::{plugin, stderr, stdout};
pub use product::{
    CONTROLLER_DEPLOYMENT, CONTROLLER_LEASE, CONTROLLER_NAMESPACE, CONTROLLER_SELECTOR,
    ControllerDown, NODED_NAMESPACE, NODED_SELECTOR, NodedDown, kill_process, pod_process, sample,
};
pub use pull::{PULL_USER, PullCredential, pull_credential, registry_token};
pub use registry::{RegistryUser, TokenRegistry, push_secret};

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
        kube::Client::try_from(self.config().await).expect("building a kube client")
    }

    /// A client acting as `user` in `groups`, with `extra` user information (impersonated by
    /// the admin): it has only that user's rights.
    pub async fn client_as(
        &self,
        user: &str,
        groups: &[&str],
        extra: &[(&str, &str)],
    ) -> kube::Client {
        let mut config = self.config().await;
        config.auth_info.impersonate = Some(user.to_owned());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| (*g).to_owned()).collect());
        }
        if !extra.is_empty() {
            config.auth_info.impersonate_user_extra = Some(
                extra
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                    .collect(),
            );
        }
        kube::Client::try_from(config).expect("building a kube client")
    }

    /// A client with noded's identity as the API server sees it: its ServiceAccount, bound to
    /// `node` (what a node daemon taken over could do).
    pub async fn as_noded(&self, node: &str) -> kube::Client {
        self.as_account(
            ("kube-system", "checkpoint-noded"),
            &[("authentication.kubernetes.io/node-name", node)],
        )
        .await
    }

    /// A client with the controller's identity: its ServiceAccount (what a controller taken
    /// over could do).
    pub async fn as_controller(&self) -> kube::Client {
        self.as_account((CONTROLLER_NAMESPACE, "checkpoint-controller"), &[])
            .await
    }

    /// A client acting as ServiceAccount `namespace/name`, with the groups every token of it
    /// carries.
    async fn as_account(
        &self,
        (namespace, name): (&str, &str),
        extra: &[(&str, &str)],
    ) -> kube::Client {
        let user = format!("system:serviceaccount:{namespace}:{name}");
        let own = format!("system:serviceaccounts:{namespace}");
        let groups = [
            "system:serviceaccounts",
            own.as_str(),
            "system:authenticated",
        ];
        self.client_as(&user, &groups, extra).await
    }

    async fn config(&self) -> kube::Config {
        let kubeconfig = Kubeconfig::read_from(self.state.join("kubeconfig"))
            .expect("reading the testbed kubeconfig");
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .expect("loading the testbed kubeconfig")
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

    /// `node`'s InternalIP, as its Node reports it (where its noded's peer and admin ports
    /// listen).
    pub fn node_ip(&self, node: &str) -> String {
        let jsonpath = "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}";
        let ip = self.kubectl_ok(&["get", "node", node, "-o", jsonpath]);
        assert!(!ip.trim().is_empty(), "node {node} reports no InternalIP");
        ip.trim().to_owned()
    }

    /// Host path of `path` inside `node`'s filesystem.
    pub fn node_path(&self, node: &str, path: &str) -> PathBuf {
        self.state
            .join("nodes")
            .join(node)
            .join("root")
            .join(path.trim_start_matches('/'))
    }

    /// `node`'s network namespace: that of its init process, whose host PID `testbed/up`
    /// records in the node's directory.
    pub fn node_netns(&self, node: &str) -> PathBuf {
        let pidfile = self.state.join("nodes").join(node).join("pid");
        let pid = std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("reading {}: {e}", pidfile.display()));
        PathBuf::from(format!("/proc/{}/ns/net", pid.trim()))
    }

    /// Whether `node`'s noded holds an image of the Content with UID `uid` (made there, or
    /// fetched from a peer for its runtime).
    pub fn node_holds_image(&self, node: &str, uid: &str) -> bool {
        let layout = self.node_path(node, "/var/lib/kubelet/checkpoints/oci");
        checkpointing::oci::ImageLayout::open(layout)
            .unwrap()
            .resolve(uid)
            .unwrap()
            .is_some()
    }

    /// The testbed's nodes (TESTBED_NODES when it came up).
    pub fn nodes(&self) -> Vec<String> {
        let file = self.state.join("nodes.list");
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    }

    /// `node`'s container runtime: `crio` or `containerd` (a mixed testbed runs both).
    pub fn runtime(&self, node: &str) -> String {
        let file = self.state.join("nodes").join(node).join("runtime");
        std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
            .trim()
            .to_owned()
    }

    /// `node`'s runtime by its CRI name (`cri-o`, `containerd`), as noded publishes it.
    pub fn cri_name(&self, node: &str) -> &'static str {
        match self.runtime(node).as_str() {
            "crio" => "cri-o",
            _ => "containerd",
        }
    }

    /// A CRI client for `node`'s runtime, through the socket the testbed exposes on the host.
    pub async fn cri(&self, node: &str) -> CriClient {
        let socket = self.state.join("nodes").join(node).join("cri.sock");
        CriClient::connect(&CriConfig::new(format!("unix://{}", socket.display())))
            .await
            .unwrap_or_else(|e| panic!("connecting to {node}'s CRI socket: {e}"))
    }
}

/// Role `name` in `ns` with `rules`, bound to user `user`.
pub async fn grant(client: &kube::Client, ns: &str, name: &str, user: &str, rules: Value) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": name},
        "rules": rules,
    }))
    .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": name},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))
    .unwrap();
    let params = PatchParams::apply("e2e").force();
    Api::<Role>::namespaced(client.clone(), ns)
        .patch(name, &params, &Patch::Apply(&role))
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .patch(name, &params, &Patch::Apply(&binding))
        .await
        .unwrap();
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

/// The note of the first Event of `reason` regarding pod `namespace/pod`, waiting up to 30 s
/// for it (they are published after the state they tell of).
pub async fn pod_event(client: &kube::Client, namespace: &str, pod: &str, reason: &str) -> String {
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), namespace);
    let about = kube::api::ListParams::default().fields(&format!("regarding.name={pod}"));
    eventually(
        &format!("a {reason} Event on pod {namespace}/{pod}"),
        Duration::from_secs(30),
        || async {
            let listed = events.list(&about).await.ok()?;
            listed
                .items
                .into_iter()
                .find(|e| {
                    e.reason.as_deref() == Some(reason)
                        && e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("Pod")
                })
                .map(|e| e.note.unwrap_or_default())
        },
    )
    .await
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
        let client = testbed.client().await;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        // ServiceAccount admission refuses pods until the controller-manager has made the
        // namespace's `default` ServiceAccount.
        let accounts: Api<ServiceAccount> = Api::namespaced(client, &name);
        eventually(
            &format!("ServiceAccount {name}/default"),
            Duration::from_secs(30),
            || async { accounts.get_opt("default").await.ok().flatten() },
        )
        .await;
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

/// Pod `name` (one container, also `name`) on `node`, running busybox `script`.
pub fn busybox_pod(name: &str, node: &str, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"kubernetes.io/hostname": node}, "containers": [{
            "name": name, "image": "busybox", "command": ["/bin/sh", "-c", script],
        }]},
    }))
    .unwrap()
}

/// Waits until pod `ns/name` has logged `text`.
pub async fn wait_logged(tb: &Testbed, ns: &str, name: &str, text: &str) {
    eventually(
        &format!("{ns}/{name} to log {text:?}"),
        Duration::from_secs(60),
        || async {
            let out = tb.kubectl(&["logs", "-n", ns, name]);
            String::from_utf8_lossy(&out.stdout)
                .contains(text)
                .then_some(())
        },
    )
    .await;
}

/// Runs pod `name` (one container, also `name`) on `node`, holding `megabytes` of random
/// memory, so its checkpoint takes seconds; returns once the memory is filled.
pub async fn memory_hog(
    tb: &Testbed,
    client: &kube::Client,
    ns: &str,
    name: &str,
    node: &str,
    megabytes: u32,
) {
    Memory::Random
        .hog(tb, client, ns, name, node, megabytes)
        .await;
}

/// What a hog's memory holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memory {
    /// Random bytes: nothing to compress.
    Random,
    /// Text, as much of an application's memory is: a hex dump of random bytes, which zstd
    /// compresses to about half.
    Text,
}

impl Memory {
    /// The shell command writing `megabytes` of this memory to its output.
    fn fill(self, megabytes: u32) -> String {
        match self {
            Self::Random => format!("dd if=/dev/urandom bs=1M count={megabytes} 2>/dev/null"),
            // od writes about 3 characters a byte.
            Self::Text => format!(
                "dd if=/dev/urandom bs=1M count={} 2>/dev/null | od -An -tx1 -v | head -c {}",
                megabytes / 3 + 1,
                u64::from(megabytes) << 20
            ),
        }
    }

    /// Runs [`memory_hog`]'s pod with this memory.
    pub async fn hog(
        self,
        tb: &Testbed,
        client: &kube::Client,
        ns: &str,
        name: &str,
        node: &str,
        megabytes: u32,
    ) {
        hog(tb, client, ns, name, node, &self.fill(megabytes)).await;
    }
}

/// Runs pod `name` holding the output of `fill` in a shell variable.
async fn hog(tb: &Testbed, client: &kube::Client, ns: &str, name: &str, node: &str, fill: &str) {
    let script = format!("x=$({fill}); echo ready; while true; do sleep 1; done");
    run_pod(client, ns, busybox_pod(name, node, &script)).await;
    wait_logged(tb, ns, name, "ready").await;
}
