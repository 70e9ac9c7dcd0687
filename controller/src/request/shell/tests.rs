use std::time::Duration;

use checkpointing::crd::ContainerCheckpointContentStatus;
use checkpointing::names::NODE_LABEL;
use checkpointing::testing::{FakeApi, Seen};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::fixtures::{Watches, content, content_with, deliver, pod, request, settings};
use crate::reconciles::backoff;
use crate::request::plan::RESYNC;

const REQUEST_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/\
                            namespaces/default/containercheckpoints/cc1";
const CONTENT_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/\
                            namespaces/default/containercheckpointcontents/cc1";
const POD_PATH: &str = "/api/v1/namespaces/default/pods/app";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
const APPLY: &str = "force=true&fieldManager=checkpoint-controller";
const NONE: [String; 0] = [];

/// A fake API server holding the request and its running pod, and the stores the watches keep:
/// a live node daemon's Lease and whatever Content the test delivers.
struct Cluster {
    api: FakeApi,
    ctx: Arc<Context>,
    watches: Watches,
}

impl Cluster {
    fn new() -> Self {
        let api = FakeApi::default();
        api.put(REQUEST_PATH, request());
        api.put(POD_PATH, pod());
        let watches = Watches::listed(&["node1"]);
        let ctx = Arc::new(Context::new(
            api.client(),
            watches.stores.clone(),
            Arc::default(),
            settings(),
        ));
        Self { api, ctx, watches }
    }

    /// The Content watch delivers `content`.
    fn deliver(&mut self, content: ContainerCheckpointContent) {
        deliver(&mut self.watches.contents, content);
    }

    /// Reconciles `request` as the request store holds it; the calls it made.
    async fn reconcile(&self, request: &ContainerCheckpoint) -> Vec<Seen> {
        reconcile(Arc::new(request.clone()), self.ctx.clone())
            .await
            .unwrap();
        settle().await;
        self.api.take()
    }
}

/// Lets the Event tasks a reconcile spawned reach the fake API: it answers in memory, so a few
/// turns of the test's single-threaded scheduler finish them.
async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

fn calls(seen: &[Seen]) -> Vec<String> {
    seen.iter()
        .map(|s| format!("{} {}", s.method, s.uri))
        .collect()
}

/// `request()` with the status of a status write.
fn with_written_status(seen: &Seen) -> ContainerCheckpoint {
    let mut written = request();
    written.status = serde_json::from_value(seen.body.as_ref().unwrap()["status"].clone()).unwrap();
    written
}

