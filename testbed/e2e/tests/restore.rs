//! Restore and cross-node migration: pods annotated `restore-from` resume the checkpointed
//! process. These tests share the controller's webhook and run one at a time with the fault
//! tests (see .config/nextest.toml), because one of those stops the controller.

use std::process::Command;
use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use checkpointing::names::{PEER_AUDIENCE, RESTORE_FROM_ANNOTATION};
use checkpointing::oci::ImageLayout;
use checkpointing::reference::{ImageRef, Spelling};
use e2e::{
    NODED_NAMESPACE, PULL_USER, TestNamespace, Testbed, assert_counter_resumes, checkpoint,
    checkpoint_request, counter_at_checkpoint, counter_log, counter_pod, eventually, outcome,
    pull_credential, registry_token, run_pod, running_pod, sample_pod, value_at_checkpoint,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;

const NODED_DAEMONSET: &str = "daemonset/container-checkpoint-sidecar";

/// Checkpoints the seed's counter pod in `ns` (on node1) and returns the value at checkpoint time.
async fn seed_checkpoint(tb: &Testbed, client: &kube::Client, ns: &str) -> u64 {
    run_pod(client, ns, sample_pod(tb, "sample-app.yaml")).await;
    counter_log(tb, ns, "stateful-app", 2, Duration::from_secs(60)).await;
    let cc = checkpoint(
        client,
        ns,
        checkpoint_request("counter-checkpoint", "stateful-app", "counter"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    counter_at_checkpoint(tb, client, ns, "counter-checkpoint", "node1").await
}

/// The seed's restored pod, in `ns`, pinned to `node`, named `name`.
fn restored_pod(tb: &Testbed, ns: &str, name: &str, node: &str) -> Pod {
    let mut pod = sample_pod(tb, "restored-app-node2.yaml");
    pod.metadata.name = Some(name.into());
    pod.metadata.namespace = Some(ns.into());
    pod.spec
        .as_mut()
        .unwrap()
        .node_selector
        .as_mut()
        .unwrap()
        .insert("kubernetes.io/hostname".into(), node.into());
    pod
}

async fn assert_resumes(
    tb: &Testbed,
    client: &kube::Client,
    ns: &str,
    pod: Pod,
    node: &str,
    at_checkpoint: u64,
) {
    let running = run_pod(client, ns, pod).await;
    assert_eq!(
        running.spec.as_ref().unwrap().node_name.as_deref(),
        Some(node)
    );
    let image = &running.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert!(
        image.contains("@sha256:"),
        "the webhook rewrote the image to the checkpoint: {image}"
    );
    assert_counter_resumes(tb, ns, &running, at_checkpoint).await;
}

#[tokio::test]
async fn seed_migration_resumes_the_counter_on_node2() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "migrate").await;
    let client = tb.client().await;
    let at_checkpoint = seed_checkpoint(&tb, &client, &ns.name).await;
    // The seed's section 10: the original goes away, the annotated pod starts on node2.
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .delete("stateful-app", &DeleteParams::default())
        .await
        .unwrap();
    let pod = restored_pod(&tb, &ns.name, "restored-app", "node2");
    assert_resumes(&tb, &client, &ns.name, pod, "node2", at_checkpoint).await;
}

/// Deletion means gone: once the checkpoint is deleted, the node that restored it drops its
/// runtime's copy of the checkpoint image (and its cached copy), at noded's next garbage
/// collection (every 5 s in the testbed, see testbed/deploy).
#[tokio::test]
async fn deleting_a_checkpoint_removes_the_runtime_image_on_the_node_that_restored_it() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "rmi").await;
    let client = tb.client().await;
    let at_checkpoint = seed_checkpoint(&tb, &client, &ns.name).await;
    let image = status_image(&client, &ns.name).await;
    let uid = Api::<ContainerCheckpointContent>::namespaced(client.clone(), &ns.name)
        .get("counter-checkpoint")
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let pod = restored_pod(&tb, &ns.name, "restored-app", "node2");
    assert_resumes(&tb, &client, &ns.name, pod, "node2", at_checkpoint).await;
    assert!(
        runtime_lists(&tb, "node2", &image),
        "node2's runtime pulled {image}"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.delete(
        "restored-app",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Api::<ContainerCheckpoint>::namespaced(client.clone(), &ns.name)
        .delete("counter-checkpoint", &DeleteParams::default())
        .await
        .unwrap();
    // Beyond a few rounds: a runtime may refuse to remove the image until the kubelet's
    // container GC (every minute) has removed the deleted pod's container.
    eventually(
        "node2's runtime to drop the deleted checkpoint's image",
        Duration::from_secs(120),
        || async { (!runtime_lists(&tb, "node2", &image)).then_some(()) },
    )
    .await;
    // The same round removes the cached copy right after the runtime's image: wait for it too.
    let layout =
        ImageLayout::open(tb.node_path("node2", "/var/lib/kubelet/checkpoints/oci")).unwrap();
    eventually(
        "node2 to drop its cached copy too",
        Duration::from_secs(30),
        || async { layout.resolve(&uid).unwrap().is_none().then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn restore_on_the_same_node_resumes_the_counter() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "same-node").await;
    let client = tb.client().await;
    let at_checkpoint = seed_checkpoint(&tb, &client, &ns.name).await;
    let pod = restored_pod(&tb, &ns.name, "restored-here", "node1");
    assert_resumes(&tb, &client, &ns.name, pod, "node1", at_checkpoint).await;
}

/// `kubectl apply` of `pod` fails; returns kubectl's error output.
fn apply_denied(tb: &Testbed, pod: &Pod, kubeconfig: Option<&str>) -> String {
    let file = tempfile_path(pod.metadata.name.as_deref().unwrap());
    std::fs::write(&file, serde_json::to_string(pod).unwrap()).unwrap();
    let mut args = vec!["apply", "-f", file.to_str().unwrap()];
    if let Some(k) = kubeconfig {
        args.extend(["--kubeconfig", k]);
    }
    let out = tb.kubectl(&args);
    std::fs::remove_file(&file).unwrap();
    assert!(
        !out.status.success(),
        "kubectl apply of {:?} was admitted",
        pod.metadata.name
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("e2e-{}-{name}.json", std::process::id()))
}

#[tokio::test]
async fn bad_restores_are_denied_with_their_reason() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "deny").await;
    let client = tb.client().await;
    seed_checkpoint(&tb, &client, &ns.name).await;
    let failed = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("failed-one", "no-such-pod", "counter"),
    )
    .await;
    assert_eq!(outcome(&failed).0, CheckpointState::Failed);

    let with = |name: &str, from: &str, container: &str| {
        let mut pod = restored_pod(&tb, &ns.name, name, "node2");
        pod.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(RESTORE_FROM_ANNOTATION.into(), from.into());
        pod.spec.as_mut().unwrap().containers[0].name = container.into();
        pod
    };
    for (pod, reason) in [
        (
            with("r-missing", "no-such-checkpoint", "counter"),
            "not found",
        ),
        (with("r-failed", "failed-one", "counter"), "Failed"),
        (
            with("r-other-ns", "default/counter-checkpoint", "counter"),
            "namespace",
        ),
        (
            with("r-container", "counter-checkpoint", "other"),
            "counter",
        ),
    ] {
        let stderr = apply_denied(&tb, &pod, None);
        assert!(
            stderr.contains("denied") && stderr.contains(reason),
            "{:?}: {stderr}",
            pod.metadata.name
        );
    }

    // A user who may create pods here but not read the checkpoint.
    let user = format!("mallory-{}", ns.name);
    let out = Command::new(tb.repo.join("testbed/mkkubeconfig"))
        .arg(&user)
        .output()
        .unwrap();
    assert!(out.status.success());
    let kubeconfig = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    tb.kubectl_ok(&[
        "create",
        "role",
        "pod-maker",
        "-n",
        &ns.name,
        "--verb=create,get,patch",
        "--resource=pods",
    ]);
    tb.kubectl_ok(&[
        "create",
        "rolebinding",
        "pod-maker",
        "-n",
        &ns.name,
        "--role=pod-maker",
        &format!("--user={user}"),
    ]);
    let stderr = apply_denied(
        &tb,
        &with("r-nosy", "counter-checkpoint", "counter"),
        Some(&kubeconfig),
    );
    assert!(
        stderr.contains("denied") && stderr.contains(&user),
        "{stderr}"
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let names: Vec<String> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["stateful-app"], "no denied pod was created");
}

