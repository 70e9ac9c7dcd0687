//! The CRI client against an in-process tonic server on a temporary unix socket.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpointing::cri::api::{self, runtime_service_server as server};
use checkpointing::cri::{CriClient, CriConfig, CriError, Runtime};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

/// A runtime that records what it was asked and answers like CRI-O/containerd would.
#[derive(Clone, Default)]
struct FakeRuntime {
    containers: Vec<api::Container>,
    checkpoints: Arc<Mutex<Vec<api::CheckpointContainerRequest>>>,
    filters: Arc<Mutex<Vec<HashMap<String, String>>>>,
}

fn container(id: &str, labels: &[(&str, &str)]) -> api::Container {
    api::Container {
        id: id.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect(),
        state: api::ContainerState::ContainerRunning.into(),
        ..Default::default()
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn unimplemented<T>() -> Reply<T> {
    Err(Status::unimplemented("not part of this fake"))
}

#[tonic::async_trait]
impl server::RuntimeService for FakeRuntime {
    async fn version(&self, _: Request<api::VersionRequest>) -> Reply<api::VersionResponse> {
        Ok(Response::new(api::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "1.2.3".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn list_containers(
        &self,
        r: Request<api::ListContainersRequest>,
    ) -> Reply<api::ListContainersResponse> {
        let selector = r.into_inner().filter.unwrap_or_default().label_selector;
        self.filters.lock().unwrap().push(selector.clone());
        let containers = self
            .containers
            .iter()
            .filter(|c| selector.iter().all(|(k, v)| c.labels.get(k) == Some(v)))
            .cloned()
            .collect();
        Ok(Response::new(api::ListContainersResponse { containers }))
    }

    async fn checkpoint_container(
        &self,
        r: Request<api::CheckpointContainerRequest>,
    ) -> Reply<api::CheckpointContainerResponse> {
        let req = r.into_inner();
        match req.container_id.as_str() {
            "gone" => return Err(Status::not_found("container \"gone\" not found")),
            "restarting" => return Err(Status::unavailable("runtime is restarting")),
            "slow" => tokio::time::sleep(Duration::from_secs(30)).await,
            "deadline" => return Err(Status::deadline_exceeded("criu took too long")),
            "nocriu" => {
                return Err(Status::unimplemented(
                    "checkpoint/restore support not available",
                ));
            }
            "denied" => return Err(Status::permission_denied("no")),
            _ => {}
        }
        self.checkpoints.lock().unwrap().push(req);
        Ok(Response::new(api::CheckpointContainerResponse {}))
    }

    async fn run_pod_sandbox(
        &self,
        _: Request<api::RunPodSandboxRequest>,
    ) -> Reply<api::RunPodSandboxResponse> {
        unimplemented()
    }
    async fn stop_pod_sandbox(
        &self,
        _: Request<api::StopPodSandboxRequest>,
    ) -> Reply<api::StopPodSandboxResponse> {
        unimplemented()
    }
    async fn remove_pod_sandbox(
        &self,
        _: Request<api::RemovePodSandboxRequest>,
    ) -> Reply<api::RemovePodSandboxResponse> {
        unimplemented()
    }
    async fn pod_sandbox_status(
        &self,
        _: Request<api::PodSandboxStatusRequest>,
    ) -> Reply<api::PodSandboxStatusResponse> {
        unimplemented()
    }
    async fn list_pod_sandbox(
        &self,
        _: Request<api::ListPodSandboxRequest>,
    ) -> Reply<api::ListPodSandboxResponse> {
        unimplemented()
    }
    async fn create_container(
        &self,
        _: Request<api::CreateContainerRequest>,
    ) -> Reply<api::CreateContainerResponse> {
        unimplemented()
    }
    async fn start_container(
        &self,
        _: Request<api::StartContainerRequest>,
    ) -> Reply<api::StartContainerResponse> {
        unimplemented()
    }
    async fn stop_container(
        &self,
        _: Request<api::StopContainerRequest>,
    ) -> Reply<api::StopContainerResponse> {
        unimplemented()
    }
    async fn remove_container(
        &self,
        _: Request<api::RemoveContainerRequest>,
    ) -> Reply<api::RemoveContainerResponse> {
        unimplemented()
    }
    async fn container_status(
        &self,
        _: Request<api::ContainerStatusRequest>,
    ) -> Reply<api::ContainerStatusResponse> {
        unimplemented()
    }
    async fn checkpoint_pod(
        &self,
        _: Request<api::CheckpointPodRequest>,
    ) -> Reply<api::CheckpointPodResponse> {
        unimplemented()
    }

    async fn restore_pod(
        &self,
        _: Request<api::RestorePodRequest>,
    ) -> Reply<api::RestorePodResponse> {
        unimplemented()
    }

    async fn status(&self, _: Request<api::StatusRequest>) -> Reply<api::StatusResponse> {
        unimplemented()
    }
    async fn container_stats(
        &self,
        r: Request<api::ContainerStatsRequest>,
    ) -> Reply<api::ContainerStatsResponse> {
        let value = |value| Some(api::UInt64Value { value });
        let stats = (r.into_inner().container_id == "abc123").then(|| api::ContainerStats {
            memory: Some(api::MemoryUsage {
                working_set_bytes: value(300 << 20),
            }),
            writable_layer: Some(api::FilesystemUsage {
                used_bytes: value(4096),
            }),
        });
        Ok(Response::new(api::ContainerStatsResponse { stats }))
    }
}

/// Serves `fake` on a fresh socket; the server dies with the runtime of the test.
async fn serve(fake: FakeRuntime) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server::RuntimeServiceServer::new(fake))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    (dir, socket)
}

fn config(socket: &Path) -> CriConfig {
    let mut config = CriConfig::new(format!("unix://{}", socket.display()));
    config.call_timeout = Duration::from_millis(500);
    config
}

async fn client(fake: FakeRuntime) -> (tempfile::TempDir, CriClient) {
    let (dir, socket) = serve(fake).await;
    let client = CriClient::connect(&config(&socket)).await.unwrap();
    (dir, client)
}

#[tokio::test]
async fn version_reports_the_runtime() {
    let (_dir, cri) = client(FakeRuntime::default()).await;
    let v = cri.version().await.unwrap();
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_version.as_str()),
        ("fake", "1.2.3")
    );
}

#[tokio::test]
async fn list_containers_sends_the_label_filter() {
    let fake = FakeRuntime {
        containers: vec![
            container(
                "a",
                &[
                    ("io.kubernetes.pod.name", "web"),
                    ("io.kubernetes.container.name", "app"),
                ],
            ),
            container(
                "b",
                &[
                    ("io.kubernetes.pod.name", "web"),
                    ("io.kubernetes.container.name", "sidecar"),
                ],
            ),
            container(
                "c",
                &[
                    ("io.kubernetes.pod.name", "db"),
                    ("io.kubernetes.container.name", "app"),
                ],
            ),
        ],
        ..Default::default()
    };
    let filters = fake.filters.clone();
    let (_dir, cri) = client(fake).await;
    let found = cri
        .list_containers(&[
            ("io.kubernetes.pod.name", "web"),
            ("io.kubernetes.container.name", "app"),
        ])
        .await
        .unwrap();
    assert_eq!(
        found.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        ["a"]
    );
    let sent = filters.lock().unwrap().pop().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent["io.kubernetes.container.name"], "app");
}

