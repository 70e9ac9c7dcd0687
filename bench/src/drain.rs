//! Bench section 9 — Drain: `kubectl drain` of node1 holding N bare counter pods that a
//! CheckpointPolicy protects (`onEviction: Migrate`), from start to kubectl's exit: the eviction
//! webhook answers each eviction by starting a PodMigration to another node, kubectl tries again
//! every 5 s, and the drain ends once every source is gone, its copy running elsewhere. Against
//! the same drain of N identical pods that no policy selects: plain evictions, which delete
//! them (nothing recreates a bare pod). The two alternate in each repetition, and the node is
//! uncordoned after each drain.

use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use checkpointing::crd::MigrationPhase;
use e2e::drain::{Cordoned, NODE, PROTECT_LABEL, PROTECTED, eviction_migrations, protect};
use k8s_openapi::api::core::v1::Pod;

use crate::cluster::{Cluster, Plan, secs_to_ms};
use crate::migration::{remove_migration, wait_final};
use crate::report::{Better, Row};
use crate::stats::Summary;

/// kubectl's `--timeout`: ten pods checkpointed, moved and restored, on two shared cores.
const TIMEOUT: &str = "600s";
/// The alternative's value of [`PROTECT_LABEL`]: one the policy does not select, so that the
/// same `--pod-selector` form picks them.
const UNPROTECTED: &str = "no";

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    protect(&c.client, &c.ns).await;
    let n = plan.drain_pods;
    let (mut ours, mut plain, mut moved) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..plan.repetitions {
        let pods = place(c, &format!("protected-{rep}"), PROTECTED, n).await;
        ours.push(drain(c, PROTECTED)?);
        let landed = futures::future::try_join_all(pods.iter().map(|p| settle(c, p))).await?;
        moved.push(landed.into_iter().filter(|&m| m).count() as f64);

        let pods = place(c, &format!("plain-{rep}"), UNPROTECTED, n).await;
        plain.push(drain(c, UNPROTECTED)?);
        // Else the alternative measured a migration too.
        for pod in &pods {
            ensure!(
                eviction_migrations(&c.client, &c.ns, pod).await.is_empty(),
                "the drain migrated {:?}, which no policy selects",
                pod.metadata.name
            );
        }
    }
    Ok(vec![
        Row::versus(
            "9 drain",
            format!("{NODE} with {n} protected bare pods: kubectl drain start → exit"),
            "ms",
            Better::Lower,
            Summary::of(&secs_to_ms(&ours)).context("no measurement")?,
            "the same drain, plain evictions (the pods are deleted)",
            Summary::of(&secs_to_ms(&plain)).context("no measurement")?,
        ),
        Row::alone(
            "9 drain",
            format!("{n} protected pods: moved (PodMigration Succeeded, running on another node)"),
            "count",
            Summary::of(&moved).context("no measurement")?,
        ),
    ])
}

/// Runs `n` bare counter pods `<prefix>-<i>` on [`NODE`], labelled [`PROTECT_LABEL`]`=<value>`;
/// returns them running (their UIDs name their migrations).
async fn place(c: &Cluster, prefix: &str, value: &str, n: usize) -> Vec<Pod> {
    futures::future::join_all((0..n).map(|i| {
        let mut pod = e2e::counter_pod(&format!("{prefix}-{i}"), NODE, 1);
        pod.metadata.labels = Some([(PROTECT_LABEL.to_owned(), value.to_owned())].into());
        // The counter's shell is PID 1 and ignores SIGTERM, so with the default 30 s grace a
        // plain eviction would mostly time the grace; 1 s is what the controller gives a
        // migrated source.
        if let Some(spec) = pod.spec.as_mut() {
            spec.termination_grace_period_seconds = Some(1);
        }
        e2e::run_pod(&c.client, &c.ns, pod)
    }))
    .await
}

/// Times `kubectl drain` of [`NODE`]'s pods labelled [`PROTECT_LABEL`]`=<value>`, start to
/// exit; the node is uncordoned afterwards, also when the drain fails.
fn drain(c: &Cluster, value: &str) -> anyhow::Result<Duration> {
    let _uncordon = Cordoned(&c.tb);
    let selector = format!("{PROTECT_LABEL}={value}");
    let started = Instant::now();
    let out = e2e::drain::drain(&c.tb, &selector, TIMEOUT);
    let took = started.elapsed();
    ensure!(
        out.status.success(),
        "kubectl drain {NODE} --pod-selector {selector}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(took)
}

/// Whether the drained `pod` moved: a migration the drain started for it Succeeded into a pod
/// running on another node. Then removes the copy and the migrations (in the foreground: their
/// checkpoints and images too), so the next repetition starts from the same state.
async fn settle(c: &Cluster, pod: &Pod) -> anyhow::Result<bool> {
    let mut moved = false;
    for pm in eviction_migrations(&c.client, &c.ns, pod).await {
        let name = pm.metadata.name.context("a migration has a name")?;
        // The source is deleted before Succeeded is written, so the drain may end first.
        let status = wait_final(c, &name).await?.status.unwrap_or_default();
        if status.phase == Some(MigrationPhase::Succeeded) {
            let copy = status
                .restored_pod
                .context("a Succeeded PodMigration names its restored pod")?;
            moved |= runs_elsewhere(&c.pods().get(&copy).await?);
            c.remove_pod(&copy).await?;
        }
        remove_migration(c, &name).await?;
    }
    Ok(moved)
}

fn runs_elsewhere(pod: &Pod) -> bool {
    let node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    phase == Some("Running") && node.is_some_and(|n| n != NODE)
}