#[tokio::test]
async fn peers_refuse_strangers_and_reject_tampered_blobs() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "peer").await;
    let client = tb.client().await;
    seed_checkpoint(&tb, &client, &ns.name).await;

    // node1's peer port speaks TLS only, and answers node2 only with a token of noded's
    // ServiceAccount issued for the peer audience and bound to its noded pod: not without one,
    // not with noded's API token, not with a peer token that names no node.
    let peer_code = |scheme: &str, token: Option<&str>| {
        let header = token.map(|t| format!("Authorization: Bearer {t}"));
        let mut args = vec!["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}"];
        if let Some(header) = &header {
            args.extend(["-H", header]);
        }
        let url = format!("{scheme}://10.77.0.11:5051/v2/");
        args.push(&url);
        String::from_utf8_lossy(&tb.node_exec("node2", &args).stdout).into_owned()
    };
    let noded_token = |audience: Option<&str>| {
        let mut args = vec!["create", "token", "checkpoint-noded", "-n", NODED_NAMESPACE];
        if let Some(audience) = audience {
            args.extend(["--audience", audience]);
        }
        tb.kubectl_ok(&args).trim().to_owned()
    };
    assert_eq!(peer_code("http", None), "000", "no plain HTTP");
    assert_eq!(peer_code("https", None), "401", "no token");
    assert_eq!(
        peer_code("https", Some(&noded_token(None))),
        "401",
        "noded's API token is not a peer token"
    );
    assert_eq!(
        peer_code("https", Some(&noded_token(Some(PEER_AUDIENCE)))),
        "403",
        "a peer token bound to no noded pod speaks for no node"
    );
    assert_eq!(
        peer_code(
            "https",
            Some(&tb.noded_peer_token(&client, Some("node2")).await)
        ),
        "200",
        "node2's noded's peer token"
    );

    // Untouched, the image travels: node2 pulls it from node1.
    let image = status_image(&client, &ns.name).await;
    let pull = runtime_pull(&tb, &client, &ns.name, "node2", &image).await;
    assert!(
        pull.status.success(),
        "pulling on node2: {}",
        String::from_utf8_lossy(&pull.stderr)
    );

    // Flip one byte of the layer on node1 (the archive itself: the blob is its hard link).
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    let content = contents.get("counter-checkpoint").await.unwrap();
    let status = content.status.unwrap();
    let archive = tb.node_path("node1", status.checkpoint_path.as_deref().unwrap());
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&archive, bytes).unwrap();

    let image = status.image.unwrap();
    let pull = runtime_pull(&tb, &client, &ns.name, "node3", &image).await;
    assert!(
        !pull.status.success(),
        "a tampered checkpoint image must not be pulled"
    );
    let uid = content.metadata.uid.unwrap();
    assert!(
        !tb.node_holds_image("node3", &uid),
        "node3 cached nothing of the tampered image"
    );
    let digest = status.archive_digest.unwrap();
    let blob = tb.node_path(
        "node3",
        &format!(
            "/var/lib/kubelet/checkpoints/oci/blobs/sha256/{}",
            &digest[7..]
        ),
    );
    assert!(
        !blob.exists(),
        "no tampered blob under its digest's name on node3"
    );
}

