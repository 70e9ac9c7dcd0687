//! Placing layers that try to reach outside their volume, or to leave setuid files behind.

use super::*;
use rustix::fs::{Gid, Uid};
use std::os::unix::fs::MetadataExt;
use tar::{EntryType, Header};

/// A volumes layer being written; names are beneath `checkpointing-volumes/`.
struct Layer(tar::Builder<File>);

impl Layer {
    fn new(path: &Path) -> Self {
        Self(tar::Builder::new(File::create(path).unwrap()))
    }

    fn header(kind: EntryType, mode: u32) -> Header {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(0);
        header
    }

    fn entry(self, kind: EntryType, name: &str, mode: u32, data: &[u8]) -> Self {
        self.entry_of((0, 0), kind, name, mode, data)
    }

    /// An entry recording `(uid, gid)` as its owner.
    fn entry_of(
        mut self,
        (uid, gid): (u64, u64),
        kind: EntryType,
        name: &str,
        mode: u32,
        data: &[u8],
    ) -> Self {
        let mut header = Self::header(kind, mode);
        header.set_size(data.len() as u64);
        header.set_uid(uid);
        header.set_gid(gid);
        let name = Path::new(PREFIX).join(name);
        self.0.append_data(&mut header, name, data).unwrap();
        self
    }

    fn dir(self, name: &str, mode: u32) -> Self {
        self.entry(EntryType::Directory, name, mode, b"")
    }

    fn file(self, name: &str, mode: u32, data: &[u8]) -> Self {
        self.entry(EntryType::Regular, name, mode, data)
    }

    fn link(self, kind: EntryType, name: &str, target: &str) -> Self {
        self.link_of((0, 0), kind, name, target)
    }

    fn link_of(
        mut self,
        (uid, gid): (u64, u64),
        kind: EntryType,
        name: &str,
        target: &str,
    ) -> Self {
        let mut header = Self::header(kind, 0o777);
        header.set_uid(uid);
        header.set_gid(gid);
        let name = Path::new(PREFIX).join(name);
        self.0.append_link(&mut header, name, target).unwrap();
        self
    }

    /// A file entry named `name` as is: the tar crate refuses to write `..` itself.
    fn raw(mut self, name: &str, data: &[u8]) -> Self {
        let mut header = Self::header(EntryType::Regular, 0o644);
        header.set_size(data.len() as u64);
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    fn finish(mut self) {
        self.0.finish().unwrap();
    }
}

/// Pods directory with pod `new`'s volume `data` made, a directory outside holding `victim`,
/// and where a layer goes.
fn setup(tmp: &Path) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    let pods = tmp.join("pods");
    let data = volume_dir(&pods, "new", "data");
    let outside = tmp.join("outside");
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("victim"), "keep").unwrap();
    (pods, data, outside, tmp.join("layer.tar"))
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A name, and a layer given the outside directory's absolute path.
type Case = (&'static str, fn(Layer, &str) -> Layer);

#[test]
fn placement_refuses_links_devices_and_paths_out_of_the_volume() {
    // From `data/sub`, up to the temporary directory: sub, data, empty-dir, volumes, new, pods.
    const UP: &str = "../../../../../../outside";
    // Each bad entry, then one that would be written through it were it placed.
    let cases: [Case; 7] = [
        ("hard link", |l, outside| {
            let l = l.link(EntryType::Link, "data/h", &format!("{outside}/victim"));
            l.file("data/h", 0o644, b"evil")
        }),
        ("absolute link", |l, outside| {
            let l = l.link(EntryType::Symlink, "data/abs", outside);
            l.file("data/abs/pwned", 0o644, b"evil")
        }),
        ("escaping link", |l, _| {
            let l = l.dir("data/sub", 0o755);
            let l = l.link(EntryType::Symlink, "data/sub/up", UP);
            l.file("data/sub/up/pwned", 0o644, b"evil")
        }),
        ("escaping lexically", |l, _| {
            let l = l.dir("data/sub", 0o755);
            l.link(EntryType::Symlink, "data/sub/up", "../a/../../x")
        }),
        ("escaping path", |l, _| {
            l.raw(
                "checkpointing-volumes/data/../../../../../outside/pwned",
                b"evil",
            )
        }),
        ("device", |l, _| {
            l.entry(EntryType::Char, "data/null", 0o666, b"")
        }),
        ("fifo", |l, _| {
            l.entry(EntryType::Fifo, "data/fifo", 0o666, b"")
        }),
    ];
    for (case, build) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let (pods, data, outside, layer) = setup(tmp.path());
        let good = Layer::new(&layer).file("data/good", 0o644, b"ok");
        build(good, outside.to_str().unwrap()).finish();
        let err = place(&layer, &pods, "new", Owners::Volume, |_| true).unwrap_err();
        let expected = match case {
            "absolute link" | "escaping link" | "escaping lexically" => {
                matches!(err, Error::Escape { .. })
            }
            "escaping path" => matches!(err, Error::Stray { .. }),
            _ => matches!(err, Error::Refused { .. }),
        };
        assert!(expected, "{case}: {err}");
        assert_eq!(listing(&outside), ["victim"], "{case}");
        assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "keep");
        // Checked whole before anything is placed.
        assert!(listing(&data).is_empty(), "{case}");
    }
}

