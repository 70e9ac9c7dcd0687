//! The pod `restore` creates from the checkpointed one, and how far it has got.

use std::collections::BTreeMap;

use checkpointing::names::RESTORE_FROM_ANNOTATION;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Waiting reasons after which the kubelet has given up once already: reported, not waited out.
const STUCK_REASONS: [&str; 5] = [
    "CreateContainerError",
    "CreateContainerConfigError",
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "InvalidImageName",
];

/// Pod `name` with `source`'s spec and labels, annotated to restore from `checkpoint`, on `node`
/// if given. The restore webhook swaps the checkpointed container's image.
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
    // The Deployment's ReplicaSet would otherwise adopt the copy and may delete it as surplus.
    labels.remove("pod-template-hash");
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: source.metadata.namespace.clone(),
            labels: Some(labels),
            annotations: Some(BTreeMap::from([(
                RESTORE_FROM_ANNOTATION.to_owned(),
                checkpoint.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// Where a starting pod is.
#[derive(Debug, PartialEq)]
pub enum Progress {
    Running,
    /// Still starting: the phase and, once the kubelet says, why the container waits.
    Starting(String),
    /// It will not run without someone acting: why.
    Stuck(String),
}

pub fn progress(pod: &Pod) -> Progress {
    let status = pod.status.clone().unwrap_or_default();
    let phase = status.phase.unwrap_or_else(|| "Pending".to_owned());
    match phase.as_str() {
        "Running" => return Progress::Running,
        "Failed" | "Succeeded" => {
            let why = status.message.or(status.reason).unwrap_or_default();
            return Progress::Stuck(format!("{phase}: {why}"));
        }
        _ => {}
    }
    let waiting = status
        .container_statuses
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| c.state?.waiting);
    match waiting {
        Some(w) => {
            let reason = w.reason.unwrap_or_default();
            let text = match w.message {
                Some(m) => format!("{phase}: {reason}: {m}"),
                None => format!("{phase}: {reason}"),
            };
            if STUCK_REASONS.contains(&reason.as_str()) {
                Progress::Stuck(text)
            } else {
                Progress::Starting(text)
            }
        }
        None => Progress::Starting(phase),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn running_source() -> Pod {
        pod(json!({
            "metadata": {
                "name": "web-7d9f-abcde", "namespace": "ns", "uid": "u1",
                "resourceVersion": "42", "generateName": "web-7d9f-",
                "labels": {"app": "web", "pod-template-hash": "7d9f"},
                "annotations": {"note": "x"},
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
                    "annotations": {RESTORE_FROM_ANNOTATION: "cp1"},
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

    #[test]
    fn progress_of_a_starting_pod() {
        assert_eq!(
            progress(&pod(json!({}))),
            Progress::Starting("Pending".into())
        );
        assert_eq!(
            progress(&pod(json!({"status": {"phase": "Running"}}))),
            Progress::Running
        );
        let waiting = |reason: &str| {
            pod(
                json!({"status": {"phase": "Pending", "containerStatuses": [{
                    "name": "app", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": reason, "message": "m"}},
                }]}}),
            )
        };
        assert_eq!(
            progress(&waiting("ContainerCreating")),
            Progress::Starting("Pending: ContainerCreating: m".into())
        );
        assert_eq!(
            progress(&waiting("CreateContainerError")),
            Progress::Stuck("Pending: CreateContainerError: m".into())
        );
        assert_eq!(
            progress(&pod(
                json!({"status": {"phase": "Failed", "message": "evicted"}})
            )),
            Progress::Stuck("Failed: evicted".into())
        );
    }
}
