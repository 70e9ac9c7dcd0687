use std::collections::BTreeMap;

use checkpointing::crd::{ContainerCheckpointContentSpec, SecretRef};
use k8s_openapi::ByteString;

use super::*;

fn content(registry: Option<RegistrySpec>) -> ContainerCheckpointContent {
    let mut c = ContainerCheckpointContent::new(
        "cc",
        ContainerCheckpointContentSpec {
            container_checkpoint_ref: "cc".into(),
            namespace: "team".into(),
            pod_name: "app".into(),
            container_name: "counter".into(),
            node_name: "node3".into(),
            pod_uid: "uid".into(),
            timeout_seconds: None,
            volumes: Vec::new(),
            registry,
            credentials_secret: None,
            hold_source: false,
        },
    );
    c.metadata.namespace = Some("team".into());
    c
}

fn registry(repository: Option<&str>, secret: Option<&str>) -> Option<RegistrySpec> {
    Some(RegistrySpec {
        compression: None,
        repository: repository.map(str::to_owned),
        secret_ref: secret.map(|name| SecretRef { name: name.into() }),
    })
}

fn defaults(target: Option<&str>, secret: Option<&str>) -> Defaults {
    Defaults {
        target: target.map(|t| t.parse().unwrap()),
        secret: secret.map(|s| SecretName::parse(s, DEFAULT_CREDENTIALS_NAMESPACE).unwrap()),
        ..Defaults::default()
    }
}

fn secret_name(namespace: &str, name: &str) -> SecretName {
    SecretName {
        namespace: namespace.into(),
        name: name.into(),
    }
}

#[test]
fn without_registry_anywhere_the_checkpoint_stays_on_its_node() {
    assert_eq!(route(&content(None), &Defaults::default()).unwrap(), None);
}

#[test]
fn the_requests_repository_and_secret_win_over_the_defaults() {
    let c = content(registry(
        Some("reg.example:5443/team/ckpt"),
        Some("push-creds"),
    ));
    let r = route(&c, &defaults(Some("other.example/prefix"), Some("creds")))
        .unwrap()
        .unwrap();
    assert_eq!(r.to.to_string(), "reg.example:5443/team/ckpt");
    assert_eq!(r.secret, Some(secret_name("team", "push-creds")));
    assert!(r.named);
}

#[test]
fn the_defaults_apply_to_what_the_request_leaves_out() {
    let plain = route(
        &content(None),
        &defaults(Some("reg.example/ckpt"), Some("creds")),
    )
    .unwrap()
    .unwrap();
    assert_eq!(plain.to.to_string(), "reg.example/ckpt/team/cc");
    assert_eq!(
        plain.secret,
        Some(secret_name(DEFAULT_CREDENTIALS_NAMESPACE, "creds"))
    );
    assert!(!plain.named);

    let only_secret = content(registry(None, Some("push-creds")));
    let r = route(&only_secret, &defaults(Some("reg.example/ckpt"), None))
        .unwrap()
        .unwrap();
    assert_eq!(r.to.to_string(), "reg.example/ckpt/team/cc");
    assert_eq!(r.secret, Some(secret_name("team", "push-creds")));
}

#[test]
fn the_default_secret_is_for_the_default_registry_only() {
    let d = defaults(Some("reg.example/ckpt"), Some("creds"));
    let elsewhere = content(registry(Some("other.example/team/x"), None));
    let r = route(&elsewhere, &d).unwrap().unwrap();
    assert_eq!(
        r.secret, None,
        "the cluster's account is not lent to other registries"
    );
    let same_host = content(registry(Some("reg.example/another-team/x"), None));
    assert_eq!(route(&same_host, &d).unwrap().unwrap().secret, None);
    let beside_prefix = content(registry(Some("reg.example/ckptx/team"), None));
    assert_eq!(route(&beside_prefix, &d).unwrap().unwrap().secret, None);
    let under_prefix = content(registry(Some("reg.example/ckpt/team/x"), None));
    assert_eq!(
        route(&under_prefix, &d).unwrap().unwrap().secret,
        Some(secret_name(DEFAULT_CREDENTIALS_NAMESPACE, "creds"))
    );
    // Another namespace's repositories under the prefix are not the request's to write.
    let other_namespace = content(registry(Some("reg.example/ckpt/victim/x"), None));
    assert_eq!(route(&other_namespace, &d).unwrap().unwrap().secret, None);
    let namespace_itself = content(registry(Some("reg.example/ckpt/team"), None));
    assert_eq!(route(&namespace_itself, &d).unwrap().unwrap().secret, None);
}

