//! CRI v1 client over a unix socket: generated stubs, endpoint parsing, timeouts, typed errors
//! and the [`Runtime`] trait noded's logic is written against (its runtime's profile is
//! [`crate::runtime`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

pub mod http;

/// Stubs generated from `proto/runtime/v1/api.proto`.
pub mod api {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("runtime.v1");
}

use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;

/// What went wrong talking to the runtime. gRPC failures keep their [`tonic::Code`] so callers
/// can tell a transient failure (retry) from a permanent one (report).
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("invalid CRI endpoint {endpoint:?}: expected unix:///path/to/socket")]
    InvalidEndpoint { endpoint: String },
    #[error("CRI socket {} does not exist: is the container runtime running?", path.display())]
    SocketMissing { path: PathBuf },
    #[error("connecting to CRI socket {}", path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("CRI {op}: not found: {message}")]
    NotFound { op: &'static str, message: String },
    #[error("CRI {op}: runtime unavailable: {message}")]
    Unavailable { op: &'static str, message: String },
    #[error("CRI {op}: deadline exceeded: {message}")]
    DeadlineExceeded { op: &'static str, message: String },
    #[error("CRI {op}: not implemented by this runtime: {message}")]
    Unimplemented { op: &'static str, message: String },
    #[error("CRI {op} failed ({code:?}): {message}")]
    Rpc {
        op: &'static str,
        code: tonic::Code,
        message: String,
    },
}

impl CriError {
    fn from_status(op: &'static str, status: tonic::Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            tonic::Code::NotFound => Self::NotFound { op, message },
            tonic::Code::Unavailable => Self::Unavailable { op, message },
            tonic::Code::DeadlineExceeded => Self::DeadlineExceeded { op, message },
            tonic::Code::Unimplemented => Self::Unimplemented { op, message },
            code => Self::Rpc { op, code, message },
        }
    }

    /// The gRPC code this error stands for (connection problems count as `Unavailable`).
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::InvalidEndpoint { .. } => tonic::Code::InvalidArgument,
            Self::SocketMissing { .. } | Self::Connect { .. } | Self::Unavailable { .. } => {
                tonic::Code::Unavailable
            }
            Self::NotFound { .. } => tonic::Code::NotFound,
            Self::DeadlineExceeded { .. } => tonic::Code::DeadlineExceeded,
            Self::Unimplemented { .. } => tonic::Code::Unimplemented,
            Self::Rpc { code, .. } => *code,
        }
    }

    /// The CRI method that failed and the runtime's own words, for an error it answered with.
    pub fn answer(&self) -> Option<(&'static str, &str)> {
        match self {
            Self::NotFound { op, message }
            | Self::Unavailable { op, message }
            | Self::DeadlineExceeded { op, message }
            | Self::Unimplemented { op, message }
            | Self::Rpc { op, message, .. } => Some((op, message)),
            Self::InvalidEndpoint { .. } | Self::SocketMissing { .. } | Self::Connect { .. } => {
                None
            }
        }
    }

    /// Worth retrying later: the runtime may be restarting or busy.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.code(),
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::ResourceExhausted
                | tonic::Code::Aborted
        )
    }

    /// The runtime failed only to freeze the container before dumping it (runc's "unable to
    /// freeze", under load): nothing was dumped and the container runs on, so another try is
    /// safe. The CRI reports it as `Unknown`, so only its words tell.
    pub fn freeze_failed(&self) -> bool {
        matches!(self, Self::Rpc { message, .. } if message.contains("unable to freeze"))
    }
}

/// Where and how patiently to reach the runtime.
#[derive(Clone, Debug)]
pub struct CriConfig {
    /// `unix:///path/to.sock`.
    pub endpoint: String,
    pub connect_timeout: Duration,
    /// Upper bound of every call except `CheckpointContainer`, which gets its own timeout.
    pub call_timeout: Duration,
}

impl CriConfig {
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            connect_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
        }
    }
}

/// Socket path of a `unix://` endpoint.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, CriError> {
    match endpoint.strip_prefix("unix://") {
        Some(path) if path.starts_with('/') => Ok(PathBuf::from(path)),
        _ => Err(CriError::InvalidEndpoint {
            endpoint: endpoint.to_owned(),
        }),
    }
}

/// The URI is a placeholder tonic requires; the connector ignores it and dials the socket.
fn endpoint(config: &CriConfig) -> Endpoint {
    Endpoint::from_static("http://cri.invalid").connect_timeout(config.connect_timeout)
}

fn unix_connector(
    socket: PathBuf,
) -> impl tower::Service<
    tonic::transport::Uri,
    Response = TokioIo<UnixStream>,
    Error = std::io::Error,
    Future = impl Future<Output = std::io::Result<TokioIo<UnixStream>>> + Send,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |_| {
        let socket = socket.clone();
        async move { UnixStream::connect(socket).await.map(TokioIo::new) }
    })
}

