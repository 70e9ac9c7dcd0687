//! The restore admission decision: whether a new pod may restore from the ContainerCheckpoint
//! or PodCheckpoint its `restore-from` annotation names, and the JSON patch that makes it do
//! so. Pure functions over what the webhook shell looked up; a denial is all the user sees, so
//! each one says why and what to do.

use checkpointing::crd::{CheckpointState, ContainerCheckpoint, PodCheckpoint, RegistrySpec};
use checkpointing::names::{
    GROUP, RESTORE_FROM_ANNOTATION, RESTORED_FROM_DIGEST_ANNOTATION, is_dns_subdomain,
};
use checkpointing::reference::Spelling;
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::eligible::Unplaceable;
use super::guard::{CheckpointImages, Smuggled};
use super::origin::Origin;
use crate::validation::{quoted_list, shown};

/// The resource a restoring user must be allowed to `get` (SubjectAccessReview attributes).
pub const CHECKPOINT_RESOURCE: &str = "containercheckpoints";
/// The same for a restore from a PodCheckpoint.
pub const POD_CHECKPOINT_RESOURCE: &str = "podcheckpoints";

/// What a pod restores from, reduced to what the decision needs: a ContainerCheckpoint holds
/// one container, a PodCheckpoint each of its containers.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub kind: &'static str,
    pub state: Option<CheckpointState>,
    pub message: String,
    /// (container, checkpoint image, ContainerCheckpoint) for each container it holds.
    pub images: Vec<(String, Option<String>, String)>,
    /// The request's `spec.registry.repository`: where its images were pushed.
    pub repository: Option<String>,
    /// The node the checkpoint was taken on, and a Content of it (which names its runtime):
    /// where it can be restored is told by these.
    pub node: Option<String>,
    pub content: Option<String>,
}

impl From<&ContainerCheckpoint> for Source {
    fn from(cc: &ContainerCheckpoint) -> Self {
        let status = cc.status.as_ref();
        Self {
            kind: "ContainerCheckpoint",
            state: status.and_then(|s| s.state),
            message: status.and_then(|s| s.message.clone()).unwrap_or_default(),
            images: vec![(
                cc.spec.container.clone(),
                status.and_then(|s| s.image.clone()),
                cc.metadata.name.clone().unwrap_or_default(),
            )],
            repository: RegistrySpec::repository(cc.spec.registry.as_ref()).map(str::to_owned),
            node: status.and_then(|s| s.node_name.clone()),
            content: status
                .and_then(|s| s.content_name.clone())
                .or_else(|| cc.metadata.name.clone()),
        }
    }
}

impl From<&PodCheckpoint> for Source {
    fn from(pc: &PodCheckpoint) -> Self {
        let status = pc.status.clone().unwrap_or_default();
        // Each container's Content has its ContainerCheckpoint's name; all come from one node.
        let content = status
            .containers
            .first()
            .map(|c| c.container_checkpoint.clone());
        Self {
            node: status.node_name.clone(),
            content,
            kind: "PodCheckpoint",
            state: status.state,
            message: status.message.unwrap_or_default(),
            images: status
                .containers
                .into_iter()
                .map(|c| (c.name, c.image, c.container_checkpoint))
                .collect(),
            repository: RegistrySpec::repository(pc.spec.registry.as_ref()).map(str::to_owned),
        }
    }
}

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
        "ContainerCheckpoint {name:?} not found in namespace {namespace:?} (nor a PodCheckpoint \
         of that name); checkpoint the container first (kubectl apply a ContainerCheckpoint and \
         wait until it is Completed), or fix annotation {RESTORE_FROM_ANNOTATION}"
    )]
    NotFound { name: String, namespace: String },
    #[error(
        "{kind} {name:?} in namespace {namespace:?} is {state}, not Completed{}; {}",
        because(.message),
        advice_for(.state)
    )]
    NotCompleted {
        kind: &'static str,
        name: String,
        namespace: String,
        state: String,
        message: String,
    },
    #[error(
        "{kind} {name:?} in namespace {namespace:?} is Completed but its image {} is not an \
         image reference with a sha256 digest; checkpoint the container again",
        .image.as_deref().map_or_else(|| "(unset)".to_owned(), shown)
    )]
    NoImage {
        kind: &'static str,
        name: String,
        namespace: String,
        image: Option<String>,
    },
    #[error(
        "{kind} {name:?} holds container {container:?}, but this pod has no container of that \
         name (its containers are {}); name the restored container {container:?}",
        quoted_list(.containers)
    )]
    ContainerNotInPod {
        kind: &'static str,
        name: String,
        container: String,
        containers: Vec<String>,
    },
    #[error("{0}")]
    CheckpointImage(Smuggled),
    #[error("{0}")]
    Unplaceable(Unplaceable),
    #[error(
        "the controller has not yet listed the node daemons' Leases, which tell where a \
         checkpoint can be restored; create the pod again"
    )]
    LeasesNotListed,
    #[error(
        "{kind} {name:?} gives container {container:?} image {image:?}, which is not where this checkpoint's images lie ({}); a checkpoint restores \
         only its own image: checkpoint the container again",
        quoted_list(.expected)
    )]
    ForeignImage {
        kind: &'static str,
        name: String,
        container: String,
        image: String,
        expected: Vec<String>,
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
            Self::CheckpointImage(_) => "CheckpointImage",
            Self::Unplaceable(_) => "Unplaceable",
            Self::LeasesNotListed => "LeasesNotListed",
            Self::ForeignImage { .. } => "ForeignImage",
        }
    }
}

