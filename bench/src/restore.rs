//! Bench section 4 — Restore: a pod annotated `restore-from` on another node, from creation to
//! Running, against the raw CRI CreateContainer + StartContainer of the same checkpoint image on
//! that node (the requests the kubelet stand-in would send, without Kubernetes around them).

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use checkpointing::cri::api;
use checkpointing::names::{RESTORE_FROM_ANNOTATION, kubelet as label};
use k8s_openapi::api::core::v1::Pod;
use kube::api::PostParams;
use kube::runtime::conditions::is_pod_running;
use kube::runtime::wait::await_condition;
use kubelet_standin::pod::{self, Downward, Settings};
use kubelet_standin::runtime::Cri;

use crate::cluster::{Cluster, Plan, secs_to_ms};
use crate::report::{Better, Row};
use crate::stats::Summary;

const FROM: &str = "node1";
const TO: &str = "node2";
const RUNNING_WITHIN: Duration = Duration::from_secs(600);

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let seed = "seed";
    e2e::memory_hog(&c.tb, &c.client, &c.ns, seed, FROM, plan.moved_mib).await;
    let cri = Cri::new(c.tb.cri(TO).await);
    let (mut ours, mut present, mut pulled) = (Vec::new(), Vec::new(), Vec::new());
    for rep in 0..plan.repetitions {
        let name = format!("restore-{rep}");
        c.checkpoint(&name, seed, seed).await?;
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
        let host_ip = running
            .status
            .as_ref()
            .and_then(|s| s.host_ip.clone())
            .context("a running pod has a host IP")?;
        let raw = Raw {
            cri: &cri,
            ns: &c.ns,
            container: seed,
            host_ip: &host_ip,
        };

        // The webhook's rewrite, now in node2's runtime: only the runtime's own work is left.
        let image = running
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .and_then(|k| k.image.clone())
            .context("the restored pod has a container image")?;
        present.push(
            raw.restore(&format!("present-{rep}"), &image, false)
                .await?,
        );

        // A checkpoint node2 has never seen: the pull goes through the node-local registries.
        let fresh = format!("fresh-{rep}");
        let (cc, _) = c.checkpoint(&fresh, seed, seed).await?;
        let image = c.content(&cc).await?.status.and_then(|s| s.image);
        let image = image.context("a Completed Content names its image")?;
        pulled.push(raw.restore(&fresh, &image, true).await?);

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
        ),
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

/// Restores through the raw CRI on node2, in a sandbox of its own (made and removed untimed).
/// The sandbox lacks the kubelet's pod UID label, so the stand-in leaves it alone.
struct Raw<'a> {
    cri: &'a Cri,
    ns: &'a str,
    container: &'a str,
    host_ip: &'a str,
}

impl Raw<'_> {
    /// Times [PullImage +] CreateContainer + StartContainer of checkpoint image `image`.
    async fn restore(&self, name: &str, image: &str, pull: bool) -> anyhow::Result<Duration> {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": self.ns, "uid": format!("bench-{}-{name}", self.ns)},
            "spec": {"containers": [{"name": self.container, "image": image}]},
        }))?;
        let settings = Settings {
            node_name: TO.into(),
            node_ip: self.host_ip.into(),
            cgroup_root: "/ckpt-testbed/bench".into(),
            pod_log_dir: "/var/log/pods".into(),
            runtime_name: "containerd".into(),
        };
        let mut sandbox_config = pod::sandbox_config(&pod, &settings, 0);
        sandbox_config.labels.remove(label::POD_UID);
        let spec = &pod.spec.as_ref().expect("built with a spec").containers[0];
        let config = pod::container_config(&pod, spec, &Downward::default())
            .map_err(|e| anyhow::anyhow!("container config: {e}"))?;
        let cri = self.cri;
        let sandbox = cri.run_sandbox(sandbox_config.clone()).await?;
        let outcome = async {
            let started = Instant::now();
            if pull {
                cri.pull_image(image, &sandbox_config).await?;
            }
            let id = cri
                .create_container(&sandbox, config, sandbox_config.clone())
                .await?;
            cri.start_container(&id).await?;
            let took = started.elapsed();
            let state = cri.container_status(&id).await?.state;
            if state != api::ContainerState::ContainerRunning as i32 {
                bail!("the raw restore of {image} is not running (state {state})");
            }
            Ok(took)
        }
        .await;
        cri.stop_sandbox(&sandbox).await?;
        cri.remove_sandbox(&sandbox).await?;
        outcome
    }
}
