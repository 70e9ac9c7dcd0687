//! The restore webhook as the only way to run a checkpoint, tried as an attacker would: a pod
//! in another namespace (or the same one) that names a checkpoint image directly, under
//! another spelling of the registry, in an init or ephemeral container, with a forged
//! restored-from marker; a restore-from pod while the controller is down; a user who may
//! create checkpoints but not exec into the pod; and a node daemon writing another node's
//! checkpoint or swapping a finished one.

use checkpointing::crd::CheckpointState;
use checkpointing::names::{
    PEER_CERTIFICATE_ANNOTATION, RESTORE_FROM_ANNOTATION, RESTORED_FROM_DIGEST_ANNOTATION,
};
use checkpointing::reference::Spelling;
use e2e::{
    CONTROLLER_NAMESPACE, ControllerDown, TestNamespace, Testbed, checkpoint, checkpoint_request,
    counter_pod, grant, outcome, run_pod,
};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Container, Pod, Service};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

const WEBHOOK: &str = "restore.checkpointing.zacchaeuschok.github.io";

/// Creating `pod` in `ns` fails; returns the API server's message.
async fn refused(client: &kube::Client, ns: &str, pod: &Pod) -> String {
    match Api::<Pod>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), pod)
        .await
    {
        Ok(_) => panic!(
            "pod {} was admitted in {ns}",
            pod.metadata.name.as_deref().unwrap_or_default()
        ),
        Err(kube::Error::Api(status)) => status.message,
        Err(other) => panic!("creating the pod: {other}"),
    }
}

/// A counter pod on node2 whose `counter` container runs `image`.
fn pod_with(name: &str, image: &str) -> Pod {
    let mut pod = counter_pod(name, "node2", 1);
    pod.spec.as_mut().unwrap().containers[0].image = Some(image.into());
    pod
}

#[tokio::test]
async fn a_checkpoint_image_runs_only_through_restore_from() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let victim = TestNamespace::create(&tb, "victim").await;
    let attacker = TestNamespace::create(&tb, "attacker").await;
    run_pod(&client, &victim.name, counter_pod("app", "node1", 1)).await;
    let cc = checkpoint(
        &client,
        &victim.name,
        checkpoint_request("secret", "app", "counter"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let image = cc.status.unwrap().image.unwrap();
    assert!(image.starts_with("localhost:5050/"), "{image}");
    let respelled = image.replacen("localhost", "127.0.0.1", 1);

    for (ns, pod) in [
        (&attacker.name, pod_with("direct", &image)),
        (&attacker.name, pod_with("respelled", &respelled)),
        // Not even the checkpoint's own namespace may skip restore-from.
        (&victim.name, pod_with("direct", &image)),
    ] {
        let message = refused(&client, ns, &pod).await;
        assert!(
            message.contains("restore-from") && message.contains("uses checkpoint image"),
            "{message}"
        );
    }
    let mut init = counter_pod("init", "node2", 1);
    init.spec.as_mut().unwrap().init_containers = Some(vec![Container {
        name: "setup".into(),
        image: Some(respelled.clone()),
        ..Default::default()
    }]);
    let message = refused(&client, &attacker.name, &init).await;
    assert!(message.contains("init container \"setup\""), "{message}");

    // An ephemeral container added to a running pod of the attacker's own.
    run_pod(&client, &attacker.name, counter_pod("mine", "node2", 1)).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &attacker.name);
    let debug = json!({"spec": {"ephemeralContainers": [
        {"name": "debugger", "image": image, "command": ["sleep", "3600"]},
    ]}});
    let error = pods
        .patch_ephemeral_containers("mine", &PatchParams::default(), &Patch::Strategic(&debug))
        .await
        .expect_err("an ephemeral checkpoint container is refused");
    assert!(
        error
            .to_string()
            .contains("ephemeral container \"debugger\""),
        "{error}"
    );

    // A forged marker on an ordinary pod is dropped.
    let mut forged = counter_pod("forged", "node2", 1);
    forged.metadata.annotations = Some(
        [(
            RESTORED_FROM_DIGEST_ANNOTATION.to_owned(),
            Spelling::of(&image).digest.unwrap().to_owned(),
        )]
        .into(),
    );
    let created = pods.create(&PostParams::default(), &forged).await.unwrap();
    let annotations = created.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key(RESTORED_FROM_DIGEST_ANNOTATION),
        "{annotations:?}"
    );
}

