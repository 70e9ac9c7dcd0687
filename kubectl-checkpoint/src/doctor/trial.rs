//! The trial: a counter pod on one node, its ContainerCheckpoint, a copy restored from it on
//! another node, whose counter must go on; then everything it made is deleted, also when a step
//! failed, timed out or the user interrupted. Each step is reported as it ends (on stderr) and
//! kept for the report.

use std::time::{Duration, Instant};

use checkpointing::crd::{CheckpointState, ContainerCheckpoint};
use checkpointing::names::DOCTOR_TRIAL_LABEL;
use checkpointing::restored::restored_pod;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams};

use super::advice::stuck_restore;
use super::counter::{self, Continued};
use super::diagnosis::{Step, Trial};
use super::node::NodeHealth;
use super::pair::{self, Pair};
use crate::api::api;
use crate::restore::{Progress, progress};
use crate::watch::updates;

/// How long each step may take.
const START: Duration = Duration::from_secs(180);
const COUNT: Duration = Duration::from_secs(60);
const CHECKPOINT: Duration = Duration::from_secs(300);
const RESTORE: Duration = Duration::from_secs(300);
const CLEAN_UP: Duration = Duration::from_secs(120);
/// How often logs and leftovers are looked at again.
const POLL: Duration = Duration::from_secs(1);

/// Why a step failed, and what a human can do about it when that is known.
struct Failure {
    detail: String,
    advice: Option<String>,
}

impl From<anyhow::Error> for Failure {
    fn from(err: anyhow::Error) -> Self {
        Self {
            detail: format!("{err:#}"),
            advice: None,
        }
    }
}

impl From<String> for Failure {
    fn from(detail: String) -> Self {
        Self {
            detail,
            advice: None,
        }
    }
}

type StepResult<T> = Result<(T, String), Failure>;

/// Runs the trial in `namespace` with `image`, on two of `nodes`.
pub async fn run(client: &Client, namespace: &str, image: &str, nodes: &[NodeHealth]) -> Trial {
    let mut trial = Trial::default();
    let pair = match pair::choose(nodes) {
        Ok(pair) => pair,
        Err(why) => {
            record::<()>(
                &mut trial.steps,
                "choose nodes",
                Instant::now(),
                Err(why.into()),
            );
            return trial;
        }
    };
    let chosen = format!("{} checkpoints, {} restores", pair.source, pair.target);
    record(
        &mut trial.steps,
        "choose nodes",
        Instant::now(),
        Ok(((), chosen)),
    );
    trial.source = Some(pair.source.clone());
    trial.target = Some(pair.target.clone());
    let name = format!("doctor-trial-{}", Timestamp::now().as_second());
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let checkpoints = Api::<ContainerCheckpoint>::namespaced(client.clone(), namespace);
    let started = Instant::now();
    let interrupted = tokio::select! {
        () = steps(&pods, &checkpoints, image, &pair, &name, &mut trial.steps) => false,
        _ = tokio::signal::ctrl_c() => true,
    };
    if interrupted {
        let step = Err("interrupted: cleaning up".to_owned().into());
        record::<()>(&mut trial.steps, "trial", started, step);
    }
    let at = Instant::now();
    let cleaned = within(CLEAN_UP, "clean up", clean_up(&pods, &checkpoints, &name)).await;
    record(&mut trial.steps, "clean up", at, cleaned);
    trial
}

/// The trial's steps until one fails.
async fn steps(
    pods: &Api<Pod>,
    checkpoints: &Api<ContainerCheckpoint>,
    image: &str,
    pair: &Pair,
    name: &str,
    steps: &mut Vec<Step>,
) {
    let ns = pods.namespace().unwrap_or_default().to_owned();
    let at = Instant::now();
    let source = counter::pod(name, &ns, &pair.source, image);
    let started = within(START, "start the counter", running(pods, source)).await;
    let Some(source) = record(steps, "start the counter", at, started) else {
        return;
    };
    let at = Instant::now();
    let counted = within(COUNT, "count", count(pods, name)).await;
    let Some(floor) = record(steps, "count", at, counted) else {
        return;
    };
    let at = Instant::now();
    let checkpointed = within(CHECKPOINT, "checkpoint", checkpoint(checkpoints, name)).await;
    if record(steps, "checkpoint", at, checkpointed).is_none() {
        return;
    }
    let at = Instant::now();
    let copy = restored_pod(
        &source,
        &format!("{name}-restored"),
        name,
        Some(&pair.target),
    );
    let restored = within(RESTORE, "restore", running(pods, copy)).await;
    let Some(restored) = record(steps, "restore", at, restored) else {
        return;
    };
    let at = Instant::now();
    let went_on = within(COUNT, "count on", count_on(pods, &restored, floor)).await;
    record(steps, "count on", at, went_on);
}

/// Keeps `step`'s outcome, says it on stderr; its value when it went well.
fn record<T>(steps: &mut Vec<Step>, name: &str, at: Instant, outcome: StepResult<T>) -> Option<T> {
    let seconds = at.elapsed().as_secs();
    let (value, ok, detail, advice) = match outcome {
        Ok((value, detail)) => (Some(value), true, detail, None),
        Err(failure) => (None, false, failure.detail, failure.advice),
    };
    eprintln!(
        "trial: {name}: {} ({seconds}s) {detail}",
        if ok { "ok" } else { "failed" }
    );
    steps.push(Step {
        name: name.to_owned(),
        ok,
        seconds,
        detail,
        advice,
    });
    value
}

