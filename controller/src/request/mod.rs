//! Reconciling a ContainerCheckpoint, in layers: [`shell`] reads the stores (and the pod),
//! carries the plan out and reports (on the pod too: [`outcome`]); [`plan`] decides from what was observed, calling the lower
//! [`crate::status`] and [`crate::validation`].

mod credentials;
mod error;
mod outcome;
mod plan;
mod shell;

use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointContent};
use kube::runtime::controller::Controller;

pub use shell::reconcile;

use crate::stores::{Changes, Stores};

/// What a ContainerCheckpoint's reconciles share; they create its Content.
pub type Context = crate::reconciles::Context<ContainerCheckpoint, ContainerCheckpointContent>;

/// The controller of the requests: a change of one, or of its Content, reconciles it.
pub fn controller(
    stores: &Stores,
    (requests, contents): (
        Changes<ContainerCheckpoint>,
        Changes<ContainerCheckpointContent>,
    ),
) -> Controller<ContainerCheckpoint> {
    Controller::for_stream(requests, stores.requests.clone()).owns_stream(contents)
}
