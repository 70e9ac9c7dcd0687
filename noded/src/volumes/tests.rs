use super::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn hostile_uids_and_names_reach_no_directory() {
    let pods = Path::new("/var/lib/kubelet/pods");
    assert_eq!(
        host_dir(pods, "0b9c-1e", "data").unwrap(),
        Path::new("/var/lib/kubelet/pods/0b9c-1e/volumes/kubernetes.io~empty-dir/data")
    );
    for (uid, volume) in [
        ("../x", "data"),
        ("", "data"),
        ("u", "../../etc"),
        ("u", "a/b"),
    ] {
        assert_eq!(host_dir(pods, uid, volume), None, "{uid} {volume}");
    }
}

/// A kubelet pods directory with emptyDir `volume` of pod `uid` made.
fn volume_dir(pods: &Path, uid: &str, volume: &str) -> PathBuf {
    let dir = host_dir(pods, uid, volume).unwrap();
    fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn volumes_travel_into_the_restored_pods_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let (source, target) = (tmp.path().join("node1"), tmp.path().join("node2"));
    let data = volume_dir(&source, "old", "data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("sub/log"), "1\n2\n").unwrap();
    fs::set_permissions(data.join("sub/log"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("sub/log", data.join("latest")).unwrap();
    volume_dir(&source, "old", "cache");
    let layer = tmp.path().join("volumes.tar");
    capture(&source, "old", &["data".into(), "cache".into()], &layer).unwrap();
    assert_eq!(
        fs::metadata(&layer).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The new pod has `data` only; `cache` is not placed.
    let placed_dir = volume_dir(&target, "new", "data");
    let placed = place(&layer, &target, "new", |_| true).unwrap();
    assert_eq!(placed, ["data"]);
    assert_eq!(
        fs::read_to_string(placed_dir.join("sub/log")).unwrap(),
        "1\n2\n"
    );
    assert_eq!(
        fs::metadata(placed_dir.join("sub/log"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o640
    );
    assert_eq!(
        fs::read_link(placed_dir.join("latest")).unwrap(),
        Path::new("sub/log")
    );
    // Already placed (say, from another container's image): left alone.
    fs::write(placed_dir.join("sub/log"), "1\n2\n3\n").unwrap();
    assert!(place(&layer, &target, "new", |_| false).unwrap().is_empty());
    assert_eq!(
        fs::read_to_string(placed_dir.join("sub/log")).unwrap(),
        "1\n2\n3\n"
    );
}

#[test]
fn a_layer_that_reaches_outside_its_volume_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    volume_dir(&pods, "new", "data");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    // A link to outside, then a file through it.
    let layer = tmp.path().join("evil.tar");
    let mut builder = tar::Builder::new(File::create(&layer).unwrap());
    let mut link = tar::Header::new_gnu();
    link.set_entry_type(tar::EntryType::Symlink);
    link.set_size(0);
    builder
        .append_link(&mut link, "checkpointing-volumes/data/escape", &outside)
        .unwrap();
    let mut file = tar::Header::new_gnu();
    file.set_size(4);
    file.set_mode(0o644);
    builder
        .append_data(
            &mut file,
            "checkpointing-volumes/data/escape/pwned",
            &b"evil"[..],
        )
        .unwrap();
    builder.finish().unwrap();
    drop(builder);
    assert!(place(&layer, &pods, "new", |_| true).is_err());
    assert!(!outside.join("pwned").exists());
}
