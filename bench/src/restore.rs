//! Bench section 4 — Restore: a pod annotated `restore-from` on another node, from creation to
//! Running, against the raw CRI calls that restore the same kind of checkpoint image on that
//! node (see [`crate::raw`]): PullImage + CreateContainer + StartContainer of a fresh
//! checkpoint, and CreateContainer + StartContainer of the image our pod just pulled.
//!
//! A kubelet stops every pod sandbox it did not make within seconds (its housekeeping kills
//! "orphaned" runtime pods), so node2's kubelet is stopped while the raw calls run; the pods
//! already there keep running, and it is started again before the next measurement.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use checkpointing::crd::ContainerCheckpoint;
use checkpointing::cri::api;
use checkpointing::names::RESTORE_FROM_ANNOTATION;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::conditions::is_pod_running;
use kube::runtime::wait::await_condition;

use crate::cluster::{Cluster, Plan, secs_to_ms};
use crate::raw::{self, BindMount, Runtime, Sandbox};
use crate::report::{Better, Row, Target};
use crate::stats::Summary;

/// Where the checkpoints are taken, and where [`Raw`] restores them.
pub(crate) const FROM: &str = "node1";
pub(crate) const TO: &str = "node2";
const RUNNING_WITHIN: Duration = Duration::from_secs(600);

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let seed = "seed";
    e2e::memory_hog(&c.tb, &c.client, &c.ns, seed, FROM, plan.moved_mib).await;
    let runtime = Runtime::new(c.tb.cri(TO).await);
    let (mut ours, mut present, mut pulled) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..plan.repetitions {
        let name = format!("restore-{rep}");
        let (cc, _) = c.checkpoint(&name, seed, seed).await?;
        let restored = format!("restored-{rep}");
        let started = Instant::now();
        c.pods()
            .create(
                &PostParams::default(),
                &restored_pod(&restored, &name, seed),
            )
            .await
            .with_context(|| format!("creating pod {restored}"))?;
        let running = tokio::time::timeout(
            RUNNING_WITHIN,
            await_condition(c.pods(), &restored, is_pod_running()),
        )
        .await
        .with_context(|| format!("{restored} not Running within {RUNNING_WITHIN:?}"))??
        .with_context(|| format!("{restored} vanished"))?;
        ours.push(started.elapsed());

        let mounts = bind_mounts_of(c, &cc).await?;
        // The webhook's rewrite, now in node2's runtime: only the runtime's own work is left.
        let image = running
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|k| k.image.clone())
            .context("the restored pod has a container image")?;
        // A checkpoint node2 has never seen: the pull goes through the node-local registries.
        let fresh = format!("fresh-{rep}");
        let (cc, _) = c.checkpoint(&fresh, seed, seed).await?;
        let fresh_image = c.content(&cc).await?.status.and_then(|s| s.image);
        let fresh_image = fresh_image.context("a Completed Content names its image")?;

        let raw = Raw {
            c,
            runtime: &runtime,
            container: seed,
            mounts: &mounts,
        };
        let (took, took_pulled) = raw
            .present_then_pulled(
                Some((&format!("present-{rep}"), &image)),
                &fresh,
                &fresh_image,
            )
            .await?;
        present.extend(took);
        pulled.push(took_pulled);

        c.remove_pod(&restored).await?;
        c.remove_checkpoint(&name).await?;
        c.remove_checkpoint(&fresh).await?;
    }
    c.remove_pod(seed).await?;
    let figure = format!(
        "{} MiB container on {TO}: pod created → Running",
        plan.moved_mib
    );
    let ours = Summary::of(&secs_to_ms(&ours)).context("no measurement")?;
    Ok(vec![
        Row::versus(
            "4 restore",
            &figure,
            "ms",
            Better::Lower,
            ours.clone(),
            "raw CRI PullImage+Create+StartContainer",
            Summary::of(&secs_to_ms(&pulled)).context("no measurement")?,
        )
        .with_target(Target::factor(1.1)),
        Row::versus(
            "4 restore",
            figure,
            "ms",
            Better::Lower,
            ours,
            "raw CRI Create+StartContainer, image present",
            Summary::of(&secs_to_ms(&present)).context("no measurement")?,
        ),
    ])
}

fn restored_pod(name: &str, checkpoint: &str, container: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": {RESTORE_FROM_ANNOTATION: checkpoint}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": TO},
            "containers": [{"name": container, "image": "busybox", "command": ["sleep", "inf"]}],
        },
    }))
    .expect("a valid pod")
}

/// The bind mounts every restore of `cc`'s container must provide, from the `spec.dump` of
/// its archive on [`FROM`] (untimed).
pub(crate) async fn bind_mounts_of(
    c: &Cluster,
    cc: &ContainerCheckpoint,
) -> anyhow::Result<Vec<BindMount>> {
    let archive = c
        .content(cc)
        .await?
        .status
        .and_then(|s| s.checkpoint_path)
        .context("a Completed Content names its archive")?;
    let spec = raw::archive_member(&c.tb.node_path(FROM, &archive), "spec.dump")?;
    raw::bind_mounts(&spec)
}

