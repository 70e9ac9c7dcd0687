//! The raw CRI side of sections 4 and 5: a checkpoint image restored in a pod sandbox of its
//! own by the CRI calls a kubelet makes (RunPodSandbox, [PullImage,] CreateContainer,
//! StartContainer), with requests built here by hand. Nothing of Kubernetes is around them: no
//! scheduling, no volumes, no status updates.
//!
//! Both runtimes restore a checkpoint only when the new container has every bind mount the
//! checkpointed one had (CRI-O refuses the CreateContainer, runc/CRIU the restore), so the
//! mounts come from the archive's `spec.dump`: an empty file or directory of our own for each.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use checkpointing::cri::{CriClient, CriError, api};
use serde::Deserialize;

use e2e::PULL_USER;

/// RunPodSandbox sets up the network; PullImage fetches a checkpoint image node to node.
const SLOW_CALL: Duration = Duration::from_secs(240);
/// CreateContainer and StartContainer restore from a checkpoint image.
const RESTORE_CALL: Duration = Duration::from_secs(180);
const CALL: Duration = Duration::from_secs(30);

/// Marks what the bench made in a runtime.
pub const BENCH_LABEL: &str = "bench.checkpointing.zacchaeuschok.github.io/raw";

/// Where in a node one raw restore keeps its files (logs, mount sources).
pub fn work_dir(name: &str) -> String {
    format!("/var/lib/bench-raw/{name}")
}

/// Identity of one raw pod sandbox.
#[derive(Clone, Debug, PartialEq)]
pub struct Sandbox {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// cgroupfs parent, under the node's kubelet cgroup root but outside `kubepods`, which
    /// the kubelet owns.
    pub cgroup_parent: String,
}

impl Sandbox {
    pub fn new(node: &str, namespace: &str, name: &str) -> Self {
        let uid = format!("bench-{namespace}-{name}");
        Self {
            cgroup_parent: format!("/ckpt-testbed/{node}/bench-raw/pod{uid}"),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            uid,
        }
    }
}

/// The kubelet's defaults for a pod without host namespaces: network and IPC shared in the
/// pod, a PID namespace per container.
fn namespace_options() -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Pod as i32,
        pid: api::NamespaceMode::Container as i32,
        ipc: api::NamespaceMode::Pod as i32,
        target_id: String::new(),
    }
}

/// RunPodSandbox's config: metadata, hostname, a log directory of our own, the namespaces a
/// kubelet asks for, and the cgroup parent.
pub fn sandbox_config(sandbox: &Sandbox) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: sandbox.name.clone(),
            uid: sandbox.uid.clone(),
            namespace: sandbox.namespace.clone(),
            attempt: 0,
        }),
        hostname: sandbox.name.clone(),
        log_directory: format!("{}/logs", work_dir(&sandbox.name)),
        dns_config: None,
        labels: HashMap::from([(BENCH_LABEL.to_owned(), sandbox.name.clone())]),
        annotations: HashMap::new(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: sandbox.cgroup_parent.clone(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
            sysctls: HashMap::new(),
        }),
    }
}

