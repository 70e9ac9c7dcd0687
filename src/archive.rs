//! Reading CRI checkpoint archives: the uncompressed tar a runtime writes for
//! `CheckpointContainer`, with `config.dump`, `spec.dump`, `checkpoint/` and friends.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::Path;

use oci_spec::image::Sha256Digest;
use serde::Deserialize;

use crate::digest::HashingReader;

/// What `config.dump` says about the checkpointed container (fields both CRI-O and
/// containerd write; anything else is ignored).
#[derive(Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointConfig {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: String,
    /// Base image as the runtime resolved it, e.g. `docker.io/library/busybox:latest`.
    #[serde(default)]
    pub rootfs_image_name: String,
    /// Image reference with digest the runtime pulls again on restore.
    #[serde(default)]
    pub rootfs_image_ref: String,
    /// Image id of the base image.
    #[serde(default)]
    pub rootfs_image: String,
    #[serde(default)]
    pub checkpointed_time: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("reading checkpoint archive {path}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("checkpoint archive {path} has no {member}")]
    Missing { path: String, member: &'static str },
    #[error("parsing {member} in checkpoint archive {path}")]
    Parse {
        path: String,
        member: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

const CONFIG_DUMP: &str = "config.dump";

/// Reads `config.dump` out of a checkpoint archive without unpacking anything else.
pub fn read_config(archive: &Path) -> Result<CheckpointConfig, ArchiveError> {
    read_config_from(archive, File::open(archive).map_err(io_error(archive))?)
}

/// [`read_config`] of the archive's bytes as `reader` gives them (decompressed, say);
/// `archive` names it in errors.
pub fn read_config_from(
    archive: &Path,
    reader: impl Read,
) -> Result<CheckpointConfig, ArchiveError> {
    let bytes = read_member(reader, CONFIG_DUMP).map_err(io_error(archive))?;
    parse_config(archive, bytes)
}

/// A checkpoint archive read once: its `config.dump`, and the digest and size of the whole file.
#[derive(Clone, Debug)]
pub struct Scanned {
    pub config: CheckpointConfig,
    pub digest: Sha256Digest,
    pub size: u64,
}

/// [`read_config`] and the archive's digest in one pass. Runtimes write the members in lexical
/// order, so `config.dump` follows the memory pages in `checkpoint/`: finding it reads the
/// whole file anyway, and hashing the same bytes on the way saves a second read.
pub fn scan(archive: &Path) -> Result<Scanned, ArchiveError> {
    let file = File::open(archive).map_err(io_error(archive))?;
    scan_from(archive, BufReader::with_capacity(1 << 20, file))
}

/// [`scan`] of the archive's bytes as `reader` gives them, e.g. while its writer still writes
/// them; `archive` names it in errors.
pub fn scan_from(archive: &Path, reader: impl Read) -> Result<Scanned, ArchiveError> {
    let mut hashing = HashingReader::new(reader);
    let bytes = read_member(&mut hashing, CONFIG_DUMP).map_err(io_error(archive))?;
    let (digest, size) = hashing.finish().map_err(io_error(archive))?;
    Ok(Scanned {
        config: parse_config(archive, bytes)?,
        digest,
        size,
    })
}

fn io_error(archive: &Path) -> impl Fn(io::Error) -> ArchiveError {
    let path = archive.display().to_string();
    move |source| ArchiveError::Io {
        path: path.clone(),
        source,
    }
}

fn parse_config(archive: &Path, bytes: Option<Vec<u8>>) -> Result<CheckpointConfig, ArchiveError> {
    let path = archive.display().to_string();
    let bytes = bytes.ok_or_else(|| ArchiveError::Missing {
        path: path.clone(),
        member: CONFIG_DUMP,
    })?;
    serde_json::from_slice(&bytes).map_err(|source| ArchiveError::Parse {
        path,
        member: CONFIG_DUMP,
        source,
    })
}

/// Contents of the top-level member `name` (`./name` also matches), if present.
fn read_member(tar: impl Read, name: &str) -> io::Result<Option<Vec<u8>>> {
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?;
        if path.strip_prefix(".").unwrap_or(&path) == Path::new(name) {
            let mut bytes = Vec::with_capacity(usize::try_from(entry.size()).unwrap_or(0));
            entry.read_to_end(&mut bytes)?;
            return Ok(Some(bytes));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o600);
            header.set_cksum();
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn reads_config_dump_among_other_members() {
        let config =
            br#"{"id":"abc","name":"counter","rootfsImageName":"docker.io/library/busybox:latest",
            "rootfsImageRef":"docker.io/library/busybox@sha256:00","rootfsImage":"sha256:11",
            "checkpointedTime":"2026-11-24T10:00:00Z","runtime":"io.containerd.runc.v2"}"#;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        std::fs::write(
            &path,
            tar_with(&[("spec.dump", b"{}"), ("./config.dump", config)]),
        )
        .unwrap();
        let c = read_config(&path).unwrap();
        assert_eq!(c.name, "counter");
        assert_eq!(c.rootfs_image_name, "docker.io/library/busybox:latest");
        assert_eq!(c.rootfs_image_ref, "docker.io/library/busybox@sha256:00");
        assert_eq!(c.rootfs_image, "sha256:11");
    }

    #[test]
    fn a_scan_reads_the_config_behind_the_pages_and_hashes_every_byte() {
        let config = br#"{"name":"counter","rootfsImageName":"busybox"}"#;
        let pages = vec![7u8; 3 << 20];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.tar");
        std::fs::write(
            &path,
            tar_with(&[("checkpoint/pages-1.img", &pages), ("config.dump", config)]),
        )
        .unwrap();
        let scanned = scan(&path).unwrap();
        assert_eq!(scanned.config.name, "counter");
        assert_eq!(scanned.config.rootfs_image_name, "busybox");
        let whole = std::fs::read(&path).unwrap();
        assert_eq!(scanned.size, whole.len() as u64);
        assert_eq!(scanned.digest, crate::digest::sha256(&whole));
    }

    #[test]
    fn a_missing_config_dump_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.tar");
        std::fs::write(&path, tar_with(&[("spec.dump", b"{}")])).unwrap();
        let e = read_config(&path).unwrap_err();
        assert!(
            matches!(
                e,
                ArchiveError::Missing {
                    member: "config.dump",
                    ..
                }
            ),
            "{e}"
        );
    }

    #[test]
    fn garbage_is_an_io_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.tar");
        std::fs::write(&path, vec![0x55; 1500]).unwrap();
        assert!(read_config(&path).is_err());
    }
}
