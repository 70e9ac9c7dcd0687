//! What noded does with one ContainerCheckpointContent of its node: a pure [`plan`] and the
//! thin shell that carries it out against the API server and the checkpointer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpointing::backoff::Failures;
use checkpointing::crd::{
    CheckpointState, ContainerCheckpointContent, ContainerCheckpointContentStatus,
    MAX_TIMEOUT_SECONDS,
};
use checkpointing::cri::{CriClient, Runtime};
use checkpointing::criu::Diagnosis;
use checkpointing::names::{ARCHIVE_FINALIZER, NODED_MANAGER, RELEASE_SOURCE_ANNOTATION};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::checkpoint::{Artifact, Checkpointer, Failure, Job};
use crate::criu_log::{self, RuntimeDir};
use crate::error::error_chain;
use crate::outbound::{Defaults, OutboundError};
use crate::prereq::Prerequisites;
use crate::push::PushError;
use crate::store::ArchiveKey;

/// The next step for a Content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Claim it first, so deleting it always passes through us and its files go too.
    AddFinalizer,
    /// New: take the checkpoint.
    Take,
    /// Marked running by a previous noded process that did not finish: resolve the attempt.
    Recover,
    /// Being deleted: thaw a held container, remove archive and image, then release the
    /// finalizer.
    Remove,
    /// Its held container is released (its migration failed): thaw it.
    Release,
    Nothing,
}

/// What this process last wrote to a Content. The watch can deliver a Content before our own
/// latest write to it; deciding on that copy would, say, take a just finished checkpoint for
/// one a crashed process left behind. Our finalizer and the checkpoint state only ever move
/// forward, so what we wrote and what the watch shows combine without asking the API server.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// Our finalizer: added (`true`) or released (`false`).
    pub finalizer: Option<bool>,
    pub state: Option<CheckpointState>,
}

impl Written {
    /// Whether `content` shows all of it already (then it need not be remembered).
    pub fn shown_in(&self, content: &ContainerCheckpointContent) -> bool {
        self.finalizer.is_none_or(|f| f == claimed(content))
            && progress(self.state) <= progress(state(content))
    }
}

fn claimed(content: &ContainerCheckpointContent) -> bool {
    content.finalizers().iter().any(|f| f == ARCHIVE_FINALIZER)
}

fn state(content: &ContainerCheckpointContent) -> Option<CheckpointState> {
    content.status.as_ref().and_then(|s| s.state)
}

/// How far along a checkpoint state is: states only move forward.
fn progress(state: Option<CheckpointState>) -> u8 {
    match state {
        None | Some(CheckpointState::Pending) => 0,
        Some(CheckpointState::Running) => 1,
        Some(CheckpointState::Completed | CheckpointState::Failed) => 2,
    }
}

/// The next step for `content`, of which this process last wrote `written`.
pub fn plan(content: &ContainerCheckpointContent, written: Written) -> Step {
    let claimed = written.finalizer.unwrap_or_else(|| claimed(content));
    if content.meta().deletion_timestamp.is_some() {
        return if claimed { Step::Remove } else { Step::Nothing };
    }
    if !claimed {
        return Step::AddFinalizer;
    }
    let state = [state(content), written.state]
        .into_iter()
        .max_by_key(|s| progress(*s))
        .flatten();
    match state {
        Some(CheckpointState::Completed | CheckpointState::Failed) if released(content) => {
            Step::Release
        }
        Some(CheckpointState::Completed | CheckpointState::Failed) => Step::Nothing,
        Some(CheckpointState::Running) => Step::Recover,
        Some(CheckpointState::Pending) | None => Step::Take,
    }
}

/// Whether the container is held frozen and its release asked for.
fn released(content: &ContainerCheckpointContent) -> bool {
    held(content)
        && content
            .annotations()
            .contains_key(RELEASE_SOURCE_ANNOTATION)
}

fn held(content: &ContainerCheckpointContent) -> bool {
    content.status.as_ref().is_some_and(|s| s.source_held)
}

/// The status noded writes while it works on a Content.
pub fn running_status(content: &ContainerCheckpointContent) -> ContainerCheckpointContentStatus {
    ContainerCheckpointContentStatus {
        state: Some(CheckpointState::Running),
        message: Some(format!(
            "checkpointing container {} of pod {}",
            content.spec.container_name, content.spec.pod_name
        )),
        ..Default::default()
    }
}

