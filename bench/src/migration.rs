//! Bench section 5 — Migration: the downtime of a PodMigration of a bare pod from node1 to
//! node2, as its status reports it (`downtimeMilliseconds`: checkpoint request → every
//! restored container running, seen by the controller), and the time from its creation to
//! `Succeeded` seen by a watch; both against the floor of the same move by raw CRI calls:
//! `CheckpointContainer` of an identical pod's container on node1, plus PullImage +
//! CreateContainer + StartContainer on node2 of a checkpoint image of that container, done as
//! section 4 does them (see [`crate::restore::Raw`]).
//!
//! The raw calls make no image, so the pulled one comes from a ContainerCheckpoint of the same
//! container taken (untimed) just before: the floor leaves out packaging, and the scheduling,
//! admission and kubelet work of the restored pod; it includes the transfer node1 → node2,
//! which the pull through the node-local registries does.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use checkpointing::crd::{MigrationPhase, PodMigration, PodMigrationStatus};
use checkpointing::cri::Runtime as _;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::conditions::is_deleted;
use kube::runtime::wait::{await_condition, delete::delete_and_finalize};

use crate::cluster::{Cluster, Plan, secs_to_ms};
use crate::raw::Runtime;
use crate::report::{Better, Row, Target};
use crate::restore::{FROM, Raw, TO, bind_mounts_of};
use crate::stats::Summary;

const RAW_TIMEOUT: Duration = Duration::from_secs(600);
/// Generous: a 1 GiB pod checkpointed, moved and restored on two shared cores.
const FINAL_WITHIN: Duration = Duration::from_secs(900);
/// Where on node1 the raw CheckpointContainer writes its archive.
const RAW_ARCHIVE: &str = "/var/lib/kubelet/checkpoints/bench-migration-raw.tar";

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let mib = plan.moved_mib;
    let source = c.tb.cri(FROM).await;
    let target = Runtime::new(c.tb.cri(TO).await);
    let archive = c.tb.node_path(FROM, RAW_ARCHIVE);
    let (mut downtime, mut wall, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    // The downtime's two phases, ours (from the status) and the floor's.
    let (mut checkpoint, mut restore) = (Vec::new(), Vec::new());
    let (mut raw_checkpoint, mut raw_restore) = (Vec::new(), Vec::new());
    for rep in 0..plan.repetitions {
        // Ours: the pod moves, and is deleted on node1 once its copy runs on node2.
        let pod = format!("move-{rep}");
        e2e::memory_hog(&c.tb, &c.client, &c.ns, &pod, FROM, mib).await;
        let (pm, took) = migrate(c, &pod).await?;
        let status = pm.status.unwrap_or_default();
        let reported = status
            .downtime_milliseconds
            .context("a Succeeded PodMigration reports its downtime")?;
        downtime.push(reported as f64);
        wall.push(took);
        let (checkpointed, restored) = phases(&status)
            .context("a Succeeded PodMigration has its request, restore and running times")?;
        checkpoint.push(checkpointed);
        restore.push(restored);
        let restored = status
            .restored_pod
            .context("a Succeeded PodMigration names its restored pod")?;
        c.remove_pod(&restored).await?;
        source_gone(c, &pod, status.source_pod_uid.as_deref()).await?;
        remove_migration(c, &pod).await?;

        // The floor: the same move of an identical pod by raw CRI calls.
        let pod = format!("floor-{rep}");
        e2e::memory_hog(&c.tb, &c.client, &c.ns, &pod, FROM, mib).await;
        // Untimed: the container's ID, the image to pull and the bind mounts to provide.
        let (cc, _) = c.checkpoint(&pod, &pod, &pod).await?;
        let mounts = bind_mounts_of(c, &cc).await?;
        let image = c.content(&cc).await?.status.and_then(|s| s.image);
        let image = image.context("a Completed Content names its image")?;
        let id = cc
            .status
            .and_then(|s| s.container_id)
            .context("a Completed request reports the container's ID")?;
        match std::fs::remove_file(&archive) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)?,
            _ => {}
        }
        let started = Instant::now();
        source
            .checkpoint_container(&id, Path::new(RAW_ARCHIVE), RAW_TIMEOUT)
            .await
            .with_context(|| format!("raw CheckpointContainer of {pod}"))?;
        let checkpointed = started.elapsed();
        std::fs::remove_file(&archive)
            .with_context(|| format!("removing {}", archive.display()))?;
        let raw = Raw {
            c,
            runtime: &target,
            container: &pod,
            mounts: &mounts,
        };
        let (_, restored) = raw.present_then_pulled(None, &pod, &image).await?;
        floor.push(checkpointed + restored);
        raw_checkpoint.push(checkpointed);
        raw_restore.push(restored);
        c.remove_checkpoint(&pod).await?;
        c.remove_pod(&pod).await?;
    }
    let floor = Summary::of(&secs_to_ms(&floor)).context("no measurement")?;
    let name = "raw CRI CheckpointContainer + PullImage+Create+StartContainer";
    let phase = |figure: &str, ours: &[f64], theirs: &[Duration], name: &str| {
        anyhow::Ok(Row::versus(
            "5 migration",
            format!("{mib} MiB pod {FROM} → {TO}: {figure}"),
            "ms",
            Better::Lower,
            Summary::of(ours).context("no measurement")?,
            name,
            Summary::of(&secs_to_ms(theirs)).context("no measurement")?,
        ))
    };
    Ok(vec![
        Row::versus(
            "5 migration",
            format!("{mib} MiB pod {FROM} → {TO}: downtime (status)"),
            "ms",
            Better::Lower,
            Summary::of(&downtime).context("no measurement")?,
            name,
            floor.clone(),
        )
        .with_target(Target::factor(1.0)),
        Row::versus(
            "5 migration",
            format!("{mib} MiB pod {FROM} → {TO}: created → Succeeded"),
            "ms",
            Better::Lower,
            Summary::of(&secs_to_ms(&wall)).context("no measurement")?,
            name,
            floor,
        ),
        phase(
            "downtime, checkpoint phase (request → PodCheckpoint Completed)",
            &checkpoint,
            &raw_checkpoint,
            "raw CRI CheckpointContainer",
        )?,
        phase(
            "downtime, restore phase (→ restored containers running)",
            &restore,
            &raw_restore,
            "raw CRI PullImage+Create+StartContainer",
        )?,
    ])
}

