//! Reconciling a ContainerCheckpoint, in layers: [`shell`] reads the stores (and the pod),
//! carries the plan out and reports (on the pod too: [`outcome`]); [`plan`] decides from what was observed, calling the lower
//! [`crate::status`] and [`crate::validation`].

mod credentials;
mod error;
mod outcome;
mod plan;
mod shell;

use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointContent};
use kube::runtime::controller::{Config, Controller};

pub use shell::reconcile;

use crate::stores::{Changes, Stores};

/// What a ContainerCheckpoint's reconciles share; they create its Content.
pub type Context = crate::reconciles::Context<ContainerCheckpoint, ContainerCheckpointContent>;

/// How many requests are reconciled at once. Unbounded, a thousand requests created within
/// seconds would each read their pod at the same moment: more calls in flight than the API
/// server's fair queueing holds for one client, which it may turn away (429), and each retry
/// of kube's client (on 429, 503, 504) is one more call. Waiting here costs no call; a
/// reconcile that calls the API server lasts a few round trips.
const CONCURRENCY: u16 = 32;

/// The controller of the requests: a change of one, or of its Content, reconciles it.
pub fn controller(
    stores: &Stores,
    (requests, contents): (
        Changes<ContainerCheckpoint>,
        Changes<ContainerCheckpointContent>,
    ),
) -> Controller<ContainerCheckpoint> {
    Controller::for_stream(requests, stores.requests.clone())
        .owns_stream(contents)
        .with_config(Config::default().concurrency(CONCURRENCY))
}
