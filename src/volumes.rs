//! Which emptyDir volumes travel with a container's checkpoint: those it mounts, less those
//! the pod's skip-volumes annotation names. The controller records them in the Content; noded
//! copies them.

use k8s_openapi::api::core::v1::Pod;

use crate::names::SKIP_VOLUMES_ANNOTATION;

/// The emptyDir volumes `container` of `pod` mounts, in the pod's order, less those its
/// skip-volumes annotation names.
pub fn to_capture(pod: &Pod, container: &str) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let skipped: Vec<&str> = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SKIP_VOLUMES_ANNOTATION))
        .map(|v| v.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let mounted: Vec<&str> = spec
        .containers
        .iter()
        .filter(|c| c.name == container)
        .flat_map(|c| c.volume_mounts.iter().flatten())
        .map(|m| m.name.as_str())
        .collect();
    spec.volumes
        .iter()
        .flatten()
        .filter(|v| v.empty_dir.is_some())
        .map(|v| v.name.clone())
        .filter(|v| mounted.contains(&v.as_str()) && !skipped.contains(&v.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(annotation: Option<&str>) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "app"},
            "spec": {
                "containers": [
                    {"name": "counter", "volumeMounts": [
                        {"name": "data", "mountPath": "/data"},
                        {"name": "cache", "mountPath": "/cache"},
                        {"name": "config", "mountPath": "/config"},
                    ]},
                    {"name": "sidecar", "volumeMounts": [{"name": "scratch", "mountPath": "/s"}]},
                ],
                "volumes": [
                    {"name": "data", "emptyDir": {}},
                    {"name": "cache", "emptyDir": {"medium": "Memory"}},
                    {"name": "config", "configMap": {"name": "c"}},
                    {"name": "scratch", "emptyDir": {}},
                ],
            },
        }))
        .unwrap();
        if let Some(value) = annotation {
            pod.metadata.annotations =
                Some([(SKIP_VOLUMES_ANNOTATION.to_owned(), value.to_owned())].into());
        }
        pod
    }

    #[test]
    fn a_container_takes_the_empty_dirs_it_mounts_unless_skipped() {
        assert_eq!(to_capture(&pod(None), "counter"), ["data", "cache"]);
        assert_eq!(to_capture(&pod(None), "sidecar"), ["scratch"]);
        assert_eq!(to_capture(&pod(Some("cache, other")), "counter"), ["data"]);
        assert!(to_capture(&pod(None), "nope").is_empty());
    }
}
