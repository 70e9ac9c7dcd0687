//! The two custom resources (group `checkpointing.zacchaeuschok.github.io`, `v1alpha1`).
//!
//! `ContainerCheckpoint` is the user's request; `ContainerCheckpointContent` (same name, owned
//! by the request, labelled with its node) is the artifact noded produces. The pod-level
//! requests built on them are [`PodCheckpoint`] and [`PodMigration`]; a [`CheckpointPolicy`]
//! makes PodCheckpoints on a schedule. Field names are the seed project's, so its samples and
//! commands work unchanged.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, ValidationRule,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, CustomResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::{DNS_LABEL_MAX, DNS_SUBDOMAIN_MAX};

/// Bounds of `timeoutSeconds`, in the schema and in both binaries (an older CRD without them
/// may still be installed). An hour is generous for CRIU dumping a container's memory, and
/// small enough that no deadline computed from it can overflow.
pub const MIN_TIMEOUT_SECONDS: i64 = 1;
pub const MAX_TIMEOUT_SECONDS: i64 = 3600;

/// Longest pod UID we accept: the API server makes 36-character UUIDs; static pods carry a
/// 32-character hash. Generous, but bounded.
pub const UID_MAX: usize = 128;

/// Where a request or its artifact stands. `Completed` and `Failed` are final.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointState {
    Pending,
    Running,
    Completed,
    Failed,
}

impl CheckpointState {
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }
}

mod pod;
mod policy;
mod registry;
pub use pod::*;
pub use policy::*;
pub use registry::*;

/// Schema of an optional [`CheckpointState`]: a plain string enum. The derived one lists `null`
/// among the enum values, which the API server's structural schema check rejects.
pub(crate) fn state_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "enum": ["Pending", "Running", "Completed", "Failed"],
        "description": "Where a request or its artifact stands. Completed and Failed are final.",
    })
}

/// Ask for one container of a running pod to be checkpointed.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "checkpointing.zacchaeuschok.github.io",
    version = "v1alpha1",
    kind = "ContainerCheckpoint",
    doc = "A request to checkpoint one container of a running pod.",
    namespaced,
    status = "ContainerCheckpointStatus",
    shortname = "cc",
    category = "checkpointing",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.podName"}"#,
    printcolumn = r#"{"name":"Container","type":"string","jsonPath":".spec.container"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".status.nodeName"}"#,
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".status.archiveSize"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#,
    printcolumn = r#"{"name":"Image","type":"string","jsonPath":".status.image","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCheckpointSpec {
    /// Pod whose container is checkpointed, in this object's namespace.
    #[schemars(length(min = 1, max = DNS_SUBDOMAIN_MAX))]
    pub pod_name: String,
    /// Container of that pod to checkpoint.
    #[schemars(length(min = 1, max = DNS_LABEL_MAX))]
    pub container: String,
    /// Kept from the seed API. When set it must equal `metadata.namespace`: a request never
    /// reaches into another namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS_LABEL_MAX))]
    pub namespace: Option<String>,
    /// Seconds the runtime may take for the checkpoint, 1 to 3600 (the node's default when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<i64>,
    /// Where the checkpoint image is pushed, and with which credentials (the cluster's
    /// defaults when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,
    /// Keep the container frozen from just before the dump on, so it does nothing after its
    /// checkpoint that the checkpoint would not hold, until the request is deleted or its
    /// migration releases it. PodMigrations set it; a held container that is not deleted
    /// stays frozen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_source: bool,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCheckpointStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "state_schema")]
    pub state: Option<CheckpointState>,
    /// Why the request is in its state, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_name: Option<String>,
    #[serde(default, rename = "podUID", skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_time: Option<Time>,
    /// Archive size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_size: Option<i64>,
    /// Checkpoint image reference, with digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// The checkpoint artifact on one node: written by the controller (spec) and that node's
