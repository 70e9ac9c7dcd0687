//! What every section does on the testbed: timed checkpoint requests, clean removal, the
//! daemons' host PIDs and the controller leader, and stopping a kubelet for raw CRI work.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use e2e::{CONTROLLER_LEASE, CONTROLLER_NAMESPACE, Testbed};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, delete::delete_and_finalize};

/// Sizes of one run: `small` keeps the bench from rotting in CI, `full` is the real figure.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Plan {
    pub size: &'static str,
    pub repetitions: usize,
    /// Touched memory of the checkpointed containers, MiB (section 1).
    pub memory_mib: Vec<u32>,
    /// Memory of the container whose checkpoints are packaged, moved and restored, and of the
    /// migrated pods.
    pub moved_mib: u32,
    pub concurrent: usize,
    /// Requests of the scale section, spread over `scale_nodes` × `scale_pods_per_node` pods.
    pub scale: usize,
    /// Nodes the scale section uses: `node1` … `node<scale_nodes>` (bench/run brings them up).
    pub scale_nodes: usize,
    pub scale_pods_per_node: usize,
    pub idle_seconds: u64,
    /// Bare pods on the drained node, each side of the drain section.
    pub drain_pods: usize,
}

impl Plan {
    pub fn small() -> Self {
        Self {
            size: "small",
            repetitions: 3,
            memory_mib: vec![16],
            moved_mib: 16,
            concurrent: 10,
            scale: 40,
            scale_nodes: 2,
            scale_pods_per_node: 5,
            idle_seconds: 3,
            drain_pods: 3,
        }
    }

    pub fn full() -> Self {
        Self {
            size: "full",
            repetitions: 5,
            memory_mib: vec![16, 256, 1024],
            moved_mib: 256,
            concurrent: 50,
            scale: 1000,
            scale_nodes: 4,
            scale_pods_per_node: 5,
            idle_seconds: 10,
            drain_pods: 10,
        }
    }
}

/// The testbed, a client, and the namespace this run works in.
pub struct Cluster {
    pub tb: Testbed,
    pub client: kube::Client,
    pub ns: String,
}

/// Generous: a 1 GiB checkpoint behind 49 others on two cores still finishes well inside.
const FINAL_WITHIN: Duration = Duration::from_secs(900);

impl Cluster {
    pub fn checkpoints(&self) -> Api<ContainerCheckpoint> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Creates a request for `container` of `pod` and waits until it is Completed; returns it
    /// and the time from the create call to the state being seen. A Failed request is an error.
    /// A watch rather than the e2e harness's half-second polling: here the time is the figure.
    pub async fn checkpoint(
        &self,
        name: &str,
        pod: &str,
        container: &str,
    ) -> anyhow::Result<(ContainerCheckpoint, Duration)> {
        self.checkpoint_of(e2e::checkpoint_request(name, pod, container))
            .await
    }

    /// [`Self::checkpoint`] of a request the caller built (one with `spec.registry`, say).
    pub async fn checkpoint_of(
        &self,
        request: ContainerCheckpoint,
    ) -> anyhow::Result<(ContainerCheckpoint, Duration)> {
        let name = request
            .metadata
            .name
            .clone()
            .context("a request has a name")?;
        let api = self.checkpoints();
        let started = Instant::now();
        api.create(&PostParams::default(), &request)
            .await
            .with_context(|| format!("creating ContainerCheckpoint {name}"))?;
        let cc = tokio::time::timeout(FINAL_WITHIN, await_condition(api, &name, is_final))
            .await
            .with_context(|| format!("{name} not final within {FINAL_WITHIN:?}"))??
            .with_context(|| format!("{name} vanished"))?;
        let took = started.elapsed();
        let status = cc.status.clone().unwrap_or_default();
        if status.state != Some(CheckpointState::Completed) {
            bail!("{name} failed: {}", status.message.unwrap_or_default());
        }
        Ok((cc, took))
    }

    /// The Content that records a finished request.
    pub async fn content(
        &self,
        cc: &ContainerCheckpoint,
    ) -> anyhow::Result<ContainerCheckpointContent> {
        let name = cc
            .status
            .as_ref()
            .and_then(|s| s.content_name.clone())
            .context("a Completed request names its Content")?;
        Ok(
            Api::<ContainerCheckpointContent>::namespaced(self.client.clone(), &self.ns)
                .get(&name)
                .await?,
        )
    }

