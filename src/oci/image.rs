//! What a checkpoint image is made of: its annotations, config and manifest. Pure.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, DescriptorBuilder, Digest, ImageConfiguration,
    ImageConfigurationBuilder, ImageManifest, ImageManifestBuilder, MediaType, Os, RootFsBuilder,
    Sha256Digest,
};

use super::{OciError, io_err, spec_err};
use crate::digest;
use crate::names::checkpoint_image as ann;
use crate::names::machine_arch;
use crate::runtime::RuntimeKind;

/// SHA-256 digest and size of a file, read once in large chunks.
pub fn sha256_file(path: &Path) -> Result<(Sha256Digest, u64), OciError> {
    let file = File::open(path).map_err(io_err("opening", path))?;
    digest::sha256_read(file).map_err(io_err("reading", path))
}

/// Who and what a checkpoint image restores; becomes the manifest annotations.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointMeta {
    pub container: String,
    pub pod: String,
    pub namespace: String,
    pub rootfs_image_name: String,
    pub rootfs_image_id: String,
    pub runtime_name: String,
    pub runtime_version: String,
    /// RFC 3339 time of the checkpoint.
    pub created: String,
}

/// The manifest annotations every runtime restores on, plus checkpointctl's metadata keys.
pub fn checkpoint_annotations(meta: &CheckpointMeta) -> HashMap<String, String> {
    RuntimeKind::ALL
        .map(|kind| (kind.restore_annotation(), &meta.container))
        .into_iter()
        .chain([
            (ann::POD_NAME, &meta.pod),
            (ann::POD_NAMESPACE, &meta.namespace),
            (ann::ROOTFS_IMAGE_NAME, &meta.rootfs_image_name),
            (ann::ROOTFS_IMAGE_ID, &meta.rootfs_image_id),
            (ann::RUNTIME_NAME, &meta.runtime_name),
            (ann::RUNTIME_VERSION, &meta.runtime_version),
        ])
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .chain([(ann::ENGINE_NAME.to_owned(), "noded".to_owned())])
        .collect()
}

/// Image config for a checkpoint image whose layers are `layers` (uncompressed, so their diff
/// ids are their digests). `labels` repeat the manifest annotations: the runtimes show a
/// config's labels (`crictl inspecti`), not a manifest's annotations.
pub fn checkpoint_config(
    layers: &[Sha256Digest],
    created: &str,
    labels: HashMap<String, String>,
) -> Result<ImageConfiguration, OciError> {
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(
            layers
                .iter()
                .map(|l| Digest::from(l.clone()).to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(spec_err("rootfs"))?;
    ImageConfigurationBuilder::default()
        .architecture(Arch::from(machine_arch()))
        .os(Os::Linux)
        .created(created.to_owned())
        .config(
            ConfigBuilder::default()
                .labels(labels)
                .build()
                .map_err(spec_err("image config labels"))?,
        )
        .rootfs(rootfs)
        .build()
        .map_err(spec_err("image config"))
}

pub(super) fn descriptor(
    media_type: MediaType,
    digest: Sha256Digest,
    size: u64,
) -> Result<Descriptor, OciError> {
    DescriptorBuilder::default()
        .media_type(media_type)
        .digest(Digest::from(digest))
        .size(size)
        .build()
        .map_err(spec_err("descriptor"))
}

/// The manifest of a checkpoint image (always OCI, never Docker v2s2): the archive first.
pub fn checkpoint_manifest(
    config: Descriptor,
    layers: Vec<Descriptor>,
    annotations: HashMap<String, String>,
) -> Result<ImageManifest, OciError> {
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(layers)
        .annotations(annotations)
        .build()
        .map_err(spec_err("manifest"))
}

/// A checkpoint's emptyDir volumes as a tar (entries `<prefix>/<volume>/…`), hashed: the
/// image's second layer, annotated [`ann::VOLUMES_LAYER`] so it is told from the archive.
#[derive(Debug, Clone)]
pub struct VolumesLayer {
    pub path: PathBuf,
    pub digest: Sha256Digest,
    pub size: u64,
}