#[test]
fn the_contents_own_namespace_counts_never_its_spec_namespace() {
    let mut c = content(registry(None, Some("push-creds")));
    c.spec.namespace = "victim".into();
    let d = defaults(Some("reg.example/ckpt"), Some("creds"));
    let r = route(&c, &d).unwrap().unwrap();
    assert_eq!(r.to.to_string(), "reg.example/ckpt/team/cc");
    assert_eq!(r.secret, Some(secret_name("team", "push-creds")));
    c.spec.registry = None;
    let r = route(&c, &d).unwrap().unwrap();
    assert_eq!(
        r.secret,
        Some(secret_name(DEFAULT_CREDENTIALS_NAMESPACE, "creds"))
    );
}

#[test]
fn a_secret_without_a_registry_and_a_malformed_repository_are_refused() {
    let only_secret = content(registry(None, Some("push-creds")));
    let err = route(&only_secret, &Defaults::default()).unwrap_err();
    assert!(
        err.to_string().contains("set spec.registry.repository"),
        "{err}"
    );

    for bad in [
        "https://reg.example/x",
        "reg.example",
        "noport/x",
        "reg.example/UPPER",
    ] {
        let c = content(registry(Some(bad), None));
        let err = route(&c, &Defaults::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("spec.registry.repository {bad:?}")),
            "{err}"
        );
    }
}

#[test]
fn deleting_finds_the_registry_in_the_image_and_skips_the_node_local_one() {
    let c = content(registry(None, Some("push-creds")));
    let d = defaults(None, None);
    let r = of_image(
        &c,
        &d,
        "localhost:5050",
        "reg.example:5443/team/ckpt@sha256:aa",
    )
    .unwrap();
    assert_eq!(r.to.host, "reg.example:5443");
    assert_eq!(r.to.repository, "team/ckpt");
    assert_eq!(r.secret, Some(secret_name("team", "push-creds")));
    assert_eq!(
        of_image(&c, &d, "localhost:5050", "localhost:5050/team/cc@sha256:aa"),
        None
    );
}

