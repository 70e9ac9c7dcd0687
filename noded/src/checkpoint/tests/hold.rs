//! A held checkpoint (a migration's): the runtime's pause of the container is bridged into a
//! freeze that outlasts the checkpoint, or it runs on when the checkpoint fails.

use std::path::PathBuf;

use super::*;
use crate::freeze::Freezer;

const CGROUP: &str = "/kubepods/besteffort/pod-uid/live";

/// A checkpointer whose runtime runs container `live` in a cgroup with a v1 freezer under
/// `tmp` (and pauses it for a checkpoint); also that cgroup's directory.
fn held(tmp: &Path, fake: FakeRuntime) -> (Checkpointer<FakeRuntime>, PathBuf) {
    let dir = tmp.join("cgroup/freezer/kubepods/besteffort/pod-uid/live");
    std::fs::create_dir_all(&dir).unwrap();
    for dir in [dir.as_path(), dir.parent().unwrap()] {
        std::fs::write(dir.join("freezer.state"), "THAWED").unwrap();
        std::fs::write(dir.join("freezer.self_freezing"), "0").unwrap();
    }
    let fake = FakeRuntime {
        containers: vec![container("live", api::ContainerState::ContainerRunning, 1)],
        cgroup: Some(CGROUP.into()),
        freezer: Some(dir.clone()),
        ..fake
    };
    let c = checkpointer(fake, tmp).with_freezer(Freezer::new(tmp.join("cgroup")));
    (c, dir)
}

fn state(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("freezer.state")).unwrap()
}

fn hold_job() -> Job<'static> {
    Job {
        hold: true,
        ..job()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_container_is_frozen_before_its_dump_and_stays_frozen() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, dir) = held(tmp.path(), FakeRuntime::default());
    let a = c.take(&hold_job()).await.unwrap();
    assert!(a.held);
    assert_eq!(
        state(&dir),
        "FROZEN",
        "the runtime's resume did not let it go"
    );
    assert_eq!(
        state(dir.parent().unwrap()),
        "THAWED",
        "its pod is free again"
    );

    c.release(&hold_job(), Some("live")).await.unwrap();
    assert_eq!(state(&dir), "THAWED");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unheld_checkpoint_never_touches_the_freezer() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, dir) = held(tmp.path(), FakeRuntime::default());
    let a = c.take(&job()).await.unwrap();
    assert!(!a.held);
    assert_eq!(state(&dir), "THAWED");
    assert_eq!(state(dir.parent().unwrap()), "THAWED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_container_whose_dump_fails_runs_on() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeRuntime {
        fail_with: Some(|| CriError::Rpc {
            op: "CheckpointContainer",
            code: tonic::Code::Unknown,
            message: "criu failed".into(),
        }),
        ..Default::default()
    };
    let (c, dir) = held(tmp.path(), fake);
    c.take(&hold_job()).await.unwrap_err();
    assert_eq!(state(&dir), "THAWED");
    assert_eq!(state(dir.parent().unwrap()), "THAWED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_cannot_be_held_is_not_dumped() {
    let tmp = tempfile::tempdir().unwrap();
    let (mut c, _) = held(tmp.path(), FakeRuntime::default());
    c.runtime.cgroup = None;
    let e = c.take(&hold_job()).await.unwrap_err();
    assert_eq!(e.reason(), "HoldFailed");
    assert!(
        e.to_string().contains("keeps running"),
        "the user learns the source was not touched: {e}"
    );
    assert!(c.runtime.calls.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn releasing_a_container_that_is_gone_needs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let (c, _) = held(tmp.path(), FakeRuntime::default());
    c.release(&hold_job(), Some("deleted")).await.unwrap();
}

#[test]
fn only_dumps_that_left_the_container_as_it_was_are_tried_again() {
    assert!(retryable(&Failure::Hold(FreezeError::Gap)));
    assert!(!retryable(&Failure::Hold(FreezeError::NoCgroup)));
    assert!(!retryable(&Failure::Interrupted));
}
