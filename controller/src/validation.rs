//! Pure checks a request must pass before its Content is created. A refusal is all the user
//! sees, so each one names the cause and what to do about it.

use std::fmt::Write;

use checkpointing::crd::ContainerCheckpoint;
use checkpointing::names::{is_dns_label, is_dns_subdomain};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ContainerState, Pod};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// Why a request is refused. `Display` is the status message; [`Refusal::reason`] the
/// condition reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "spec.namespace {spec:?} differs from the request's namespace {own:?}; a \
         ContainerCheckpoint can only checkpoint pods in its own namespace"
    )]
    NamespaceMismatch { spec: String, own: String },
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
    },
    #[error(
        "no live node daemon on node {node:?}: {problem}; check that the checkpoint-noded \
         DaemonSet runs a ready pod on that node, then create the request again"
    )]
    NodeDaemonUnavailable { node: String, problem: String },
}

impl Refusal {
    /// CamelCase reason for the `Ready` condition and the metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NamespaceMismatch { .. } => "NamespaceMismatch",
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
}

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
        }),
        None => Err(Refusal::ContainerNotRunning {
            pod: pod_name.clone(),
            container: container.clone(),
            state: "no status reported yet".to_owned(),
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
mod tests {
    use super::*;
    use checkpointing::crd::ContainerCheckpointSpec;
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{
        Container, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
        ContainerStatus, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};

    fn request(pod: &str, container: &str, spec_ns: Option<&str>) -> ContainerCheckpoint {
        let mut cc = ContainerCheckpoint::new(
            "cc1",
            ContainerCheckpointSpec {
                pod_name: pod.into(),
                container: container.into(),
                namespace: spec_ns.map(Into::into),
                timeout_seconds: None,
            },
        );
        cc.metadata.namespace = Some("default".into());
        cc
    }

    fn pod(node: Option<&str>, state: Option<ContainerState>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("app".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                containers: vec![
                    Container {
                        name: "counter".into(),
                        ..Default::default()
                    },
                    Container {
                        name: "sidecar".into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "counter".into(),
                    state,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn running() -> Option<ContainerState> {
        Some(ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        })
    }

    #[test]
    fn namespace_mismatch_is_refused_with_the_exact_message() {
        let err = check_request(&request("app", "counter", Some("other"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec.namespace \"other\" differs from the request's namespace \"default\"; a \
             ContainerCheckpoint can only checkpoint pods in its own namespace"
        );
        assert_eq!(err.reason(), "NamespaceMismatch");
        assert!(check_request(&request("app", "counter", Some("default"))).is_ok());
        assert!(check_request(&request("app", "counter", None)).is_ok());
    }

    #[test]
    fn hostile_names_are_refused_before_any_lookup() {
        let err = check_request(&request("../../secrets/x", "counter", None)).unwrap_err();
        assert_eq!(err.reason(), "InvalidPodName");
        assert_eq!(
            err.to_string(),
            "pod \"../../secrets/x\" not found: spec.podName is not a valid pod name (lowercase \
             letters, digits, '-' and '.', at most 253 characters); fix spec.podName"
        );
        assert!(err.to_string().contains("fix spec.podName"), "{err}");

        let long = "a".repeat(10_000);
        let err = check_request(&request(&long, "counter", None)).unwrap_err();
        assert!(err.to_string().len() < 300, "{err}");
        assert!(err.to_string().contains("10000 characters"), "{err}");

        let err = check_request(&request("app", "Counter/..", None)).unwrap_err();
        assert_eq!(err.reason(), "InvalidContainerName");
        assert!(err.to_string().contains("fix spec.container"), "{err}");

        assert!(check_request(&request("app.v1-2", "c-1", None)).is_ok());
        assert!(check_request(&request("app", &"c".repeat(64), None)).is_err());
        assert!(check_request(&request("-app", "c", None)).is_err());
    }

    #[test]
    fn missing_pod_is_refused() {
        let err = check_pod(&request("app", "counter", None), None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod \"app\" not found in namespace \"default\"; create the pod first or fix \
             spec.podName"
        );
    }

    #[test]
    fn unscheduled_pod_is_refused() {
        let p = pod(None, None);
        let err = check_pod(&request("app", "counter", None), Some(&p)).unwrap_err();
        assert_eq!(err.reason(), "PodNotScheduled");
        assert_eq!(
            err.to_string(),
            "pod \"app\" is not scheduled to a node yet; create the request again once the pod \
             runs"
        );
    }

    #[test]
    fn terminating_pod_is_refused() {
        let mut p = pod(Some("node1"), running());
        p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
        let err = check_pod(&request("app", "counter", None), Some(&p)).unwrap_err();
        assert_eq!(err.reason(), "PodTerminating");
        assert!(err.to_string().contains("being deleted"), "{err}");
    }

    #[test]
    fn unknown_container_is_refused_listing_the_pods_containers() {
        let p = pod(Some("node1"), running());
        let err = check_pod(&request("app", "db", None), Some(&p)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "pod \"app\" has no container \"db\"; its containers are \"counter\", \"sidecar\"; \
             fix spec.container"
        );
    }

    #[test]
    fn container_not_running_is_refused_saying_its_state() {
        let req = request("app", "counter", None);
        let waiting = pod(
            Some("node1"),
            Some(ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("ImagePullBackOff".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        let err = check_pod(&req, Some(&waiting)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "container \"counter\" of pod \"app\" is not running (waiting: ImagePullBackOff); \
             create the request again once it runs"
        );

        let terminated = pod(
            Some("node1"),
            Some(ContainerState {
                terminated: Some(ContainerStateTerminated {
                    reason: Some("Error".into()),
                    exit_code: 137,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        let err = check_pod(&req, Some(&terminated)).unwrap_err();
        assert!(
            err.to_string()
                .contains("(terminated: Error, exit code 137)"),
            "{err}"
        );

        // The sidecar exists but has no status yet.
        let p = pod(Some("node1"), running());
        let err = check_pod(&request("app", "sidecar", None), Some(&p)).unwrap_err();
        assert!(
            err.to_string().contains("(no status reported yet)"),
            "{err}"
        );
    }

    #[test]
    fn running_container_passes_and_names_its_node() {
        let p = pod(Some("node1"), running());
        let (_, node) = check_pod(&request("app", "counter", None), Some(&p)).unwrap();
        assert_eq!(node, "node1");
    }

    fn lease(renewed: Option<Timestamp>, seconds: Option<i32>) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                renew_time: renewed.map(MicroTime),
                lease_duration_seconds: seconds,
                ..Default::default()
            }),
        }
    }

    #[test]
    fn lease_freshness() {
        let now: Timestamp = "2025-01-01T00:01:00Z".parse().unwrap();
        let at = |s: &str| Some(s.parse::<Timestamp>().unwrap());
        let lref = "kube-system/checkpoint-noded-node1";

        let fresh = lease(at("2025-01-01T00:00:30Z"), Some(40));
        assert_eq!(check_node_daemon("node1", Some(&fresh), lref, now), Ok(()));
        assert_eq!(lease_expiry(&fresh), at("2025-01-01T00:01:10Z"));

        // Expiry is exclusive: a lease that ends exactly now no longer vouches.
        let edge = lease(at("2025-01-01T00:00:20Z"), Some(40));
        assert!(check_node_daemon("node1", Some(&edge), lref, now).is_err());

        let stale = lease(at("2025-01-01T00:00:00Z"), Some(40));
        let err = check_node_daemon("node1", Some(&stale), lref, now).unwrap_err();
        assert_eq!(err.reason(), "NodeDaemonUnavailable");
        assert_eq!(
            err.to_string(),
            "no live node daemon on node \"node1\": its Lease \
             kube-system/checkpoint-noded-node1 expired 20s ago; check that the \
             checkpoint-noded DaemonSet runs a ready pod on that node, then create the request \
             again"
        );

        let long_gone = lease(at("2024-12-31T21:55:00Z"), Some(40));
        let err = check_node_daemon("node1", Some(&long_gone), lref, now).unwrap_err();
        assert!(err.to_string().contains("expired 2h 5m 20s ago"), "{err}");

        let err = check_node_daemon("node1", None, lref, now).unwrap_err();
        assert!(
            err.to_string()
                .contains("its Lease kube-system/checkpoint-noded-node1 does not exist"),
            "{err}"
        );

        let unrenewed = lease(None, Some(40));
        let err = check_node_daemon("node1", Some(&unrenewed), lref, now).unwrap_err();
        assert!(err.to_string().contains("no renewTime"), "{err}");
        let no_duration = lease(at("2025-01-01T00:00:59Z"), None);
        assert!(check_node_daemon("node1", Some(&no_duration), lref, now).is_err());
    }
}