/// `step` if it ends within `budget`.
async fn within<T>(
    budget: Duration,
    name: &str,
    step: impl Future<Output = StepResult<T>>,
) -> StepResult<T> {
    tokio::time::timeout(budget, step)
        .await
        .unwrap_or_else(|_| Err(format!("{name} took longer than {}s", budget.as_secs()).into()))
}

/// Creates `pod` and waits until it runs; the running pod.
async fn running(pods: &Api<Pod>, pod: Pod) -> StepResult<Pod> {
    let name = pod.metadata.name.clone().unwrap_or_default();
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(api)
        .map_err(|e| format!("creating pod {name}: {e:#}"))?;
    let mut updates = Box::pin(updates(pods.clone(), &name));
    loop {
        let pod = updates
            .try_next()
            .await?
            .ok_or_else(|| format!("the watch of pod {name} ended"))?;
        match progress(&pod) {
            Progress::Running => {
                let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
                let detail = format!("pod {name} running on {}", node.unwrap_or_default());
                return Ok((pod, detail));
            }
            Progress::Stuck(why) => {
                return Err(Failure {
                    advice: stuck_restore(&why).map(str::to_owned),
                    detail: format!("pod {name} does not start: {why}"),
                });
            }
            Progress::Starting(_) => {}
        }
    }
}

/// Waits for two counter lines; the last value the counter printed before the checkpoint.
async fn count(pods: &Api<Pod>, name: &str) -> StepResult<u64> {
    let params = LogParams {
        container: Some(counter::CONTAINER.to_owned()),
        ..LogParams::default()
    };
    loop {
        let log = pods.logs(name, &params).await.map_err(api)?;
        if let [.., before, last] = counter::values(&log)[..] {
            return Ok((last, format!("counted {before}, {last}")));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Creates the ContainerCheckpoint and waits until it is final.
async fn checkpoint(checkpoints: &Api<ContainerCheckpoint>, name: &str) -> StepResult<()> {
    checkpoints
        .create(&PostParams::default(), &counter::checkpoint(name))
        .await
        .map_err(api)
        .map_err(|e| format!("creating ContainerCheckpoint {name}: {e:#}"))?;
    let mut updates = Box::pin(updates(checkpoints.clone(), name));
    loop {
        let cc = updates
            .try_next()
            .await?
            .ok_or_else(|| format!("the watch of ContainerCheckpoint {name} ended"))?;
        let status = cc.status.unwrap_or_default();
        let message = status.message.unwrap_or_default();
        match status.state {
            Some(CheckpointState::Completed) => {
                let node = status.node_name.unwrap_or_default();
                let size = status.archive_size.unwrap_or_default();
                return Ok(((), format!("{name} Completed on {node}, {size} bytes")));
            }
            Some(CheckpointState::Failed) => {
                return Err(format!("{name} Failed: {message}").into());
            }
            _ => {}
        }
    }
}

/// Waits until the restored counter prints; fails if it started again.
async fn count_on(pods: &Api<Pod>, restored: &Pod, floor: u64) -> StepResult<()> {
    let name = restored.metadata.name.clone().unwrap_or_default();
    let started = restored
        .status
        .iter()
        .flat_map(|s| s.container_statuses.iter().flatten())
        .find(|c| c.name == counter::CONTAINER)
        .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .map(|t| t.0)
        .ok_or_else(|| format!("pod {name} runs without a start time for its counter"))?;
    let params = LogParams {
        container: Some(counter::CONTAINER.to_owned()),
        timestamps: true,
        ..LogParams::default()
    };
    loop {
        let log = pods.logs(&name, &params).await.map_err(api)?;
        match counter::continued(&log, started, floor) {
            Continued::Yes(first) => {
                let detail =
                    format!("the source had counted to {floor}, the copy went on at {first}");
                return Ok(((), detail));
            }
            Continued::Restarted(first) => {
                return Err(format!(
                    "the copy started again at {first} (the source had counted to {floor}): it \
                     was not restored; is the restore webhook reached?"
                )
                .into());
            }
            Continued::NotYet => tokio::time::sleep(POLL).await,
        }
    }
}

/// Deletes the trial's pods and checkpoint (by its label) and waits until they are gone.
async fn clean_up(
    pods: &Api<Pod>,
    checkpoints: &Api<ContainerCheckpoint>,
    name: &str,
) -> StepResult<()> {
    let selector = ListParams::default().labels(&format!("{DOCTOR_TRIAL_LABEL}={name}"));
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete_collection(&now, &selector).await.map_err(api)?;
    checkpoints
        .delete_collection(&DeleteParams::default(), &selector)
        .await
        .map_err(api)?;
    loop {
        let left = pods
            .list_metadata(&selector)
            .await
            .map_err(api)?
            .items
            .len()
            + checkpoints
                .list_metadata(&selector)
                .await
                .map_err(api)?
                .items
                .len();
        if left == 0 {
            return Ok((
                (),
                format!("deleted what carries {DOCTOR_TRIAL_LABEL}={name}"),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}
