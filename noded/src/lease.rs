//! The node Lease that tells the controller a node daemon runs on this node and what the node
//! can restore (its runtime, its architecture, whether its runtime can restore at all), tells
//! peers which certificate its peer server presents, and tells `kubectl checkpoint doctor` the
//! node's latest prerequisite checks.

use std::sync::Arc;
use std::time::Duration;

use checkpointing::names::{
    ARCH_ANNOTATION, CANNOT_RESTORE_ANNOTATION, NODED_MANAGER, PEER_CERTIFICATE_ANNOTATION,
    PREREQUISITES_ANNOTATION, RUNTIME_ANNOTATION, goarch, noded_lease_name,
};
use checkpointing::runtime::RuntimeKind;
use checkpointing::text::truncated;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use crate::prereq::{Prerequisites, Report};

/// This build's CPU architecture (noded runs on its node).
const ARCH: &str = std::env::consts::ARCH;

/// How long a renewal stays valid; renewed three times as often so one missed renewal is harmless.
const DURATION: Duration = Duration::from_secs(30);

/// Longest detail of a check on the Lease: every controller and noded watches the Leases, so
/// they stay small (a runtime's error chain can be long).
const DETAIL_MAX: usize = 300;

/// Renews the Lease until the task is dropped. Failures are logged and retried: they must not
/// stop checkpoints already under way.
pub async fn keep_renewed(
    client: kube::Client,
    namespace: String,
    node: String,
    pin: String,
    prerequisites: Arc<Prerequisites>,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let name = noded_lease_name(&node);
    let mut tick = tokio::time::interval(DURATION / 3);
    // The last runtime the checks named: one that stops answering for a while is still of its
    // family (its Lease then says it cannot restore, and why).
    let mut runtime = None;
    loop {
        // Also as soon as the prerequisites change: the first check ends after the first
        // renewal, and a restore placed meanwhile would find no runtime on the Lease.
        tokio::select! {
            _ = tick.tick() => {}
            () = prerequisites.changed() => {}
        }
        let checked = prerequisites.checked();
        let report = checked.as_ref().map(|(report, _)| report);
        runtime = report.and_then(runtime_of).or(runtime);
        let mut annotations = annotations(&pin, report, runtime, ARCH);
        if let Some((report, at)) = &checked {
            annotations[PREREQUISITES_ANNOTATION] = json!(prerequisites_json(report, *at));
        }
        let patch = json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": name,
                "annotations": annotations,
            },
            "spec": {
                "holderIdentity": node,
                "leaseDurationSeconds": DURATION.as_secs(),
                "renewTime": MicroTime(Timestamp::now()),
            },
        });
        let params = PatchParams::apply(NODED_MANAGER).force();
        let patch = Patch::Apply(patch);
        // Within one tick: a call that hangs must not hold up the next renewal past expiry.
        let renewal = crate::cluster::within(DURATION / 3, api.patch(&name, &params, &patch));
        if let Err(error) = renewal.await {
            tracing::warn!(%error, lease = %name, "renewing the node lease failed");
        }
    }
}

/// The runtime a report names, if it is one we know.
fn runtime_of(report: &Report) -> Option<RuntimeKind> {
    RuntimeKind::detect(report.runtime_name.as_deref()?)
}

/// The Lease's annotations. All applied each time: one left out (the runtime can restore
/// again) is dropped by server-side apply.
fn annotations(
    pin: &str,
    report: Option<&Report>,
    runtime: Option<RuntimeKind>,
    arch: &str,
) -> Value {
    let mut annotations = json!({
        PEER_CERTIFICATE_ANNOTATION: pin,
        ARCH_ANNOTATION: goarch(arch),
    });
    if let Some(why) = report.and_then(Report::cannot_restore) {
        annotations[CANNOT_RESTORE_ANNOTATION] = json!(why);
    }
    if let Some(runtime) = runtime {
        annotations[RUNTIME_ANNOTATION] = json!(runtime.cri_name());
    }
    annotations
}

