//! How the fake runtime writes its archive: whole, or front to back in pieces as a runtime
//! streams its tar, or in ways that change bytes a reader following the file has already read.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How the fake's CheckpointContainer writes its archive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Writes {
    /// All at once.
    #[default]
    Whole,
    /// Front to back in pieces, a pause after each.
    Pieces,
    /// In pieces, with its memory pages first written wrong and put right in place once
    /// another reader has read the whole file.
    Rewritten,
    /// In pieces and a piece too many, cut off once another reader has read it.
    Truncated,
}

const PIECE: usize = 512;
const PAUSE: Duration = Duration::from_millis(5);

impl Writes {
    /// Leaves `archive` at `location`, written this way.
    pub async fn write(self, location: &Path, archive: &[u8]) {
        if self == Self::Whole {
            return fs::write(location, archive).unwrap();
        }
        let mut bytes = archive.to_vec();
        let pages = archive.windows(6).position(|w| w == b"memory").unwrap();
        match self {
            Self::Rewritten => bytes[pages..pages + 6].copy_from_slice(b"MEMORY"),
            Self::Truncated => bytes.extend([0; PIECE]),
            Self::Whole | Self::Pieces => {}
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(location)
            .unwrap();
        for piece in bytes.chunks(PIECE) {
            file.write_all(piece).unwrap();
            tokio::time::sleep(PAUSE).await;
        }
        match self {
            Self::Rewritten => {
                read_by_another(location, &file, bytes.len()).await;
                file.write_all_at(&archive[pages..pages + 6], pages as u64)
                    .unwrap();
            }
            Self::Truncated => {
                read_by_another(location, &file, bytes.len()).await;
                file.set_len(archive.len() as u64).unwrap();
            }
            Self::Whole | Self::Pieces => {}
        }
    }
}

/// Waits until a descriptor of this process other than `own` has read `path` to `len` bytes
/// (its position in `/proc/self/fdinfo`), and a moment more for it to look at the file again;
/// at most ten seconds.
async fn read_by_another(path: &Path, own: &File, len: usize) {
    let path = path.canonicalize().unwrap();
    let own = own.as_raw_fd().to_string();
    let started = Instant::now();
    let read = || -> bool {
        fs::read_dir("/proc/self/fd").unwrap().flatten().any(|fd| {
            let name = fd.file_name().to_string_lossy().into_owned();
            let position = || {
                let info = fs::read_to_string(format!("/proc/self/fdinfo/{name}")).ok()?;
                let pos = info.lines().find_map(|l| l.strip_prefix("pos:"))?;
                pos.trim().parse::<usize>().ok()
            };
            name != own
                && fs::read_link(fd.path()).is_ok_and(|target| target == path)
                && position().is_some_and(|pos| pos >= len)
        })
    };
    while !read() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(PAUSE).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
}
