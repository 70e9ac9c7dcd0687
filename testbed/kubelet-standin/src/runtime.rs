//! CRI effects: the thin shell between the plan and the runtime's socket. Every call goes through
//! the shared client's `call`, so each has a deadline and a typed [`CriError`].

use std::collections::HashMap;
use std::time::Duration;

use checkpointing::cri::{CriClient, CriError, Runtime as _, api};
use checkpointing::names::kubelet as label;

use crate::pod::{ContainerObs, Observed, RunState, SandboxObs};

/// Short calls (list, status, start, stop sandbox).
const CALL: Duration = Duration::from_secs(30);
/// RunPodSandbox may pull the pause image and set up the network.
const RUN_SANDBOX: Duration = Duration::from_secs(240);
/// CreateContainer and StartContainer restore from a checkpoint when the image is one.
const CREATE_START: Duration = Duration::from_secs(180);
/// Added to a StopContainer's grace period.
const STOP_SLACK: Duration = Duration::from_secs(15);

/// The node's container runtime.
#[derive(Clone, Debug)]
pub struct Cri {
    client: CriClient,
}

impl Cri {
    pub fn new(client: CriClient) -> Self {
        Self { client }
    }

    pub async fn version(&self) -> Result<api::VersionResponse, CriError> {
        self.client.version().await
    }

    /// Every sandbox and container labelled with `io.kubernetes.pod.uid=<uid>`, with the
    /// details the plan and the status need.
    pub async fn observe(&self, uid: &str) -> Result<Observed, CriError> {
        let selector = HashMap::from([(label::POD_UID.to_owned(), uid.to_owned())]);
        let mut rt = self.client.runtime_service();
        let sandboxes = self
            .client
            .call(
                "ListPodSandbox",
                CALL,
                api::ListPodSandboxRequest {
                    filter: Some(api::PodSandboxFilter {
                        label_selector: selector.clone(),
                        ..Default::default()
                    }),
                },
                |r| rt.list_pod_sandbox(r),
            )
            .await?
            .items;
        let mut observed = Observed::default();
        for s in sandboxes {
            let ready = s.state == api::PodSandboxState::SandboxReady as i32;
            let ips = if ready {
                self.sandbox_ips(&s.id).await?
            } else {
                Vec::new()
            };
            observed.sandboxes.push(SandboxObs {
                attempt: s.metadata.as_ref().map_or(0, |m| m.attempt),
                id: s.id,
                ready,
                created_at: s.created_at,
                ips,
            });
        }
        let containers = self
            .client
            .call(
                "ListContainers",
                CALL,
                api::ListContainersRequest {
                    filter: Some(api::ContainerFilter {
                        label_selector: selector,
                        ..Default::default()
                    }),
                },
                |r| rt.list_containers(r),
            )
            .await?
            .containers;
        for c in containers {
            let status = match self.container_status(&c.id).await {
                Ok(status) => status,
                // Removed between the list and the status call.
                Err(CriError::NotFound { .. }) => continue,
                Err(e) => return Err(e),
            };
            observed.containers.push(ContainerObs {
                id: c.id,
                sandbox_id: c.pod_sandbox_id,
                name: c
                    .labels
                    .get(label::CONTAINER_NAME)
                    .cloned()
                    .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
                    .unwrap_or_default(),
                attempt: c.metadata.as_ref().map_or(0, |m| m.attempt),
                state: RunState::from_cri(status.state),
                created_at: status.created_at,
                started_at: status.started_at,
                finished_at: status.finished_at,
                exit_code: status.exit_code,
                reason: status.reason,
                message: status.message,
                image_ref: status.image_ref,
            });
        }
        Ok(observed)
    }