#[test]
fn links_that_stay_in_the_volume_are_placed() {
    let tmp = tempfile::tempdir().unwrap();
    let (pods, data, _, layer) = setup(tmp.path());
    Layer::new(&layer)
        .dir("data/sub", 0o755)
        .link(EntryType::Symlink, "data/sub/up", "../f")
        .link(EntryType::Symlink, "data/sub/around", "a/../../sub/./b")
        .finish();
    place(&layer, &pods, "new", Owners::Volume, |_| true).unwrap();
    assert_eq!(
        fs::read_link(data.join("sub/up")).unwrap(),
        Path::new("../f")
    );
    let around = fs::read_link(data.join("sub/around")).unwrap();
    assert_eq!(around, Path::new("a/../../sub/./b"));
}

/// [`setup`], in a temporary directory, when this runs as root (else ownership cannot be
/// given away); the volume's directory owned as the kubelet makes it for a pod with an
/// fsGroup: 4321:8765, setgid.
fn kubelet_owned() -> Option<(tempfile::TempDir, PathBuf, PathBuf, PathBuf)> {
    let tmp = tempfile::tempdir().unwrap();
    if fs::metadata(tmp.path()).unwrap().uid() != 0 {
        println!("not root: ownership cannot be given away; skipped");
        return None;
    }
    let (pods, data, _, layer) = setup(tmp.path());
    rustix::fs::chown(&data, Some(Uid::from_raw(4321)), Some(Gid::from_raw(8765))).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o2777)).unwrap();
    Some((tmp, pods, data, layer))
}

/// Owner, group and mode bits of `path` beneath `dir`, a link itself rather than its target.
fn owned_as(dir: &Path, path: &str) -> (u32, u32, u32) {
    let meta = fs::symlink_metadata(dir.join(path)).unwrap();
    (meta.uid(), meta.gid(), meta.mode() & 0o7777)
}

