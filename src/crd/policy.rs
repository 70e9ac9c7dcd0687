//! `CheckpointPolicy`: pods chosen by label are checkpointed on a schedule (one PodCheckpoint
//! per pod and interval) and their older checkpoints are let go by a retention rule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{MAX_CONTAINERS, MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS, RegistrySpec};
use crate::names::{DNS_LABEL_MAX, DNS_SUBDOMAIN_MAX};

/// Bounds of `spec.schedule.intervalSeconds`: a checkpoint freezes the pod for a moment, so
/// not more often than once a minute; at least once a week.
pub const MIN_INTERVAL_SECONDS: i64 = 60;
pub const MAX_INTERVAL_SECONDS: i64 = 7 * 86_400;

/// Bounds and default of `spec.retention.keepNewest`.
pub const MIN_KEEP_NEWEST: u32 = 1;
pub const MAX_KEEP_NEWEST: u32 = 100;
pub const DEFAULT_KEEP_NEWEST: u32 = 3;

/// Bounds of `spec.retention.ttlSeconds`: a minute to a year.
pub const MIN_TTL_SECONDS: i64 = 60;
pub const MAX_TTL_SECONDS: i64 = 365 * 86_400;

/// Most pods `status.pods` lists (by name); `status.selectedPods` counts them all. Keeps the
/// status well under the API server's object size limit.
pub const MAX_LISTED_PODS: usize = 1000;

/// Checkpoint the pods a selector picks, on a schedule, and keep only the newest checkpoints.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "checkpointing.zacchaeuschok.github.io",
    version = "v1alpha1",
    kind = "CheckpointPolicy",
    doc = "Scheduled checkpoints of the pods a label selector picks, with retention.",
    namespaced,
    status = "CheckpointPolicyStatus",
    shortname = "cpol",
    category = "checkpointing",
    // Its name is the value of the label on every PodCheckpoint it makes.
    validation = Rule::new("self.metadata.name.size() <= 63").message("a CheckpointPolicy's name is at most 63 characters: it labels the PodCheckpoints the policy makes"),
    printcolumn = r#"{"name":"Selected pods","type":"integer","jsonPath":".status.selectedPods"}"#,
    printcolumn = r#"{"name":"Interval","type":"integer","jsonPath":".spec.schedule.intervalSeconds"}"#,
    printcolumn = r#"{"name":"Keep","type":"integer","jsonPath":".spec.retention.keepNewest"}"#,
    printcolumn = r#"{"name":"On eviction","type":"string","jsonPath":".spec.onEviction"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Message","type":"string","jsonPath":".status.message","priority":1}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointPolicySpec {
    /// The running pods of this namespace to checkpoint. An empty selector picks every pod.
    #[schemars(schema_with = "selector_schema")]
    pub selector: LabelSelector,
    /// When each selected pod is checkpointed; unset, only on eviction (`onEviction`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ScheduleSpec>,
    /// Which of each pod's checkpoints are kept (the newest 3 when unset).
    #[serde(default)]
    pub retention: RetentionSpec,
    /// Where each checkpoint image is pushed, and with which credentials (each PodCheckpoint's
    /// `spec.registry`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<RegistrySpec>,
    /// Containers to checkpoint in each pod; every container when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_CONTAINERS), inner(length(min = 1, max = DNS_LABEL_MAX)))]
    pub containers: Vec<String>,
    /// Seconds the runtime may take for each container, 1 to 3600 (the node's default when
    /// unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TIMEOUT_SECONDS, max = MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<i64>,
    /// What an eviction of a selected pod (`kubectl drain`, the Eviction API) does first:
    /// `Migrate` moves the pod to another node and only then lets it go from this one;
    /// `Checkpoint` takes a PodCheckpoint before the eviction proceeds. Unset: the eviction
    /// proceeds as for any pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_eviction: Option<OnEviction>,
    /// What becomes of a selected pod whose node is lost: `Restore` makes it again on another
    /// node from its newest Completed checkpoint of this policy that was pushed to a registry
    /// (a copy on the lost node is gone with it). A node is lost once it carries the taint
    /// `node.kubernetes.io/out-of-service`, once its Node is deleted, or (except for a
    /// StatefulSet's pods, which could run twice) once it has not been Ready for the
    /// controller's `--node-loss-after-seconds`. Unset: nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_node_loss: Option<OnNodeLoss>,
}

