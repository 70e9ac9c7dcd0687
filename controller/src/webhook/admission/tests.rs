use super::*;
use crate::fixtures::{DIGEST, apply, checkpoint, image, restore_pod};

fn allowed() -> Access {
    Access {
        allowed: true,
        reason: String::new(),
    }
}

/// The node-local registry only, as deploy/ configures it.
fn local() -> CheckpointImages {
    CheckpointImages {
        port: 5050,
        repositories: Vec::new(),
    }
}

fn completed() -> ContainerCheckpoint {
    checkpoint(Some(CheckpointState::Completed), "checkpoint completed")
}

fn deny(pod: &Pod, access: &Access, cc: Option<&ContainerCheckpoint>) -> Denial {
    let source = cc.map(Source::from);
    decide(
        pod,
        "default",
        "counter-checkpoint",
        "alice",
        access,
        source.as_ref(),
        &local(),
    )
    .unwrap_err()
}

#[test]
fn pods_without_the_annotation_pass() {
    assert_eq!(requested(&restore_pod(None), "default"), Ok(None));
    let mut other = restore_pod(None);
    other.metadata.annotations = Some([("a".to_owned(), "b".to_owned())].into());
    assert_eq!(requested(&other, "default"), Ok(None));
}

#[test]
fn the_annotation_names_a_checkpoint_of_the_pods_namespace() {
    assert_eq!(
        requested(&restore_pod(Some("counter-checkpoint")), "default"),
        Ok(Some("counter-checkpoint".into()))
    );
    // Qualified with the pod's own namespace: the same thing.
    assert_eq!(
        requested(&restore_pod(Some("default/counter-checkpoint")), "default"),
        Ok(Some("counter-checkpoint".into()))
    );
}

#[test]
fn another_namespace_is_denied() {
    let err = requested(&restore_pod(Some("prod/counter-checkpoint")), "default").unwrap_err();
    assert_eq!(err.reason(), "OtherNamespace");
    assert_eq!(
        err.to_string(),
        "annotation checkpointing.zacchaeuschok.github.io/restore-from names \
         ContainerCheckpoint \"counter-checkpoint\" in namespace \"prod\", but a pod can only \
         restore from a checkpoint in its own namespace \"default\"; checkpoint the container \
         in namespace \"default\" and set the annotation to that checkpoint's name alone"
    );
}

/// Annotations may hold 256 KiB: a denial quotes such a value cut, never whole, and no
/// multi-byte character makes the cut panic.
#[test]
fn huge_annotation_values_are_denied_with_a_short_message() {
    let long = "é".repeat(100_000);
    for value in [long.clone(), format!("prod/{long}"), format!("{long}/x")] {
        let err = requested(&restore_pod(Some(&value)), "default").unwrap_err();
        assert!(err.to_string().len() < 1024, "{}", err.reason());
    }
}

#[test]
fn invalid_names_are_denied_before_any_lookup() {
    for bad in ["", "Counter", "../x", "a/b/c", "default/", "x y"] {
        let err = requested(&restore_pod(Some(bad)), "default").unwrap_err();
        assert!(
            matches!(
                err,
                Denial::InvalidReference { .. } | Denial::OtherNamespace { .. }
            ),
            "{bad:?}: {err}"
        );
    }
    let err = requested(&restore_pod(Some("../x")), "default").unwrap_err();
    assert_eq!(err.reason(), "OtherNamespace");
    let err = requested(&restore_pod(Some("Counter_1")), "default").unwrap_err();
    assert_eq!(err.reason(), "InvalidReference");
    assert_eq!(
        err.to_string(),
        "annotation checkpointing.zacchaeuschok.github.io/restore-from is \"Counter_1\", \
         which is not a valid ContainerCheckpoint name (lowercase letters, digits, '-' and \
         '.', at most 253 characters); set it to the name of a ContainerCheckpoint in \
         namespace \"default\""
    );
    let long = "a".repeat(10_000);
    let err = requested(&restore_pod(Some(&long)), "default").unwrap_err();
    assert!(err.to_string().len() < 400, "{err}");
    assert!(err.to_string().contains("10000 characters"), "{err}");
}

