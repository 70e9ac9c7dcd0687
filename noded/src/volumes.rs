//! emptyDir volumes travel with a checkpoint. When a container is checkpointed, the emptyDir
//! volumes its Content lists (`checkpointing::volumes`) are copied from the kubelet's pod
//! directory into a tar beside the archive, which becomes a second layer of the
//! checkpoint image (entries `checkpointing-volumes/<volume>/…`, the layer annotated with
//! their names). When the runtime of the node a restored pod runs on asks for that image, the
//! volumes are unpacked into the new pod's emptyDir directories, which the kubelet has made
//! before it pulls: the data is in place before the restored process runs.
//!
//! noded is root and the volumes belong to tenants whose containers may be changing them while
//! noded reads or writes them. So both directions go through descriptors, one name at a time
//! beneath a directory already open, never through a link or onto another mount: whatever the
//! container swaps in, noded neither reads nor writes outside the volume.

mod capture;
mod place;
mod size;

use std::ffi::OsStr;
use std::io;
use std::path::{Component, Path, PathBuf};

use checkpointing::names::is_dns_label;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::size::Size;

pub use capture::capture;
pub use place::{Owners, place};
pub use size::size;

/// Directory of the volumes inside the layer.
const PREFIX: &str = "checkpointing-volumes";

/// The symbolic links of the volumes, as a regular file in [`PREFIX`] (`path\0target\0uid\0
/// gid\0` per link): containerd refuses to restore from an image with any entry but regular
/// files and directories, the volumes layer included. No volume has this name (volume names
/// are DNS labels).
const LINKS: &str = ".links";

/// The kubelet's directory of pods, as noded mounts it from the node.
pub const DEFAULT_PODS_DIR: &str = "/var/lib/kubelet/pods";

/// Most bytes the volumes of one checkpoint may take as a tar. A bound, not an estimate: the
/// container's memory and layer that the disk check counts say nothing of its volumes, and a
/// volume filled while noded copies it must not fill the node's disk.
pub const DEFAULT_LIMIT: u64 = 4 << 30;

/// Deepest directory nesting copied: each level holds a descriptor open while beneath it.
const MAX_DEPTH: usize = 128;

/// Why volumes could not be copied or placed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("volume {volume:?} of pod {pod:?} is not an emptyDir noded can name")]
    Name { pod: String, volume: String },
    #[error("the emptyDir volumes take more than the {} a checkpoint may carry", Size(*limit))]
    TooLarge { limit: u64 },
    #[error("{} is nested more than {MAX_DEPTH} directories deep", path.display())]
    TooDeep { path: PathBuf },
    #[error("reading {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing the volumes tar {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the volumes layer {}", path.display())]
    Layer {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("volumes layer entry {} is not under {PREFIX}/<volume>/", path.display())]
    Stray { path: PathBuf },
    #[error("volumes layer entry {} is a {kind}, which noded does not place", path.display())]
    Refused { path: PathBuf, kind: &'static str },
    #[error(
        "volumes layer entry {} is a symbolic link out of its volume, to {}",
        path.display(), target.display()
    )]
    Escape { path: PathBuf, target: PathBuf },
    #[error("placing volumes layer entry {}", path.display())]
    Place {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Where the kubelet keeps emptyDir `volume` of pod `uid`; `None` for a UID or name that could
/// reach outside it.
pub fn host_dir(pods: &Path, uid: &str, volume: &str) -> Option<PathBuf> {
    let safe_uid = !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (safe_uid && is_dns_label(volume)).then(|| {
        pods.join(uid)
            .join("volumes/kubernetes.io~empty-dir")
            .join(volume)
    })
}

/// Opens a volume's own directory, made by the kubelet (no container can swap the path to it).
fn open_volume(dir: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::open(dir, flags, Mode::empty())?)
}

/// Opens `name`, one entry of directory `dir`: never through a symbolic link (with `O_PATH`, a
/// link itself is opened), never onto another mount, never above `dir`.
fn open_beneath(
    dir: impl AsFd,
    name: impl AsRef<OsStr>,
    flags: OFlags,
    mode: Mode,
) -> rustix::io::Result<OwnedFd> {
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV;
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    rustix::fs::openat2(dir, name.as_ref(), flags, mode, resolve)
}

/// Whether a link to `target` in a directory `depth` levels beneath the volume stays in the
/// volume, its text read alone: relative, and never more `..` than levels above it.
fn stays_inside(depth: usize, target: &Path) -> bool {
    let mut depth = depth;
    for part in target.components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir => match depth.checked_sub(1) {
                Some(up) => depth = up,
                None => return false,
            },
            Component::RootDir | Component::Prefix(_) => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests;