    /// Deletes a request and waits until it is gone, so its archive and image are removed
    /// before the next measurement starts.
    pub async fn remove_checkpoint(&self, name: &str) -> anyhow::Result<()> {
        delete_and_finalize(self.checkpoints(), name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting ContainerCheckpoint {name}"))
    }

    pub async fn remove_pod(&self, name: &str) -> anyhow::Result<()> {
        let grace = DeleteParams {
            grace_period_seconds: Some(1),
            ..Default::default()
        };
        delete_and_finalize(self.pods(), name, &grace)
            .await
            .with_context(|| format!("deleting pod {name}"))
    }

    /// Host PID of noded on `node`: the process named `noded` in that node's kubelet cgroup
    /// root (the DaemonSet's pod there).
    pub fn noded_pid(&self, node: &str) -> anyhow::Result<u32> {
        let root = format!("/{CGROUP_ROOT}/{node}/");
        one_process("noded", |cgroup| cgroup.contains(&root))
            .with_context(|| format!("finding noded on {node}"))
    }

    /// Host PID of the leading controller: the process named `controller` in the cgroup of
    /// the pod that holds the leader Lease.
    pub async fn controller_pid(&self) -> anyhow::Result<u32> {
        let pod = self.controller_leader().await?;
        let uid = pod.metadata.uid.clone().context("a pod has a UID")?;
        one_process("controller", |cgroup| in_pod_cgroup(cgroup, &uid))
            .with_context(|| format!("finding the controller of pod {uid}"))
    }

    /// The controller pod holding the leader Lease.
    pub async fn controller_leader(&self) -> anyhow::Result<Pod> {
        let lease = Api::<Lease>::namespaced(self.client.clone(), CONTROLLER_NAMESPACE)
            .get(CONTROLLER_LEASE)
            .await
            .with_context(|| format!("reading Lease {CONTROLLER_NAMESPACE}/{CONTROLLER_LEASE}"))?;
        let holder = lease
            .spec
            .and_then(|s| s.holder_identity)
            .filter(|h| !h.is_empty())
            .context("no controller holds the leader Lease")?;
        Api::<Pod>::namespaced(self.client.clone(), CONTROLLER_NAMESPACE)
            .get(&holder)
            .await
            .with_context(|| format!("reading the leader's pod {holder}"))
    }

    /// Stops `node`'s kubelet (its pods keep running) until [`KubeletStopped::start`], or
    /// until the guard is dropped.
    pub fn stop_kubelet(&self, node: &str) -> anyhow::Result<KubeletStopped<'_>> {
        self.agents("stop", "kubelet", node)?;
        Ok(KubeletStopped {
            c: self,
            node: node.to_owned(),
            started: false,
        })
    }

    fn agents(&self, action: &str, agent: &str, node: &str) -> anyhow::Result<()> {
        let out = std::process::Command::new(self.tb.repo.join("testbed/agents"))
            .args([action, agent, node])
            .output()
            .context("running testbed/agents")?;
        if !out.status.success() {
            bail!(
                "testbed/agents {action} {agent} {node}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

/// A kubelet stopped by [`Cluster::stop_kubelet`].
pub struct KubeletStopped<'a> {
    c: &'a Cluster,
    node: String,
    started: bool,
}

impl KubeletStopped<'_> {
    /// Starts the kubelet again and waits until it answers its health check.
    pub async fn start(mut self) -> anyhow::Result<()> {
        self.started = true;
        self.c.agents("start", "kubelet", &self.node)?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let out = self.c.tb.node_exec(
                &self.node,
                &["curl", "-sf", "--max-time", "2", KUBELET_HEALTHZ],
            );
            if out.status.success() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the kubelet on {} is not healthy 60 s after its start",
                    self.node
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for KubeletStopped<'_> {
    fn drop(&mut self) {
        if !self.started {
            let _ = self.c.agents("start", "kubelet", &self.node);
        }
    }
}

/// Each node's kubelet has cgroup root `/ckpt-testbed/<node>` (testbed/files/kubernetes).
const CGROUP_ROOT: &str = "ckpt-testbed";
/// The kubelet's default healthz address, inside its node.
const KUBELET_HEALTHZ: &str = "http://127.0.0.1:10248/healthz";

/// Whether a `/proc/PID/cgroup` lies in the cgroup of pod `uid` (`pod<uid>` with cgroupfs,
/// `pod<uid with _>` with the systemd driver).
fn in_pod_cgroup(cgroup: &str, uid: &str) -> bool {
    cgroup.contains(&format!("/pod{uid}/"))
        || cgroup.contains(&format!("pod{}.slice", uid.replace('-', "_")))
}

/// The one process named `comm` whose `/proc/PID/cgroup` satisfies `cgroup`.
fn one_process(comm: &str, cgroup: impl Fn(&str) -> bool) -> anyhow::Result<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go while we look.
        let Ok(name) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            continue;
        };
        if name.trim_end() != comm {
            continue;
        }
        if std::fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| cgroup(&c)) {
            found.push(pid);
        }
    }
    match found[..] {
        [pid] => Ok(pid),
        [] => bail!("no process named {comm} there (is the testbed up?)"),
        _ => bail!("several processes named {comm} there: {found:?}"),
    }
}

pub fn is_final(cc: Option<&ContainerCheckpoint>) -> bool {
    cc.and_then(|c| c.status.as_ref()?.state)
        .is_some_and(CheckpointState::is_final)
}

/// The Prometheus text a daemon's `/metrics` at `url` answers with.
pub fn scrape(url: &str) -> anyhow::Result<String> {
    let out = std::process::Command::new("curl")
        .args(["-sSf", "--max-time", "5", url])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "scraping {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `_sum` (seconds) and `_count` of a histogram on a daemon's `/metrics`.
pub struct HistogramTotals {
    pub sum: f64,
    pub count: f64,
}

impl HistogramTotals {
    pub fn read(url: &str, histogram: &str) -> anyhow::Result<Self> {
        let metrics = scrape(url)?;
        let read = |suffix: &str| {
            crate::stats::sample_value(&metrics, &format!("{histogram}_{suffix}"))
                .with_context(|| format!("{url} has no {histogram}_{suffix}"))
        };
        Ok(Self {
            sum: read("sum")?,
            count: read("count")?,
        })
    }
}

pub fn secs_to_ms(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_cgroups_are_recognised_for_both_drivers() {
        let uid = "91a13b43-561b-4a5c-884c-fe9434d9bc78";
        let cgroupfs = format!("8:pids:/ckpt-testbed/node2/kubepods/burstable/pod{uid}/aef48f\n");
        assert!(in_pod_cgroup(&cgroupfs, uid));
        let systemd = "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod91a13b43_561b_4a5c_884c_fe9434d9bc78.slice/cri-containerd-aef.scope";
        assert!(in_pod_cgroup(systemd, uid));
        assert!(!in_pod_cgroup(&cgroupfs, "91a13b43"));
    }
}
