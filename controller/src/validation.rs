//! Pure checks a request must pass before its Content is created. A refusal is all the user
//! sees, so each one names the cause and what to do about it.

use std::fmt::Write;

use checkpointing::crd::{ContainerCheckpoint, MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS};
use checkpointing::names::{is_dns_label, is_dns_subdomain};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Why a request is refused. `Display` is the status message; [`Refusal::reason`] the
/// condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "spec.namespace {} differs from the request's namespace {own:?}; a \
         ContainerCheckpoint can only checkpoint pods in its own namespace",
        shown(.spec)
    )]
    NamespaceMismatch { spec: String, own: String },
    /// Only reachable with a CRD older than the controller: the current schema has the bounds.
    #[error(
        "spec.timeoutSeconds {0} is out of range: it must be between {MIN_TIMEOUT_SECONDS} and \
         {MAX_TIMEOUT_SECONDS} seconds; set spec.timeoutSeconds within that range or leave it \
         unset for the node's default"
    )]
    TimeoutOutOfRange(i64),
    #[error(
        "pod {} not found: spec.podName is not a valid pod name (lowercase letters, digits, '-' \
         and '.', at most 253 characters); fix spec.podName",
        shown(.0)
    )]
    InvalidPodName(String),
    #[error(
        "spec.container {} is not a valid container name (lowercase letters, digits and '-', \
         at most 63 characters); fix spec.container",
        shown(.0)
    )]
    InvalidContainerName(String),
    #[error(
        "pod {pod:?} not found in namespace {namespace:?}; create the pod first or fix \
         spec.podName"
    )]
    PodNotFound { namespace: String, pod: String },
    #[error("pod {pod:?} is being deleted; checkpoint a pod that is not terminating")]
    PodTerminating { pod: String },
    #[error(
        "pod {pod:?} is not scheduled to a node yet; create the request again once the pod runs"
    )]
    PodNotScheduled { pod: String },
    #[error(
        "pod {pod:?} has no container {container:?}; its containers are {}; fix spec.container",
        quoted_list(.containers)
    )]
    ContainerNotFound {
        pod: String,
        container: String,
        containers: Vec<String>,
    },
    #[error(
        "container {container:?} of pod {pod:?} is not running ({state}); create the request \
         again once it runs"
    )]
    ContainerNotRunning {
        pod: String,
        container: String,
        state: String,
        /// Whether the container is on its way to run (no status yet, or waiting to start).
        starting: bool,
    },
    #[error(
        "no live node daemon on node {node:?}: {problem}; check that noded (the node daemon's \
         DaemonSet) runs a ready pod on that node, then create the request again"
    )]
    NodeDaemonUnavailable { node: String, problem: String },
}

impl Refusal {
    /// CamelCase reason for the `Ready` condition and the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NamespaceMismatch { .. } => "NamespaceMismatch",
            Self::TimeoutOutOfRange(_) => "TimeoutOutOfRange",
            Self::InvalidPodName(_) => "InvalidPodName",
            Self::InvalidContainerName(_) => "InvalidContainerName",
            Self::PodNotFound { .. } => "PodNotFound",
            Self::PodTerminating { .. } => "PodTerminating",
            Self::PodNotScheduled { .. } => "PodNotScheduled",
            Self::ContainerNotFound { .. } => "ContainerNotFound",
            Self::ContainerNotRunning { .. } => "ContainerNotRunning",
            Self::NodeDaemonUnavailable { .. } => "NodeDaemonUnavailable",
        }
    }

    /// What the request waits for when the refusal is of a state that passes by itself (the
    /// pod not scheduled or the container not started yet, the node's daemon not live), for
    /// the message of a request that waits; `None` for a refusal for good.
    pub fn waits_for(&self) -> Option<String> {
        match self {
            Self::PodNotScheduled { pod } => {
                Some(format!("pod {pod:?} is not scheduled to a node yet"))
            }
            Self::ContainerNotRunning {
                pod,
                container,
                state,
                starting: true,
            } => Some(format!(
                "container {container:?} of pod {pod:?} is not running yet ({state})"
            )),
            Self::NodeDaemonUnavailable { node, problem } => {
                Some(format!("no live node daemon on node {node:?}: {problem}"))
            }
            _ => None,
        }
    }
}

/// Waiting reasons of a container on its way to run; any other (`CrashLoopBackOff`,
/// `ImagePullBackOff`, ...) needs someone to change something.
const STARTING: [&str; 2] = ["ContainerCreating", "PodInitializing"];

/// Checks that need only the request. The shell runs them before fetching the pod, so a
/// hostile name never reaches an API path.
pub fn check_request(request: &ContainerCheckpoint) -> Result<(), Refusal> {
    let own = request.metadata.namespace.as_deref().unwrap_or_default();
    if let Some(spec) = request.spec.namespace.as_deref()
        && spec != own
    {
        return Err(Refusal::NamespaceMismatch {
            spec: spec.to_owned(),
            own: own.to_owned(),
        });
    }
    if !is_dns_subdomain(&request.spec.pod_name) {
        return Err(Refusal::InvalidPodName(request.spec.pod_name.clone()));
    }
    if !is_dns_label(&request.spec.container) {
        return Err(Refusal::InvalidContainerName(
            request.spec.container.clone(),
        ));
    }
    if let Some(t) = request.spec.timeout_seconds
        && !(MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS).contains(&t)
    {
        return Err(Refusal::TimeoutOutOfRange(t));
    }
    Ok(())
}

