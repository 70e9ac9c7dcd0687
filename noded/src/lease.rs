//! The node Lease that tells the controller a node daemon runs on this node (and whether its
//! runtime can restore checkpoints), and tells peers which certificate its peer server
//! presents.

use std::sync::Arc;
use std::time::Duration;

use checkpointing::names::{
    CANNOT_RESTORE_ANNOTATION, NODED_MANAGER, PEER_CERTIFICATE_ANNOTATION, noded_lease_name,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::prereq::Prerequisites;

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
    loop {
        tick.tick().await;
        let mut annotations = json!({ PEER_CERTIFICATE_ANNOTATION: pin });
        // Applied each time: left out, server-side apply drops it once the runtime can.
        if let Some(why) = prerequisites.latest().and_then(|r| r.cannot_restore()) {
            annotations[CANNOT_RESTORE_ANNOTATION] = json!(why);
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