#[tokio::test]
async fn a_restore_from_pod_is_refused_while_the_controller_is_down() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "fail-closed").await;
    let mut pod = counter_pod("restored", "node2", 1);
    pod.metadata.annotations =
        Some([(RESTORE_FROM_ANNOTATION.to_owned(), "anything".to_owned())].into());
    let down = ControllerDown::new(&tb, &client).await;
    let message = refused(&client, &ns.name, &pod).await;
    drop(down);
    // The API server names the webhook it could not call: never a silent fresh start.
    assert!(message.contains(WEBHOOK), "{message}");
}

#[tokio::test]
async fn checkpointing_a_pod_needs_the_right_to_exec_into_it() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "needs-exec").await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;
    grant(
        &client,
        &ns.name,
        "checkpointer",
        "mallory",
        json!([{
            "apiGroups": ["checkpointing.zacchaeuschok.github.io"],
            "resources": ["containercheckpoints"],
            "verbs": ["create", "get"],
        }]),
    )
    .await;
    let as_mallory: Api<checkpointing::crd::ContainerCheckpoint> =
        Api::namespaced(tb.client_as("mallory", &[], &[]).await, &ns.name);
    let request = checkpoint_request("memory", "app", "counter");
    match as_mallory.create(&PostParams::default(), &request).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("may not exec into pod app"),
                "{}",
                status.message
            );
        }
        other => panic!("a user without exec rights checkpointed the pod: {other:?}"),
    }

    // With exec rights on the pod, the same user may.
    grant(
        &client,
        &ns.name,
        "exec",
        "mallory",
        json!([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]),
    )
    .await;
    // RBAC changes reach the authorizer's cache within moments.
    let created = e2e::eventually(
        "the checkpoint to be admitted with exec rights",
        std::time::Duration::from_secs(30),
        || async {
            as_mallory
                .create(&PostParams::default(), &request)
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(created.metadata.name.as_deref(), Some("memory"));
    let done = e2e::wait_checkpoint(&client, &ns.name, "memory").await;
    assert_eq!(
        outcome(&done).0,
        CheckpointState::Completed,
        "{}",
        outcome(&done).1
    );
}

/// A migration deletes the pod and creates one: its author must be allowed both, besides exec.
#[tokio::test]
async fn migrating_a_pod_needs_the_rights_to_delete_it_and_create_pods() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "needs-delete").await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;
    grant(
        &client,
        &ns.name,
        "migrator",
        "mallory",
        json!([
            {
                "apiGroups": ["checkpointing.zacchaeuschok.github.io"],
                "resources": ["podmigrations"],
                "verbs": ["create", "get"],
            },
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        ]),
    )
    .await;
    let as_mallory: Api<checkpointing::crd::PodMigration> =
        Api::namespaced(tb.client_as("mallory", &[], &[]).await, &ns.name);
    let request = e2e::migration_request("away", "app", Some("node2"));
    let refusal = e2e::eventually(
        "the migration to be refused for want of delete",
        std::time::Duration::from_secs(30),
        || async {
            match as_mallory.create(&PostParams::default(), &request).await {
                Err(kube::Error::Api(s)) if s.message.contains("may not delete pod app") => Some(s),
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(refusal.code, 403, "{refusal:?}");
    // Nothing happened to the pod.
    let pod = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .get("app")
        .await
        .unwrap();
    assert!(pod.metadata.deletion_timestamp.is_none());

    grant(
        &client,
        &ns.name,
        "mover",
        "mallory",
        json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["create", "delete"]}]),
    )
    .await;
    let created = e2e::eventually(
        "the migration to be admitted with delete and create rights",
        std::time::Duration::from_secs(30),
        || async {
            as_mallory
                .create(&PostParams::default(), &request)
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(created.metadata.name.as_deref(), Some("away"));
}

/// noded pushes with the credentials of the Secret a request names: naming one needs the right
/// to read it, or anyone who may checkpoint could push with a team's registry account.
#[tokio::test]
async fn naming_a_registry_secret_needs_the_right_to_read_it() {
    use checkpointing::crd::{ContainerCheckpoint, RegistrySpec, SecretRef};
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "needs-secret").await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;
    grant(
        &client,
        &ns.name,
        "checkpointer",
        "mallory",
        json!([
            {
                "apiGroups": ["checkpointing.zacchaeuschok.github.io"],
                "resources": ["containercheckpoints"],
                "verbs": ["create", "get"],
            },
            {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        ]),
    )
    .await;
    let as_mallory: Api<ContainerCheckpoint> =
        Api::namespaced(tb.client_as("mallory", &[], &[]).await, &ns.name);
    let mut request = checkpoint_request("pushed", "app", "counter");
    request.spec.registry = Some(RegistrySpec {
        compression: None,
        repository: Some("10.77.0.1:5000/team".into()),
        secret_ref: Some(SecretRef {
            name: "team-registry".into(),
        }),
    });
    let refusal = e2e::eventually(
        "the request to be refused for want of get on the Secret",
        std::time::Duration::from_secs(30),
        || async {
            match as_mallory.create(&PostParams::default(), &request).await {
                Err(kube::Error::Api(s))
                    if s.message.contains("may not get secret team-registry") =>
                {
                    Some(s)
                }
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(refusal.code, 403, "{refusal:?}");

    grant(
        &client,
        &ns.name,
        "reader",
        "mallory",
        json!([{
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["team-registry"],
            "verbs": ["get"],
        }]),
    )
    .await;
    let created = e2e::eventually(
        "the request to be admitted with get on the Secret",
        std::time::Duration::from_secs(30),
        || async {
            as_mallory
                .create(&PostParams::default(), &request)
                .await
                .ok()
        },
    )
    .await;
    assert_eq!(created.metadata.name.as_deref(), Some("pushed"));
}

#[tokio::test]
async fn noded_writes_only_its_own_nodes_contents_and_never_a_finished_image() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "node-bound").await;
    run_pod(&client, &ns.name, counter_pod("app", "node1", 1)).await;
    let cc = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("mine", "app", "counter"),
    )
    .await;
    assert_eq!(
        outcome(&cc).0,
        CheckpointState::Completed,
        "{}",
        outcome(&cc).1
    );

    let status = |body: serde_json::Value| Patch::Merge(json!({"status": body}));
    let params = PatchParams::default();

    let from_node2: Api<checkpointing::crd::ContainerCheckpointContent> =
        Api::namespaced(tb.as_noded("node2").await, &ns.name);
    let error = from_node2
        .patch_status("mine", &params, &status(json!({"message": "taken over"})))
        .await
        .expect_err("node2's daemon may not write node1's Content");
    assert!(
        error
            .to_string()
            .contains("only the ContainerCheckpointContents of its own node"),
        "{error}"
    );

    let from_node1: Api<checkpointing::crd::ContainerCheckpointContent> =
        Api::namespaced(tb.as_noded("node1").await, &ns.name);
    let error = from_node1
        .patch_status(
            "mine",
            &params,
            &status(json!({"image": "localhost:5050/elsewhere/other@sha256:00"})),
        )
        .await
        .expect_err("a Completed image never changes");
    assert!(error.to_string().contains("never changes"), "{error}");
    // Its own node's daemon may still write what is left to write: releasing a source.
    from_node1
        .patch_status("mine", &params, &status(json!({"sourceHeld": false})))
        .await
        .expect("noded on node1 writes node1's Content");
}

/// One question to the authorizer: may `verb` `group`/`resource` `name` in `namespace`?
struct Ask<'a> {
    group: &'a str,
    resource: &'a str,
    verb: &'a str,
    namespace: Option<&'a str>,
    name: Option<&'a str>,
}

