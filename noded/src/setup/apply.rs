//! `noded setup apply`: the I/O shell around [`files`](super::files), [`manifest`] and
//! [`advice`]. Each file is recorded in the manifest before it is written, so an interrupted
//! run still leaves `undo` everything it wrote.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use checkpointing::runtime::RuntimeKind;

use super::files::{self, CriuConfig, Layout, NodeFile, Reader};
use super::manifest::{self, Action, Manifest};
use super::report::{REPORT_FILE, SetupReport};
use super::{advice, host, under};

/// A file the setup keeps that a process reads only when it starts.
#[derive(Debug)]
pub struct ReadAtStart {
    pub path: PathBuf,
    pub reader: Reader,
    pub modified: SystemTime,
    pub changed_now: bool,
}

/// What writing the files did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub written: Vec<PathBuf>,
    pub owned: Vec<PathBuf>,
    pub read_at_start: Vec<ReadAtStart>,
    pub manual: Vec<String>,
}

/// Writes `file` under `root` through a temporary file, so no reader sees half of it.
fn write(root: &Path, file: &NodeFile) -> std::io::Result<()> {
    let path = under(root, &file.path);
    let tmp = path.with_extension("checkpointing-tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&file.content)?;
    f.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)
}

/// Writes the files a node running `runtime` needs under `root`, keeping others' files, and
/// records them in the manifest in `state_dir`.
pub fn files(
    root: &Path,
    state_dir: &Path,
    layout: &Layout,
    runtime: RuntimeKind,
    provider: &[u8],
) -> anyhow::Result<Outcome> {
    manifest::make_dirs(root, state_dir)
        .with_context(|| format!("making {}", state_dir.display()))?;
    let previous = Manifest::read(root, state_dir)?;
    let mut outcome = Outcome::default();
    let mut wanted = files::desired(layout, runtime, provider);
    // The node's own runc.conf is read; the one the setup wrote is simply wanted again.
    let criu_existing = if previous.files.contains(&layout.criu_config) {
        None
    } else {
        std::fs::read_to_string(under(root, &layout.criu_config)).ok()
    };
    match files::criu_config(layout, criu_existing.as_deref()) {
        CriuConfig::Write(f) => wanted.push(f),
        CriuConfig::Sufficient => {}
        CriuConfig::Lacks(options) => outcome.manual.push(format!(
            "{} is the node's own: add {} to it (deploy/node/criu-runc.conf says why)",
            layout.criu_config.display(),
            options.join(" and ")
        )),
    }
    let paths: BTreeSet<PathBuf> = wanted.iter().map(|f| f.path.clone()).collect();
    let mut current = Manifest {
        files: previous.files.intersection(&paths).cloned().collect(),
        dirs: previous.dirs.clone(),
    };
    manifest::remove(root, &previous, &manifest::stale(&previous, &paths))?;
    for file in &wanted {
        let existing = std::fs::read(under(root, &file.path)).ok();
        let ours = previous.files.contains(&file.path);
        let action = manifest::action(ours, existing.as_deref(), &file.content);
        match action {
            Action::Create | Action::Replace => {
                let parent = file.path.parent().unwrap_or(Path::new("/"));
                let made = manifest::make_dirs(root, parent)
                    .with_context(|| format!("making {}", parent.display()))?;
                current.dirs.extend(made);
                current.files.insert(file.path.clone());
                manifest::write(root, state_dir, &current)?;
                write(root, file).with_context(|| format!("writing {}", file.path.display()))?;
                outcome.written.push(file.path.clone());
            }
            Action::Unchanged if ours => {}
            // Someone's file with the same content: theirs to keep, nothing to tell.
            Action::Unchanged => continue,
            Action::Foreign => {
                outcome.manual.push(format!(
                    "kept {}: not the setup's file; compare it with the setup's (README.md, \
                     \"Node setup\")",
                    file.path.display()
                ));
                continue;
            }
        }
        outcome.owned.push(file.path.clone());
        if let Some(reader) = file.read_at_start {
            let modified = std::fs::metadata(under(root, &file.path))
                .and_then(|m| m.modified())
                .with_context(|| format!("reading {}", file.path.display()))?;
            outcome.read_at_start.push(ReadAtStart {
                path: file.path.clone(),
                reader,
                modified,
                changed_now: action != Action::Unchanged,
            });
        }
    }
    manifest::write(root, state_dir, &current)?;
    Ok(outcome)
}

/// The process name of `reader` on a node running `runtime`.
fn process_name(reader: Reader, runtime: RuntimeKind) -> &'static str {
    match (reader, runtime) {
        (Reader::Kubelet, _) => "kubelet",
        (Reader::Runtime, RuntimeKind::CriO) => "crio",
        (Reader::Runtime, RuntimeKind::Containerd) => "containerd",
    }
}

/// `noded setup apply`: the files, then the node's CRIU, restarts and flags, into the report.
pub fn run(
    root: &Path,
    state_dir: &Path,
    layout: &Layout,
    proc: &Path,
    provider: Vec<u8>,
) -> anyhow::Result<SetupReport> {
    let runtime =
        files::runtime(layout, |p| under(root, p).exists()).map_err(anyhow::Error::msg)?;
    let mut outcome = files(root, state_dir, layout, runtime, &provider)?;
    let restart = outcome
        .read_at_start
        .iter()
        .filter_map(|f| {
            let name = process_name(f.reader, runtime);
            let started = host::process(proc, name).and_then(|p| p.started);
            advice::restart(name, &f.path, f.modified, started, f.changed_now)
        })
        .collect();
    let kubelet_flags = if layout.credential_provider {
        let kubelet = host::process(proc, "kubelet");
        advice::kubelet_flags(
            kubelet.as_ref().map(|k| k.cmdline.as_slice()),
            &layout.provider_config,
            &layout.provider_bin_dir,
        )
    } else {
        Vec::new()
    };
    if runtime == RuntimeKind::Containerd {
        let config = std::fs::read_to_string(under(root, &layout.containerd_config)).ok();
        outcome.manual.extend(advice::containerd_config(
            config.as_deref(),
            &layout.containerd_config,
            &layout.containerd_certs_dir,
        ));
    }
    let report = SetupReport {
        runtime: runtime.cri_name().to_owned(),
        criu: host::node_criu(root),
        written: outcome.written,
        owned: outcome.owned,
        restart,
        kubelet_flags,
        manual: outcome.manual,
    };
    let path = under(root, &state_dir.join(REPORT_FILE));
    std::fs::write(&path, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(report)
}
