//! The setup's report on the node: what it found and what still needs a person. Written by
//! `noded setup apply`, read by noded's prerequisites (the node's CRIU as the setup found it).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The directory of the report and the manifest, inside noded's checkpoint directory: noded
/// mounts that anyway, so it reads the report without another host mount.
pub const STATE_SUBDIR: &str = "node-setup";
pub const REPORT_FILE: &str = "report.json";
pub const MANIFEST_FILE: &str = "manifest.json";

/// The node's CRIU: its version, or why none answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum NodeCriu {
    Version(String),
    Missing(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetupReport {
    /// The runtime set up for (its CRI name).
    pub runtime: String,
    pub criu: NodeCriu,
    /// Node paths written (or rewritten) by this run.
    pub written: Vec<PathBuf>,
    /// Node paths of files the setup keeps on the node, written now or before.
    pub owned: Vec<PathBuf>,
    /// Restarts a person must do, and why.
    pub restart: Vec<String>,
    /// Kubelet flags that are missing or name other files.
    pub kubelet_flags: Vec<String>,
    /// Edits of files that are not the setup's, for a person to make.
    pub manual: Vec<String>,
}

impl SetupReport {
    /// The report in noded's checkpoint directory `checkpoint_dir`, if the setup wrote one.
    pub fn path_in(checkpoint_dir: &Path) -> PathBuf {
        checkpoint_dir.join(STATE_SUBDIR).join(REPORT_FILE)
    }

    /// Reads the report at `path`: `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Self>, String> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("reading {}: {e}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("reading {}: {e}", path.display())),
        }
    }

    /// Logs it: one line, and a warning per thing left to a person.
    pub fn log(&self) {
        tracing::info!(
            runtime = %self.runtime,
            criu = ?self.criu,
            written = ?self.written,
            owned = ?self.owned,
            "node setup done"
        );
        for what in self
            .restart
            .iter()
            .chain(&self.kubelet_flags)
            .chain(&self.manual)
        {
            tracing::warn!("node setup: {what}");
        }
    }
}
