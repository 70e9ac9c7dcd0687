//! What `/readyz` means for the controller: a follower runs no watches and is ready (it serves
//! the webhook); the leader is ready once every watch has listed its objects.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpointing::admin::Readiness;

pub struct Ready {
    /// One flag per watch, set once it has listed its objects.
    pub watches: Vec<Arc<AtomicBool>>,
    /// Whether this replica leads.
    pub leading: Arc<AtomicBool>,
}

impl Readiness for Ready {
    fn readiness(&self) -> (bool, String) {
        if !self.leading.load(Ordering::Relaxed) {
            (true, "ready (follower)\n".into())
        } else if self.watches.iter().all(|w| w.load(Ordering::Relaxed)) {
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
    fn a_follower_is_ready_and_the_leader_once_every_watch_has_synced() {
        let (requests, contents) = (Arc::<AtomicBool>::default(), Arc::<AtomicBool>::default());
        let ready = Ready {
            watches: vec![requests.clone(), contents.clone()],
            leading: Arc::default(),
        };
        assert_eq!(ready.readiness(), (true, "ready (follower)\n".into()));
        ready.leading.store(true, Ordering::Relaxed);
        assert!(!ready.readiness().0);
        requests.store(true, Ordering::Relaxed);
        assert!(!ready.readiness().0);
        contents.store(true, Ordering::Relaxed);
        assert_eq!(ready.readiness(), (true, "ready\n".into()));
    }
}
