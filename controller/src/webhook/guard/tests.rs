use super::*;
use crate::fixtures::{image, restore_pod};
use k8s_openapi::api::core::v1::{Container, EphemeralContainer};

/// The node-local registry only, as deploy/ configures it.
fn local() -> CheckpointImages {
    CheckpointImages {
        port: 5050,
        repositories: Vec::new(),
    }
}

fn with_image(mut pod: Pod, container: usize, image: &str) -> Pod {
    pod.spec.as_mut().unwrap().containers[container].image = Some(image.into());
    pod
}

#[test]
fn every_spelling_of_the_registrys_port_is_a_checkpoint_image() {
    for image in [
        "localhost:5050/ns/cc@sha256:00",
        "127.0.0.1:5050/ns/cc:latest",
        "LOCALHOST:5050/ns/cc",
        "[::1]:5050/ns/cc",
        "127.1:05050/ns/cc",
        "loopback.example:5050/x",
    ] {
        assert!(local().contains(image), "{image}");
    }
    for image in [
        "busybox",
        "busybox:5050",
        "registry.example/ns/app:5050",
        "registry.example:5000/ns/cc",
        "localhost/ns/cc",
        "localhost:50500/ns/cc",
    ] {
        assert!(!local().contains(image), "{image}");
    }
}

#[test]
fn a_checkpoint_image_without_restore_is_smuggled_in_any_container_list() {
    let plain = restore_pod(None);
    assert_eq!(smuggled(&plain, None, &[], &local()), None);

    let direct = with_image(restore_pod(None), 1, &image());
    assert_eq!(
        smuggled(&direct, None, &[], &local()),
        Some(Smuggled {
            kind: "container",
            container: "counter".into(),
            image: image(),
        })
    );

    let mut init = restore_pod(None);
    init.spec.as_mut().unwrap().init_containers = Some(vec![Container {
        name: "setup".into(),
        image: Some("127.0.0.1:5050/other/cc@sha256:11".into()),
        ..Default::default()
    }]);
    assert_eq!(
        smuggled(&init, None, &[], &local()).unwrap().kind,
        "init container"
    );

    let mut debug = restore_pod(None);
    debug.spec.as_mut().unwrap().ephemeral_containers = Some(vec![EphemeralContainer {
        name: "debugger".into(),
        image: Some(image()),
        ..Default::default()
    }]);
    let found = smuggled(&debug, Some(&restore_pod(None)), &[], &local()).unwrap();
    assert_eq!(found.kind, "ephemeral container");
    assert!(found.to_string().contains("restore-from"), "{found}");
}

#[test]
fn the_restored_container_and_unchanged_images_pass() {
    // The user wrote a checkpoint image into the container being restored: the restore
    // replaces it with the checkpoint's own.
    let restoring = with_image(restore_pod(Some("cc")), 1, &image());
    assert_eq!(smuggled(&restoring, None, &["counter"], &local()), None);
    // …but not into another one.
    let other = with_image(restore_pod(Some("cc")), 0, &image());
    assert_eq!(
        smuggled(&other, None, &["counter"], &local())
            .unwrap()
            .container,
        "sidecar"
    );

    // An update that keeps the admitted image passes; one that changes it does not.
    let admitted = with_image(restore_pod(Some("cc")), 1, &image());
    assert_eq!(
        smuggled(&admitted.clone(), Some(&admitted), &[], &local()),
        None
    );
    let swapped = with_image(admitted.clone(), 1, "localhost:5050/other/cc@sha256:22");
    assert!(smuggled(&swapped, Some(&admitted), &[], &local()).is_some());
    let moved = with_image(admitted.clone(), 0, &image());
    assert!(smuggled(&moved, Some(&admitted), &[], &local()).is_some());
}

