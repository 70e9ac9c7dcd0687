//! What a failed checkpoint's status says about CRIU: its cause in one line and the end of its
//! log, read where the runtime left it ([`checkpointing::criu`] decides; this reads files).
//!
//! containerd names a log file under its state directory, the directory of its socket, which
//! noded sees wherever the socket's mount puts it (deploy/: `/run/containerd` at `/run/cri`):
//! a path the runtime names is read only beneath that directory.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use checkpointing::cri::CriError;
use checkpointing::criu::{self, Diagnosis, Dump, NodeLog};
use rustix::fs::{Mode, OFlags};

use crate::checkpoint::Failure;

/// The runtime's socket directory on the node and where noded sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeDir {
    pub on_node: PathBuf,
    pub here: PathBuf,
}

impl RuntimeDir {
    /// The directory of the CRI `socket` as noded sees it, which the node names `on_node`
    /// (the same when unset). None for a socket right in `/`: the runtime could name any file.
    pub fn of_socket(socket: &Path, on_node: Option<PathBuf>) -> Option<Self> {
        let here = socket.parent().filter(|d| d.parent().is_some())?;
        Some(Self {
            on_node: on_node.unwrap_or_else(|| here.to_owned()),
            here: here.to_owned(),
        })
    }

    /// Where noded sees the node's `path`: only an absolute path beneath the runtime's
    /// directory, without `..`.
    pub fn local(&self, path: &str) -> Option<PathBuf> {
        let path = Path::new(path);
        let relative = !path.is_absolute() || !self.on_node.is_absolute();
        if relative || path.components().any(|c| c == Component::ParentDir) {
            return None;
        }
        let rest = path.strip_prefix(&self.on_node).ok()?;
        (!rest.as_os_str().is_empty()).then(|| self.here.join(rest))
    }

    /// The end of the node's file `path` (at most [`criu::LOG_TAIL_BYTES`], whole lines), or
    /// why it cannot be read.
    fn read_tail(&self, path: &str) -> Result<String, String> {
        let local = self
            .local(path)
            .ok_or_else(|| format!("outside the runtime's directory {}", self.on_node.display()))?;
        read_tail(&local, criu::LOG_TAIL_BYTES).map_err(|e| e.to_string())
    }
}

/// The last `max` bytes of a regular file, from a line's start. A symbolic link or a FIFO put
/// there is refused rather than followed or waited on.
fn read_tail(path: &Path, max: usize) -> std::io::Result<String> {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let mut file = std::fs::File::from(rustix::fs::open(path, flags, Mode::empty())?);
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    // One byte more than kept: it tells whether the kept part starts a line.
    let from = meta.len().saturating_sub(max as u64 + 1);
    file.seek(SeekFrom::Start(from))?;
    let mut bytes = Vec::new();
    file.take(max as u64 + 1).read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    Ok(criu::tail(&text, max).to_owned())
}

/// CRIU's cause and log when `failure` is the runtime's failed CheckpointContainer call, whose
/// deadline was `timeout`.
pub fn diagnose(failure: &Failure, timeout: Duration, dir: &RuntimeDir) -> Option<Diagnosis> {
    let Failure::Runtime(error) = failure else {
        return None;
    };
    let ("CheckpointContainer", message) = error.answer()? else {
        return None;
    };
    let path = criu::log_path(message);
    let read = path.map(|p| dir.read_tail(p));
    let log = match (path, &read) {
        (Some(_), Some(Ok(text))) => NodeLog::Read(text),
        (Some(path), Some(Err(why))) => NodeLog::Unreadable { path, why },
        _ => NodeLog::Absent,
    };
    let deadline = matches!(error, CriError::DeadlineExceeded { .. }).then_some(timeout);
    Some(criu::diagnose(&Dump {
        message,
        deadline,
        log,
    }))
}

/// The status message of the Content `name` whose dump failed as `criu` says.
pub fn message(criu: &Diagnosis, name: &str) -> String {
    let cause = &criu.cause;
    match criu.log {
        None => format!("the runtime could not checkpoint the container: {cause}"),
        Some(_) => format!(
            "the runtime could not checkpoint the container: {cause}; CRIU's log: kubectl \
             checkpoint logs {name}"
        ),
    }
}

#[cfg(test)]
mod tests;
