use checkpointing::crd::{
    CheckpointPolicySpec, CheckpointState, PodCheckpointSpec, PodCheckpointStatus, RetentionSpec,
    ScheduleSpec,
};
use checkpointing::testing::{FakeApi, Seen};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;
use crate::fixtures::{Watches, pod, settings};

const GROUP: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/namespaces/default";
const PODS_PATH: &str = "/api/v1/namespaces/default/pods";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

fn policy_path() -> String {
    format!("{GROUP}/checkpointpolicies/nightly")
}

fn checkpoints_path() -> String {
    format!("{GROUP}/podcheckpoints")
}

fn policy() -> CheckpointPolicy {
    let mut p = CheckpointPolicy::new(
        "nightly",
        CheckpointPolicySpec {
            selector: serde_json::from_value(json!({"matchLabels": {"app": "counter"}})).unwrap(),
            schedule: Some(ScheduleSpec {
                interval_seconds: 3600,
            }),
            retention: RetentionSpec {
                keep_newest: 1,
                ttl_seconds: None,
            },
            registry: None,
            containers: Vec::new(),
            timeout_seconds: None,
            on_eviction: None,
            on_node_loss: None,
        },
    );
    p.metadata.namespace = Some("default".into());
    p.metadata.uid = Some("uid-policy".into());
    p
}

/// A Completed PodCheckpoint of the policy for pod `app`, asked for `age_s` seconds ago.
fn completed(name: &str, age_s: u64) -> PodCheckpoint {
    let mut pc = PodCheckpoint::new(
        name,
        PodCheckpointSpec {
            pod_name: "app".into(),
            containers: Vec::new(),
            timeout_seconds: None,
            registry: None,
            hold_source: false,
        },
    );
    pc.metadata.namespace = Some("default".into());
    pc.metadata.uid = Some(format!("uid-{name}"));
    let at = Timestamp::now() - std::time::Duration::from_secs(age_s);
    pc.metadata.creation_timestamp = Some(Time(at));
    pc.status = Some(PodCheckpointStatus {
        state: Some(CheckpointState::Completed),
        ..Default::default()
    });
    pc
}

/// A fake API server holding the policy, its running pod and `checkpoints`.
fn cluster(checkpoints: &[PodCheckpoint]) -> (FakeApi, Arc<Context>) {
    let api = FakeApi::default();
    api.put(&policy_path(), policy());
    let mut running = pod();
    running.status.as_mut().unwrap().phase = Some("Running".into());
    api.put(PODS_PATH, json!({"metadata": {}, "items": [running]}));
    api.put(
        &checkpoints_path(),
        json!({"metadata": {}, "items": checkpoints}),
    );
    for pc in checkpoints {
        api.put(&format!("{}/{}", checkpoints_path(), pc.name_any()), pc);
    }
    let stores = Watches::listed(&[]).stores;
    let context = Context::new(api.client(), stores, Arc::default(), settings());
    (api, Arc::new(context))
}

/// Lets the Event tasks reach the fake API.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

fn calls(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| {
            let path = s.uri.split('?').next().unwrap_or_default();
            format!("{} {path}", s.method)
        })
        .collect()
}

fn status_of(seen: &[Seen]) -> serde_json::Value {
    let write = seen.iter().find(|s| s.uri.contains("/status?")).unwrap();
    write.body.as_ref().unwrap()["status"].clone()
}

#[tokio::test]
async fn a_due_pod_costs_two_lists_a_create_its_event_and_a_status_write_then_two_lists() {
    let (api, ctx) = cluster(&[]);
    reconcile(Arc::new(policy()), ctx.clone()).await.unwrap();
    settle().await;
    let seen = api.take();
    assert_eq!(
        calls(&seen),
        [
            format!("GET {PODS_PATH}"),
            format!("GET {}", checkpoints_path()),
            format!("POST {}", checkpoints_path()),
            format!("POST {EVENTS_PATH}"),
            format!("PATCH {}/status", policy_path()),
        ]
    );
    assert!(
        seen[0].uri.contains("labelSelector=app%3Dcounter"),
        "{}",
        seen[0].uri
    );
    assert!(
        seen[1]
            .uri
            .contains("labelSelector=checkpointing.zacchaeuschok.github.io%2Fpolicy%3Dnightly"),
        "{}",
        seen[1].uri
    );
    let created = seen[2].body.clone().unwrap();
    assert_eq!(created["spec"]["podName"], "app");
    assert_eq!(created["metadata"]["labels"][POLICY_LABEL], "nightly");
    let event = seen[3].body.clone().unwrap();
    assert_eq!(event["reason"], "CheckpointCreated");
    assert_eq!(event["regarding"]["kind"], "CheckpointPolicy");

    // Once the checkpoint (as the API server keeps it) and the status are there, a reconcile
    // only reads.
    let mut written = policy();
    written.status = serde_json::from_value(status_of(&seen)).unwrap();
    let next_due = written.status.as_ref().unwrap().pods[0].next_due.clone();
    let mut stored: PodCheckpoint = serde_json::from_value(created).unwrap();
    stored.metadata.creation_timestamp =
        next_due.map(|t| Time(t.0 - std::time::Duration::from_secs(3600)));
    let (api, ctx) = cluster(&[stored]);
    reconcile(Arc::new(written), ctx).await.unwrap();
    settle().await;
    assert_eq!(
        calls(&api.take()),
        [
            format!("GET {PODS_PATH}"),
            format!("GET {}", checkpoints_path()),
        ]
    );
}

#[tokio::test]
async fn retention_deletes_with_the_uid_precondition_and_says_so() {
    let (api, ctx) = cluster(&[completed("new", 60), completed("old", 120)]);
    reconcile(Arc::new(policy()), ctx).await.unwrap();
    settle().await;
    let seen = api.take();
    let delete = seen.iter().find(|s| s.method == "DELETE").unwrap();
    assert_eq!(
        delete.uri.split('?').next().unwrap(),
        format!("{}/old", checkpoints_path())
    );
    let body = delete.body.as_ref().unwrap();
    assert_eq!(body["preconditions"]["uid"], "uid-old");
    assert_eq!(body["propagationPolicy"], "Background");
    let reasons: Vec<_> = seen
        .iter()
        .filter(|s| s.uri.starts_with(EVENTS_PATH))
        .map(|s| s.body.as_ref().unwrap()["reason"].clone())
        .collect();
    assert_eq!(reasons, ["CheckpointDeleted"]);
    assert_eq!(status_of(&seen)["pods"][0]["lastCheckpoint"], "new");
}

#[tokio::test]
async fn a_refused_creation_is_told_not_retried_in_a_loop() {
    let (api, ctx) = cluster(&[]);
    api.fail_writes(&checkpoints_path(), 403, "Forbidden");
    // Not an error, which would be retried in seconds: the pod's next due time tries again.
    reconcile(Arc::new(policy()), ctx).await.unwrap();
    settle().await;
    let seen = api.take();
    let event = seen
        .iter()
        .find(|s| s.uri.starts_with(EVENTS_PATH))
        .unwrap();
    let event = event.body.as_ref().unwrap();
    assert_eq!(event["reason"], "CheckpointRefused");
    assert_eq!(event["type"], "Warning");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .ends_with("was refused: Forbidden"),
        "{event}"
    );
}