async fn status_image(client: &kube::Client, ns: &str) -> String {
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), ns);
    contents
        .get("counter-checkpoint")
        .await
        .unwrap()
        .status
        .unwrap()
        .image
        .unwrap()
}

/// Sets environment variables (noded's flags) on the DaemonSet and waits for the rollout; the
/// original template again, rolled out, when dropped.
struct NodedEnv<'a>(&'a Testbed);

impl<'a> NodedEnv<'a> {
    fn set(tb: &'a Testbed, vars: &[&str]) -> Self {
        let mut args = vec!["set", "env", "-n", NODED_NAMESPACE, NODED_DAEMONSET];
        args.extend(vars);
        tb.kubectl_ok(&args);
        tb.rollout_status(NODED_NAMESPACE, NODED_DAEMONSET);
        Self(tb)
    }
}

impl Drop for NodedEnv<'_> {
    fn drop(&mut self) {
        let out = self
            .0
            .kubectl(&["rollout", "undo", "-n", NODED_NAMESPACE, NODED_DAEMONSET]);
        assert!(
            out.status.success() || std::thread::panicking(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.0.rollout_status(NODED_NAMESPACE, NODED_DAEMONSET);
    }
}

#[tokio::test]
async fn restore_from_an_external_registry() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "external").await;
    let client = tb.client().await;
    let registry = "10.77.0.1:5000";
    let _pushing = NodedEnv::set(
        &tb,
        &[
            &format!("PUSH_REGISTRY={registry}/checkpoints"),
            "PUSH_INSECURE=true",
        ],
    );

    let mut app = sample_pod(&tb, "sample-app.yaml");
    app.spec
        .as_mut()
        .unwrap()
        .node_selector
        .as_mut()
        .unwrap()
        .insert("kubernetes.io/hostname".into(), "node3".into());
    run_pod(&client, &ns.name, app).await;
    counter_log(&tb, &ns.name, "stateful-app", 2, Duration::from_secs(60)).await;
    let cc = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("counter-checkpoint", "stateful-app", "counter"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let image = cc.status.unwrap().image.unwrap();
    assert!(
        image.starts_with(&format!("{registry}/checkpoints/")),
        "the request names the registry's copy: {image}"
    );
    // The registry's copy is a checkpoint image like the node-local one: only restore-from
    // runs it (the testbed's controller knows the repository, as deploy/ asks users to tell it).
    let mut direct = sample_pod(&tb, "sample-app.yaml");
    direct.metadata.name = Some("direct".into());
    direct.metadata.namespace = Some(ns.name.clone());
    direct.spec.as_mut().unwrap().containers[0].image = Some(image.clone());
    let stderr = apply_denied(&tb, &direct, None);
    assert!(stderr.contains("uses checkpoint image"), "{stderr}");
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    let content = contents.get("counter-checkpoint").await.unwrap();
    let at_checkpoint = value_at_checkpoint(
        &tb,
        "node3",
        content.status.unwrap().checkpoint_path.as_deref().unwrap(),
    );

    // The registry really holds it: pull the manifest by digest from the host.
    let spelled = Spelling::of(&image);
    let (path, digest) = (spelled.path, spelled.digest.unwrap());
    let manifest = Command::new("curl")
        .args([
            "-sf",
            "-H",
            "Accept: application/vnd.oci.image.manifest.v1+json",
        ])
        .arg(format!("http://{registry}/v2/{path}/manifests/{digest}"))
        .output()
        .unwrap();
    assert!(manifest.status.success(), "the registry serves {image}");
    assert!(
        String::from_utf8_lossy(&manifest.stdout).contains("org.criu.checkpoint.container.name")
    );

    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .delete("stateful-app", &DeleteParams::default())
        .await
        .unwrap();
    let pod = restored_pod(&tb, &ns.name, "restored-app", "node2");
    assert_resumes(&tb, &client, &ns.name, pod, "node2", at_checkpoint).await;
    // The runtime pulled through node2's node-local registry, the one gate for every restore
    // (emptyDir volumes are placed there); its noded fetched the image from node3's, which
    // still holds it (pushed_volumes.rs: from the registry's copy once no node can serve it).
    assert!(tb.node_holds_image("node2", content.metadata.uid.as_deref().unwrap()));

    // Deleting the checkpoint deletes the registry's copy too.
    Api::<ContainerCheckpoint>::namespaced(client.clone(), &ns.name)
        .delete("counter-checkpoint", &DeleteParams::default())
        .await
        .unwrap();
    let manifest_url = format!("http://{registry}/v2/{path}/manifests/{digest}");
    eventually(
        "the registry's copy deleted",
        Duration::from_secs(60),
        || async {
            let code = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
                .args(["-H", "Accept: application/vnd.oci.image.manifest.v1+json"])
                .arg(&manifest_url)
                .output()
                .unwrap();
            (String::from_utf8_lossy(&code.stdout) == "404").then_some(())
        },
    )
    .await;
}

