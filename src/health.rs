//! Whether a restored pod runs, or will not without someone changing something: the one
//! judgement the controller's migrations and the plugin's `restore` wait on. Pure.

use std::fmt;

use k8s_openapi::api::core::v1::Pod;

/// Waiting reasons of a container that will not run without someone changing something: the
/// kubelet has given up once already, or cannot go on.
const STUCK: [&str; 7] = [
    "CreateContainerError",
    "CreateContainerConfigError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "RunContainerError",
];

/// Why a pod will not run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stuck {
    /// The pod ended (`Failed` or `Succeeded`), with the kubelet's message or reason.
    Ended { phase: String, why: Option<String> },
    /// A container waits for a reason in [`STUCK`].
    Waiting {
        container: String,
        reason: String,
        message: Option<String>,
    },
    /// A container has terminated.
    Terminated {
        container: String,
        reason: Option<String>,
        exit_code: i32,
    },
}

impl fmt::Display for Stuck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ended { phase, why } => {
                write!(f, "the pod {}", phase.to_ascii_lowercase())?;
                match why {
                    Some(why) => write!(f, " ({why})"),
                    None => Ok(()),
                }
            }
            Self::Waiting {
                container,
                reason,
                message,
            } => write!(
                f,
                "container {container:?} is waiting: {reason}: {}",
                message.as_deref().unwrap_or_default()
            ),
            Self::Terminated {
                container,
                reason,
                exit_code,
            } => write!(
                f,
                "container {container:?} terminated: {} (exit code {exit_code})",
                reason.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// Why the pod will not run, if it will not.
pub fn stuck(pod: &Pod) -> Option<Stuck> {
    let status = pod.status.as_ref()?;
    if let Some(phase @ ("Failed" | "Succeeded")) = status.phase.as_deref() {
        return Some(Stuck::Ended {
            phase: phase.to_owned(),
            why: status.message.clone().or_else(|| status.reason.clone()),
        });
    }
    status.container_statuses.iter().flatten().find_map(|c| {
        let state = c.state.as_ref()?;
        if let Some(w) = &state.waiting
            && let Some(reason) = w.reason.as_deref().filter(|r| STUCK.contains(r))
        {
            return Some(Stuck::Waiting {
                container: c.name.clone(),
                reason: reason.to_owned(),
                message: w.message.clone(),
            });
        }
        state.terminated.as_ref().map(|t| Stuck::Terminated {
            container: c.name.clone(),
            reason: t.reason.clone(),
            exit_code: t.exit_code,
        })
    })
}

/// Every container of the pod is running.
pub fn all_running(pod: &Pod) -> bool {
    let expected = pod.spec.as_ref().map_or(0, |s| s.containers.len());
    let statuses = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref());
    statuses.is_some_and(|all| {
        all.len() == expected
            && all
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn with_state(state: serde_json::Value) -> Pod {
        pod(json!({
            "spec": {"containers": [{"name": "app"}]},
            "status": {"phase": "Pending", "containerStatuses": [{
                "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": state,
            }]},
        }))
    }

    #[test]
    fn a_pod_is_stuck_on_the_kubelets_give_up_reasons_and_when_it_ended() {
        assert_eq!(stuck(&pod(json!({}))), None);
        let waiting = |reason: &str| with_state(json!({"waiting": {"reason": reason}}));
        assert_eq!(stuck(&waiting("ContainerCreating")), None);
        for reason in STUCK {
            assert!(stuck(&waiting(reason)).is_some(), "{reason}");
        }
        assert_eq!(
            stuck(&with_state(
                json!({"waiting": {"reason": "ErrImagePull", "message": "m"}})
            ))
            .unwrap()
            .to_string(),
            "container \"app\" is waiting: ErrImagePull: m"
        );
        assert_eq!(
            stuck(&with_state(json!({"terminated": {"exitCode": 137}})))
                .unwrap()
                .to_string(),
            "container \"app\" terminated: unknown (exit code 137)"
        );
        let failed = pod(json!({"status": {"phase": "Failed", "message": "evicted"}}));
        assert_eq!(
            stuck(&failed).unwrap().to_string(),
            "the pod failed (evicted)"
        );
        let succeeded = pod(json!({"status": {"phase": "Succeeded", "reason": "Completed"}}));
        assert_eq!(
            stuck(&succeeded).unwrap().to_string(),
            "the pod succeeded (Completed)"
        );
    }

    #[test]
    fn running_means_every_container_runs() {
        assert!(!all_running(&with_state(json!({"waiting": {}}))));
        assert!(all_running(&with_state(
            json!({"running": {"startedAt": "2025-01-01T00:00:00Z"}})
        )));
        assert!(!all_running(&pod(json!({"status": {"phase": "Running"}}))));
    }
}
