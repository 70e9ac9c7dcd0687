use checkpointing::crd::SecretRef;
use checkpointing::names::DEFAULT_CREDENTIALS_NAMESPACE;
use checkpointing::testing::FakeApi;
use k8s_openapi::ByteString;

use super::*;
use crate::fixtures::{content, request};

const SOURCE_PATH: &str = "/api/v1/namespaces/default/secrets/creds";
const COPIES_PATH: &str = "/api/v1/namespaces/checkpoint-credentials/secrets";

fn registry() -> Option<RegistrySpec> {
    Some(RegistrySpec {
        compression: None,
        repository: Some("registry.example/ckpt".into()),
        secret_ref: Some(SecretRef {
            name: "creds".into(),
        }),
    })
}

/// The Content of a request naming Secret `creds`, with its copy's name.
fn pushed_content() -> ContainerCheckpointContent {
    let mut content = content();
    content.spec.registry = registry();
    content.spec.credentials_secret = Some("uid-cc1".into());
    content
}

fn secret(kind: &str, data: &[(&str, &str)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some("creds".into()),
            namespace: Some("default".into()),
            labels: Some(BTreeMap::from([("mine".into(), "yes".into())])),
            ..ObjectMeta::default()
        },
        type_: Some(kind.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// A fake API server holding the request's registry Secret.
fn holding_the_secret() -> FakeApi {
    let api = FakeApi::default();
    api.put(SOURCE_PATH, docker());
    api
}

fn docker() -> Secret {
    secret(DOCKER_CONFIG_TYPE, &[(DOCKER_CONFIG_KEY, "{}")])
}

#[test]
fn a_request_naming_a_secret_gets_a_copy_named_after_its_uid() {
    let mut named = request();
    named.spec.registry = registry();
    assert_eq!(copy_name(&named).as_deref(), Some("uid-cc1"));
    // A repository alone (or nothing) uses the cluster's default Secret: no copy.
    let mut unnamed = request();
    unnamed.spec.registry = Some(RegistrySpec {
        secret_ref: None,
        ..registry().unwrap()
    });
    assert_eq!(copy_name(&unnamed), None);
    assert_eq!(copy_name(&request()), None);
}

/// `pushed_content()`'s copy of `source`, in the default namespace.
fn copied(source: &Secret) -> Secret {
    copy_of(
        source,
        "uid-cc1",
        DEFAULT_CREDENTIALS_NAMESPACE,
        &pushed_content(),
    )
}

/// Copies `pushed_content()`'s Secret through `api`, into the default namespace.
async fn copy_pushed(api: &FakeApi) -> Result<(), kube::Error> {
    copy(
        &api.client(),
        DEFAULT_CREDENTIALS_NAMESPACE,
        &pushed_content(),
    )
    .await
}

#[test]
fn the_copy_holds_only_the_credentials_labelled_with_node_and_namespace() {
    let source = secret(
        DOCKER_CONFIG_TYPE,
        &[
            (DOCKER_CONFIG_KEY, "{\"auths\":{}}"),
            ("other", "not copied"),
        ],
    );
    let copy = copied(&source);
    assert_eq!(copy.metadata.name.as_deref(), Some("uid-cc1"));
    assert_eq!(
        copy.metadata.namespace.as_deref(),
        Some(DEFAULT_CREDENTIALS_NAMESPACE)
    );
    assert_eq!(
        copy.metadata.labels,
        Some(BTreeMap::from([
            (NODE_LABEL.to_owned(), "node1".to_owned()),
            (NAMESPACE_LABEL.to_owned(), "default".to_owned()),
        ]))
    );
    assert_eq!(copy.metadata.owner_references, None);
    assert_eq!(copy.type_.as_deref(), Some(DOCKER_CONFIG_TYPE));
    assert_eq!(
        copy.data,
        Some(BTreeMap::from([(
            DOCKER_CONFIG_KEY.to_owned(),
            ByteString(b"{\"auths\":{}}".to_vec())
        )]))
    );
}

#[test]
fn a_secret_of_another_type_is_copied_without_data() {
    let tls = secret("kubernetes.io/tls", &[("tls.key", "private")]);
    let copy = copied(&tls);
    assert_eq!(copy.type_.as_deref(), Some("Opaque"));
    assert_eq!(copy.data, None);
    let custom = secret("example.com/creds", &[(DOCKER_CONFIG_KEY, "{}")]);
    let copy = copied(&custom);
    assert_eq!(copy.type_.as_deref(), Some("example.com/creds"));
    assert_eq!(copy.data, None);
}

#[tokio::test]
async fn copying_reads_the_named_secret_and_creates_the_copy() {
    let api = holding_the_secret();
    copy_pushed(&api).await.unwrap();
    let seen = api.take();
    let calls: Vec<_> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.uri.split('?').next().unwrap()))
        .collect();
    assert_eq!(
        calls,
        [format!("GET {SOURCE_PATH}"), format!("POST {COPIES_PATH}")]
    );
    let sent: Secret = serde_json::from_value(seen[1].body.clone().unwrap()).unwrap();
    assert_eq!(sent, copied(&docker()));
}

#[tokio::test]
async fn an_existing_copy_is_kept_and_a_missing_secret_is_left_to_noded() {
    let api = holding_the_secret();
    api.fail_writes(COPIES_PATH, 409, "AlreadyExists");
    copy_pushed(&api).await.unwrap();

    let missing = FakeApi::default();
    copy_pushed(&missing).await.unwrap();
    let methods: Vec<_> = missing.take().into_iter().map(|s| s.method).collect();
    assert_eq!(methods, ["GET"], "nothing to copy, nothing created");

    let forbidden = FakeApi::default();
    forbidden.put(SOURCE_PATH, secret(DOCKER_CONFIG_TYPE, &[]));
    forbidden.fail_writes(COPIES_PATH, 403, "Forbidden");
    assert!(copy_pushed(&forbidden).await.is_err());
}

#[tokio::test]
async fn a_content_without_a_named_secret_copies_nothing() {
    let api = FakeApi::default();
    copy(&api.client(), DEFAULT_CREDENTIALS_NAMESPACE, &content())
        .await
        .unwrap();
    assert!(api.take().is_empty());
}
