//! Whether a filesystem has room for what noded is about to write: a pure [`decide`] and a thin
//! reading of free space. Checked before a checkpoint and before fetching an image from a
//! peer, so a disk without room refuses the work up front, with a message saying so, instead
//! of filling the node's disk and failing half-way through. What is kept free is at least a
//! share of the filesystem above the kubelet's eviction threshold: a checkpoint must never be
//! what makes the kubelet evict other tenants' pods.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use checkpointing::cri::api;

use crate::size::Size;

/// Space kept free beyond every estimate unless configured otherwise (`--disk-reserve-mib`).
pub const DEFAULT_RESERVE_MIB: u64 = 256;
/// Share of the filesystem kept free unless configured otherwise (`--disk-reserve-percent`):
/// above the kubelet's default hard eviction threshold (`nodefs.available<10%`).
pub const DEFAULT_RESERVE_PERCENT: u8 = 15;

/// Space kept free, and which setting asks for it (for the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserve {
    pub bytes: u64,
    /// The share of the filesystem it is; 0: it is `--disk-reserve-mib`.
    pub percent: u8,
}

impl fmt::Display for Reserve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.percent {
            0 => write!(
                f,
                "{} kept free by noded's --disk-reserve-mib",
                Size(self.bytes)
            ),
            p => write!(
                f,
                "{} kept free by noded's --disk-reserve-percent ({p}% of the filesystem)",
                Size(self.bytes)
            ),
        }
    }
}

/// The larger of `mib` and `percent` (at most 100) of a filesystem of `total` bytes.
pub fn reserve(mib: u64, percent: u8, total: u64) -> Reserve {
    let percent = percent.min(100);
    let fixed = mib.saturating_mul(1 << 20);
    // u128: no filesystem size times a percentage overflows.
    let share = u64::try_from(u128::from(total) * u128::from(percent) / 100).unwrap_or(u64::MAX);
    if share > fixed {
        Reserve {
            bytes: share,
            percent,
        }
    } else {
        Reserve {
            bytes: fixed,
            percent: 0,
        }
    }
}

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
        "not enough disk space on node {node} for {what}: {} has {} free, about {} needed ({basis}, plus {reserve})",
        dir.display(), Size(*free), Size(*needed)
    )]
    Short {
        node: String,
        what: String,
        /// Boxed: keeps every `Result` carrying this error small.
        dir: Box<Path>,
        free: u64,
        needed: u64,
        basis: String,
        reserve: Reserve,
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
    reserve: Reserve,
) -> Result<(), SpaceError> {
    // Subtracting instead of adding: no estimate or reserve, however large, can overflow.
    if free
        .checked_sub(reserve.bytes)
        .is_some_and(|left| left >= need.bytes)
    {
        return Ok(());
    }
    Err(SpaceError::Short {
        node: node.to_owned(),
        what: need.what,
        dir: dir.into(),
        free,
        needed: need.bytes.saturating_add(reserve.bytes),
        basis: need.basis,
        reserve,
    })
}

/// Bytes free to unprivileged users on the filesystem holding `dir`: noded runs as root, but
/// the blocks kept for root are the node's last resort, not ours to fill. The kubelet reads
/// "available" the same way.
fn free_bytes(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// The size of the filesystem holding `dir`.
fn total_bytes(dir: &Path) -> io::Result<u64> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok(stat.f_blocks.saturating_mul(stat.f_frsize))
}

/// The node's disk space check: its name (for messages), the reserve, and where free space
/// is read from.
#[derive(Clone, Debug)]
pub struct DiskSpace {
    node: String,
    reserve_mib: u64,
    reserve_percent: u8,
    /// statvfs, or fixed figures in tests.
    free: fn(&Path) -> io::Result<u64>,
    total: fn(&Path) -> io::Result<u64>,
}

impl DiskSpace {
    /// Keeps `reserve_mib` free, and no share of the filesystem ([`Self::with_reserve_percent`]).
    pub fn new(node: String, reserve_mib: u64) -> Self {
        Self {
            node,
            reserve_mib,
            reserve_percent: 0,
            free: free_bytes,
            total: total_bytes,
        }
    }

    /// Keeps at least `percent` of the filesystem free too.
    pub fn with_reserve_percent(mut self, percent: u8) -> Self {
        self.reserve_percent = percent;
        self
    }

    /// Reads free space from `free` instead of the filesystem (whose size then reads as 0).
    #[cfg(test)]
    pub fn with_free(mut self, free: fn(&Path) -> io::Result<u64>) -> Self {
        self.free = free;
        self.total = |_| Ok(0);
        self
    }

    /// Reads the filesystem's size from `total`.
    #[cfg(test)]
    pub fn with_total(mut self, total: fn(&Path) -> io::Result<u64>) -> Self {
        self.total = total;
        self
    }