/// See `CheckpointPolicySpec::on_node_loss`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OnNodeLoss {
    Restore,
}

/// See `CheckpointPolicySpec::on_eviction`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OnEviction {
    Migrate,
    Checkpoint,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleSpec {
    /// Seconds from one checkpoint of a pod to its next, 60 to 604800 (a week). A pod is
    /// checkpointed once it has none from this policy, then this long after the newest one was
    /// asked for (a failed attempt counts).
    #[schemars(range(min = MIN_INTERVAL_SECONDS, max = MAX_INTERVAL_SECONDS))]
    pub interval_seconds: i64,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionSpec {
    /// Completed checkpoints kept per pod, 1 to 100 (default 3); older ones are deleted with
    /// every copy of their images.
    #[serde(default = "default_keep_newest")]
    #[schemars(range(min = MIN_KEEP_NEWEST, max = MAX_KEEP_NEWEST))]
    pub keep_newest: u32,
    /// Completed checkpoints older than this many seconds (60 to a year) are deleted too, but
    /// never a pod's newest one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MIN_TTL_SECONDS, max = MAX_TTL_SECONDS))]
    pub ttl_seconds: Option<i64>,
}

fn default_keep_newest() -> u32 {
    DEFAULT_KEEP_NEWEST
}

impl Default for RetentionSpec {
    fn default() -> Self {
        Self {
            keep_newest: DEFAULT_KEEP_NEWEST,
            ttl_seconds: None,
        }
    }
}

/// Most entries of each part of `spec.selector`.
pub const MAX_SELECTOR_TERMS: usize = 64;
/// Longest label key: a DNS subdomain prefix, `/` and a 63-character name.
const LABEL_KEY_MAX: usize = DNS_SUBDOMAIN_MAX + 1 + DNS_LABEL_MAX;

/// A metav1 LabelSelector's schema with bounds on every part (k8s-openapi's has none).
fn selector_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let value = serde_json::json!({"type": "string", "maxLength": DNS_LABEL_MAX});
    schemars::json_schema!({
        "type": "object",
        "description": "Pods of this namespace whose labels match; an empty selector matches every pod.",
        "properties": {
            "matchLabels": {
                "type": "object",
                "maxProperties": MAX_SELECTOR_TERMS,
                "additionalProperties": value,
            },
            "matchExpressions": {
                "type": "array",
                "maxItems": MAX_SELECTOR_TERMS,
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {"type": "string", "minLength": 1, "maxLength": LABEL_KEY_MAX},
                        "operator": {"type": "string", "enum": ["In", "NotIn", "Exists", "DoesNotExist"]},
                        "values": {"type": "array", "maxItems": MAX_SELECTOR_TERMS, "items": value},
                    },
                },
            },
        },
    })
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointPolicyStatus {
    /// How many running pods the selector picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_pods: Option<i64>,
    /// One entry per selected running pod, by name (the first 1000).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = MAX_LISTED_PODS))]
    pub pods: Vec<PolicyPodStatus>,
    /// What the policy does, or why it cannot, in words a user can act on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Where one selected pod's schedule stands.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyPodStatus {
    pub pod: String,
    /// The newest Completed PodCheckpoint of the pod (same namespace): what to restore from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint: Option<String>,
    /// When that checkpoint was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_checkpoint_time: Option<Time>,
    /// When the pod's next checkpoint is asked for (a pod whose checkpoint is still being
    /// taken waits for it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_due: Option<Time>,
    /// Why the newest attempt failed, while it is the newest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}
