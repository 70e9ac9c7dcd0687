//! The credential a node-local registry wants for a pull, obtained as the kubelet does: a
//! ServiceAccount token for the registry's audience, bound to a pod on that node that the
//! restore webhook admitted to run the checkpoint image.

use std::time::Duration;

use checkpointing::crd::ContainerCheckpoint;
use checkpointing::names::{REGISTRY_AUDIENCE, RESTORE_FROM_ANNOTATION};
use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;

/// The pod-bound token a runtime presents (as the Basic password) to pull a checkpoint image.
pub struct PullCredential {
    /// The pod the token is bound to; delete it after the pull.
    pub pod: String,
    pub token: String,
}

/// The Basic username sent with a [`PullCredential`]; the registry ignores it, this is what
/// our credential provider answers.
pub const PULL_USER: &str = "kubelet";
/// The API server's minimum token lifetime; every pull with one finishes well inside.
const TOKEN_SECONDS: i64 = 600;
/// A kubelet sets up a pod sandbox in seconds.
const WAITING_WITHIN: Duration = Duration::from_secs(120);
/// How a kubelet reports a container whose image is absent under pull policy Never.
const NEVER_PULLED: &str = "ErrImageNeverPull";

/// The credential `node`'s kubelet would get for pulling checkpoint `image` of
/// ContainerCheckpoint `checkpoint` in `namespace`. Creates a pod (`pull-<checkpoint>-<node>`)
/// restoring from it, as a user would, with pull policy Never: the caller pulls, not the
/// kubelet. Returns once the kubelet reports the pod waiting for its image, so none of its
/// start-up overlaps what the caller does next. Panics, saying why, when it cannot.
pub async fn pull_credential(
    client: &kube::Client,
    namespace: &str,
    node: &str,
    checkpoint: &str,
    image: &str,
) -> PullCredential {
    let checkpoints: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), namespace);
    let container = checkpoints
        .get(checkpoint)
        .await
        .unwrap_or_else(|e| panic!("reading ContainerCheckpoint {checkpoint}: {e}"))
        .spec
        .container;
    let name = format!("pull-{checkpoint}-{node}");
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod = pods
        .create(
            &PostParams::default(),
            &credential_pod(&name, node, checkpoint, &container),
        )
        .await
        .unwrap_or_else(|e| panic!("creating pod {name}: {e}"));
    let runs = pod
        .spec
        .as_ref()
        .expect("a created pod has a spec")
        .containers
        .iter()
        .find(|k| k.name == container)
        .and_then(|k| k.image.as_deref());
    assert_eq!(
        runs,
        Some(image),
        "pod {name}, annotated to restore from {checkpoint}: the restore webhook did not rewrite its image"
    );
    tokio::time::timeout(WAITING_WITHIN, await_condition(pods, &name, never_pulled))
        .await
        .unwrap_or_else(|_| {
            panic!("{name} not waiting with {NEVER_PULLED} on {node} within {WAITING_WITHIN:?}")
        })
        .unwrap_or_else(|e| panic!("watching pod {name}: {e}"));
    let token = registry_token(client, namespace, &pod).await;
    PullCredential { pod: name, token }
}

/// What the kubelet requests for `pod`'s pulls: a token of its ServiceAccount, bound to it,
/// for the node-local registry's audience.
pub async fn registry_token(client: &kube::Client, namespace: &str, pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: vec![REGISTRY_AUDIENCE.to_owned()],
            bound_object_ref: Some(BoundObjectReference {
                api_version: Some("v1".to_owned()),
                kind: Some("Pod".to_owned()),
                name: Some(name.clone()),
                uid: pod.metadata.uid.clone(),
            }),
            expiration_seconds: Some(TOKEN_SECONDS),
        },
        ..Default::default()
    };
    // A token is bound only to a pod running as the ServiceAccount it is requested for.
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.as_deref())
        .unwrap_or("default");
    Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("requesting a registry token for pod {name}: {e}"))
        .status
        .expect("a TokenRequest answer has a status")
        .token
}

/// A pod bound to `node` that restores `container` from `checkpoint` (the restore webhook
/// rewrites its image) and that its kubelet never pulls for.
fn credential_pod(name: &str, node: &str, checkpoint: &str, container: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "annotations": {RESTORE_FROM_ANNOTATION: checkpoint}},
        "spec": {
            "nodeName": node,
            "containers": [{
                "name": container,
                "image": "busybox",
                "imagePullPolicy": "Never",
                "command": ["sleep", "inf"],
            }],
        },
    }))
    .expect("a valid pod")
}

/// Whether the pod's first container waits because its image is absent and may not be pulled.
fn never_pulled(pod: Option<&Pod>) -> bool {
    pod.and_then(|p| p.status.as_ref()?.container_statuses.as_ref()?.first())
        .and_then(|s| s.state.as_ref()?.waiting.as_ref()?.reason.as_deref())
        == Some(NEVER_PULLED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_pods_restore_on_their_node_and_are_never_pulled_for() {
        let pod = credential_pod("pull-move-0", "node2", "move-0", "mover");
        let annotations = pod.metadata.annotations.clone().unwrap();
        assert_eq!(annotations[RESTORE_FROM_ANNOTATION], "move-0");
        let spec = pod.spec.clone().unwrap();
        assert_eq!(spec.node_name.as_deref(), Some("node2"));
        assert_eq!(spec.containers[0].name, "mover");
        assert_eq!(
            spec.containers[0].image_pull_policy.as_deref(),
            Some("Never")
        );

        let waiting = |reason: &str| -> Pod {
            serde_json::from_value(serde_json::json!({"status": {"containerStatuses": [{
                "name": "mover", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason}},
            }]}}))
            .unwrap()
        };
        assert!(never_pulled(Some(&waiting(NEVER_PULLED))));
        assert!(!never_pulled(Some(&waiting("ContainerCreating"))));
        assert!(!never_pulled(Some(&pod)));
        assert!(!never_pulled(None));
    }
}
