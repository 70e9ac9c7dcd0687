//! Bench section 1 — Checkpoint overhead: a ContainerCheckpoint from creation to Completed against
//! the raw CRI `CheckpointContainer` call on the same container, per amount of touched memory.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use checkpointing::cri::Runtime as _;

use crate::cluster::{Cluster, Plan, secs_to_ms};
use crate::report::{Better, Row, Target};
use crate::stats::Summary;

const NODE: &str = "node1";
const RAW_TIMEOUT: Duration = Duration::from_secs(600);

/// The rows, and the last raw archive (of the largest container: sizes ascend), for section 2.
pub struct Figures {
    pub rows: Vec<Row>,
    pub archive: PathBuf,
}

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Figures> {
    let cri = c.tb.cri(NODE).await;
    let location = "/var/lib/kubelet/checkpoints/bench-raw.tar";
    let archive = c.tb.node_path(NODE, location);
    let mut rows = Vec::new();
    for &mib in &plan.memory_mib {
        let pod = format!("hog-{mib}");
        e2e::memory_hog(&c.tb, &c.client, &c.ns, &pod, NODE, mib).await;
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        let mut container_id = None;
        for rep in 0..plan.repetitions {
            // Alternate who goes first, so neither always meets a cold or a warm page cache.
            for ours_turn in [rep % 2 == 0, rep % 2 == 1] {
                if ours_turn {
                    let name = format!("{pod}-{rep}");
                    let (cc, took) = c.checkpoint(&name, &pod, &pod).await?;
                    container_id = cc.status.and_then(|s| s.container_id);
                    ours.push(took);
                    c.remove_checkpoint(&name).await?;
                } else {
                    let id = container_id
                        .as_deref()
                        .context("the first request reports the container's ID")?;
                    match std::fs::remove_file(&archive) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)?,
                        _ => {}
                    }
                    let started = Instant::now();
                    cri.checkpoint_container(id, Path::new(location), RAW_TIMEOUT)
                        .await
                        .with_context(|| format!("raw CheckpointContainer of {pod}"))?;
                    raw.push(started.elapsed());
                }
            }
        }
        c.remove_pod(&pod).await?;
        rows.push(
            Row::versus(
                "1 checkpoint",
                format!("{mib} MiB touched: request → Completed"),
                "ms",
                Better::Lower,
                Summary::of(&secs_to_ms(&ours)).context("no measurement")?,
                "raw CRI CheckpointContainer",
                Summary::of(&secs_to_ms(&raw)).context("no measurement")?,
            )
            // The target: at most 10 % and 50 ms above the runtime's own call.
            .with_target(Target::Relative {
                factor: 1.1,
                plus: 50.0,
            }),
        );
    }
    Ok(Figures { rows, archive })
}
