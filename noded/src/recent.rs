//! A short-lived memory: values answer for a fixed time after they were put, then are gone.
//! Saves asking the API server again for what it just told us.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Recent<V> {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> Recent<V> {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
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
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (Instant::now(), value));
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
}
