//! A tenant aiming noded's push at what only the node can reach: its own admin port on
//! loopback, the cloud's metadata service. Written as the attacker: the tenant may checkpoint
//! its own pod and names the target as its registry; the request fails up front, naming the
//! refused target, and nothing is dumped or sent.

use std::time::Duration;

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointContent, RegistrySpec,
};
use e2e::{
    TestNamespace, Testbed, checkpoint_request, counter_pod, eventually, grant, outcome, run_pod,
    sample, wait_checkpoint,
};
use kube::api::{Api, PostParams};
use serde_json::json;

const NODE: &str = "node1";
const TENANT: &str = "tenant";

/// What noded's /metrics on `NODE` says of checkpoints started: CRI calls and whole
/// checkpoints timed.
fn started_checkpoints(tb: &Testbed) -> (f64, f64) {
    let text = tb.noded_metrics(NODE);
    (
        sample(
            &text,
            "checkpointing_noded_checkpoint_cri_duration_seconds_count",
            "",
        ),
        sample(
            &text,
            "checkpointing_noded_checkpoint_duration_seconds_count",
            "",
        ),
    )
}

#[tokio::test]
async fn a_tenants_push_to_the_node_or_the_metadata_service_fails_before_any_dump() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "push-targets").await;
    run_pod(&client, &ns.name, counter_pod("app", NODE, 1)).await;
    // What checkpointing its own pods takes, and nothing else.
    let rules = json!([
        {
            "apiGroups": ["checkpointing.zacchaeuschok.github.io"],
            "resources": ["containercheckpoints"],
            "verbs": ["create", "get"],
        },
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
    ]);
    grant(&client, &ns.name, "checkpointer", TENANT, rules).await;
    let tenant = tb.client_as(TENANT, &["system:authenticated"], &[]).await;
    let as_tenant: Api<ContainerCheckpoint> = Api::namespaced(tenant, &ns.name);
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    let before = started_checkpoints(&tb);

    for (name, repository, address, class) in [
        ("admin-port", "127.0.0.1:9811/x", "127.0.0.1", "loopback"),
        (
            "metadata",
            "169.254.169.254/x",
            "169.254.169.254",
            "link-local",
        ),
    ] {
        let mut request = checkpoint_request(name, "app", "counter");
        request.spec.registry = Some(RegistrySpec {
            compression: None,
            repository: Some(repository.to_owned()),
            secret_ref: None,
        });
        // RBAC changes reach the authorizer's cache within moments.
        eventually(
            &format!("the tenant's request {name} to be admitted"),
            Duration::from_secs(30),
            || async {
                as_tenant
                    .create(&PostParams::default(), &request)
                    .await
                    .ok()
            },
        )
        .await;
        let done = wait_checkpoint(&client, &ns.name, name).await;
        let (state, message) = outcome(&done);
        assert_eq!(state, CheckpointState::Failed, "{name}: {message}");
        let host = repository.trim_end_matches("/x");
        for part in [
            format!("push target {host} refused"),
            format!("resolves to {address}, a {class} address"),
        ] {
            assert!(
                message.contains(&part),
                "{name}: {part:?} not in {message:?}"
            );
        }
        let status = done.status.unwrap();
        assert_eq!(status.image, None, "{name} references no image");

        // Refused with the other registry configuration errors, before the dump: no archive
        // or partial file of it on the node.
        let content = contents.get(name).await.unwrap();
        let uid = content.metadata.uid.unwrap();
        let dir = tb.node_path(NODE, "/var/lib/kubelet/checkpoints");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| f.contains(&uid))
            .collect();
        assert!(
            leftovers.is_empty(),
            "{name}: {leftovers:?} in {}",
            dir.display()
        );
    }
    assert_eq!(
        started_checkpoints(&tb),
        before,
        "no CRI checkpoint call and no checkpoint started on {NODE}"
    );
}
