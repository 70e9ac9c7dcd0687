//! A short-lived memory: values answer for a fixed time after they were put, then are gone.
//! Saves asking the API server again for what it just told us. Bounded: what strangers can
//! make it remember (refused tokens) must not grow it without end.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries a memory holds unless told otherwise: far more than a node's pods and peers.
const DEFAULT_MAX: usize = 4096;

pub struct Recent<V> {
    ttl: Duration,
    max: usize,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Recent<V> {
    pub fn new(ttl: Duration) -> Self {
        Self::bounded(ttl, DEFAULT_MAX)
    }

    /// A memory of at most `max` entries (at least one): when full, the oldest goes first.
    pub fn bounded(ttl: Duration, max: usize) -> Self {
        Self {
            ttl,
            max: max.max(1),
            entries: Mutex::default(),
        }
    }

    /// The value put under `key` less than the ttl ago.
    pub fn get(&self, key: &str) -> Option<V> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
        entries.get(key).map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: String, value: V) {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.max && !entries.contains_key(&key) {
            entries.retain(|_, (at, _)| now.duration_since(*at) < self.ttl);
            while entries.len() >= self.max {
                let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                else {
                    break;
                };
                entries.remove(&oldest);
            }
        }
        entries.insert(key, (now, value));
    }

    /// Entries held (expired ones included until the next lookup).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_answer_until_their_time_is_up() {
        let recent = Recent::new(Duration::from_secs(60));
        assert_eq!(recent.get("a"), None);
        recent.put("a".into(), 1);
        assert_eq!(recent.get("a"), Some(1));
        assert_eq!(recent.get("b"), None);
        let expired = Recent::new(Duration::ZERO);
        expired.put("a".into(), 1);
        assert_eq!(expired.get("a"), None);
    }

    #[test]
    fn a_full_memory_forgets_its_oldest_entry_first() {
        let recent = Recent::bounded(Duration::from_secs(60), 3);
        for (i, key) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            recent.put(key.into(), i);
            std::thread::sleep(Duration::from_millis(2));
        }
        assert_eq!(recent.len(), 3);
        assert_eq!(recent.get("a"), None);
        assert_eq!(recent.get("b"), None);
        assert_eq!(recent.get("e"), Some(4));
        // Putting a key held again replaces it in place.
        recent.put("c".into(), 9);
        assert_eq!((recent.len(), recent.get("c")), (3, Some(9)));
    }
}
