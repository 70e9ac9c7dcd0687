//! The Event a request's outcome leaves on the pod it checkpointed: `kubectl describe pod`
//! shows what became of its checkpoints without knowing our kinds. Pure.

use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointStatus};
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::shell::pod_reference;
use crate::status::{MAX_EVENT_NOTE, Transition, truncated};

/// The pod `request` checkpointed and the Event its `transition` to `status` tells it.
pub fn pod_event(
    request: &ContainerCheckpoint,
    transition: Transition,
    status: &ContainerCheckpointStatus,
) -> (ObjectReference, Event) {
    let namespace = request.namespace().unwrap_or_default();
    let name = request.name_any();
    let (type_, reason, note) = match transition {
        Transition::Completed => (
            EventType::Normal,
            "Checkpointed",
            format!(
                "container {} checkpointed by ContainerCheckpoint {name}",
                request.spec.container
            ),
        ),
        Transition::Failed => (
            EventType::Warning,
            "CheckpointFailed",
            format!(
                "ContainerCheckpoint {name} of container {} failed: {}",
                request.spec.container,
                status.message.as_deref().unwrap_or_default()
            ),
        ),
    };
    let pod = pod_reference(
        &namespace,
        &request.spec.pod_name,
        status.pod_uid.as_deref(),
    );
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncated(&note, MAX_EVENT_NOTE)),
        action: "Checkpoint".to_owned(),
        secondary: Some(request.object_ref(&())),
    };
    (pod, event)
}

#[cfg(test)]
mod tests {
    use checkpointing::crd::CheckpointState;

    use super::*;
    use crate::fixtures::request;

    #[test]
    fn the_pod_hears_of_its_checkpoint_and_of_why_it_failed() {
        let status = ContainerCheckpointStatus {
            state: Some(CheckpointState::Failed),
            message: Some("the runtime said no".into()),
            pod_uid: Some("uid-pod".into()),
            ..Default::default()
        };
        let (pod, event) = pod_event(&request(), Transition::Failed, &status);
        assert_eq!(pod.kind.as_deref(), Some("Pod"));
        assert_eq!(pod.name.as_deref(), Some("app"));
        assert_eq!(pod.uid.as_deref(), Some("uid-pod"));
        assert_eq!(event.reason, "CheckpointFailed");
        assert_eq!(event.type_, EventType::Warning);
        let note = event.note.unwrap();
        assert!(
            note.contains("cc1") && note.contains("the runtime said no"),
            "{note}"
        );
        let related = event.secondary.unwrap();
        assert_eq!(related.kind.as_deref(), Some("ContainerCheckpoint"));
        assert_eq!(related.name.as_deref(), Some("cc1"));

        let (_, event) = pod_event(&request(), Transition::Completed, &status);
        assert_eq!(event.reason, "Checkpointed");
        assert_eq!(event.action, "Checkpoint");
    }
}
