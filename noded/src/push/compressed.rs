//! The zstd variant of a checkpoint image in the layout: its archive layer compressed into the
//! ingest directory (hashed on the way, so nothing half-written ever has a blob's name), then
//! imported under the image's tag with a manifest naming it. The node's own image becomes the
//! pushed one, so `status.image` names one image on every node and in the registry. The
//! config stays: its `rootfs.diff_ids` name the uncompressed archive, which runtimes check
//! after decompressing. The plain archive blob goes with the layout's next garbage collection
//! (the checkpoint's archive file stays), the compressed one with the checkpoint's image.

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use checkpointing::crd::Compression;
use checkpointing::digest::HashingReader;
use checkpointing::oci::ImageLayout;
use oci_spec::image::{Descriptor, Digest, ImageManifest, MediaType};

use super::PushError;
use super::compression::{LEVEL, Layer, decide, measure};
use crate::size::Size;

/// Compression threads at most: a push must not starve the node's workloads.
const MAX_WORKERS: usize = 4;

/// Distinguishes concurrent compressions' ingest files.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// The image to push: its manifest, how its archive layer goes, and the bytes of its blobs.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub manifest: Descriptor,
    pub layer: Layer,
    pub bytes: u64,
    /// The archive layer's size before and after compressing (the same when plain).
    pub archive: u64,
    pub sent: u64,
}

impl std::fmt::Display for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.layer {
            Layer::Plain => write!(f, "archive of {} pushed uncompressed", Size(self.archive)),
            Layer::Zstd => write!(
                f,
                "archive of {} pushed as {} zstd",
                Size(self.archive),
                Size(self.sent)
            ),
        }
    }
}

/// The image tagged `tag` (manifest `manifest`) as a push `asked` for it: as it is, or
/// replaced by its zstd variant. An image whose archive is already compressed (a push
/// retried) is kept as it is.
pub fn prepare(
    layout: &ImageLayout,
    manifest: &Descriptor,
    tag: &str,
    asked: Compression,
) -> Result<Prepared, PushError> {
    let path = layout.blob_path(manifest.digest());
    let mut parsed = ImageManifest::from_file(&path).map_err(|source| PushError::Manifest {
        digest: manifest.digest().to_string(),
        source,
    })?;
    let config = parsed.config().size();
    let others: u64 = parsed.layers().iter().skip(1).map(Descriptor::size).sum();
    let mut layers = parsed.layers().clone();
    let Some(archive) = layers.first_mut() else {
        return Err(PushError::Image(format!(
            "manifest {} has no layer",
            manifest.digest()
        )));
    };
    let plain_size = archive.size();
    let kept = |layer| Prepared {
        manifest: manifest.clone(),
        layer,
        bytes: config + others + plain_size,
        archive: plain_size,
        sent: plain_size,
    };
    if archive.media_type() == &MediaType::ImageLayerZstd {
        return Ok(kept(Layer::Zstd));
    }
    let source = layout.blob_path(archive.digest());
    let sample = (asked == Compression::Auto)
        .then(|| {
            measure(&source)
                .inspect_err(|e| tracing::warn!(archive = %source.display(), error = %e, "sampling the archive for compression failed; pushing it uncompressed"))
                .ok()
        })
        .flatten();
    if decide(asked, sample) == Layer::Plain {
        return Ok(kept(Layer::Plain));
    }
    tracing::debug!(?sample, "compressing the archive layer");
    let ingest = layout.ingest_dir();
    std::fs::create_dir_all(&ingest).map_err(compressing(&ingest))?;
    let mut staged = Staged(Some(ingest.join(format!(
        "{}.zst.{}.{}.partial",
        archive.digest().digest(),
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ))));
    let to = staged.0.clone().unwrap_or_default();
    let (digest, size) = write_compressed(&source, &to).map_err(compressing(&to))?;
    archive.set_media_type(MediaType::ImageLayerZstd);
    archive.set_digest(digest.clone());
    archive.set_size(size);
    parsed.set_layers(layers);
    let bytes = parsed.to_string().map_err(|source| PushError::Manifest {
        digest: manifest.digest().to_string(),
        source,
    })?;
    let manifest_digest = Digest::from(checkpointing::digest::sha256(bytes.as_bytes()));
    let imported = layout.import(tag, &manifest_digest, bytes.as_bytes(), &[(digest, to)])?;
    // Renamed into place (or dropped as a duplicate) by the import.
    staged.0 = None;
    Ok(Prepared {
        manifest: imported,
        layer: Layer::Zstd,
        bytes: config + others + size,
        archive: plain_size,
        sent: size,
    })
}

/// Compresses `source` into the new file `to`, synced; the digest and size written.
fn write_compressed(source: &Path, to: &Path) -> io::Result<(Digest, u64)> {
    let input = BufReader::with_capacity(1 << 20, File::open(source)?);
    let mut encoder = zstd::stream::read::Encoder::new(input, LEVEL)?;
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(MAX_WORKERS);
    encoder.multithread(u32::try_from(workers).unwrap_or(1))?;
    let mut hashing = HashingReader::new(encoder);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)?;
    io::copy(&mut hashing, &mut file)?;
    file.flush()?;
    file.sync_all()?;
    let (digest, size) = hashing.finish()?;
    Ok((digest.into(), size))
}

fn compressing(path: &Path) -> impl Fn(io::Error) -> PushError {
    let path = path.to_owned();
    move |source| PushError::Compress {
        path: path.clone(),
        source,
    }
}

/// An ingest file removed when dropped, unless imported: a failed compression leaves
/// nothing behind.
struct Staged(Option<PathBuf>);

impl Drop for Staged {
    fn drop(&mut self) {
        let Some(path) = &self.0 else { return };
        if let Err(e) = std::fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "removing a compressed layer left over");
        }
    }
}