/// An admitted restore: what changes and the JSON patch (RFC 6902) that changes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Restore {
    /// The restored containers and the checkpoint image each now runs.
    pub containers: Vec<(String, String)>,
    /// `sha256:<hex>` of each image, comma-separated: the restored-from marker.
    pub digest: String,
    pub patch: Value,
}

/// Who must be allowed to read the checkpoint a pod restores from. Normally the user who
/// creates the pod. A pod that a workload controller creates for its owner (ReplicaSet,
/// StatefulSet, Job, DaemonSet: kube-controller-manager's identities) has no such user, so the
/// pod's own ServiceAccount is checked instead: the workload's author chose it, and it holds
/// only rights within the pod's namespace.
pub fn reader(user: &UserInfo, pod: &Pod, namespace: &str) -> UserInfo {
    let name = user.username.as_deref().unwrap_or_default();
    let workload_controller = name == "system:kube-controller-manager"
        || name.starts_with("system:serviceaccount:kube-system:");
    let owned = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true));
    if !(workload_controller && owned) {
        return user.clone();
    }
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .filter(|a| !a.is_empty())
        .unwrap_or("default");
    UserInfo {
        username: Some(format!("system:serviceaccount:{namespace}:{account}")),
        groups: Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
            "system:authenticated".to_owned(),
        ]),
        ..UserInfo::default()
    }
}

/// The checkpoint a pod asks to restore from: `None` without the annotation. Checked before
/// anything is looked up, so a hostile value never reaches an API path.
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
/// with `access`; `source` is the lookup's result, `None` when it does not exist (or was not
/// looked up because access was refused: whether it exists is not told to someone who may not
/// read it). Its images must lie where `checkpoints` and its own names put them
/// ([`Origin`]).
pub fn decide(
    pod: &Pod,
    namespace: &str,
    name: &str,
    user: &str,
    access: &Access,
    source: Option<&Source>,
    checkpoints: &CheckpointImages,
) -> Result<Restore, Denial> {
    if !access.allowed {
        return Err(Denial::Forbidden {
            user: user.to_owned(),
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            reason: access.reason.clone(),
        });
    }
    let Some(source) = source else {
        return Err(Denial::NotFound {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        });
    };
    if source.state != Some(CheckpointState::Completed) {
        return Err(Denial::NotCompleted {
            kind: source.kind,
            name: name.to_owned(),
            namespace: namespace.to_owned(),
            state: source
                .state
                .map_or_else(|| "not started yet".to_owned(), |s| format!("{s:?}")),
            message: source.message.clone(),
        });
    }
    let containers: Vec<String> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    let mut restored = Vec::new();
    let mut digests = Vec::new();
    let mut patch = Vec::new();
    for (container, image, checkpoint) in &source.images {
        let Some((image, digest)) = image
            .as_deref()
            .and_then(|i| Some((i.to_owned(), Spelling::of(i).sha256()?.to_owned())))
        else {
            return Err(Denial::NoImage {
                kind: source.kind,
                name: name.to_owned(),
                namespace: namespace.to_owned(),
                image: image.clone(),
            });
        };
        let origin = Origin {
            namespace,
            name: checkpoint,
            repository: source.repository.as_deref(),
        };
        if !origin.holds(&image, checkpoints) {
            return Err(Denial::ForeignImage {
                kind: source.kind,
                name: name.to_owned(),
                container: container.clone(),
                image,
                expected: origin.expected(checkpoints),
            });
        }
        let Some(index) = containers.iter().position(|c| c == container) else {
            return Err(Denial::ContainerNotInPod {
                kind: source.kind,
                name: name.to_owned(),
                container: container.clone(),
                containers,
            });
        };
        let image = node_local(namespace, checkpoint, &digest, checkpoints.port);
        patch.push(json!({
            "op": "add",
            "path": format!("/spec/containers/{index}/image"),
            "value": image,
        }));
        restored.push((container.clone(), image));
        digests.push(digest);
    }
    let digest = digests.join(",");
    // `add` sets a member whether or not it exists; the annotations map exists, as it holds
    // restore-from.
    patch.push(json!({
        "op": "add",
        "path": format!("/metadata/annotations/{}", pointer_token(RESTORED_FROM_DIGEST_ANNOTATION)),
        "value": digest,
    }));
    Ok(Restore {
        containers: restored,
        digest,
        patch: Value::Array(patch),
    })
}

/// What a restored container runs: its checkpoint's image in the node-local registry on
/// `port`, by the same digest wherever else it was pushed (a push sends the manifest's exact
/// bytes). Every restore so goes through the node's noded, which gets the image (from the
/// node holding it, else from the pushed copy) and places the checkpoint's emptyDir volumes
/// before it answers the runtime's pull.
fn node_local(namespace: &str, checkpoint: &str, digest: &str, port: u16) -> String {
    format!("localhost:{port}/{namespace}/{checkpoint}@{digest}")
}

/// A JSON pointer reference token (RFC 6901): `~` and `/` escaped.
pub(super) fn pointer_token(key: &str) -> String {
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
mod tests;
