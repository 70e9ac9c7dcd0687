//! The Node object: registration and the status heartbeat. Pure builders over [`NodeFacts`]; the
//! loop at the bottom creates the Node and patches `nodes/status` every 10 s.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use tracing::{info, warn};

use crate::pod::Settings;
use crate::status::whole_seconds;

/// What the stand-in reports as the kubelet version: the API server's, marked as ours.
pub const KUBELET_VERSION: &str = "v1.20.2-standin";
/// The port the API server dials for logs (`daemonEndpoints.kubeletEndpoint`).
pub const KUBELET_PORT: u16 = 10250;
/// Pods a node accepts (the kubelet's default `--max-pods`).
pub const MAX_PODS: &str = "110";
const HEARTBEAT: Duration = Duration::from_secs(10);
const FIELD_MANAGER: &str = "kubelet-standin";

/// Facts about the node, read once at start.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeFacts {
    pub cpus: usize,
    /// `MemTotal` in KiB.
    pub memory_kib: u64,
    pub boot_id: String,
    pub machine_id: String,
    pub kernel_version: String,
    pub os_image: String,
    /// `<runtime_name>://<runtime_version>` from CRI Version.
    pub container_runtime_version: String,
    /// Go's name for the architecture (`amd64`, `arm64`).
    pub architecture: String,
}

/// Go's GOARCH for Rust's `std::env::consts::ARCH`.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `MemTotal` of /proc/meminfo, in KiB.
pub fn parse_meminfo(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// `PRETTY_NAME` of /etc/os-release.
pub fn parse_os_release(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_owned())
}

/// The labels the kubelet puts on its Node.
pub fn node_labels(node_name: &str, arch: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("kubernetes.io/hostname".to_owned(), node_name.to_owned()),
        ("kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("kubernetes.io/arch".to_owned(), arch.to_owned()),
        ("beta.kubernetes.io/os".to_owned(), "linux".to_owned()),
        ("beta.kubernetes.io/arch".to_owned(), arch.to_owned()),
    ])
}

/// The Node object registered at start (no taints: the scheduler may place pods at once).
pub fn node_object(settings: &Settings, facts: &NodeFacts) -> Node {
    Node {
        metadata: ObjectMeta {
            name: Some(settings.node_name.clone()),
            labels: Some(node_labels(&settings.node_name, &facts.architecture)),
            ..Default::default()
        },
        spec: None,
        status: None,
    }
}

/// The node status: resources, addresses, versions, the kubelet port and `Ready=True`.
/// `ready_since` keeps the condition's transition time across heartbeats.
pub fn node_status(
    settings: &Settings,
    facts: &NodeFacts,
    ready_since: &Time,
    now: &Time,
) -> NodeStatus {
    let resources = BTreeMap::from([
        ("cpu".to_owned(), Quantity(facts.cpus.to_string())),
        (
            "memory".to_owned(),
            Quantity(format!("{}Ki", facts.memory_kib)),
        ),
        ("pods".to_owned(), Quantity(MAX_PODS.to_owned())),
    ]);
    NodeStatus {
        capacity: Some(resources.clone()),
        allocatable: Some(resources),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_owned(),
                address: settings.node_ip.clone(),
            },
            NodeAddress {
                type_: "Hostname".to_owned(),
                address: settings.node_name.clone(),
            },
        ]),
        conditions: Some(vec![NodeCondition {
            type_: "Ready".to_owned(),
            status: "True".to_owned(),
            reason: Some("KubeletReady".to_owned()),
            message: Some(
                "testbed kubelet stand-in is posting ready status (not a real kubelet)".to_owned(),
            ),
            last_heartbeat_time: Some(now.clone()),
            last_transition_time: Some(ready_since.clone()),
        }]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(KUBELET_PORT),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: facts.architecture.clone(),
            boot_id: facts.boot_id.clone(),
            container_runtime_version: facts.container_runtime_version.clone(),
            kernel_version: facts.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_owned(),
            machine_id: facts.machine_id.clone(),
            operating_system: "linux".to_owned(),
            os_image: facts.os_image.clone(),
            swap: None,
            system_uuid: facts.machine_id.clone(),
        }),
        ..Default::default()
    }
}

/// The Ready condition's transition time to keep: the stored one if the node was already Ready.
pub fn ready_since(existing: Option<&Node>, now: &Time) -> Time {
    existing
        .and_then(|n| n.status.as_ref())
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready" && c.status == "True"))
        .and_then(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone())
}

// ------------------------------------------------------------------ shell

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Reads the node's facts from /proc and /etc (inside the node's namespaces).
pub fn read_facts(container_runtime_version: String) -> NodeFacts {
    NodeFacts {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_kib: std::fs::read_to_string("/proc/meminfo")
            .ok()
            .as_deref()
            .and_then(parse_meminfo)
            .unwrap_or(0),
        boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
        machine_id: read_trimmed("/etc/machine-id"),
        kernel_version: read_trimmed("/proc/sys/kernel/osrelease"),
        os_image: std::fs::read_to_string("/etc/os-release")
            .ok()
            .as_deref()
            .and_then(parse_os_release)
            .unwrap_or_else(|| "Linux".to_owned()),
        container_runtime_version,
        architecture: go_arch(std::env::consts::ARCH).to_owned(),
    }
}

