//! How far the pod `restore` created (the shared [`checkpointing::restored`] copy) has got.

use checkpointing::health::{Stuck, stuck};
use k8s_openapi::api::core::v1::Pod;

/// Where a starting pod is.
#[derive(Debug, PartialEq)]
pub enum Progress {
    Running,
    /// Still starting: the phase and, once the kubelet says, why the container waits.
    Starting(String),
    /// It will not run without someone acting: why.
    Stuck(String),
}

/// Stuck as the controller judges a migration's restored pod ([`stuck`]), in the plugin's words:
/// the phase first.
pub fn progress(pod: &Pod) -> Progress {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_else(|| "Pending".to_owned());
    if let Some(why) = stuck(pod) {
        return Progress::Stuck(match why {
            Stuck::Ended { why, .. } => format!("{phase}: {}", why.unwrap_or_default()),
            Stuck::Waiting {
                reason, message, ..
            } => waiting(&phase, reason, message),
            terminated => format!("{phase}: {terminated}"),
        });
    }
    if phase == "Running" {
        return Progress::Running;
    }
    let waiting_state = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| c.state?.waiting);
    match waiting_state {
        Some(w) => Progress::Starting(waiting(&phase, w.reason.unwrap_or_default(), w.message)),
        None => Progress::Starting(phase),
    }
}

fn waiting(phase: &str, reason: String, message: Option<String>) -> String {
    match message {
        Some(m) => format!("{phase}: {reason}: {m}"),
        None => format!("{phase}: {reason}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn progress_of_a_starting_pod() {
        assert_eq!(
            progress(&pod(json!({}))),
            Progress::Starting("Pending".into())
        );
        assert_eq!(
            progress(&pod(json!({"status": {"phase": "Running"}}))),
            Progress::Running
        );
        let waiting = |reason: &str| {
            pod(
                json!({"status": {"phase": "Pending", "containerStatuses": [{
                    "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": "m"}},
                }]}}),
            )
        };
        assert_eq!(
            progress(&waiting("ContainerCreating")),
            Progress::Starting("Pending: ContainerCreating: m".into())
        );
        assert_eq!(
            progress(&waiting("CreateContainerError")),
            Progress::Stuck("Pending: CreateContainerError: m".into())
        );
        assert_eq!(
            progress(&pod(
                json!({"status": {"phase": "Failed", "message": "evicted"}})
            )),
            Progress::Stuck("Failed: evicted".into())
        );
    }
}
