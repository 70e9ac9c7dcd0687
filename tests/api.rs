//! The CRDs in deploy/crds/ match the types, and the seed's samples fit the API.

use checkpointing::crd::{CheckpointPolicy, ContainerCheckpoint, crd_files};
use checkpointing::names::RESTORE_FROM_ANNOTATION;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps,
};
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
        (&pc, "pckpt"),
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

fn spec_schema(crd: &CustomResourceDefinition) -> &JSONSchemaProps {
    let schema = crd.spec.versions[0].schema.as_ref().unwrap();
    &schema
        .open_api_v3_schema
        .as_ref()
        .unwrap()
        .properties
        .as_ref()
        .unwrap()["spec"]
}

/// No short name of ours is one the built-in resources use (`pc` is PriorityClass's).
#[test]
fn short_names_are_not_built_in_ones() {
    const BUILT_IN: [&str; 8] = ["pc", "po", "cm", "cs", "csr", "ds", "pv", "pvc"];
    for crd in checkpointing::crd::crds() {
        for short in crd.spec.names.short_names.iter().flatten() {
            assert!(!BUILT_IN.contains(&short.as_str()), "{short} is taken");
        }
    }
}

/// The requests and Contents refuse spec changes (their work starts from the first spec); a
/// policy's spec stays editable.
#[test]
fn request_specs_are_immutable_and_policies_are_not() {
    for crd in checkpointing::crd::crds() {
        let rules: Vec<_> = spec_schema(&crd)
            .x_kubernetes_validations
            .iter()
            .flatten()
            .map(|r| r.rule.as_str())
            .collect();
        let expected: &[&str] = if crd.spec.names.kind == "CheckpointPolicy" {
            &[]
        } else {
            &["self == oldSelf"]
        };
        assert_eq!(rules, expected, "{}", crd.spec.names.kind);
    }
}

/// What the controller assumes for an unset field is the schema's default, so `kubectl get -o
/// yaml` shows it.
#[test]
fn migration_defaults_are_in_the_schema() {
    let [_, _, _, pm, _] = checkpointing::crd::crds();
    let fields = spec_schema(&pm).properties.as_ref().unwrap();
    let default = |f: &str| fields[f].default.as_ref().map(|d| d.0.clone());
    assert_eq!(default("deleteSource"), Some(serde_json::json!(true)));
    assert_eq!(
        default("timeoutSeconds"),
        Some(serde_json::json!(
            checkpointing::crd::MIGRATION_TIMEOUT_SECONDS
        ))
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
