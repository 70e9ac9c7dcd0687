//! Checkpoint images in the registries users run: one that requires bearer tokens and TLS with
//! the testbed's CA (Debian's docker-registry behind the test's own token service, see
//! `e2e::TokenRegistry`), credentials in a dockerconfigjson Secret named by the request.

use std::process::Command;
use std::time::Duration;

use checkpointing::crd::{
    CheckpointState, Compression, ContainerCheckpoint, ContainerCheckpointContent, RegistrySpec,
    SecretRef,
};
use checkpointing::names::{DEFAULT_CREDENTIALS_NAMESPACE, NAMESPACE_LABEL, NODE_LABEL};
use checkpointing::reference::Spelling;
use e2e::{
    RegistryUser, TestNamespace, Testbed, TokenRegistry, assert_counter_resumes, checkpoint,
    checkpoint_request, counter_log, counter_pod, eventually, outcome, push_secret, run_pod,
    sample_pod, value_at_checkpoint,
};
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams};

/// The host's side of the testbed network, which the nodes reach.
const HOST: &str = "10.77.0.1";
/// The testbed's plain registry, which also serves Docker Hub's name to the nodes over TLS.
const TESTBED_REGISTRY: &str = "10.77.0.1:5000";

const ADMIN: RegistryUser = RegistryUser {
    name: "admin",
    password: "admin-secret",
    actions: &["pull", "push", "delete"],
};
/// May push and pull but not delete, like a CI robot account.
const PUSHER: RegistryUser = RegistryUser {
    name: "pusher",
    password: "pusher-secret",
    actions: &["pull", "push"],
};

async fn token_registry(tb: &Testbed) -> TokenRegistry {
    TokenRegistry::start(HOST, &tb.state.join("pki"), &[ADMIN, PUSHER]).await
}

/// A test namespace named after `name`, a token registry, and Secret `secret` there holding
/// `user`'s credentials for it.
async fn with_token_registry(
    tb: &Testbed,
    name: &str,
    secret: &str,
    user: &RegistryUser,
) -> (TestNamespace, TokenRegistry) {
    let ns = TestNamespace::create(tb, name).await;
    let registry = token_registry(tb).await;
    let config = registry.docker_config(user.name, user.password);
    push_secret(&tb.client().await, &ns.name, secret, config).await;
    (ns, registry)
}

/// A request for the counter of `pod`, pushed to `repository` with the Secret `secret`.
fn pushed_request(name: &str, pod: &str, repository: &str, secret: &str) -> ContainerCheckpoint {
    compressed_request(name, pod, repository, secret, None)
}

/// [`pushed_request`] with `spec.registry.compression` set to `compression`.
fn compressed_request(
    name: &str,
    pod: &str,
    repository: &str,
    secret: &str,
    compression: Option<Compression>,
) -> ContainerCheckpoint {
    let mut cc = checkpoint_request(name, pod, "counter");
    cc.spec.registry = Some(RegistrySpec {
        repository: Some(repository.to_owned()),
        secret_ref: Some(SecretRef {
            name: secret.to_owned(),
        }),
        compression,
    });
    cc
}