    /// Ok when the filesystem holding `dir` has room for `need` and the reserve.
    pub fn ensure(&self, dir: &Path, need: Need) -> Result<(), SpaceError> {
        let unreadable = |source| SpaceError::Unreadable {
            dir: dir.to_owned(),
            source,
        };
        let free = (self.free)(dir).map_err(unreadable)?;
        let total = (self.total)(dir).map_err(unreadable)?;
        let reserve = reserve(self.reserve_mib, self.reserve_percent, total);
        decide(&self.node, dir, need, free, reserve)
    }
}

impl Need {
    /// This need and `more`, if any, together.
    pub fn plus(self, more: Option<Need>) -> Need {
        match more {
            None => self,
            Some(more) => Need {
                what: format!("{} and {}", self.what, more.what),
                bytes: self.bytes.saturating_add(more.bytes),
                basis: format!("{}; {}", self.basis, more.basis),
            },
        }
    }
}

/// Room the copy of the pod's emptyDir `volumes` (of pod `uid`, under the kubelet's `pods`
/// directory) beside the archive needs: the size of their files, at most what a checkpoint
/// may carry. `None` without volumes.
pub fn volumes_need(pods: &Path, uid: &str, volumes: &[String]) -> Option<Need> {
    if volumes.is_empty() {
        return None;
    }
    // A bounded walk of the volumes (no file read), off the async threads.
    let bytes = tokio::task::block_in_place(|| {
        crate::volumes::size(pods, uid, volumes, crate::volumes::DEFAULT_LIMIT)
    });
    Some(Need {
        what: "its emptyDir volumes".to_owned(),
        bytes,
        basis: format!("{} in volumes {}", Size(bytes), volumes.join(", ")),
    })
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

    fn decide_at(bytes: u64, free: u64, reserve_bytes: u64) -> Result<(), SpaceError> {
        let reserve = Reserve {
            bytes: reserve_bytes,
            percent: 0,
        };
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
        assert_eq!(reserve(max, 0, 0).bytes, max);
        assert_eq!(reserve(0, 100, max).bytes, max);
        assert_eq!(reserve(0, u8::MAX, max).bytes, max);
    }

    #[test]
    fn the_reserve_is_the_larger_of_the_fixed_one_and_the_share() {
        const GIB: u64 = 1 << 30;
        let big = reserve(DEFAULT_RESERVE_MIB, DEFAULT_RESERVE_PERCENT, 100 * GIB);
        assert_eq!(big.bytes, 15 * GIB);
        assert_eq!(big.percent, 15);
        let small = reserve(DEFAULT_RESERVE_MIB, DEFAULT_RESERVE_PERCENT, GIB);
        assert_eq!(small.bytes, 256 * MIB);
        assert_eq!(
            small.to_string(),
            "256 MiB kept free by noded's --disk-reserve-mib"
        );
    }

    /// 12 GiB free of 100 GiB is room for a 1 GiB archive by the fixed reserve alone, and
    /// would leave the filesystem 11% free: just above the kubelet's default eviction
    /// threshold of 10%, with nothing to spare for what the tenants write next. Refused.
    #[test]
    fn a_checkpoint_never_takes_the_filesystem_near_the_kubelets_eviction_threshold() {
        let space = DiskSpace::new("node1".into(), DEFAULT_RESERVE_MIB)
            .with_free(|_| Ok(12 << 30))
            .with_total(|_| Ok(100 << 30));
        let tmp = tempfile::tempdir().unwrap();
        let refused = space.ensure(tmp.path(), need(1 << 30));
        assert!(refused.is_ok(), "no share kept unless configured");
        let space = space.with_reserve_percent(DEFAULT_RESERVE_PERCENT);
        let err = space.ensure(tmp.path(), need(1 << 30)).unwrap_err();
        assert!(
            err.to_string().contains(
                "plus 15 GiB kept free by noded's --disk-reserve-percent (15% of the filesystem)"
            ),
            "{err}"
        );
        let space = space
            .with_free(|_| Ok(17 << 30))
            .with_total(|_| Ok(100 << 30));
        assert!(space.ensure(tmp.path(), need(1 << 30)).is_ok());
    }

    #[test]
    fn the_volumes_beside_the_archive_count_too() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = crate::volumes::host_dir(tmp.path(), "uid-1", "data").unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("f"), vec![0u8; 3 * 1024]).unwrap();
        assert!(volumes_need(tmp.path(), "uid-1", &[]).is_none());
        let volumes = volumes_need(tmp.path(), "uid-1", &["data".to_owned()]);
        let total = need(MIB).plus(volumes);
        assert_eq!(total.bytes, MIB + 3 * 1024);
        assert_eq!(
            total.what,
            "the checkpoint archive and its emptyDir volumes"
        );
        assert_eq!(total.basis, "the container's memory; 3 KiB in volumes data");
        let none = reserve(0, 0, 0);
        let err = decide("node1", Path::new("/ckpt"), total, MIB, none).unwrap_err();
        assert!(err.to_string().contains("3 KiB in volumes data"), "{err}");
        assert_eq!(need(5).plus(None).bytes, 5);
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
