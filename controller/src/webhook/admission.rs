//! The restore admission decision: whether a new pod may restore from the ContainerCheckpoint
//! its `restore-from` annotation names, and the JSON patch that makes it do so. Pure functions
//! over what the webhook shell looked up; a denial is all the user sees, so each one says why
//! and what to do.

use checkpointing::crd::{CheckpointState, ContainerCheckpoint};
use checkpointing::names::{
    GROUP, RESTORE_FROM_ANNOTATION, RESTORED_FROM_DIGEST_ANNOTATION, is_dns_subdomain, parse_digest,
};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use crate::validation::{quoted_list, shown};

/// The resource a restoring user must be allowed to `get` (SubjectAccessReview attributes).
pub const CHECKPOINT_RESOURCE: &str = "containercheckpoints";

/// Whether the requesting user may read the checkpoint, as a SubjectAccessReview answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    pub allowed: bool,
    /// The authorizer's reason or evaluation error, if it gave one.
    pub reason: String,
}

/// Why a restore pod is refused. `Display` is the admission message; [`Denial::reason`] the
/// metrics label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("the pod could not be read as a v1 Pod ({error}); fix the pod's spec")]
    UnreadablePod { error: String },
    #[error(
        "annotation {RESTORE_FROM_ANNOTATION} is {}, which is not a valid ContainerCheckpoint \
         name (lowercase letters, digits, '-' and '.', at most 253 characters); set it to the \
         name of a ContainerCheckpoint in namespace {namespace:?}",
        shown(.value)
    )]
    InvalidReference { value: String, namespace: String },
    #[error(
        "annotation {RESTORE_FROM_ANNOTATION} names ContainerCheckpoint {} in namespace {}, but \
         a pod can only restore from a checkpoint in its own namespace {namespace:?}; checkpoint \
         the container in namespace {namespace:?} and set the annotation to that checkpoint's \
         name alone",
        shown(.name),
        shown(.other)
    )]
    OtherNamespace {
        other: String,
        name: String,
        namespace: String,
    },
    #[error(
        "user {user:?} may not get ContainerCheckpoint {name:?} in namespace \
         {namespace:?}{}; restoring from a checkpoint needs the right to read it (it holds the \
         process's memory): ask for get on {CHECKPOINT_RESOURCE}.{GROUP} in namespace \
         {namespace:?}",
        because(.reason)
    )]
    Forbidden {
        user: String,
        name: String,
        namespace: String,
        reason: String,
    },
    #[error(
        "could not check whether user {user:?} may get ContainerCheckpoint {name:?} in namespace \
         {namespace:?} ({error}); create the pod again"
    )]
    AccessCheckFailed {
        user: String,
        name: String,
        namespace: String,
        error: String,
    },
    #[error(
        "could not read ContainerCheckpoint {name:?} in namespace {namespace:?} ({error}); \
         create the pod again"
    )]
    LookupFailed {
        name: String,
        namespace: String,
        error: String,
    },
    #[error(
        "ContainerCheckpoint {name:?} not found in namespace {namespace:?}; checkpoint the \
         container first (kubectl apply a ContainerCheckpoint and wait until it is Completed), or \
         fix annotation {RESTORE_FROM_ANNOTATION}"
    )]
    NotFound { name: String, namespace: String },
    #[error(
        "ContainerCheckpoint {name:?} in namespace {namespace:?} is {state}, not Completed{}; {}",
        because(.message),
        advice_for(.state)
    )]
    NotCompleted {
        name: String,
        namespace: String,
        state: String,
        message: String,
    },
    #[error(
        "ContainerCheckpoint {name:?} in namespace {namespace:?} is Completed but its \
         status.image {} is not an image reference with a sha256 digest; checkpoint the \
         container again",
        .image.as_deref().map_or_else(|| "(unset)".to_owned(), shown)
    )]
    NoImage {
        name: String,
        namespace: String,
        image: Option<String>,
    },
    #[error(
        "ContainerCheckpoint {name:?} holds container {container:?}, but this pod has no \
         container of that name (its containers are {}); name the restored container \
         {container:?}",
        quoted_list(.containers)
    )]
    ContainerNotInPod {
        name: String,
        container: String,
        containers: Vec<String>,
    },
}

