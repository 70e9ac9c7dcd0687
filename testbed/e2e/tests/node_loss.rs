//! A node lost for good: its kubelet and runtime stop, and an administrator marks it with the
//! `node.kubernetes.io/out-of-service` taint (Kubernetes' non-graceful node shutdown). The pod
//! a CheckpointPolicy protects (`onNodeLoss: Restore`) comes back on another node from its
//! newest checkpoint in the registry (the copy on the lost node is gone with it), counting on
//! from that checkpoint; the policy's Event says which checkpoint and how old it was. Node3,
//! as the fault tests use it, and brought back at the end.

use std::time::Duration;

use checkpointing::crd::{CheckpointPolicy, PodMigration};
use checkpointing::names::{LOST_POD_LABEL, OUT_OF_SERVICE_TAINT};
use e2e::{
    RegistryUser, TestNamespace, Testbed, TokenRegistry, assert_moved, counter_log, counter_pod,
    eventually, push_secret, run_pod, wait_migration,
};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const NODE: &str = "node3";
/// The host's side of the testbed network, where the test's registry listens.
const HOST: &str = "10.77.0.1";
const PUSHER: RegistryUser = RegistryUser {
    name: "protector",
    password: "protector-secret",
    actions: &["pull", "push", "delete"],
};

/// `NODE` down: its agents stopped and the taint set. Dropped, the taint goes and the agents
/// start again (wait with [`Lost::back`]).
struct Lost<'a>(&'a Testbed);

impl<'a> Lost<'a> {
    fn new(tb: &'a Testbed) -> Self {
        tb.agents(&["stop", "all", NODE]);
        let lost = Self(tb);
        let taint = format!("{OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute");
        tb.kubectl_ok(&["taint", "node", NODE, &taint, "--overwrite"]);
        lost
    }

    /// Brings the node back and waits until it is Ready with its noded serving.
    async fn back(self, client: &kube::Client) {
        let tb = self.0;
        drop(self);
        let nodes: Api<Node> = Api::all(client.clone());
        eventually(
            &format!("{NODE} Ready again"),
            Duration::from_secs(180),
            || async {
                let node = nodes.get(NODE).await.ok()?;
                let ready = node
                    .status?
                    .conditions?
                    .into_iter()
                    .find(|c| c.type_ == "Ready")?;
                (ready.status == "True").then_some(())
            },
        )
        .await;
        tb.wait_noded(client, NODE).await;
    }
}

impl Drop for Lost<'_> {
    fn drop(&mut self) {
        let _ = self
            .0
            .kubectl(&["taint", "node", NODE, &format!("{OUT_OF_SERVICE_TAINT}-")]);
        self.0.agents(&["start", "all", NODE]);
    }
}

#[tokio::test]
async fn a_lost_nodes_protected_pod_comes_back_elsewhere_from_its_registry_checkpoint() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "node-loss").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let registry = TokenRegistry::start(HOST, &tb.state.join("pki"), &[PUSHER]).await;
    let config = registry.docker_config(PUSHER.name, PUSHER.password);
    push_secret(&client, ns, "push-creds", config).await;
    let repository = format!("{}/checkpoints/{ns}", registry.host);
    let policy: CheckpointPolicy = serde_json::from_value(json!({
        "metadata": {"name": "protect"},
        "spec": {
            "selector": {"matchLabels": {"app": "keep"}},
            "schedule": {"intervalSeconds": 3600},
            "registry": {"repository": repository, "secretRef": {"name": "push-creds"}},
            "onNodeLoss": "Restore",
        },
    }))
    .unwrap();
    let policies: Api<CheckpointPolicy> = Api::namespaced(client.clone(), ns);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let mut keep = counter_pod("keep", NODE, 1);
    keep.metadata.labels = Some([("app".to_owned(), "keep".to_owned())].into());
    let source = run_pod(&client, ns, keep).await;
    counter_log(&tb, ns, "keep", 2, Duration::from_secs(60)).await;
    // The policy checkpoints a pod at once, then hourly: the checkpoint to come back from.
    let checkpoint = eventually(
        "the policy's first checkpoint, in the registry",
        Duration::from_secs(120),
        || async {
            let status = policies.get("protect").await.ok()?.status?;
            status.pods.first()?.last_checkpoint.clone()
        },
    )
    .await;

    let lost = Lost::new(&tb);
    let uid = source.metadata.uid.clone().unwrap();
    let migrations: Api<PodMigration> = Api::namespaced(client.clone(), ns);
    let name = eventually(
        "the restore of the lost pod to start",
        Duration::from_secs(120),
        || async {
            let label = format!("{LOST_POD_LABEL}={uid}");
            let list = migrations.list(&ListParams::default().labels(&label)).await;
            list.ok()?.items.into_iter().next()?.metadata.name
        },
    )
    .await;
    let pm = wait_migration(&client, ns, &name).await;
    assert_eq!(
        pm.spec.from_checkpoint.as_deref(),
        Some(checkpoint.as_str()),
        "from the policy's newest checkpoint"
    );
    assert_moved(&tb, &client, ns, &pm, None).await;
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let said = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|e| e.reason.as_deref() == Some("NodeLost"))
        .and_then(|e| e.note)
        .expect("a NodeLost Event on the policy");
    assert!(
        said.contains(OUT_OF_SERVICE_TAINT) && said.contains(&checkpoint) && said.contains("taken"),
        "{said}"
    );
    lost.back(&client).await;
}
