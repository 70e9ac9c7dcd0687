//! The plan, the statuses and the shell against a fake API server.

use super::pushed::give_up_on_pushed_copy;
use super::*;
use crate::outbound::PUSHED_COPY_PATIENCE;
use checkpointing::cri::CriError;
use checkpointing::cri::api::ContainerState;
use checkpointing::testing::FakeApi;
use k8s_openapi::jiff::Timestamp;

use crate::testing::{FakeRuntime, checkpointer, container};

fn content(
    finalizer: bool,
    deleting: bool,
    state: Option<CheckpointState>,
) -> ContainerCheckpointContent {
    let mut c = crate::testing::content("node1", None);
    if finalizer {
        c.metadata.finalizers = Some(vec![ARCHIVE_FINALIZER.into()]);
    }
    if deleting {
        c.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    }
    c.status = state.map(|s| ContainerCheckpointContentStatus {
        state: Some(s),
        ..Default::default()
    });
    c
}

#[test]
fn plan_claims_takes_recovers_and_removes() {
    use CheckpointState::*;
    assert_eq!(
        plan(&content(false, false, None), Written::default()),
        Step::AddFinalizer
    );
    assert_eq!(
        plan(&content(true, false, None), Written::default()),
        Step::Take
    );
    assert_eq!(
        plan(&content(true, false, Some(Pending)), Written::default()),
        Step::Take
    );
    assert_eq!(
        plan(&content(true, false, Some(Running)), Written::default()),
        Step::Recover
    );
    assert_eq!(
        plan(&content(true, false, Some(Completed)), Written::default()),
        Step::Nothing
    );
    assert_eq!(
        plan(&content(true, false, Some(Failed)), Written::default()),
        Step::Nothing
    );
    assert_eq!(
        plan(&content(true, true, Some(Completed)), Written::default()),
        Step::Remove
    );
    assert_eq!(
        plan(&content(true, true, Some(Running)), Written::default()),
        Step::Remove
    );
    assert_eq!(
        plan(&content(false, true, None), Written::default()),
        Step::Nothing
    );
}

#[test]
fn a_held_container_is_thawed_once_released_and_only_then() {
    let held = |held: bool, released: bool| {
        let mut c = content(true, false, Some(CheckpointState::Completed));
        c.status.as_mut().unwrap().source_held = held;
        if released {
            c.metadata.annotations =
                Some([(RELEASE_SOURCE_ANNOTATION.into(), "true".into())].into());
        }
        plan(&c, Written::default())
    };
    assert_eq!(held(true, true), Step::Release);
    assert_eq!(held(true, false), Step::Nothing, "frozen until released");
    assert_eq!(held(false, true), Step::Nothing, "thawed already");
}

#[test]
fn timeout_comes_from_the_spec_or_the_default() {
    let mut c = content(true, false, None);
    assert_eq!(
        job(&c, Duration::from_secs(120)).timeout,
        Duration::from_secs(120)
    );
    c.spec.timeout_seconds = Some(7);
    assert_eq!(
        job(&c, Duration::from_secs(120)).timeout,
        Duration::from_secs(7)
    );
}

/// Where the fake API server keeps `content(..)`.
const CONTENT_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/namespaces/\
                            default/containercheckpointcontents/cp";

/// A runtime where the container of `content(..)` runs.
fn running_runtime() -> FakeRuntime {
    FakeRuntime {
        containers: vec![container(
            "live",
            ContainerState::ContainerRunning,
            1,
            ["default", "p", "pod", "c"],
        )],
        ..Default::default()
    }
}

/// The reconciler's context against `api` and `runtime`, keeping files under `tmp`.
fn shell(
    api: &FakeApi,
    runtime: FakeRuntime,
    tmp: &std::path::Path,
    default_timeout: Duration,
) -> Arc<Context<FakeRuntime>> {
    Arc::new(Context::new(
        api.client(),
        checkpointer(runtime, tmp),
        default_timeout,
        Arc::default(),
        crate::outbound::Defaults::default(),
    ))
}

