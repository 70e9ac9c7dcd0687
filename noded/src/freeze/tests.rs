//! The freezer against a directory laid out like the node's cgroup file system (v1 and v2):
//! the files noded writes and reads are the kernel's interface, so a directory holds them.

use std::fs;
use std::path::Path;

use super::*;

const CGROUPFS: &str = "/ckpt-testbed/node1/kubepods/besteffort/podu/crio-abc";
async fn freeze(freezer: &Freezer, cgroups_path: &str) -> Result<(), FreezeError> {
    freezer.settle(&freezer.control(cgroups_path)?)
}

const SYSTEMD: &str = "kubepods-besteffort-podu.slice:cri-containerd:abc";

#[test]
fn cgroups_paths_of_both_drivers_name_the_container_directory() {
    assert_eq!(
        cgroup_dir(CGROUPFS).unwrap(),
        Path::new("ckpt-testbed/node1/kubepods/besteffort/podu/crio-abc")
    );
    assert_eq!(
        cgroup_dir(SYSTEMD).unwrap(),
        Path::new(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podu.slice/cri-containerd-abc.scope"
        )
    );
}

#[test]
fn a_cgroups_path_that_could_leave_the_hierarchy_is_refused() {
    for bad in [
        "",
        "/",
        "/kubepods/../../etc",
        "kubepods/./x",
        "a.slice:b",
        "a:b:c:d",
        "notaslice:crio:abc",
        ".slice:crio:abc",
        "kubepods.slice:crio:../../x",
    ] {
        assert_eq!(cgroup_dir(bad), None, "{bad:?}");
    }
}

fn v1(root: &Path) -> std::path::PathBuf {
    let dir = root.join("freezer").join(cgroup_dir(CGROUPFS).unwrap());
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("freezer.state"), "THAWED\n").unwrap();
    dir.join("freezer.state")
}

#[tokio::test]
async fn v1_freezes_and_thaws_through_freezer_state() {
    let tmp = tempfile::tempdir().unwrap();
    let state = v1(tmp.path());
    let freezer = Freezer::new(tmp.path());
    freeze(&freezer, CGROUPFS).await.unwrap();
    assert_eq!(fs::read_to_string(&state).unwrap(), "FROZEN");
    freezer.thaw(CGROUPFS).unwrap();
    assert_eq!(fs::read_to_string(&state).unwrap(), "THAWED");
}

#[tokio::test]
async fn v2_waits_for_cgroup_events_to_say_frozen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(cgroup_dir(SYSTEMD).unwrap());
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("cgroup.freeze"), "0\n").unwrap();
    fs::write(dir.join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
    let freezer = Freezer::new(tmp.path());
    // The kernel reports the freeze once every task stopped: here, a moment later.
    let events = dir.join("cgroup.events");
    let kernel = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        fs::write(events, "populated 1\nfrozen 1\n").unwrap();
    });
    freeze(&freezer, SYSTEMD).await.unwrap();
    kernel.join().unwrap();
    assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "1");
    freezer.thaw(SYSTEMD).unwrap();
    assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");
}

#[tokio::test]
async fn a_freeze_that_never_settles_is_undone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pod");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("cgroup.freeze"), "0").unwrap();
    fs::write(dir.join("cgroup.events"), "frozen 0\n").unwrap();
    let freezer = Freezer {
        settle: Duration::from_millis(100),
        ..Freezer::new(tmp.path())
    };
    let error = freeze(&freezer, "/pod").await.unwrap_err();
    assert!(matches!(error, FreezeError::Unsettled(_)), "{error}");
    assert_eq!(fs::read_to_string(dir.join("cgroup.freeze")).unwrap(), "0");
}

#[test]
fn thawing_a_cgroup_that_is_gone_needs_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    Freezer::new(tmp.path()).thaw(CGROUPFS).unwrap();
}

#[tokio::test]
async fn freezing_a_container_without_a_freezer_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let error = freeze(&Freezer::new(tmp.path()), CGROUPFS)
        .await
        .unwrap_err();
    assert!(matches!(error, FreezeError::NoFreezer(_)), "{error}");
}

/// A v1 container cgroup and its pod's, thawed; the container's directory.
fn pod_and_container(root: &Path) -> std::path::PathBuf {
    let container = root.join("freezer").join(cgroup_dir(CGROUPFS).unwrap());
    fs::create_dir_all(&container).unwrap();
    for dir in [container.as_path(), container.parent().unwrap()] {
        fs::write(dir.join("freezer.state"), "THAWED").unwrap();
        fs::write(dir.join("freezer.self_freezing"), "0").unwrap();
    }
    container
}

#[tokio::test]
async fn a_bridge_freezes_the_pod_while_the_runtime_pauses_the_container_and_ends_on_its_own_freeze()
 {
    let tmp = tempfile::tempdir().unwrap();
    let container = pod_and_container(tmp.path());
    let pod = container.parent().unwrap().to_owned();
    let freezer = Freezer::new(tmp.path());
    let dump = async {
        crate::testing::runtime_pause(&container, Some(Duration::from_millis(30))).await;
        // The pod's freeze began while the container was paused and outlived the resume.
        fs::read_to_string(pod.join("freezer.state")).unwrap()
    };
    let (pod_at_resume, held) = bridge(&freezer, CGROUPFS, dump).await;
    held.unwrap();
    assert_eq!(pod_at_resume, "FROZEN");
    assert_eq!(
        fs::read_to_string(container.join("freezer.state")).unwrap(),
        "FROZEN"
    );
    assert_eq!(
        fs::read_to_string(pod.join("freezer.state")).unwrap(),
        "THAWED"
    );
}

#[tokio::test]
async fn a_runtime_that_never_pauses_leaves_a_gap_not_a_hold() {
    let tmp = tempfile::tempdir().unwrap();
    let container = pod_and_container(tmp.path());
    let pod = container.parent().unwrap().to_owned();
    let freezer = Freezer::new(tmp.path());
    let ((), held) = bridge(
        &freezer,
        CGROUPFS,
        crate::testing::runtime_pause(&container, None),
    )
    .await;
    assert!(matches!(held, Err(FreezeError::Gap)), "{held:?}");
    assert_eq!(
        fs::read_to_string(container.join("freezer.state")).unwrap(),
        "THAWED"
    );
    assert_eq!(
        fs::read_to_string(pod.join("freezer.state")).unwrap(),
        "THAWED"
    );
}
