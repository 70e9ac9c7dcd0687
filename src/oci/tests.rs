//! Checkpoint images in a temporary layout.

use super::*;
use oci_spec::image::ImageConfiguration;

fn meta() -> CheckpointMeta {
    CheckpointMeta {
        container: "counter".into(),
        pod: "stateful-app".into(),
        namespace: "default".into(),
        rootfs_image_name: "docker.io/library/busybox:latest".into(),
        rootfs_image_id: "sha256:abc".into(),
        runtime_name: "containerd".into(),
        runtime_version: "v2.1.9".into(),
        created: "2026-11-24T10:00:00Z".into(),
    }
}

fn archive(dir: &Path, name: &str, content: &[u8]) -> (PathBuf, Sha256Digest, u64) {
    let path = dir.join(name);
    fs::write(&path, content).unwrap();
    let (digest, size) = sha256_file(&path).unwrap();
    (path, digest, size)
}

#[test]
fn annotations_mark_the_image_for_both_runtimes() {
    let a = checkpoint_annotations(&meta());
    assert_eq!(a[ann::CRIO_CONTAINER_NAME], "counter");
    assert_eq!(a[ann::CONTAINER_NAME], "counter");
    assert_eq!(
        a[ann::ROOTFS_IMAGE_NAME],
        "docker.io/library/busybox:latest"
    );
    assert_eq!(a[ann::POD_NAMESPACE], "default");
    let empty = checkpoint_annotations(&CheckpointMeta {
        container: "c".into(),
        ..Default::default()
    });
    assert!(
        !empty.contains_key(ann::ROOTFS_IMAGE_ID),
        "empty values are left out"
    );
}

#[test]
fn sha256_matches_a_known_vector() {
    let dir = tempfile::tempdir().unwrap();
    let (_, digest, size) = archive(dir.path(), "abc", b"abc");
    assert_eq!(
        digest.digest(),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert_eq!(size, 3);
}

#[test]
fn checkpoint_image_is_linked_tagged_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let layout = ImageLayout::open(dir.path().join("oci")).unwrap();
    let (path, digest, size) = archive(dir.path(), "a.tar", b"pretend this is a checkpoint tar");
    let desc = layout
        .add_checkpoint(&path, &digest, size, None, &meta(), "uid-1")
        .unwrap();
    assert_eq!(desc.media_type(), &MediaType::ImageManifest);
    assert_eq!(
        layout.resolve("uid-1").unwrap().unwrap().digest(),
        desc.digest()
    );

    let manifest = layout.verify("uid-1").unwrap();
    assert_eq!(manifest.layers().len(), 1);
    assert_eq!(manifest.layers()[0].media_type(), &MediaType::ImageLayer);
    assert_eq!(manifest.config().media_type(), &MediaType::ImageConfig);
    let layer_blob = layout.blob_path(manifest.layers()[0].digest());
    assert_eq!(
        fs::metadata(&layer_blob).unwrap().ino(),
        fs::metadata(&path).unwrap().ino(),
        "the archive is the layer blob, not a copy"
    );
    let config =
        ImageConfiguration::from_file(layout.blob_path(manifest.config().digest())).unwrap();
    assert_eq!(
        config.rootfs().diff_ids(),
        &vec![Digest::from(digest).to_string()]
    );
    assert_eq!(
        config.config().as_ref().and_then(|c| c.labels().clone()),
        Some(checkpoint_annotations(&meta())),
        "the config's labels repeat the manifest's annotations"
    );
    // The machine's architecture (its memory and code), as Kubernetes and OCI spell it.
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(config.architecture().to_string(), arch);
}

#[test]
fn volumes_are_the_second_layer_told_by_its_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let layout = ImageLayout::open(dir.path().join("oci")).unwrap();
    let (path, digest, size) = archive(dir.path(), "a.tar", b"the archive");
    let (vpath, vdigest, vsize) = archive(dir.path(), "a.volumes.tar", b"the volumes");
    let volumes = VolumesLayer {
        path: vpath.clone(),
        digest: vdigest.clone(),
        size: vsize,
    };
    layout
        .add_checkpoint(&path, &digest, size, Some(&volumes), &meta(), "v")
        .unwrap();
    let manifest = layout.verify("v").unwrap();
    let layers = manifest.layers();
    assert_eq!(layers.len(), 2);
    assert_eq!(
        layers[0].digest(),
        &Digest::from(digest.clone()),
        "the archive first"
    );
    assert!(layers[0].annotations().is_none());
    assert_eq!(layers[1].digest(), &Digest::from(vdigest.clone()));
    assert_eq!(
        layers[1].annotations().as_ref().unwrap()[ann::VOLUMES_LAYER],
        "volumes"
    );
    assert_eq!(
        fs::metadata(layout.blob_path(layers[1].digest()))
            .unwrap()
            .ino(),
        fs::metadata(&vpath).unwrap().ino()
    );
    let config =
        ImageConfiguration::from_file(layout.blob_path(manifest.config().digest())).unwrap();
    assert_eq!(
        config.rootfs().diff_ids(),
        &vec![
            Digest::from(digest).to_string(),
            Digest::from(vdigest).to_string()
        ]
    );
}

#[test]
fn a_tampered_blob_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let layout = ImageLayout::open(dir.path().join("oci")).unwrap();
    let (path, digest, size) = archive(dir.path(), "a.tar", b"original bytes");
    layout
        .add_checkpoint(&path, &digest, size, None, &meta(), "t")
        .unwrap();
    fs::write(&path, b"tampered bytes").unwrap(); // same inode as the layer blob
    assert!(matches!(layout.verify("t"), Err(OciError::Corrupt { .. })));
    assert!(matches!(
        layout.verify("nope"),
        Err(OciError::UnknownTag { .. })
    ));
}