/// Checks the pod the request names; on success returns it and the node it runs on.
pub fn check_pod<'p>(
    request: &ContainerCheckpoint,
    pod: Option<&'p Pod>,
) -> Result<(&'p Pod, &'p str), Refusal> {
    let pod_name = &request.spec.pod_name;
    let container = &request.spec.container;
    let Some(pod) = pod else {
        return Err(Refusal::PodNotFound {
            namespace: request.metadata.namespace.clone().unwrap_or_default(),
            pod: pod_name.clone(),
        });
    };
    if pod.metadata.deletion_timestamp.is_some() {
        return Err(Refusal::PodTerminating {
            pod: pod_name.clone(),
        });
    }
    let spec = pod.spec.as_ref();
    let Some(node) = spec
        .and_then(|s| s.node_name.as_deref())
        .filter(|n| !n.is_empty())
    else {
        return Err(Refusal::PodNotScheduled {
            pod: pod_name.clone(),
        });
    };
    let containers: Vec<String> = spec
        .map(|s| s.containers.iter().map(|c| c.name.clone()).collect())
        .unwrap_or_default();
    if !containers.contains(container) {
        return Err(Refusal::ContainerNotFound {
            pod: pod_name.clone(),
            container: container.clone(),
            containers,
        });
    }
    let state = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|s| &s.name == container))
        .map(|s| s.state.as_ref());
    match state {
        Some(Some(ContainerState {
            running: Some(_), ..
        })) => Ok((pod, node)),
        Some(state) => Err(Refusal::ContainerNotRunning {
            pod: pod_name.clone(),
            container: container.clone(),
            state: describe_state(state),
            starting: state
                .and_then(|s| s.waiting.as_ref())
                .is_some_and(|w| w.reason.as_deref().is_none_or(|r| STARTING.contains(&r))),
        }),
        None => Err(Refusal::ContainerNotRunning {
            pod: pod_name.clone(),
            container: container.clone(),
            state: "no status reported yet".to_owned(),
            starting: true,
        }),
    }
}

/// Whether noded on `node` is alive, judged by its Lease (`lease_ref` is `namespace/name`,
/// for the message).
pub fn check_node_daemon(
    node: &str,
    lease: Option<&Lease>,
    lease_ref: &str,
    now: Timestamp,
) -> Result<(), Refusal> {
    let problem = match lease {
        None => format!("its Lease {lease_ref} does not exist"),
        Some(lease) => match lease_expiry(lease) {
            None => format!("its Lease {lease_ref} has no renewTime or leaseDurationSeconds"),
            Some(expiry) if expiry > now => return Ok(()),
            Some(expiry) => {
                // Whole seconds, in jiff's friendly form ("20s", "3h 5m 2s").
                let ago = SignedDuration::from_secs(now.duration_since(expiry).as_secs());
                format!("its Lease {lease_ref} expired {ago:#} ago")
            }
        },
    };
    Err(Refusal::NodeDaemonUnavailable {
        node: node.to_owned(),
        problem,
    })
}

/// When a Lease stops vouching for its holder: last renewal plus its duration.
pub fn lease_expiry(lease: &Lease) -> Option<Timestamp> {
    let spec = lease.spec.as_ref()?;
    let renewed = spec.renew_time.as_ref()?.0;
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds?.into());
    renewed.checked_add(duration).ok()
}

fn describe_state(state: Option<&ContainerState>) -> String {
    let Some(state) = state else {
        return "state unknown".to_owned();
    };
    if let Some(waiting) = &state.waiting {
        let mut s = "waiting".to_owned();
        if let Some(reason) = &waiting.reason {
            let _ = write!(s, ": {reason}");
        }
        return s;
    }
    if let Some(terminated) = &state.terminated {
        let mut s = "terminated".to_owned();
        if let Some(reason) = &terminated.reason {
            let _ = write!(s, ": {reason}");
        }
        let _ = write!(s, ", exit code {}", terminated.exit_code);
        return s;
    }
    "state unknown".to_owned()
}

/// A user-supplied name for a message: quoted and escaped, cut when very long so a hostile
/// name cannot flood the status.
pub(crate) fn shown(name: &str) -> String {
    const MAX: usize = 80;
    match name.char_indices().nth(MAX) {
        None => format!("{name:?}"),
        Some((cut, _)) => format!("{:?}… ({} characters)", &name[..cut], name.chars().count()),
    }
}

pub(crate) fn quoted_list(names: &[String]) -> String {
    if names.is_empty() {
        return "none".to_owned();
    }
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests;