/// Whether `crictl images` inside `node` lists `image` (a reference by digest).
fn runtime_lists(tb: &Testbed, node: &str, image: &str) -> bool {
    let out = tb.node_exec(node, &["crictl", "images", "-o", "json"]);
    assert!(
        out.status.success(),
        "crictl images on {node}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).contains(&format!("\"{image}\""))
}

/// `crictl pull` of an image reference inside `node`: the runtime pulls it as for a pod.
/// `crictl pull` of the seed's checkpoint image on `node`, with the credential its kubelet
/// would get for a pod restoring it there.
async fn runtime_pull(
    tb: &Testbed,
    client: &kube::Client,
    ns: &str,
    node: &str,
    image: &str,
) -> std::process::Output {
    let credential = pull_credential(client, ns, node, "counter-checkpoint", image).await;
    let creds = format!("{PULL_USER}:{}", credential.token);
    tb.node_exec(node, &["crictl", "pull", "--creds", &creds, image])
}

/// The attacks on a node's registry port: anyone on the node (a hostNetwork pod, a node
/// shell) asks 127.0.0.1:5050 for another namespace's checkpoint, with no credential, with a
/// registry token of their own pod, or of a pod of the checkpoint's namespace that was not
/// admitted to restore it. Only the credential of an admitted pod on that node gets the image,
/// and only by digest.
#[tokio::test]
async fn the_node_local_registry_answers_only_pulls_for_admitted_pods() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "pull").await;
    let thieves = TestNamespace::create(&tb, "pull-thief").await;
    let client = tb.client().await;
    seed_checkpoint(&tb, &client, &ns.name).await;
    let image = status_image(&client, &ns.name).await;
    let (repo, digest) = ImageRef::parse(&image)
        .ok()
        .filter(|r| r.is_node_local(5050))
        .and_then(|r| Some((r.repository.clone(), r.digest?)))
        .unwrap_or_else(|| panic!("{image} is not a node-local image"));
    let manifest = format!("http://127.0.0.1:5050/v2/{repo}/manifests/{digest}");
    let by_tag = format!("http://127.0.0.1:5050/v2/{repo}/manifests/latest");
    let get = |url: &str, token: Option<&str>| {
        let user = token.map(|t| format!("{PULL_USER}:{t}"));
        let mut args = vec!["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"];
        if let Some(user) = &user {
            args.extend(["-u", user]);
        }
        args.push(url);
        String::from_utf8_lossy(&tb.node_exec("node2", &args).stdout).into_owned()
    };

    let plain = run_pod(&client, &ns.name, counter_pod("plain", "node2", 1)).await;
    let plain_token = registry_token(&client, &ns.name, &plain).await;
    let thief = run_pod(&client, &thieves.name, counter_pod("thief", "node2", 1)).await;
    let thief_token = registry_token(&client, &thieves.name, &thief).await;
    assert_eq!(get(&manifest, None), "401", "no credential");
    assert_eq!(
        get("http://127.0.0.1:5050/v2/", None),
        "401",
        "not even /v2/"
    );
    assert_eq!(
        get(&manifest, Some(&thief_token)),
        "403",
        "a pod of another namespace"
    );
    assert_eq!(
        get(&manifest, Some(&plain_token)),
        "403",
        "a pod of the namespace not admitted to restore the checkpoint"
    );
    // Each pod hears why, in noded's words.
    let plain_name = plain.metadata.name.as_deref().unwrap();
    let told = e2e::pod_event(&client, &ns.name, plain_name, "CheckpointImageRefused").await;
    assert!(
        told.contains(&format!("pod {}/{plain_name}", ns.name))
            && told.contains("does not reference"),
        "{told}"
    );
    let thief_name = thief.metadata.name.as_deref().unwrap();
    let told = e2e::pod_event(&client, &thieves.name, thief_name, "CheckpointImageRefused").await;
    assert!(told.contains("may not pull images of namespace"), "{told}");

    let admitted = pull_credential(&client, &ns.name, "node2", "counter-checkpoint", &image).await;
    assert_eq!(
        get(&by_tag, Some(&admitted.token)),
        "404",
        "by digest only, never by tag"
    );
    assert_eq!(get(&manifest, Some(&admitted.token)), "200");
    // The same credential on another node: bound to a pod on node2 only.
    let on_node3 = String::from_utf8_lossy(
        &tb.node_exec(
            "node3",
            &[
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "-u",
                &format!("{PULL_USER}:{}", admitted.token),
                &manifest,
            ],
        )
        .stdout,
    )
    .into_owned();
    assert_eq!(on_node3, "403", "a pod on another node");
}

