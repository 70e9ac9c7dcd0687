//! A checkpoint pushed to a token registry restores with its emptyDir data when the node that
//! took it cannot serve it: its noded is down, so the restoring node's noded fetches the
//! pushed copy (with the request's credentials) and places the volume before the restored
//! process runs, which goes on appending to the file it had written.

use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpointContent, RegistrySpec, SecretRef};
use checkpointing::names::RESTORE_FROM_ANNOTATION;
use e2e::{
    NodedDown, RegistryUser, TestNamespace, Testbed, TokenRegistry, assert_counter_resumes,
    assert_file_resumes, checkpoint, checkpoint_request, counter_log, outcome, push_secret,
    run_pod, value_at_checkpoint, volume_pod,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

/// The host's side of the testbed network, where the test's registry listens.
const HOST: &str = "10.77.0.1";
const SOURCE: &str = "node3";
const TARGET: &str = "node2";
const PUSHER: RegistryUser = RegistryUser {
    name: "volumes",
    password: "volumes-secret",
    actions: &["pull", "push", "delete"],
};
/// The file the counter appends to, in the emptyDir `data`.
const FILE: &str = "/data/log";

/// A counter on `node` that prints each value and appends it to [`FILE`]; restoring from
/// `from` when given.
fn writer(name: &str, node: &str, from: Option<&str>) -> Pod {
    let script = format!(
        "counter=0\nwhile true; do\n  echo \"Counter: $counter\"\n  echo $counter >> {FILE}\n  \
         counter=$((counter+1))\n  sleep 1\ndone\n"
    );
    let mut pod = volume_pod(name, node, &script);
    pod.metadata.annotations =
        from.map(|cc| [(RESTORE_FROM_ANNOTATION.to_owned(), cc.to_owned())].into());
    pod
}

#[tokio::test]
async fn a_pushed_checkpoint_restores_its_emptydir_when_its_node_cannot_serve_it() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "pushed-volumes").await;
    let ns = ns.name.as_str();
    let registry = TokenRegistry::start(HOST, &tb.state.join("pki"), &[PUSHER]).await;
    let config = registry.docker_config(PUSHER.name, PUSHER.password);
    push_secret(&client, ns, "push-creds", config).await;

    run_pod(&client, ns, writer("writer", SOURCE, None)).await;
    counter_log(&tb, ns, "writer", 3, Duration::from_secs(60)).await;
    let repository = format!("{}/checkpoints/{ns}", registry.host);
    let mut request = checkpoint_request("pushed", "writer", "counter");
    request.spec.registry = Some(RegistrySpec {
        repository: Some(repository.clone()),
        secret_ref: Some(SecretRef {
            name: "push-creds".into(),
        }),
        ..RegistrySpec::default()
    });
    let cc = checkpoint(&client, ns, request).await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let image = cc.status.as_ref().unwrap().image.clone().unwrap();
    let digest = image
        .strip_prefix(&format!("{repository}@"))
        .unwrap_or_else(|| panic!("the status names the pushed copy by digest: {image}"))
        .to_owned();
    let content = Api::<ContainerCheckpointContent>::namespaced(client.clone(), ns)
        .get("pushed")
        .await
        .unwrap();
    let status = content.status.clone().unwrap();
    let at_checkpoint =
        value_at_checkpoint(&tb, SOURCE, status.checkpoint_path.as_deref().unwrap());
    let uid = content.metadata.uid.clone().unwrap();

    // The node that took it can no longer serve it: its noded is gone (and its kubelet, which
    // would start it again).
    let down = NodedDown::new(&tb, &client, SOURCE).await;
    let running = run_pod(&client, ns, writer("restored", TARGET, Some("pushed"))).await;
    let spec = running.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(TARGET));
    let local = format!("localhost:5050/{ns}/pushed@{digest}");
    assert_eq!(spec.containers[0].image.as_deref(), Some(local.as_str()));
    assert!(
        tb.node_holds_image(TARGET, &uid),
        "{TARGET}'s noded fetched the pushed copy"
    );
    assert_counter_resumes(&tb, ns, &running, at_checkpoint).await;
    // The emptyDir arrived: what the source wrote up to the checkpoint, then the restored
    // process's own values.
    assert_file_resumes(&tb, ns, ("restored", "counter"), FILE, at_checkpoint).await;

    drop(down);
    tb.wait_noded(&client, SOURCE).await;
}
