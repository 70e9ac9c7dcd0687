//! The freezer against a directory laid out like the node's cgroup file system (v1 and v2):
//! the files noded writes and reads are the kernel's interface, so a directory holds them.

use std::fs;
use std::path::Path;

use super::*;

const CGROUPFS: &str = "/ckpt-testbed/node1/kubepods/besteffort/podu/crio-abc";
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
    freezer.freeze(CGROUPFS).await.unwrap();
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
    let settle = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fs::write(events, "populated 1\nfrozen 1\n").unwrap();
    });
    freezer.freeze(SYSTEMD).await.unwrap();
    settle.await.unwrap();
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
    let error = freezer.freeze("/pod").await.unwrap_err();
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
    let error = Freezer::new(tmp.path()).freeze(CGROUPFS).await.unwrap_err();
    assert!(matches!(error, FreezeError::NoFreezer(_)), "{error}");
}
