//! noded's test fakes and fixtures, one of each: a CRI runtime, the cluster seam, a push
//! registry, checkpoint archives, Contents.

pub mod push_registry;
mod writes;
pub use writes::Writes;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpointing::crd::{
    ContainerCheckpointContent, ContainerCheckpointContentSpec, ContainerCheckpointContentStatus,
};
use checkpointing::cri::{CriError, Runtime, api};
use checkpointing::names::{PEER_AUDIENCE, RESTORED_FROM_DIGEST_ANNOTATION, kubelet};
use checkpointing::oci::ImageLayout;
use checkpointing::reference::Spelling;
use k8s_openapi::api::authentication::v1::{TokenReviewStatus, UserInfo};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::checkpoint::Checkpointer;
use crate::cluster::Cluster;
use crate::space::{DEFAULT_RESERVE_MIB, DiskSpace};
use crate::store::CheckpointDir;

/// The user noded's peers authenticate as.
pub const NODED: &str = "system:serviceaccount:kube-system:checkpoint-noded";
/// The token [`FakeCluster`] authenticates as [`NODED`] on [`PEER_NODE`].
pub const GOOD_TOKEN: &str = "good-token";
/// The node whose noded's token is [`GOOD_TOKEN`]: the one fetching in the tests.
pub const PEER_NODE: &str = "node2";

/// `sha256:` and 64 times `c`.
pub fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// The Content `default/cp` (UID `uid-1`) of a checkpoint taken on `node`; ready with `image`
/// when there is one.
pub fn content(node: &str, image: Option<String>) -> ContainerCheckpointContent {
    let mut c = ContainerCheckpointContent::new(
        "cp",
        ContainerCheckpointContentSpec {
            container_checkpoint_ref: "cp".into(),
            namespace: "default".into(),
            pod_name: "p".into(),
            container_name: "c".into(),
            node_name: node.into(),
            pod_uid: "pod".into(),
            timeout_seconds: None,
            volumes: Vec::new(),
            registry: None,
            credentials_secret: None,
            hold_source: false,
        },
    );
    c.metadata.namespace = Some("default".into());
    c.metadata.uid = Some("uid-1".into());
    c.status = Some(ContainerCheckpointContentStatus {
        ready: image.is_some(),
        image,
        ..Default::default()
    });
    c
}

/// A container the kubelet made for `[namespace, pod, pod UID, container name]`.
pub fn container(
    id: &str,
    state: api::ContainerState,
    created_at: i64,
    [namespace, pod, pod_uid, name]: [&str; 4],
) -> api::Container {
    let labels = [
        (kubelet::POD_NAMESPACE, namespace),
        (kubelet::POD_NAME, pod),
        (kubelet::POD_UID, pod_uid),
        (kubelet::CONTAINER_NAME, name),
    ];
    api::Container {
        id: id.into(),
        state: state as i32,
        created_at,
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        ..Default::default()
    }
}

/// Disk space of `node1` with the default reserve on a disk of `free` bytes free.
pub fn disk_space(free: fn(&Path) -> std::io::Result<u64>) -> DiskSpace {
    DiskSpace::new("node1".into(), DEFAULT_RESERVE_MIB).with_free(free)
}

/// A disk with room for anything: tests not about space do not depend on the machine's.
pub fn roomy_disk() -> DiskSpace {
    disk_space(|_| Ok(u64::MAX))
}

/// A checkpointer through `runtime` keeping its files under `tmp`, on a roomy disk.
pub fn checkpointer(runtime: FakeRuntime, tmp: &Path) -> Checkpointer<FakeRuntime> {
    let dir = CheckpointDir::open(tmp.join("checkpoints")).unwrap();
    let layout = ImageLayout::open(tmp.join("checkpoints/oci")).unwrap();
    Checkpointer::new(
        runtime,
        dir,
        Arc::new(layout),
        "localhost:5050".into(),
        crate::push::Pusher::new(Vec::new(), None, Default::default()).unwrap(),
        roomy_disk(),
    )
}

