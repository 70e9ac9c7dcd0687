//! What this controller wrote that the watches may not show yet. A reconcile decides from the
//! stores, and a store can lag behind our own writes: deciding from a stale copy would create
//! the Content again, or write a final state (and its Event) twice. So each write is remembered
//! here until the store shows it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use checkpointing::crd::{
    ContainerCheckpoint, ContainerCheckpointContent, ContainerCheckpointStatus,
};

/// Remembered per request uid (a re-created request of the same name starts afresh).
#[derive(Default)]
pub struct Written(Mutex<HashMap<String, Record>>);

#[derive(Default)]
struct Record {
    status: Option<ContainerCheckpointStatus>,
    content: Option<ContainerCheckpointContent>,
}

impl Written {
    /// The request and its Content as our last writes left them: the stores' copies, unless
    /// they lag behind. What the stores show now is forgotten.
    pub fn catch_up(
        &self,
        request: &ContainerCheckpoint,
        stored: Option<&ContainerCheckpointContent>,
    ) -> (ContainerCheckpoint, Option<ContainerCheckpointContent>) {
        let mut request = request.clone();
        let mut content = stored.cloned();
        let Some(uid) = request.metadata.uid.clone() else {
            return (request, content);
        };
        let mut all = self.lock();
        if let Some(record) = all.get_mut(&uid) {
            // We are the only writer of the status, so any other status is an older one.
            if record.status == request.status {
                record.status = None;
            } else if let Some(status) = &record.status {
                request.status = Some(status.clone());
            }
            if content.is_some() {
                record.content = None;
            } else {
                content.clone_from(&record.content);
            }
            if record.status.is_none() && record.content.is_none() {
                all.remove(&uid);
            }
        }
        (request, content)
    }

    pub fn status(&self, request: &ContainerCheckpoint, status: ContainerCheckpointStatus) {
        if let Some(uid) = request.metadata.uid.clone() {
            self.lock().entry(uid).or_default().status = Some(status);
        }
    }

    pub fn content(&self, request: &ContainerCheckpoint, content: ContainerCheckpointContent) {
        if let Some(uid) = request.metadata.uid.clone() {
            self.lock().entry(uid).or_default().content = Some(content);
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Record>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{content, request};
    use checkpointing::crd::CheckpointState;

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
        written.content(&req, content());

        // The stores lag: our writes stand in, and stay remembered.
        for _ in 0..2 {
            let (seen, created) = written.catch_up(&req, None);
            assert_eq!(seen.status, Some(pending()));
            assert!(created.is_some());
        }

        // The stores caught up: theirs is used and ours forgotten.
        let mut shown = req.clone();
        shown.status = Some(pending());
        let stored = content();
        let (seen, created) = written.catch_up(&shown, Some(&stored));
        assert_eq!(seen.status, Some(pending()));
        assert!(created.is_some());
        let (seen, created) = written.catch_up(&req, None);
        assert_eq!(seen.status, None);
        assert!(created.is_none());
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