#[tokio::test]
async fn checkpoint_passes_location_and_timeout() {
    let fake = FakeRuntime::default();
    let seen = fake.checkpoints.clone();
    let (_dir, cri) = client(fake).await;
    cri.checkpoint_container(
        "abc123",
        Path::new("/var/lib/kubelet/checkpoints/x.tar.tmp"),
        Duration::from_secs(42),
    )
    .await
    .unwrap();
    let req = seen.lock().unwrap().pop().unwrap();
    assert_eq!(req.container_id, "abc123");
    assert_eq!(req.location, "/var/lib/kubelet/checkpoints/x.tar.tmp");
    assert_eq!(req.timeout, 42);
}

#[tokio::test]
async fn container_stats_report_memory_and_writable_layer() {
    let (_dir, cri) = client(FakeRuntime::default()).await;
    let stats = cri.container_stats("abc123").await.unwrap().unwrap();
    let working_set = stats.memory.and_then(|m| m.working_set_bytes);
    assert_eq!(working_set.map(|v| v.value), Some(300 << 20));
    let layer = stats.writable_layer.and_then(|l| l.used_bytes);
    assert_eq!(layer.map(|v| v.value), Some(4096));
    assert_eq!(cri.container_stats("other").await.unwrap(), None);
}

#[tokio::test]
async fn runtime_errors_become_typed_errors() {
    let (_dir, cri) = client(FakeRuntime::default()).await;
    let checkpoint = |id: &'static str| {
        let cri = cri.clone();
        async move {
            cri.checkpoint_container(id, Path::new("/tmp/x"), Duration::from_secs(1))
                .await
                .unwrap_err()
        }
    };

    let e = checkpoint("gone").await;
    assert!(
        matches!(
            e,
            CriError::NotFound {
                op: "CheckpointContainer",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.is_transient());
    assert!(
        e.to_string().contains("container \"gone\" not found"),
        "{e}"
    );

    let e = checkpoint("restarting").await;
    assert!(matches!(e, CriError::Unavailable { .. }), "{e:?}");
    assert!(e.is_transient());

    let e = checkpoint("deadline").await;
    assert!(matches!(e, CriError::DeadlineExceeded { .. }), "{e:?}");

    let e = checkpoint("nocriu").await;
    assert!(matches!(e, CriError::Unimplemented { .. }), "{e:?}");
    assert_eq!(e.code(), tonic::Code::Unimplemented);

    let e = checkpoint("denied").await;
    assert!(
        matches!(
            e,
            CriError::Rpc {
                code: tonic::Code::PermissionDenied,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_call_without_answer_times_out() {
    let (_dir, socket) = serve(FakeRuntime::default()).await;
    let cri = CriClient::connect(&config(&socket)).await.unwrap();
    // The checkpoint call gets the runtime's timeout plus a grace period, so use a call the
    // fake never answers in time through the generic deadline wrapper instead.
    let mut rt = cri.runtime_service();
    let e = cri
        .call(
            "CheckpointContainer",
            Duration::from_millis(200),
            api::CheckpointContainerRequest {
                container_id: "slow".into(),
                ..Default::default()
            },
            |r| rt.checkpoint_container(r),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CriError::DeadlineExceeded { .. }), "{e:?}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn a_service_the_runtime_lacks_is_unimplemented() {
    // The fake serves no ImageService at all, like a runtime without that API.
    let (_dir, cri) = client(FakeRuntime::default()).await;
    let e = cri.image_status("busybox").await.unwrap_err();
    assert!(
        matches!(
            e,
            CriError::Unimplemented {
                op: "ImageStatus",
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_missing_socket_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing-here.sock");
    let e = CriClient::connect(&config(&socket)).await.unwrap_err();
    assert!(matches!(e, CriError::SocketMissing { .. }), "{e:?}");
    assert!(e.to_string().contains(&socket.display().to_string()), "{e}");
    assert!(e.is_transient());
}

#[tokio::test]
async fn a_socket_nobody_listens_on_fails_to_connect() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let e = CriClient::connect(&config(&socket)).await.unwrap_err();
    assert!(matches!(e, CriError::Connect { .. }), "{e:?}");
    assert!(e.to_string().contains("stale.sock"), "{e}");
}

#[test]
fn endpoints_must_be_unix_sockets() {
    use checkpointing::cri::socket_path;
    use checkpointing::runtime::RuntimeKind;
    assert_eq!(
        socket_path(RuntimeKind::CriO.default_endpoint()).unwrap(),
        Path::new("/var/run/crio/crio.sock")
    );
    assert_eq!(
        socket_path(RuntimeKind::Containerd.default_endpoint()).unwrap(),
        Path::new("/run/containerd/containerd.sock")
    );
    for bad in ["tcp://1.2.3.4:10", "/run/x.sock", "unix://relative.sock"] {
        assert!(
            matches!(socket_path(bad), Err(CriError::InvalidEndpoint { .. })),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_lazy_client_reports_the_missing_socket_and_recovers_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("cri.sock");
    let cri = CriClient::lazy(&config(&socket)).unwrap();
    let e = cri.version().await.unwrap_err();
    assert!(matches!(e, CriError::SocketMissing { .. }), "{e:?}");
    assert!(e.to_string().contains("cri.sock"), "{e}");

    // The runtime comes (back) up on the same path: the same client works again.
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server::RuntimeServiceServer::new(FakeRuntime::default()))
            .serve_with_incoming(UnixListenerStream::new(listener)),
    );
    assert_eq!(cri.version().await.unwrap().runtime_name, "fake");
}