/// A connected CRI client. Cheap to clone; the channel reconnects by itself after the runtime
/// restarts.
#[derive(Clone, Debug)]
pub struct CriClient {
    runtime: RuntimeServiceClient<Channel>,
    image: ImageServiceClient<Channel>,
    call_timeout: Duration,
    socket: PathBuf,
}

impl CriClient {
    /// Connects to the runtime's socket, failing fast with the socket path when it is absent.
    pub async fn connect(config: &CriConfig) -> Result<Self, CriError> {
        let socket = socket_path(&config.endpoint)?;
        if !socket.exists() {
            return Err(CriError::SocketMissing { path: socket });
        }
        let channel = endpoint(config)
            .connect_with_connector(unix_connector(socket.clone()))
            .await
            .map_err(|source| CriError::Connect {
                path: socket.clone(),
                source,
            })?;
        Ok(Self::new(channel, socket, config))
    }

    /// A client that dials on first use and again after every lost connection: a daemon
    /// starts, and keeps working, while the runtime is down or restarting.
    pub fn lazy(config: &CriConfig) -> Result<Self, CriError> {
        let socket = socket_path(&config.endpoint)?;
        let channel = endpoint(config).connect_with_connector_lazy(unix_connector(socket.clone()));
        Ok(Self::new(channel, socket, config))
    }

