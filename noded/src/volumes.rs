//! emptyDir volumes travel with a checkpoint. When a container is checkpointed, the emptyDir
//! volumes its Content lists (`checkpointing::volumes`) are copied from the kubelet's pod
//! directory into a tar beside the archive, which becomes a second layer of the
//! checkpoint image (entries `checkpointing-volumes/<volume>/…`, the layer annotated with
//! their names). When the runtime of the node a restored pod runs on asks for that image, the
//! volumes are unpacked into the new pod's emptyDir directories, which the kubelet has made
//! before it pulls: the data is in place before the restored process runs.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use checkpointing::names::is_dns_label;

/// Directory of the volumes inside the layer.
const PREFIX: &str = "checkpointing-volumes";

/// The kubelet's directory of pods, as noded mounts it from the node.
pub const DEFAULT_PODS_DIR: &str = "/var/lib/kubelet/pods";

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

/// Writes the `volumes` of pod `uid` as a tar at `dest` (under a temporary name, fsynced, then
/// renamed, mode 0600: the data is the pod's). Symbolic links are kept as links.
pub fn capture(pods: &Path, uid: &str, volumes: &[String], dest: &Path) -> io::Result<()> {
    let partial = dest.with_extension("partial");
    let file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)?;
    let mut builder = tar::Builder::new(file);
    builder.follow_symlinks(false);
    for volume in volumes {
        let dir = host_dir(pods, uid, volume).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("volume {volume:?} of pod {uid:?}"),
            )
        })?;
        builder.append_dir_all(Path::new(PREFIX).join(volume), &dir)?;
    }
    let file = builder.into_inner()?;
    file.sync_all()?;
    fs::rename(&partial, dest)
}

/// Unpacks the volumes of the layer at `layer` into pod `uid`'s emptyDir directories: only
/// those `wanted` says yes to and the pod has (the kubelet made their directory). Returns the
/// volumes placed. An entry that would land outside its volume fails the whole.
pub fn place(
    layer: &Path,
    pods: &Path,
    uid: &str,
    wanted: impl Fn(&str) -> bool,
) -> io::Result<Vec<String>> {
    let mut archive = tar::Archive::new(File::open(layer)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    let mut placed: Vec<String> = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut parts = path
            .strip_prefix(PREFIX)
            .map_err(|_| stray(&path))?
            .components();
        let volume = parts
            .next()
            .and_then(|c| c.as_os_str().to_str())
            .ok_or_else(|| stray(&path))?
            .to_owned();
        let Some(dir) = host_dir(pods, uid, &volume).filter(|d| d.is_dir()) else {
            continue;
        };
        if !placed.contains(&volume) {
            if !wanted(&volume) {
                continue;
            }
            placed.push(volume.clone());
        }
        let rest = parts.as_path();
        if rest
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(stray(&path));
        }
        let target = dir.join(rest);
        if let Some(parent) = target.parent().filter(|_| !rest.as_os_str().is_empty()) {
            fs::create_dir_all(parent)?;
            // A link unpacked earlier must not carry a later entry out of the volume.
            if !fs::canonicalize(parent)?.starts_with(fs::canonicalize(&dir)?) {
                return Err(stray(&path));
            }
        }
        // The volume's own directory entry lands on the kubelet's: its mode and owner.
        entry.unpack(&target)?;
    }
    Ok(placed)
}

fn stray(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "volume layer entry {} is not under {PREFIX}/<volume>/",
            path.display()
        ),
    )
}

#[cfg(test)]
mod tests;