/// CreateContainer's config: the checkpoint image as the image (what makes the runtime
/// restore), a log file in the sandbox's log directory, and `mounts`.
pub fn container_config(
    container: &str,
    image: &str,
    mounts: Vec<api::Mount>,
) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.to_owned(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.to_owned(),
            user_specified_image: image.to_owned(),
            ..Default::default()
        }),
        log_path: format!("{container}.log"),
        mounts,
        labels: HashMap::from([(BENCH_LABEL.to_owned(), container.to_owned())]),
        linux: Some(api::LinuxContainerConfig {
            resources: None,
            security_context: Some(api::LinuxContainerSecurityContext {
                namespace_options: Some(namespace_options()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

// ---------------------------------------------------------------- mounts from spec.dump

/// Destinations the runtime mounts on its own (CRI-O's restore ignores exactly these; the
/// others containerd also sets up itself).
const RUNTIME_MOUNTS: [&str; 13] = [
    "/proc",
    "/dev",
    "/dev/pts",
    "/dev/mqueue",
    "/sys",
    "/sys/fs/cgroup",
    "/dev/shm",
    "/etc/resolv.conf",
    "/etc/hostname",
    "/etc/passwd",
    "/etc/group",
    "/run/secrets",
    "/run/.containerenv",
];

#[derive(Debug, Deserialize)]
struct Spec {
    #[serde(default)]
    mounts: Vec<SpecMount>,
}

#[derive(Debug, Deserialize)]
struct SpecMount {
    destination: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    options: Vec<String>,
}

/// A bind mount of the checkpointed container that the restored one must have too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub destination: String,
    /// Where it came from in the checkpointed container's node.
    pub source: String,
    pub readonly: bool,
}

/// The bind mounts in an archive's `spec.dump` (OCI runtime spec) the caller must provide.
pub fn bind_mounts(spec_dump: &[u8]) -> anyhow::Result<Vec<BindMount>> {
    let spec: Spec = serde_json::from_slice(spec_dump).context("parsing spec.dump")?;
    Ok(spec
        .mounts
        .into_iter()
        .filter(|m| m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind"))
        .filter(|m| !RUNTIME_MOUNTS.contains(&m.destination.as_str()))
        .map(|m| BindMount {
            readonly: m.options.iter().any(|o| o == "ro"),
            destination: m.destination,
            source: m.source,
        })
        .collect())
}

/// Contents of the top-level member `name` of a tar archive (`./name` also matches).
pub fn archive_member(archive: &Path, name: &str) -> anyhow::Result<Vec<u8>> {
    let file =
        std::fs::File::open(archive).with_context(|| format!("opening {}", archive.display()))?;
    let mut tar = tar::Archive::new(file);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        if path.strip_prefix(".").unwrap_or(&path) == Path::new(name) {
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes)?;
            return Ok(bytes);
        }
    }
    anyhow::bail!("{} has no {name}", archive.display())
}

// ---------------------------------------------------------------- CRI calls

/// The node's runtime, called as a kubelet would.
pub struct Runtime {
    client: CriClient,
}

impl Runtime {
    pub fn new(client: CriClient) -> Self {
        Self { client }
    }

    pub async fn run_sandbox(&self, config: &api::PodSandboxConfig) -> Result<String, CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        };
        Ok(self
            .client
            .call("RunPodSandbox", SLOW_CALL, message, |r| {
                rt.run_pod_sandbox(r)
            })
            .await?
            .pod_sandbox_id)
    }

    /// PullImage with the sandbox config and the registry password, as the kubelet sends
    /// them with what our credential provider gave it; returns the image ref.
    pub async fn pull_image(
        &self,
        image: &str,
        password: &str,
        sandbox: &api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut is = self.client.image_service();
        let message = api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                user_specified_image: image.to_owned(),
                ..Default::default()
            }),
            auth: Some(api::AuthConfig {
                username: PULL_USER.to_owned(),
                password: password.to_owned(),
                ..Default::default()
            }),
            sandbox_config: Some(sandbox.clone()),
        };
        Ok(self
            .client
            .call("PullImage", SLOW_CALL, message, |r| is.pull_image(r))
            .await?
            .image_ref)
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox: &api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox.clone()),
        };
        Ok(self
            .client
            .call("CreateContainer", RESTORE_CALL, message, |r| {
                rt.create_container(r)
            })
            .await?
            .container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.client
            .call("StartContainer", RESTORE_CALL, message, |r| {
                rt.start_container(r)
            })
            .await
            .map(drop)
    }

    /// The container's CRI state (`api::ContainerState`) and the runtime's reason for it.
    pub async fn container_state(&self, id: &str) -> Result<(i32, String), CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose: false,
        };
        let status = self
            .client
            .call("ContainerStatus", CALL, message, |r| rt.container_status(r))
            .await?
            .status
            .unwrap_or_default();
        Ok((
            status.state,
            format!("{} {}", status.reason, status.message),
        ))
    }

    /// Removes the sandbox as a kubelet tears a pod down, with no grace period: every
    /// container in it is stopped (SIGKILL: the restored shell, PID 1, ignores SIGTERM, and
    /// CRI-O's StopPodSandbox would wait out its deadline for it), then the sandbox is
    /// stopped and removed. Gone already is fine.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.client.runtime_service();
        let list = api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                pod_sandbox_id: id.to_owned(),
                ..Default::default()
            }),
        };
        let containers = self
            .client
            .call("ListContainers", CALL, list, |r| rt.list_containers(r))
            .await?
            .containers;
        for container in containers {
            let stop = api::StopContainerRequest {
                container_id: container.id,
                timeout: 0,
            };
            ignore_not_found(
                self.client
                    .call("StopContainer", CALL, stop, |r| rt.stop_container(r))
                    .await,
            )?;
        }
        let stop = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        ignore_not_found(
            self.client
                .call("StopPodSandbox", CALL, stop, |r| rt.stop_pod_sandbox(r))
                .await,
        )?;
        let remove = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        ignore_not_found(
            self.client
                .call("RemovePodSandbox", CALL, remove, |r| {
                    rt.remove_pod_sandbox(r)
                })
                .await,
        )
    }
}

