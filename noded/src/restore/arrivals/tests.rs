use super::*;
use checkpointing::crd::{ContainerCheckpointContentSpec, ContainerCheckpointContentStatus};
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
fn only_pending_restores_need_preparing_each_by_where_it_pulls_from() {
    let local = format!("{LOCAL}/ns/cc@sha256:bb");
    let arriving = pod(&[PUSHED, &local], "Pending", true);
    let (here, external) = restored_images(&arriving, LOCAL);
    assert_eq!(here, ["ns/cc@sha256:bb"]);
    assert_eq!(external, [PUSHED]);
    let none = (Vec::<&str>::new(), Vec::<&str>::new());
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

#[test]
fn the_base_image_comes_from_the_content_whose_image_it_is() {
    let content = |image: &str, base: Option<&str>| {
        let mut c = ContainerCheckpointContent::new(
            "cc",
            ContainerCheckpointContentSpec {
                container_checkpoint_ref: "cc".into(),
                namespace: "ns".into(),
                pod_name: "p".into(),
                container_name: "c".into(),
                node_name: "node3".into(),
                pod_uid: "u".into(),
                timeout_seconds: None,
                volumes: Vec::new(),
                registry: None,
                credentials_secret: None,
                hold_source: false,
            },
        );
        c.status = Some(ContainerCheckpointContentStatus {
            image: Some(image.into()),
            base_image: base.map(str::to_owned),
            ..Default::default()
        });
        c
    };
    let contents = [
        content("registry.example:5443/team/other@sha256:cc", Some("other")),
        content(PUSHED, Some("busybox@sha256:dd")),
    ];
    assert_eq!(recorded_base(&contents, PUSHED), Some("busybox@sha256:dd"));
    assert_eq!(
        recorded_base(&contents, "registry.example:5443/x@sha256:ee"),
        None
    );
    assert_eq!(recorded_base(&[content(PUSHED, None)], PUSHED), None);
}
