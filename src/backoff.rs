//! Retry waits shared by both daemons: doubling from one second, capped, counted per key (a
//! request, a Content, a registration) so one failing object does not slow the others.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// The longest wait between two attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Wait before retry number `failures` (1-based): doubling from one second, capped.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// Consecutive failures per key.
#[derive(Debug)]
pub struct Failures<K> {
    counts: Mutex<HashMap<K, u32>>,
}

impl<K> Default for Failures<K> {
    fn default() -> Self {
        Self {
            counts: Mutex::default(),
        }
    }
}

impl<K: Hash + Eq> Failures<K> {
    /// Counts one more failure of `key`; returns how many in a row and the wait before the
    /// next attempt.
    pub fn failed(&self, key: K) -> (u32, Duration) {
        let mut counts = self.counts();
        let n = counts.entry(key).or_default();
        *n = n.saturating_add(1);
        (*n, backoff(*n))
    }

    /// `key` succeeded: its next failure waits the shortest time again.
    pub fn succeeded(&self, key: &K) {
        self.counts().remove(key);
    }

    fn counts(&self) -> MutexGuard<'_, HashMap<K, u32>> {
        // A panic while holding this lock cannot leave a count map inconsistent.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn failures_count_per_key_and_reset_on_success() {
        let f = Failures::default();
        assert_eq!(f.failed("a"), (1, Duration::from_secs(1)));
        assert_eq!(f.failed("a"), (2, Duration::from_secs(2)));
        assert_eq!(f.failed("b"), (1, Duration::from_secs(1)));
        f.succeeded(&"a");
        assert_eq!(f.failed("a"), (1, Duration::from_secs(1)));
        assert_eq!(f.failed("b"), (2, Duration::from_secs(2)));
    }
}