/// A checkpoint archive: `config.dump` holding `config`, and `payload` as its memory pages.
pub fn archive_bytes(config: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in [("config.dump", config), ("checkpoint/pages-1.img", payload)] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// What a runtime's checkpoint does to the v1 freezer of the container in `dir` (CRI-O and
/// containerd alike): pause (on a busy node after a freeze that did not take), CRIU thaws it
/// into ptrace stops while it dumps, CRIU freezes it again when done, the runtime resumes it
/// after `paused_after_dump`. `None`: a runtime that
/// does not pause, whose CRIU leaves the container thawed.
///
/// Returns whether CRIU could dump: not when the pod's cgroup above froze the tasks while CRIU
/// needed them to run under its ptrace ("Unseizable non-zombie … state D").
pub async fn runtime_pause(dir: &Path, paused_after_dump: Option<Duration>) -> bool {
    // Each file replaced whole, the freeze asked for before it shows, as the kernel's files read.
    let put = |file: &str, value: &str| {
        let tmp = dir.join(format!(".{file}"));
        std::fs::write(&tmp, value).unwrap();
        std::fs::rename(tmp, dir.join(file)).unwrap();
    };
    let set = |state: &str| {
        let own = if state == "THAWED" { "0" } else { "1" };
        put("freezer.self_freezing", own);
        put("freezer.state", state);
    };
    // Long enough that a watcher on a busy machine still sees each phase.
    let step = Duration::from_millis(50);
    if paused_after_dump.is_some() {
        // runc's pause on a busy node: the freeze does not take, it thaws and asks again.
        for state in ["FREEZING", "THAWED", "FREEZING", "FROZEN"] {
            set(state);
            tokio::time::sleep(step).await;
        }
    }
    set("THAWED");
    tokio::time::sleep(step).await;
    let pod = dir.parent().unwrap().join("freezer.state");
    let seized = std::fs::read_to_string(pod).is_ok_and(|s| s.trim() != "FROZEN");
    if let Some(paused) = paused_after_dump {
        set("FROZEN");
        tokio::time::sleep(paused).await;
        set("THAWED");
    }
    seized
}

/// A containerd that lists `containers`, records checkpoint calls and writes a small archive
/// like a real one, and holds the images it has pulled: each reference an image of its own,
/// whose id is the reference. Clones share what they record.
#[derive(Clone, Default)]
pub struct FakeRuntime {
    pub containers: Vec<api::Container>,
    /// CheckpointContainer leaves half an archive and fails with this.
    pub fail_with: Option<fn() -> CriError>,
    /// With `fail_with`: only the first this many calls fail (0: every call).
    pub failing_calls: usize,
    /// CheckpointContainer succeeds without writing an archive.
    pub write_nothing: bool,
    /// How CheckpointContainer writes the archive.
    pub writes: Writes,
    pub calls: Arc<Mutex<Vec<(String, PathBuf, Duration)>>>,
    /// CheckpointContainer calls running now, and the most that ever ran at once.
    pub in_flight: Arc<AtomicUsize>,
    pub most_in_flight: Arc<AtomicUsize>,
    pub images: Arc<Mutex<HashSet<String>>>,
    pub pulls: Arc<Mutex<Vec<String>>>,
    pub fail_pulls: bool,
    /// What ContainerStats answers; `None`: the runtime does not implement it.
    pub stats: Option<api::ContainerStats>,
    /// RemoveImage calls, in order.
    pub removals: Arc<Mutex<Vec<String>>>,
    /// Images RemoveImage refuses, as CRI-O does an image a container uses.
    pub in_use: HashSet<String>,
    /// The cgroups path ContainerStatus names for every container (`None`: none).
    pub cgroup: Option<String>,
    /// The v1 freezer directory of the containers' cgroup, which CheckpointContainer pauses
    /// and resumes as both runtimes do ([`runtime_pause`]).
    pub freezer: Option<PathBuf>,
    /// Why CRI `Status` says the runtime is not ready (`None`: RuntimeReady).
    pub not_ready: Option<String>,
    /// Serves CheckpointPod and RestorePod: refuses an empty request as such a runtime does
    /// (otherwise UNIMPLEMENTED, as today's runtimes answer).
    pub pod_level: bool,
    /// A CRI-O whose `/config` over HTTP is this; `None`: a containerd, with no HTTP API.
    pub crio_config: Option<String>,
}

impl FakeRuntime {
    /// The archive a checkpoint writes.
    pub fn archive() -> Vec<u8> {
        let config =
            br#"{"id":"c1","name":"counter","rootfsImageName":"docker.io/library/busybox:latest",
            "rootfsImage":"sha256:aa","checkpointedTime":"2026-11-24T10:00:00Z"}"#;
        archive_bytes(config, b"memory")
    }

    /// A pod-level call naming `what`: refused when empty, as by a runtime that serves it.
    fn pod_level_call(&self, op: &'static str, what: &str) -> Result<(), CriError> {
        match (self.pod_level, what.is_empty()) {
            (false, _) => Err(CriError::Unimplemented {
                op,
                message: format!("unknown method {op}"),
            }),
            (true, true) => Err(CriError::Rpc {
                op,
                code: tonic::Code::InvalidArgument,
                message: "empty request".into(),
            }),
            (true, false) => Ok(()),
        }
    }
}

