//! Checkpoint images in a node-local OCI image layout.
//!
//! A checkpoint image is an OCI image manifest whose first layer is the checkpoint archive
//! itself (`application/vnd.oci.image.layer.v1.tar`, its files land at `/`), followed by the
//! pod's emptyDir volumes when any travel, a minimal config, and manifest annotations that
//! tell CRI-O and containerd to restore instead of start ([`image`]). Layers become blobs by
//! hard link: hashed once, never copied.

mod image;
pub use image::*;

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use std::sync::Mutex;

use oci_spec::image::{
    Descriptor, Digest, ImageIndex, ImageIndexBuilder, ImageManifest, MediaType, Sha256Digest,
};

use crate::digest;
use crate::names::checkpoint_image as ann;

/// Media type of an OCI image manifest, as registries send and accept it.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";

#[derive(Debug, thiserror::Error)]
pub enum OciError {
    #[error("{op} {}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("building OCI {what}")]
    Spec {
        what: &'static str,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error("blob {digest} is {found}, expected {expected}")]
    Corrupt {
        digest: String,
        expected: String,
        found: String,
    },
    #[error("no image tagged {tag:?} in {}", layout.display())]
    UnknownTag { tag: String, layout: PathBuf },
    #[error("blob {digest} named by manifest {manifest} is missing")]
    MissingBlob { digest: String, manifest: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> OciError {
    let path = path.to_path_buf();
    move |source| OciError::Io { op, path, source }
}

fn spec_err(what: &'static str) -> impl FnOnce(oci_spec::OciSpecError) -> OciError {
    move |source| OciError::Spec { what, source }
}

/// A node-local OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/`). Only one
/// process writes it; the lock serialises index updates against blob garbage collection.
#[derive(Debug)]
pub struct ImageLayout {
    root: PathBuf,
    lock: Mutex<()>,
}

impl ImageLayout {
    /// Opens the layout at `root`, creating an empty one if needed.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, OciError> {
        let root = root.into();
        let blobs = root.join("blobs/sha256");
        fs::create_dir_all(&blobs).map_err(io_err("creating", &blobs))?;
        let layout = Self {
            root,
            lock: Mutex::new(()),
        };
        let marker = layout.root.join("oci-layout");
        if !marker.exists() {
            layout.write_atomic(&marker, br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        }
        if !layout.index_path().exists() {
            layout.write_index(&empty_index()?)?;
        }
        Ok(layout)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the layout when it holds no image and no blob (its owner stops, and a node
    /// whose checkpoints are all gone keeps no trace of it). Returns whether it did; a layout
    /// with anything left in it stays whole.
    pub fn remove_if_empty(&self) -> Result<bool, OciError> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let blobs = self.root.join("blobs/sha256");
        let no_blobs = fs::read_dir(&blobs)
            .map_err(io_err("reading", &blobs))?
            .next()
            .is_none();
        if !no_blobs || !self.read_index()?.manifests().is_empty() {
            return Ok(false);
        }
        let ingest = self.ingest_dir();
        if ingest.exists()
            && fs::read_dir(&ingest)
                .map_err(io_err("reading", &ingest))?
                .next()
                .is_some()
        {
            return Ok(false);
        }
        fs::remove_dir_all(&self.root).map_err(io_err("removing", &self.root))?;
        Ok(true)
    }

    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(digest.algorithm().as_ref())
            .join(digest.digest())
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Writes `bytes` under a temporary name, fsyncs, then renames: readers never see a
    /// partial file.
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), OciError> {
        let tmp = path.with_extension("partial");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        file.write_all(bytes).map_err(io_err("writing", &tmp))?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
    }

    fn write_blob(&self, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor, OciError> {
        let digest = digest::sha256(bytes);
        let path = self.blob_path(&digest.clone().into());
        if !path.exists() {
            self.write_atomic(&path, bytes)?;
        }
        descriptor(media_type, digest, bytes.len() as u64)
    }

    pub fn read_index(&self) -> Result<ImageIndex, OciError> {
        let path = self.index_path();
        let file = File::open(&path).map_err(io_err("opening", &path))?;
        ImageIndex::from_reader(file).map_err(spec_err("index"))
    }

    fn write_index(&self, index: &ImageIndex) -> Result<(), OciError> {
        let bytes = index.to_string().map_err(spec_err("index"))?;
        self.write_atomic(&self.index_path(), bytes.as_bytes())
    }

    /// Makes `archive` (already hashed: `layer`, `size`) the first layer of a checkpoint image
    /// tagged `tag` (and `volumes`, if any, the second), replacing any image with that tag.
    /// Returns the manifest descriptor.
    pub fn add_checkpoint(
        &self,
        archive: &Path,
        layer: &Sha256Digest,
        size: u64,
        volumes: Option<&VolumesLayer>,
        meta: &CheckpointMeta,
        tag: &str,
    ) -> Result<Descriptor, OciError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        link_blob(archive, &self.blob_path(&layer.clone().into()))?;
        let mut diff_ids = vec![layer.clone()];
        let mut layers = vec![descriptor(MediaType::ImageLayer, layer.clone(), size)?];
        if let Some(v) = volumes {
            link_blob(&v.path, &self.blob_path(&v.digest.clone().into()))?;
            diff_ids.push(v.digest.clone());
            let mut desc = descriptor(MediaType::ImageLayer, v.digest.clone(), v.size)?;
            desc.set_annotations(Some(HashMap::from([(
                ann::VOLUMES_LAYER.to_owned(),
                "volumes".to_owned(),
            )])));
            layers.push(desc);
        }
        let annotations = checkpoint_annotations(meta);
        let config = checkpoint_config(&diff_ids, &meta.created, annotations.clone())?;
        let config = self.write_blob(
            MediaType::ImageConfig,
            config
                .to_string()
                .map_err(spec_err("image config"))?
                .as_bytes(),
        )?;
        let manifest = checkpoint_manifest(config, layers, annotations)?;
        let manifest_desc = self.write_blob(
            MediaType::ImageManifest,
            manifest
                .to_string()
                .map_err(spec_err("manifest"))?
                .as_bytes(),
        )?;
        self.tag(manifest_desc, tag)
    }

    /// Points `tag` at the manifest `desc`, replacing any image with that tag. Caller holds the
    /// lock.
    fn tag(&self, mut desc: Descriptor, tag: &str) -> Result<Descriptor, OciError> {
        desc.set_annotations(Some(HashMap::from([(
            ann::REF_NAME.to_owned(),
            tag.to_owned(),
        )])));
        let mut index = self.read_index()?;
        let mut manifests: Vec<Descriptor> = index
            .manifests()
            .iter()
            .filter(|d| tag_of(d) != Some(tag))
            .cloned()
            .collect();
        manifests.push(desc.clone());
        index.set_manifests(manifests);
        self.write_index(&index)?;
        Ok(desc)
    }

    /// Directory for blobs being downloaded: inside the layout, so a rename moves them into
    /// place, but outside `blobs/`, so garbage collection never sees a half-written one.
    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    /// Adds an image fetched from elsewhere under `tag`, replacing any image with that tag.
    /// `manifest` holds the manifest's bytes, which must hash to `digest`; `staged` lists blobs
    /// the caller has already downloaded *and verified* (normally under [`Self::ingest_dir`]):
    /// they are renamed into place, or dropped when the layout already has them. Every blob the
    /// manifest names must then be present. Returns the manifest descriptor.
    pub fn import(
        &self,
        tag: &str,
        digest: &Digest,
        manifest: &[u8],
        staged: &[(Digest, PathBuf)],
    ) -> Result<Descriptor, OciError> {
        let found = Digest::from(digest::sha256(manifest));
        if &found != digest {
            return Err(OciError::Corrupt {
                digest: digest.to_string(),
                expected: digest.to_string(),
                found: found.to_string(),
            });
        }
        let parsed = ImageManifest::from_reader(manifest).map_err(spec_err("manifest"))?;
        // Under the lock: garbage collection must not take a blob between its rename and the
        // index entry that keeps it alive.
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        for blob in std::iter::once(parsed.config()).chain(parsed.layers()) {
            let staged_here = staged.iter().any(|(d, _)| d == blob.digest());
            if !staged_here && !self.blob_path(blob.digest()).exists() {
                return Err(OciError::MissingBlob {
                    digest: blob.digest().to_string(),
                    manifest: digest.to_string(),
                });
            }
        }
        for (blob, path) in staged {
            let target = self.blob_path(blob);
            if target.exists() {
                fs::remove_file(path).map_err(io_err("removing", path))?;
            } else {
                fs::rename(path, &target).map_err(io_err("renaming into place", &target))?;
            }
        }
        let desc = self.write_blob(MediaType::ImageManifest, manifest)?;
        let blobs = self.root.join("blobs/sha256");
        File::open(&blobs)
            .and_then(|d| d.sync_all())
            .map_err(io_err("syncing", &blobs))?;
        self.tag(desc, tag)
    }

    /// Every tag in the index.
    pub fn tags(&self) -> Result<Vec<String>, OciError> {
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .filter_map(|d| tag_of(d).map(str::to_owned))
            .collect())
    }

    /// The manifest descriptor tagged `tag`.
    pub fn resolve(&self, tag: &str) -> Result<Option<Descriptor>, OciError> {
        Ok(self
            .read_index()?
            .manifests()
            .iter()
            .find(|d| tag_of(d) == Some(tag))
            .cloned())
    }

    /// Checks the digest and size of the manifest tagged `tag` and of every blob it names.
    pub fn verify(&self, tag: &str) -> Result<ImageManifest, OciError> {
        let desc = self.resolve(tag)?.ok_or_else(|| OciError::UnknownTag {
            tag: tag.to_owned(),
            layout: self.root.clone(),
        })?;
        self.verify_blob(&desc)?;
        let path = self.blob_path(desc.digest());
        let manifest = ImageManifest::from_file(&path).map_err(spec_err("manifest"))?;
        self.verify_blob(manifest.config())?;
        for layer in manifest.layers() {
            self.verify_blob(layer)?;
        }
        Ok(manifest)
    }

    fn verify_blob(&self, desc: &Descriptor) -> Result<(), OciError> {
        let (digest, size) = sha256_file(&self.blob_path(desc.digest()))?;
        let found = format!("{} ({size} bytes)", Digest::from(digest));
        let expected = format!("{} ({} bytes)", desc.digest(), desc.size());
        if found != expected {
            return Err(OciError::Corrupt {
                digest: desc.digest().to_string(),
                expected,
                found,
            });
        }
        Ok(())
    }

    /// Drops the image tagged `tag` and every blob no remaining image uses. Absent tags are fine
    /// (deletion is retried after crashes).
    pub fn remove(&self, tag: &str) -> Result<(), OciError> {
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.read_index()?;
        let (gone, kept): (Vec<Descriptor>, Vec<Descriptor>) = index
            .manifests()
            .iter()
            .cloned()
            .partition(|d| tag_of(d) == Some(tag));
        if !gone.is_empty() {
            index.set_manifests(kept);
            self.write_index(&index)?;
        }
        self.collect_garbage(&index)
    }

    fn collect_garbage(&self, index: &ImageIndex) -> Result<(), OciError> {
        let mut live = BTreeSet::new();
        for desc in index.manifests() {
            live.insert(desc.digest().digest().to_owned());
            // An unreadable manifest keeps nothing alive but must not abort collection.
            if let Ok(manifest) = ImageManifest::from_file(self.blob_path(desc.digest())) {
                live.insert(manifest.config().digest().digest().to_owned());
                live.extend(
                    manifest
                        .layers()
                        .iter()
                        .map(|l| l.digest().digest().to_owned()),
                );
            }
        }
        let dir = self.root.join("blobs/sha256");
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let entry = entry.map_err(io_err("listing", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !live.contains(&name) {
                let path = entry.path();
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
            }
        }
        Ok(())
    }
}

fn empty_index() -> Result<ImageIndex, OciError> {
    ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(Vec::new())
        .build()
        .map_err(spec_err("index"))
}

fn tag_of(desc: &Descriptor) -> Option<&str> {
    desc.annotations()
        .as_ref()?
        .get(ann::REF_NAME)
        .map(String::as_str)
}

/// Hard-links `archive` as a blob: same inode, no copy. A blob already there is the same
/// content (it has the same digest), so it is kept.
fn link_blob(archive: &Path, blob: &Path) -> Result<(), OciError> {
    match fs::hard_link(archive, blob) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let same = fs::metadata(blob).map_err(io_err("reading", blob))?.size()
                == fs::metadata(archive)
                    .map_err(io_err("reading", archive))?
                    .size();
            if same {
                Ok(())
            } else {
                Err(OciError::Corrupt {
                    digest: blob.display().to_string(),
                    expected: "the archive's size".into(),
                    found: "a blob of another size".into(),
                })
            }
        }
        Err(e) => Err(io_err("linking archive as blob", blob)(e)),
    }
}

#[cfg(test)]
mod tests;
