//! noded reads no Secret outside `checkpoint-credentials`: a node taken over reads no tenant's
//! credentials. Pushing with a tenant's Secret goes through the controller's copy
//! (registries.rs).

use checkpointing::names::CREDENTIALS_NAMESPACE;
use e2e::{TestNamespace, Testbed};
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
    let own = Api::<Secret>::namespaced(noded, CREDENTIALS_NAMESPACE)
        .get_opt("no-such-copy")
        .await
        .unwrap();
    assert!(own.is_none());
}
