//! CheckpointPolicy: the pods a policy selects are checkpointed every interval (pushed to the
//! registry it names), and retention keeps the newest of them, deleting an older PodCheckpoint
//! with its ContainerCheckpoints and Contents (and so its archive and its registry copy). A pod the selector does not pick is left alone; deleting the
//! policy leaves its checkpoints. Creating a policy needs exec rights on every pod of its
//! namespace.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use checkpointing::crd::{
    CheckpointPolicy, CheckpointState, ContainerCheckpoint, ContainerCheckpointContent,
    PodCheckpoint,
};
use checkpointing::names::{POLICY_LABEL, POLICY_POD_LABEL};
use checkpointing::reference::Spelling;
use e2e::{
    RegistryUser, TestNamespace, Testbed, TokenRegistry, counter_pod, eventually, grant,
    push_secret, run_pod,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

/// The shortest interval the API accepts.
const INTERVAL_SECONDS: i64 = 60;

fn labelled(mut pod: Pod, tier: &str) -> Pod {
    pod.metadata.labels = Some([("tier".to_owned(), tier.to_owned())].into());
    pod
}

/// The host's side of the testbed network, where the test's registry listens.
const HOST: &str = "10.77.0.1";
const PUSHER: RegistryUser = RegistryUser {
    name: "scheduler",
    password: "scheduler-secret",
    actions: &["pull", "push", "delete"],
};

/// A policy keeping the newest `keep_newest`, pushed to `registry` (a repository and its
/// Secret) when given.
fn policy(name: &str, keep_newest: u32, registry: Option<(&str, &str)>) -> CheckpointPolicy {
    let mut spec = json!({
        "selector": {"matchLabels": {"tier": "protected"}},
        "schedule": {"intervalSeconds": INTERVAL_SECONDS},
        "retention": {"keepNewest": keep_newest},
    });
    if let Some((repository, secret)) = registry {
        spec["registry"] = json!({"repository": repository, "secretRef": {"name": secret}});
    }
    serde_json::from_value(json!({
        "apiVersion": "checkpointing.zacchaeuschok.github.io/v1alpha1",
        "kind": "CheckpointPolicy",
        "metadata": {"name": name},
        "spec": spec,
    }))
    .unwrap()
}

fn state(pc: &PodCheckpoint) -> Option<CheckpointState> {
    pc.status.as_ref().and_then(|s| s.state)
}

#[tokio::test]
async fn a_policy_checkpoints_its_pods_on_schedule_and_keeps_the_newest_two() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "policy").await;
    let client = tb.client().await;
    run_pod(
        &client,
        &ns.name,
        labelled(counter_pod("app", "node1", 1), "protected"),
    )
    .await;
    run_pod(
        &client,
        &ns.name,
        labelled(counter_pod("other", "node1", 1), "plain"),
    )
    .await;
    let registry = TokenRegistry::start(HOST, &tb.state.join("pki"), &[PUSHER]).await;
    let config = registry.docker_config(PUSHER.name, PUSHER.password);
    push_secret(&client, &ns.name, "push-creds", config).await;
    let repository = format!("{}/checkpoints/{}", registry.host, ns.name);
    let policies: Api<CheckpointPolicy> = Api::namespaced(client.clone(), &ns.name);
    let pushed = Some((repository.as_str(), "push-creds"));
    policies
        .create(&PostParams::default(), &policy("every-minute", 2, pushed))
        .await
        .unwrap();

    // Every PodCheckpoint of the policy seen while three are taken (the first is deleted soon
    // after the third completes), by name, with its creation time.
    let pcs: Api<PodCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    let own = ListParams::default().labels(&format!("{POLICY_LABEL}=every-minute"));
    let mut seen = BTreeMap::new();
    // Each one's image in the registry.
    let mut images = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(4 * 60);
    while seen.len() < 3 {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for three scheduled checkpoints to complete: {seen:?}"
        );
        for pc in pcs.list(&own).await.unwrap().items {
            assert_eq!(pc.spec.pod_name, "app", "only the selected pod");
            assert_ne!(state(&pc), Some(CheckpointState::Failed), "{:?}", pc.status);
            if state(&pc) == Some(CheckpointState::Completed)
                && let (Some(name), Some(created)) =
                    (pc.metadata.name, pc.metadata.creation_timestamp)
            {
                let container = pc.status.and_then(|s| s.containers.into_iter().next());
                let image = container.and_then(|c| c.image).expect("a pushed image");
                images.insert(name.clone(), image);
                seen.insert(name, created.0);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut by_age: Vec<(Timestamp, String)> =
        seen.into_iter().map(|(name, at)| (at, name)).collect();
    by_age.sort();
    let names: Vec<String> = by_age.iter().map(|(_, name)| name.clone()).collect();
    for pair in by_age.windows(2) {
        let apart = pair[1].0.duration_since(pair[0].0).as_secs();
        assert!(
            apart >= INTERVAL_SECONDS,
            "checkpoints {} and {} only {apart}s apart",
            pair[0].1,
            pair[1].1
        );
    }
    let (oldest, newest) = (&names[0], &names[names.len() - 1]);

    // Retention: only the newest two stay, the oldest with its container's request and Content.
    let left = eventually(
        "retention to delete the oldest scheduled checkpoint",
        Duration::from_secs(60),
        || async {
            let mut left: Vec<String> = pcs
                .list(&own)
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|pc| pc.metadata.name)
                .collect();
            left.sort();
            (left.len() == 2).then_some(left)
        },
    )
    .await;
    let mut expected = names[names.len() - 2..].to_vec();
    expected.sort();
    assert_eq!(left, expected);
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    let child = |pc: &str| format!("{pc}-counter");
    eventually(
        "the oldest checkpoint's request and Content to go",
        Duration::from_secs(60),
        || async {
            let request = requests.get_opt(&child(oldest)).await.ok()?;
            let content = contents.get_opt(&child(oldest)).await.ok()?;
            (request.is_none() && content.is_none()).then_some(())
        },
    )
    .await;
    // And its copy in the registry; the kept ones' stay.
    let manifest = |pc: &str| {
        let image = &images[pc];
        let spelled = Spelling::of(image);
        let (path, digest) = spelled
            .digest
            .filter(|_| spelled.host == Some(registry.host.as_str()))
            .map(|digest| (spelled.path, digest))
            .unwrap_or_else(|| panic!("{image} is not in {repository}"));
        (path.to_owned(), digest.to_owned())
    };
    let (path, digest) = manifest(oldest);
    eventually(
        "the oldest checkpoint's registry copy to go",
        Duration::from_secs(60),
        || async {
            let status = registry.manifest_status(&path, &digest, &PUSHER).await;
            (status == 404).then_some(())
        },
    )
    .await;
    for kept in &left {
        let (path, digest) = manifest(kept);
        let status = registry.manifest_status(&path, &digest, &PUSHER).await;
        assert_eq!(status, 200, "{kept}'s copy stays");
    }
    for kept in &left {
        let content = contents.get(&child(kept)).await.unwrap();
        assert_eq!(content.status.map(|s| s.ready), Some(true), "{kept}");
        let pc = pcs.get(kept).await.unwrap();
        assert_eq!(pc.metadata.labels.unwrap()[POLICY_POD_LABEL], "app");
    }

    // The status names the pod, its newest checkpoint and its next turn.
    let status = eventually(
        "the policy's status to name the newest checkpoint",
        Duration::from_secs(30),
        || async {
            let status = policies.get("every-minute").await.ok()?.status?;
            let entry = status.pods.first()?;
            (entry.last_checkpoint.as_ref() == Some(newest)).then_some(status)
        },
    )
    .await;
    assert_eq!(status.selected_pods, Some(1));
    assert_eq!(status.pods.len(), 1, "{:?}", status.pods);
    let entry = &status.pods[0];
    assert_eq!(entry.pod, "app");
    assert_eq!(entry.last_error, None);
    let next_due = entry.next_due.as_ref().expect("a next turn").0;
    assert!(next_due > Timestamp::now(), "next due {next_due} is past");
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str()),
        ("Ready", "True")
    );

    let all = pcs.list(&ListParams::default()).await.unwrap().items;
    assert!(
        all.iter().all(|pc| pc.spec.pod_name == "app"),
        "pod other is not selected"
    );

    // The checkpoints are the user's data: they outlive the policy.
    policies
        .delete("every-minute", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the policy to go", Duration::from_secs(30), || async {
        policies
            .get_opt("every-minute")
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = pcs.list(&own).await.unwrap().items.len();
    assert_eq!(after, 2, "deleting the policy deleted its checkpoints");
}

