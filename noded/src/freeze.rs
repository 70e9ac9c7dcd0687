//! Holding a migration's source still. From its dump on, a migrating container must do nothing
//! anyone could observe (acknowledge a write, answer a request): the checkpoint would not hold
//! it, so the restored copy would lose it. noded freezes the container's cgroup before asking
//! the runtime for the checkpoint (CRIU finds the cgroup frozen and leaves it so after a
//! `--leave-running` dump), keeps it frozen, and thaws it only when the migration is released
//! (it failed). A migration that succeeds deletes the frozen source: its processes die without
//! running again.
//!
//! Both runtimes pause the container themselves for their checkpoint (refusing one that is
//! frozen already) and resume it at the end, so noded *bridges* that pause. The container's
//! own freezer goes: frozen (the runtime's pause), thawed (CRIU holds the tasks stopped under
//! ptrace while it dumps), frozen again (CRIU puts back the state it found, before letting the
//! tasks go), thawed (the runtime resumes). On the second freeze noded freezes the pod's
//! cgroup above the container, so the resume leaves every task frozen; then it freezes the
//! container's own cgroup and thaws the pod. The tasks never run in between. A bridge that came
//! too late (the container was resumed already) fails the checkpoint instead of leaving a
//! quiet gap. The container's own freeze is also what lets its deletion finish: runc thaws a
//! container it finds paused after sending it SIGKILL, so it dies without running again.
//!
//! The freezer is the kernel's, through the node's cgroup file system as noded mounts it:
//! cgroup v1's `freezer.state` (`freezer.self_freezing` telling a cgroup's own freeze from an
//! ancestor's), or v2's `cgroup.freeze` (with `cgroup.events` telling when it took).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Where `deploy/` mounts the node's `/sys/fs/cgroup` in noded's pod.
pub const DEFAULT_CGROUP_ROOT: &str = "/host/sys/fs/cgroup";

/// How long a freeze may take to settle (tasks in uninterruptible sleep delay it).
const SETTLE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);
/// How often a bridge looks at the container's freezer: CRIU's dump keeps it thawed for tens
/// of milliseconds at least, the runtime's pause after it for milliseconds.
const WATCH: Duration = Duration::from_micros(250);

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
    #[error(
        "the runtime resumed the container before noded could hold it, so it may have run on after its dump"
    )]
    Gap,
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

/// Runs `dump` (the runtime's checkpoint of the container in `cgroups_path`) and bridges its
/// pause into the container's own freeze, as the module says. Returns the dump's outcome and
/// the hold's: held (`Ok`), or not, with the container running as the runtime left it.
pub async fn bridge<T>(
    freezer: &Freezer,
    cgroups_path: &str,
    dump: impl std::future::Future<Output = T>,
) -> (T, Result<(), FreezeError>) {
    let container = match freezer.control(cgroups_path) {
        Ok(c) => c,
        Err(e) => return (dump.await, Err(e)),
    };
    let Some(pod) = container.parent() else {
        return (dump.await, Err(FreezeError::BadPath(cgroups_path.into())));
    };
    let (container, pod) = (Arc::new(container), Arc::new(pod));
    let done = Arc::new(AtomicBool::new(false));
    // On a thread of its own: a watcher that waited for a busy async worker could miss the
    // moment, which lasts milliseconds.
    let watcher = {
        let (freezer, container, pod, done) = (
            freezer.clone(),
            container.clone(),
            pod.clone(),
            done.clone(),
        );
        tokio::task::spawn_blocking(move || watch(&freezer, &container, &pod, &done))
    };
    let outcome = dump.await;
    done.store(true, Ordering::Release);
    let bridged = watcher.await.unwrap_or(None);
    // The runtime has resumed the container by now; only the pod's freeze can be holding it.
    let held = match bridged {
        Some(Ok(true)) => {
            let freezer = freezer.clone();
            tokio::task::spawn_blocking(move || freezer.settle(&container))
                .await
                .unwrap_or(Err(FreezeError::Gap))
        }
        Some(Err(e)) => Err(e),
        Some(Ok(false)) | None => Err(FreezeError::Gap),
    };
    let thawed = write(&pod.set, pod.thawed);
    (outcome, held.and(thawed))
}

/// Watches the container's freezer until `done`, counting the times it is frozen (the runtime's
/// pause is the first, CRIU's the second); on the second, freezes the pod. Whether it did so while
/// the container was still frozen, if it did.
fn watch(
    freezer: &Freezer,
    container: &Control,
    pod: &Control,
    done: &AtomicBool,
) -> Option<Result<bool, FreezeError>> {
    let (mut freezes, mut frozen) = (0, false);
    while !done.load(Ordering::Acquire) {
        // Frozen through and through, not only asked to be: runc's pause on a busy node thaws
        // and asks again while the freeze does not take, which is no freeze of CRIU's.
        let now = is_frozen(container).unwrap_or(false);
        freezes += usize::from(now && !frozen);
        frozen = now;
        if freezes == 2 && frozen {
            // Whether the runtime still held it when the pod's freeze was asked for: from then
            // on the pod's freeze holds it too. Asked before the pod settles, which waits for
            // the pod's other containers while the runtime may resume this one.
            let held = write(&pod.set, pod.frozen).and_then(|()| own_frozen(container));
            return Some(held.and_then(|held| freezer.settle(pod).map(|()| held)));
        }
        std::thread::sleep(WATCH);
    }
    None
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
    /// Reads `1` while the cgroup itself (not an ancestor) is asked to be frozen.
    own: PathBuf,
}

impl Control {
    /// The same control one level up: the pod's cgroup of a container's.
    fn parent(&self) -> Option<Self> {
        let up = |p: &Path| Some(p.parent()?.parent()?.join(p.file_name()?));
        Some(Self {
            set: up(&self.set)?,
            state: up(&self.state)?,
            own: up(&self.own)?,
            ..*self
        })
    }
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
                own: v1.join("freezer.self_freezing"),
            });
        }
        let v2 = self.root.join(&dir);
        if v2.join("cgroup.freeze").exists() {
            return Ok(Control {
                set: v2.join("cgroup.freeze"),
                frozen: "1",
                thawed: "0",
                state: v2.join("cgroup.events"),
                own: v2.join("cgroup.freeze"),
            });
        }
        Err(FreezeError::NoFreezer(dir))
    }

    /// Freezes the cgroup of `control` and waits until every task in it stopped. On failure
    /// the cgroup is thawed again: a half-frozen container must not be left behind.
    /// Blocks: run it off the async workers.
    fn settle(&self, control: &Control) -> Result<(), FreezeError> {
        write(&control.set, control.frozen)?;
        let deadline = std::time::Instant::now() + self.settle;
        while !is_frozen(control)? {
            if std::time::Instant::now() >= deadline {
                write(&control.set, control.thawed)?;
                return Err(FreezeError::Unsettled(self.settle));
            }
            std::thread::sleep(POLL);
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

/// Whether the cgroup itself is asked to be frozen (not only through an ancestor).
fn own_frozen(control: &Control) -> Result<bool, FreezeError> {
    let text = std::fs::read_to_string(&control.own)
        .map_err(|e| FreezeError::Io(control.own.clone(), e))?;
    Ok(text.trim() == "1")
}

fn write(path: &Path, value: &str) -> Result<(), FreezeError> {
    std::fs::write(path, value).map_err(|e| FreezeError::Io(path.to_owned(), e))
}

#[cfg(test)]
mod tests;
