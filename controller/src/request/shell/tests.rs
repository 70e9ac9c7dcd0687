use std::time::Duration;

use checkpointing::names::NODE_LABEL;
use checkpointing::testing::{FakeApi, Seen};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::runtime::events::Recorder;

use super::*;
use crate::fixtures::{lease, pod, request};
use crate::request::plan::RESYNC;

const REQUEST_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/\
                            namespaces/default/containercheckpoints/cc1";
const CONTENT_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/\
                            namespaces/default/containercheckpointcontents/cc1";
const POD_PATH: &str = "/api/v1/namespaces/default/pods/app";
const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/checkpoint-noded-node1";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const APPLY: &str = "force=true&fieldManager=checkpoint-controller";

/// A fake API server holding a valid request, its running pod and a live node daemon.
fn cluster() -> (FakeApi, Arc<Context>) {
    let api = FakeApi::default();
    api.put(REQUEST_PATH, request());
    api.put(POD_PATH, pod());
    let mut live = lease("2025-01-01T00:00:00Z");
    live.spec.as_mut().unwrap().renew_time = Some(MicroTime(Timestamp::now()));
    api.put(LEASE_PATH, live);
    let ctx = context(&api);
    (api, ctx)
}

fn context(api: &FakeApi) -> Arc<Context> {
    let client = api.client();
    let recorder = Recorder::new(client.clone(), CONTROLLER_MANAGER.into());
    Arc::new(Context::new(
        client,
        recorder,
        "kube-system".into(),
        Arc::default(),
    ))
}

fn calls(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect()
}

#[tokio::test]
async fn shell_creates_the_content_then_writes_status_and_one_event() {
    let (api, ctx) = cluster();
    let action = reconcile(Arc::new(request()), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    let seen = api.take();
    assert_eq!(
        calls(&seen),
        [
            format!("GET {REQUEST_PATH}"),
            format!("GET {CONTENT_PATH}"),
            format!("GET {POD_PATH}"),
            format!("GET {LEASE_PATH}"),
            format!("PATCH {CONTENT_PATH}?&{APPLY}"),
            format!("PATCH {REQUEST_PATH}/status?&{APPLY}"),
            format!("POST {EVENTS_PATH}?"),
        ]
    );
    let content = &seen[4];
    assert_eq!(
        content.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let content = content.body.clone().unwrap();
    assert_eq!(content["metadata"]["labels"][NODE_LABEL], "node1");
    assert_eq!(content["spec"]["podUID"], "uid-pod");
    assert!(content.get("status").is_none(), "{content}");
    let status = seen[5].body.clone().unwrap();
    assert_eq!(status["status"]["state"], "Pending");
    assert_eq!(status["status"]["contentName"], "cc1");
    let event = seen[6].body.clone().unwrap();
    assert_eq!(event["reason"], "CheckpointRequested");
    assert_eq!(event["type"], "Normal");
    assert_eq!(event["regarding"]["name"], "cc1");

    // Re-run against what was written: reads only, no write, no Event.
    let mut written = request();
    written.status = serde_json::from_value(status["status"].clone()).unwrap();
    api.put(REQUEST_PATH, &written);
    api.put(CONTENT_PATH, content);
    reconcile(Arc::new(written), ctx).await.unwrap();
    assert_eq!(
        calls(&api.take()),
        [format!("GET {REQUEST_PATH}"), format!("GET {CONTENT_PATH}")]
    );
}

#[tokio::test]
async fn shell_fails_the_request_when_the_content_is_rejected() {
    let (api, ctx) = cluster();
    api.fail_writes(CONTENT_PATH, 422, "Invalid");
    reconcile(Arc::new(request()), ctx).await.unwrap();
    let seen = api.take();
    let status = seen
        .iter()
        .find(|s| s.uri.starts_with(&format!("{REQUEST_PATH}/status")))
        .and_then(|s| s.body.clone())
        .unwrap();
    assert_eq!(status["status"]["state"], "Failed");
    assert_eq!(
        status["status"]["conditions"][0]["reason"],
        "ContentRejected"
    );
    let event = seen.last().unwrap().body.clone().unwrap();
    assert_eq!(event["reason"], "CheckpointFailed");
}

#[tokio::test]
async fn shell_keeps_the_request_pending_and_retries_on_transient_errors() {
    let (api, ctx) = cluster();
    api.fail_writes(CONTENT_PATH, 503, "ServiceUnavailable");
    let error = reconcile(Arc::new(request()), ctx.clone())
        .await
        .unwrap_err();
    assert!(matches!(error, Error::CreateContent { .. }), "{error}");
    let status = api
        .take()
        .iter()
        .find(|s| s.uri.starts_with(&format!("{REQUEST_PATH}/status")))
        .and_then(|s| s.body.clone())
        .unwrap();
    assert_eq!(status["status"]["state"], "Pending");
    assert_eq!(
        status["status"]["conditions"][0]["reason"],
        "ContentNotCreated"
    );
    let first = error_policy(Arc::new(request()), &error, ctx.clone());
    let second = error_policy(Arc::new(request()), &error, ctx);
    assert_eq!(first, Action::requeue(Duration::from_secs(1)));
    assert_eq!(second, Action::requeue(Duration::from_secs(2)));
}

#[tokio::test]
async fn shell_does_nothing_for_a_deleted_request() {
    let api = FakeApi::default();
    let action = reconcile(Arc::new(request()), context(&api)).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(calls(&api.take()), [format!("GET {REQUEST_PATH}")]);
}