/// noded (status).
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "checkpointing.zacchaeuschok.github.io",
    version = "v1alpha1",
    kind = "ContainerCheckpointContent",
    doc = "The checkpoint archive and image of one ContainerCheckpoint, on one node.",
    namespaced,
    status = "ContainerCheckpointContentStatus",
    shortname = "ccc",
    category = "checkpointing",
    printcolumn = r#"{"name":"Ready","type":"boolean","jsonPath":".status.ready"}"#,
    printcolumn = r#"{"name":"Node","type":"string","jsonPath":".spec.nodeName"}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".spec.podName"}"#,
    printcolumn = r#"{"name":"Container","type":"string","jsonPath":".spec.containerName"}"#,
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".status.archiveSize"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Path","type":"string","jsonPath":".status.checkpointPath","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCheckpointContentSpec {
    /// Name of the ContainerCheckpoint this artifact belongs to (same namespace).
    #[schemars(length(max = DNS_SUBDOMAIN_MAX))]
    pub container_checkpoint_ref: String,
    #[schemars(length(max = DNS_LABEL_MAX))]
    pub namespace: String,
    #[schemars(length(max = DNS_SUBDOMAIN_MAX))]
    pub pod_name: String,
    #[schemars(length(max = DNS_LABEL_MAX))]
    pub container_name: String,
    #[schemars(length(max = DNS_SUBDOMAIN_MAX))]
    pub node_name: String,
    #[serde(rename = "podUID")]
    #[schemars(length(max = UID_MAX))]
    pub pod_uid: String,
    /// Seconds the runtime may take for the checkpoint, 1 to 3600 (the node's default when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<i64>,
    /// The pod's emptyDir volumes that travel with the checkpoint (a layer of its image).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_VOLUMES), inner(length(min = 1, max = DNS_LABEL_MAX)))]
    pub volumes: Vec<String>,
    /// The request's `spec.registry`, as its author wrote it; its Secret is in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,
    /// The controller's copy of `registry.secretRef`, by name in namespace
    /// `checkpoint-credentials`: noded reads Secrets only there, and deletes this copy with
    /// the Content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = DNS_SUBDOMAIN_MAX))]
    pub credentials_secret: Option<String>,
    /// The request's `spec.holdSource`: freeze the container before the dump and keep it
    /// frozen until this Content is annotated `checkpointing.zacchaeuschok.github.io/release-source`
    /// or deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_source: bool,
}

/// Most emptyDir volumes a Content lists.
pub const MAX_VOLUMES: usize = 64;

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerCheckpointContentStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "state_schema")]
    pub state: Option<CheckpointState>,
    #[serde(default)]
    pub ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(
        default,
        rename = "containerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub container_id: Option<String>,
    /// Archive path on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_size: Option<i64>,
    /// `sha256:<hex>` of the archive, which is also the image's layer digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The image the archive's container ran (`rootfsImageRef` or `rootfsImageName`): what a
    /// node must hold before its runtime can restore the checkpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_time: Option<Time>,
    /// Runtime that took the checkpoint, e.g. `containerd v2.1.9`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criu_version: Option<String>,
    /// The container is frozen by noded for `spec.holdSource` (true from the dump until it is
    /// released).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source_held: bool,
    /// The end of CRIU's log of a failed checkpoint (whole lines), which `kubectl checkpoint
    /// logs` prints: the message names only its first error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = CRIU_LOG_MAX))]
    pub criu_log: Option<String>,
}

/// Most bytes of CRIU's log a Content keeps: the end of the log, where its errors are.
pub const CRIU_LOG_MAX: usize = 32 * 1024;

/// Every CRD as an `apiextensions.k8s.io/v1` object, the container request first. A request's
/// spec (and its Content's) is read once, when the work starts: the API server refuses later
/// changes rather than letting them be silently ignored. A policy's spec stays editable: the
/// controller reads it on every reconcile.
pub fn crds() -> [CustomResourceDefinition; 5] {
    [
        immutable_spec(ContainerCheckpoint::crd()),
        immutable_spec(ContainerCheckpointContent::crd()),
        immutable_spec(PodCheckpoint::crd()),
        immutable_spec(PodMigration::crd()),
        CheckpointPolicy::crd(),
    ]
}

/// `crd` with a transition rule on `spec`: an update may not change it.
fn immutable_spec(mut crd: CustomResourceDefinition) -> CustomResourceDefinition {
    let kind = crd.spec.names.kind.clone();
    for version in &mut crd.spec.versions {
        let spec = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"));
        if let Some(spec) = spec {
            spec.x_kubernetes_validations = Some(vec![ValidationRule {
                rule: "self == oldSelf".into(),
                message: Some(format!(
                    "spec is immutable: delete this {kind} and create it again with the new spec"
                )),
                reason: Some("FieldValueForbidden".into()),
                ..ValidationRule::default()
            }]);
        }
    }
    crd
}

/// File name under `deploy/crds/` and YAML text of each CRD: what `controller crd` writes and
/// what the drift test compares against.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_saphyr::SerializeError> {
    crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.as_deref().unwrap_or_default();
            Ok((format!("{name}.yaml"), serde_saphyr::to_string(crd)?))
        })
        .collect()
}