#[test]
fn placed_files_lose_setuid_and_belong_to_the_pod() {
    let Some((_tmp, pods, data, layer)) = kubelet_owned() else {
        return;
    };
    Layer::new(&layer)
        .dir("data", 0o700)
        .dir("data/bin", 0o3777)
        .file("data/bin/tool", 0o6755, b"#!/bin/sh\n")
        .link(EntryType::Symlink, "data/tool", "bin/tool")
        .file("data/implied/file", 0o640, b"x")
        .finish();
    place(&layer, &pods, "new", Owners::Volume, |_| true).unwrap();
    let owner = |path: &str| owned_as(&data, path);
    // The kubelet's directory keeps its mode and owner; the layer's says root and 0700.
    assert_eq!(owner(""), (4321, 8765, 0o2777));
    assert_eq!(owner("bin"), (4321, 8765, 0o1777));
    assert_eq!(owner("bin/tool"), (4321, 8765, 0o755));
    assert_eq!(owner("tool").0, 4321);
    assert_eq!(owner("implied"), (4321, 8765, 0o755));
    assert_eq!(owner("implied/file"), (4321, 8765, 0o640));

    // A pod running as user 1000 (fsGroup 2000) owns all it gets, links and implied
    // directories too; its volume's own directory stays the kubelet's.
    let other = volume_dir(&pods, "other", "data");
    let pod = Owners::Pod {
        uid: 1000,
        gid: 2000,
    };
    place(&layer, &pods, "other", pod, |_| true).unwrap();
    for path in ["bin", "bin/tool", "tool", "implied", "implied/file"] {
        let (uid, gid, _) = owned_as(&other, path);
        assert_eq!((uid, gid), (1000, 2000), "{path}");
    }
    assert_eq!(fs::metadata(&other).unwrap().uid(), 0);
}

#[test]
fn a_pod_that_may_run_as_root_gets_the_recorded_owners_without_setuid() {
    let Some((_tmp, pods, data, layer)) = kubelet_owned() else {
        return;
    };
    let nobody = u64::from(u32::MAX);
    Layer::new(&layer)
        .entry_of((0, 0), EntryType::Directory, "data/root", 0o700, b"")
        .entry_of(
            (1000, 1000),
            EntryType::Regular,
            "data/root/app",
            0o6755,
            b"x",
        )
        .link_of((1000, 1000), EntryType::Symlink, "data/app", "root/app")
        .entry_of((42, 43), EntryType::Regular, "data/implied/f", 0o600, b"y")
        .entry_of(
            (nobody, 1 << 40),
            EntryType::Regular,
            "data/odd",
            0o644,
            b"z",
        )
        .finish();
    place(&layer, &pods, "new", Owners::Recorded, |_| true).unwrap();
    let owner = |path: &str| owned_as(&data, path);
    assert_eq!(owner("root"), (0, 0, 0o700));
    assert_eq!(owner("root/app"), (1000, 1000, 0o755), "no setuid, setgid");
    assert_eq!(owner("app").0, 1000);
    assert_eq!(owner("implied/f"), (42, 43, 0o600));
    // What the layer does not record (a directory it implies) is the volume owner's.
    assert_eq!(owner("implied"), (4321, 8765, 0o755));
    // Ids no file can have become nobody's, never "unchanged" (root's).
    assert_eq!(owner("odd"), (65534, 65534, 0o644));
    assert_eq!(owner("").0, 4321, "the kubelet's directory stays");
}

#[test]
fn links_planted_in_the_target_are_replaced_or_fail_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (pods, data, outside, layer) = setup(tmp.path());
    // Made by a container of the pod that already runs, say.
    symlink(&outside, data.join("sub")).unwrap();
    symlink(outside.join("victim"), data.join("file")).unwrap();

    Layer::new(&layer).file("data/file", 0o644, b"new").finish();
    place(&layer, &pods, "new", Owners::Volume, |_| true).unwrap();
    assert_eq!(fs::read_to_string(data.join("file")).unwrap(), "new");
    assert!(fs::symlink_metadata(data.join("file")).unwrap().is_file());
    assert_eq!(fs::read_to_string(outside.join("victim")).unwrap(), "keep");

    for layered in [
        Layer::new(&layer).file("data/sub/file", 0o644, b"evil"),
        Layer::new(&layer)
            .dir("data/sub", 0o755)
            .file("data/sub/f", 0o644, b"evil"),
    ] {
        layered.finish();
        let err = place(&layer, &pods, "new", Owners::Volume, |_| true).unwrap_err();
        assert!(matches!(err, Error::Place { .. }), "{err}");
        assert_eq!(listing(&outside), ["victim"]);
    }
}
