//! `kubectl checkpoint warm-start deployment/<d> --from <checkpoint>`: every new pod of the
//! Deployment restores from one checkpoint (its pod template's `restore-from` annotation), with
//! `--replicas` scaling it; `--off` removes the annotation.

use std::process::ExitCode;

use anyhow::Context as _;
use checkpointing::crd::{CheckpointState, ContainerCheckpoint, PodCheckpoint};
use checkpointing::names::{GROUP, RESTORE_FROM_ANNOTATION};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::api::api;
use crate::cli::{UsageError, WarmStart};

/// A checkpoint a pod may restore from, as the restore webhook looks it up.
#[derive(Debug, PartialEq)]
pub struct Checkpoint {
    /// The resource a restoring pod's ServiceAccount must be allowed to `get`.
    pub resource: &'static str,
    pub name: String,
}

/// `checkpoint` if it is Completed, else why a restore from it would be refused.
pub fn usable(
    checkpoint: Checkpoint,
    state: Option<CheckpointState>,
    message: Option<&str>,
) -> Result<Checkpoint, UsageError> {
    if state == Some(CheckpointState::Completed) {
        return Ok(checkpoint);
    }
    // No status yet: the controller has not seen the request.
    let state = state.unwrap_or(CheckpointState::Pending);
    let why = message
        .filter(|m| !m.is_empty())
        .map_or_else(String::new, |m| format!(": {m}"));
    Err(UsageError(format!(
        "{}/{} is {state:?}, not Completed{why}: pods can restore only from a completed checkpoint",
        checkpoint.resource, checkpoint.name
    )))
}

/// The merge patch: the pod template's annotation set to `from` (removed when `None`), and
/// the replicas if given.
pub fn patch(from: Option<&str>, replicas: Option<i32>) -> Value {
    let mut patch = json!({
        "spec": {"template": {"metadata": {"annotations": {RESTORE_FROM_ANNOTATION: from}}}}
    });
    if let Some(n) = replicas {
        patch["spec"]["replicas"] = json!(n);
    }
    patch
}

/// The ServiceAccount the Deployment's pods run as: the restore webhook checks its access for
/// pods a workload controller creates.
pub fn service_account(deployment: &Deployment) -> String {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.service_account_name.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "default".to_owned())
}

