//! The kinds the controller reconciles (the requests, and the policies that make them), and
//! what the shared kit needs of each: its name in metrics and logs, and its status; and the
//! objects it reads and writes.

use checkpointing::crd::{
    CheckpointPolicy, CheckpointPolicyStatus, ContainerCheckpoint, ContainerCheckpointStatus,
    PodCheckpoint, PodCheckpointStatus, PodMigration, PodMigrationStatus,
};
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::Resource;
use kube::core::NamespaceResourceScope;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    ContainerCheckpoint,
    PodCheckpoint,
    PodMigration,
    CheckpointPolicy,
}

/// A namespaced object the controller reads and writes through the API.
pub trait Object:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + std::fmt::Debug
    + DeserializeOwned
    + Send
    + Sync
    + 'static
{
}

impl<K> Object for K where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// A reconciled kind (a request, or a policy) with a status only the controller writes.
pub trait Request: Object {
    type Status: Clone + PartialEq + Serialize + Send + Sync + 'static;
    const KIND: Kind;
    fn status_mut(&mut self) -> &mut Option<Self::Status>;
}

/// `Request` for a kind whose status is its `status` field, as kube's derive makes it.
macro_rules! request {
    ($($kind:ident => $status:ident),+ $(,)?) => {$(
        impl Request for $kind {
            type Status = $status;
            const KIND: Kind = Kind::$kind;
            fn status_mut(&mut self) -> &mut Option<Self::Status> {
                &mut self.status
            }
        }
    )+};
}

request! {
    ContainerCheckpoint => ContainerCheckpointStatus,
    PodCheckpoint => PodCheckpointStatus,
    PodMigration => PodMigrationStatus,
    CheckpointPolicy => CheckpointPolicyStatus,
}
