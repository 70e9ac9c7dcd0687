//! Bench section 7 — Scale: many ContainerCheckpoints across two nodes at once: time until all are
//! final, whether any was lost, request latency, and the controller's reconcile latency (from its
//! `reconcile_duration_seconds` histogram, before and after).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use checkpointing::crd::{CheckpointState, ContainerCheckpoint};
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::PostParams;
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::cluster::{Cluster, Plan, is_final, scrape};
use crate::report::Row;
use crate::stats::{Summary, histogram_buckets, histogram_quantile, quantile};

const NODES: [&str; 2] = ["node1", "node2"];
const PODS_PER_NODE: usize = 5;
/// Creates in flight at once: a client that does not wait for each answer, as `kubectl apply`
/// of a long list in parallel would.
const CREATING: usize = 16;
/// The controller's admin port (`--admin-addr` in deploy/base/controller.yaml), on its pod IP.
const CONTROLLER_ADMIN_PORT: u16 = 8080;
const HISTOGRAM: &str = "checkpoint_controller_reconcile_duration_seconds";

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let pods: Vec<String> = NODES
        .iter()
        .flat_map(|node| (0..PODS_PER_NODE).map(move |i| format!("many-{node}-{i}")))
        .collect();
    for (i, pod) in pods.iter().enumerate() {
        let node = NODES[i / PODS_PER_NODE];
        e2e::run_pod(&c.client, &c.ns, e2e::counter_pod(pod, node, 1)).await;
    }
    let finished: Arc<Mutex<HashMap<String, (Instant, CheckpointState)>>> = Arc::default();
    let watch = tokio::spawn(record_final(c.checkpoints(), finished.clone()));
    // The leader reconciles; the same pod is asked before and after.
    let metrics = controller_metrics_url(c).await?;
    let before = histogram_buckets(&scrape(&metrics)?, HISTOGRAM);

    let created: Mutex<HashMap<String, Instant>> = Mutex::default();
    let started = Instant::now();
    futures::stream::iter((0..plan.scale).map(|i| (format!("many-{i}"), &pods[i % pods.len()])))
        .map(Ok)
        .try_for_each_concurrent(CREATING, |(name, pod)| {
            let created = &created;
            async move {
                let at = Instant::now();
                c.checkpoints()
                    .create(
                        &PostParams::default(),
                        &e2e::checkpoint_request(&name, pod, "counter"),
                    )
                    .await
                    .with_context(|| format!("creating {name}"))?;
                created.lock().unwrap().insert(name, at);
                anyhow::Ok(())
            }
        })
        .await?;
    // Lost means never reaching a final state; the wait ends when nothing has finished for a
    // while rather than at a fixed deadline.
    let mut last_progress = (0, Instant::now());
    loop {
        let done = finished.lock().unwrap().len();
        if done >= plan.scale {
            break;
        }
        if done != last_progress.0 {
            last_progress = (done, Instant::now());
        } else if last_progress.1.elapsed() > Duration::from_secs(120) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    watch.abort();
    let after = histogram_buckets(&scrape(&metrics)?, HISTOGRAM);

    let finished = finished.lock().unwrap().clone();
    let created = created.into_inner().unwrap();
    let all_done = finished.values().map(|f| f.0).max().unwrap_or(started);
    let completed = finished
        .values()
        .filter(|f| f.1 == CheckpointState::Completed)
        .count();
    let failed = finished.len() - completed;
    let lost = plan.scale - finished.len();
    let mut latency: Vec<f64> = finished
        .iter()
        .filter_map(|(name, (at, _))| {
            Some(at.duration_since(*created.get(name)?).as_secs_f64() * 1e3)
        })
        .collect();
    latency.sort_by(f64::total_cmp);
    let one = |x: f64| Summary::of(&[x]).expect("one sample");
    let n = plan.scale;
    let mut rows = vec![
        Row::alone(
            "7 scale",
            format!("{n} requests on 2 nodes: first create → all final"),
            "s",
            one(all_done.duration_since(started).as_secs_f64()),
        ),
        Row::alone(
            "7 scale",
            format!("{n} requests: Completed"),
            "count",
            one(completed as f64),
        ),
        Row::alone(
            "7 scale",
            format!("{n} requests: Failed"),
            "count",
            one(failed as f64),
        ),
        Row::alone(
            "7 scale",
            format!("{n} requests: lost (never final)"),
            "count",
            one(lost as f64),
        ),
        Row::alone(
            "7 scale",
            "request created → final, all requests",
            "ms",
            Summary::of(&latency).context("no request finished")?,
        ),
        Row::alone(
            "7 scale",
            "request created → final, p99",
            "ms",
            one(quantile(&latency, 0.99).context("no request finished")?),
        ),
    ];
    for (label, q) in [("p50", 0.5), ("p99", 0.99)] {
        let seconds = histogram_quantile(&before, &after, q)
            .context("the controller recorded no reconcile")?;
        rows.push(Row::alone(
            "7 scale",
            format!("controller reconcile duration, {label}"),
            "ms",
            one(seconds * 1e3),
        ));
    }
    // The requests and pods go with the run's namespace.
    Ok(rows)
}

/// Records when each request is first seen final, and in which state.
async fn record_final(
    api: kube::Api<ContainerCheckpoint>,
    finished: Arc<Mutex<HashMap<String, (Instant, CheckpointState)>>>,
) {
    let events = watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    let mut events = std::pin::pin!(events);
    while let Some(Ok(cc)) = events.next().await {
        if is_final(Some(&cc)) {
            let state = cc
                .status
                .as_ref()
                .and_then(|s| s.state)
                .expect("final has a state");
            let name = cc.metadata.name.clone().unwrap_or_default();
            finished
                .lock()
                .unwrap()
                .entry(name)
                .or_insert((Instant::now(), state));
        }
    }
}

/// `/metrics` of the leading controller, on its pod IP (the host routes every pod subnet).
async fn controller_metrics_url(c: &Cluster) -> anyhow::Result<String> {
    let pod = c.controller_leader().await?;
    let ip = pod
        .status
        .and_then(|s| s.pod_ip)
        .context("the leader's pod has no IP")?;
    Ok(format!("http://{ip}:{CONTROLLER_ADMIN_PORT}/metrics"))
}