/// The final status for the outcome of a checkpoint; `criu_version` is the CRIU the
/// prerequisites check found.
pub fn final_status(
    outcome: &Result<Artifact, Failure>,
    criu_version: Option<String>,
) -> ContainerCheckpointContentStatus {
    match outcome {
        Ok(a) => ContainerCheckpointContentStatus {
            state: Some(CheckpointState::Completed),
            ready: true,
            message: Some(match &a.pushed {
                None => format!("checkpoint archive written to {}", a.path.display()),
                Some(pushed) => format!(
                    "checkpoint archive written to {}; {pushed}",
                    a.path.display()
                ),
            }),
            container_id: Some(a.container_id.clone()).filter(|id| !id.is_empty()),
            checkpoint_path: Some(a.path.display().to_string()),
            archive_size: i64::try_from(a.size).ok(),
            archive_digest: Some(a.digest.clone()),
            image: Some(a.image.clone()),
            base_image: a.base_image.clone(),
            checkpoint_time: Some(Time(a.checkpoint_time)),
            runtime: Some(a.runtime.clone()),
            criu_version,
            source_held: a.held,
            criu_log: None,
        },
        Err(e) => ContainerCheckpointContentStatus {
            state: Some(CheckpointState::Failed),
            ready: false,
            message: Some(error_chain(e)),
            ..Default::default()
        },
    }
}

/// The status of the Content `name` whose dump failed, told through CRIU's log: the cause in
/// the message (instead of the runtime's words), the log kept for `kubectl checkpoint logs`.
pub fn told_by_criu(
    status: ContainerCheckpointContentStatus,
    name: &str,
    criu: Diagnosis,
) -> ContainerCheckpointContentStatus {
    ContainerCheckpointContentStatus {
        message: Some(criu_log::message(&criu, name)),
        criu_log: criu.log,
        ..status
    }
}

/// Everything the reconciler needs, shared by all reconciles.
pub struct Context<R = CriClient> {
    pub client: kube::Client,
    pub checkpointer: Checkpointer<R>,
    pub default_timeout: Duration,
    pub prerequisites: Arc<Prerequisites>,
    /// Where checkpoints are pushed when their request names no registry.
    pub outbound: Defaults,
    /// Events about Contents (a pushed copy that stays).
    pub recorder: Recorder,
    /// Where files the runtime names (CRIU's log of a failed dump) are read; none when unset.
    runtime_dir: Option<RuntimeDir>,
    /// What this process last wrote to each Content (by UID) that the watch has not shown yet.
    written: Mutex<HashMap<String, Written>>,
    /// Consecutive failed reconciles per Content UID, for the backoff.
    failures: Failures<String>,
}

impl<R> Context<R> {
    pub fn new(
        client: kube::Client,
        checkpointer: Checkpointer<R>,
        default_timeout: Duration,
        prerequisites: Arc<Prerequisites>,
        outbound: Defaults,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), NODED_MANAGER.into()),
            client,
            checkpointer,
            default_timeout,
            prerequisites,
            outbound,
            written: Mutex::default(),
            failures: Failures::default(),
            runtime_dir: None,
        }
    }

    /// Reads CRIU's logs of failed dumps in `dir`.
    pub fn with_runtime_dir(mut self, dir: Option<RuntimeDir>) -> Self {
        self.runtime_dir = dir;
        self
    }

    fn written(&self, uid: &str) -> Written {
        let written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        written.get(uid).copied().unwrap_or_default()
    }

    /// Remembers a write to the Content `uid`.
    fn wrote(&self, uid: &str, change: impl FnOnce(&mut Written)) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        change(written.entry(uid.to_owned()).or_default());
    }

    /// Forgets what `content` shows already.
    fn seen(&self, uid: &str, content: &ContainerCheckpointContent) {
        let mut written = self.written.lock().unwrap_or_else(|p| p.into_inner());
        if written.get(uid).is_some_and(|w| w.shown_in(content)) {
            written.remove(uid);
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating ContainerCheckpointContent {name}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("thawing the container ContainerCheckpointContent {name} held")]
    Release {
        name: String,
        #[source]
        source: Failure,
    },
    #[error("removing the files of ContainerCheckpointContent {name}")]
    Remove {
        name: String,
        #[source]
        source: Failure,
    },
    #[error("deleting the pushed copy {image} of ContainerCheckpointContent {name}")]
    Unpublish {
        name: String,
        image: String,
        #[source]
        source: PushError,
    },
    #[error("reading the registry credentials of ContainerCheckpointContent {name}")]
    Credentials {
        name: String,
        #[source]
        source: OutboundError,
    },
}

