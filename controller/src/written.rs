//! What the controller wrote that the watches may not show yet. A reconcile decides from the
//! stores, and a store can lag behind our own writes: deciding from a stale copy would create
//! an object again, or write a final state (and its Event) twice. So each write (a request's
//! status, the objects made for it) is remembered here until the store shows it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use kube::ResourceExt;

use crate::kinds::Request;

/// Remembered per request uid (a re-created request of the same name starts afresh); `C`: the
/// kind of the objects a request's reconciles create.
pub struct Written<K: Request, C>(Mutex<HashMap<String, Record<K::Status, C>>>);

struct Record<S, C> {
    status: Option<S>,
    created: Vec<C>,
}

impl<K: Request, C> Default for Written<K, C> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Request, C: ResourceExt + Clone> Written<K, C> {
    /// The request and the objects made for it as our last writes left them: the stores'
    /// copies (`stored`), unless they lag behind. What the stores show now is forgotten.
    pub fn catch_up<'a>(&self, request: &K, stored: impl IntoIterator<Item = &'a C>) -> (K, Vec<C>)
    where
        C: 'a,
    {
        let mut request = request.clone();
        let mut objects: Vec<C> = stored.into_iter().cloned().collect();
        let Some(uid) = request.meta().uid.clone() else {
            return (request, objects);
        };
        let mut all = self.lock();
        if let Some(record) = all.get_mut(&uid) {
            // We are the only writer of the status, so any other status is an older one.
            let shown = request.status_mut();
            if record.status == *shown {
                record.status = None;
            } else if let Some(status) = &record.status {
                *shown = Some(status.clone());
            }
            record
                .created
                .retain(|c| !objects.iter().any(|o| o.name_any() == c.name_any()));
            objects.extend(record.created.iter().cloned());
            if record.status.is_none() && record.created.is_empty() {
                all.remove(&uid);
            }
        }
        (request, objects)
    }

    pub fn status(&self, request: &K, status: K::Status) {
        if let Some(uid) = request.meta().uid.clone() {
            self.lock().entry(uid).or_insert_with(Record::empty).status = Some(status);
        }
    }

    /// `object` was made for `request`.
    pub fn created(&self, request: &K, object: C) {
        if let Some(uid) = request.meta().uid.clone() {
            let mut all = self.lock();
            let created = &mut all.entry(uid).or_insert_with(Record::empty).created;
            created.retain(|c| c.name_any() != object.name_any());
            created.push(object);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record<K::Status, C>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<S, C> Record<S, C> {
    fn empty() -> Self {
        Self {
            status: None,
            created: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fixtures::{content, request};
    use checkpointing::crd::{
        CheckpointState, ContainerCheckpoint, ContainerCheckpointContent, ContainerCheckpointStatus,
    };

    type Written = super::Written<ContainerCheckpoint, ContainerCheckpointContent>;

    fn pending() -> ContainerCheckpointStatus {
        ContainerCheckpointStatus {
            state: Some(CheckpointState::Pending),
            ..Default::default()
        }
    }

    #[test]
    fn writes_stand_in_for_the_stores_until_they_show_them() {
        let written = Written::default();
        let req = request();
        written.status(&req, pending());
        written.created(&req, content());

        // The stores lag: our writes stand in, and stay remembered.
        for _ in 0..2 {
            let (seen, created) = written.catch_up(&req, None);
            assert_eq!(seen.status, Some(pending()));
            assert!(!created.is_empty());
        }

        // The stores caught up: theirs is used and ours forgotten.
        let mut shown = req.clone();
        shown.status = Some(pending());
        let stored = content();
        let (seen, created) = written.catch_up(&shown, Some(&stored));
        assert_eq!(seen.status, Some(pending()));
        assert!(!created.is_empty());
        let (seen, created) = written.catch_up(&req, None);
        assert_eq!(seen.status, None);
        assert!(created.is_empty());
    }

    #[test]
    fn a_status_with_whole_second_times_is_forgotten_once_read_back() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
        use k8s_openapi::jiff::Timestamp;
        let written = Written::default();
        let req = request();
        let mut status = pending();
        status.conditions = vec![Condition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: "Pending".into(),
            message: String::new(),
            last_transition_time: Time(Timestamp::from_second(1_764_633_600).unwrap()),
            observed_generation: None,
        }];
        written.status(&req, status.clone());
        // What the API server echoes: the same status after a JSON round trip.
        let mut shown = req.clone();
        shown.status = serde_json::from_value(serde_json::to_value(&status).unwrap()).unwrap();
        written.catch_up(&shown, Some(&content()));
        assert_eq!(written.catch_up(&req, None).0.status, None, "forgotten");
    }

    #[test]
    fn a_recreated_request_starts_afresh() {
        let written = Written::default();
        written.status(&request(), pending());
        let mut again = request();
        again.metadata.uid = Some("uid-cc1-again".into());
        assert_eq!(written.catch_up(&again, None).0.status, None);
    }
}
