use super::*;
use crate::fixtures::{content, content_with, now, request};
use checkpointing::crd::ContainerCheckpointContentStatus;

#[test]
fn content_without_status_reads_as_pending_on_its_node() {
    let s = mirror(&request(), &content(), now());
    assert_eq!(s.state, Some(CheckpointState::Pending));
    assert_eq!(
        s.message.as_deref(),
        Some(
            "checkpoint requested from the node daemon on node1; its ContainerCheckpointContent shows progress"
        )
    );
    assert_eq!(s.node_name.as_deref(), Some("node1"));
    assert_eq!(s.content_name.as_deref(), Some("cc1"));
    assert_eq!(s.pod_uid.as_deref(), Some("uid-pod"));
    assert_eq!(s.observed_generation, Some(1));
    let ready = &s.conditions[0];
    assert_eq!(
        (
            ready.type_.as_str(),
            ready.status.as_str(),
            ready.reason.as_str()
        ),
        ("Ready", "False", "Pending")
    );
}

#[test]
fn completed_content_mirrors_size_image_node_and_ready_true() {
    let time = Time("2025-01-01T00:00:05Z".parse().unwrap());
    let s = mirror(
        &request(),
        &content_with(ContainerCheckpointContentStatus {
            state: Some(CheckpointState::Completed),
            ready: true,
            container_id: Some("abc".into()),
            archive_size: Some(250_000),
            image: Some("localhost/checkpoint/cc1@sha256:00".into()),
            checkpoint_time: Some(time.clone()),
            checkpoint_path: Some("/var/lib/kubelet/checkpoints/x.tar".into()),
            ..Default::default()
        }),
        now(),
    );
    assert_eq!(s.state, Some(CheckpointState::Completed));
    assert_eq!(s.archive_size, Some(250_000));
    assert_eq!(
        s.image.as_deref(),
        Some("localhost/checkpoint/cc1@sha256:00")
    );
    assert_eq!(s.node_name.as_deref(), Some("node1"));
    assert_eq!(s.container_id.as_deref(), Some("abc"));
    assert_eq!(s.checkpoint_time, Some(time));
    assert_eq!(
        s.message.as_deref(),
        Some("checkpoint of container \"counter\" taken on node node1")
    );
    let ready = &s.conditions[0];
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Completed")
    );
    assert_eq!(ready.last_transition_time, Time(now()));
}

#[test]
fn failed_content_mirrors_its_message() {
    let s = mirror(
        &request(),
        &content_with(ContainerCheckpointContentStatus {
            state: Some(CheckpointState::Failed),
            message: Some("CheckpointContainer: CRIU not found".into()),
            ..Default::default()
        }),
        now(),
    );
    assert_eq!(s.state, Some(CheckpointState::Failed));
    assert_eq!(
        s.message.as_deref(),
        Some("CheckpointContainer: CRIU not found")
    );
    let ready = &s.conditions[0];
    assert_eq!(
        (
            ready.status.as_str(),
            ready.reason.as_str(),
            ready.message.as_str()
        ),
        (
            "False",
            "CheckpointFailed",
            "CheckpointContainer: CRIU not found"
        )
    );
}

#[test]
fn ready_content_without_state_counts_as_completed() {
    let s = mirror(
        &request(),
        &content_with(ContainerCheckpointContentStatus {
            ready: true,
            ..Default::default()
        }),
        now(),
    );
    assert_eq!(s.state, Some(CheckpointState::Completed));
}

#[test]
fn transition_time_survives_a_reason_change_with_the_same_status() {
    let mut req = request();
    req.status = Some(mirror(&req, &content(), now()));
    let later: Timestamp = "2025-01-01T00:10:00Z".parse().unwrap();
    let running = mirror(
        &req,
        &content_with(ContainerCheckpointContentStatus {
            state: Some(CheckpointState::Running),
            ..Default::default()
        }),
        later,
    );
    assert_eq!(running.conditions[0].reason, "Running");
    assert_eq!(running.conditions[0].last_transition_time, Time(now()));

    let done = mirror(
        &req,
        &content_with(ContainerCheckpointContentStatus {
            state: Some(CheckpointState::Completed),
            ..Default::default()
        }),
        later,
    );
    assert_eq!(done.conditions[0].last_transition_time, Time(later));
}

#[test]
fn only_state_changes_make_events() {
    use CheckpointState::*;
    assert_eq!(transition(None, Some(Pending)), None);
    assert_eq!(transition(None, Some(Running)), None);
    assert_eq!(transition(Some(Pending), Some(Pending)), None);
    assert_eq!(transition(Some(Pending), Some(Running)), None);
    assert_eq!(
        transition(Some(Running), Some(Completed)),
        Some(Transition::Completed)
    );
    assert_eq!(
        transition(Some(Pending), Some(Failed)),
        Some(Transition::Failed)
    );
    assert_eq!(transition(None, Some(Failed)), Some(Transition::Failed));
    assert_eq!(transition(Some(Completed), Some(Completed)), None);
    assert_eq!(transition(Some(Failed), Some(Failed)), None);
    assert_eq!(transition(Some(Pending), None), None);
}

#[test]
fn events_carry_type_reason_and_message() {
    let e = event(Transition::Completed, "done");
    assert_eq!(
        (e.type_, e.reason.as_str()),
        (EventType::Normal, "CheckpointCompleted")
    );
    let e = event(Transition::Failed, "pod \"app\" not found");
    assert_eq!(
        (e.type_, e.reason.as_str()),
        (EventType::Warning, "CheckpointFailed")
    );
    assert_eq!(e.note.as_deref(), Some("pod \"app\" not found"));

    let long = "é".repeat(2000);
    let note = event(Transition::Failed, &long).note.unwrap();
    assert!(note.len() <= MAX_EVENT_NOTE && note.ends_with('…'));
}