fn job(content: &ContainerCheckpointContent, default_timeout: Duration) -> Job<'_> {
    Job {
        name: content.metadata.name.as_deref().unwrap_or_default(),
        key: ArchiveKey {
            namespace: content.metadata.namespace.as_deref().unwrap_or_default(),
            pod: &content.spec.pod_name,
            container: &content.spec.container_name,
            uid: content.metadata.uid.as_deref().unwrap_or_default(),
        },
        pod_uid: &content.spec.pod_uid,
        timeout: checkpoint_timeout(content.spec.timeout_seconds, default_timeout),
        volumes: content.spec.volumes.clone(),
        // Resolved by the shell, which reads the Secret: see [`pushed::push_of`].
        push: None,
        hold: content.spec.hold_source,
    }
}

/// The runtime's time for a checkpoint: the Content's `timeoutSeconds`, capped at the schema's
/// maximum, or `default` when unset or not positive. The schema bounds it already, but an older
/// CRD may be installed, and an unbounded value once overflowed the deadline and panicked.
pub fn checkpoint_timeout(seconds: Option<i64>, default: Duration) -> Duration {
    let max = Duration::from_secs(MAX_TIMEOUT_SECONDS.unsigned_abs());
    match seconds.and_then(|s| u64::try_from(s).ok()) {
        Some(0) | None => default.min(max),
        Some(s) => Duration::from_secs(s).min(max),
    }
}

pub async fn reconcile<R: Runtime>(
    content: Arc<ContainerCheckpointContent>,
    ctx: Arc<Context<R>>,
) -> Result<Action, Error> {
    let name = content.name_any();
    let uid = content.uid().unwrap_or_default();
    let api: Api<ContainerCheckpointContent> =
        Api::namespaced(ctx.client.clone(), &content.namespace().unwrap_or_default());
    let api_err = |source| Error::Api {
        name: name.clone(),
        source,
    };
    ctx.seen(&uid, &content);
    let job = job(&content, ctx.default_timeout);
    let mut step = plan(&content, ctx.written(&uid));
    tracing::debug!(content = %name, ?step, "reconcile");
    if step == Step::AddFinalizer {
        set_finalizer(&api, &content, true).await.map_err(api_err)?;
        ctx.wrote(&uid, |w| w.finalizer = Some(true));
        // On to the checkpoint at once: the watch would bring back only what was just written.
        step = plan(&content, ctx.written(&uid));
    }
    match step {
        Step::AddFinalizer | Step::Nothing => {}
        Step::Take | Step::Recover => {
            let mut job = job;
            let push = match pushed::push_of(&content, &ctx).await {
                // The API server may answer next time: not the request's fault.
                Err(source @ OutboundError::SecretUnreadable { .. }) => {
                    return Err(Error::Credentials {
                        name: name.clone(),
                        source,
                    });
                }
                other => other,
            };
            let outcome = if let Err(e) = push {
                // Refused before anything is dumped or written.
                Err(Failure::Registry(e))
            } else if step == Step::Take {
                job.push = push.unwrap_or_default();
                let running = running_status(&content);
                let state = running.state;
                // Its own task: the dump's blocking parts must not stall the write (a new
                // connection to the API server is driven by the request's own future).
                let marking = (content.status.as_ref() != Some(&running)).then(|| {
                    let (api, name) = (api.clone(), name.clone());
                    tokio::spawn(async move { write_status(&api, &name, &running).await })
                });
                if job.hold {
                    // Running first: a noded restarted mid-dump must find it, and thaw the
                    // source it may have frozen (Recover), not dump a frozen container again.
                    marked(marking).await.map_err(api_err)?;
                    ctx.wrote(&uid, |w| w.state = state);
                    ctx.checkpointer.take(&job).await
                } else {
                    // Written while the dump runs: the round trip is not added to the
                    // checkpoint. A noded restarted before it landed dumps the running
                    // container again; the final status below supersedes it.
                    let outcome = ctx.checkpointer.take(&job).await;
                    match marked(marking).await {
                        Ok(()) => ctx.wrote(&uid, |w| w.state = state),
                        Err(error) => {
                            tracing::info!(content = %name, %error, "Running status not written")
                        }
                    }
                    outcome
                }
            } else {
                job.push = push.unwrap_or_default();
                let status = content.status.as_ref();
                let container_id = status.and_then(|s| s.container_id.as_deref());
                ctx.checkpointer.recover(&job, container_id).await
            };
            report(&name, &outcome);
            let mut status = final_status(&outcome, ctx.prerequisites.criu_version());
            let dir = ctx.runtime_dir.clone().unwrap_or_default();
            if let Some(criu) = outcome
                .as_ref()
                .err()
                .and_then(|e| criu_log::diagnose(e, job.timeout, &dir))
            {
                status = told_by_criu(status, &name, criu);
            }
            write_status(&api, &name, &status).await.map_err(api_err)?;
            ctx.wrote(&uid, |w| w.state = status.state);
        }
        Step::Release => {
            release(&content, &job, &ctx).await?;
            let mut status = content.status.clone().unwrap_or_default();
            status.source_held = false;
            write_status(&api, &name, &status).await.map_err(api_err)?;
        }
        Step::Remove => {
            if held(&content) {
                release(&content, &job, &ctx).await?;
            }
            pushed::let_go(&content, &ctx).await?;
            ctx.checkpointer
                .remove(&job)
                .map_err(|source| Error::Remove {
                    name: name.clone(),
                    source,
                })?;
            tracing::info!(content = %name, "archive and image removed");
            match set_finalizer(&api, &content, false).await {
                // Already gone: nothing left to release.
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                other => other.map_err(api_err)?,
            }
            ctx.wrote(&uid, |w| w.finalizer = Some(false));
        }
    }
    ctx.failures.succeeded(&uid);
    Ok(Action::await_change())
}

