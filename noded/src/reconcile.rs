//! What noded does with one ContainerCheckpointContent of its node: a pure [`plan`] and the
//! thin shell that carries it out against the API server and the checkpointer.

use std::sync::Arc;
use std::time::Duration;

use checkpointing::crd::{
    CheckpointState, ContainerCheckpointContent, ContainerCheckpointContentStatus,
};
use checkpointing::cri::CriClient;
use checkpointing::names::{ARCHIVE_FINALIZER, NODED_MANAGER};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::checkpoint::{Artifact, Checkpointer, Failure, Job};
use crate::error::error_chain;
use crate::prereq::Prerequisites;
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
    /// Being deleted: remove archive and image, then release the finalizer.
    Remove,
    Nothing,
}

pub fn plan(content: &ContainerCheckpointContent) -> Step {
    let claimed = content.finalizers().iter().any(|f| f == ARCHIVE_FINALIZER);
    if content.meta().deletion_timestamp.is_some() {
        return if claimed { Step::Remove } else { Step::Nothing };
    }
    if !claimed {
        return Step::AddFinalizer;
    }
    match content.status.as_ref().and_then(|s| s.state) {
        Some(CheckpointState::Completed | CheckpointState::Failed) => Step::Nothing,
        Some(CheckpointState::Running) => Step::Recover,
        Some(CheckpointState::Pending) | None => Step::Take,
    }
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
            message: Some(format!(
                "checkpoint archive written to {}",
                a.path.display()
            )),
            container_id: Some(a.container_id.clone()).filter(|id| !id.is_empty()),
            checkpoint_path: Some(a.path.display().to_string()),
            archive_size: i64::try_from(a.size).ok(),
            archive_digest: Some(a.digest.clone()),
            image: Some(a.image.clone()),
            checkpoint_time: Some(Time(a.checkpoint_time)),
            runtime: Some(a.runtime.clone()),
            criu_version,
        },
        Err(e) => ContainerCheckpointContentStatus {
            state: Some(CheckpointState::Failed),
            ready: false,
            message: Some(error_chain(e)),
            ..Default::default()
        },
    }
}

/// Everything the reconciler needs, shared by all reconciles.
pub struct Context {
    pub client: kube::Client,
    pub checkpointer: Checkpointer<CriClient>,
    pub default_timeout: Duration,
    pub prerequisites: Arc<Prerequisites>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("updating ContainerCheckpointContent {name}")]
    Api {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("removing the files of ContainerCheckpointContent {name}")]
    Remove {
        name: String,
        #[source]
        source: Failure,
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
        timeout: content
            .spec
            .timeout_seconds
            .and_then(|s| u64::try_from(s).ok())
            .map_or(default_timeout, Duration::from_secs),
    }
}

pub async fn reconcile(
    cached: Arc<ContainerCheckpointContent>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let name = cached.name_any();
    let api: Api<ContainerCheckpointContent> =
        Api::namespaced(ctx.client.clone(), &cached.namespace().unwrap_or_default());
    let api_err = |source| Error::Api {
        name: name.clone(),
        source,
    };
    // The cache can lag behind our own last status write; deciding on it would take a just
    // finished attempt for one a crashed process left behind.
    let Some(content) = api.get_opt(&name).await.map_err(api_err)? else {
        return Ok(Action::await_change());
    };
    let job = job(&content, ctx.default_timeout);
    let step = plan(&content);
    tracing::debug!(content = %name, ?step, "reconcile");
    match step {
        Step::AddFinalizer => set_finalizer(&api, &content, true).await.map_err(api_err)?,
        Step::Take | Step::Recover => {
            let outcome = if step == Step::Take {
                write_status(&api, &name, &running_status(&content))
                    .await
                    .map_err(api_err)?;
                ctx.checkpointer.take(&job).await
            } else {
                let status = content.status.as_ref();
                let container_id = status.and_then(|s| s.container_id.as_deref());
                ctx.checkpointer.recover(&job, container_id).await
            };
            report(&name, &outcome);
            let status = final_status(&outcome, ctx.prerequisites.criu_version());
            write_status(&api, &name, &status).await.map_err(api_err)?;
        }
        Step::Remove => {
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
        }
        Step::Nothing => {}
    }
    Ok(Action::await_change())
}

pub fn error_policy(_: Arc<ContainerCheckpointContent>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %error_chain(error), "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
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

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn content(
        finalizer: bool,
        deleting: bool,
        state: Option<CheckpointState>,
    ) -> ContainerCheckpointContent {
        let mut c = crate::testing::content("node1", None);
        if finalizer {
            c.metadata.finalizers = Some(vec![ARCHIVE_FINALIZER.into()]);
        }
        if deleting {
            c.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
        }
        c.status = state.map(|s| ContainerCheckpointContentStatus {
            state: Some(s),
            ..Default::default()
        });
        c
    }

    #[test]
    fn plan_claims_takes_recovers_and_removes() {
        use CheckpointState::*;
        assert_eq!(plan(&content(false, false, None)), Step::AddFinalizer);
        assert_eq!(plan(&content(true, false, None)), Step::Take);
        assert_eq!(plan(&content(true, false, Some(Pending))), Step::Take);
        assert_eq!(plan(&content(true, false, Some(Running))), Step::Recover);
        assert_eq!(plan(&content(true, false, Some(Completed))), Step::Nothing);
        assert_eq!(plan(&content(true, false, Some(Failed))), Step::Nothing);
        assert_eq!(plan(&content(true, true, Some(Completed))), Step::Remove);
        assert_eq!(plan(&content(true, true, Some(Running))), Step::Remove);
        assert_eq!(plan(&content(false, true, None)), Step::Nothing);
    }

    #[test]
    fn timeout_comes_from_the_spec_or_the_default() {
        let mut c = content(true, false, None);
        assert_eq!(
            job(&c, Duration::from_secs(120)).timeout,
            Duration::from_secs(120)
        );
        c.spec.timeout_seconds = Some(7);
        assert_eq!(
            job(&c, Duration::from_secs(120)).timeout,
            Duration::from_secs(7)
        );
    }

    #[test]
    fn failures_carry_their_cause() {
        let status = final_status(
            &Err(Failure::Store(std::io::Error::other(
                "No space left on device",
            ))),
            None,
        );
        assert_eq!(status.state, Some(CheckpointState::Failed));
        assert!(!status.ready);
        assert!(status.message.unwrap().contains("No space left on device"));
    }

    #[test]
    fn a_completed_status_names_the_criu_found() {
        let artifact = Artifact {
            container_id: "c1".into(),
            path: "/var/lib/kubelet/checkpoints/x.tar".into(),
            size: 10,
            digest: "sha256:aa".into(),
            image: "localhost:5050/default/cc@sha256:bb".into(),
            checkpoint_time: Timestamp::now(),
            runtime: "containerd v2.1.4".into(),
        };
        let status = final_status(&Ok(artifact), Some("4.1".into()));
        assert_eq!(status.criu_version.as_deref(), Some("4.1"));
        assert_eq!(status.state, Some(CheckpointState::Completed));
    }
}
