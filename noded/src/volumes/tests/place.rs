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

    fn entry(mut self, kind: EntryType, name: &str, mode: u32, data: &[u8]) -> Self {
        let mut header = Self::header(kind, mode);
        header.set_size(data.len() as u64);
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

    fn link(mut self, kind: EntryType, name: &str, target: &str) -> Self {
        let mut header = Self::header(kind, 0o777);
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
        let err = place(&layer, &pods, "new", None, |_| true).unwrap_err();
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
    place(&layer, &pods, "new", None, |_| true).unwrap();
    assert_eq!(
        fs::read_link(data.join("sub/up")).unwrap(),
        Path::new("../f")
    );
    let around = fs::read_link(data.join("sub/around")).unwrap();
    assert_eq!(around, Path::new("a/../../sub/./b"));
}

#[test]
fn placed_files_lose_setuid_and_belong_to_the_pod() {
    let tmp = tempfile::tempdir().unwrap();
    if fs::metadata(tmp.path()).unwrap().uid() != 0 {
        println!("not root: ownership cannot be given away; skipped");
        return;
    }
    let (pods, data, _, layer) = setup(tmp.path());
    // As the kubelet makes it for a pod with an fsGroup.
    rustix::fs::chown(&data, Some(Uid::from_raw(4321)), Some(Gid::from_raw(8765))).unwrap();
    fs::set_permissions(&data, fs::Permissions::from_mode(0o2777)).unwrap();
    Layer::new(&layer)
        .dir("data", 0o700)
        .dir("data/bin", 0o3777)
        .file("data/bin/tool", 0o6755, b"#!/bin/sh\n")
        .link(EntryType::Symlink, "data/tool", "bin/tool")
        .file("data/implied/file", 0o640, b"x")
        .finish();
    place(&layer, &pods, "new", None, |_| true).unwrap();
    let owner = |path: &str| {
        let meta = fs::symlink_metadata(data.join(path)).unwrap();
        (meta.uid(), meta.gid(), meta.mode() & 0o7777)
    };
    // The kubelet's directory keeps its mode and owner; the layer's says root and 0700.
    assert_eq!(owner(""), (4321, 8765, 0o2777));
    assert_eq!(owner("bin"), (4321, 8765, 0o1777));
    assert_eq!(owner("bin/tool"), (4321, 8765, 0o755));
    assert_eq!(owner("tool").0, 4321);
    assert_eq!(owner("implied"), (4321, 8765, 0o755));
    assert_eq!(owner("implied/file"), (4321, 8765, 0o640));

    let other = volume_dir(&pods, "other", "data");
    let pod = Ownership {
        uid: 1000,
        gid: 2000,
    };
    place(&layer, &pods, "other", Some(pod), |_| true).unwrap();
    let meta = fs::metadata(other.join("bin/tool")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 2000));
    assert_eq!(fs::metadata(&other).unwrap().uid(), 0);
}

#[test]
fn links_planted_in_the_target_are_replaced_or_fail_never_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let (pods, data, outside, layer) = setup(tmp.path());
    // Made by a container of the pod that already runs, say.
    symlink(&outside, data.join("sub")).unwrap();
    symlink(outside.join("victim"), data.join("file")).unwrap();

    Layer::new(&layer).file("data/file", 0o644, b"new").finish();
    place(&layer, &pods, "new", None, |_| true).unwrap();
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
        let err = place(&layer, &pods, "new", None, |_| true).unwrap_err();
        assert!(matches!(err, Error::Place { .. }), "{err}");
        assert_eq!(listing(&outside), ["victim"]);
    }
}