#[test]
fn users_who_may_not_read_the_checkpoint_are_denied() {
    let refused = Access {
        allowed: false,
        reason: String::new(),
    };
    let err = deny(
        &restore_pod(Some("counter-checkpoint")),
        &refused,
        Some(&completed()),
    );
    assert_eq!(err.reason(), "Forbidden");
    assert_eq!(
        err.to_string(),
        "user \"alice\" may not get ContainerCheckpoint \"counter-checkpoint\" in namespace \
         \"default\"; restoring from a checkpoint needs the right to read it (it holds the \
         process's memory): ask for get on \
         containercheckpoints.checkpointing.zacchaeuschok.github.io in namespace \"default\""
    );
    // Not even whether the checkpoint exists is told.
    let with_reason = Access {
        allowed: false,
        reason: "no RBAC policy matched".into(),
    };
    assert_eq!(
        deny(&restore_pod(Some("counter-checkpoint")), &with_reason, None),
        Denial::Forbidden {
            user: "alice".into(),
            name: "counter-checkpoint".into(),
            namespace: "default".into(),
            reason: "no RBAC policy matched".into(),
        }
    );
    assert!(
        deny(&restore_pod(Some("counter-checkpoint")), &with_reason, None)
            .to_string()
            .contains("in namespace \"default\" (no RBAC policy matched); restoring"),
    );
}

#[test]
fn missing_checkpoint_is_denied() {
    let err = deny(&restore_pod(Some("counter-checkpoint")), &allowed(), None);
    assert_eq!(err.reason(), "NotFound");
    assert_eq!(
        err.to_string(),
        "ContainerCheckpoint \"counter-checkpoint\" not found in namespace \"default\" (nor a \
         PodCheckpoint of that name); checkpoint the container first (kubectl apply a ContainerCheckpoint and wait until \
         it is Completed), or fix annotation checkpointing.zacchaeuschok.github.io/restore-from"
    );
}

#[test]
fn checkpoint_not_completed_is_denied_with_its_state_and_message() {
    let p = restore_pod(Some("counter-checkpoint"));
    let failed = checkpoint(
        Some(CheckpointState::Failed),
        "pod \"stateful-app\" not found in namespace \"default\"",
    );
    let err = deny(&p, &allowed(), Some(&failed));
    assert_eq!(err.reason(), "NotCompleted");
    assert_eq!(
        err.to_string(),
        "ContainerCheckpoint \"counter-checkpoint\" in namespace \"default\" is Failed, not \
         Completed (pod \"stateful-app\" not found in namespace \"default\"); fix the cause, \
         delete the ContainerCheckpoint and create it again, then create the pod again"
    );
    let running = checkpoint(Some(CheckpointState::Running), "checkpointing on node1");
    assert_eq!(
        deny(&p, &allowed(), Some(&running)).to_string(),
        "ContainerCheckpoint \"counter-checkpoint\" in namespace \"default\" is Running, not \
         Completed (checkpointing on node1); wait until it is Completed, then create the pod \
         again"
    );
    let new = checkpoint(None, "");
    assert_eq!(
        deny(&p, &allowed(), Some(&new)).to_string(),
        "ContainerCheckpoint \"counter-checkpoint\" in namespace \"default\" is not started \
         yet, not Completed; wait until it is Completed, then create the pod again"
    );
}