impl Denial {
    /// CamelCase reason for the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::UnreadablePod { .. } => "UnreadablePod",
            Self::InvalidReference { .. } => "InvalidReference",
            Self::OtherNamespace { .. } => "OtherNamespace",
            Self::Forbidden { .. } => "Forbidden",
            Self::AccessCheckFailed { .. } => "AccessCheckFailed",
            Self::LookupFailed { .. } => "LookupFailed",
            Self::NotFound { .. } => "NotFound",
            Self::NotCompleted { .. } => "NotCompleted",
            Self::NoImage { .. } => "NoImage",
            Self::ContainerNotInPod { .. } => "ContainerNotInPod",
        }
    }
}

/// An admitted restore: what changes and the JSON patch (RFC 6902) that changes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Restore {
    pub container: String,
    pub image: String,
    /// `sha256:<hex>`, the digest part of `image`.
    pub digest: String,
    pub patch: Value,
}

/// The ContainerCheckpoint a pod asks to restore from: `None` without the annotation. Checked
/// before anything is looked up, so a hostile value never reaches an API path.
pub fn requested(pod: &Pod, namespace: &str) -> Result<Option<String>, Denial> {
    let Some(value) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(RESTORE_FROM_ANNOTATION))
    else {
        return Ok(None);
    };
    let name = match value.split_once('/') {
        // The qualified form is accepted for the pod's own namespace only.
        Some((other, name)) if other != namespace => {
            return Err(Denial::OtherNamespace {
                other: other.to_owned(),
                name: name.to_owned(),
                namespace: namespace.to_owned(),
            });
        }
        Some((_, name)) => name,
        None => value.as_str(),
    };
    if !is_dns_subdomain(name) {
        return Err(Denial::InvalidReference {
            value: value.clone(),
            namespace: namespace.to_owned(),
        });
    }
    Ok(Some(name.to_owned()))
}

/// Decides a restore of `pod` (in `namespace`) from checkpoint `name`, requested by `user`
/// with `access`; `checkpoint` is the lookup's result, `None` when it does not exist (or was
/// not looked up because access was refused: whether it exists is not told to someone who may
/// not read it).
pub fn decide(
    pod: &Pod,
    namespace: &str,
    name: &str,
    user: &str,
    access: &Access,
    checkpoint: Option<&ContainerCheckpoint>,
) -> Result<Restore, Denial> {
    if !access.allowed {
        return Err(Denial::Forbidden {
            user: user.to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            reason: access.reason.clone(),
        });
    }
    let Some(checkpoint) = checkpoint else {
        return Err(Denial::NotFound {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        });
    };
    let status = checkpoint.status.as_ref();
    let state = status.and_then(|s| s.state);
    if state != Some(CheckpointState::Completed) {
        return Err(Denial::NotCompleted {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            state: state.map_or_else(|| "not started yet".to_owned(), |s| format!("{s:?}")),
            message: status.and_then(|s| s.message.clone()).unwrap_or_default(),
        });
    }
    let image = status.and_then(|s| s.image.clone());
    let Some((image, digest)) = image
        .as_deref()
        .and_then(|i| digest_of(i).map(|d| (i.to_owned(), d.to_owned())))
    else {
        return Err(Denial::NoImage {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            image,
        });
    };
    let container = &checkpoint.spec.container;
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let Some(index) = containers.iter().position(|c| c == container) else {
        return Err(Denial::ContainerNotInPod {
            name: name.to_owned(),
            container: container.clone(),
            containers,
        });
    };
    // `add` sets a member whether or not it exists; the annotations map exists, as it holds
    // restore-from.
    let annotation = pointer_token(RESTORED_FROM_DIGEST_ANNOTATION);
    let patch = json!([
        {
            "op": "add",
            "path": format!("/spec/containers/{index}/image"),
            "value": image,
        },
        {
            "op": "add",
            "path": format!("/metadata/annotations/{annotation}"),
            "value": digest,
        },
    ]);
    Ok(Restore {
        container: container.clone(),
        image,
        digest,
        patch,
    })
}

/// The `sha256:<64 hex>` digest of an image reference `name@sha256:…`.
fn digest_of(image: &str) -> Option<&str> {
    parse_digest(image.rsplit_once('@')?.1)
}