/// Whether ServiceAccount `account` of `ns` may get `checkpoint`, asked as the webhook asks.
pub fn access_review(ns: &str, account: &str, checkpoint: &Checkpoint) -> SubjectAccessReview {
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{account}")),
            groups: Some(vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".to_owned(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some("get".to_owned()),
                group: Some(GROUP.to_owned()),
                resource: Some(checkpoint.resource.to_owned()),
                namespace: Some(ns.to_owned()),
                name: Some(checkpoint.name.clone()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// What `run` says of the ServiceAccount's access: `allowed` is the review's answer, `None`
/// when it could not be asked.
pub fn access_line(
    ns: &str,
    account: &str,
    checkpoint: &Checkpoint,
    allowed: Option<bool>,
) -> String {
    let who = format!("serviceaccount {ns}/{account}");
    let what = format!("get on {}/{}", checkpoint.resource, checkpoint.name);
    let see = "see README, Security model: Who may restore";
    match allowed {
        Some(true) => format!("{who} has {what}, which its pods' restores need"),
        Some(false) => format!(
            "warning: {who} lacks {what}: the restore webhook refuses the Deployment's new pods \
             until it is granted ({see})"
        ),
        None => format!("the Deployment's pods restore only if {who} has {what} ({see})"),
    }
}

pub async fn run(client: Client, ns: &str, args: WarmStart) -> anyhow::Result<ExitCode> {
    let name = &args.deployment;
    let deployments = Api::<Deployment>::namespaced(client.clone(), ns);
    let Some(deployment) = deployments
        .get_opt(name)
        .await
        .map_err(api)
        .with_context(|| format!("reading Deployment {ns}/{name}"))?
    else {
        return Err(UsageError(format!("no Deployment {ns}/{name}")).into());
    };
    let checkpoint = match &args.from {
        Some(from) => Some(completed(&client, ns, from).await?),
        None => None,
    };
    let patch = patch(args.from.as_deref(), args.replicas);
    deployments
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map_err(api)
        .with_context(|| format!("patching Deployment {ns}/{name}"))?;
    match &checkpoint {
        Some(c) => println!(
            "deployment/{name}: new pods restore from {}/{}",
            c.resource, c.name
        ),
        None => println!("deployment/{name}: new pods start afresh"),
    }
    if let Some(n) = args.replicas {
        println!("deployment/{name} scaled to {n}");
    }
    if let Some(checkpoint) = &checkpoint {
        let account = service_account(&deployment);
        let review = access_review(ns, &account, checkpoint);
        // Reviewing needs `create` on subjectaccessreviews, which few users have: without it,
        // the reminder alone.
        let allowed = Api::<SubjectAccessReview>::all(client)
            .create(&PostParams::default(), &review)
            .await
            .ok()
            .and_then(|r| r.status)
            .map(|s| s.allowed && s.denied != Some(true));
        println!("{}", access_line(ns, &account, checkpoint, allowed));
    }
    Ok(ExitCode::SUCCESS)
}

/// The Completed checkpoint `name`: the ContainerCheckpoint of that name, else the
/// PodCheckpoint, as the restore webhook looks it up.
async fn completed(client: &Client, ns: &str, name: &str) -> anyhow::Result<Checkpoint> {
    let cc = Api::<ContainerCheckpoint>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(api)
        .with_context(|| format!("reading ContainerCheckpoint {ns}/{name}"))?;
    if let Some(cc) = cc {
        let status = cc.status.unwrap_or_default();
        let checkpoint = Checkpoint {
            resource: "containercheckpoints",
            name: name.to_owned(),
        };
        return Ok(usable(checkpoint, status.state, status.message.as_deref())?);
    }
    let pc = Api::<PodCheckpoint>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(api)
        .with_context(|| format!("reading PodCheckpoint {ns}/{name}"))?;
    let Some(pc) = pc else {
        return Err(UsageError(format!(
            "no ContainerCheckpoint or PodCheckpoint {ns}/{name} to restore from"
        ))
        .into());
    };
    let status = pc.status.unwrap_or_default();
    let checkpoint = Checkpoint {
        resource: "podcheckpoints",
        name: name.to_owned(),
    };
    Ok(usable(checkpoint, status.state, status.message.as_deref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            resource: "podcheckpoints",
            name: "cp1".into(),
        }
    }

    #[test]
    fn the_patch_sets_or_removes_the_annotation_and_scales_if_asked() {
        assert_eq!(
            patch(Some("cp1"), Some(3)),
            json!({"spec": {
                "replicas": 3,
                "template": {"metadata": {"annotations": {RESTORE_FROM_ANNOTATION: "cp1"}}},
            }})
        );
        assert_eq!(
            patch(Some("cp1"), None),
            json!({"spec": {
                "template": {"metadata": {"annotations": {RESTORE_FROM_ANNOTATION: "cp1"}}},
            }})
        );
        // A merge patch removes a key set to null.
        assert_eq!(
            patch(None, Some(0)),
            json!({"spec": {
                "replicas": 0,
                "template": {"metadata": {"annotations": {RESTORE_FROM_ANNOTATION: null}}},
            }})
        );
    }

    #[test]
    fn only_a_completed_checkpoint_is_usable() {
        assert_eq!(
            usable(checkpoint(), Some(CheckpointState::Completed), None).unwrap(),
            checkpoint()
        );
        let err = usable(
            checkpoint(),
            Some(CheckpointState::Failed),
            Some("no space"),
        );
        assert_eq!(
            err.unwrap_err().0,
            "podcheckpoints/cp1 is Failed, not Completed: no space: pods can restore only from \
             a completed checkpoint"
        );
        let err = usable(checkpoint(), None, Some(""));
        assert_eq!(
            err.unwrap_err().0,
            "podcheckpoints/cp1 is Pending, not Completed: pods can restore only from a \
             completed checkpoint"
        );
    }

    #[test]
    fn the_review_asks_for_the_pods_service_account_as_the_webhook_does() {
        let deployment: Deployment = serde_json::from_value(json!({
            "metadata": {"name": "web"},
            "spec": {"selector": {}, "template": {"spec": {
                "serviceAccountName": "app", "containers": [],
            }}},
        }))
        .unwrap();
        assert_eq!(service_account(&deployment), "app");
        assert_eq!(service_account(&Deployment::default()), "default");
        let review = access_review("ns", "app", &checkpoint());
        assert_eq!(
            serde_json::to_value(&review.spec).unwrap(),
            json!({
                "user": "system:serviceaccount:ns:app",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:ns",
                           "system:authenticated"],
                "resourceAttributes": {"verb": "get", "group": GROUP,
                                       "resource": "podcheckpoints", "namespace": "ns",
                                       "name": "cp1"},
            })
        );
    }

    #[test]
    fn the_access_line_says_what_is_known() {
        let c = checkpoint();
        assert_eq!(
            access_line("ns", "app", &c, Some(true)),
            "serviceaccount ns/app has get on podcheckpoints/cp1, which its pods' restores need"
        );
        assert!(access_line("ns", "app", &c, Some(false)).starts_with("warning: "));
        assert_eq!(
            access_line("ns", "app", &c, None),
            "the Deployment's pods restore only if serviceaccount ns/app has get on \
             podcheckpoints/cp1 (see README, Security model: Who may restore)"
        );
    }
}
