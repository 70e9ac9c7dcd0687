//! What `/readyz` means for the controller: a follower is ready once the watch its webhook
//! reads (the noded Leases) has listed its objects; the leader once every watch has.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpointing::admin::Readiness;

pub struct Ready {
    /// One flag per watch of the leader's, set once it has listed its objects.
    pub watches: Vec<Arc<AtomicBool>>,
    /// The same for the watches every replica runs.
    pub serving: Vec<Arc<AtomicBool>>,
    /// Whether this replica leads.
    pub leading: Arc<AtomicBool>,
}

impl Readiness for Ready {
    fn readiness(&self) -> (bool, String) {
        let synced =
            |watches: &[Arc<AtomicBool>]| watches.iter().all(|w| w.load(Ordering::Relaxed));
        if !synced(&self.serving) {
            (false, "watches not synced yet\n".into())
        } else if !self.leading.load(Ordering::Relaxed) {
            (true, "ready (follower)\n".into())
        } else if synced(&self.watches) {
            (true, "ready\n".into())
        } else {
            (false, "watches not synced yet\n".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_follower_is_ready_once_the_leases_synced_and_the_leader_once_every_watch_has() {
        let (requests, contents) = (Arc::<AtomicBool>::default(), Arc::<AtomicBool>::default());
        let leases = Arc::<AtomicBool>::default();
        let ready = Ready {
            watches: vec![requests.clone(), contents.clone()],
            serving: vec![leases.clone()],
            leading: Arc::default(),
        };
        assert!(!ready.readiness().0);
        leases.store(true, Ordering::Relaxed);
        assert_eq!(ready.readiness(), (true, "ready (follower)\n".into()));
        ready.leading.store(true, Ordering::Relaxed);
        assert!(!ready.readiness().0);
        requests.store(true, Ordering::Relaxed);
        assert!(!ready.readiness().0);
        contents.store(true, Ordering::Relaxed);
        assert_eq!(ready.readiness(), (true, "ready\n".into()));
    }
}
