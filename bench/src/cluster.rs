//! What every section does on the testbed: timed checkpoint requests, clean removal, pods
//! holding memory, and the daemons' PIDs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use e2e::Testbed;
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
    /// Memory of the container whose checkpoints are packaged, moved and restored.
    pub moved_mib: u32,
    pub concurrent: usize,
    pub scale: usize,
    pub idle_seconds: u64,
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
            idle_seconds: 3,
        }
    }

    pub fn full() -> Self {
        Self {
            size: "full",
            repetitions: 5,
            memory_mib: vec![16, 256, 1024],
            moved_mib: 256,
            concurrent: 50,
            scale: 500,
            idle_seconds: 10,
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
        let api = self.checkpoints();
        let started = Instant::now();
        api.create(
            &PostParams::default(),
            &e2e::checkpoint_request(name, pod, container),
        )
        .await
        .with_context(|| format!("creating ContainerCheckpoint {name}"))?;
        let cc = tokio::time::timeout(FINAL_WITHIN, await_condition(api, name, is_final))
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

    /// Host PID of `agent` on `node` (as `testbed/agents` records it).
    pub fn agent_pid(&self, node: &str, agent: &str) -> anyhow::Result<u32> {
        read_pid(
            self.tb
                .state
                .join("nodes")
                .join(node)
                .join(format!("{agent}.pid")),
        )
    }

    pub fn controller_pid(&self) -> anyhow::Result<u32> {
        read_pid(self.tb.state.join("pids/controller.pid"))
    }
}

fn read_pid(path: PathBuf) -> anyhow::Result<u32> {
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is the testbed up?)", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{} holds no PID", path.display()))
}

pub fn is_final(cc: Option<&ContainerCheckpoint>) -> bool {
    cc.and_then(|c| c.status.as_ref()?.state)
        .is_some_and(CheckpointState::is_final)
}

pub fn secs_to_ms(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(|d| d.as_secs_f64() * 1e3).collect()
}
