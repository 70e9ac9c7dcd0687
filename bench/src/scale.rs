//! Bench section 7 — Scale: many ContainerCheckpoints over pods on several nodes at once: time
//! until all are final, against the floor of the same checkpoints as raw CRI calls; whether any
//! was lost or duplicated, request latency, and the controller's reconcile latency (from its
//! `reconcile_duration_seconds` histogram, before and after).
//!
//! The floor, taken once ours are all final and before anything is removed: the same number of
//! raw CRI `CheckpointContainer` calls on the same containers, request i on pod i % pods as
//! ours, each node's share at most [`NODED_DUMPS`] at a time, all nodes at once.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use checkpointing::cri::{CriClient, CriError, Runtime as _, api};
use checkpointing::names::kubelet;
use futures::{StreamExt as _, TryStreamExt as _};
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt as _, watcher};

use crate::cluster::{Cluster, Plan, is_final, scrape};
use crate::raw;
use crate::report::{Better, Cause, Row, Target};
use crate::stats::{Summary, histogram_buckets, histogram_quantile, quantile};

/// Creates in flight at once: a client that does not wait for each answer, as `kubectl apply`
/// of a long list in parallel would.
const CREATING: usize = 16;
/// The controller's admin port (`--admin-addr` in deploy/base/controller.yaml), on its pod IP.
const CONTROLLER_ADMIN_PORT: u16 = 8080;
const HISTOGRAM: &str = "checkpointing_controller_reconcile_duration_seconds";
/// The bound on the leader's reconcile duration during the scale run.
const RECONCILE_P99_MS: f64 = 250.0;
/// Dumps noded runs at once per node: its `DEFAULT_CONCURRENT_DUMPS` (noded/src/checkpoint.rs),
/// which deploy/ leaves as is (no `--max-concurrent-dumps`). The floor runs each node's share
/// with the same bound.
const NODED_DUMPS: usize = 2;
/// The container of `e2e::counter_pod` that every request checkpoints.
const CONTAINER: &str = "counter";
/// Where noded keeps its archives inside a node (its `--checkpoint-dir` default).
const NODED_ARCHIVES: &str = "/var/lib/kubelet/checkpoints";
/// A raw call's deadline: far beyond what a counter's dump takes, even queued on a busy node.
const RAW_CALL: Duration = Duration::from_secs(600);

/// A pod the requests checkpoint, and the node it runs on.
struct ScalePod {
    name: String,
    node: String,
}

pub async fn run(c: &Cluster, plan: &Plan) -> anyhow::Result<Vec<Row>> {
    let pods: Vec<ScalePod> = (1..=plan.scale_nodes)
        .flat_map(|k| {
            (0..plan.scale_pods_per_node).map(move |i| ScalePod {
                name: format!("many-node{k}-{i}"),
                node: format!("node{k}"),
            })
        })
        .collect();
    for pod in &pods {
        e2e::run_pod(&c.client, &c.ns, e2e::counter_pod(&pod.name, &pod.node, 1)).await;
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
                        &e2e::checkpoint_request(&name, &pod.name, CONTAINER),
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
    let duplicated = doubles(c, &pods).await?;
    // Failures' messages come from the nodes' runtime (and its CRIU): named by its own word.
    let runtime = c.tb.cri(&pods[0].node).await.version().await?.runtime_name;
    let failures = Cause::tally(&runtime, failure_messages(c).await?);
    log_causes("failed scale requests", &failures);
    let floor = raw_floor(c, &pods, plan.scale).await?;
    let floor_failures = Cause::tally(&runtime, floor.failures.iter().map(ToString::to_string));
    log_causes("failed raw CheckpointContainer calls", &floor_failures);

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
    let count = |figure: String, x: usize| Row::alone("7 scale", figure, "count", one(x as f64));
    let mut rows = vec![
        Row::versus(
            "7 scale",
            format!(
                "{n} requests over {} pods on {} nodes: first create → all final",
                pods.len(),
                plan.scale_nodes
            ),
            "s",
            Better::Lower,
            one(all_done.duration_since(started).as_secs_f64()),
            format!("raw CRI CheckpointContainer ×{n}, same per-node concurrency"),
            one(floor.took.as_secs_f64()),
        )
        .with_target(Target::factor(1.2)),
        count(format!("{n} requests: Completed"), completed),
        count(format!("{n} requests: Failed"), failed).with_causes(failures),
        count(format!("{n} requests: lost (never final)"), lost).with_target(Target::AtMost(0.0)),
        count(
            format!("{n} requests: duplicated (more than one Content)"),
            duplicated.requests,
        )
        .with_target(Target::AtMost(0.0)),
        count(
            "archives of the scale pods no Content names".into(),
            duplicated.archives,
        ),
        count(
            format!("{n} raw CRI CheckpointContainer calls: failed"),
            floor.failures.len(),
        )
        .with_causes(floor_failures),
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
        // A leader that restarted meanwhile starts its histogram again: no figure, but the
        // rest of the run still counts.
        let Some(seconds) = histogram_quantile(&before, &after, q) else {
            eprintln!(
                "controller reconcile duration {label}: the leader's histogram did not grow \
                 from the one read before (restarted, or another leader?); not reported"
            );
            continue;
        };
        let row = Row::alone(
            "7 scale",
            format!("controller reconcile duration, {label}"),
            "ms",
            one(seconds * 1e3),
        );
        rows.push(match label {
            "p99" => row.with_target(Target::AtMost(RECONCILE_P99_MS)),
            _ => row,
        });
    }
    // The requests and pods go with the run's namespace.
    Ok(rows)
}

/// What a request must have exactly one of, found more than once.
#[derive(Debug, PartialEq)]
struct Doubles {
    /// Requests that more than one Content references.
    requests: usize,
    /// Archives of the scale pods on the nodes that no Content names: a second archive of
    /// some request (its name gives the pod, not the request).
    archives: usize,
}

/// Lists the run's Contents and the scale pods' archives in noded's directory on each node.
async fn doubles(c: &Cluster, pods: &[ScalePod]) -> anyhow::Result<Doubles> {
    let contents = Api::<ContainerCheckpointContent>::namespaced(c.client.clone(), &c.ns)
        .list(&ListParams::default())
        .await
        .context("listing ContainerCheckpointContents")?
        .items;
    let nodes: HashSet<&str> = pods.iter().map(|p| p.node.as_str()).collect();
    let mut archives = Vec::new();
    for node in nodes {
        let dir = c.tb.node_path(node, NODED_ARCHIVES);
        for entry in
            std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))?
        {
            let file = entry?.file_name().to_string_lossy().into_owned();
            archives.push((node.to_owned(), file));
        }
    }
    Ok(count_doubles(&contents, &archives, &c.ns))
}