/// The prerequisites annotation's value: `report` as checked `at`.
fn prerequisites_json(report: &Report, at: Timestamp) -> String {
    let checks: Vec<Value> = report
        .checks
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "state": c.state.to_string(),
                "detail": truncated(&c.detail, DETAIL_MAX),
            })
        })
        .collect();
    json!({
        "runtime": {"name": report.runtime_name, "version": report.runtime_version},
        "criu": report.criu_version,
        "checked": at.to_string(),
        "checks": checks,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prereq::{Check, RESTORE};
    use checkpointing::runtime::Verdict;

    #[test]
    fn the_lease_says_the_runtime_and_architecture_as_kubernetes_names_them() {
        let report = Report {
            runtime_name: Some("containerd".into()),
            ..Report::default()
        };
        let runtime = runtime_of(&report);
        assert_eq!(runtime, Some(RuntimeKind::Containerd));
        let a = annotations("pin", Some(&report), runtime, "x86_64");
        assert_eq!(a[RUNTIME_ANNOTATION], "containerd");
        assert_eq!(a[ARCH_ANNOTATION], "amd64");
        assert_eq!(a[PEER_CERTIFICATE_ANNOTATION], "pin");
        assert!(a.get(CANNOT_RESTORE_ANNOTATION).is_none());
        assert_eq!(goarch("aarch64"), "arm64");
        assert_eq!(goarch("riscv64"), "riscv64");
    }

    #[test]
    fn an_unknown_runtime_is_not_named_and_one_that_cannot_restore_says_why() {
        for name in [None, Some("docker")] {
            let report = Report {
                runtime_name: name.map(Into::into),
                ..Report::default()
            };
            assert_eq!(runtime_of(&report), None, "{name:?}");
            let a = annotations("pin", Some(&report), None, "aarch64");
            assert!(a.get(RUNTIME_ANNOTATION).is_none(), "{name:?}");
            assert_eq!(a[ARCH_ANNOTATION], "arm64");
        }
        // A runtime that stopped answering: still of its family, and it cannot restore.
        let report = Report {
            runtime_name: None,
            checks: vec![Check {
                name: RESTORE,
                state: Verdict::Failed,
                detail: "the runtime does not answer".into(),
            }],
            ..Report::default()
        };
        let a = annotations("pin", Some(&report), Some(RuntimeKind::CriO), "x86_64");
        assert_eq!(a[RUNTIME_ANNOTATION], "cri-o");
        assert_eq!(a[CANNOT_RESTORE_ANNOTATION], "the runtime does not answer");
    }

    #[test]
    fn the_prerequisites_annotation_holds_every_check_with_short_details() {
        let report = Report {
            runtime_name: Some("cri-o".into()),
            runtime_version: Some("1.34.1".into()),
            criu_version: None,
            checks: vec![
                Check {
                    name: RESTORE,
                    state: Verdict::Assumed,
                    detail: "restore assumed".into(),
                },
                Check {
                    name: "tcp_close",
                    state: Verdict::Failed,
                    detail: "x".repeat(2000),
                },
            ],
        };
        let at: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let value: Value = serde_json::from_str(&prerequisites_json(&report, at)).unwrap();
        assert_eq!(
            value["runtime"],
            json!({"name": "cri-o", "version": "1.34.1"})
        );
        assert_eq!(value["criu"], Value::Null);
        assert_eq!(value["checked"], "2026-01-02T03:04:05Z");
        assert_eq!(
            value["checks"][0],
            json!({"name": "restore", "state": "assumed", "detail": "restore assumed"})
        );
        assert_eq!(value["checks"][1]["state"], "failed");
        let long = value["checks"][1]["detail"].as_str().unwrap();
        assert!(long.len() <= DETAIL_MAX && long.ends_with('…'), "{long}");
    }
}