/// Thaws the container `content` held.
async fn release<R: Runtime>(
    content: &ContainerCheckpointContent,
    job: &Job<'_>,
    ctx: &Context<R>,
) -> Result<(), Error> {
    let container_id = content
        .status
        .as_ref()
        .and_then(|s| s.container_id.as_deref());
    ctx.checkpointer
        .release(job, container_id)
        .await
        .map_err(|source| Error::Release {
            name: content.name_any(),
            source,
        })
}

/// Logs and retries with a per-Content backoff.
pub fn error_policy<R>(
    content: Arc<ContainerCheckpointContent>,
    error: &Error,
    ctx: Arc<Context<R>>,
) -> Action {
    let (failures, retry) = ctx.failures.failed(content.uid().unwrap_or_default());
    tracing::warn!(
        error = %error_chain(error),
        content = %content.name_any(),
        failures,
        retry_secs = retry.as_secs(),
        "reconcile failed; retrying"
    );
    Action::requeue(retry)
}

fn report(name: &str, outcome: &Result<Artifact, Failure>) {
    match outcome {
        Ok(a) => {
            tracing::info!(content = %name, path = %a.path.display(), size = a.size, image = %a.image, "checkpoint completed")
        }
        Err(e) => tracing::warn!(content = %name, error = %error_chain(e), "checkpoint failed"),
    }
}

fn apply_params() -> PatchParams {
    PatchParams::apply(NODED_MANAGER).force()
}

/// Adds or drops our finalizer with a JSON patch whose `test` makes it fail instead of
/// clobbering a list someone changed since we read it.
async fn set_finalizer(
    api: &Api<ContainerCheckpointContent>,
    content: &ContainerCheckpointContent,
    present: bool,
) -> Result<(), kube::Error> {
    let name = content.name_any();
    let current = content.finalizers();
    let ops = match (current.iter().position(|f| f == ARCHIVE_FINALIZER), present) {
        (None, true) if current.is_empty() => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": null},
            {"op": "add", "path": "/metadata/finalizers", "value": [ARCHIVE_FINALIZER]},
        ]),
        (None, true) => json!([
            {"op": "test", "path": "/metadata/finalizers", "value": current},
            {"op": "add", "path": "/metadata/finalizers/-", "value": ARCHIVE_FINALIZER},
        ]),
        (Some(i), false) => json!([
            {"op": "test", "path": format!("/metadata/finalizers/{i}"), "value": ARCHIVE_FINALIZER},
            {"op": "remove", "path": format!("/metadata/finalizers/{i}")},
        ]),
        _ => return Ok(()),
    };
    let patch: json_patch::Patch = serde_json::from_value(ops).expect("well-formed JSON patch");
    api.patch(
        &name,
        &PatchParams {
            field_manager: Some(NODED_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Json::<()>(patch),
    )
    .await
    .map(drop)
}

/// The outcome of the Running write `marking` started, if it started one.
async fn marked(
    marking: Option<tokio::task::JoinHandle<Result<(), kube::Error>>>,
) -> Result<(), kube::Error> {
    match marking {
        None => Ok(()),
        Some(task) => match task.await {
            Ok(written) => written,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Only as the runtime shuts down: the final status is written anyway, if it can be.
            Err(_) => Ok(()),
        },
    }
}

async fn write_status(
    api: &Api<ContainerCheckpointContent>,
    name: &str,
    status: &ContainerCheckpointContentStatus,
) -> Result<(), kube::Error> {
    let patch = json!({
        "apiVersion": ContainerCheckpointContent::api_version(&()),
        "kind": ContainerCheckpointContent::kind(&()),
        "status": status,
    });
    api.patch_status(name, &apply_params(), &Patch::Apply(patch))
        .await
        .map(drop)
}

mod pushed;
#[cfg(test)]
mod tests;