    fn new(channel: Channel, socket: PathBuf, config: &CriConfig) -> Self {
        Self {
            // CRI messages (ListContainers on a busy node) exceed tonic's 4 MiB default.
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(16 << 20),
            image: ImageServiceClient::new(channel).max_decoding_message_size(16 << 20),
            call_timeout: config.call_timeout,
            socket,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The generated RuntimeService stub, for calls outside the [`Runtime`] trait.
    pub fn runtime_service(&self) -> RuntimeServiceClient<Channel> {
        self.runtime.clone()
    }

    /// The generated ImageService stub.
    pub fn image_service(&self) -> ImageServiceClient<Channel> {
        self.image.clone()
    }

    /// Runs one call with a deadline, sent to the runtime as `grpc-timeout` and enforced here.
    pub async fn call<T, R, F, Fut>(
        &self,
        op: &'static str,
        timeout: Duration,
        message: T,
        f: F,
    ) -> Result<R, CriError>
    where
        F: FnOnce(tonic::Request<T>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<R>, tonic::Status>>,
    {
        // tonic panics encoding a `grpc-timeout` above 99,999,999 hours: no caller's value may
        // get there.
        let timeout = timeout.min(MAX_CALL_TIMEOUT);
        let mut request = tonic::Request::new(message);
        request.set_timeout(timeout);
        let started = tokio::time::Instant::now();
        match tokio::time::timeout(timeout, f(request)).await {
            // The server may enforce `grpc-timeout` first and answer Cancelled: still our deadline.
            Ok(Err(status)) if started.elapsed() >= timeout => Err(CriError::DeadlineExceeded {
                op,
                message: status.message().to_owned(),
            }),
            Ok(Ok(response)) => Ok(response.into_inner()),
            // A vanished socket surfaces as a bare transport error; name the path instead.
            Ok(Err(status))
                if status.code() == tonic::Code::Unavailable && !self.socket.exists() =>
            {
                Err(CriError::SocketMissing {
                    path: self.socket.clone(),
                })
            }
            Ok(Err(status)) => Err(CriError::from_status(op, status)),
            Err(_) => Err(CriError::DeadlineExceeded {
                op,
                message: format!("no answer within {timeout:?}"),
            }),
        }
    }
}

/// The CRI calls noded makes. Its logic depends on this trait, not on a socket, so it is
/// unit-tested with a recording fake.
pub trait Runtime: Send + Sync {
    fn version(&self) -> impl Future<Output = Result<api::VersionResponse, CriError>> + Send;

    /// Containers whose labels include all of `labels`.
    fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> impl Future<Output = Result<Vec<api::Container>, CriError>> + Send;

    /// Asks the runtime to write a checkpoint archive of `container_id` at `location` (a path
    /// in the runtime's mount namespace), allowing it `timeout`.
    fn checkpoint_container(
        &self,
        container_id: &str,
        location: &Path,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), CriError>> + Send;

    /// The cgroup of `container_id` as its OCI runtime spec names it (`linux.cgroupsPath`, from
    /// the verbose ContainerStatus both runtimes give), `None` when the runtime tells none.
    fn container_cgroup(
        &self,
        container_id: &str,
    ) -> impl Future<Output = Result<Option<String>, CriError>> + Send;

    /// Resource usage of `container_id` (memory, writable layer), `None` when the runtime
    /// reports none.
    fn container_stats(
        &self,
        container_id: &str,
    ) -> impl Future<Output = Result<Option<api::ContainerStats>, CriError>> + Send;

    /// Image id when the runtime holds `image`, `None` otherwise.
    fn image_status(
        &self,
        image: &str,
    ) -> impl Future<Output = Result<Option<api::Image>, CriError>> + Send;

    /// Pulls `image`; returns the runtime's image reference.
    fn pull_image(&self, image: &str) -> impl Future<Output = Result<String, CriError>> + Send;

    /// Every image the runtime holds.
    fn list_images(&self) -> impl Future<Output = Result<Vec<api::Image>, CriError>> + Send;

    /// Removes `image` (an image id or reference) with all its references.
    fn remove_image(&self, image: &str) -> impl Future<Output = Result<(), CriError>> + Send;

    /// The conditions of CRI `Status` (`RuntimeReady`, `NetworkReady`), within `timeout`.
    fn conditions(
        &self,
        timeout: Duration,
    ) -> impl Future<Output = Result<Vec<api::RuntimeCondition>, CriError>> + Send;

    /// CRI `CheckpointPod` (Kubernetes 1.37), within `timeout`.
    fn checkpoint_pod(
        &self,
        request: api::CheckpointPodRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<(), CriError>> + Send;

    /// CRI `RestorePod` (Kubernetes 1.37), within `timeout`: the new sandbox's id.
    fn restore_pod(
        &self,
        request: api::RestorePodRequest,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, CriError>> + Send;

    /// `GET path` of the runtime's own HTTP API on its socket (CRI-O's `/config` and `/info`),
    /// within `timeout`: the body, or why not in words.
    fn http_get(
        &self,
        path: &str,
        timeout: Duration,
    ) -> impl Future<Output = Result<String, String>> + Send;
}

/// `runtimeSpec.linux.cgroupsPath` of a verbose ContainerStatus's `info` JSON: the same key in
/// CRI-O's and containerd's.
fn cgroups_path(info: &str) -> Option<String> {
    let info: serde_json::Value = serde_json::from_str(info).ok()?;
    let path = info.pointer("/runtimeSpec/linux/cgroupsPath")?.as_str()?;
    (!path.is_empty()).then(|| path.to_owned())
}

/// Longest deadline of any call (a day): far beyond any real one, far below what overflows.
pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Extra time granted beyond the runtime's own checkpoint timeout, so the runtime reports a
/// timeout itself rather than us cutting the call.
const CHECKPOINT_GRACE: Duration = Duration::from_secs(10);

impl Runtime for CriClient {
    async fn version(&self) -> Result<api::VersionResponse, CriError> {
        let mut rt = self.runtime_service();
        let message = api::VersionRequest {
            version: "v1".into(),
        };
        self.call("Version", self.call_timeout, message, |r| rt.version(r))
            .await
    }

    async fn list_containers(
        &self,
        labels: &[(&str, &str)],
    ) -> Result<Vec<api::Container>, CriError> {
        let mut rt = self.runtime_service();
        let message = api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                label_selector: labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                ..Default::default()
            }),
        };
        let response = self
            .call("ListContainers", self.call_timeout, message, |r| {
                rt.list_containers(r)
            })
            .await?;
        Ok(response.containers)
    }

    async fn checkpoint_container(
        &self,
        container_id: &str,
        location: &Path,
        timeout: Duration,
    ) -> Result<(), CriError> {
        let mut rt = self.runtime_service();
        let message = api::CheckpointContainerRequest {
            container_id: container_id.to_owned(),
            location: location.to_string_lossy().into_owned(),
            timeout: i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        };
        self.call(
            "CheckpointContainer",
            timeout.saturating_add(CHECKPOINT_GRACE),
            message,
            |r| rt.checkpoint_container(r),
        )
        .await
        .map(drop)
    }

    async fn container_cgroup(&self, container_id: &str) -> Result<Option<String>, CriError> {
        let mut rt = self.runtime_service();
        let message = api::ContainerStatusRequest {
            container_id: container_id.to_owned(),
            verbose: true,
        };
        let response = self
            .call("ContainerStatus", self.call_timeout, message, |r| {
                rt.container_status(r)
            })
            .await?;
        Ok(response.info.get("info").and_then(|i| cgroups_path(i)))
    }

    async fn container_stats(
        &self,
        container_id: &str,
    ) -> Result<Option<api::ContainerStats>, CriError> {
        let mut rt = self.runtime_service();
        let message = api::ContainerStatsRequest {
            container_id: container_id.to_owned(),
        };
        let response = self
            .call("ContainerStats", self.call_timeout, message, |r| {
                rt.container_stats(r)
            })
            .await?;
        Ok(response.stats)
    }

    async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        let mut is = self.image_service();
        let message = api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            verbose: false,
        };
        let response = self
            .call("ImageStatus", self.call_timeout, message, |r| {
                is.image_status(r)
            })
            .await?;
        Ok(response.image)
    }