/// Creates the Node (or updates its labels) and returns what the API holds.
async fn register(api: &Api<Node>, settings: &Settings, facts: &NodeFacts) -> anyhow::Result<Node> {
    let wanted = node_object(settings, facts);
    match api.create(&PostParams::default(), &wanted).await {
        Ok(node) => {
            info!(node = %settings.node_name, "registered node");
            Ok(node)
        }
        Err(kube::Error::Api(status)) if status.is_already_exists() => {
            let patch = serde_json::json!({ "metadata": { "labels": wanted.metadata.labels } });
            let node = api
                .patch(&settings.node_name, &patch_params(), &Patch::Merge(&patch))
                .await
                .context("updating the existing Node's labels")?;
            info!(node = %settings.node_name, "node already registered; labels updated");
            Ok(node)
        }
        Err(e) => Err(e).context("creating the Node"),
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_owned()),
        ..Default::default()
    }
}

async fn post_status(
    api: &Api<Node>,
    settings: &Settings,
    status: &NodeStatus,
) -> Result<(), kube::Error> {
    let patch = serde_json::json!({ "status": status });
    api.patch_status(&settings.node_name, &patch_params(), &Patch::Merge(&patch))
        .await
        .map(drop)
}

/// Registers the node, then heartbeats forever. API errors are retried, never fatal.
pub async fn run(client: kube::Client, settings: Settings, facts: NodeFacts) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(client);
    let mut since: Option<Time> = None;
    let mut registered = false;
    let mut ticker = tokio::time::interval(HEARTBEAT);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let now = whole_seconds(Timestamp::now());
        if !registered {
            match register(&api, &settings, &facts).await {
                Ok(node) => {
                    registered = true;
                    since.get_or_insert_with(|| ready_since(Some(&node), &now));
                }
                Err(e) => {
                    warn!(
                        error = format!("{e:#}"),
                        "node registration failed; retrying"
                    );
                    continue;
                }
            }
        }
        let ready = since.get_or_insert_with(|| now.clone()).clone();
        let status = node_status(&settings, &facts, &ready, &now);
        match post_status(&api, &settings, &status).await {
            Ok(()) => tracing::debug!(node = %settings.node_name, "heartbeat"),
            Err(kube::Error::Api(s)) if s.is_not_found() => {
                warn!(node = %settings.node_name, "Node object is gone; registering again");
                registered = false;
                since = None;
            }
            Err(e) => warn!(error = %e, "node status heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            node_name: "node1".into(),
            node_ip: "10.77.0.11".into(),
            cgroup_root: "/ckpt-testbed/node1".into(),
            pod_log_dir: "/var/log/pods".into(),
            runtime_name: "containerd".into(),
        }
    }

    fn facts() -> NodeFacts {
        NodeFacts {
            cpus: 2,
            memory_kib: 8_000_000,
            container_runtime_version: "containerd://2.1.9".into(),
            architecture: "amd64".into(),
            os_image: "Debian GNU/Linux forky/sid".into(),
            ..Default::default()
        }
    }

    #[test]
    fn meminfo_and_os_release() {
        let meminfo = "MemTotal:        8141600 kB\nMemFree:          123 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some(8_141_600));
        assert_eq!(parse_meminfo("nothing"), None);
        let os = "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux forky/sid\"\n";
        assert_eq!(
            parse_os_release(os).as_deref(),
            Some("Debian GNU/Linux forky/sid")
        );
    }

    #[test]
    fn arch_names() {
        assert_eq!(go_arch("x86_64"), "amd64");
        assert_eq!(go_arch("aarch64"), "arm64");
    }

    #[test]
    fn node_has_labels_and_no_taints() {
        let node = node_object(&settings(), &facts());
        let labels = node.metadata.labels.unwrap();
        assert_eq!(labels["kubernetes.io/hostname"], "node1");
        assert_eq!(labels["kubernetes.io/os"], "linux");
        assert_eq!(labels["kubernetes.io/arch"], "amd64");
        assert!(node.spec.is_none());
    }

    #[test]
    fn status_is_ready_with_resources_and_port() {
        let now = Time(Timestamp::from_second(1000).unwrap());
        let since = Time(Timestamp::from_second(10).unwrap());
        let status = node_status(&settings(), &facts(), &since, &now);
        let cap = status.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "8000000Ki");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(status.allocatable, status.capacity);
        let ready = &status.conditions.as_ref().unwrap()[0];
        assert_eq!(
            (ready.type_.as_str(), ready.status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(ready.last_heartbeat_time.as_ref(), Some(&now));
        assert_eq!(ready.last_transition_time.as_ref(), Some(&since));
        let addresses = status.addresses.as_ref().unwrap();
        assert_eq!(addresses[0].type_, "InternalIP");
        assert_eq!(addresses[0].address, "10.77.0.11");
        assert_eq!(
            status
                .daemon_endpoints
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let info = status.node_info.unwrap();
        assert_eq!(info.container_runtime_version, "containerd://2.1.9");
        assert_eq!(info.kubelet_version, "v1.20.2-standin");
    }

    #[test]
    fn ready_since_keeps_stored_transition() {
        let now = Time(Timestamp::from_second(1000).unwrap());
        let since = Time(Timestamp::from_second(10).unwrap());
        let node = Node {
            status: Some(node_status(&settings(), &facts(), &since, &now)),
            ..Default::default()
        };
        assert_eq!(ready_since(Some(&node), &now), since);
        assert_eq!(ready_since(None, &now), now);
    }
}
