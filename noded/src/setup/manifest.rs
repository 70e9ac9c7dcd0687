//! The manifest: every node file and directory the setup made, kept on the node beside the
//! report, so that a later run replaces only its own files and `undo` removes exactly those.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::report::{MANIFEST_FILE, REPORT_FILE};
use super::under;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Node paths of the files written.
    pub files: BTreeSet<PathBuf>,
    /// Node paths of the directories made for them (removed when empty).
    pub dirs: BTreeSet<PathBuf>,
}

/// What to do with one wanted file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    /// Ours, with other content (a changed value): written again.
    Replace,
    Unchanged,
    /// Someone else's file at that path: kept as it is, and reported.
    Foreign,
}

/// The action for a wanted file, from whether the manifest lists it and what is there now.
pub fn action(ours: bool, existing: Option<&[u8]>, wanted: &[u8]) -> Action {
    match existing {
        None => Action::Create,
        Some(e) if e == wanted => Action::Unchanged,
        Some(_) if ours => Action::Replace,
        Some(_) => Action::Foreign,
    }
}

/// The files a previous run wrote that are no longer wanted (a path or runtime changed):
/// removed, as `undo` would.
pub fn stale<'a>(manifest: &'a Manifest, wanted: &BTreeSet<PathBuf>) -> Vec<&'a Path> {
    manifest
        .files
        .iter()
        .filter(|f| !wanted.contains(*f))
        .map(PathBuf::as_path)
        .collect()
}

impl Manifest {
    /// The one in `state_dir` under `root`; empty when there is none.
    pub fn read(root: &Path, state_dir: &Path) -> anyhow::Result<Self> {
        let path = under(root, &state_dir.join(MANIFEST_FILE));
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading the manifest {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// Creates `node_dir` and its missing parents under `root`, returning those it made.
pub fn make_dirs(root: &Path, node_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let missing: Vec<&Path> = node_dir
        .ancestors()
        .take_while(|d| !under(root, d).exists())
        .collect();
    std::fs::create_dir_all(under(root, node_dir))?;
    Ok(missing.into_iter().map(Path::to_path_buf).collect())
}

/// Removes `node_path` under `root`; one already gone is fine.
fn remove_file(root: &Path, node_path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(under(root, node_path)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Removes the directories, deepest first, that are empty: one holding another's files stays.
fn remove_empty_dirs<'a>(root: &Path, dirs: impl IntoIterator<Item = &'a PathBuf>) {
    let mut dirs: Vec<&PathBuf> = dirs.into_iter().collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for d in dirs {
        // Not empty or gone: either way not ours to remove now.
        let _ = std::fs::remove_dir(under(root, d));
    }
}

/// Removes `files` (a previous run's, no longer wanted) and the directories of `manifest`
/// they leave empty; returns the ones removed.
pub fn remove(root: &Path, manifest: &Manifest, files: &[&Path]) -> anyhow::Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for f in files {
        if remove_file(root, f).with_context(|| format!("removing {}", f.display()))? {
            removed.push(f.to_path_buf());
        }
    }
    remove_empty_dirs(root, &manifest.dirs);
    Ok(removed)
}

/// Writes `manifest` into `state_dir` under `root`.
pub fn write(root: &Path, state_dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let path = under(root, &state_dir.join(MANIFEST_FILE));
    let json = serde_json::to_vec_pretty(manifest)?;
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))
}

/// `noded setup undo`: removes every file the manifest lists, its directories once empty, the
/// report and the manifest itself, and the state directory when that leaves it empty.
pub fn undo(root: &Path, state_dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let manifest = Manifest::read(root, state_dir)?;
    let files: Vec<&Path> = manifest.files.iter().map(PathBuf::as_path).collect();
    let removed = remove(root, &manifest, &files)?;
    for own in [REPORT_FILE, MANIFEST_FILE] {
        remove_file(root, &state_dir.join(own))
            .with_context(|| format!("removing {own} in {}", state_dir.display()))?;
    }
    remove_empty_dirs(root, [&state_dir.to_path_buf()]);
    Ok(removed)
}
