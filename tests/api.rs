//! The CRDs in deploy/crds/ match the types, and the seed's samples fit the API.

use checkpointing::crd::{CheckpointPolicy, ContainerCheckpoint, crd_files};
use checkpointing::names::RESTORE_FROM_ANNOTATION;
use k8s_openapi::api::core::v1::Pod;
use std::path::Path;

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("reading {}: {e}", full.display()))
}

#[test]
fn deploy_crds_match_the_types() {
    let files = crd_files().unwrap();
    assert_eq!(files.len(), 5);
    for (name, yaml) in files {
        assert_eq!(
            repo_file(&format!("deploy/crds/{name}")),
            yaml,
            "deploy/crds/{name} drifted from the Rust types: \
             run `cargo run -p controller -- crd --dir deploy/crds`"
        );
    }
}

#[test]
fn crds_carry_short_names_status_and_columns() {
    let [cc, ccc, pc, pm, cpol] = checkpointing::crd::crds();
    for (crd, short) in [
        (&cc, "cc"),
        (&ccc, "ccc"),
        (&pc, "pc"),
        (&pm, "pm"),
        (&cpol, "cpol"),
    ] {
        assert_eq!(
            crd.spec.names.short_names.as_deref(),
            Some(&[short.to_owned()][..])
        );
        let version = &crd.spec.versions[0];
        assert!(version.subresources.as_ref().unwrap().status.is_some());
    }
    let columns: Vec<_> = cc.spec.versions[0]
        .additional_printer_columns
        .iter()
        .flatten()
        .filter(|c| c.priority.is_none())
        .map(|c| c.name.to_uppercase())
        .collect();
    assert_eq!(
        columns,
        ["STATE", "POD", "CONTAINER", "NODE", "SIZE", "AGE"]
    );
}

#[test]
fn seed_checkpoint_sample_deserializes() {
    let cc: ContainerCheckpoint =
        serde_saphyr::from_str(&repo_file("samples/app-checkpoint.yaml")).unwrap();
    assert_eq!(cc.metadata.name.as_deref(), Some("counter-checkpoint"));
    assert_eq!(cc.spec.pod_name, "stateful-app");
    assert_eq!(cc.spec.container, "counter");
    assert_eq!(cc.spec.namespace.as_deref(), Some("default"));
    assert_eq!(cc.spec.timeout_seconds, None);
}

#[test]
fn seed_pod_samples_pin_nodes_and_name_the_checkpoint() {
    let app: Pod = serde_saphyr::from_str(&repo_file("samples/sample-app.yaml")).unwrap();
    let restored: Pod =
        serde_saphyr::from_str(&repo_file("samples/restored-app-node2.yaml")).unwrap();
    let node = |p: &Pod| {
        p.spec.as_ref().unwrap().node_selector.as_ref().unwrap()["kubernetes.io/hostname"].clone()
    };
    assert_eq!(node(&app), "node1");
    assert_eq!(node(&restored), "node2");
    let annotations = restored.metadata.annotations.as_ref().unwrap();
    assert_eq!(annotations[RESTORE_FROM_ANNOTATION], "counter-checkpoint");
    let container = |p: &Pod| p.spec.as_ref().unwrap().containers[0].name.clone();
    assert_eq!(container(&app), "counter");
    assert_eq!(container(&restored), "counter");
}

#[test]
fn policy_sample_deserializes() {
    let policy: CheckpointPolicy =
        serde_saphyr::from_str(&repo_file("samples/checkpoint-policy.yaml")).unwrap();
    assert_eq!(policy.spec.schedule.map(|s| s.interval_seconds), Some(900));
    assert_eq!(policy.spec.retention.keep_newest, 4);
    assert_eq!(policy.spec.retention.ttl_seconds, Some(86_400));
    let labels = policy.spec.selector.match_labels.unwrap();
    assert_eq!(labels["app"], "stateful-app");
}
