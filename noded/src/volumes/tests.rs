use super::*;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod place;

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
    symlink("sub/log", data.join("latest")).unwrap();
    volume_dir(&source, "old", "cache");
    let layer = tmp.path().join("volumes.tar");
    capture(
        &source,
        "old",
        &["data".into(), "cache".into()],
        &layer,
        1 << 20,
    )
    .unwrap();
    assert_eq!(
        fs::metadata(&layer).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // The new pod has `data` only; `cache` is not placed.
    let placed_dir = volume_dir(&target, "new", "data");
    let placed = place(&layer, &target, "new", Owners::Volume, |_| true).unwrap();
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
    assert!(
        place(&layer, &target, "new", Owners::Volume, |_| false)
            .unwrap()
            .is_empty()
    );
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
    assert!(place(&layer, &pods, "new", Owners::Volume, |_| true).is_err());
    assert!(!outside.join("pwned").exists());
}

/// The entries of the tar at `path`: name, type and data.
fn entries(path: &Path) -> Vec<(String, tar::EntryType, Vec<u8>)> {
    let mut archive = tar::Archive::new(File::open(path).unwrap());
    let mut found = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        found.push((name, kind, data));
    }
    found
}

#[test]
fn capture_keeps_links_as_links_and_leaves_out_what_holds_no_data() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let data = volume_dir(&pods, "p", "data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("file"), "own").unwrap();
    symlink("file", data.join("latest")).unwrap();
    symlink("../file", data.join("sub/up")).unwrap();
    fs::hard_link(data.join("file"), data.join("twin")).unwrap();
    // A fifo would block a reader; a device's driver would run when opened.
    let dir = open_volume(&data).unwrap();
    let fifo = rustix::fs::FileType::Fifo;
    rustix::fs::mknodat(&dir, "fifo", fifo, Mode::from_raw_mode(0o600), 0).unwrap();
    let layer = tmp.path().join("volumes.tar");
    capture(&pods, "p", &["data".into()], &layer, 1 << 20).unwrap();

    let mut found = entries(&layer);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let names: Vec<_> = found.iter().map(|(n, k, _)| (n.as_str(), *k)).collect();
    // Regular files and directories only: containerd restores from nothing else.
    use tar::EntryType::{Directory, Regular};
    assert_eq!(
        names,
        [
            ("checkpointing-volumes/.links", Regular),
            ("checkpointing-volumes/data", Directory),
            ("checkpointing-volumes/data/file", Regular),
            ("checkpointing-volumes/data/sub", Directory),
            ("checkpointing-volumes/data/twin", Regular),
        ]
    );
    let meta = fs::symlink_metadata(data.join("latest")).unwrap();
    let (uid, gid) = (meta.uid(), meta.gid());
    assert_eq!(
        String::from_utf8_lossy(&found[0].2),
        format!(
            "checkpointing-volumes/data/latest\0file\0{uid}\0{gid}\0\
             checkpointing-volumes/data/sub/up\0../file\0{uid}\0{gid}\0"
        ),
        "the links, listed"
    );
    assert!(
        found[1..]
            .iter()
            .all(|(_, _, d)| d.is_empty() || d == b"own")
    );
}

/// A list of links is checked as links are: one out of its volume, or a list that is not one,
/// fails the whole layer before anything is placed.
#[test]
fn a_list_of_links_out_of_the_volume_or_malformed_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let target = volume_dir(&pods, "new", "data");
    for (list, refusal) in [
        (
            &b"checkpointing-volumes/data/x\0/etc/shadow\x000\x000\0"[..],
            "out of its volume",
        ),
        (
            &b"checkpointing-volumes/data/x\0../..\x000\x000\0"[..],
            "out of its volume",
        ),
        (
            &b"checkpointing-volumes/data/x\0file\0"[..],
            "malformed list of links",
        ),
        (
            &b"checkpointing-volumes/../x\0file\x000\x000\0"[..],
            "not under",
        ),
    ] {
        let layer = tmp.path().join("links.tar");
        let mut tar = tar::Builder::new(fs::File::create(&layer).unwrap());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(list.len() as u64);
        header.set_mode(0o600);
        tar.append_data(&mut header, "checkpointing-volumes/.links", list)
            .unwrap();
        tar.finish().unwrap();
        drop(tar);
        let err = place(&layer, &pods, "new", Owners::Volume, |_| true).unwrap_err();
        assert!(err.to_string().contains(refusal), "{err}");
        assert_eq!(fs::read_dir(&target).unwrap().count(), 0, "nothing placed");
    }
}