/// [`doubles`] of `contents` and the `(node, file name)`s in noded's archive directories.
/// Only the scale section's requests (`many-…`) and pods' archives count; noded names an
/// archive `checkpoint-<namespace>_<pod>-<container>-<Content UID>.tar` (its volumes go
/// beside it as `….volumes.tar`, unfinished ones hidden with a leading dot).
fn count_doubles(
    contents: &[ContainerCheckpointContent],
    archives: &[(String, String)],
    ns: &str,
) -> Doubles {
    let mut per_request: HashMap<&str, usize> = HashMap::new();
    let mut named: HashSet<(&str, &str)> = HashSet::new();
    for content in contents {
        let request = content.spec.container_checkpoint_ref.as_str();
        if !request.starts_with("many-") {
            continue;
        }
        *per_request.entry(request).or_default() += 1;
        let path = content
            .status
            .as_ref()
            .and_then(|s| s.checkpoint_path.as_deref());
        if let Some(file) = path.and_then(|p| Path::new(p).file_name()?.to_str()) {
            named.insert((content.spec.node_name.as_str(), file));
        }
    }
    let prefix = format!("checkpoint-{ns}_many-");
    let archives = archives
        .iter()
        .filter(|(_, file)| {
            file.starts_with(&prefix) && file.ends_with(".tar") && !file.ends_with(".volumes.tar")
        })
        .filter(|(node, file)| !named.contains(&(node.as_str(), file.as_str())))
        .count();
    Doubles {
        requests: per_request.values().filter(|&&n| n > 1).count(),
        archives,
    }
}

/// The floor's time (first call → last call returned) and the calls' failures.
struct Floor {
    took: Duration,
    failures: Vec<CriError>,
}

/// One node's runtime and its share of the raw calls: `(request index, container ID)`.
struct Share {
    node: String,
    cri: CriClient,
    calls: Vec<(usize, String)>,
}

/// The raw CRI floor (see the module's doc). Each archive is deleted as soon as its call
/// returns, outside the time, so a thousand of them never pile up on a node.
async fn raw_floor(c: &Cluster, pods: &[ScalePod], n: usize) -> anyhow::Result<Floor> {
    let mut shares: Vec<Share> = Vec::new();
    // Per pod: its node's share and its container.
    let mut targets: Vec<(usize, String)> = Vec::new();
    for pod in pods {
        let share = match shares.iter().position(|s| s.node == pod.node) {
            Some(share) => share,
            None => {
                std::fs::create_dir_all(c.tb.node_path(&pod.node, &raw::work_dir("scale")))?;
                shares.push(Share {
                    node: pod.node.clone(),
                    cri: c.tb.cri(&pod.node).await,
                    calls: Vec::new(),
                });
                shares.len() - 1
            }
        };
        let id = running_container(&shares[share].cri, &c.ns, &pod.name).await?;
        targets.push((share, id));
    }
    for i in 0..n {
        let (share, id) = &targets[i % pods.len()];
        shares[*share].calls.push((i, id.clone()));
    }
    let started = Instant::now();
    let returned = futures::future::try_join_all(shares.iter().map(|share| {
        futures::stream::iter(&share.calls)
            .map(|(i, id)| raw_checkpoint(c, share, *i, id))
            .buffer_unordered(NODED_DUMPS)
            .try_collect::<Vec<_>>()
    }))
    .await?;
    let (ends, results): (Vec<Instant>, Vec<Result<(), CriError>>) =
        returned.into_iter().flatten().unzip();
    Ok(Floor {
        took: ends
            .into_iter()
            .max()
            .unwrap_or(started)
            .duration_since(started),
        failures: results.into_iter().filter_map(Result::err).collect(),
    })
}

