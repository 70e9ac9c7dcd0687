//! What the setup reads from the running node: processes in its `/proc` (the pod shares the
//! host's PID namespace) and the node's `criu`, run under the node's root.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use checkpointing::criu;

use super::report::NodeCriu;

/// Bound of `criu --version`.
const CRIU_TIMEOUT: Duration = Duration::from_secs(10);

/// A process found by its command name.
#[derive(Clone, Debug)]
pub struct Process {
    pub cmdline: Vec<String>,
    pub started: Option<SystemTime>,
}

/// The oldest process named `comm` (the daemon, not a child it forked), if any.
pub fn process(proc: &Path, comm: &str) -> Option<Process> {
    let boot = boot_time(proc);
    std::fs::read_dir(proc)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .map(|e| e.path())
        .filter(|dir| std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == comm))
        .filter_map(|dir| Some((start_ticks(&dir)?, dir)))
        .min()
        .map(|(ticks, dir)| Process {
            cmdline: cmdline(&dir),
            started: boot.map(|b| {
                b + Duration::from_secs_f64(
                    ticks as f64 / rustix::param::clock_ticks_per_second() as f64,
                )
            }),
        })
}

fn cmdline(dir: &Path) -> Vec<String> {
    std::fs::read(dir.join("cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Field 22 of `/proc/<pid>/stat`: start time in clock ticks after boot (counted after the
/// command name, which may hold spaces).
fn start_ticks(dir: &Path) -> Option<u64> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// `btime` of `/proc/stat`: when the node booted.
fn boot_time(proc: &Path) -> Option<SystemTime> {
    let stat = std::fs::read_to_string(proc.join("stat")).ok()?;
    let secs = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// PATH for the node's `criu`: where distributions and source installs put it.
const NODE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `noded setup node-criu`, in a child process of its own: changes root to the node's (only
/// CAP_SYS_CHROOT, and only this process) and runs the node's `criu --version` there, with the
/// node's own libraries, as the node's runc runs it.
pub fn criu_version_in(root: &Path) -> anyhow::Result<()> {
    std::os::unix::fs::chroot(root).with_context(|| format!("chroot {}", root.display()))?;
    std::env::set_current_dir("/")?;
    let out = Command::new("criu")
        .env("PATH", NODE_PATH)
        .arg("--version")
        .output()
        .context("running criu --version on the node")?;
    std::io::stdout().write_all(&out.stdout)?;
    anyhow::ensure!(
        out.status.success(),
        "criu --version: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The node's CRIU under `root`, from [`criu_version_in`] run as a child of this binary.
pub fn node_criu(root: &Path) -> NodeCriu {
    let child = std::env::current_exe().and_then(|exe| {
        Command::new(exe)
            .args(["setup", "node-criu", "--root"])
            .arg(root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
    });
    let mut child = match child {
        Ok(c) => c,
        Err(e) => return NodeCriu::Missing(format!("running noded setup node-criu: {e}")),
    };
    let deadline = Instant::now() + CRIU_TIMEOUT;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if matches!(child.try_wait(), Ok(None)) {
        let _ = child.kill();
        let _ = child.wait();
        return NodeCriu::Missing("criu --version on the node did not answer".into());
    }
    match child.wait_with_output() {
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            match criu::version::parse(&stdout) {
                Some(v) if out.status.success() => NodeCriu::Version(v),
                _ => NodeCriu::Missing(match String::from_utf8_lossy(&out.stderr).trim() {
                    "" => format!("criu --version on the node: {}", out.status),
                    why => why.to_owned(),
                }),
            }
        }
        Err(e) => NodeCriu::Missing(format!("criu --version on the node: {e}")),
    }
}
