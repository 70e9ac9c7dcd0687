//! What every reconcile shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use checkpointing::crd::ContainerCheckpoint;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;

use crate::admin::Metrics;

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub lease_namespace: String,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per request, for the backoff.
    failures: Mutex<HashMap<ObjectRef<ContainerCheckpoint>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        lease_namespace: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            recorder,
            lease_namespace,
            metrics,
            failures: Mutex::default(),
        }
    }

    pub(super) fn failures(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<ContainerCheckpoint>, u32>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