#[tokio::test]
async fn creating_a_policy_needs_the_right_to_exec_into_every_pod_of_the_namespace() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let ns = TestNamespace::create(&tb, "policy-exec").await;
    grant(
        &client,
        &ns.name,
        "scheduler",
        "mallory",
        json!([
            {
                "apiGroups": ["checkpointing.zacchaeuschok.github.io"],
                "resources": ["checkpointpolicies"],
                "verbs": ["create", "get"],
            },
            // One pod's exec right is not enough: a selector may pick any pod, later too.
            {
                "apiGroups": [""],
                "resources": ["pods/exec"],
                "resourceNames": ["app"],
                "verbs": ["create"],
            },
        ]),
    )
    .await;
    let as_mallory: Api<CheckpointPolicy> =
        Api::namespaced(tb.client_as("mallory", &[], &[]).await, &ns.name);
    let request = policy("hourly", 3, None);
    match as_mallory.create(&PostParams::default(), &request).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status
                    .message
                    .contains("may not exec into the pods of namespace"),
                "{}",
                status.message
            );
        }
        other => panic!("a user without exec rights made a policy: {other:?}"),
    }

    grant(
        &client,
        &ns.name,
        "exec",
        "mallory",
        json!([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]),
    )
    .await;
    // RBAC changes reach the authorizer's cache within moments.
    eventually(
        "the policy to be admitted with exec rights on the namespace",
        Duration::from_secs(30),
        || async {
            as_mallory
                .create(&PostParams::default(), &request)
                .await
                .ok()
        },
    )
    .await;
}