#[tokio::test]
async fn shell_creates_the_content_then_writes_status_once() {
    let mut cluster = Cluster::new();
    let action = reconcile(Arc::new(request()), cluster.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::requeue(RESYNC));
    let seen = cluster.api.take();
    assert_eq!(
        calls(&seen),
        [
            format!("GET {POD_PATH}"),
            format!("PATCH {CONTENT_PATH}?&{APPLY}"),
            format!("PATCH {REQUEST_PATH}/status?&{APPLY}"),
        ]
    );
    let content = &seen[1];
    assert_eq!(
        content.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    let content = content.body.clone().unwrap();
    assert_eq!(content["metadata"]["labels"][NODE_LABEL], "node1");
    assert_eq!(content["spec"]["podUID"], "uid-pod");
    assert!(content.get("status").is_none(), "{content}");
    let status = seen[2].body.clone().unwrap();
    assert_eq!(status["status"]["state"], "Pending");
    assert_eq!(status["status"]["contentName"], "cc1");

    // The stores lag behind our writes: nothing is created or written again.
    assert_eq!(calls(&cluster.reconcile(&request()).await), NONE);
    // They caught up: nothing to do either.
    cluster.deliver(serde_json::from_value(content).unwrap());
    let written = with_written_status(&seen[2]);
    assert_eq!(calls(&cluster.reconcile(&written).await), NONE);
}

#[tokio::test]
async fn shell_fails_the_request_when_the_content_is_rejected() {
    let cluster = Cluster::new();
    cluster.api.fail_writes(CONTENT_PATH, 422, "Invalid");
    reconcile(Arc::new(request()), cluster.ctx).await.unwrap();
    settle().await;
    let seen = cluster.api.take();
    let status = written_status(&seen);
    assert_eq!(status["status"]["state"], "Failed");
    assert_eq!(
        status["status"]["conditions"][0]["reason"],
        "ContentRejected"
    );
    let events: Vec<_> = seen
        .iter()
        .filter(|s| s.uri.starts_with(EVENTS_PATH))
        .map(|s| s.body.clone().unwrap())
        .collect();
    assert_eq!(events.len(), 2, "one on the request, one on its pod");
    assert!(events.iter().all(|e| e["reason"] == "CheckpointFailed"));
    let on_pod = events
        .iter()
        .find(|e| e["regarding"]["kind"] == "Pod")
        .unwrap();
    assert_eq!(on_pod["regarding"]["name"], "app");
    assert!(on_pod["note"].as_str().unwrap().contains("cc1"), "{on_pod}");
}

#[tokio::test]
async fn shell_keeps_the_request_pending_and_retries_on_transient_errors() {
    let Cluster { api, ctx, .. } = Cluster::new();
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
    let first = backoff(Arc::new(request()), &error, ctx.clone());
    let second = backoff(Arc::new(request()), &error, ctx);
    assert_eq!(first, Action::requeue(Duration::from_secs(1)));
    assert_eq!(second, Action::requeue(Duration::from_secs(2)));
}

#[tokio::test]
async fn shell_does_nothing_for_a_deleted_request() {
    let cluster = Cluster::new();
    let mut deleted = request();
    deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let action = reconcile(Arc::new(deleted), cluster.ctx.clone())
        .await
        .unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(calls(&cluster.api.take()), NONE);
}

/// One request from creation to Completed, as the watches deliver it: every change of the
/// request or its Content reconciles it again, the request store a step behind our own status
/// writes. This is the controller's whole API cost of a checkpoint: one Event, on its pod.
#[tokio::test]
async fn a_request_costs_five_calls_from_creation_to_completed() {
    let mut cluster = Cluster::new();
    let mut all = Vec::new();

    let created = cluster.reconcile(&request()).await;
    let pending = with_written_status(&created[2]);
    all.extend(created);
    // Our writes come back: the Content first, the request's status a step later.
    cluster.deliver(content());
    all.extend(cluster.reconcile(&request()).await);
    all.extend(cluster.reconcile(&pending).await);
    // noded adds its finalizer, takes the checkpoint, reports it taken.
    let mut taken = content();
    taken.metadata.finalizers = Some(vec!["checkpointing.zacchaeuschok.github.io/archive".into()]);
    cluster.deliver(taken);
    all.extend(cluster.reconcile(&pending).await);
    cluster.deliver(content_with(ContainerCheckpointContentStatus {
        state: Some(CheckpointState::Running),
        ..Default::default()
    }));
    all.extend(cluster.reconcile(&pending).await);
    cluster.deliver(content_with(ContainerCheckpointContentStatus {
        state: Some(CheckpointState::Completed),
        ready: true,
        archive_size: Some(4096),
        image: Some("localhost:5000/checkpoints/cc1@sha256:ab".into()),
        checkpoint_time: Some(Time(Timestamp::now())),
        ..Default::default()
    }));
    let completed = cluster.reconcile(&pending).await;
    let done = with_written_status(&completed[0]);
    all.extend(completed);
    // The final status comes back late.
    all.extend(cluster.reconcile(&pending).await);
    all.extend(cluster.reconcile(&done).await);

    assert_eq!(
        calls(&all),
        [
            format!("GET {POD_PATH}"),
            format!("PATCH {CONTENT_PATH}?&{APPLY}"),
            format!("PATCH {REQUEST_PATH}/status?&{APPLY}"),
            format!("PATCH {REQUEST_PATH}/status?&{APPLY}"),
            format!("POST {EVENTS_PATH}?"),
        ]
    );
    assert_eq!(
        done.status.as_ref().unwrap().state,
        Some(CheckpointState::Completed)
    );
    // Completed is told once, on the pod, related to the request (whose status says it).
    let on_pod = all[4].body.clone().unwrap();
    assert_eq!(on_pod["reason"], "Checkpointed");
    assert_eq!(on_pod["regarding"]["kind"], "Pod");
    assert_eq!(on_pod["regarding"]["name"], "app");
    assert_eq!(on_pod["regarding"]["uid"], "uid-pod");
    assert_eq!(on_pod["related"]["name"], "cc1");
}

/// `request()` naming the registry Secret `creds`.
fn pushed_request() -> ContainerCheckpoint {
    let mut request = request();
    request.spec.registry = Some(checkpointing::crd::RegistrySpec {
        compression: None,
        repository: Some("registry.example/ckpt".into()),
        secret_ref: Some(checkpointing::crd::SecretRef {
            name: "creds".into(),
        }),
    });
    request
}

const SECRET_PATH: &str = "/api/v1/namespaces/default/secrets/creds";

/// The cluster of [`Cluster::new`], with the request's registry Secret.
fn holding_the_secret() -> Cluster {
    let cluster = Cluster::new();
    cluster
        .api
        .put(SECRET_PATH, k8s_openapi::api::core::v1::Secret::default());
    cluster
}

/// The body of the request's status write among `seen`.
fn written_status(seen: &[Seen]) -> serde_json::Value {
    seen.iter()
        .find(|s| s.uri.starts_with(&format!("{REQUEST_PATH}/status")))
        .and_then(|s| s.body.clone())
        .unwrap()
}
const COPIES_PATH: &str = "/api/v1/namespaces/checkpoint-credentials/secrets";

#[tokio::test]
async fn the_registry_secret_is_copied_for_noded_before_the_content_names_it() {
    let cluster = Cluster::new();
    cluster.api.put(
        SECRET_PATH,
        k8s_openapi::api::core::v1::Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            ..Default::default()
        },
    );
    let seen = cluster.reconcile(&pushed_request()).await;
    let calls: Vec<_> = calls(&seen)
        .into_iter()
        .map(|c| c.split('?').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        calls,
        [
            format!("GET {POD_PATH}"),
            format!("PATCH {CONTENT_PATH}"),
            format!("GET {SECRET_PATH}"),
            format!("POST {COPIES_PATH}"),
            format!("PATCH {CONTENT_PATH}"),
            format!("PATCH {REQUEST_PATH}/status"),
        ]
    );
    assert!(seen[1].uri.contains("dryRun=All"), "{}", seen[1].uri);
    assert!(!seen[4].uri.contains("dryRun"), "{}", seen[4].uri);
    let content = seen[4].body.clone().unwrap();
    assert_eq!(content["spec"]["credentialsSecret"], "uid-cc1");
    assert_eq!(content["spec"]["registry"]["secretRef"]["name"], "creds");
}