/// A Deployment's pods are created by the ReplicaSet controller, not by a person: the webhook
/// checks the pods' ServiceAccount instead. Without the right to read the checkpoint the
/// ReplicaSet reports the webhook's denial; with it, the Deployment's pod resumes the counter.
#[tokio::test]
async fn a_deployment_restores_as_its_pods_service_account() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "workload").await;
    let client = tb.client().await;
    let at_checkpoint = seed_checkpoint(&tb, &client, &ns.name).await;

    // `restorer` may read checkpoints in the namespace; `default` may not.
    let apply = |object: serde_json::Value| {
        let client = client.clone();
        let ns = ns.name.clone();
        async move {
            let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
            let gvk =
                kube::api::GroupVersionKind::try_from(object.types.as_ref().unwrap()).unwrap();
            let (resource, _) = kube::discovery::pinned_kind(&client, &gvk).await.unwrap();
            let api: Api<kube::api::DynamicObject> = Api::namespaced_with(client, &ns, &resource);
            api.patch(
                &object.metadata.name.clone().unwrap(),
                &kube::api::PatchParams::apply("e2e").force(),
                &kube::api::Patch::Apply(&object),
            )
            .await
            .unwrap();
        }
    };
    apply(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "restorer"}}))
        .await;
    apply(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "read-checkpoints"},
        "rules": [{
            "apiGroups": ["checkpointing.zacchaeuschok.github.io"],
            "resources": ["containercheckpoints"],
            "verbs": ["get"],
        }],
    }))
    .await;
    apply(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "read-checkpoints"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "read-checkpoints"},
        "subjects": [{"kind": "ServiceAccount", "name": "restorer", "namespace": ns.name}],
    }))
    .await;

    // The seed's restored pod as a Deployment's template.
    let deployment = |name: &str, account: &str| {
        let pod = restored_pod(&tb, &ns.name, name, "node2");
        let mut spec = serde_json::to_value(pod.spec.unwrap()).unwrap();
        spec["serviceAccountName"] = json!(account);
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}, "annotations": pod.metadata.annotations},
                    "spec": spec,
                },
            },
        })
    };

    apply(deployment("refused", "default")).await;
    let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), &ns.name);
    let refusal = eventually(
        "the ReplicaSet to report the webhook's denial",
        Duration::from_secs(90),
        || async {
            let list = sets
                .list(&ListParams::default().labels("app=refused"))
                .await
                .ok()?;
            list.items
                .into_iter()
                .flat_map(|rs| rs.status.and_then(|s| s.conditions).unwrap_or_default())
                .find(|c| c.type_ == "ReplicaFailure")
                .and_then(|c| c.message)
        },
    )
    .await;
    assert!(
        refusal.contains("system:serviceaccount:")
            && refusal.contains(":default\" may not get ContainerCheckpoint"),
        "{refusal}"
    );

    apply(deployment("restored", "restorer")).await;
    let running = running_pod(
        &client,
        &ns.name,
        "app=restored",
        "the Deployment's restored pod to run",
    )
    .await;
    let image = running.spec.as_ref().unwrap().containers[0]
        .image
        .clone()
        .unwrap();
    assert!(
        image.contains("@sha256:"),
        "restored from the checkpoint: {image}"
    );
    assert_counter_resumes(&tb, &ns.name, &running, at_checkpoint).await;
}