/// Whether ServiceAccount `namespace/name` may do what `ask` says.
async fn account_may(client: &kube::Client, (namespace, name): (&str, &str), ask: Ask<'_>) -> bool {
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{namespace}:{name}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}")],
            "resourceAttributes": {
                "group": ask.group,
                "resource": ask.resource,
                "verb": ask.verb,
                "namespace": ask.namespace,
                "name": ask.name,
            },
        },
    }))
    .unwrap();
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

const CONTROLLER_ACCOUNT: (&str, &str) = ("external-checkpointer-system", "checkpoint-controller");
const NODED_ACCOUNT: (&str, &str) = ("kube-system", "checkpoint-noded");

#[tokio::test]
async fn the_controller_may_patch_only_its_own_webhook_registration() {
    let client = Testbed::get().client().await;
    for (verb, name, allowed) in [
        ("patch", Some("checkpointing-restore"), true),
        ("patch", Some("someone-elses"), false),
        ("create", None, false),
        ("delete", Some("checkpointing-restore"), false),
        ("update", Some("someone-elses"), false),
    ] {
        let ask = Ask {
            group: "admissionregistration.k8s.io",
            resource: "mutatingwebhookconfigurations",
            verb,
            namespace: None,
            name,
        };
        assert_eq!(
            account_may(&client, CONTROLLER_ACCOUNT, ask).await,
            allowed,
            "the controller may {verb} {name:?}"
        );
    }
}