/// No node would place a link out of its volume: the capture fails, naming it, and leaves
/// nothing, instead of a checkpoint whose restore fails later.
#[test]
fn capture_refuses_a_link_out_of_its_volume() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let data = volume_dir(&pods, "p", "data");
    fs::write(data.join("file"), "own").unwrap();
    let layer = tmp.path().join("volumes.tar");
    for (name, target) in [("abs", "/etc/shadow"), ("up", "../../..")] {
        symlink(target, data.join(name)).unwrap();
        let err = capture(&pods, "p", &["data".into()], &layer, 1 << 20).unwrap_err();
        assert!(matches!(err, Error::Escape { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains(&format!("data/{name}")) && text.contains(target),
            "{text}"
        );
        assert!(!layer.exists() && !layer.with_extension("partial").exists());
        fs::remove_file(data.join(name)).unwrap();
    }
}

#[test]
fn capture_stops_at_its_limit_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let data = volume_dir(&pods, "p", "data");
    fs::write(data.join("big"), vec![7u8; 64 << 10]).unwrap();
    let layer = tmp.path().join("volumes.tar");
    let err = capture(&pods, "p", &["data".into()], &layer, 32 << 10).unwrap_err();
    assert!(
        matches!(err, Error::TooLarge { limit } if limit == 32 << 10),
        "{err}"
    );
    assert!(err.to_string().contains("32 KiB"), "{err}");
    assert!(!layer.exists() && !layer.with_extension("partial").exists());
    // Many small files count too: headers are bytes of the tar.
    fs::remove_file(data.join("big")).unwrap();
    for i in 0..100 {
        fs::write(data.join(format!("f{i}")), "x").unwrap();
    }
    let err = capture(&pods, "p", &["data".into()], &layer, 32 << 10).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    capture(&pods, "p", &["data".into()], &layer, 1 << 20).unwrap();
}

#[test]
fn capture_refuses_a_tree_too_deep_to_walk() {
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let mut dir = volume_dir(&pods, "p", "data");
    for _ in 0..=MAX_DEPTH {
        dir.push("d");
    }
    fs::create_dir_all(&dir).unwrap();
    let layer = tmp.path().join("volumes.tar");
    let err = capture(&pods, "p", &["data".into()], &layer, 1 << 20).unwrap_err();
    assert!(matches!(err, Error::TooDeep { .. }), "{err}");
}

/// A container that swaps a directory of its volume for a link to the node's files while
/// noded copies the volume: no copy may hold the node's files.
#[test]
fn a_racing_container_never_gets_the_nodes_files_into_a_capture() {
    const SECRET: &[u8] = b"node-secret-3f9c1d7e";
    let tmp = tempfile::tempdir().unwrap();
    let pods = tmp.path().join("pods");
    let data = volume_dir(&pods, "racer", "data");
    let outside = tmp.path().join("outside");
    fs::create_dir_all(&outside).unwrap();
    for name in ["secret", "token", "key"] {
        fs::write(outside.join(name), SECRET).unwrap();
    }
    let sub = data.join("sub");
    fs::create_dir_all(&sub).unwrap();
    for i in 0..2 {
        fs::write(sub.join(format!("own-{i}")), b"the pod's own").unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, sub, aside) = (stop.clone(), sub.clone(), data.join("sub.tmp"));
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let _ = fs::rename(&sub, &aside);
                let _ = symlink(&outside, &sub);
                // Half the time a link, half a directory: the attacker picks its timing.
                std::thread::sleep(Duration::from_micros(100));
                let _ = fs::remove_file(&sub);
                let _ = fs::rename(&aside, &sub);
                std::thread::sleep(Duration::from_micros(100));
                swaps += 1;
            }
            swaps
        })
    };
    let (mut taken, mut leaked) = (0, 0);
    for i in 0..300 {
        let dest = tmp.path().join(format!("volumes-{i}.tar"));
        if capture(&pods, "racer", &["data".into()], &dest, 1 << 20).is_ok() {
            taken += 1;
            entries(&dest); // whole and readable, whatever the files did meanwhile
            let tar = fs::read(&dest).unwrap();
            if tar.windows(SECRET.len()).any(|w| w == SECRET) {
                leaked += 1;
            }
            fs::remove_file(&dest).unwrap();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = attacker.join().unwrap();
    println!("racing container: {taken} of 300 captures completed, {leaked} leaked, {swaps} swaps");
    assert!(taken > 0, "no capture completed: the test proves nothing");
    assert_eq!(
        leaked, 0,
        "{leaked} of {taken} captures hold the node's files"
    );
}