#[test]
fn completed_checkpoint_without_a_digest_is_denied() {
    let p = restore_pod(Some("counter-checkpoint"));
    let mut cc = completed();
    cc.status.as_mut().unwrap().image = Some("localhost:5050/default/x:latest".into());
    let err = deny(&p, &allowed(), Some(&cc));
    assert_eq!(err.reason(), "NoImage");
    assert_eq!(
        err.to_string(),
        "ContainerCheckpoint \"counter-checkpoint\" in namespace \"default\" is Completed but \
         its image \"localhost:5050/default/x:latest\" is not an image reference \
         with a sha256 digest; checkpoint the container again"
    );
    cc.status.as_mut().unwrap().image = None;
    assert_eq!(deny(&p, &allowed(), Some(&cc)).reason(), "NoImage");
    cc.status.as_mut().unwrap().image = Some("x@sha256:abc".into());
    assert_eq!(deny(&p, &allowed(), Some(&cc)).reason(), "NoImage");
}

#[test]
fn checkpointed_container_missing_from_the_pod_is_denied() {
    let mut p = restore_pod(Some("counter-checkpoint"));
    p.spec.as_mut().unwrap().containers[1].name = "other".into();
    let err = deny(&p, &allowed(), Some(&completed()));
    assert_eq!(err.reason(), "ContainerNotInPod");
    assert_eq!(
        err.to_string(),
        "ContainerCheckpoint \"counter-checkpoint\" holds container \"counter\", but this pod \
         has no container of that name (its containers are \"sidecar\", \"other\"); name the \
         restored container \"counter\""
    );
}

#[test]
fn lookup_errors_say_so() {
    let err = Denial::AccessCheckFailed {
        user: "alice".into(),
        name: "cc".into(),
        namespace: "default".into(),
        error: "503 ServiceUnavailable".into(),
    };
    assert_eq!(
        err.to_string(),
        "could not check whether user \"alice\" may get ContainerCheckpoint \"cc\" in \
         namespace \"default\" (503 ServiceUnavailable); create the pod again"
    );
    let err = Denial::LookupFailed {
        name: "cc".into(),
        namespace: "default".into(),
        error: "timed out".into(),
    };
    assert_eq!(
        err.to_string(),
        "could not read ContainerCheckpoint \"cc\" in namespace \"default\" (timed out); \
         create the pod again"
    );
}

#[test]
fn completed_checkpoint_rewrites_only_its_container() {
    let p = restore_pod(Some("counter-checkpoint"));
    let restore = decide(
        &p,
        "default",
        "counter-checkpoint",
        "alice",
        &allowed(),
        Some(&Source::from(&completed())),
        &local(),
    )
    .unwrap();
    assert_eq!(restore.containers, [("counter".to_owned(), image())]);
    assert_eq!(restore.digest, DIGEST);
    assert_eq!(
        restore.patch,
        json!([
            {"op": "add", "path": "/spec/containers/1/image", "value": image()},
            {
                "op": "add",
                "path": "/metadata/annotations/\
                         checkpointing.zacchaeuschok.github.io~1restored-from-digest",
                "value": DIGEST,
            },
        ])
    );

    let patched = apply(&p, &restore.patch);
    let mut expected = p.clone();
    expected.spec.as_mut().unwrap().containers[1].image = Some(image());
    expected
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .insert(RESTORED_FROM_DIGEST_ANNOTATION.into(), DIGEST.into());
    assert_eq!(
        patched, expected,
        "only the image and the annotation change"
    );
    assert_eq!(
        patched.spec.unwrap().containers[0].image.as_deref(),
        Some("nginx")
    );
}