    pub async fn sandbox_ips(&self, id: &str) -> Result<Vec<String>, CriError> {
        let mut rt = self.client.runtime_service();
        let response = self
            .client
            .call(
                "PodSandboxStatus",
                CALL,
                api::PodSandboxStatusRequest {
                    pod_sandbox_id: id.to_owned(),
                    verbose: false,
                },
                |r| rt.pod_sandbox_status(r),
            )
            .await;
        let network = match response {
            Ok(r) => r.status.and_then(|s| s.network),
            Err(CriError::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(network
            .map(|n| {
                std::iter::once(n.ip)
                    .chain(n.additional_ips.into_iter().map(|ip| ip.ip))
                    .filter(|ip| !ip.is_empty())
                    .collect()
            })
            .unwrap_or_default())
    }

    pub async fn container_status(&self, id: &str) -> Result<api::ContainerStatus, CriError> {
        let mut rt = self.client.runtime_service();
        let response = self
            .client
            .call(
                "ContainerStatus",
                CALL,
                api::ContainerStatusRequest {
                    container_id: id.to_owned(),
                    verbose: false,
                },
                |r| rt.container_status(r),
            )
            .await?;
        response.status.ok_or_else(|| CriError::NotFound {
            op: "ContainerStatus",
            message: format!("no status for container {id}"),
        })
    }

    /// Whether the runtime holds `image`.
    pub async fn image_present(&self, image: &str) -> Result<bool, CriError> {
        Ok(self.client.image_status(image).await?.is_some())
    }

    /// Pulls `image` (with the sandbox config, as the kubelet does); returns the image ref.
    pub async fn pull_image(
        &self,
        image: &str,
        sandbox: &api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut is = self.client.image_service();
        let message = api::PullImageRequest {
            image: Some(api::ImageSpec {
                image: image.to_owned(),
                user_specified_image: image.to_owned(),
                ..Default::default()
            }),
            auth: None,
            sandbox_config: Some(sandbox.clone()),
        };
        Ok(self
            .client
            .call("PullImage", RUN_SANDBOX, message, |r| is.pull_image(r))
            .await?
            .image_ref)
    }

    pub async fn run_sandbox(&self, config: api::PodSandboxConfig) -> Result<String, CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        };
        Ok(self
            .client
            .call("RunPodSandbox", RUN_SANDBOX, message, |r| {
                rt.run_pod_sandbox(r)
            })
            .await?
            .pod_sandbox_id)
    }

    pub async fn create_container(
        &self,
        sandbox_id: &str,
        config: api::ContainerConfig,
        sandbox_config: api::PodSandboxConfig,
    ) -> Result<String, CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::CreateContainerRequest {
            pod_sandbox_id: sandbox_id.to_owned(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        Ok(self
            .client
            .call("CreateContainer", CREATE_START, message, |r| {
                rt.create_container(r)
            })
            .await?
            .container_id)
    }

    pub async fn start_container(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::StartContainerRequest {
            container_id: id.to_owned(),
        };
        self.client
            .call("StartContainer", CREATE_START, message, |r| {
                rt.start_container(r)
            })
            .await
            .map(drop)
    }

    /// SIGTERM, then SIGKILL after `grace_seconds`. A container already gone is stopped.
    pub async fn stop_container(&self, id: &str, grace_seconds: i64) -> Result<(), CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::StopContainerRequest {
            container_id: id.to_owned(),
            timeout: grace_seconds,
        };
        let deadline = Duration::from_secs(u64::try_from(grace_seconds).unwrap_or(0)) + STOP_SLACK;
        match self
            .client
            .call("StopContainer", deadline, message, |r| rt.stop_container(r))
            .await
        {
            Ok(_) | Err(CriError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn stop_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::StopPodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        match self
            .client
            .call("StopPodSandbox", CREATE_START, message, |r| {
                rt.stop_pod_sandbox(r)
            })
            .await
        {
            Ok(_) | Err(CriError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes the sandbox and every container in it.
    pub async fn remove_sandbox(&self, id: &str) -> Result<(), CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_owned(),
        };
        match self
            .client
            .call("RemovePodSandbox", CREATE_START, message, |r| {
                rt.remove_pod_sandbox(r)
            })
            .await
        {
            Ok(_) | Err(CriError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Every sandbox carrying the kubelet's pod UID label.
    pub async fn labelled_sandboxes(&self) -> Result<Vec<LabelledSandbox>, CriError> {
        let mut rt = self.client.runtime_service();
        let items = self
            .client
            .call(
                "ListPodSandbox",
                CALL,
                api::ListPodSandboxRequest { filter: None },
                |r| rt.list_pod_sandbox(r),
            )
            .await?
            .items;
        Ok(items
            .into_iter()
            .filter_map(|s| {
                let get = |k: &str| s.labels.get(k).cloned();
                Some(LabelledSandbox {
                    uid: get(label::POD_UID)?,
                    namespace: get(label::POD_NAMESPACE).unwrap_or_default(),
                    name: get(label::POD_NAME).unwrap_or_default(),
                    id: s.id,
                })
            })
            .collect())
    }

    /// Whether a container of that pod UID and name is running (ends `kubectl logs -f`).
    pub async fn container_running(&self, uid: &str, container: &str) -> Result<bool, CriError> {
        let mut rt = self.client.runtime_service();
        let message = api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                label_selector: HashMap::from([
                    (label::POD_UID.to_owned(), uid.to_owned()),
                    (label::CONTAINER_NAME.to_owned(), container.to_owned()),
                ]),
                state: Some(api::ContainerStateValue {
                    state: api::ContainerState::ContainerRunning as i32,
                }),
                ..Default::default()
            }),
        };
        let containers = self
            .client
            .call("ListContainers", CALL, message, |r| rt.list_containers(r))
            .await?
            .containers;
        Ok(!containers.is_empty())
    }
}

/// A sandbox found by its kubelet labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelledSandbox {
    pub id: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}
