//! The node Lease that tells the controller a node daemon runs on this node and what the node
//! can restore (its runtime, its architecture, whether its runtime can restore at all), and
//! tells peers which certificate its peer server presents.

use std::sync::Arc;
use std::time::Duration;

use checkpointing::names::{
    ARCH_ANNOTATION, CANNOT_RESTORE_ANNOTATION, NODED_MANAGER, PEER_CERTIFICATE_ANNOTATION,
    RUNTIME_ANNOTATION, goarch, noded_lease_name,
};
use checkpointing::runtime::RuntimeKind;
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
        let report = prerequisites.latest();
        runtime = report.as_ref().and_then(runtime_of).or(runtime);
        let annotations = annotations(&pin, report.as_ref(), runtime, ARCH);
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
}