/// Values an older CRD lets through: none may overflow a deadline (400000000000 seconds once
/// panicked noded in tonic's `grpc-timeout` encoding).
const EXTREMES: [(i64, u64); 7] = [
    (i64::MAX, 3600),
    (400_000_000_000, 3600),
    (3601, 3600),
    (3600, 3600),
    (0, 120),
    (-1, 120),
    (i64::MIN, 120),
];

#[test]
fn extreme_timeouts_are_capped_or_fall_back_to_the_default() {
    let default = Duration::from_secs(120);
    for (seconds, expected) in EXTREMES {
        assert_eq!(
            checkpoint_timeout(Some(seconds), default),
            Duration::from_secs(expected),
            "timeoutSeconds {seconds}"
        );
        let mut c = content(true, false, None);
        c.spec.timeout_seconds = Some(seconds);
        assert_eq!(job(&c, default).timeout, Duration::from_secs(expected));
    }
    assert_eq!(checkpoint_timeout(None, default), default);
    assert_eq!(
        checkpoint_timeout(None, Duration::MAX),
        Duration::from_secs(3600),
        "the default is capped too"
    );
}

/// Each extreme value through the whole shell: the checkpoint completes, the runtime is asked
/// with a bounded timeout, nothing panics.
#[tokio::test(flavor = "multi_thread")]
async fn extreme_timeouts_reach_the_runtime_bounded() {
    for (seconds, expected) in EXTREMES {
        let tmp = tempfile::tempdir().unwrap();
        let api = FakeApi::default();
        let runtime = running_runtime();
        let calls = runtime.calls.clone();
        let ctx = shell(&api, runtime, tmp.path(), Duration::from_secs(120));
        let mut c = content(true, false, None);
        c.spec.timeout_seconds = Some(seconds);
        api.put(CONTENT_PATH, &c);
        reconcile(Arc::new(c), ctx.clone()).await.unwrap();
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 1, "timeoutSeconds {seconds}");
        assert_eq!(calls[0].2, Duration::from_secs(expected));
        assert_eq!(
            ctx.written("uid-1").state,
            Some(CheckpointState::Completed),
            "timeoutSeconds {seconds}"
        );
    }
}

#[test]
fn failures_carry_their_cause() {
    let status = final_status(
        &Err(Failure::Store(std::io::Error::other(
            "No space left on device",
        ))),
        None,
    );
    assert_eq!(status.state, Some(CheckpointState::Failed));
    assert!(!status.ready);
    assert!(status.message.unwrap().contains("No space left on device"));
}

#[test]
fn a_completed_status_names_the_criu_found() {
    let artifact = Artifact {
        container_id: "c1".into(),
        path: "/var/lib/kubelet/checkpoints/x.tar".into(),
        size: 10,
        digest: "sha256:aa".into(),
        image: "localhost:5050/default/cc@sha256:bb".into(),
        checkpoint_time: Timestamp::now(),
        runtime: "containerd v2.1.4".into(),
        base_image: Some("registry.example/app@sha256:cc".into()),
        held: false,
        pushed: None,
    };
    let status = final_status(&Ok(artifact), Some("4.1".into()));
    assert_eq!(
        status.base_image.as_deref(),
        Some("registry.example/app@sha256:cc"),
        "a node restoring from a registry learns the base image it needs from the status"
    );
    assert_eq!(status.criu_version.as_deref(), Some("4.1"));
    assert_eq!(status.state, Some(CheckpointState::Completed));
}

#[test]
fn our_own_writes_count_before_the_watch_shows_them() {
    use CheckpointState::*;
    let claimed = Written {
        finalizer: Some(true),
        state: None,
    };
    let completed = Written {
        finalizer: Some(true),
        state: Some(Completed),
    };
    assert_eq!(plan(&content(false, false, None), claimed), Step::Take);
    assert_eq!(plan(&content(false, false, None), completed), Step::Nothing);
    assert_eq!(
        plan(&content(true, false, Some(Running)), completed),
        Step::Nothing,
        "our running status, delivered after our final one"
    );
    assert_eq!(plan(&content(true, true, None), completed), Step::Remove);
    let released = Written {
        finalizer: Some(false),
        state: Some(Completed),
    };
    assert_eq!(plan(&content(true, true, None), released), Step::Nothing);

    assert!(completed.shown_in(&content(true, false, Some(Failed))));
    assert!(!completed.shown_in(&content(true, false, Some(Running))));
    assert!(!completed.shown_in(&content(false, false, Some(Completed))));
    assert!(Written::default().shown_in(&content(false, false, None)));
}

