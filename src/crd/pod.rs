//! The pod-level resources: `PodCheckpoint` (every container of a pod as one request, built on
//! one ContainerCheckpoint per container) and `PodMigration` (checkpoint, then the pod runs on
//! another node from that checkpoint).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{
    CheckpointState, MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS, RegistrySpec, state_schema,
};
use crate::names::{DNS_LABEL_MAX, DNS_SUBDOMAIN_MAX};

/// Seconds a PodMigration may take when its spec does not say (the schema's default; the
/// controller falls back to it for objects stored before the schema had it).
pub const MIGRATION_TIMEOUT_SECONDS: i64 = 600;

/// Most containers a PodCheckpoint may list (a pod has far fewer in practice).
pub const MAX_CONTAINERS: usize = 64;

/// Ask for every container of a running pod (or the listed ones) to be checkpointed together.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "checkpointing.zacchaeuschok.github.io",
    version = "v1alpha1",
    kind = "PodCheckpoint",
    doc = "A request to checkpoint the containers of a running pod together.",
    namespaced,
    status = "PodCheckpointStatus",
    shortname = "pckpt",
    category = "checkpointing",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.podName"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodeName"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PodCheckpointSpec {
    /// Pod to checkpoint, in this object's namespace.
    #[schemars(length(min = 1, max = DNS_SUBDOMAIN_MAX))]
    pub pod_name: String,
    /// Containers to checkpoint; every container of the pod when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONTAINERS), inner(length(min = 1, max = DNS_LABEL_MAX)))]
    pub containers: Vec<String>,
    /// Seconds the runtime may take for each container, 1 to 3600 (the node's default when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<i64>,
    /// Where each container's checkpoint image is pushed, and with which credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,
    /// Keep every checkpointed container frozen from its dump on (each ContainerCheckpoint's
    /// `holdSource`); PodMigrations set it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_source: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodCheckpointStatus {
    /// `Completed` once every container is; `Failed` as soon as one fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "state_schema")]
    pub state: Option<CheckpointState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, rename = "podUID", skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// One entry per checkpointed container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub containers: Vec<ContainerResult>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where one container of a PodCheckpoint stands, as its ContainerCheckpoint says.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerResult {
    pub name: String,
    /// The ContainerCheckpoint (same namespace) that checkpoints it.
    pub container_checkpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "state_schema")]
    pub state: Option<CheckpointState>,
    /// Checkpoint image reference, with digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_size: Option<i64>,
}

/// Where a migration stands. `Succeeded` and `Failed` are final.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MigrationPhase {
    Pending,
    Checkpointing,
    Restoring,
    Succeeded,
    Failed,
}

impl MigrationPhase {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }
}

fn phase_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Pending", "Checkpointing", "Restoring", "Succeeded", "Failed"],
        "description": "Where a migration stands. Succeeded and Failed are final.",
    })
}

/// Move a running pod to another node: checkpoint every container, then run the pod there
/// from the checkpoint.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "checkpointing.zacchaeuschok.github.io",
    version = "v1alpha1",
    kind = "PodMigration",
    doc = "A request to move a running pod to another node through a checkpoint.",
    namespaced,
    status = "PodMigrationStatus",
    shortname = "pm",
    category = "checkpointing",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.podName"}"#,
    printcolumn = r#"{"name":"Source","type":"string","jsonPath":".status.sourceNode"}"#,
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".status.targetNode"}"#,
    printcolumn = r#"{"name":"Downtime(ms)","type":"integer","jsonPath":".status.downtimeMilliseconds"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PodMigrationSpec {
    /// Pod to move, in this object's namespace.
    #[schemars(length(min = 1, max = DNS_SUBDOMAIN_MAX))]
    pub pod_name: String,
    /// Node to move it to; any other node the scheduler finds fitting when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = DNS_SUBDOMAIN_MAX))]
    pub target_node: Option<String>,
    /// Delete the source pod once its restored copy runs (default). `false` copies a bare pod
    /// instead and the source keeps running. A bare pod's copy is named `<pod>-<5 characters
    /// of this object's UID>`; a workload's pod comes back from its workload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = true))]
    pub delete_source: Option<bool>,
    /// Seconds the whole migration may take, 1 to 3600 (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS),
        extend("default" = MIGRATION_TIMEOUT_SECONDS)
    )]
    pub timeout_seconds: Option<i64>,
    /// Moves the pod through this registry instead of from node to node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,
    /// Restore from this Completed PodCheckpoint of the pod (same namespace) instead of taking
    /// one: for a pod whose node is lost, whose processes cannot be checkpointed any more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = DNS_SUBDOMAIN_MAX))]
    pub from_checkpoint: Option<String>,
}

impl PodMigrationSpec {
    pub fn deletes_source(&self) -> bool {
        self.delete_source.unwrap_or(true)
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMigrationStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "phase_schema")]
    pub phase: Option<MigrationPhase>,
    /// Why the migration is in its phase, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    /// UID of the source pod: the one this migration checkpoints and deletes.
    #[serde(
        default,
        rename = "sourcePodUID",
        skip_serializing_if = "Option::is_none"
    )]
    pub source_pod_uid: Option<String>,
    /// The workload that owns the source pod, as `Kind/name` (unset for a bare pod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// UID of that workload: its replacement pod is the one restored.
    #[serde(default, rename = "ownerUID", skip_serializing_if = "Option::is_none")]
    pub owner_uid: Option<String>,
    /// The PodCheckpoint (same name and namespace) holding the source's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_checkpoint: Option<String>,
    /// The pod that runs from the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_pod: Option<String>,
    /// When the checkpoint was asked for: the source freezes right after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_request_time: Option<MicroTime>,
    /// When the restore began: the PodCheckpoint was seen Completed (the same as
    /// `checkpointRequestTime` when restoring from an existing one). Splits the downtime into
    /// its checkpoint and restore phases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_start_time: Option<MicroTime>,
    /// When every restored container was seen running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_time: Option<MicroTime>,
    /// From the checkpoint request to every restored container running, as the controller saw
    /// it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downtime_milliseconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}
