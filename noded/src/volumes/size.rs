//! How much the volumes a checkpoint carries take, for the disk check before the dump: the
//! sizes of their regular files, read the way `capture` reads them (beneath each directory
//! held open, through no link, onto no other mount) but only `stat`ed, never opened. Bounded:
//! it stops at the limit a checkpoint's volumes may take, at `MAX_ENTRIES` entries and at
//! `MAX_DEPTH`, since the estimate only needs to say "at least this much".

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};

use super::{MAX_DEPTH, host_dir, open_beneath, open_volume};

/// Entries looked at, at most, over all volumes of one checkpoint.
const MAX_ENTRIES: u64 = 1_000_000;

/// Bytes in the regular files of `volumes` of pod `uid`, at most `limit`. A volume that cannot
/// be read counts as empty: the copy itself then says why.
pub fn size(pods: &Path, uid: &str, volumes: &[String], limit: u64) -> u64 {
    let mut count = Count {
        bytes: 0,
        entries: 0,
        limit,
    };
    for volume in volumes {
        let Some(dir) = host_dir(pods, uid, volume) else {
            continue;
        };
        if let Ok(fd) = open_volume(&dir) {
            count.directory(fd, 0);
        }
    }
    count.bytes.min(limit)
}

struct Count {
    bytes: u64,
    entries: u64,
    limit: u64,
}

impl Count {
    fn done(&self) -> bool {
        self.bytes >= self.limit || self.entries >= MAX_ENTRIES
    }

    fn directory(&mut self, dir: OwnedFd, depth: usize) {
        let Ok(mut entries) = Dir::new(dir) else {
            return;
        };
        while let Some(Ok(entry)) = entries.next() {
            if self.done() {
                return;
            }
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            self.entries += 1;
            let Ok(parent) = entries.fd() else {
                return;
            };
            // lstat: a link counts as nothing (the copy keeps the link, not its target).
            let Ok(stat) = rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) else {
                continue;
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => {
                    let size = u64::try_from(stat.st_size).unwrap_or(0);
                    self.bytes = self.bytes.saturating_add(size);
                }
                FileType::Directory if depth < MAX_DEPTH => {
                    let flags = OFlags::RDONLY | OFlags::DIRECTORY;
                    if let Ok(child) = open_beneath(parent, name, flags, Mode::empty()) {
                        self.directory(child, depth + 1);
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const UID: &str = "0f0e-uid";

    fn volume(pods: &Path, name: &str) -> std::path::PathBuf {
        let dir = host_dir(pods, UID, name).unwrap();
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_regular_files_of_the_listed_volumes_count() {
        let tmp = tempfile::tempdir().unwrap();
        let data = volume(tmp.path(), "data");
        fs::write(data.join("a"), vec![0u8; 1000]).unwrap();
        fs::create_dir_all(data.join("d/e")).unwrap();
        fs::write(data.join("d/e/b"), vec![0u8; 24]).unwrap();
        let other = volume(tmp.path(), "other");
        fs::write(other.join("c"), vec![0u8; 5000]).unwrap();
        let listed = ["data".to_owned(), "missing".to_owned(), "../x".to_owned()];
        assert_eq!(size(tmp.path(), UID, &listed, u64::MAX), 1024);
        assert_eq!(size(tmp.path(), UID, &[], u64::MAX), 0);
        assert_eq!(size(tmp.path(), "../..", &listed, u64::MAX), 0);
    }

    /// A tenant pointing links in its volume at the node's big files (or at `/`) makes the
    /// estimate no larger and noded read nothing through them.
    #[test]
    fn links_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("big"), vec![0u8; 1 << 20]).unwrap();
        let data = volume(tmp.path(), "data");
        fs::write(data.join("own"), b"12345").unwrap();
        std::os::unix::fs::symlink(&outside, data.join("dir-link")).unwrap();
        std::os::unix::fs::symlink(outside.join("big"), data.join("file-link")).unwrap();
        assert_eq!(size(tmp.path(), UID, &["data".to_owned()], u64::MAX), 5);
    }

    #[test]
    fn the_count_stops_at_the_limit() {
        let tmp = tempfile::tempdir().unwrap();
        let data = volume(tmp.path(), "data");
        for i in 0..10 {
            fs::write(data.join(i.to_string()), vec![0u8; 100]).unwrap();
        }
        assert_eq!(size(tmp.path(), UID, &["data".to_owned()], 250), 250);
    }
}