impl Runtime for FakeRuntime {
    async fn version(&self) -> Result<api::VersionResponse, CriError> {
        let (name, version) = match self.crio_config {
            Some(_) => ("cri-o", "1.34.1"),
            None => ("containerd", "v2.1.9"),
        };
        Ok(api::VersionResponse {
            runtime_name: name.into(),
            runtime_version: version.into(),
            ..Default::default()
        })
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<api::Container>, CriError> {
        Ok(self
            .containers
            .iter()
            .filter(|c| {
                labels
                    .iter()
                    .all(|(k, v)| c.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .cloned()
            .collect())
    }

    async fn checkpoint_container(
        &self,
        id: &str,
        location: &Path,
        timeout: Duration,
    ) -> Result<(), CriError> {
        let call = {
            let mut calls = self.calls.lock().unwrap();
            calls.push((id.into(), location.into(), timeout));
            calls.len()
        };
        if let Some(dir) = &self.freezer
            && !runtime_pause(dir, Some(Duration::from_millis(20))).await
        {
            return Err(CriError::Rpc {
                op: "CheckpointContainer",
                code: tonic::Code::Unknown,
                message: "criu failed: Unseizable non-zombie found, state D".into(),
            });
        }
        // A dump takes a moment, so calls that may run together do.
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let failing = self.failing_calls == 0 || call <= self.failing_calls;
        if let Some(fail) = self.fail_with.filter(|_| failing) {
            std::fs::write(location, b"half an archive").unwrap();
            return Err(fail());
        }
        if !self.write_nothing {
            self.writes.write(location, &Self::archive()).await;
        }
        Ok(())
    }

    async fn container_cgroup(&self, id: &str) -> Result<Option<String>, CriError> {
        if !self.containers.iter().any(|c| c.id == id) {
            return Err(CriError::NotFound {
                op: "ContainerStatus",
                message: format!("container {id} not found"),
            });
        }
        Ok(self.cgroup.clone())
    }

    async fn container_stats(&self, _: &str) -> Result<Option<api::ContainerStats>, CriError> {
        self.stats.map(Some).ok_or_else(|| CriError::Unimplemented {
            op: "ContainerStats",
            message: "not part of this fake".into(),
        })
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        Ok(self
            .images
            .lock()
            .unwrap()
            .contains(image)
            .then(|| api::Image {
                id: "sha256:00".into(),
                ..Default::default()
            }))
    }

    async fn pull_image(&self, image: &str) -> Result<String, CriError> {
        self.pulls.lock().unwrap().push(image.into());
        if self.fail_pulls {
            return Err(CriError::NotFound {
                op: "PullImage",
                message: format!("{image}: not found"),
            });
        }
        self.images.lock().unwrap().insert(image.into());
        Ok(image.into())
    }

    async fn list_images(&self) -> Result<Vec<api::Image>, CriError> {
        Ok(self
            .images
            .lock()
            .unwrap()
            .iter()
            .map(|reference| {
                let mut image = api::Image {
                    id: reference.clone(),
                    ..Default::default()
                };
                if Spelling::of(reference).digest.is_some() {
                    image.repo_digests.push(reference.clone());
                } else {
                    image.repo_tags.push(reference.clone());
                }
                image
            })
            .collect())
    }

    async fn remove_image(&self, image: &str) -> Result<(), CriError> {
        self.removals.lock().unwrap().push(image.into());
        if self.in_use.contains(image) {
            return Err(CriError::Rpc {
                op: "RemoveImage",
                code: tonic::Code::Unknown,
                message: format!("image used by a container: {image}"),
            });
        }
        self.images.lock().unwrap().remove(image);
        Ok(())
    }

    async fn conditions(&self, _: Duration) -> Result<Vec<api::RuntimeCondition>, CriError> {
        Ok(vec![api::RuntimeCondition {
            r#type: "RuntimeReady".into(),
            status: self.not_ready.is_none(),
            reason: self.not_ready.clone().unwrap_or_default(),
            ..Default::default()
        }])
    }

    async fn checkpoint_pod(
        &self,
        request: api::CheckpointPodRequest,
        _: Duration,
    ) -> Result<(), CriError> {
        self.pod_level_call("CheckpointPod", &request.pod_sandbox_id)
    }

    async fn restore_pod(
        &self,
        request: api::RestorePodRequest,
        _: Duration,
    ) -> Result<String, CriError> {
        self.pod_level_call("RestorePod", &request.checkpoint_path)
            .map(|()| "sandbox".into())
    }

    async fn http_get(&self, path: &str, _: Duration) -> Result<String, String> {
        match (&self.crio_config, path) {
            (Some(config), "/config") => Ok(config.clone()),
            (Some(_), "/info") => {
                Ok(r#"{"storage_driver":"overlay","cgroup_driver":"systemd"}"#.into())
            }
            (Some(_), _) => Err(format!("CRI-O GET {path}: answered 404 Not Found")),
            (None, _) => Err("containerd has no HTTP API".into()),
        }
    }
}

/// A cluster of `contents`, `nodes` and `pods` that authenticates, for peers, [`GOOD_TOKEN`]
/// as [`NODED`] on [`PEER_NODE`] and `other-user` as someone else, and the `tokens` given;
/// counting Content lookups, token reviews, pod lookups and lists.
#[derive(Default)]
pub struct FakeCluster {
    pub contents: Mutex<Vec<ContainerCheckpointContent>>,
    pub nodes: HashMap<String, IpAddr>,
    pub pods: Mutex<Vec<Pod>>,
    /// Each node's peer certificate SHA-256, as its Lease publishes it.
    pub pins: Mutex<HashMap<String, String>>,
    /// Further tokens and what a review of them answers (see [`pod_token`]).
    pub tokens: Mutex<HashMap<String, TokenReviewStatus>>,
    pub reviews: AtomicUsize,
    pub lookups: AtomicUsize,
    pub pod_lookups: AtomicUsize,
    pub pod_lists: AtomicUsize,
    /// The credentials every push registry's Secret holds.
    pub credentials: Mutex<Option<crate::push::Credentials>>,
    /// The Events told, and about which object.
    pub told: Mutex<
        Vec<(
            k8s_openapi::api::core::v1::ObjectReference,
            kube::runtime::events::Event,
        )>,
    >,
}

/// What the API server answers for a token bound to pod `namespace/pod` (UID `uid`) on `node`,
/// issued for `audience`.
pub fn pod_token(
    namespace: &str,
    pod: &str,
    uid: &str,
    node: &str,
    audience: &str,
) -> TokenReviewStatus {
    let claim = |k: &str, v: &str| (format!("authentication.kubernetes.io/{k}"), vec![v.into()]);
    TokenReviewStatus {
        authenticated: Some(true),
        audiences: Some(vec![audience.into()]),
        user: Some(UserInfo {
            username: Some(format!("system:serviceaccount:{namespace}:default")),
            extra: Some(
                [
                    claim("pod-name", pod),
                    claim("pod-uid", uid),
                    claim("node-name", node),
                ]
                .into(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// What the API server answers for the peer token of the noded pod on `node` (as noded's
/// projected token is bound to its pod).
pub fn noded_token(node: &str) -> TokenReviewStatus {
    let mut status = pod_token(
        "kube-system",
        &format!("noded-{node}"),
        &format!("uid-noded-{node}"),
        node,
        PEER_AUDIENCE,
    );
    if let Some(user) = status.user.as_mut() {
        user.username = Some(NODED.into());
    }
    status
}

/// [`pod`], as the restore webhook admits it to restore `image` (`<repo>@<digest>`): marked
/// with the digest it restores.
pub fn restoring_pod(namespace: &str, name: &str, uid: &str, node: &str, image: &str) -> Pod {
    let mut restoring = pod(namespace, name, uid, node, image);
    let digest = Spelling::of(image).digest.unwrap_or_default();
    restoring.metadata.annotations = Some(
        [(
            RESTORED_FROM_DIGEST_ANNOTATION.to_owned(),
            digest.to_owned(),
        )]
        .into(),
    );
    restoring
}

/// A pod `namespace/name` (UID `uid`) on `node` whose one container runs `image`.
pub fn pod(namespace: &str, name: &str, uid: &str, node: &str, image: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            namespace: Some(namespace.into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            node_name: Some(node.into()),
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Cluster for Arc<FakeCluster> {
    async fn content(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<ContainerCheckpointContent>, kube::Error> {
        self.lookups.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .contents
            .lock()
            .unwrap()
            .iter()
            .find(|c| {
                c.metadata.namespace.as_deref() == Some(namespace)
                    && c.metadata.name.as_deref() == Some(name)
            })
            .cloned())
    }
    async fn node_ip(&self, node: &str) -> Result<Option<IpAddr>, kube::Error> {
        Ok(self.nodes.get(node).copied())
    }
    async fn peer_pin(&self, node: &str) -> Result<Option<String>, kube::Error> {
        Ok(self.pins.lock().unwrap().get(node).cloned())
    }
    async fn review_token(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<TokenReviewStatus, kube::Error> {
        self.reviews.fetch_add(1, Ordering::SeqCst);
        let status = match token {
            GOOD_TOKEN => Some(noded_token(PEER_NODE)),
            "other-user" => {
                let mut other = noded_token(PEER_NODE);
                if let Some(user) = other.user.as_mut() {
                    user.username = Some("system:serviceaccount:default:default".into());
                }
                Some(other)
            }
            _ => self.tokens.lock().unwrap().get(token).cloned(),
        };
        // As the API server does: a token issued for another audience is not authenticated.
        Ok(status
            .filter(|s| s.audiences.iter().flatten().any(|a| a == audience))
            .unwrap_or_default())
    }
    async fn pod(&self, namespace: &str, name: &str) -> Result<Option<Pod>, kube::Error> {
        self.pod_lookups.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .pods
            .lock()
            .unwrap()
            .iter()
            .find(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.metadata.name.as_deref() == Some(name)
            })
            .cloned())
    }
    async fn pods_on_node(&self, namespace: &str, node: &str) -> Result<Vec<Pod>, kube::Error> {
        self.pod_lists.fetch_add(1, Ordering::SeqCst);
        Ok(self
            .pods
            .lock()
            .unwrap()
            .iter()
            .filter(|p| {
                p.metadata.namespace.as_deref() == Some(namespace)
                    && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node)
            })
            .cloned()
            .collect())
    }
    async fn all_contents(&self) -> Result<Vec<ContainerCheckpointContent>, kube::Error> {
        Ok(self.contents.lock().unwrap().clone())
    }
    async fn credentials(
        &self,
        _route: &crate::outbound::Route,
    ) -> Result<Option<crate::push::Credentials>, crate::outbound::OutboundError> {
        Ok(self.credentials.lock().unwrap().clone())
    }
    fn tell(
        &self,
        pod: k8s_openapi::api::core::v1::ObjectReference,
        event: kube::runtime::events::Event,
    ) {
        self.told.lock().unwrap().push((pod, event));
    }
}
