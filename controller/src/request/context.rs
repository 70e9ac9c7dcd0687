//! What every reconcile shares: the clients, the stores the watches keep, and what the
//! controller remembers between reconciles.

use std::sync::Arc;

use checkpointing::backoff::Failures;

use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointContent};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};

use super::synced::Synced;
use super::written::Written;
use crate::metrics::Metrics;

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// The Contents, as the Controller's own Content watch keeps them.
    pub contents: Store<ContainerCheckpointContent>,
    /// The noded Leases: every Lease of this namespace.
    pub leases: Store<Lease>,
    pub lease_namespace: String,
    /// Our writes the stores may not show yet.
    pub written: Written,
    /// Which stores have listed everything.
    pub synced: Synced,
    /// Consecutive failures per request, for the backoff.
    pub failures: Failures<ObjectRef<ContainerCheckpoint>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        contents: Store<ContainerCheckpointContent>,
        leases: Store<Lease>,
        lease_namespace: String,
        synced: Synced,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            contents,
            leases,
            lease_namespace,
            written: Written::default(),
            synced,
            failures: Failures::default(),
        }
    }
}
