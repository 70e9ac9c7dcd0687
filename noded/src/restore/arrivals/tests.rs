use super::*;
use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};

const LOCAL: &str = "localhost:5050";
const PORT: u16 = 5050;
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

/// What `restored_images` finds, as written back.
fn restored(pod: &Pod) -> Vec<String> {
    restored_images(pod, PORT)
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn only_pending_restores_of_the_node_local_registry_need_preparing() {
    let local = format!("{LOCAL}/ns/cc@sha256:bb");
    let arriving = pod(&[PUSHED, &local], "Pending", true);
    assert_eq!(
        restored(&arriving),
        [local.as_str()],
        "every restore pulls from the node-local registry; no other image is a checkpoint's"
    );
    let none = Vec::<String>::new();
    assert_eq!(restored(&pod(&[PUSHED, &local], "Running", true)), none);
    assert_eq!(
        restored(&pod(&[PUSHED, &local], "Pending", false)),
        none,
        "not admitted to restore"
    );
    assert_eq!(
        restored(&pod(&["busybox:latest"], "Pending", true)),
        none,
        "a sidecar's ordinary image is not a checkpoint"
    );
}

#[test]
fn the_node_local_registry_is_known_however_its_host_is_spelled() {
    let spellings = [
        "127.0.0.1:5050/ns/cc@sha256:bb",
        "LOCALHOST:5050/ns/cc@sha256:bb",
        "[::1]:5050/ns/cc@sha256:bb",
    ];
    let arriving = pod(&spellings, "Pending", true);
    assert_eq!(restored_images(&arriving, PORT).len(), spellings.len());
    let elsewhere = pod(
        &[
            "localhost:5051/ns/cc@sha256:bb",
            "r.example:5050/ns/cc@sha256:bb",
        ],
        "Pending",
        true,
    );
    assert!(restored_images(&elsewhere, PORT).is_empty());
}
