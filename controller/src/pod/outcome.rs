//! The Events a migration's end leaves on the pods it moved: `Migrated` on the restored pod,
//! `MigrationFailed` on the source while it still exists. `kubectl describe pod` shows them
//! without knowing our kinds. Pure.

use checkpointing::crd::{MigrationPhase, PodMigration, PodMigrationStatus};
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};

use crate::shell::pod_reference;
use crate::status::{MAX_EVENT_NOTE, truncated};

/// The pods a migration's reconcile saw.
pub struct Seen<'a> {
    /// The pod named `spec.podName`, when it was read.
    pub source: Option<Option<&'a Pod>>,
    /// The pods labelled as restored by the migration.
    pub restored: &'a [Pod],
}

/// The pod to tell, and what, when a migration reaches `status`'s final phase.
pub fn pod_event(
    migration: &PodMigration,
    status: &PodMigrationStatus,
    seen: &Seen,
) -> Option<(ObjectReference, Event)> {
    let namespace = migration.namespace().unwrap_or_default();
    let name = migration.name_any();
    let source = &migration.spec.pod_name;
    let source_uid = status.source_pod_uid.as_deref();
    let (pod, type_, reason, note) = match status.phase? {
        MigrationPhase::Succeeded => {
            let restored = status.restored_pod.as_deref()?;
            let uid = seen
                .restored
                .iter()
                .find(|p| p.name_any() == restored)
                .and_then(|p| p.metadata.uid.as_deref());
            let from = status.source_node.as_deref().unwrap_or("?");
            let downtime = status
                .downtime_milliseconds
                .map(|ms| format!("; downtime {ms} ms"))
                .unwrap_or_default();
            (
                pod_reference(&namespace, restored, uid),
                EventType::Normal,
                "Migrated",
                format!(
                    "restored from pod {source} on node {from} by PodMigration {name}{downtime}"
                ),
            )
        }
        MigrationPhase::Failed => {
            // Not read (the checkpoint was still being taken): the source is deleted only
            // after that, so it is there.
            let gone = seen.source.is_some_and(|pod| {
                pod.is_none_or(|p| source_uid.is_some() && p.metadata.uid.as_deref() != source_uid)
            });
            if gone {
                return None;
            }
            let why = status.message.as_deref().unwrap_or_default();
            (
                pod_reference(&namespace, source, source_uid),
                EventType::Warning,
                "MigrationFailed",
                format!("PodMigration {name} failed: {why}"),
            )
        }
        _ => return None,
    };
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(truncated(&note, MAX_EVENT_NOTE)),
        action: "Migrate".to_owned(),
        secondary: Some(migration.object_ref(&())),
    };
    Some((pod, event))
}

#[cfg(test)]
mod tests {
    use checkpointing::crd::PodMigrationSpec;

    use super::*;

    fn migration() -> PodMigration {
        let mut m = PodMigration::new(
            "move",
            PodMigrationSpec {
                pod_name: "app".into(),
                target_node: None,
                delete_source: None,
                timeout_seconds: None,
                registry: None,
                from_checkpoint: None,
            },
        );
        m.metadata.namespace = Some("default".into());
        m
    }

    fn pod(name: &str, uid: &str) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(uid.into());
        p
    }

    fn ended(phase: MigrationPhase) -> PodMigrationStatus {
        PodMigrationStatus {
            phase: Some(phase),
            message: Some("the target refused".into()),
            source_node: Some("node1".into()),
            source_pod_uid: Some("uid-app".into()),
            restored_pod: Some("app-restored".into()),
            downtime_milliseconds: Some(840),
            ..Default::default()
        }
    }

    #[test]
    fn the_restored_pod_hears_where_it_came_from() {
        let restored = [pod("app-restored", "uid-new")];
        let seen = Seen {
            source: None,
            restored: &restored,
        };
        let (to, event) =
            pod_event(&migration(), &ended(MigrationPhase::Succeeded), &seen).unwrap();
        assert_eq!(to.name.as_deref(), Some("app-restored"));
        assert_eq!(to.uid.as_deref(), Some("uid-new"));
        assert_eq!(event.reason, "Migrated");
        let note = event.note.unwrap();
        assert!(
            note.contains("pod app") && note.contains("node1") && note.contains("840 ms"),
            "{note}"
        );
        assert_eq!(event.secondary.unwrap().name.as_deref(), Some("move"));
    }

    #[test]
    fn a_failure_is_told_to_the_source_while_it_exists() {
        let failed = ended(MigrationPhase::Failed);
        let source = pod("app", "uid-app");
        let told = |source| {
            let seen = Seen {
                source,
                restored: &[],
            };
            pod_event(&migration(), &failed, &seen)
        };
        let (to, event) = told(Some(Some(&source))).unwrap();
        assert_eq!(to.uid.as_deref(), Some("uid-app"));
        assert_eq!(event.reason, "MigrationFailed");
        assert_eq!(event.type_, EventType::Warning);
        assert!(event.note.unwrap().contains("the target refused"));
        assert!(told(None).is_some(), "not read: not deleted yet");
        assert!(told(Some(None)).is_none(), "gone");
        let other = pod("app", "uid-other");
        assert!(
            told(Some(Some(&other))).is_none(),
            "another pod of its name"
        );
    }

    #[test]
    fn other_phases_tell_no_pod() {
        let seen = Seen {
            source: None,
            restored: &[],
        };
        let restoring = ended(MigrationPhase::Restoring);
        assert!(pod_event(&migration(), &restoring, &seen).is_none());
    }
}