#[tokio::test]
async fn no_content_is_created_while_the_copy_cannot_be_made() {
    let cluster = holding_the_secret();
    cluster.api.fail_writes(COPIES_PATH, 403, "Forbidden");
    let result = reconcile(Arc::new(pushed_request()), cluster.ctx.clone()).await;
    assert!(
        matches!(result, Err(Error::CopyCredentials { .. })),
        "{result:?}"
    );
    let methods: Vec<_> = cluster.api.take().into_iter().map(|s| s.method).collect();
    assert_eq!(
        methods,
        ["GET", "PATCH", "GET", "POST"],
        "no Content, no status"
    );
}

#[tokio::test]
async fn a_content_the_api_server_rejects_gets_no_copy() {
    let cluster = holding_the_secret();
    cluster.api.fail_writes(CONTENT_PATH, 422, "Invalid");
    let seen = cluster.reconcile(&pushed_request()).await;
    assert!(
        seen.iter().all(|s| !s.uri.contains("/secrets")),
        "{:?}",
        calls(&seen)
    );
    let status = written_status(&seen);
    assert_eq!(status["status"]["state"], "Failed");
}

/// `request()` for `sidecar`, a container that has not started: the request waits for it.
fn waiting_request() -> ContainerCheckpoint {
    let mut request = request();
    request.spec.container = "sidecar".into();
    request
}

/// A waiting request reads its pod once per look: the reconciles that come sooner (its own
/// status write coming back, the store a step behind it or not) would read the same pod.
#[tokio::test]
async fn a_waiting_request_reads_its_pod_once_per_look() {
    let cluster = Cluster::new();
    let first = cluster.reconcile(&waiting_request()).await;
    assert_eq!(
        calls(&first),
        [
            format!("GET {POD_PATH}"),
            format!("PATCH {REQUEST_PATH}/status?&{APPLY}"),
        ]
    );
    let status = written_status(&first);
    assert_eq!(status["status"]["state"], "Pending");
    let mut shown = waiting_request();
    shown.status = serde_json::from_value(status["status"].clone()).unwrap();

    assert_eq!(calls(&cluster.reconcile(&waiting_request()).await), NONE);
    assert_eq!(calls(&cluster.reconcile(&shown).await), NONE);
}

/// A Content the API server failed to create is applied again on the retry, from the pod read
/// for it: the pod is not read again, nor the unchanged status written again.
#[tokio::test]
async fn a_failed_content_is_applied_again_without_reading_the_pod_again() {
    let cluster = Cluster::new();
    cluster
        .api
        .fail_writes(CONTENT_PATH, 503, "ServiceUnavailable");
    let attempt = async || {
        let result = reconcile(Arc::new(request()), cluster.ctx.clone()).await;
        assert!(
            matches!(result, Err(Error::CreateContent { .. })),
            "{result:?}"
        );
        settle().await;
        calls(&cluster.api.take())
    };
    assert_eq!(
        attempt().await,
        [
            format!("GET {POD_PATH}"),
            format!("PATCH {CONTENT_PATH}?&{APPLY}"),
            format!("PATCH {REQUEST_PATH}/status?&{APPLY}"),
        ]
    );
    // The retry, the request store a step behind the status written.
    assert_eq!(attempt().await, [format!("PATCH {CONTENT_PATH}?&{APPLY}")]);
}

#[tokio::test]
async fn the_retry_of_a_failed_copy_does_not_read_the_pod_again() {
    let cluster = holding_the_secret();
    cluster.api.fail_writes(COPIES_PATH, 403, "Forbidden");
    let attempt = async || {
        let result = reconcile(Arc::new(pushed_request()), cluster.ctx.clone()).await;
        assert!(
            matches!(result, Err(Error::CopyCredentials { .. })),
            "{result:?}"
        );
        let seen = cluster.api.take();
        seen.into_iter().map(|s| s.method).collect::<Vec<_>>()
    };
    assert_eq!(attempt().await, ["GET", "PATCH", "GET", "POST"]);
    assert_eq!(attempt().await, ["PATCH", "GET", "POST"], "no pod read");
}
