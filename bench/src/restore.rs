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
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
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

        // The webhook's rewrite: the checkpoint image, now in node2's runtime.
        let image = running
            .spec
            .as_ref()
            .and_then(|s| s.containers.first())
            .map(|k| k.image.clone().unwrap_or_default())
            .context("the restored pod has a container")?;
        let host_ip = running
            .status
            .as_ref()
            .and_then(|s| s.host_ip.clone())
            .context("a running pod has a host IP")?;
        raw.push(raw_restore(&cri, &c.ns, rep, seed, &image, &host_ip).await?);
        c.remove_pod(&restored).await?;
        c.remove_checkpoint(&name).await?;
    }
    c.remove_pod(seed).await?;
    Ok(vec![Row::versus(
        "4 restore",
        format!(
            "{} MiB container on {TO}: pod created → Running",
            plan.moved_mib
        ),
        "ms",
        Better::Lower,
        Summary::of(&secs_to_ms(&ours)).context("no measurement")?,
        "raw CRI Create+StartContainer (image present)",
        Summary::of(&secs_to_ms(&raw)).context("no measurement")?,
    )])
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

/// Times CreateContainer + StartContainer of `image` in a sandbox of its own (made and removed
/// untimed). The sandbox lacks the kubelet's pod UID label, so the stand-in leaves it alone.
async fn raw_restore(
    cri: &Cri,
    ns: &str,
    rep: usize,
    container: &str,
    image: &str,
    host_ip: &str,
) -> anyhow::Result<Duration> {
    let name = format!("raw-restore-{rep}");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": ns, "uid": format!("bench-{ns}-{rep}")},
        "spec": {"containers": [{"name": container, "image": image}]},
    }))?;
    let settings = Settings {
        node_name: TO.into(),
        node_ip: host_ip.into(),
        cgroup_root: "/ckpt-testbed/bench".into(),
        pod_log_dir: "/var/log/pods".into(),
        runtime_name: "containerd".into(),
    };
    let mut sandbox_config = pod::sandbox_config(&pod, &settings, 0);
    sandbox_config.labels.remove(label::POD_UID);
    let spec = &pod.spec.as_ref().expect("built with a spec").containers[0];
    let config = pod::container_config(&pod, spec, &Downward::default())
        .map_err(|e| anyhow::anyhow!("container config: {e}"))?;
    let sandbox = cri.run_sandbox(sandbox_config.clone()).await?;
    let outcome = async {
        let started = Instant::now();
        let id = cri
            .create_container(&sandbox, config, sandbox_config)
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
