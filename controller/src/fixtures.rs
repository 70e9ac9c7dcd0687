//! The objects the controller's tests share. A checkpoint: one request, its running pod, its
//! node's Lease and the Content the controller makes for it. A restore: the pod that asks for
//! one and the checkpoint it names.

use std::collections::BTreeMap;

use checkpointing::crd::{
    CheckpointPolicy, CheckpointState, ContainerCheckpoint, ContainerCheckpointContent,
    ContainerCheckpointContentSpec, ContainerCheckpointContentStatus, ContainerCheckpointSpec,
    ContainerCheckpointStatus, PodCheckpoint, PodMigration, PodMigrationSpec,
};
use checkpointing::names::{NODE_LABEL, RESTORE_FROM_ANNOTATION};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStatus, Node, Pod, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::Resource;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use serde_json::Value;

use crate::reconciles::Settings;
use crate::stores::{Stores, Synced};

/// The tests' clock: a minute into 2025.
pub fn now() -> Timestamp {
    "2025-01-01T00:01:00Z".parse().unwrap()
}

/// PodMigration `default/move-app` of pod `app` to `target`, UID `c0ffee-1`; no creation time
/// (each test sets the clock it runs by).
pub fn migration(target: Option<&str>) -> PodMigration {
    let mut m = PodMigration::new(
        "move-app",
        PodMigrationSpec {
            pod_name: "app".into(),
            target_node: target.map(Into::into),
            delete_source: None,
            timeout_seconds: None,
            registry: None,
            from_checkpoint: None,
        },
    );
    m.metadata.namespace = Some("default".into());
    m.metadata.uid = Some("c0ffee-1".into());
    m
}

/// The flags' defaults.
pub fn settings() -> Settings {
    Settings {
        node_loss_after: std::time::Duration::from_secs(120),
        pending_timeout: std::time::Duration::from_secs(300),
        credentials_namespace: checkpointing::names::DEFAULT_CREDENTIALS_NAMESPACE.into(),
    }
}

/// A valid request for container `counter` of pod `app` in namespace `default`.
pub fn request() -> ContainerCheckpoint {
    let mut cc = ContainerCheckpoint::new(
        "cc1",
        ContainerCheckpointSpec {
            pod_name: "app".into(),
            container: "counter".into(),
            namespace: Some("default".into()),
            timeout_seconds: Some(30),
            registry: None,
            hold_source: false,
        },
    );
    cc.metadata.namespace = Some("default".into());
    cc.metadata.uid = Some("uid-cc1".into());
    cc.metadata.generation = Some(1);
    cc
}

/// Pod `app` on node `node1`: `counter` runs, `sidecar` has reported no status yet.
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
            containers: ["counter", "sidecar"]
                .map(|name| Container {
                    name: name.into(),
                    ..Default::default()
                })
                .into(),
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

/// `pod` running, every container up.
pub fn running(mut pod: Pod) -> Pod {
    let status = pod.status.get_or_insert_with(Default::default);
    status.phase = Some("Running".into());
    status.container_statuses = Some(
        pod.spec
            .as_ref()
            .unwrap()
            .containers
            .iter()
            .map(|c| ContainerStatus {
                name: c.name.clone(),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }),
                ..Default::default()
            })
            .collect(),
    );
    pod
}

/// A noded Lease of 40 seconds, last renewed at `renewed`.
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

/// The Content the controller creates for `request()` on `pod()`, before noded touches it.
pub fn content() -> ContainerCheckpointContent {
    let request = request();
    let owner = OwnerReference {
        block_owner_deletion: Some(true),
        ..request.controller_owner_ref(&()).unwrap()
    };
    ContainerCheckpointContent {
        metadata: ObjectMeta {
            name: Some("cc1".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([(
                NODE_LABEL.to_owned(),
                "node1".to_owned(),
            )])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: ContainerCheckpointContentSpec {
            container_checkpoint_ref: "cc1".into(),
            namespace: "default".into(),
            pod_name: "app".into(),
            container_name: "counter".into(),
            node_name: "node1".into(),
            pod_uid: "uid-pod".into(),
            timeout_seconds: Some(30),
            volumes: Vec::new(),
            registry: None,
            credentials_secret: None,
            hold_source: false,
        },
        status: None,
    }
}

/// `content()` as noded reported `status`.
pub fn content_with(status: ContainerCheckpointContentStatus) -> ContainerCheckpointContent {
    ContainerCheckpointContent {
        status: Some(status),
        ..content()
    }
}

pub const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

pub fn image() -> String {
    format!("localhost:5050/default/counter-checkpoint@{DIGEST}")
}

/// The seed's restored pod: `counter` plus a sidecar, restoring from `from` when given.
pub fn restore_pod(from: Option<&str>) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some("restored-app".into()),
            namespace: Some("default".into()),
            annotations: from.map(|f| {
                [
                    (RESTORE_FROM_ANNOTATION.to_owned(), f.to_owned()),
                    ("note".to_owned(), "kept".to_owned()),
                ]
                .into()
            }),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![
                Container {
                    name: "sidecar".into(),
                    image: Some("nginx".into()),
                    ..Default::default()
                },
                Container {
                    name: "counter".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                },
            ],
            ..Default::default()
        }),
        status: None,
    }
}

