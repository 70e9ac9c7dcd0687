//! Why a PodCheckpoint fails. `Display` is the status message; [`Failure::reason`] the
//! condition reason.

use crate::validation::{quoted_list, shown};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    #[error(
        "podName {} is not a pod name (lowercase letters, digits, '-' and '.'); name a pod of \
         namespace {namespace:?}",
        shown(.pod)
    )]
    InvalidPodName { pod: String, namespace: String },
    #[error(
        "pod {} not found in namespace {namespace:?}; create the PodCheckpoint in the pod's \
         namespace, naming a running pod",
        shown(.pod)
    )]
    PodNotFound { pod: String, namespace: String },
    #[error(
        "pod {} has no container {} (its containers are {}); list only containers of the pod",
        shown(.pod),
        shown(.container),
        quoted_list(.containers)
    )]
    ContainerNotFound {
        pod: String,
        container: String,
        containers: Vec<String>,
    },
    #[error(
        "the ContainerCheckpoint of container {} would be named {}, longer than 253 characters; \
         give the PodCheckpoint a shorter name",
        shown(.container),
        shown(.child)
    )]
    NameTooLong { container: String, child: String },
    #[error(
        "ContainerCheckpoint {child:?} of container {container:?} was deleted; create the \
         PodCheckpoint again"
    )]
    ContainerCheckpointDeleted { child: String, container: String },
    /// The API server refused to create a container's request (a policy, a quota).
    #[error("creating ContainerCheckpoint {child:?} was refused: {code} {why}")]
    ContainerCheckpointRefused {
        child: String,
        code: u16,
        why: String,
    },
    /// A container's request failed: its message.
    #[error("container {container:?}: {message}")]
    ContainerFailed { container: String, message: String },
}

impl Failure {
    /// CamelCase reason for the `Ready` condition and the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidPodName { .. } => "InvalidPodName",
            Self::PodNotFound { .. } => "PodNotFound",
            Self::ContainerNotFound { .. } => "ContainerNotFound",
            Self::NameTooLong { .. } => "NameTooLong",
            Self::ContainerCheckpointDeleted { .. } => "ContainerCheckpointDeleted",
            Self::ContainerCheckpointRefused { .. } => "ContainerCheckpointRefused",
            Self::ContainerFailed { .. } => "ContainerFailed",
        }
    }
}
