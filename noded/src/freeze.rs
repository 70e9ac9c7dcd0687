//! Holding a migration's source still. From its dump on, a migrating container must do nothing
//! anyone could observe (acknowledge a write, answer a request): the checkpoint would not hold
//! it, so the restored copy would lose it. noded freezes the container's cgroup before asking
//! the runtime for the checkpoint (CRIU finds the cgroup frozen and leaves it so after a
//! `--leave-running` dump), keeps it frozen, and thaws it only when the migration is released
//! (it failed). A migration that succeeds deletes the frozen source: its processes die without
//! running again.
//!
//! The freezer is the kernel's, through the node's cgroup file system as noded mounts it:
//! cgroup v1's `freezer.state`, or v2's `cgroup.freeze` (with `cgroup.events` telling when it
//! took).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where `deploy/` mounts the node's `/sys/fs/cgroup` in noded's pod.
pub const DEFAULT_CGROUP_ROOT: &str = "/host/sys/fs/cgroup";

/// How long a freeze may take to settle (tasks in uninterruptible sleep delay it).
const SETTLE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum FreezeError {
    #[error("the runtime names no cgroup for the container")]
    NoCgroup,
    #[error("cgroup path {0:?} is not one noded can use")]
    BadPath(String),
    #[error("no freezer for cgroup {0} on this node")]
    NoFreezer(PathBuf),
    #[error("the container's cgroup did not freeze within {}s", .0.as_secs())]
    Unsettled(Duration),
    #[error("writing {}", .0.display())]
    Io(PathBuf, #[source] io::Error),
}

/// The directory of a runtime's `linux.cgroupsPath` below a hierarchy's root: a path for the
/// cgroupfs driver, `slice:prefix:name` for the systemd driver (`a-b.slice` nests in
/// `a.slice`, the scope is `prefix-name.scope`). `None` for anything that could leave the
/// hierarchy.
pub fn cgroup_dir(cgroups_path: &str) -> Option<PathBuf> {
    let dir = match cgroups_path.split(':').collect::<Vec<_>>()[..] {
        [path] => PathBuf::from(path.trim_start_matches('/')),
        [slice, prefix, name] => {
            let mut dir = PathBuf::new();
            let stem = slice.strip_suffix(".slice").filter(|s| !s.is_empty())?;
            let mut nested = String::new();
            for part in stem.split('-') {
                if !nested.is_empty() {
                    nested.push('-');
                }
                nested.push_str(part);
                dir.push(format!("{nested}.slice"));
            }
            dir.push(format!("{prefix}-{name}.scope"));
            dir
        }
        _ => return None,
    };
    // By its text: `Path::components` would quietly drop `.` and doubled slashes.
    let text = dir.to_str()?;
    let normal = text.split('/').all(|c| !matches!(c, "" | "." | ".."));
    normal.then_some(dir)
}

/// The node's cgroup freezer.
#[derive(Clone, Debug)]
pub struct Freezer {
    root: PathBuf,
    settle: Duration,
}

/// The file that sets a cgroup's freezer, the value that freezes and thaws, and how to read
/// whether it is frozen.
struct Control {
    set: PathBuf,
    frozen: &'static str,
    thawed: &'static str,
    /// v2: `cgroup.events` says `frozen 1` once every task stopped; v1: `freezer.state` reads
    /// `FROZEN` (not `FREEZING`).
    state: PathBuf,
}

impl Freezer {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            settle: SETTLE,
        }
    }

    fn control(&self, cgroups_path: &str) -> Result<Control, FreezeError> {
        let dir =
            cgroup_dir(cgroups_path).ok_or_else(|| FreezeError::BadPath(cgroups_path.into()))?;
        let v1 = self.root.join("freezer").join(&dir);
        if v1.join("freezer.state").exists() {
            let state = v1.join("freezer.state");
            return Ok(Control {
                set: state.clone(),
                frozen: "FROZEN",
                thawed: "THAWED",
                state,
            });
        }
        let v2 = self.root.join(&dir);
        if v2.join("cgroup.freeze").exists() {
            return Ok(Control {
                set: v2.join("cgroup.freeze"),
                frozen: "1",
                thawed: "0",
                state: v2.join("cgroup.events"),
            });
        }
        Err(FreezeError::NoFreezer(dir))
    }

    /// Freezes the cgroup and waits until every task in it stopped. On failure the cgroup is
    /// thawed again: a half-frozen container must not be left behind.
    pub async fn freeze(&self, cgroups_path: &str) -> Result<(), FreezeError> {
        let control = self.control(cgroups_path)?;
        write(&control.set, control.frozen)?;
        let deadline = tokio::time::Instant::now() + self.settle;
        while !is_frozen(&control)? {
            if tokio::time::Instant::now() >= deadline {
                write(&control.set, control.thawed)?;
                return Err(FreezeError::Unsettled(self.settle));
            }
            tokio::time::sleep(POLL).await;
        }
        Ok(())
    }

    /// Thaws the cgroup. A cgroup that is gone (its container was deleted) needs nothing.
    pub fn thaw(&self, cgroups_path: &str) -> Result<(), FreezeError> {
        match self.control(cgroups_path) {
            Ok(control) => write(&control.set, control.thawed),
            Err(FreezeError::NoFreezer(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

fn is_frozen(control: &Control) -> Result<bool, FreezeError> {
    let text = std::fs::read_to_string(&control.state)
        .map_err(|e| FreezeError::Io(control.state.clone(), e))?;
    Ok(if control.frozen == "FROZEN" {
        text.trim() == "FROZEN"
    } else {
        text.lines().any(|l| l.trim() == "frozen 1")
    })
}

fn write(path: &Path, value: &str) -> Result<(), FreezeError> {
    std::fs::write(path, value).map_err(|e| FreezeError::Io(path.to_owned(), e))
}

#[cfg(test)]
mod tests;