/// The testbed's busybox with a label naming `name`, under that name: an image no node has
/// pulled, by tag or by digest (its config, and so its digest, are new), referenced the way
/// pods name Docker Hub images. A base image surely absent from every node but its own.
fn fresh_base_image(name: &str) -> String {
    let buildah = |args: &[&str]| {
        let out = Command::new("buildah").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "buildah {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let from = format!("docker://{TESTBED_REGISTRY}/library/busybox:latest");
    let working = buildah(&["from", "--quiet", "--tls-verify=false", &from]);
    buildah(&[
        "config",
        "--label",
        &format!("checkpointing-e2e={name}"),
        &working,
    ]);
    let to = format!("docker://{TESTBED_REGISTRY}/e2e/{name}:latest");
    buildah(&[
        "commit",
        "--quiet",
        "--rm",
        "--tls-verify=false",
        &working,
        &to,
    ]);
    format!("e2e/{name}:latest")
}

/// Whether the runtime on `node` holds `image`.
fn node_has_image(tb: &Testbed, node: &str, image: &str) -> bool {
    tb.node_exec(node, &["crictl", "inspecti", image])
        .status
        .success()
}

/// The media type of the archive layer (the first) of the manifest `digest` in `registry`'s
/// `path`, read through the registry API.
async fn archive_media_type(registry: &TokenRegistry, path: &str, digest: &str) -> String {
    let (status, body) = registry.manifest(path, digest, &ADMIN).await;
    assert_eq!(status, 200, "the registry serves {path}@{digest}");
    let manifest: serde_json::Value = serde_json::from_slice(&body).unwrap();
    manifest["layers"][0]["mediaType"]
        .as_str()
        .unwrap_or_else(|| panic!("a first layer with a media type: {manifest}"))
        .to_owned()
}

/// The done-when of pushing to a token registry: pushed with a dockerconfigjson Secret and
/// the archive layer zstd-compressed (`compression: Zstd`), restored on another node through
/// its node-local registry by the pushed digest (its base image absent there before), and
/// gone from the registry once the request is deleted. With the node that took it serving,
/// the image comes from there; `pushed_volumes` restores with that node's noded down, from
/// the registry.
#[tokio::test]
async fn a_checkpoint_pushed_to_a_token_registry_restores_on_another_node_by_its_digest() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let (ns, registry) = with_token_registry(&tb, "token-registry", "push-creds", &ADMIN).await;
    let base = fresh_base_image(&ns.name);

    let mut app = counter_pod("app", "node3", 1);
    app.spec.as_mut().unwrap().containers[0].image = Some(base.clone());
    run_pod(&client, &ns.name, app).await;
    counter_log(&tb, &ns.name, "app", 2, Duration::from_secs(60)).await;
    let repository = format!("{}/checkpoints/{}", registry.host, ns.name);
    let cc = checkpoint(
        &client,
        &ns.name,
        compressed_request(
            "pushed",
            "app",
            &repository,
            "push-creds",
            Some(Compression::Zstd),
        ),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    assert!(
        message.ends_with(" zstd"),
        "the status tells what was pushed: {message}"
    );
    let image = cc.status.as_ref().unwrap().image.clone().unwrap();
    let digest = image
        .strip_prefix(&format!("{repository}@"))
        .unwrap_or_else(|| panic!("the status names the pushed copy by digest: {image}"));
    let path = repository.trim_start_matches(&format!("{}/", registry.host));
    assert_eq!(
        archive_media_type(&registry, path, digest).await,
        "application/vnd.oci.image.layer.v1.tar+zstd"
    );
    let content = Api::<ContainerCheckpointContent>::namespaced(client.clone(), &ns.name)
        .get("pushed")
        .await
        .unwrap();
    let status = content.status.clone().unwrap();
    let at_checkpoint =
        value_at_checkpoint(&tb, "node3", status.checkpoint_path.as_deref().unwrap());
    assert!(
        status
            .base_image
            .as_deref()
            .is_some_and(|b| b.contains(&format!("e2e/{}", ns.name))),
        "the Content names the base image: {:?}",
        status.base_image
    );
    // As the runtime names it: by tag on CRI-O, by digest on containerd.
    let needed = status.base_image.clone().unwrap();
    assert!(
        !node_has_image(&tb, "node2", &base) && !node_has_image(&tb, "node2", &needed),
        "node2 has never pulled {base}"
    );

    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .delete("app", &DeleteParams::default())
        .await
        .unwrap();
    let mut restored = sample_pod(&tb, "restored-app-node2.yaml");
    restored.metadata.namespace = Some(ns.name.clone());
    restored.metadata.annotations.as_mut().unwrap().insert(
        "checkpointing.zacchaeuschok.github.io/restore-from".into(),
        "pushed".into(),
    );
    let running = run_pod(&client, &ns.name, restored).await;
    let spec = running.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("node2"));
    // Like every restore, through the node-local registry, by the pushed image's digest.
    let local = format!("localhost:5050/{}/pushed@{digest}", ns.name);
    assert_eq!(spec.containers[0].image.as_deref(), Some(local.as_str()));
    assert!(
        spec.image_pull_secrets.iter().flatten().next().is_none(),
        "the runtime gets no registry credentials: noded fetches the image"
    );
    assert_counter_resumes(&tb, &ns.name, &running, at_checkpoint).await;
    assert!(
        node_has_image(&tb, "node2", &needed),
        "node2 has the base image {needed} now"
    );
    // node3's noded serves it, so node2's noded fetched it from there.
    assert!(tb.node_holds_image("node2", content.metadata.uid.as_deref().unwrap()));

    Api::<ContainerCheckpoint>::namespaced(client.clone(), &ns.name)
        .delete("pushed", &DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the pushed manifest deleted from the registry",
        Duration::from_secs(60),
        || async { (registry.manifest_status(path, digest, &ADMIN).await == 404).then_some(()) },
    )
    .await;
}

/// `compression: None` pushes the archive as the plain tar it is on the node.
#[tokio::test]
async fn a_checkpoint_pushed_uncompressed_keeps_the_plain_tar_layer() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let (ns, registry) = with_token_registry(&tb, "plain-push", "push-creds", &ADMIN).await;
    run_pod(&client, &ns.name, counter_pod("app", "node3", 1)).await;
    counter_log(&tb, &ns.name, "app", 2, Duration::from_secs(60)).await;
    let repository = format!("{}/checkpoints/{}", registry.host, ns.name);
    let request = compressed_request(
        "plain",
        "app",
        &repository,
        "push-creds",
        Some(Compression::None),
    );
    let cc = checkpoint(&client, &ns.name, request).await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    assert!(message.ends_with(" uncompressed"), "{message}");
    let image = cc.status.as_ref().unwrap().image.clone().unwrap();
    let digest = image.strip_prefix(&format!("{repository}@")).unwrap();
    let path = repository.trim_start_matches(&format!("{}/", registry.host));
    assert_eq!(
        archive_media_type(&registry, path, digest).await,
        "application/vnd.oci.image.layer.v1.tar"
    );
}

