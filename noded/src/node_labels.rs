//! The labels that tell anyone looking at a Node what its noded found: the runtime, its
//! version, and whether it can restore checkpoints (`kubectl get nodes -L ...`, node selectors
//! of the user's own). Placement reads the Lease, which also says why a node cannot restore;
//! the labels are for people and their tools. noded applies them with its own field manager
//! and takes them away when it stops, so a node without a node daemon carries none (a
//! ValidatingAdmissionPolicy lets it change only these labels, only on its own node).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use checkpointing::names::{NODED_MANAGER, RUNTIME_ANNOTATION};
use checkpointing::runtime::RuntimeKind;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::prereq::{Prerequisites, Report};

/// The runtime's CRI name (`cri-o`, `containerd`): the Lease annotation's key, as a label.
pub const RUNTIME: &str = RUNTIME_ANNOTATION;
pub const RUNTIME_VERSION: &str = "checkpointing.zacchaeuschok.github.io/runtime-version";
/// `true` or `false`.
pub const CAN_RESTORE: &str = "checkpointing.zacchaeuschok.github.io/can-restore";

/// How often the report is looked at; labels are applied only when they change.
const INTERVAL: Duration = Duration::from_secs(10);

/// A distinct field manager: the labels are this task's alone, so applying none removes them.
fn manager() -> String {
    format!("{NODED_MANAGER}-labels")
}

/// The labels a report gives the node; none before the runtime first answers.
pub fn labels(report: &Report) -> BTreeMap<&'static str, String> {
    let mut labels = BTreeMap::new();
    let Some(kind) = report.runtime_name.as_deref().and_then(RuntimeKind::detect) else {
        return labels;
    };
    labels.insert(RUNTIME, kind.cri_name().to_owned());
    if let Some(version) = report.runtime_version.as_deref().and_then(label_value) {
        labels.insert(RUNTIME_VERSION, version);
    }
    labels.insert(CAN_RESTORE, report.cannot_restore().is_none().to_string());
    labels
}

/// `value` as a label value (at most 63 of `[A-Za-z0-9._-]`, alphanumeric at both ends), or
/// None when nothing of it is left: `1.34.1`, `v2.1.4-k3s1`; `2.1.4+unknown` -> `2.1.4_unknown`.
fn label_value(value: &str) -> Option<String> {
    let kept: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .take(63)
        .collect();
    let trimmed = kept.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

fn patch(node: &str, labels: &BTreeMap<&'static str, String>) -> Patch<serde_json::Value> {
    Patch::Apply(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node, "labels": labels},
    }))
}

/// Keeps the node's labels in step with the prerequisites until the task is dropped.
pub async fn keep_labelled(client: kube::Client, node: String, prerequisites: Arc<Prerequisites>) {
    let api: Api<Node> = Api::all(client);
    let params = PatchParams::apply(&manager()).force();
    let mut applied = None;
    let mut tick = tokio::time::interval(INTERVAL);
    loop {
        tick.tick().await;
        let Some(report) = prerequisites.latest() else {
            continue;
        };
        let wanted = labels(&report);
        if applied.as_ref() == Some(&wanted) {
            continue;
        }
        let labelled = patch(&node, &wanted);
        match crate::cluster::within(INTERVAL, api.patch(&node, &params, &labelled)).await {
            Ok(_) => applied = Some(wanted),
            Err(error) => tracing::warn!(%error, %node, "labelling the node failed"),
        }
    }
}

/// Takes the labels away (noded stops: its node can no longer take or restore checkpoints).
pub async fn remove(client: kube::Client, node: &str) {
    let api: Api<Node> = Api::all(client);
    let params = PatchParams::apply(&manager()).force();
    let bare = patch(node, &BTreeMap::new());
    if let Err(error) = crate::cluster::within(INTERVAL, api.patch(node, &params, &bare)).await {
        tracing::warn!(%error, %node, "removing the node's labels failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prereq::{Check, RESTORE};
    use checkpointing::runtime::Verdict;

    fn report(name: Option<&str>, version: &str, restore: Verdict) -> Report {
        Report {
            runtime_name: name.map(Into::into),
            runtime_version: Some(version.into()),
            checks: vec![Check {
                name: RESTORE,
                state: restore,
                detail: "enable_criu_support is false".into(),
            }],
            ..Report::default()
        }
    }

    #[test]
    fn a_node_is_labelled_with_its_runtime_its_version_and_whether_it_restores() {
        let crio = labels(&report(Some("cri-o"), "1.34.1", Verdict::Ok));
        assert_eq!(crio[RUNTIME], "cri-o");
        assert_eq!(crio[RUNTIME_VERSION], "1.34.1");
        assert_eq!(crio[CAN_RESTORE], "true");
        let off = labels(&report(Some("containerd"), "v2.1.4+k3s1", Verdict::Failed));
        assert_eq!(off[RUNTIME], "containerd");
        assert_eq!(off[RUNTIME_VERSION], "v2.1.4_k3s1");
        assert_eq!(off[CAN_RESTORE], "false");
    }

    #[test]
    fn no_runtime_known_no_labels() {
        assert!(labels(&report(None, "1.0", Verdict::Ok)).is_empty());
        assert!(labels(&report(Some("docker"), "27.0", Verdict::Ok)).is_empty());
    }

    #[test]
    fn versions_become_valid_label_values() {
        assert_eq!(label_value("+++"), None);
        assert_eq!(label_value("(1.2)").as_deref(), Some("1.2"));
        let long = "1".repeat(80);
        assert_eq!(label_value(&long).unwrap().len(), 63);
    }
}
