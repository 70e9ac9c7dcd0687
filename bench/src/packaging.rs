//! Bench section 2 — Packaging: our OCI checkpoint image made from an archive, against buildah
//! building the equivalent image (from scratch, the archive's files at `/`, the checkpoint
//! annotations, committed to an OCI layout) and against `sha256sum` of the archive, the floor.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use checkpointing::archive;
use checkpointing::names::checkpoint_image as ann;
use checkpointing::oci::{CheckpointMeta, ImageLayout};

use crate::cluster::{Plan, secs_to_ms};
use crate::report::{Better, Row};
use crate::stats::Summary;

/// `runtime` is the nodes' CRI runtime name, recorded in the image as noded records it.
pub fn run(archive_path: &Path, plan: &Plan, runtime: &str) -> anyhow::Result<Vec<Row>> {
    // Layouts beside the archive, as noded keeps its own: the layer is a hard link, which
    // cannot cross filesystems (nor bind mounts).
    let dir = archive_path
        .parent()
        .context("the archive has a directory")?;
    let size = std::fs::metadata(archive_path)?.len();
    // One untimed read, so every contender starts from the same warm page cache.
    sha256sum(archive_path)?;
    let (mut ours, mut buildah, mut floor) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..plan.repetitions {
        let layout = tempfile::Builder::new()
            .prefix("bench-pack-")
            .tempdir_in(dir)?;
        ours.push(package(archive_path, layout.path(), rep, runtime)?);
        let work = tempfile::Builder::new()
            .prefix("bench-buildah-")
            .tempdir_in("/var/tmp")?;
        buildah.push(buildah_image(archive_path, work.path())?);
        floor.push(sha256sum(archive_path)?);
    }
    let mib = size as f64 / (1 << 20) as f64;
    let ours = Summary::of(&secs_to_ms(&ours)).context("no measurement")?;
    Ok(vec![
        Row::versus(
            "2 packaging",
            format!("OCI image from a {mib:.0} MiB archive"),
            "ms",
            Better::Lower,
            ours.clone(),
            "buildah from/add/config/commit",
            Summary::of(&secs_to_ms(&buildah)).context("no measurement")?,
        ),
        Row::versus(
            "2 packaging",
            format!("OCI image from a {mib:.0} MiB archive"),
            "ms",
            Better::Lower,
            ours,
            "sha256sum of the archive (floor)",
            Summary::of(&secs_to_ms(&floor)).context("no measurement")?,
        ),
    ])
}

/// What noded does once the runtime has written the archive: read its config and hash it in
/// one pass, and add it to an image layout as the layer of a checkpoint image.
fn package(
    archive_path: &Path,
    layout: &Path,
    rep: usize,
    runtime: &str,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let layout = ImageLayout::open(layout)?;
    let archive::Scanned {
        config,
        digest,
        size,
    } = archive::scan(archive_path)?;
    let meta = CheckpointMeta {
        container: "bench".into(),
        pod: "bench".into(),
        namespace: "bench".into(),
        rootfs_image_name: config.rootfs_image_name,
        rootfs_image_id: config.rootfs_image,
        runtime_name: runtime.into(),
        runtime_version: "bench".into(),
        created: config.checkpointed_time.unwrap_or_default(),
    };
    layout.add_checkpoint(
        archive_path,
        &digest,
        size,
        None,
        &meta,
        &format!("rep{rep}"),
    )?;
    Ok(started.elapsed())
}

/// The same image built the way the Kubernetes checkpointing docs show, with buildah.
fn buildah_image(archive_path: &Path, work: &Path) -> anyhow::Result<Duration> {
    let root = work.join("root");
    let runroot = work.join("run");
    let buildah = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("buildah")
            .arg("--root")
            .arg(&root)
            .arg("--runroot")
            .arg(&runroot)
            .args(args)
            .output()
            .context("running buildah (bench/run installs it)")?;
        if !out.status.success() {
            bail!("buildah {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let archive = archive_path.to_str().context("archive path is UTF-8")?;
    let target = format!("oci:{}:bench", work.join("layout").display());
    let started = Instant::now();
    let ctr = buildah(&["from", "scratch"])?;
    buildah(&["add", &ctr, archive, "/"])?;
    let annotations = [
        format!("{}=bench", ann::CRIO_CONTAINER_NAME),
        format!("{}=bench", ann::CONTAINER_NAME),
    ];
    buildah(&[
        "config",
        "--annotation",
        &annotations[0],
        "--annotation",
        &annotations[1],
        &ctr,
    ])?;
    buildah(&["commit", "-q", "--format", "oci", &ctr, &target])?;
    let took = started.elapsed();
    buildah(&["rm", &ctr])?;
    Ok(took)
}

fn sha256sum(path: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let out = Command::new("sha256sum").arg(path).output()?;
    if !out.status.success() {
        bail!(
            "sha256sum {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(started.elapsed())
}