pub fn checkpoint(state: Option<CheckpointState>, message: &str) -> ContainerCheckpoint {
    let mut cc = ContainerCheckpoint::new(
        "counter-checkpoint",
        ContainerCheckpointSpec {
            pod_name: "stateful-app".into(),
            container: "counter".into(),
            namespace: None,
            timeout_seconds: None,
            registry: None,
            hold_source: false,
        },
    );
    cc.metadata.namespace = Some("default".into());
    cc.status = Some(ContainerCheckpointStatus {
        state,
        message: (!message.is_empty()).then(|| message.to_owned()),
        image: (state == Some(CheckpointState::Completed)).then(image),
        ..Default::default()
    });
    cc
}

/// Applies an RFC 6902 patch of `add` operations, as the API server would.
pub fn apply(pod: &Pod, patch: &Value) -> Pod {
    let mut doc = serde_json::to_value(pod).unwrap();
    for op in patch.as_array().unwrap() {
        assert_eq!(op["op"], "add");
        let path = op["path"].as_str().unwrap();
        let (parent, key) = path.rsplit_once('/').unwrap();
        let key = key.replace("~1", "/").replace("~0", "~");
        let target = doc.pointer_mut(parent).expect("parent exists");
        match target {
            Value::Array(items) if key == "-" => items.push(op["value"].clone()),
            Value::Array(items) => items[key.parse::<usize>().unwrap()] = op["value"].clone(),
            Value::Object(map) => {
                map.insert(key, op["value"].clone());
            }
            other => panic!("cannot add to {other}"),
        }
    }
    serde_json::from_value(doc).unwrap()
}

/// The leader's stores with every watch listed and the live noded Lease of each of `nodes`,
/// and the writers through which a test delivers what the watches would.
pub struct Watches {
    pub stores: Stores,
    pub requests: Writer<ContainerCheckpoint>,
    pub contents: Writer<ContainerCheckpointContent>,
    pub pod_checkpoints: Writer<PodCheckpoint>,
    pub restored: Writer<Pod>,
}

impl Watches {
    pub fn listed(nodes: &[&str]) -> Self {
        fn empty<K: kube::Resource<DynamicType = ()> + Clone>() -> (reflector::Store<K>, Writer<K>)
        {
            let (store, mut writer) = reflector::store();
            writer.apply_watcher_event(&watcher::Event::InitDone);
            (store, writer)
        }
        let (leases, mut lease_writer) = reflector::store();
        for node in nodes {
            let mut live = lease("2025-01-01T00:00:00Z");
            live.metadata.name = Some(format!("checkpoint-noded-{node}"));
            live.metadata.namespace = Some("kube-system".into());
            live.spec.as_mut().unwrap().renew_time = Some(MicroTime(Timestamp::now()));
            lease_writer.apply_watcher_event(&watcher::Event::InitApply(live));
        }
        lease_writer.apply_watcher_event(&watcher::Event::InitDone);
        let synced = Synced::default();
        for flag in synced.leaders().iter().chain([&synced.leases]) {
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let (requests, requests_writer) = empty();
        let (contents, contents_writer) = empty();
        let (pod_checkpoints, pod_checkpoints_writer) = empty();
        let (migrations, _) = empty::<PodMigration>();
        let (restored, restored_writer) = empty();
        let (policies, _) = empty::<CheckpointPolicy>();
        let (nodes, _) = empty::<Node>();
        Self {
            stores: Stores {
                requests,
                contents,
                pod_checkpoints,
                migrations,
                restored,
                policies,
                nodes,
                leases,
                lease_namespace: "kube-system".into(),
                synced,
            },
            requests: requests_writer,
            contents: contents_writer,
            pod_checkpoints: pod_checkpoints_writer,
            restored: restored_writer,
        }
    }
}

/// The watch of `writer`'s kind delivers `object`.
pub fn deliver<K: kube::Resource<DynamicType = ()> + Clone>(writer: &mut Writer<K>, object: K) {
    writer.apply_watcher_event(&watcher::Event::Apply(object));
}