/// One Content from new to Completed through the shell, the watch delivering each of our
/// writes late: a finalizer patch and two status writes, nothing read back.
#[tokio::test(flavor = "multi_thread")]
async fn a_checkpoint_costs_three_api_calls() {
    let tmp = tempfile::tempdir().unwrap();
    let path = CONTENT_PATH;
    let api = FakeApi::default();
    let new = content(false, false, None);
    api.put(path, &new);
    let ctx = shell(&api, running_runtime(), tmp.path(), Duration::from_secs(30));
    for delivered in [
        new.clone(),
        content(true, false, None),
        content(true, false, Some(CheckpointState::Running)),
        content(true, false, None), // a late copy of an older version
        content(true, false, Some(CheckpointState::Completed)),
    ] {
        reconcile(Arc::new(delivered), ctx.clone()).await.unwrap();
    }
    let calls: Vec<(String, String)> = api
        .take()
        .into_iter()
        .map(|s| {
            let path = s.uri.split('?').next().unwrap_or_default().to_owned();
            (s.method, path)
        })
        .collect();
    let status = format!("{path}/status");
    assert_eq!(
        calls,
        [
            ("PATCH".to_owned(), path.to_owned()),
            ("PATCH".to_owned(), status.clone()),
            ("PATCH".to_owned(), status),
        ]
    );
    let done = ctx
        .checkpointer
        .dir
        .archive_path(&job(&new, ctx.default_timeout).key);
    assert!(done.exists(), "{}", done.display());
    assert!(
        ctx.written.lock().unwrap().is_empty(),
        "all shown by the watch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_content_is_claimed_and_checkpointed_in_one_reconcile() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::default();
    let new = content(false, false, None);
    api.put(CONTENT_PATH, &new);
    let ctx = shell(&api, running_runtime(), tmp.path(), Duration::from_secs(30));
    reconcile(Arc::new(new.clone()), ctx.clone()).await.unwrap();
    assert_eq!(api.take().len(), 3, "finalizer, Running, Completed");
    let done = ctx
        .checkpointer
        .dir
        .archive_path(&job(&new, ctx.default_timeout).key);
    assert!(done.exists(), "{}", done.display());
}

#[test]
fn a_pushed_copy_is_given_up_on_only_when_refused_or_long_unreachable() {
    let failed = |status: u16| PushError::Status {
        method: axum::http::Method::DELETE,
        url: "http://r/v2/x/manifests/sha256:00".into(),
        status: axum::http::StatusCode::from_u16(status).unwrap(),
        summary: None,
    };
    let second = Duration::from_secs(1);
    for refused in [400, 401, 403, 405] {
        assert!(
            give_up_on_pushed_copy(&failed(refused), second, PUSHED_COPY_PATIENCE),
            "{refused}"
        );
    }
    for passing in [408, 429, 500, 503] {
        assert!(
            !give_up_on_pushed_copy(&failed(passing), second, PUSHED_COPY_PATIENCE),
            "{passing}"
        );
        assert!(
            give_up_on_pushed_copy(&failed(passing), PUSHED_COPY_PATIENCE, PUSHED_COPY_PATIENCE),
            "{passing} for the whole patience"
        );
    }
}

/// CRI-O's words for a dump CRIU refused: runc's stderr quoting `dump.log`.
fn crio_refused_tcp() -> CriError {
    CriError::Rpc {
        op: "CheckpointContainer",
        code: tonic::Code::Unknown,
        message: "failed to checkpoint container 3f2a: running \"/usr/sbin/runc\" [\"checkpoint\"] \
                  failed: `/usr/sbin/runc --root /run/runc checkpoint 3f2a` failed: \
                  time=\"t\" level=warning msg=\"--- Quoting \\\"/var/lib/containers/3f2a/dump.log\\\"\"\n\
                  time=\"t\" level=warning msg=\"1528:(00.034834) Error (criu/sk-inet.c:199): inet: \
                  Connected TCP socket, consider using --tcp-established option.\"\n\
                  time=\"t\" level=warning msg=---\n\
                  time=\"t\" level=error msg=\"criu failed: type DUMP errno 0\"\n : exit status 1"
            .into(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_dump_says_why_in_one_line_and_keeps_crius_log() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::default();
    let new = content(true, false, None);
    api.put(CONTENT_PATH, &new);
    let runtime = FakeRuntime {
        fail_with: Some(crio_refused_tcp),
        ..running_runtime()
    };
    let ctx = shell(&api, runtime, tmp.path(), Duration::from_secs(30));
    reconcile(Arc::new(new), ctx).await.unwrap();
    let written = api.take().pop().and_then(|s| s.body).unwrap();
    let status: ContainerCheckpointContentStatus =
        serde_json::from_value(written["status"].clone()).unwrap();
    assert_eq!(status.state, Some(CheckpointState::Failed));
    let message = status.message.unwrap();
    assert!(!message.contains('\n'), "{message}");
    assert!(message.contains("lacks the line `tcp-close`"), "{message}");
    assert!(message.ends_with("kubectl checkpoint logs cp"), "{message}");
    assert!(
        !message.contains("level=warning"),
        "not runc's output: {message}"
    );
    assert_eq!(
        status.criu_log.as_deref(),
        Some(
            "1528:(00.034834) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider \
             using --tcp-established option.\n"
        )
    );
}

/// The API server is slow to answer status writes: an ordinary dump starts while its Running
/// write waits, and the final status still comes after it.
#[tokio::test(flavor = "multi_thread")]
async fn running_is_written_while_the_container_is_dumped() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::default();
    let new = content(true, false, None);
    api.put(CONTENT_PATH, &new);
    let gate = api.hold_writes(&format!("{CONTENT_PATH}/status"));
    let runtime = running_runtime();
    let calls = runtime.calls.clone();
    let ctx = shell(&api, runtime, tmp.path(), Duration::from_secs(30));
    let reconciling = tokio::spawn(reconcile(Arc::new(new), ctx.clone()));
    let dumped = async {
        while calls.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), dumped)
        .await
        .expect("the dump waited for the Running write");
    gate.add_permits(2);
    reconciling.await.unwrap().unwrap();
    let states: Vec<serde_json::Value> = api
        .take()
        .into_iter()
        .filter_map(|s| Some(s.body?["status"]["state"].clone()))
        .collect();
    assert_eq!(states, ["Running", "Completed"]);
    assert_eq!(ctx.written("uid-1").state, Some(CheckpointState::Completed));
}

/// A held source's dump (a migration's) starts only once Running is written: a noded
/// restarted mid-dump must find it and thaw the source rather than dump it again.
#[tokio::test(flavor = "multi_thread")]
async fn a_held_dump_waits_for_its_running_status() {
    let tmp = tempfile::tempdir().unwrap();
    let api = FakeApi::default();
    let mut new = content(true, false, None);
    new.spec.hold_source = true;
    api.put(CONTENT_PATH, &new);
    let gate = api.hold_writes(&format!("{CONTENT_PATH}/status"));
    let runtime = FakeRuntime {
        cgroup: Some("/kubepods/pod-uid/live".into()),
        ..running_runtime()
    };
    let calls = runtime.calls.clone();
    let ctx = shell(&api, runtime, tmp.path(), Duration::from_secs(30));
    let reconciling = tokio::spawn(reconcile(Arc::new(new), ctx.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        calls.lock().unwrap().is_empty(),
        "dumped before Running was written"
    );
    gate.add_permits(2);
    reconciling.await.unwrap().unwrap();
    assert_eq!(
        calls.lock().unwrap().len(),
        1,
        "dumped once Running was written"
    );
}