/// Restores through the raw CRI on [`TO`], in a sandbox of its own (made and removed untimed),
/// a checkpoint of `container` taken on [`FROM`] whose bind mounts are `mounts`.
pub(crate) struct Raw<'a> {
    pub(crate) c: &'a Cluster,
    pub(crate) runtime: &'a Runtime,
    pub(crate) container: &'a str,
    pub(crate) mounts: &'a [BindMount],
}

impl Raw<'_> {
    /// With [`TO`]'s kubelet stopped (see the module doc): times the restore of `present`
    /// (sandbox name, an image TO already holds) when given, then the [`Raw::restore`] with
    /// PullImage of `image`, ContainerCheckpoint `checkpoint`'s image, which TO has never seen
    /// (the pull goes through the node-local registries; sandbox named `checkpoint`).
    pub(crate) async fn present_then_pulled(
        &self,
        present: Option<(&str, &str)>,
        checkpoint: &str,
        image: &str,
    ) -> anyhow::Result<(Option<Duration>, Duration)> {
        let c = self.c;
        // The registry gives the image only to a pod on node2 that references it.
        let credential = e2e::pull_credential(&c.client, &c.ns, TO, checkpoint, image).await;
        let kubelet = c.stop_kubelet(TO)?;
        let present = match present {
            Some((name, present)) => Some(self.restore(name, present, None).await?),
            None => None,
        };
        let pulled = self
            .restore(checkpoint, image, Some(&credential.token))
            .await?;
        // Deleted before node2's kubelet is back: it would otherwise start the pod from the
        // image now present, a restore nobody measures. Gone once that kubelet has stopped it.
        c.pods()
            .delete(&credential.pod, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting pod {}", credential.pod))?;
        kubelet.start().await?;
        c.remove_pod(&credential.pod).await?;
        Ok((present, pulled))
    }

    /// Times [PullImage +] CreateContainer + StartContainer of checkpoint image `image`; it is
    /// pulled first when a registry password (see [`e2e::PullCredential`]) is given.
    async fn restore(
        &self,
        name: &str,
        image: &str,
        pull: Option<&str>,
    ) -> anyhow::Result<Duration> {
        let sandbox = Sandbox::new(TO, &self.c.ns, name);
        let work = self.c.tb.node_path(TO, &raw::work_dir(name));
        let mounts = self.mount_sources(name, &work)?;
        let sandbox_config = raw::sandbox_config(&sandbox);
        let config = raw::container_config(self.container, image, mounts);
        let runtime = self.runtime;
        let id = runtime
            .run_sandbox(&sandbox_config)
            .await
            .with_context(|| format!("RunPodSandbox {name} on {TO}"))?;
        let outcome = async {
            let started = Instant::now();
            if let Some(password) = pull {
                runtime
                    .pull_image(image, password, &sandbox_config)
                    .await
                    .with_context(|| format!("PullImage {image} on {TO}"))?;
            }
            let container = runtime
                .create_container(&id, config, &sandbox_config)
                .await
                .with_context(|| format!("CreateContainer from {image} on {TO}"))?;
            runtime
                .start_container(&container)
                .await
                .with_context(|| format!("StartContainer {container} on {TO}"))?;
            let took = started.elapsed();
            let (state, why) = runtime.container_state(&container).await?;
            if state != api::ContainerState::ContainerRunning as i32 {
                bail!("the raw restore of {image} is not running (state {state}: {why})");
            }
            Ok(took)
        }
        .await;
        runtime.remove_sandbox(&id).await?;
        remove_cgroups(&sandbox.cgroup_parent);
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
        outcome
    }

    /// An empty file or directory on node2 for every bind mount, of the kind the checkpointed
    /// container's source on node1 is; also the sandbox's log directory.
    fn mount_sources(&self, name: &str, work: &Path) -> anyhow::Result<Vec<api::Mount>> {
        std::fs::create_dir_all(work.join("logs"))?;
        let in_node = raw::work_dir(name);
        let mut mounts = Vec::new();
        for (i, m) in self.mounts.iter().enumerate() {
            let host = work.join(format!("mount-{i}"));
            if self.c.tb.node_path(FROM, &m.source).is_dir() {
                std::fs::create_dir_all(&host)?;
            } else {
                std::fs::write(&host, b"")?;
            }
            mounts.push(api::Mount {
                container_path: m.destination.clone(),
                host_path: format!("{in_node}/mount-{i}"),
                readonly: m.readonly,
                ..Default::default()
            });
        }
        Ok(mounts)
    }
}

/// The sandbox's cgroup directories in every hierarchy, which the runtimes leave behind, child
/// cgroups first (best effort: `testbed/down` removes whatever is left).
fn remove_cgroups(parent: &str) {
    fn remove_tree(dir: &Path) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_tree(&entry.path());
                }
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        remove_tree(&h.path().join(parent.trim_start_matches('/')));
    }
}