/// One raw `CheckpointContainer` into the node's bench directory; when it returned and how.
/// A failed call is counted, not the end of the bench: our requests may fail too (Failed),
/// and the count says how the floor fared.
async fn raw_checkpoint(
    c: &Cluster,
    share: &Share,
    i: usize,
    id: &str,
) -> anyhow::Result<(Instant, Result<(), CriError>)> {
    let location = format!("{}/{i}.tar", raw::work_dir("scale"));
    let result = share
        .cri
        .checkpoint_container(id, Path::new(&location), RAW_CALL)
        .await;
    let returned = Instant::now();
    match std::fs::remove_file(c.tb.node_path(&share.node, &location)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)?,
        _ => {}
    }
    Ok((returned, result))
}

/// ID of `pod`'s running counter container, by the labels the kubelet puts on it.
async fn running_container(cri: &CriClient, ns: &str, pod: &str) -> anyhow::Result<String> {
    let labels = [
        (kubelet::POD_NAMESPACE, ns),
        (kubelet::POD_NAME, pod),
        (kubelet::CONTAINER_NAME, CONTAINER),
    ];
    let running = api::ContainerState::ContainerRunning as i32;
    cri.list_containers(&labels)
        .await?
        .into_iter()
        .filter(|c| c.state == running)
        .max_by_key(|c| c.created_at)
        .map(|c| c.id)
        .with_context(|| format!("{pod} has no running {CONTAINER} container"))
}

/// The status message of each Failed request: the counts rows say how many failed, these why.
async fn failure_messages(c: &Cluster) -> anyhow::Result<Vec<String>> {
    Ok(c.checkpoints()
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter_map(|cc| {
            let status = cc.status?;
            (status.state == Some(CheckpointState::Failed))
                .then(|| status.message.unwrap_or_default())
        })
        .collect())
}

/// Each distinct message once with its count, for the log (the JSON has them on the rows).
fn log_causes(what: &str, causes: &[Cause]) {
    for cause in causes {
        eprintln!("{what}: {:>4} × {}", cause.count, cause.message);
    }
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

#[cfg(test)]
mod tests {
    use checkpointing::crd::{ContainerCheckpointContentSpec, ContainerCheckpointContentStatus};

    use super::*;

    fn content(
        name: &str,
        request: &str,
        node: &str,
        archive: Option<&str>,
    ) -> ContainerCheckpointContent {
        let mut content = ContainerCheckpointContent::new(
            name,
            ContainerCheckpointContentSpec {
                container_checkpoint_ref: request.into(),
                namespace: "ns".into(),
                pod_name: "many-node1-0".into(),
                container_name: CONTAINER.into(),
                node_name: node.into(),
                pod_uid: "u".into(),
                timeout_seconds: None,
                volumes: Vec::new(),
                registry: None,
                credentials_secret: None,
                hold_source: false,
            },
        );
        content.status = Some(ContainerCheckpointContentStatus {
            checkpoint_path: archive.map(|a| format!("{NODED_ARCHIVES}/{a}")),
            ..Default::default()
        });
        content
    }

    #[test]
    fn doubles_are_second_contents_of_a_request_and_archives_no_content_names() {
        let a = "checkpoint-ns_many-node1-0-counter-a.tar";
        let b = "checkpoint-ns_many-node1-0-counter-b.tar";
        let contents = [
            content("many-0", "many-0", "node1", Some(a)),
            content("many-1", "many-1", "node1", Some(b)),
            // A second Content of many-1, still without an archive.
            content("other", "many-1", "node1", None),
            // Another section's request, and its second Content: not the scale section's.
            content("hog-16", "hog-16", "node1", None),
            content("hog-16-b", "hog-16", "node1", None),
        ];
        let on = |node: &str, file: &str| (node.to_owned(), file.to_owned());
        let archives = [
            on("node1", a),
            on("node1", b),
            // Named by a Content, but on another node than the Content's.
            on("node2", a),
            // Of a scale pod, named by no Content.
            on("node1", "checkpoint-ns_many-node1-0-counter-c.tar"),
            // Volumes, unfinished dumps, other pods and namespaces, the OCI layout: not archives
            // of a scale request.
            on("node1", "checkpoint-ns_many-node1-0-counter-a.volumes.tar"),
            on("node1", ".checkpoint-ns_many-node1-0-counter-d.tar.partial"),
            on("node1", "checkpoint-ns_hog-16-hog-16-e.tar"),
            on("node1", "checkpoint-other_many-node1-0-counter-f.tar"),
            on("node1", "oci"),
        ];
        assert_eq!(
            count_doubles(&contents, &archives, "ns"),
            Doubles {
                requests: 1,
                archives: 2
            }
        );
        assert_eq!(
            count_doubles(&contents[..2], &archives[..2], "ns"),
            Doubles {
                requests: 0,
                archives: 0
            }
        );
    }
}
