//! Reconciling a ContainerCheckpoint, in layers: [`plan`] decides from what was observed
//! (calling the lower [`crate::status`] and [`crate::validation`]), [`shell`] reads the
//! cluster, carries the plan out and reports.

mod context;
mod error;
mod plan;
mod shell;
mod written;

pub use context::Context;
pub use shell::{error_policy, reconcile};
