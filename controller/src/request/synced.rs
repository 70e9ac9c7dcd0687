//! Which watches have listed everything, as flags the reconciles, retention and `/readyz` read.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One flag per watch, set once it has listed everything. Reconciles and retention read these
/// instead of awaiting `Store::wait_until_ready`, which wakes only the last of several tasks
/// waiting at once (kube-runtime keeps one waker): the others would hang for good.
#[derive(Clone, Default)]
pub struct Synced {
    pub requests: Arc<AtomicBool>,
    pub contents: Arc<AtomicBool>,
    pub leases: Arc<AtomicBool>,
}

impl Synced {
    /// Whether the Content and Lease stores a reconcile decides from have listed everything.
    pub fn for_reconciles(&self) -> bool {
        self.contents.load(Ordering::Relaxed) && self.leases.load(Ordering::Relaxed)
    }
}