fn ignore_not_found<T>(result: Result<T, CriError>) -> Result<(), CriError> {
    match result {
        Ok(_) | Err(CriError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_mounts_are_what_the_runtime_does_not_mount_itself() {
        let spec = br#"{"ociVersion":"1.2.0","mounts":[
            {"destination":"/proc","type":"proc","source":"proc"},
            {"destination":"/dev/shm","type":"bind","source":"/run/x/shm","options":["rbind","ro"]},
            {"destination":"/etc/hosts","type":"bind","source":"/var/lib/kubelet/pods/u/etc-hosts","options":["rbind","rprivate","rw"]},
            {"destination":"/dev/termination-log","source":"/var/lib/kubelet/pods/u/containers/c/1","options":["rbind","rw"]},
            {"destination":"/var/run/secrets/kubernetes.io/serviceaccount","type":"bind","source":"/var/lib/kubelet/pods/u/volumes/sa","options":["rbind","ro"]},
            {"destination":"/etc/hostname","type":"bind","source":"/run/x/hostname","options":["rbind"]}
        ]}"#;
        let mounts = bind_mounts(spec).unwrap();
        let destinations: Vec<&str> = mounts.iter().map(|m| m.destination.as_str()).collect();
        assert_eq!(
            destinations,
            [
                "/etc/hosts",
                "/dev/termination-log",
                "/var/run/secrets/kubernetes.io/serviceaccount"
            ]
        );
        assert!(!mounts[0].readonly && mounts[2].readonly);
        assert_eq!(mounts[0].source, "/var/lib/kubelet/pods/u/etc-hosts");
        assert!(bind_mounts(b"{}").unwrap().is_empty());
        assert!(bind_mounts(b"not json").is_err());
    }

    #[test]
    fn requests_carry_identity_namespaces_and_the_checkpoint_image() {
        let sandbox = Sandbox::new("node2", "ns", "fresh-0");
        assert_eq!(sandbox.uid, "bench-ns-fresh-0");
        assert_eq!(
            sandbox.cgroup_parent,
            "/ckpt-testbed/node2/bench-raw/podbench-ns-fresh-0"
        );
        let config = sandbox_config(&sandbox);
        let meta = config.metadata.clone().unwrap();
        assert_eq!(
            (meta.name.as_str(), meta.namespace.as_str()),
            ("fresh-0", "ns")
        );
        assert_eq!(config.log_directory, "/var/lib/bench-raw/fresh-0/logs");
        let linux = config.linux.unwrap();
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.pid, api::NamespaceMode::Container as i32);
        assert_eq!(ns.network, api::NamespaceMode::Pod as i32);

        let mount = api::Mount {
            container_path: "/etc/hosts".into(),
            host_path: "/var/lib/bench-raw/fresh-0/mounts/0".into(),
            ..Default::default()
        };
        let c = container_config("seed", "localhost:5050/ns/x@sha256:00", vec![mount]);
        assert_eq!(c.image.unwrap().image, "localhost:5050/ns/x@sha256:00");
        assert_eq!(c.log_path, "seed.log");
        assert_eq!(c.mounts.len(), 1);
        assert_eq!(c.metadata.unwrap().name, "seed");
    }

    #[test]
    fn archive_members_are_found_with_or_without_dot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in [
            ("config.dump", &b"{}"[..]),
            ("./spec.dump", b"{\"mounts\":[]}"),
        ] {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            builder.append_data(&mut header, name, data).unwrap();
        }
        std::fs::write(&path, builder.into_inner().unwrap()).unwrap();
        assert_eq!(
            archive_member(&path, "spec.dump").unwrap(),
            b"{\"mounts\":[]}"
        );
        assert_eq!(archive_member(&path, "config.dump").unwrap(), b"{}");
        assert!(archive_member(&path, "status.dump").is_err());
    }
}
