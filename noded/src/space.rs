//! Whether a filesystem has room for what noded is about to write: a pure [`decide`] and a thin
//! reading of free space. Checked before a checkpoint and before fetching an image from a
//! peer, so a disk without room refuses the work up front, with a message saying so, instead
//! of filling the node's disk and failing half-way through.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use checkpointing::cri::api;

/// Space kept free beyond every estimate unless configured otherwise (`--disk-reserve-mib`).
pub const DEFAULT_RESERVE_MIB: u64 = 256;

/// Room something needs: `bytes` for `what`, estimated from `basis` (both in words for the
/// message).
#[derive(Clone, Debug)]
pub struct Need {
    pub what: String,
    pub bytes: u64,
    pub basis: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SpaceError {
    #[error(
        "not enough disk space on node {node} for {what}: {} has {} free, about {} needed ({basis}, plus {} kept free by noded's --disk-reserve-mib)",
        dir.display(), Size(*free), Size(*needed), Size(*reserve)
    )]
    Short {
        node: String,
        what: String,
        dir: PathBuf,
        free: u64,
        needed: u64,
        basis: String,
        reserve: u64,
    },
    #[error("reading the free disk space of {}", dir.display())]
    Unreadable {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Whether `free` bytes in `dir` on `node` hold `need` with `reserve` left over.
pub fn decide(
    node: &str,
    dir: &Path,
    need: Need,
    free: u64,
    reserve: u64,
) -> Result<(), SpaceError> {
    // Subtracting instead of adding: no estimate or reserve, however large, can overflow.
    if free
        .checked_sub(reserve)
        .is_some_and(|left| left >= need.bytes)
    {
        return Ok(());
    }
    Err(SpaceError::Short {
        node: node.to_owned(),
        what: need.what,
        dir: dir.to_owned(),
        free,
        needed: need.bytes.saturating_add(reserve),
        basis: need.basis,
        reserve,
    })
}

/// Bytes free to unprivileged users on the filesystem holding `dir`: noded runs as root, but
/// the blocks kept for root are the node's last resort, not ours to fill.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The node's disk space check: its name (for messages), the reserve, and where free space
/// is read from.
#[derive(Clone, Debug)]
pub struct DiskSpace {
    node: String,
    reserve: u64,
    /// statvfs, or a fixed figure in tests.
    free: fn(&Path) -> io::Result<u64>,
}

impl DiskSpace {
    pub fn new(node: String, reserve_mib: u64) -> Self {
        Self {
            node,
            reserve: reserve_mib.saturating_mul(1 << 20),
            free: free_bytes,
        }
    }

    /// Reads free space from `free` instead of the filesystem.
    #[cfg(test)]
    pub fn with_free(mut self, free: fn(&Path) -> io::Result<u64>) -> Self {
        self.free = free;
        self
    }

    /// Ok when the filesystem holding `dir` has room for `need` and the reserve.
    pub fn ensure(&self, dir: &Path, need: Need) -> Result<(), SpaceError> {
        let free = (self.free)(dir).map_err(|source| SpaceError::Unreadable {
            dir: dir.to_owned(),
            source,
        })?;
        decide(&self.node, dir, need, free, self.reserve)
    }
}

/// Bytes in binary units to one decimal, for people: `1.5 GiB`, `256 MiB`, `512 B`.
pub struct Size(pub u64);

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        // Only for display: f64's precision loss is far below the one decimal shown.
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        let shown = format!("{value:.1}");
        let shown = shown.strip_suffix(".0").unwrap_or(&shown);
        write!(f, "{shown} {}", UNITS[unit])
    }
}

/// Room a checkpoint archive needs: the dump writes out the container's memory and its
/// writable layer. The image's layer is the archive itself (a hard link), so it counts once.
/// Without a memory figure from the runtime the size is unknown and only the reserve counts.
pub fn archive_need(stats: Option<&api::ContainerStats>) -> Need {
    let memory = stats
        .and_then(|s| s.memory.as_ref())
        .and_then(|m| m.working_set_bytes.as_ref())
        .map(|v| v.value);
    let layer = stats
        .and_then(|s| s.writable_layer.as_ref())
        .and_then(|l| l.used_bytes.as_ref())
        .map_or(0, |v| v.value);
    let what = "the checkpoint archive".to_owned();
    match memory {
        Some(memory) => Need {
            what,
            bytes: memory.saturating_add(layer),
            basis: format!(
                "the container's {} of memory and {} writable layer",
                Size(memory),
                Size(layer)
            ),
        },
        None => Need {
            what,
            bytes: 0,
            basis: "its size unknown: the runtime reports no memory usage for the container"
                .to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn need(bytes: u64) -> Need {
        Need {
            what: "the checkpoint archive".into(),
            bytes,
            basis: "the container's memory".into(),
        }
    }

    fn decide_at(bytes: u64, free: u64, reserve: u64) -> Result<(), SpaceError> {
        decide("node1", Path::new("/ckpt"), need(bytes), free, reserve)
    }

    #[test]
    fn room_for_the_need_and_the_reserve_is_enough() {
        assert!(decide_at(100 * MIB, 10_000 * MIB, 256 * MIB).is_ok());
        assert!(decide_at(0, 256 * MIB, 256 * MIB).is_ok());
        assert!(decide_at(0, 0, 0).is_ok());
    }

    #[test]
    fn exactly_the_need_plus_the_reserve_is_enough_one_byte_less_is_not() {
        assert!(decide_at(100 * MIB, 356 * MIB, 256 * MIB).is_ok());
        assert!(decide_at(100 * MIB, 356 * MIB - 1, 256 * MIB).is_err());
        assert!(decide_at(0, 256 * MIB - 1, 256 * MIB).is_err());
    }

    #[test]
    fn too_little_space_says_where_how_much_and_why() {
        let err = decide_at(1792 * MIB, 1229 * MIB, 256 * MIB).unwrap_err();
        assert_eq!(
            err.to_string(),
            "not enough disk space on node node1 for the checkpoint archive: /ckpt has 1.2 GiB \
             free, about 2 GiB needed (the container's memory, plus 256 MiB kept free by noded's \
             --disk-reserve-mib)"
        );
    }

    #[test]
    fn huge_figures_never_overflow() {
        let max = u64::MAX;
        assert!(decide_at(max, max, 0).is_ok());
        assert!(decide_at(0, max, max).is_ok());
        assert!(decide_at(max, max, 1).is_err());
        assert!(decide_at(1, max, max).is_err());
        let err = decide_at(max, max, max).unwrap_err();
        assert!(matches!(
            err,
            SpaceError::Short {
                needed: u64::MAX,
                ..
            }
        ));
        assert!(err.to_string().contains("about 16 EiB needed"), "{err}");
        assert_eq!(DiskSpace::new("n".into(), max).reserve, max);
    }

    #[test]
    fn sizes_read_like_df() {
        for (bytes, shown) in [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1 KiB"),
            (1536, "1.5 KiB"),
            (256 * MIB, "256 MiB"),
            (1229 * MIB, "1.2 GiB"),
            (u64::MAX, "16 EiB"),
        ] {
            assert_eq!(Size(bytes).to_string(), shown);
        }
    }

    #[test]
    fn the_free_space_of_a_real_directory_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(free_bytes(tmp.path()).is_ok());
        let err = DiskSpace::new("n".into(), 0)
            .ensure(&tmp.path().join("missing"), need(0))
            .unwrap_err();
        assert!(matches!(err, SpaceError::Unreadable { .. }), "{err}");
    }
}