/// The downtime's checkpoint and restore phases in ms, from the status's times.
fn phases(status: &PodMigrationStatus) -> Option<(f64, f64)> {
    let requested = status.checkpoint_request_time.as_ref()?.0;
    let restoring = status.restore_start_time.as_ref()?.0;
    let running = status.running_time.as_ref()?.0;
    let ms = |from: Timestamp, to: Timestamp| to.duration_since(from).as_secs_f64() * 1000.0;
    Some((ms(requested, restoring), ms(restoring, running)))
}

fn migrations(c: &Cluster) -> Api<PodMigration> {
    Api::namespaced(c.client.clone(), &c.ns)
}

/// Creates a PodMigration `pod` of `pod` to [`TO`] and waits until it is final; returns it
/// and the time from the create call to the phase being seen. A Failed one is an error.
async fn migrate(c: &Cluster, pod: &str) -> anyhow::Result<(PodMigration, Duration)> {
    let api = migrations(c);
    let started = Instant::now();
    api.create(
        &PostParams::default(),
        &e2e::migration_request(pod, pod, Some(TO)),
    )
    .await
    .with_context(|| format!("creating PodMigration {pod}"))?;
    let pm = wait_final(c, pod).await?;
    let took = started.elapsed();
    let status = pm.status.clone().unwrap_or_default();
    if status.phase != Some(MigrationPhase::Succeeded) {
        bail!(
            "PodMigration {pod} failed: {}",
            status.message.unwrap_or_default()
        );
    }
    Ok((pm, took))
}

/// Waits (by a watch) until PodMigration `name` is final; returns it, whatever its phase.
pub(crate) async fn wait_final(c: &Cluster, name: &str) -> anyhow::Result<PodMigration> {
    tokio::time::timeout(FINAL_WITHIN, await_condition(migrations(c), name, is_final))
        .await
        .with_context(|| format!("PodMigration {name} not final within {FINAL_WITHIN:?}"))??
        .with_context(|| format!("PodMigration {name} vanished"))
}

fn is_final(pm: Option<&PodMigration>) -> bool {
    pm.and_then(|m| m.status.as_ref()?.phase)
        .is_some_and(MigrationPhase::is_final)
}

/// Waits until the controller's deletion of the source pod (UID `uid`) is over, so its
/// memory is free before the next measurement.
async fn source_gone(c: &Cluster, pod: &str, uid: Option<&str>) -> anyhow::Result<()> {
    let uid = uid.context("a Succeeded PodMigration names its source's UID")?;
    tokio::time::timeout(
        FINAL_WITHIN,
        await_condition(c.pods(), pod, is_deleted(uid)),
    )
    .await
    .with_context(|| format!("source pod {pod} not gone within {FINAL_WITHIN:?}"))??;
    Ok(())
}

/// Deletes the migration in the foreground: its PodCheckpoint and that one's
/// ContainerCheckpoints (archives and images) go first.
pub(crate) async fn remove_migration(c: &Cluster, name: &str) -> anyhow::Result<()> {
    delete_and_finalize(migrations(c), name, &DeleteParams::foreground())
        .await
        .with_context(|| format!("deleting PodMigration {name}"))
}