/// Each way a push can go wrong ends the request Failed, naming the registry and the cause,
/// and references nothing half-pushed.
#[tokio::test]
async fn registry_failures_fail_the_request_naming_the_registry_and_the_cause() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "registry-failures").await;
    let registry = token_registry(&tb).await;
    let untrusted = TokenRegistry::start_untrusted(HOST, &[ADMIN]).await;
    push_secret(
        &client,
        &ns.name,
        "wrong-password",
        registry.docker_config(ADMIN.name, "guessed"),
    )
    .await;
    push_secret(
        &client,
        &ns.name,
        "untrusted-creds",
        untrusted.docker_config(ADMIN.name, ADMIN.password),
    )
    .await;
    // A port nothing listens on: the registry is down.
    let down = {
        let listener = std::net::TcpListener::bind((HOST, 0)).unwrap();
        listener.local_addr().unwrap().to_string()
    };
    let down_config = serde_json::json!({
        "auths": {&down: {"username": ADMIN.name, "password": ADMIN.password}},
    });
    push_secret(&client, &ns.name, "down-creds", down_config.to_string()).await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;

    let cases = [
        (
            "wrong-password",
            format!("{}/ckpt", registry.host),
            "wrong-password",
            vec![registry.host.clone(), "refused the credentials".into()],
        ),
        (
            "missing-secret",
            format!("{}/ckpt", registry.host),
            "no-such-secret",
            vec![
                registry.host.clone(),
                format!("Secret {}/no-such-secret", ns.name),
                "not found".into(),
            ],
        ),
        (
            "unknown-ca",
            format!("{}/ckpt", untrusted.host),
            "untrusted-creds",
            vec![untrusted.host.clone(), "UnknownIssuer".into()],
        ),
        (
            "registry-down",
            format!("{down}/ckpt"),
            "down-creds",
            vec![down.clone(), "onnection refused".into()],
        ),
    ];
    for (name, repository, secret, expected) in cases {
        let cc = checkpoint(
            &client,
            &ns.name,
            pushed_request(name, "app", &repository, secret),
        )
        .await;
        let (state, message) = outcome(&cc);
        assert_eq!(state, CheckpointState::Failed, "{name}: {message}");
        for part in expected {
            assert!(
                message.contains(&part),
                "{name}: {part:?} not in {message:?}"
            );
        }
        assert_eq!(
            cc.status.as_ref().unwrap().image,
            None,
            "{name}: a failed push references no image"
        );
    }
    // Nothing was stored under the tags the failed pushes would have used.
    let contents = Api::<ContainerCheckpointContent>::namespaced(client.clone(), &ns.name);
    let refused = contents.get("wrong-password").await.unwrap();
    let tag = refused.metadata.uid.unwrap();
    assert_eq!(registry.manifest_status("ckpt", &tag, &ADMIN).await, 404);
}

/// A registry that will not delete (here: the Secret's account may not) keeps the pushed copy;
/// noded says so in an Event on the Content instead of holding the deletion.
#[tokio::test]
async fn a_pushed_copy_the_registry_refuses_to_delete_is_reported_in_an_event() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let (ns, registry) = with_token_registry(&tb, "kept-copy", "robot", &PUSHER).await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;
    let repository = format!("{}/robot", registry.host);
    let cc = checkpoint(
        &client,
        &ns.name,
        pushed_request("kept", "app", &repository, "robot"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    // noded pushed with the controller's copy of the Secret, which lives as long as the Content.
    let copies = Api::<Secret>::namespaced(client.clone(), DEFAULT_CREDENTIALS_NAMESPACE);
    let copy_name = cc.metadata.uid.clone().unwrap();
    let copy = copies.get(&copy_name).await.unwrap();
    let labels = copy.metadata.labels.unwrap_or_default();
    assert_eq!(labels.get(NAMESPACE_LABEL), Some(&ns.name));
    assert_eq!(labels.get(NODE_LABEL).map(String::as_str), Some("node1"));
    let image = cc.status.unwrap().image.unwrap();
    let digest = Spelling::of(&image).digest.unwrap().to_owned();

    Api::<ContainerCheckpoint>::namespaced(client.clone(), &ns.name)
        .delete("kept", &DeleteParams::default())
        .await
        .unwrap();
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let event = eventually(
        "a PushedCopyKept event",
        Duration::from_secs(60),
        || async {
            let list = events.list(&ListParams::default()).await.ok()?;
            list.items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("PushedCopyKept"))
        },
    )
    .await;
    let note = event.message.unwrap_or_default();
    assert!(
        note.contains(&image) && note.contains(&registry.host),
        "{note}"
    );
    assert_eq!(
        event.involved_object.kind.as_deref(),
        Some("ContainerCheckpointContent")
    );
    // The deletion was not held: the Content is gone, and the copy is still there.
    eventually("the Content gone", Duration::from_secs(30), || async {
        Api::<ContainerCheckpointContent>::namespaced(client.clone(), &ns.name)
            .get_opt("kept")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    assert_eq!(
        registry.manifest_status("robot", &digest, &ADMIN).await,
        200
    );
    assert!(
        copies.get_opt(&copy_name).await.unwrap().is_none(),
        "the credentials copy went with its Content"
    );
}
