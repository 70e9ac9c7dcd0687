//! A workload's replacement for a migrating pod. When a migration deletes a ReplicaSet's or
//! StatefulSet's pod, that controller makes a new one; the webhook recognizes it by its owner
//! (and, for a StatefulSet, its name) and makes it the restore, on the migration's target.
//! The workload stays the owner. Pure.

use checkpointing::crd::{MigrationPhase, PodMigration};
use checkpointing::names::{MIGRATION_LABEL, RESTORE_FROM_ANNOTATION};
use k8s_openapi::api::core::v1::{Affinity, Pod};
use serde_json::{Value, json};

use super::admission::pointer_token;
use super::workload::controller_of;
use crate::placement::Placement;

/// The migration whose source `pod` replaces: one that is restoring, has no restored pod yet
/// and deleted a pod of the same owner (for a StatefulSet, of the same name).
pub fn migration_of<'m>(pod: &Pod, migrations: &'m [PodMigration]) -> Option<&'m PodMigration> {
    let owner = controller_of(pod)?;
    migrations.iter().find(|m| {
        let Some(status) = m.status.as_ref() else {
            return false;
        };
        status.phase == Some(MigrationPhase::Restoring)
            && status.restored_pod.is_none()
            && status.owner_uid.as_deref() == Some(owner.uid.as_str())
            && (owner.kind != "StatefulSet"
                || pod.metadata.name.as_deref() == Some(m.spec.pod_name.as_str()))
    })
}

/// JSON patch operations that make `pod` the migration's restored pod: `restore-from` naming
/// its PodCheckpoint and the migration label. They come before the restore's own operations,
/// which add to the annotations map. Its placement is [`affinity`].
pub fn marks(pod: &Pod, migration: &PodMigration) -> Vec<Value> {
    let name = migration.metadata.name.clone().unwrap_or_default();
    let status = migration.status.clone().unwrap_or_default();
    let checkpoint = status
        .pod_checkpoint
        .clone()
        .unwrap_or_else(|| name.clone());
    let mut ops = Vec::new();
    for (map, key, value, present) in [
        (
            "annotations",
            RESTORE_FROM_ANNOTATION,
            checkpoint,
            pod.metadata.annotations.is_some(),
        ),
        (
            "labels",
            MIGRATION_LABEL,
            name,
            pod.metadata.labels.is_some(),
        ),
    ] {
        if !present {
            ops.push(json!({"op": "add", "path": format!("/metadata/{map}"), "value": {}}));
        }
        ops.push(json!({
            "op": "add",
            "path": format!("/metadata/{map}/{}", pointer_token(key)),
            "value": value,
        }));
    }
    ops
}

/// The pod's affinity with the migration's placement (its target, or away from its source)
/// required as well; the webhook narrows it further to the nodes that can restore.
pub fn affinity(pod: &Pod, migration: &PodMigration) -> Affinity {
    let status = migration.status.clone().unwrap_or_default();
    Placement::of(&migration.spec, &status)
        .apply(pod.spec.as_ref().and_then(|s| s.affinity.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpointing::crd::{PodMigrationSpec, PodMigrationStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn migration(phase: MigrationPhase, restored: Option<&str>) -> PodMigration {
        let mut m = PodMigration::new(
            "move-web",
            PodMigrationSpec {
                pod_name: "web-0".into(),
                target_node: Some("node2".into()),
                delete_source: None,
                timeout_seconds: None,
                registry: None,
                from_checkpoint: None,
            },
        );
        m.status = Some(PodMigrationStatus {
            phase: Some(phase),
            source_node: Some("node1".into()),
            owner_uid: Some("uid-sts".into()),
            pod_checkpoint: Some("move-web".into()),
            restored_pod: restored.map(Into::into),
            ..Default::default()
        });
        m
    }

    fn replacement(kind: &str, name: &str, uid: &str) -> Pod {
        let mut pod = Pod {
            spec: Some(Default::default()),
            ..Pod::default()
        };
        pod.metadata.name = Some(name.into());
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: kind.into(),
            uid: uid.into(),
            controller: Some(true),
            ..Default::default()
        }]);
        pod
    }

    #[test]
    fn only_the_restoring_migration_of_the_same_owner_and_name_claims_a_pod() {
        let restoring = [migration(MigrationPhase::Restoring, None)];
        let sts = replacement("StatefulSet", "web-0", "uid-sts");
        assert!(migration_of(&sts, &restoring).is_some());
        // Another ordinal of the same StatefulSet, another owner, another kind of owner.
        assert!(
            migration_of(&replacement("StatefulSet", "web-1", "uid-sts"), &restoring).is_none()
        );
        assert!(
            migration_of(
                &replacement("StatefulSet", "web-0", "uid-other"),
                &restoring
            )
            .is_none()
        );
        assert!(migration_of(&replacement("DaemonSet", "web-0", "uid-sts"), &restoring).is_none());
        // A ReplicaSet's replacement has a generated name: the owner alone tells.
        assert!(
            migration_of(
                &replacement("ReplicaSet", "web-x7k2p", "uid-sts"),
                &restoring
            )
            .is_some()
        );
        for (phase, restored) in [
            (MigrationPhase::Checkpointing, None),
            (MigrationPhase::Restoring, Some("web-0")),
            (MigrationPhase::Failed, None),
        ] {
            assert!(
                migration_of(&sts, &[migration(phase, restored)]).is_none(),
                "{phase:?}"
            );
        }
    }

    #[test]
    fn marks_create_missing_maps_and_pin_the_target() {
        let pod = replacement("StatefulSet", "web-0", "uid-sts");
        let migration = migration(MigrationPhase::Restoring, None);
        let mut ops = marks(&pod, &migration);
        let affinity = affinity(&pod, &migration);
        ops.push(json!({"op": "add", "path": "/spec/affinity", "value": affinity}));
        let patched = crate::fixtures::apply(&pod, &Value::Array(ops));
        assert_eq!(
            patched.metadata.annotations.unwrap()[RESTORE_FROM_ANNOTATION],
            "move-web"
        );
        assert_eq!(
            patched.metadata.labels.unwrap()[MIGRATION_LABEL],
            "move-web"
        );
        let terms = patched
            .spec
            .unwrap()
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms;
        assert_eq!(
            terms[0].match_fields.as_ref().unwrap()[0]
                .values
                .as_ref()
                .unwrap(),
            &["node2"]
        );
    }
}
