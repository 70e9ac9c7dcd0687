//! The checkpoint directory: archive file names, the temporary file the runtime writes into,
//! and the atomic step that turns it into a final archive.

use std::fs::{self, File, Permissions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Identity of one checkpoint artifact, as named by its Content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveKey<'a> {
    pub namespace: &'a str,
    pub pod: &'a str,
    pub container: &'a str,
    /// The Content's UID: unique per request, so a retried or restarted attempt finds its file.
    pub uid: &'a str,
}

/// Longest piece of a user-chosen name kept in a file name (the UID keeps names unique).
const MAX_COMPONENT: usize = 63;

/// Keeps `[A-Za-z0-9.-]`, maps everything else (path separators included) to `-`, drops
/// leading dots and caps the length: no name can leave the directory or hide a file.
fn component(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(MAX_COMPONENT)
        .collect();
    let trimmed = cleaned.trim_start_matches('.');
    if trimmed.is_empty() {
        "x".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// `checkpoint-<namespace>_<pod>-<container>-<uid>.tar`, the kubelet's naming plus the UID.
pub fn archive_name(key: &ArchiveKey) -> String {
    format!(
        "checkpoint-{}_{}-{}-{}.tar",
        component(key.namespace),
        component(key.pod),
        component(key.container),
        component(key.uid)
    )
}

/// Hidden name the runtime writes to; renamed to the final name only when complete.
pub fn partial_name(archive: &str) -> String {
    format!(".{archive}.partial")
}

/// What follows `-<uid>` in the names of a checkpoint's files: the tar of its volumes, the
/// archive, and their temporary files (the archive's hidden, see [`partial_name`]). Longest
/// first: `.tar` ends `.volumes.tar` too.
const SUFFIXES: [&str; 4] = [".volumes.partial", ".volumes.tar", ".tar.partial", ".tar"];

/// The Content UID a file of the checkpoint directory is named for (see [`archive_name`]);
/// `None` for a name no checkpoint's file has. A UID is a UUID: 36 characters at the end of the
/// name's stem, after a `-`.
pub fn uid_of(file_name: &str) -> Option<&str> {
    let name = file_name.strip_prefix('.').unwrap_or(file_name);
    let stem = name.strip_prefix("checkpoint-")?;
    let stem = SUFFIXES.iter().find_map(|s| stem.strip_suffix(s))?;
    // Checked: the cut may fall inside a character of a name that is none of ours.
    let (rest, uid) = stem.split_at_checked(stem.len().checked_sub(36)?)?;
    let uuid = uid.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit(),
    });
    (rest.ends_with('-') && uuid).then_some(uid)
}

#[derive(Clone, Debug)]
pub struct CheckpointDir {
    root: PathBuf,
}

