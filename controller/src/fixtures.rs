//! The objects the controller's tests share: one request, its running pod, its node's Lease.

use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointSpec};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Pod, PodSpec, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};

/// A valid request for container `counter` of pod `app` in namespace `default`.
pub fn request() -> ContainerCheckpoint {
    let mut cc = ContainerCheckpoint::new(
        "cc1",
        ContainerCheckpointSpec {
            pod_name: "app".into(),
            container: "counter".into(),
            namespace: Some("default".into()),
            timeout_seconds: Some(30),
        },
    );
    cc.metadata.namespace = Some("default".into());
    cc.metadata.uid = Some("uid-cc1".into());
    cc.metadata.generation = Some(1);
    cc
}

pub fn pod() -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("app".into()),
            namespace: Some("default".into()),
            uid: Some("uid-pod".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some("node1".into()),
            containers: vec![Container {
                name: "counter".into(),
                ..Default::default()
            }],
            ..Default::default()
        }),
        status: Some(PodStatus {
            container_statuses: Some(vec![ContainerStatus {
                name: "counter".into(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
    }
}

pub fn lease(renewed: &str) -> Lease {
    Lease {
        metadata: ObjectMeta::default(),
        spec: Some(LeaseSpec {
            renew_time: Some(MicroTime(renewed.parse().unwrap())),
            lease_duration_seconds: Some(40),
            ..Default::default()
        }),
    }
}
