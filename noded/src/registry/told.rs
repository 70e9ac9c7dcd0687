//! The Events the node-local registry leaves on the pods it pulls for, so that the user who
//! sees `ErrImagePull` finds why in `kubectl describe pod`: a pull refused or failed
//! (`CheckpointImageRefused`, `RestorePreparationFailed`), at most one per pod and reason a
//! [`INTERVAL`] (the kubelet retries with backoff), and `RestorePrepared` once per pod and
//! checkpoint. What to say is decided here (pure); [`Told`] remembers what was said.

use checkpointing::text::{MAX_EVENT_NOTE, truncated};
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};

use super::auth::Puller;
use super::problem::Problem;
use crate::images::{Origin, Repo};
use crate::recent::Recent;

/// Least time between two Events of one reason on one pod.
pub const INTERVAL: Duration = Duration::from_secs(60);
/// How long a pod's prepared restore is remembered: longer than its pulls go on.
const PREPARED_TTL: Duration = Duration::from_secs(3600);

/// What was told lately, by pod.
pub struct Told {
    lately: Recent<()>,
    prepared: Recent<()>,
}

impl Default for Told {
    fn default() -> Self {
        Self {
            lately: Recent::new(INTERVAL),
            prepared: Recent::new(PREPARED_TTL),
        }
    }
}

impl Told {
    /// The Event of `problem` answering `puller`'s request for `path` on `node`, unless one of
    /// its reason went to that pod less than [`INTERVAL`] ago.
    pub fn problem(
        &self,
        puller: &Puller,
        node: &str,
        path: &str,
        problem: &Problem,
    ) -> Option<(ObjectReference, Event)> {
        let event = problem_event(puller, node, path, problem)?;
        first(&self.lately, format!("{} {}", puller.uid, event.reason))?;
        Some((regarding(puller), event))
    }

    /// The Event of `puller`'s restore of `repo` prepared from `origin`, the first time only.
    pub fn prepared(
        &self,
        puller: &Puller,
        repo: &Repo,
        origin: &Origin,
    ) -> Option<(ObjectReference, Event)> {
        first(&self.prepared, format!("{} {repo}", puller.uid))?;
        let note = format!("checkpoint {repo} is ready to restore, its image from {origin}");
        Some((
            regarding(puller),
            event(EventType::Normal, "RestorePrepared", note),
        ))
    }
}

/// `Some` when `key` was not in `memory`, which now holds it.
fn first(memory: &Recent<()>, key: String) -> Option<()> {
    if memory.get(&key).is_some() {
        return None;
    }
    memory.put(key, ());
    Some(())
}

/// What `problem` tells the pod: a refusal (it may not have what it asked for, or there is
/// none) or a failure to prepare its restore (fetching the image, the base image, the
/// volumes). `None` for what no pod caused.
pub fn problem_event(puller: &Puller, node: &str, path: &str, problem: &Problem) -> Option<Event> {
    let status = problem.status().0;
    let (type_, reason, note) = if status.is_client_error() {
        let note = format!(
            "the checkpoint registry of node {node} refused to serve {path} to pod {puller}: {problem}"
        );
        (EventType::Warning, "CheckpointImageRefused", note)
    } else if status.is_server_error() {
        let note = format!("preparing the restore from {path} on node {node} failed: {problem}");
        (EventType::Warning, "RestorePreparationFailed", note)
    } else {
        return None;
    };
    Some(event(type_, reason, note))
}

fn event(type_: EventType, reason: &str, note: String) -> Event {
    let note = truncated(&note, MAX_EVENT_NOTE);
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Restore".to_owned(),
        secondary: None,
    }
}

/// The pod a pull's token is bound to.
fn regarding(puller: &Puller) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        namespace: Some(puller.namespace.clone()),
        name: Some(puller.pod.clone()),
        uid: Some(puller.uid.clone()),
        ..ObjectReference::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn puller() -> Puller {
        Puller {
            namespace: "default".into(),
            pod: "app".into(),
            uid: "uid-app".into(),
        }
    }

    #[test]
    fn a_refusal_says_who_may_not_pull_what_once_a_minute() {
        let told = Told::default();
        let path = "/v2/default/cp/manifests/sha256:ab";
        let refused = Problem::Forbidden("pod default/app does not reference x".into());
        let (pod, event) = told.problem(&puller(), "node1", path, &refused).unwrap();
        assert_eq!(pod.uid.as_deref(), Some("uid-app"));
        assert_eq!(pod.kind.as_deref(), Some("Pod"));
        assert_eq!(event.reason, "CheckpointImageRefused");
        let note = event.note.unwrap();
        assert!(
            note.contains("pod default/app")
                && note.contains(path)
                && note.contains("does not reference x"),
            "{note}"
        );
        assert!(
            told.problem(&puller(), "node1", path, &refused).is_none(),
            "within the minute"
        );
        // Another reason, or another pod, is told.
        let failed = Problem::Unavailable("making base image busybox present".into());
        let (_, event) = told.problem(&puller(), "node1", path, &failed).unwrap();
        assert_eq!(event.reason, "RestorePreparationFailed");
        assert!(event.note.unwrap().contains("base image"));
        let other = Puller {
            uid: "uid-other".into(),
            ..puller()
        };
        assert!(told.problem(&other, "node1", path, &refused).is_some());
    }

    #[test]
    fn a_prepared_restore_is_told_once_with_where_its_image_came_from() {
        let told = Told::default();
        let repo = Repo {
            namespace: "default".into(),
            name: "cp".into(),
        };
        let origin = Origin::Peer("node1".into());
        let (_, event) = told.prepared(&puller(), &repo, &origin).unwrap();
        assert_eq!(event.reason, "RestorePrepared");
        assert_eq!(event.type_, EventType::Normal);
        let note = event.note.unwrap();
        assert!(
            note.contains("default/cp") && note.contains("node node1"),
            "{note}"
        );
        assert!(told.prepared(&puller(), &repo, &origin).is_none());
    }

    #[test]
    fn a_long_note_is_cut_to_the_api_servers_limit() {
        let long = Problem::Internal("é".repeat(2000));
        let event = problem_event(&puller(), "node1", "/v2/", &long).unwrap();
        assert!(event.note.unwrap().len() <= MAX_EVENT_NOTE);
    }
}