#[test]
fn removing_one_image_keeps_the_others_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let layout = ImageLayout::open(dir.path().join("oci")).unwrap();
    let (a, da, sa) = archive(dir.path(), "a.tar", b"first");
    let (b, db, sb) = archive(dir.path(), "b.tar", b"second");
    layout
        .add_checkpoint(&a, &da, sa, None, &meta(), "a")
        .unwrap();
    layout
        .add_checkpoint(&b, &db, sb, None, &meta(), "b")
        .unwrap();
    layout.remove("a").unwrap();
    layout.remove("a").unwrap(); // idempotent
    assert!(layout.resolve("a").unwrap().is_none());
    assert!(!layout.blob_path(&da.into()).exists());
    layout.verify("b").unwrap();
    layout.remove("b").unwrap();
    let left = fs::read_dir(dir.path().join("oci/blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(left, 0, "no blob outlives its last image");
}

/// Copies the blobs of `tag` in `from` into `to`'s ingest directory, as a download would.
fn stage(
    from: &ImageLayout,
    to: &ImageLayout,
    tag: &str,
) -> (Digest, Vec<u8>, Vec<(Digest, PathBuf)>) {
    let desc = from.resolve(tag).unwrap().unwrap();
    let manifest = from.verify(tag).unwrap();
    fs::create_dir_all(to.ingest_dir()).unwrap();
    let staged = std::iter::once(manifest.config())
        .chain(manifest.layers())
        .map(|d| {
            let path = to
                .ingest_dir()
                .join(format!("{}.partial", d.digest().digest()));
            fs::copy(from.blob_path(d.digest()), &path).unwrap();
            (d.digest().clone(), path)
        })
        .collect();
    let bytes = fs::read(from.blob_path(desc.digest())).unwrap();
    (desc.digest().clone(), bytes, staged)
}

#[test]
fn an_imported_image_is_tagged_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let a = ImageLayout::open(dir.path().join("a")).unwrap();
    let b = ImageLayout::open(dir.path().join("b")).unwrap();
    let (path, digest, size) = archive(dir.path(), "a.tar", b"checkpoint bytes");
    a.add_checkpoint(&path, &digest, size, None, &meta(), "uid")
        .unwrap();
    let (manifest_digest, bytes, staged) = stage(&a, &b, "uid");
    let desc = b.import("uid", &manifest_digest, &bytes, &staged).unwrap();
    assert_eq!(desc.digest(), &manifest_digest);
    assert_eq!(b.tags().unwrap(), ["uid"]);
    b.verify("uid").unwrap();
    assert_eq!(
        fs::read_dir(b.ingest_dir()).unwrap().count(),
        0,
        "staged files moved"
    );

    // Again, with the blobs already in place: the staged copies are dropped.
    let (_, _, staged) = stage(&a, &b, "uid");
    b.import("uid", &manifest_digest, &bytes, &staged).unwrap();
    assert_eq!(fs::read_dir(b.ingest_dir()).unwrap().count(), 0);
    assert_eq!(b.read_index().unwrap().manifests().len(), 1);
}

#[test]
fn import_refuses_a_wrong_manifest_or_a_missing_blob() {
    let dir = tempfile::tempdir().unwrap();
    let a = ImageLayout::open(dir.path().join("a")).unwrap();
    let b = ImageLayout::open(dir.path().join("b")).unwrap();
    let (path, digest, size) = archive(dir.path(), "a.tar", b"checkpoint bytes");
    a.add_checkpoint(&path, &digest, size, None, &meta(), "uid")
        .unwrap();
    let (manifest_digest, mut bytes, staged) = stage(&a, &b, "uid");

    let e = b
        .import("uid", &manifest_digest, &bytes, &staged[..1])
        .unwrap_err();
    assert!(matches!(e, OciError::MissingBlob { .. }), "{e}");
    assert!(b.resolve("uid").unwrap().is_none());

    bytes.push(b' ');
    let e = b.import("uid", &manifest_digest, &bytes, &[]).unwrap_err();
    assert!(matches!(e, OciError::Corrupt { .. }), "{e}");
    assert!(b.tags().unwrap().is_empty());
}

#[test]
fn retagging_replaces_the_old_entry() {
    let dir = tempfile::tempdir().unwrap();
    let layout = ImageLayout::open(dir.path().join("oci")).unwrap();
    let (a, da, sa) = archive(dir.path(), "a.tar", b"first");
    layout
        .add_checkpoint(&a, &da, sa, None, &meta(), "t")
        .unwrap();
    layout
        .add_checkpoint(&a, &da, sa, None, &meta(), "t")
        .unwrap();
    assert_eq!(layout.read_index().unwrap().manifests().len(), 1);
}

#[test]
fn an_empty_layout_is_removed_and_one_holding_an_image_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let empty = ImageLayout::open(dir.path().join("empty")).unwrap();
    assert!(empty.remove_if_empty().unwrap());
    assert!(!dir.path().join("empty").exists());

    let root = dir.path().join("full");
    let layout = ImageLayout::open(&root).unwrap();
    let blob = root.join("blobs/sha256/00");
    std::fs::write(&blob, b"x").unwrap();
    assert!(!layout.remove_if_empty().unwrap());
    assert!(blob.exists() && root.join("index.json").exists());
}