    async fn pull_image(&self, image: &str) -> Result<String, CriError> {
        let mut is = self.image_service();
        let message = api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
            ..Default::default()
        };
        // Pulls are bounded by the network, not the runtime: allow them several call timeouts.
        let response = self
            .call(
                "PullImage",
                self.call_timeout.saturating_mul(4),
                message,
                |r| is.pull_image(r),
            )
            .await?;
        Ok(response.image_ref)
    }

    async fn list_images(&self) -> Result<Vec<api::Image>, CriError> {
        let mut is = self.image_service();
        let response = self
            .call(
                "ListImages",
                self.call_timeout,
                api::ListImagesRequest::default(),
                |r| is.list_images(r),
            )
            .await?;
        Ok(response.images)
    }

    async fn remove_image(&self, image: &str) -> Result<(), CriError> {
        let mut is = self.image_service();
        let message = api::RemoveImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                ..Default::default()
            }),
        };
        self.call("RemoveImage", self.call_timeout, message, |r| {
            is.remove_image(r)
        })
        .await
        .map(drop)
    }

    async fn conditions(&self, timeout: Duration) -> Result<Vec<api::RuntimeCondition>, CriError> {
        let mut rt = self.runtime_service();
        let message = api::StatusRequest { verbose: false };
        let response = self
            .call("Status", timeout, message, |r| rt.status(r))
            .await?;
        Ok(response.status.map(|s| s.conditions).unwrap_or_default())
    }

    async fn checkpoint_pod(
        &self,
        request: api::CheckpointPodRequest,
        timeout: Duration,
    ) -> Result<(), CriError> {
        let mut rt = self.runtime_service();
        self.call("CheckpointPod", timeout, request, |r| rt.checkpoint_pod(r))
            .await
            .map(drop)
    }

    async fn restore_pod(
        &self,
        request: api::RestorePodRequest,
        timeout: Duration,
    ) -> Result<String, CriError> {
        let mut rt = self.runtime_service();
        let response = self
            .call("RestorePod", timeout, request, |r| rt.restore_pod(r))
            .await?;
        Ok(response.pod_sandbox_id)
    }

    async fn http_get(&self, path: &str, timeout: Duration) -> Result<String, String> {
        http::get(&self.socket, path, timeout).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_is_read_from_the_verbose_info_of_either_runtime() {
        let crio = r#"{"pid":42,"runtimeSpec":{"linux":{"cgroupsPath":"/kubepods/besteffort/podu/crio-abc"}}}"#;
        let containerd = r#"{"sandboxID":"s","runtimeSpec":{"ociVersion":"1.2.0","linux":{"cgroupsPath":"kubepods-besteffort-podu.slice:cri-containerd:abc"}}}"#;
        assert_eq!(
            cgroups_path(crio).as_deref(),
            Some("/kubepods/besteffort/podu/crio-abc")
        );
        assert_eq!(
            cgroups_path(containerd).as_deref(),
            Some("kubepods-besteffort-podu.slice:cri-containerd:abc")
        );
        for none in [
            r#"{"pid":1}"#,
            "not json",
            r#"{"runtimeSpec":{"linux":{"cgroupsPath":""}}}"#,
        ] {
            assert_eq!(cgroups_path(none), None, "{none}");
        }
    }

    /// A deadline from an unbounded request field once panicked inside tonic: any `Duration`
    /// must be sent capped instead.
    #[tokio::test]
    async fn any_timeout_is_sent_capped() {
        let client = CriClient::lazy(&CriConfig::new("unix:///nonexistent/cri.sock")).unwrap();
        for timeout in [
            Duration::from_secs(400_000_000_000),
            Duration::MAX,
            Duration::from_secs(5),
        ] {
            let sent = client
                .call("Test", timeout, (), |r: tonic::Request<()>| async move {
                    let header = r.metadata().get("grpc-timeout").cloned();
                    Ok(tonic::Response::new(header))
                })
                .await
                .unwrap()
                .unwrap();
            // tonic's encoding: the finest unit that fits in 8 digits.
            let expected = if timeout > MAX_CALL_TIMEOUT {
                "86400000m"
            } else {
                "5000000u"
            };
            assert_eq!(sent.to_str().unwrap(), expected, "{timeout:?}");
        }
    }
}