impl CheckpointDir {
    /// Opens (creating, mode 0700) the directory. Archives hold process memory: root only.
    pub fn open(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        fs::set_permissions(&root, Permissions::from_mode(0o700))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn archive_path(&self, key: &ArchiveKey) -> PathBuf {
        self.root.join(archive_name(key))
    }

    /// The tar of the emptyDir volumes taken with the archive, if any.
    pub fn volumes_path(&self, key: &ArchiveKey) -> PathBuf {
        self.archive_path(key).with_extension("volumes.tar")
    }

    pub fn partial_path(&self, key: &ArchiveKey) -> PathBuf {
        self.root.join(partial_name(&archive_name(key)))
    }

    /// Makes the runtime's finished temporary file private (0600) and durable: the first half
    /// of [`Self::finalize`], apart so that it can overlap the pass that hashes the file.
    pub fn sync_partial(&self, key: &ArchiveKey) -> io::Result<()> {
        let file = File::open(self.partial_path(key))?;
        file.set_permissions(Permissions::from_mode(0o600))?;
        file.sync_all()
    }

    /// Makes the synced temporary file (see [`Self::sync_partial`]) the archive: atomically
    /// renamed, and the rename itself made durable.
    pub fn finalize(&self, key: &ArchiveKey) -> io::Result<PathBuf> {
        let archive = self.archive_path(key);
        fs::rename(self.partial_path(key), &archive)?;
        File::open(&self.root)?.sync_all()?;
        Ok(archive)
    }

    /// Removes the archive, its volumes and any temporary file of `key`; absent files are fine.
    pub fn remove(&self, key: &ArchiveKey) -> io::Result<()> {
        let volumes = self.volumes_path(key);
        for path in [
            self.partial_path(key),
            self.archive_path(key),
            volumes.with_extension("partial"),
            volumes,
        ] {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key<'a>(ns: &'a str, pod: &'a str, container: &'a str) -> ArchiveKey<'a> {
        ArchiveKey {
            namespace: ns,
            pod,
            container,
            uid: "0b9c6c1e-7d1a-4d55-9a3e-5f2b0c1d2e3f",
        }
    }

    #[test]
    fn names_follow_the_kubelet_pattern_with_the_uid() {
        assert_eq!(
            archive_name(&key("default", "stateful-app", "counter")),
            "checkpoint-default_stateful-app-counter-0b9c6c1e-7d1a-4d55-9a3e-5f2b0c1d2e3f.tar"
        );
    }

    #[test]
    fn hostile_names_stay_one_plain_file_in_the_directory() {
        let long = "a".repeat(300);
        for (ns, pod, container) in [
            ("..", "../../etc/passwd", "x"),
            ("default", "/abs/path", ".hidden"),
            ("default", &long, &long),
            ("", "", ""),
            ("ns", "pod\0name", "c\nd"),
        ] {
            let name = archive_name(&key(ns, pod, container));
            assert!(
                !name.contains('/') && !name.contains('\0') && !name.contains('\n'),
                "{name}"
            );
            assert!(!name.starts_with('.'), "{name}");
            assert!(name.len() <= 255, "{} bytes", name.len());
            let dir = CheckpointDir {
                root: PathBuf::from("/var/lib/kubelet/checkpoints"),
            };
            let path = dir.archive_path(&key(ns, pod, container));
            assert_eq!(path.parent(), Some(dir.root.as_path()), "{name}");
        }
    }

    #[test]
    fn every_file_of_a_checkpoint_names_its_contents_uid_and_nothing_else_does() {
        let dir = CheckpointDir {
            root: PathBuf::from("/var/lib/kubelet/checkpoints"),
        };
        let k = key("default", "web-1", "app-2");
        let volumes = dir.volumes_path(&k);
        for path in [
            dir.archive_path(&k),
            dir.partial_path(&k),
            volumes.with_extension("partial"),
            volumes,
        ] {
            let name = path.file_name().unwrap().to_str().unwrap();
            assert_eq!(uid_of(name), Some(k.uid), "{name}");
        }
        let uid = k.uid;
        for other in [
            "oci".to_owned(),
            "notes.txt".to_owned(),
            format!("checkpoint-{uid}.tar"),
            format!("checkpoint-a_b-c-{uid}.tar.gz"),
            format!("backup-a_b-c-{uid}.tar"),
            format!("checkpoint-a_b-c-{}.tar", uid.replace('-', "x")),
            format!(
                "checkpoint-a_b-c-{}.tar",
                uid.to_uppercase().replace('B', "G")
            ),
            "checkpoint-a_b-c-short.tar".to_owned(),
            "checkpoint-é_b-c-0b9c6c1e-7d1a-4d55-9a3e-5f2b0c1dé.tar".to_owned(),
        ] {
            assert_eq!(uid_of(&other), None, "{other}");
        }
    }

    #[test]
    fn finalize_renames_into_place_with_mode_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CheckpointDir::open(tmp.path().join("checkpoints")).unwrap();
        let k = key("default", "p", "c");
        fs::write(dir.partial_path(&k), b"tar bytes").unwrap();
        dir.sync_partial(&k).unwrap();
        let archive = dir.finalize(&k).unwrap();
        assert_eq!(fs::read(&archive).unwrap(), b"tar bytes");
        assert!(!dir.partial_path(&k).exists());
        assert_eq!(
            fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            fs::metadata(&dir.root).unwrap().permissions().mode() & 0o777,
            0o700
        );
        dir.remove(&k).unwrap();
        dir.remove(&k).unwrap();
        assert!(!archive.exists());
    }
}
