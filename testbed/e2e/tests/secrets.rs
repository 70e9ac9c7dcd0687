//! noded reads no Secret outside `checkpoint-credentials`: a node taken over reads no tenant's
//! credentials. Pushing with a tenant's Secret goes through the controller's copy
//! (registries.rs).

use std::time::Duration;

use checkpointing::names::{DEFAULT_CREDENTIALS_NAMESPACE, NAMESPACE_LABEL, NODE_LABEL};
use e2e::{TestNamespace, Testbed, eventually};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};

#[tokio::test]
async fn noded_may_not_read_a_tenants_secret_but_may_read_the_credentials_namespace() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "secrets").await;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "creds"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\":{}}"},
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let noded = tb.as_noded("node1").await;
    match Api::<Secret>::namespaced(noded.clone(), &ns.name)
        .get("creds")
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 403, "{}", s.message),
        other => panic!("noded read a tenant's Secret: {other:?}"),
    }
    // Its own namespace: allowed, and nothing there by this name.
    let own = Api::<Secret>::namespaced(noded, DEFAULT_CREDENTIALS_NAMESPACE)
        .get_opt("no-such-copy")
        .await
        .unwrap();
    assert!(own.is_none());
}

/// A copy left behind (its Content's finalizer released without noded, or its request deleted
/// before the Content was made) is deleted once it is `--release-abandoned-after-seconds` old
/// (20 s on the testbed): no tenant's credentials stay on the cluster longer than their use.
#[tokio::test]
async fn a_credentials_copy_no_content_names_is_swept() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "orphan-copy").await;
    let name = format!("orphan-{}", ns.name);
    let copy: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": name,
            "labels": {NAMESPACE_LABEL: ns.name, NODE_LABEL: "node1"},
        },
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": "{\"auths\":{}}"},
        "immutable": true,
    }))
    .unwrap();
    let copies = Api::<Secret>::namespaced(client.clone(), DEFAULT_CREDENTIALS_NAMESPACE);
    copies.create(&PostParams::default(), &copy).await.unwrap();
    eventually(
        "the controller to delete the orphaned copy",
        Duration::from_secs(180),
        || async { copies.get_opt(&name).await.ok()?.is_none().then_some(()) },
    )
    .await;
}