#[tokio::test]
async fn noded_writes_leases_only_in_its_own_namespace_and_only_its_nodes() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let own = checkpointing::names::DEFAULT_LEASE_NAMESPACE;
    for namespace in [own, "kube-system", "kube-node-lease", "default"] {
        for verb in ["patch", "create", "update"] {
            let ask = Ask {
                group: "coordination.k8s.io",
                resource: "leases",
                verb,
                namespace: Some(namespace),
                name: Some("checkpoint-noded-node1"),
            };
            // noded renews with patch, and creates its Lease once.
            let allowed = namespace == own && verb != "update";
            assert_eq!(
                account_may(&client, NODED_ACCOUNT, ask).await,
                allowed,
                "noded may {verb} Leases in {namespace}"
            );
        }
    }
    // Within it, a node daemon taken over cannot speak for another node: its Lease says whose
    // peer certificate to trust.
    let leases: Api<Lease> = Api::namespaced(client.clone(), own);
    let lease = leases.get("checkpoint-noded-node1").await.unwrap();
    let pin = lease.metadata.annotations.unwrap_or_default()[PEER_CERTIFICATE_ANNOTATION].clone();
    assert_eq!(
        pin.len(),
        64,
        "node1's Lease publishes its certificate's SHA-256: {pin}"
    );
    let pin_patch = |pin: &str| {
        Patch::Merge(json!({"metadata": {"annotations": {PEER_CERTIFICATE_ANNOTATION: pin}}}))
    };
    let params = PatchParams::default();
    let error = Api::<Lease>::namespaced(tb.as_noded("node2").await, own)
        .patch(
            "checkpoint-noded-node1",
            &params,
            &pin_patch(&"0".repeat(64)),
        )
        .await
        .expect_err("node2's daemon may not write node1's Lease");
    assert!(
        error
            .to_string()
            .contains("may write only its own node's Lease"),
        "{error}"
    );
    Api::<Lease>::namespaced(tb.as_noded("node1").await, own)
        .patch("checkpoint-noded-node1", &params, &pin_patch(&pin))
        .await
        .expect("node1's daemon writes its own Lease");
}

/// The webhook's endpoint, reached from a node as any pod could reach its Service: without the
/// API server's client certificate the TLS handshake fails, so nothing (not even whether a
/// checkpoint exists) is answered. The API server's own calls keep working: every restore test
/// goes through them.
#[tokio::test]
async fn the_webhook_answers_only_the_api_server() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let service = Api::<Service>::namespaced(client, CONTROLLER_NAMESPACE)
        .get("checkpoint-controller-webhook")
        .await
        .unwrap();
    let ip = service.spec.unwrap().cluster_ip.unwrap();
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "x", "operation": "CREATE", "namespace": "default",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "userInfo": {"username": "mallory"},
                    "object": {"metadata": {"name": "p", "annotations": {RESTORE_FROM_ANNOTATION: "x"}}}},
    })
    .to_string();
    let url = format!("https://{ip}/mutate");
    let out = tb.node_exec(
        "node1",
        &[
            "curl",
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Content-Type: application/json",
            "-d",
            &review,
            &url,
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "000",
        "a caller without the API server's client certificate gets no HTTP answer"
    );
    assert!(!out.status.success(), "the TLS handshake fails");
}
