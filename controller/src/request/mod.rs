//! Reconciling a ContainerCheckpoint, in layers: [`watches`] keep the stores a reconcile
//! decides from; [`shell`] reads them (and the pod), carries the plan out and reports;
//! [`plan`] decides from what was observed, calling the lower [`crate::status`] and
//! [`crate::validation`].

mod context;
mod credentials;
mod error;
mod plan;
mod shell;
pub mod synced;
pub mod watches;
mod written;

pub use shell::{error_policy, reconcile};