fn docker_secret(kind: &str, config: &str) -> Secret {
    Secret {
        type_: Some(kind.into()),
        data: Some(BTreeMap::from([(
            DOCKER_CONFIG_KEY.to_owned(),
            ByteString(config.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

#[test]
fn credentials_come_from_the_dockerconfigjson_entry_of_the_registry() {
    let c = content(registry(
        Some("reg.example:5443/team/ckpt"),
        Some("push-creds"),
    ));
    let r = route(&c, &Defaults::default()).unwrap().unwrap();
    let name = secret_name("team", "push-creds");
    let config = r#"{"auths":{"reg.example:5443":{"username":"alice","password":"s3cret"}}}"#;
    let creds = from_secret(&docker_secret(DOCKER_CONFIG_TYPE, config), &name, &r).unwrap();
    assert!(creds.is_some());

    let err = from_secret(&docker_secret("Opaque", config), &name, &r).unwrap_err();
    assert!(err.to_string().contains("is of type \"Opaque\""), "{err}");

    let elsewhere = r#"{"auths":{"other.example":{"username":"a","password":"b"}}}"#;
    let err = from_secret(&docker_secret(DOCKER_CONFIG_TYPE, elsewhere), &name, &r).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Secret team/push-creds holds no credentials for registry reg.example:5443; add an entry for it"
    );
    // The cluster default may cover other registries only: anonymous then.
    let default = Route { named: false, ..r };
    let creds = from_secret(
        &docker_secret(DOCKER_CONFIG_TYPE, elsewhere),
        &name,
        &default,
    );
    assert!(creds.unwrap().is_none());
}

#[test]
fn a_named_secret_is_read_from_the_controllers_copy_the_default_from_its_namespace() {
    let mut c = content(registry(Some("reg.example/team/ckpt"), Some("push-creds")));
    c.spec.credentials_secret = Some("uid-cc".into());
    let r = route(&c, &Defaults::default()).unwrap().unwrap();
    // Messages name the user's Secret; noded reads only the copy.
    assert_eq!(r.secret, Some(secret_name("team", "push-creds")));
    assert_eq!(r.stored.as_deref(), Some("uid-cc"));
    c.spec.credentials_secret = None;
    let r = route(&c, &Defaults::default()).unwrap().unwrap();
    assert_eq!(
        r.stored, None,
        "no copy: not found, never the user's namespace"
    );

    let c = content(None);
    let r = route(&c, &defaults(Some("reg.example/ckpt"), Some("creds")))
        .unwrap()
        .unwrap();
    assert_eq!(r.stored.as_deref(), Some("creds"));
}

#[test]
fn the_default_secret_lives_in_the_credentials_namespace() {
    let parse = |s| SecretName::parse(s, DEFAULT_CREDENTIALS_NAMESPACE);
    let bare = parse("creds").unwrap();
    assert_eq!(bare, secret_name(DEFAULT_CREDENTIALS_NAMESPACE, "creds"));
    let full = parse("checkpoint-credentials/creds").unwrap();
    assert_eq!(full, bare);
    let err = parse("kube-system/creds").unwrap_err();
    assert!(
        err.contains("only in namespace checkpoint-credentials"),
        "{err}"
    );
    assert!(parse("checkpoint-credentials/").is_err());
}

#[test]
fn the_credentials_namespace_is_the_flags() {
    let bare = SecretName::parse("creds", "registry-creds").unwrap();
    assert_eq!(bare, secret_name("registry-creds", "creds"));
    let err = SecretName::parse("checkpoint-credentials/creds", "registry-creds").unwrap_err();
    assert!(err.contains("only in namespace registry-creds"), "{err}");
}

#[tokio::test]
async fn a_missing_copy_is_reported_under_the_users_secret_name() {
    let api = checkpointing::testing::FakeApi::default();
    let mut c = content(registry(Some("reg.example/team/ckpt"), Some("push-creds")));
    c.spec.credentials_secret = Some("uid-cc".into());
    let r = route(&c, &Defaults::default()).unwrap().unwrap();
    let err = credentials(&api.client(), DEFAULT_CREDENTIALS_NAMESPACE, &r)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "Secret team/push-creds (the credentials for registry reg.example) not found; create it \
         as a kubernetes.io/dockerconfigjson Secret or fix spec.registry.secretRef"
    );
    let paths: Vec<_> = api.take().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        paths,
        ["/api/v1/namespaces/checkpoint-credentials/secrets/uid-cc"]
    );
}

#[tokio::test]
async fn releasing_a_content_deletes_its_copy_once() {
    let api = checkpointing::testing::FakeApi::default();
    let mut c = content(registry(Some("reg.example/team/ckpt"), Some("push-creds")));
    forget_copy(&api.client(), DEFAULT_CREDENTIALS_NAMESPACE, &c)
        .await
        .unwrap();
    assert!(api.take().is_empty(), "no copy, nothing deleted");
    c.spec.credentials_secret = Some("uid-cc".into());
    let path = "/api/v1/namespaces/checkpoint-credentials/secrets/uid-cc";
    api.put(path, docker_secret(DOCKER_CONFIG_TYPE, "{}"));
    forget_copy(&api.client(), DEFAULT_CREDENTIALS_NAMESPACE, &c)
        .await
        .unwrap();
    let seen = api.take();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "DELETE");
    assert_eq!(seen[0].uri.trim_end_matches('?'), path);
}
