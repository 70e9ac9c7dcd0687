//! Async locks by key: work on the same thing (a container, an image tag) queues instead of
//! racing, work on different things runs in parallel.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default, Debug)]
pub struct KeyedLocks(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl KeyedLocks {
    /// The lock of `key`. Locks nobody holds or waits for are dropped on the way.
    pub fn get(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(key.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_shares_a_lock_and_idle_locks_are_dropped() {
        let locks = KeyedLocks::default();
        let a = locks.get("a");
        let guard = a.lock().await;
        assert!(locks.get("a").try_lock().is_err(), "same key, same lock");
        assert!(locks.get("b").try_lock().is_ok(), "other key, other lock");
        drop(guard);
        drop(a);
        locks.get("c");
        assert_eq!(
            locks.0.lock().unwrap().len(),
            1,
            "only the newest entry is left"
        );
    }
}