#[test]
fn users_cannot_add_or_change_the_marker() {
    let marked = |value: Option<&str>| {
        let mut pod = restore_pod(Some("cc"));
        if let Some(v) = value {
            pod.metadata
                .annotations
                .as_mut()
                .unwrap()
                .insert(RESTORED_FROM_DIGEST_ANNOTATION.into(), v.into());
        }
        pod
    };
    let path = "/metadata/annotations/checkpointing.zacchaeuschok.github.io~1restored-from-digest";
    assert!(marker_reset(&marked(None), None).is_empty());
    assert_eq!(
        marker_reset(&marked(Some("sha256:forged")), None),
        vec![json!({"op": "remove", "path": path})]
    );
    let admitted = marked(Some("sha256:real"));
    assert!(marker_reset(&admitted, Some(&admitted)).is_empty());
    assert_eq!(
        marker_reset(&marked(Some("sha256:forged")), Some(&admitted)),
        vec![json!({"op": "add", "path": path, "value": "sha256:real"})]
    );
    assert_eq!(
        marker_reset(&marked(None), Some(&admitted)),
        vec![json!({"op": "add", "path": path, "value": "sha256:real"})]
    );
    let mut bare = restore_pod(None);
    bare.metadata.annotations = None;
    assert_eq!(
        marker_reset(&bare, Some(&admitted)),
        vec![json!({
            "op": "add",
            "path": "/metadata/annotations",
            "value": {RESTORED_FROM_DIGEST_ANNOTATION: "sha256:real"},
        })]
    );
}

#[test]
fn the_match_condition_names_the_port_and_every_container_list() {
    let cel = local().match_condition();
    for part in [
        "c.image.matches('^[^/]*:0*5050/')",
        "object.spec.containers",
        "object.spec.initContainers",
        "object.spec.ephemeralContainers",
        "k.startsWith('checkpointing.zacchaeuschok.github.io/')",
    ] {
        assert!(cel.contains(part), "{part} missing from {cel}");
    }
}

#[test]
fn images_under_a_push_registrys_checkpoint_repository_are_checkpoint_images_too() {
    let repository = parse_repository("Registry.Example:5000/checkpoints/").unwrap();
    assert_eq!(repository.to_string(), "registry.example:5000/checkpoints");
    let images = CheckpointImages {
        port: 5050,
        repositories: vec![repository],
    };
    for image in [
        "registry.example:5000/checkpoints/ns/cc:uid",
        "REGISTRY.example:5000/checkpoints/ns/cc@sha256:00",
        "registry.example:05000/checkpoints/ns/cc",
        "registry.example:5000/checkpoints",
        "localhost:5050/ns/cc",
    ] {
        assert!(images.contains(image), "{image}");
    }
    for image in [
        "registry.example:5000/apps/web",
        "registry.example:5000/checkpoints-not/ns/cc",
        "registry.example/checkpoints/ns/cc",
    ] {
        assert!(!images.contains(image), "{image}");
    }
    let smuggling = with_image(
        restore_pod(None),
        1,
        "registry.example:5000/checkpoints/other/cc:u",
    );
    assert!(smuggled(&smuggling, None, &[], &images).is_some());
    assert_eq!(smuggled(&smuggling, None, &[], &local()), None);
    let cel = images.match_condition();
    assert!(
        cel.contains("c.image.lowerAscii().matches('(^|/)checkpoints($|[/:@])')"),
        "{cel}"
    );

    for bad in [
        "registry.example",
        "/checkpoints",
        "registry.example/x'||true||'",
        "registry.example/a\\b",
        "registry.example/a b",
        "registry.example/checkpoints:tag",
    ] {
        assert!(parse_repository(bad).is_err(), "{bad}");
    }
}

