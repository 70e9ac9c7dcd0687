//! A prerequisite check's verdict as noded publishes it on its Lease.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A check's verdict as noded publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    Ok,
    /// Cannot be seen from the node; believed met.
    Assumed,
    Failed,
    /// A verdict this plugin does not know (a newer noded's).
    #[serde(other)]
    Unknown,
}

impl State {
    pub fn met(self) -> bool {
        matches!(self, Self::Ok | Self::Assumed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad`: the checks are laid out in columns.
        f.pad(match self {
            Self::Ok => "ok",
            Self::Assumed => "assumed",
            Self::Failed => "failed",
            Self::Unknown => "unknown",
        })
    }
}