/// A JSON pointer reference token (RFC 6901): `~` and `/` escaped.
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn because(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}

fn advice_for(state: &str) -> &'static str {
    match state {
        "Failed" => {
            "fix the cause, delete the ContainerCheckpoint and create it again, then create the \
             pod again"
        }
        _ => "wait until it is Completed, then create the pod again",
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use checkpointing::crd::{ContainerCheckpointSpec, ContainerCheckpointStatus};
    use k8s_openapi::api::core::v1::{Container, PodSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    pub const DIGEST: &str =
        "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    pub fn image() -> String {
        format!("localhost:5050/default/counter-checkpoint@{DIGEST}")
    }

    /// The seed's restored pod: `counter` plus a sidecar, restoring from `from` when given.
    pub fn pod(from: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("restored-app".into()),
                namespace: Some("default".into()),
                annotations: from.map(|f| {
                    [
                        (RESTORE_FROM_ANNOTATION.to_owned(), f.to_owned()),
                        ("note".to_owned(), "kept".to_owned()),
                    ]
                    .into()
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        name: "sidecar".into(),
                        image: Some("nginx".into()),
                        ..Default::default()
                    },
                    Container {
                        name: "counter".into(),
                        image: Some("busybox".into()),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            status: None,
        }
    }

    pub fn checkpoint(state: Option<CheckpointState>, message: &str) -> ContainerCheckpoint {
        let mut cc = ContainerCheckpoint::new(
            "counter-checkpoint",
            ContainerCheckpointSpec {
                pod_name: "stateful-app".into(),
                container: "counter".into(),
                namespace: None,
                timeout_seconds: None,
            },
        );
        cc.metadata.namespace = Some("default".into());
        cc.status = Some(ContainerCheckpointStatus {
            state,
            message: (!message.is_empty()).then(|| message.to_owned()),
            image: (state == Some(CheckpointState::Completed)).then(image),
            ..Default::default()
        });
        cc
    }

    fn allowed() -> Access {
        Access {
            allowed: true,
            reason: String::new(),
        }
    }

    fn completed() -> ContainerCheckpoint {
        checkpoint(Some(CheckpointState::Completed), "checkpoint completed")
    }

    fn deny(pod: &Pod, access: &Access, cc: Option<&ContainerCheckpoint>) -> Denial {
        decide(pod, "default", "counter-checkpoint", "alice", access, cc).unwrap_err()
    }

    #[test]
    fn pods_without_the_annotation_pass() {
        assert_eq!(requested(&pod(None), "default"), Ok(None));
        let mut other = pod(None);
        other.metadata.annotations = Some([("a".to_owned(), "b".to_owned())].into());
        assert_eq!(requested(&other, "default"), Ok(None));
    }

    #[test]
    fn the_annotation_names_a_checkpoint_of_the_pods_namespace() {
        assert_eq!(
            requested(&pod(Some("counter-checkpoint")), "default"),
            Ok(Some("counter-checkpoint".into()))
        );
        // Qualified with the pod's own namespace: the same thing.
        assert_eq!(
            requested(&pod(Some("default/counter-checkpoint")), "default"),
            Ok(Some("counter-checkpoint".into()))
        );
    }

    #[test]
    fn another_namespace_is_denied() {
        let err = requested(&pod(Some("prod/counter-checkpoint")), "default").unwrap_err();
        assert_eq!(err.reason(), "OtherNamespace");
        assert_eq!(
            err.to_string(),
            "annotation checkpointing.zacchaeuschok.github.io/restore-from names \
             ContainerCheckpoint \"counter-checkpoint\" in namespace \"prod\", but a pod can only \
             restore from a checkpoint in its own namespace \"default\"; checkpoint the container \
             in namespace \"default\" and set the annotation to that checkpoint's name alone"
        );
    }

    #[test]
    fn invalid_names_are_denied_before_any_lookup() {
        for bad in ["", "Counter", "../x", "a/b/c", "default/", "x y"] {
            let err = requested(&pod(Some(bad)), "default").unwrap_err();
            assert!(
                matches!(
                    err,
                    Denial::InvalidReference { .. } | Denial::OtherNamespace { .. }
                ),
                "{bad:?}: {err}"
            );
        }
        let err = requested(&pod(Some("../x")), "default").unwrap_err();
        assert_eq!(err.reason(), "OtherNamespace");
        let err = requested(&pod(Some("Counter_1")), "default").unwrap_err();
        assert_eq!(err.reason(), "InvalidReference");
        assert_eq!(
            err.to_string(),
            "annotation checkpointing.zacchaeuschok.github.io/restore-from is \"Counter_1\", \
             which is not a valid ContainerCheckpoint name (lowercase letters, digits, '-' and \
             '.', at most 253 characters); set it to the name of a ContainerCheckpoint in \
             namespace \"default\""
        );
        let long = "a".repeat(10_000);
        let err = requested(&pod(Some(&long)), "default").unwrap_err();
        assert!(err.to_string().len() < 400, "{err}");
        assert!(err.to_string().contains("10000 characters"), "{err}");
    }

    #[test]
    fn users_who_may_not_read_the_checkpoint_are_denied() {
        let refused = Access {
            allowed: false,
            reason: String::new(),
        };
        let err = deny(
            &pod(Some("counter-checkpoint")),
            &refused,
            Some(&completed()),
        );
        assert_eq!(err.reason(), "Forbidden");
        assert_eq!(
            err.to_string(),
            "user \"alice\" may not get ContainerCheckpoint \"counter-checkpoint\" in namespace \
             \"default\"; restoring from a checkpoint needs the right to read it (it holds the \
             process's memory): ask for get on \
             containercheckpoints.checkpointing.zacchaeuschok.github.io in namespace \"default\""
        );
        // Not even whether the checkpoint exists is told.
        let with_reason = Access {
            allowed: false,
            reason: "no RBAC policy matched".into(),
        };
        assert_eq!(
            deny(&pod(Some("counter-checkpoint")), &with_reason, None),
            Denial::Forbidden {
                user: "alice".into(),
                name: "counter-checkpoint".into(),
                namespace: "default".into(),
                reason: "no RBAC policy matched".into(),
            }
        );
        assert!(
            deny(&pod(Some("counter-checkpoint")), &with_reason, None)
                .to_string()
                .contains("in namespace \"default\" (no RBAC policy matched); restoring"),
        );
    }

    #[test]
    fn missing_checkpoint_is_denied() {
        let err = deny(&pod(Some("counter-checkpoint")), &allowed(), None);
        assert_eq!(err.reason(), "NotFound");
        assert_eq!(
            err.to_string(),
            "ContainerCheckpoint \"counter-checkpoint\" not found in namespace \"default\"; \
             checkpoint the container first (kubectl apply a ContainerCheckpoint and wait until \
             it is Completed), or fix annotation checkpointing.zacchaeuschok.github.io/restore-from"
        );
    }

    #[test]
    fn checkpoint_not_completed_is_denied_with_its_state_and_message() {
        let p = pod(Some("counter-checkpoint"));
        let failed = checkpoint(
            Some(CheckpointState::Failed),
            "pod \"stateful-app\" not found in namespace \"default\"",
        );
        let err = deny(&p, &allowed(), Some(&failed));
        assert_eq!(err.reason(), "NotCompleted");
        assert_eq!(
            err.to_string(),
            "ContainerCheckpoint \"counter-checkpoint\" in namespace \"default\" is Failed, not \
             Completed (pod \"stateful-app\" not found in namespace \"default\"); fix the cause, \
             delete the ContainerCheckpoint and create it again, then create the pod again"
        );
        let running = checkpoint(Some(CheckpointState::Running), "checkpointing on node1");
        assert_eq!(
            deny(&p, &allowed(), Some(&running)).to_string(),
            "ContainerCheckpoint \"counter-checkpoint\" in namespace \"default\" is Running, not \
             Completed (checkpointing on node1); wait until it is Completed, then create the pod \
             again"
        );
        let new = checkpoint(None, "");
        assert_eq!(
            deny(&p, &allowed(), Some(&new)).to_string(),
            "ContainerCheckpoint \"counter-checkpoint\" in namespace \"default\" is not started \
             yet, not Completed; wait until it is Completed, then create the pod again"
        );
    }

    #[test]
    fn completed_checkpoint_without_a_digest_is_denied() {
        let p = pod(Some("counter-checkpoint"));
        let mut cc = completed();
        cc.status.as_mut().unwrap().image = Some("localhost:5050/default/x:latest".into());
        let err = deny(&p, &allowed(), Some(&cc));
        assert_eq!(err.reason(), "NoImage");
        assert_eq!(
            err.to_string(),
            "ContainerCheckpoint \"counter-checkpoint\" in namespace \"default\" is Completed but \
             its status.image \"localhost:5050/default/x:latest\" is not an image reference \
             with a sha256 digest; checkpoint the container again"
        );
        cc.status.as_mut().unwrap().image = None;
        assert_eq!(deny(&p, &allowed(), Some(&cc)).reason(), "NoImage");
        cc.status.as_mut().unwrap().image = Some("x@sha256:abc".into());
        assert_eq!(deny(&p, &allowed(), Some(&cc)).reason(), "NoImage");
    }

    #[test]
    fn checkpointed_container_missing_from_the_pod_is_denied() {
        let mut p = pod(Some("counter-checkpoint"));
        p.spec.as_mut().unwrap().containers[1].name = "other".into();
        let err = deny(&p, &allowed(), Some(&completed()));
        assert_eq!(err.reason(), "ContainerNotInPod");
        assert_eq!(
            err.to_string(),
            "ContainerCheckpoint \"counter-checkpoint\" holds container \"counter\", but this pod \
             has no container of that name (its containers are \"sidecar\", \"other\"); name the \
             restored container \"counter\""
        );
    }

    #[test]
    fn lookup_errors_say_so() {
        let err = Denial::AccessCheckFailed {
            user: "alice".into(),
            name: "cc".into(),
            namespace: "default".into(),
            error: "503 ServiceUnavailable".into(),
        };
        assert_eq!(
            err.to_string(),
            "could not check whether user \"alice\" may get ContainerCheckpoint \"cc\" in \
             namespace \"default\" (503 ServiceUnavailable); create the pod again"
        );
        let err = Denial::LookupFailed {
            name: "cc".into(),
            namespace: "default".into(),
            error: "timed out".into(),
        };
        assert_eq!(
            err.to_string(),
            "could not read ContainerCheckpoint \"cc\" in namespace \"default\" (timed out); \
             create the pod again"
        );
    }

    /// Applies an RFC 6902 patch of `add` operations, as the API server would.
    pub fn apply(pod: &Pod, patch: &Value) -> Pod {
        let mut doc = serde_json::to_value(pod).unwrap();
        for op in patch.as_array().unwrap() {
            assert_eq!(op["op"], "add");
            let path = op["path"].as_str().unwrap();
            let (parent, key) = path.rsplit_once('/').unwrap();
            let key = key.replace("~1", "/").replace("~0", "~");
            let target = doc.pointer_mut(parent).expect("parent exists");
            match target {
                Value::Array(items) => items[key.parse::<usize>().unwrap()] = op["value"].clone(),
                Value::Object(map) => {
                    map.insert(key, op["value"].clone());
                }
                other => panic!("cannot add to {other}"),
            }
        }
        serde_json::from_value(doc).unwrap()
    }

    #[test]
    fn completed_checkpoint_rewrites_only_its_container() {
        let p = pod(Some("counter-checkpoint"));
        let restore = decide(
            &p,
            "default",
            "counter-checkpoint",
            "alice",
            &allowed(),
            Some(&completed()),
        )
        .unwrap();
        assert_eq!(restore.container, "counter");
        assert_eq!(restore.image, image());
        assert_eq!(restore.digest, DIGEST);
        assert_eq!(
            restore.patch,
            json!([
                {"op": "add", "path": "/spec/containers/1/image", "value": image()},
                {
                    "op": "add",
                    "path": "/metadata/annotations/\
                             checkpointing.zacchaeuschok.github.io~1restored-from-digest",
                    "value": DIGEST,
                },
            ])
        );

        let patched = apply(&p, &restore.patch);
        let mut expected = p.clone();
        expected.spec.as_mut().unwrap().containers[1].image = Some(image());
        expected
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(RESTORED_FROM_DIGEST_ANNOTATION.into(), DIGEST.into());
        assert_eq!(
            patched, expected,
            "only the image and the annotation change"
        );
        assert_eq!(
            patched.spec.unwrap().containers[0].image.as_deref(),
            Some("nginx")
        );
    }
}
