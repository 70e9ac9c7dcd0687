//! Whether a restored pod runs, or will not without someone changing something. Pure.

use k8s_openapi::api::core::v1::Pod;

/// Waiting reasons of a container that will not run without someone changing something.
const STUCK: [&str; 7] = [
    "CreateContainerError",
    "CreateContainerConfigError",
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CrashLoopBackOff",
    "RunContainerError",
];

/// Why a restored container will not run, if it will not.
pub fn stuck(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() == Some("Failed") {
        return Some(format!(
            "the pod failed{}",
            status
                .message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default()
        ));
    }
    status.container_statuses.iter().flatten().find_map(|c| {
        let state = c.state.as_ref()?;
        if let Some(w) = state
            .waiting
            .as_ref()
            .filter(|w| STUCK.contains(&w.reason.as_deref().unwrap_or_default()))
        {
            return Some(format!(
                "container {:?} is waiting: {}: {}",
                c.name,
                w.reason.as_deref().unwrap_or_default(),
                w.message.as_deref().unwrap_or_default()
            ));
        }
        state.terminated.as_ref().map(|t| {
            format!(
                "container {:?} terminated: {} (exit code {})",
                c.name,
                t.reason.as_deref().unwrap_or("unknown"),
                t.exit_code
            )
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
