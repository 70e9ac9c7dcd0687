use super::*;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};

const LOCAL: &str = "localhost:5050";
const PUSHED: &str = "registry.example:5443/team/ckpt@sha256:aa";

fn pod(images: &[&str], phase: &str, restoring: bool) -> Pod {
    let mut pod = Pod {
        spec: Some(PodSpec {
            containers: images
                .iter()
                .map(|i| Container {
                    name: "c".into(),
                    image: Some((*i).into()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }),
        status: Some(PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    if restoring {
        pod.metadata.annotations = Some(
            [(
                RESTORED_FROM_DIGEST_ANNOTATION.to_owned(),
                "sha256:aa".to_owned(),
            )]
            .into(),
        );
    }
    pod
}

#[test]
fn only_pending_restores_of_the_node_local_registry_need_preparing() {
    let local = format!("{LOCAL}/ns/cc@sha256:bb");
    let arriving = pod(&[PUSHED, &local], "Pending", true);
    assert_eq!(
        restored_images(&arriving, LOCAL),
        ["ns/cc@sha256:bb"],
        "every restore pulls from the node-local registry; no other image is a checkpoint's"
    );
    let none = Vec::<&str>::new();
    assert_eq!(
        restored_images(&pod(&[PUSHED, &local], "Running", true), LOCAL),
        none
    );
    assert_eq!(
        restored_images(&pod(&[PUSHED, &local], "Pending", false), LOCAL),
        none,
        "not admitted to restore"
    );
    assert_eq!(
        restored_images(&pod(&["busybox:latest"], "Pending", true), LOCAL),
        none,
        "a sidecar's ordinary image is not a checkpoint"
    );
}