/// A checkpoint pushed to a registry is restored from the node-local registry too, by the
/// same digest: noded fetches the pushed copy with the request's credentials, so the pod gets
/// no pull secret, and the restore passes through noded, which places its volumes.
#[test]
fn a_pushed_checkpoint_restores_from_the_node_local_registry_without_a_pull_secret() {
    use checkpointing::crd::{RegistrySpec, SecretRef};
    use k8s_openapi::api::core::v1::LocalObjectReference;

    let mut cc = completed();
    cc.spec.registry = Some(RegistrySpec {
        compression: None,
        repository: Some("registry.example:5443/team/checkpoints".into()),
        secret_ref: Some(SecretRef {
            name: "push-creds".into(),
        }),
    });
    cc.status.as_mut().unwrap().image =
        Some(format!("registry.example:5443/team/checkpoints@{DIGEST}"));
    let secrets = |pod: &Pod| -> Vec<String> {
        let spec = pod.spec.as_ref().unwrap();
        let listed = spec.image_pull_secrets.iter().flatten();
        listed.map(|r| r.name.clone()).collect()
    };
    let restore = |pod: &Pod| {
        decide(
            pod,
            "default",
            "counter-checkpoint",
            "alice",
            &allowed(),
            Some(&Source::from(&cc)),
            &local(),
        )
        .unwrap()
    };

    let bare = restore_pod(Some("counter-checkpoint"));
    let restored = restore(&bare);
    assert_eq!(restored.containers, [("counter".to_owned(), image())]);
    assert_eq!(restored.digest, DIGEST);
    let patched = apply(&bare, &restored.patch);
    assert_eq!(
        patched.spec.as_ref().unwrap().containers[1].image,
        Some(image())
    );
    assert!(secrets(&patched).is_empty());

    let mut listing = bare.clone();
    listing.spec.as_mut().unwrap().image_pull_secrets = Some(vec![LocalObjectReference {
        name: "base-creds".into(),
    }]);
    assert_eq!(
        secrets(&apply(&listing, &restore(&listing).patch)),
        ["base-creds"]
    );
}

#[test]
fn a_workload_controllers_pod_is_checked_as_its_service_account() {
    use k8s_openapi::api::authentication::v1::UserInfo;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let user = |name: &str| UserInfo {
        username: Some(name.into()),
        groups: Some(vec!["devs".into()]),
        ..UserInfo::default()
    };
    let mut owned = restore_pod(Some("cc"));
    owned.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "apps/v1".into(),
        kind: "ReplicaSet".into(),
        name: "app-5d4f".into(),
        uid: "uid-rs".into(),
        controller: Some(true),
        ..OwnerReference::default()
    }]);
    let checked = |who: &str, pod: &Pod| reader(&user(who), pod, "default").username.unwrap();

    // People are checked as themselves, owner references or not.
    assert_eq!(checked("alice", &owned), "alice");
    assert_eq!(reader(&user("alice"), &owned, "default"), user("alice"));
    // A controller's bare pod: the controller itself.
    let rs = "system:serviceaccount:kube-system:replicaset-controller";
    assert_eq!(checked(rs, &restore_pod(Some("cc"))), rs);
    // A workload's pod: its ServiceAccount, `default` when unnamed.
    assert_eq!(checked(rs, &owned), "system:serviceaccount:default:default");
    owned.spec.as_mut().unwrap().service_account_name = Some("restorer".into());
    let as_account = reader(&user("system:kube-controller-manager"), &owned, "default");
    assert_eq!(
        as_account.username.as_deref(),
        Some("system:serviceaccount:default:restorer")
    );
    assert!(
        as_account
            .groups
            .unwrap()
            .contains(&"system:serviceaccounts:default".to_owned())
    );
}

#[test]
fn a_checkpoint_restores_only_an_image_of_its_own_namespace_and_name() {
    let restore_with = |image: &str| {
        let mut cc = completed();
        cc.status.as_mut().unwrap().image = Some(image.to_owned());
        deny(
            &restore_pod(Some("counter-checkpoint")),
            &allowed(),
            Some(&cc),
        )
    };
    for image in [
        format!("localhost:5050/victim/counter-checkpoint@{DIGEST}"),
        format!("localhost:5050/default/other@{DIGEST}"),
        format!("attacker.example/default/counter-checkpoint@{DIGEST}"),
        format!("attacker.example:5050/default/counter-checkpoint@{DIGEST}"),
    ] {
        let denial = restore_with(&image);
        assert_eq!(denial.reason(), "ForeignImage", "{image}: {denial}");
        let message = denial.to_string();
        assert!(
            message.contains(&image)
                && message.contains("\"localhost:5050/default/counter-checkpoint\""),
            "{message}"
        );
    }
}
