//! What noded knows about each container runtime it supports, in one profile per runtime:
//! how CRI `Version` names it, its default socket, the manifest annotation that makes it restore
//! a checkpoint image, whether it pulls that image's base image itself, and how its
//! checkpoint/restore switches can be told from outside ([`settings`]).
//!
//! [`RuntimeKind`] is a runtime's profile; the CRI client abstraction is [`crate::cri::Runtime`],
//! through which [`settings`] asks.

pub mod containerd;
pub mod crio;
pub mod socket;

use std::fmt;
use std::time::Duration;

use crate::cri::{Runtime, api};
use crate::names::checkpoint_image as ann;

/// A container runtime noded knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeKind {
    CriO,
    Containerd,
}

impl RuntimeKind {
    pub const ALL: [Self; 2] = [Self::CriO, Self::Containerd];

    /// The runtime a CRI `Version` response's `runtime_name` names; `None` for one we do not
    /// know.
    pub fn detect(runtime_name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.cri_name() == runtime_name)
    }

    /// Its `runtime_name` in CRI `Version`.
    pub const fn cri_name(self) -> &'static str {
        match self {
            Self::CriO => "cri-o",
            Self::Containerd => "containerd",
        }
    }

    /// Its CRI socket where a default install puts it.
    pub const fn default_endpoint(self) -> &'static str {
        match self {
            Self::CriO => crio::ENDPOINT,
            Self::Containerd => containerd::ENDPOINT,
        }
    }

    /// The manifest annotation (valued with the container's name) that makes it restore an
    /// image instead of starting it.
    pub const fn restore_annotation(self) -> &'static str {
        match self {
            Self::CriO => ann::CRIO_CONTAINER_NAME,
            Self::Containerd => ann::CONTAINER_NAME,
        }
    }

    /// Whether, restoring a checkpoint image, it pulls the image's base image (the rootfs the
    /// checkpoint's changes apply to) itself when missing: containerd does (anonymously);
    /// CRI-O expects it present. noded pulls it first on both, and a failed pull fails the
    /// restore only where the runtime will not pull it.
    pub const fn pulls_base_image(self) -> bool {
        match self {
            Self::CriO => false,
            Self::Containerd => true,
        }
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cri_name())
    }
}

/// Whether a runtime prerequisite is met, as far as can be seen from the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Failed,
    /// Cannot be seen from here; believed met.
    Assumed,
}

impl Verdict {
    /// Met or assumed met.
    pub fn met(self) -> bool {
        self != Self::Failed
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Assumed => "assumed",
        })
    }
}

/// A [`Verdict`] and why, in words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    pub detail: String,
}

impl Finding {
    pub fn new(verdict: Verdict, detail: impl Into<String>) -> Self {
        Self {
            verdict,
            detail: detail.into(),
        }
    }
}

/// What a runtime's settings say of CRIU and of restoring, as its profile reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// What else it tells of itself, in words to add to its name and version (CRI-O's storage
    /// and cgroup drivers); may be empty.
    pub about: String,
    pub criu: Finding,
    pub restore: Finding,
}

/// Reads the settings of the runtime `version` names, as its profile says they can be told:
/// CRI-O's from its HTTP API, containerd's from its version and `node_criu` (what is known of
/// the node's `criu`, which its runc runs), an unknown runtime's not at all. Each request takes
/// at most `timeout`.
pub async fn settings<R: Runtime>(
    runtime: &R,
    version: &api::VersionResponse,
    node_criu: &Finding,
    timeout: Duration,
) -> Settings {
    match RuntimeKind::detect(&version.runtime_name) {
        Some(RuntimeKind::CriO) => crio::settings(runtime, timeout).await,
        Some(RuntimeKind::Containerd) => Settings {
            about: String::new(),
            criu: node_criu.clone(),
            restore: containerd::restore(&version.runtime_version),
        },
        None => Settings {
            about: String::new(),
            criu: node_criu.clone(),
            restore: Finding::new(
                Verdict::Assumed,
                format!(
                    "unknown runtime {:?}: restore assumed",
                    version.runtime_name
                ),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtimes_are_told_by_their_cri_name() {
        assert_eq!(RuntimeKind::detect("cri-o"), Some(RuntimeKind::CriO));
        assert_eq!(
            RuntimeKind::detect("containerd"),
            Some(RuntimeKind::Containerd)
        );
        assert_eq!(RuntimeKind::detect("docker"), None);
    }

    #[test]
    fn only_containerd_pulls_a_checkpoints_base_image_itself() {
        assert!(RuntimeKind::Containerd.pulls_base_image());
        assert!(!RuntimeKind::CriO.pulls_base_image());
    }
}
