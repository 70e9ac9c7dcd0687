//! The copy of a source pod that restores from a checkpoint, as the controller's migrations and
//! the plugin's `restore` create it: the source's spec (volumes, env, service account,
//! resources), labels and annotations, without what is the source pod's own, annotated to
//! restore from the checkpoint. The restore webhook then swaps the checkpointed container's
//! image. Pure.

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::names::{
    HOSTNAME_LABEL, POD_TEMPLATE_HASH_LABEL, RESTORE_FROM_ANNOTATION,
    RESTORED_FROM_DIGEST_ANNOTATION,
};

/// Pod `name` with `source`'s spec, labels and annotations, annotated to restore from
/// `checkpoint` (a ContainerCheckpoint or PodCheckpoint of the source's namespace), pinned to
/// `node` by its hostname label when given (otherwise the source's node selector stays).
pub fn restored_pod(source: &Pod, name: &str, checkpoint: &str, node: Option<&str>) -> Pod {
    let mut spec = source.spec.clone().unwrap_or_default();
    // Set by the scheduler (a copy would bypass it) and by `kubectl debug` (refused on create).
    spec.node_name = None;
    spec.ephemeral_containers = None;
    if let Some(node) = node {
        spec.node_selector
            .get_or_insert_default()
            .insert(HOSTNAME_LABEL.to_owned(), node.to_owned());
    }
    let mut labels = source.metadata.labels.clone().unwrap_or_default();
    // A Deployment's ReplicaSet would adopt the copy and might delete it as surplus.
    labels.remove(POD_TEMPLATE_HASH_LABEL);
    let mut annotations = source.metadata.annotations.clone().unwrap_or_default();
    // The webhook marks what it restored the source from; the copy gets its own mark.
    annotations.remove(RESTORED_FROM_DIGEST_ANNOTATION);
    annotations.insert(RESTORE_FROM_ANNOTATION.to_owned(), checkpoint.to_owned());
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: source.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::json;

    use super::*;

    fn running_source() -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "web-7d9f-abcde", "namespace": "ns", "uid": "u1",
                "resourceVersion": "42", "generateName": "web-7d9f-",
                "labels": {"app": "web", "pod-template-hash": "7d9f"},
                "annotations": {"note": "x", RESTORED_FROM_DIGEST_ANNOTATION: "sha256:old"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                     "name": "web-7d9f", "uid": "u0"}],
                "finalizers": ["f"],
            },
            "spec": {
                "nodeName": "node1",
                "nodeSelector": {"disk": "ssd"},
                "containers": [{"name": "app", "image": "busybox"}],
                "ephemeralContainers": [{"name": "debugger", "image": "busybox"}],
            },
            "status": {"phase": "Running", "podIP": "10.0.0.1"},
        }))
        .unwrap()
    }

    #[test]
    fn the_copy_keeps_spec_and_labels_and_drops_what_is_the_source_pods_own() {
        let copy = restored_pod(&running_source(), "restored", "cp1", None);
        assert_eq!(
            serde_json::to_value(&copy).unwrap(),
            json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {
                    "name": "restored", "namespace": "ns",
                    "labels": {"app": "web"},
                    "annotations": {"note": "x", RESTORE_FROM_ANNOTATION: "cp1"},
                },
                "spec": {
                    "nodeSelector": {"disk": "ssd"},
                    "containers": [{"name": "app", "image": "busybox"}],
                },
            })
        );
    }

    #[test]
    fn node_pins_by_hostname() {
        let copy = restored_pod(&running_source(), "r", "cp1", Some("node2"));
        assert_eq!(
            copy.spec.unwrap().node_selector.unwrap(),
            BTreeMap::from([
                ("disk".to_owned(), "ssd".to_owned()),
                (HOSTNAME_LABEL.to_owned(), "node2".to_owned()),
            ])
        );
        let mut source = running_source();
        source
            .spec
            .as_mut()
            .unwrap()
            .node_selector
            .replace(BTreeMap::from([(
                HOSTNAME_LABEL.to_owned(),
                "node1".to_owned(),
            )]));
        let copy = restored_pod(&source, "r", "cp1", Some("node2"));
        assert_eq!(
            copy.spec.unwrap().node_selector.unwrap()[HOSTNAME_LABEL],
            "node2"
        );
    }
}
