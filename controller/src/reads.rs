//! What a request's reconcile read from the API server rather than from a watch (its pod),
//! kept until the look its decision asked for. Until then a reconcile comes from something
//! that does not change the read (the echo of our own status write, an event of the
//! request's Content, the retry of a failed write): reading again would cost a call and decide
//! the same.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::Resource;

/// Kept per request uid: a request's spec cannot change, so its uid names what it reads (a
/// re-created request of the same name reads afresh). `R`: the kind read; an absent object is
/// a read too.
pub struct Reads<R>(Mutex<HashMap<String, Read<R>>>);

struct Read<R> {
    object: Option<R>,
    until: Timestamp,
}

impl<R> Default for Reads<R> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<R: Clone> Reads<R> {
    /// What was read for `request`, if it still stands at `now`.
    pub fn recall(&self, request: &impl Resource, now: Timestamp) -> Option<Option<R>> {
        let uid = request.meta().uid.as_ref()?;
        let all = self.lock();
        let read = all.get(uid).filter(|read| stands(read, now))?;
        Some(read.object.clone())
    }

    /// `object` was read for `request` at `now`, and stands in for reading again for `span`.
    pub fn remember(
        &self,
        request: &impl Resource,
        object: Option<R>,
        now: Timestamp,
        span: Duration,
    ) {
        let (Some(uid), Ok(until)) = (request.meta().uid.clone(), now.checked_add(span)) else {
            return;
        };
        let mut all = self.lock();
        // Reads past their time are never recalled: dropping them here bounds the map by the
        // requests read within the longest span (a request may be deleted before it is done).
        all.retain(|_, read| stands(read, now));
        all.insert(uid, Read { object, until });
    }

    /// `request` needs no read any more (what it was read for is done).
    pub fn forget(&self, request: &impl Resource) {
        if let Some(uid) = &request.meta().uid {
            self.lock().remove(uid);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Read<R>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn stands<R>(read: &Read<R>, now: Timestamp) -> bool {
    now < read.until
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use k8s_openapi::api::core::v1::Pod;

    use crate::fixtures::{now, pod, request};

    type Reads = super::Reads<Pod>;

    #[test]
    fn a_read_stands_in_until_its_time_then_is_read_again() {
        let reads = Reads::default();
        let req = request();
        let second = Duration::from_secs(1);
        assert_eq!(reads.recall(&req, now()), None, "never read");
        reads.remember(&req, Some(pod()), now(), second);
        assert_eq!(reads.recall(&req, now()), Some(Some(pod())));
        assert_eq!(
            reads.recall(&req, now() + second),
            None,
            "time to look again"
        );
        // Not found is an answer too.
        reads.remember(&req, None, now(), second);
        assert_eq!(reads.recall(&req, now()), Some(None));
        reads.forget(&req);
        assert_eq!(reads.recall(&req, now()), None, "forgotten");
    }

    #[test]
    fn a_recreated_request_reads_afresh() {
        let reads = Reads::default();
        reads.remember(&request(), Some(pod()), now(), Duration::from_secs(60));
        let mut again = request();
        again.metadata.uid = Some("uid-cc1-again".into());
        assert_eq!(reads.recall(&again, now()), None);
    }

    #[test]
    fn reads_past_their_time_are_dropped() {
        let reads = Reads::default();
        reads.remember(&request(), Some(pod()), now(), Duration::from_secs(1));
        let mut other = request();
        other.metadata.uid = Some("uid-cc2".into());
        let later = now() + Duration::from_secs(2);
        reads.remember(&other, None, later, Duration::from_secs(1));
        assert_eq!(reads.0.lock().unwrap().len(), 1);
    }
}
