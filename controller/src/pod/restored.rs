//! The copy of a bare pod that a migration creates on the target: the shared restored pod
//! ([`checkpointing::restored`]), labelled with the migration, placed by it and restoring from
//! its PodCheckpoint. Named `<base>-<5 characters of the migration's UID>`, so
//! it can run before the source goes, a retry finds its own, and moving a moved pod again does
//! not grow the name. Pure.

use checkpointing::crd::{PodMigration, PodMigrationStatus};
use checkpointing::names::MIGRATION_LABEL;
use checkpointing::restored::restored_pod;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::placement::{HOSTNAME_LABEL, Placement};

/// Length of the suffix a migration adds.
const SUFFIX: usize = 5;

pub fn copy(source: &Pod, m: &PodMigration, status: &PodMigrationStatus) -> Pod {
    let migration = m.name_any();
    let checkpoint = status.pod_checkpoint.as_deref().unwrap_or(&migration);
    let mut copy = restored_pod(source, &copy_name(source, m), checkpoint, None);
    copy.labels_mut()
        .insert(MIGRATION_LABEL.to_owned(), migration.clone());
    let spec = copy.spec.get_or_insert_default();
    // Pinned to the source's node by name: the migration's placement replaces that.
    if let Some(selector) = spec.node_selector.as_mut() {
        selector.remove(HOSTNAME_LABEL);
    }
    spec.affinity = Some(Placement::of(&m.spec, status).apply(spec.affinity.as_ref()));
    copy
}

/// `<base>-<suffix>`: the base drops the suffix an earlier migration added, and is cut so the
/// name stays a valid pod name.
fn copy_name(source: &Pod, m: &PodMigration) -> String {
    let name = source.name_any();
    let moved_before = source.labels().contains_key(MIGRATION_LABEL);
    let base = match name.rsplit_once('-') {
        Some((base, suffix)) if moved_before && suffix.len() == SUFFIX => base,
        _ => name.as_str(),
    };
    let suffix: String = m
        .metadata
        .uid
        .as_deref()
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .take(SUFFIX)
        .collect();
    // 63: pods are also hostnames; the kubelet cuts longer ones.
    let base: String = base.chars().take(63 - SUFFIX - 1).collect();
    format!("{}-{suffix}", base.trim_end_matches(['-', '.']))
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpointing::names::{RESTORE_FROM_ANNOTATION, RESTORED_FROM_DIGEST_ANNOTATION};

    fn migration(uid: &str) -> PodMigration {
        let mut m = crate::fixtures::migration(Some("node2"));
        m.metadata.uid = Some(uid.into());
        m
    }

    fn status() -> PodMigrationStatus {
        PodMigrationStatus {
            source_node: Some("node1".into()),
            pod_checkpoint: Some("move-app".into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_copy_keeps_the_spec_and_restores_on_the_target() {
        let mut source = crate::fixtures::pod();
        source.spec.as_mut().unwrap().node_selector =
            Some([(HOSTNAME_LABEL.to_owned(), "node1".to_owned())].into());
        source.metadata.labels = Some([("app".to_owned(), "counter".to_owned())].into());
        source.metadata.annotations = Some(
            [(
                RESTORED_FROM_DIGEST_ANNOTATION.to_owned(),
                "sha256:old".to_owned(),
            )]
            .into(),
        );
        let copy = copy(&source, &migration("8F2a-91c0"), &status());
        assert_eq!(copy.name_any(), "app-8f2a9");
        assert_eq!(copy.labels()["app"], "counter");
        assert_eq!(copy.labels()[MIGRATION_LABEL], "move-app");
        assert_eq!(copy.annotations()[RESTORE_FROM_ANNOTATION], "move-app");
        assert!(
            !copy
                .annotations()
                .contains_key(RESTORED_FROM_DIGEST_ANNOTATION)
        );
        let spec = copy.spec.unwrap();
        assert_eq!(spec.node_name, None);
        assert_eq!(
            spec.node_selector,
            Some(Default::default()),
            "no longer pinned to node1"
        );
        assert_eq!(spec.containers, source.spec.unwrap().containers);
        let term = &spec
            .affinity
            .unwrap()
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap()
            .node_selector_terms[0];
        assert_eq!(
            term.match_fields.as_ref().unwrap()[0]
                .values
                .as_ref()
                .unwrap(),
            &["node2"]
        );
        assert!(copy.metadata.uid.is_none() && copy.status.is_none());
    }

    #[test]
    fn moving_a_moved_pod_again_replaces_the_suffix() {
        let mut moved = crate::fixtures::pod();
        moved.metadata.name = Some("app-8f2a9".into());
        moved.metadata.labels = Some([(MIGRATION_LABEL.to_owned(), "move-app".to_owned())].into());
        assert_eq!(copy_name(&moved, &migration("c0ffee")), "app-c0ffe");
        // A pod that was never moved keeps its whole name, dashes and all.
        let mut plain = crate::fixtures::pod();
        plain.metadata.name = Some("web-abcde".into());
        assert_eq!(copy_name(&plain, &migration("c0ffee")), "web-abcde-c0ffe");
        plain.metadata.name = Some("x".repeat(253));
        assert_eq!(copy_name(&plain, &migration("c0ffee")).len(), 63);
    }
}