/// Every spelling a runtime pulls the same repository by is caught, not only the one the
/// flag was written with: an attacker picks the spelling.
#[test]
fn a_checkpoint_repository_is_matched_however_the_image_spells_it() {
    let cases: [(&str, &[&str]); 4] = [
        (
            "docker.io/team/checkpoints",
            &[
                "team/checkpoints/ns/cc:uid",
                "docker.io/team/checkpoints/ns/cc",
                "index.docker.io/team/checkpoints/ns/cc",
                "registry-1.docker.io/team/checkpoints/ns/cc",
                "DOCKER.IO:443/team/checkpoints/ns/cc",
            ],
        ),
        (
            "index.docker.io/library/ckpt",
            &[
                "ckpt",
                "ckpt:uid",
                "library/ckpt@sha256:00",
                "docker.io/library/ckpt/x",
            ],
        ),
        (
            "registry.example.com:443/ckpt",
            &[
                "registry.example.com/ckpt/ns/cc",
                "Registry.Example.COM/ckpt/ns/cc",
                "registry.example.com:0443/ckpt/ns/cc",
            ],
        ),
        (
            "[2001:db8::1]:5000/ckpt",
            &[
                "[2001:DB8:0:0::1]:5000/ckpt/ns/cc",
                "[2001:db8::0001]:5000/ckpt/ns/cc",
            ],
        ),
    ];
    for (flag, spellings) in cases {
        let images = CheckpointImages {
            port: 5050,
            repositories: vec![parse_repository(flag).unwrap()],
        };
        let pattern = images.repositories[0].pattern();
        let cel = images.match_condition();
        assert!(cel.contains(&pattern.replace('\\', "\\\\")), "{cel}");
        let re2 = regex::Regex::new(&pattern).unwrap();
        for image in spellings {
            assert!(images.contains(image), "{flag}: {image}");
            // The match condition lets the pod through to the webhook.
            assert!(
                re2.is_match(&image.to_ascii_lowercase()),
                "{flag}: {image} would not reach the webhook"
            );
        }
    }
    let mapped = CheckpointImages {
        port: 5050,
        repositories: vec![parse_repository("10.77.0.1:5000/ckpt").unwrap()],
    };
    assert!(mapped.contains("[::ffff:10.77.0.1]:5000/ckpt/ns/cc"));
    assert!(mapped.contains("[::ffff:a4d:1]:5000/ckpt/ns/cc"));
    assert!(!mapped.contains("10.77.0.1:5001/ckpt/ns/cc"));
    assert!(!mapped.contains("docker.io/ckpt/ns/cc"));
    let official = CheckpointImages {
        port: 5050,
        repositories: vec![parse_repository("docker.io/library/ckpt").unwrap()],
    };
    assert!(
        !official.contains("docker.io/ckpt/x"),
        "user ckpt's repository x"
    );
    // Unreadable as a reference, yet naming the repository's path: refused all the same.
    assert!(mapped.contains("10.77.0.1:5000/ckpt/ns/CC"));
    // The match condition sends whole components only.
    let dotted = parse_repository("r.example.com/team.x/ckpt").unwrap();
    let re2 = regex::Regex::new(&dotted.pattern()).unwrap();
    assert!(re2.is_match("r.example.com/team.x/ckpt@sha256:00"));
    for other in [
        "r.example.com/teamxx/ckpt",
        "r/team.x/ckpts",
        "team.x/ckpt.example/x",
    ] {
        assert!(!re2.is_match(other), "{other}");
    }
    // Docker Hub's official images are found without their library/.
    let official = parse_repository("docker.io/library/ckpt").unwrap();
    let re2 = regex::Regex::new(&official.pattern()).unwrap();
    assert!(re2.is_match("ckpt:uid") && re2.is_match("library/ckpt"));
}

#[test]
fn references_by_image_id_count_as_checkpoint_images() {
    let id = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    for image in [
        format!("sha256:{id}"),
        format!("sha256:{}", &id[..12]),
        format!("SHA256:{}", id.to_ascii_uppercase()),
        id.to_owned(),
        id[..12].to_owned(),
    ] {
        assert!(is_image_id(&image), "{image}");
        assert!(local().contains(&image), "{image}");
        let pod = with_image(restore_pod(None), 1, &image);
        let found = smuggled(&pod, None, &[], &local()).expect("refused");
        assert!(found.to_string().contains("by image ID"), "{found}");
    }
    for image in [
        "busybox",
        "sha256:",
        "sha256:xyz",
        &id[..11],
        &format!("{id}0"),
        "deadbeefcafe:latest",
        "busybox@sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    ] {
        assert!(!is_image_id(image), "{image}");
    }
    // The registration sends them to the webhook.
    let cel = local().match_condition();
    assert!(
        cel.contains("c.image.matches('^(?i)(sha256:[0-9a-f]+|[0-9a-f]{12,64})$')"),
        "{cel}"
    );
}
