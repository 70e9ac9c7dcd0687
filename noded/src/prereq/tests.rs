//! The prerequisite checks and their parsers.

use super::*;
use crate::testing::FakeRuntime;
use checkpointing::admin::Telemetry as _;

fn report(cri: Verdict, criu: Verdict, restore: Verdict, dir: Verdict) -> Report {
    Report {
        checks: vec![
            Check::new(CRI, cri, "c"),
            Check::new(CRIU, criu, "u"),
            Check::new(RESTORE, restore, "r"),
            Check::new(CHECKPOINT_DIR, dir, "d"),
        ],
        ..Default::default()
    }
}

#[test]
fn ready_needs_the_runtime_and_a_writable_directory_only() {
    use Verdict::*;
    assert!(report(Ok, Ok, Ok, Ok).ready());
    assert!(report(Ok, Failed, Failed, Ok).ready());
    assert!(report(Ok, Ok, Assumed, Ok).ready());
    assert!(!report(Failed, Ok, Ok, Ok).ready());
    assert!(!report(Ok, Ok, Ok, Failed).ready());
    assert!(!Report::default().ready());
    let body = report(Ok, Failed, Assumed, Failed).body();
    assert_eq!(
        body,
        "not ready\ncri: ok (c)\ncriu: failed (u)\nrestore: assumed (r)\ncheckpoint_dir: failed (d)\n"
    );
}

#[test]
fn a_node_cannot_restore_only_when_neither_way_is_there() {
    use Verdict::*;
    assert_eq!(report(Ok, Ok, Ok, Ok).cannot_restore(), None);
    assert_eq!(report(Ok, Ok, Assumed, Ok).cannot_restore(), None);
    let mut none = report(Ok, Ok, Failed, Ok);
    none.checks.push(Check::new(POD_LEVEL, Failed, "p"));
    assert_eq!(
        none.cannot_restore().as_deref(),
        Some("r"),
        "the restore check says why"
    );
    let mut pod_level = report(Ok, Ok, Failed, Ok);
    pod_level.checks.push(Check::new(POD_LEVEL, Ok, "p"));
    assert_eq!(pod_level.cannot_restore(), None, "RestorePod is served");
}

#[tokio::test]
async fn the_checkpoint_directory_must_take_a_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = dir_check(tmp.path()).await;
    assert_eq!(ok.state, Verdict::Ok);
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    let missing = dir_check(&tmp.path().join("absent")).await;
    assert_eq!(missing.state, Verdict::Failed);
    assert!(missing.detail.contains("absent"), "{}", missing.detail);
}

#[tokio::test]
async fn changes_are_noticed_and_signalled() {
    let state = Prerequisites::default();
    let signalled =
        |state: &Prerequisites| futures::FutureExt::now_or_never(state.changed()).is_some();
    assert!(!signalled(&state));
    assert!(state.update(report(Verdict::Ok, Verdict::Ok, Verdict::Ok, Verdict::Ok)));
    assert!(signalled(&state), "the first report is a change");
    assert!(!state.update(report(Verdict::Ok, Verdict::Ok, Verdict::Ok, Verdict::Ok)));
    assert!(!signalled(&state));
    assert!(state.update(report(
        Verdict::Failed,
        Verdict::Ok,
        Verdict::Ok,
        Verdict::Ok
    )));
    assert!(signalled(&state));
}

#[test]
fn readyz_follows_the_latest_report_and_metrics_show_it() {
    use Verdict::*;
    let prerequisites = Prerequisites::default();
    assert_eq!(
        prerequisites.readiness(),
        (false, "prerequisites not checked yet\n".into())
    );

    prerequisites.update(report(Ok, Ok, Assumed, Failed));
    let (ready, body) = prerequisites.readiness();
    assert!(!ready, "{body}");
    assert!(body.contains("checkpoint_dir: failed (d)"), "{body}");

    let ok = Report {
        runtime_name: Some("containerd".into()),
        runtime_version: Some("v2.1.4".into()),
        criu_version: Some("4.1".into()),
        ..report(Ok, Ok, Assumed, Ok)
    };
    prerequisites.update(ok.clone());
    let (ready, body) = prerequisites.readiness();
    assert!(ready, "{body}");
    assert!(body.contains("restore: assumed (r)"), "{body}");

    let metrics = Metrics::default();
    ok.record(&metrics);
    let text = metrics.render();
    for line in [
        "checkpointing_noded_prerequisite{check=\"cri\"} 1",
        "checkpointing_noded_prerequisite{check=\"restore\"} 1",
        "checkpointing_noded_runtime_info{runtime_name=\"containerd\",runtime_version=\"v2.1.4\",criu_version=\"4.1\"} 1",
        "# EOF",
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
}

#[test]
fn a_method_is_served_unless_the_runtime_says_unimplemented() {
    let err = |e: CriError| served::<()>(Err(e));
    let op = "CheckpointPod";
    assert_eq!(served(Ok(())), Ok(true));
    assert_eq!(
        err(CriError::Unimplemented {
            op,
            message: "unknown method CheckpointPod".into()
        }),
        Ok(false)
    );
    // The runtime looked at the empty request and refused it: it serves the method.
    assert_eq!(
        err(CriError::NotFound {
            op,
            message: "pod sandbox \"\" not found".into()
        }),
        Ok(true)
    );
    assert_eq!(
        err(CriError::Rpc {
            op,
            code: tonic::Code::InvalidArgument,
            message: "pod_sandbox_id is empty".into()
        }),
        Ok(true)
    );
    // An unreachable runtime tells nothing.
    let unreachable = err(CriError::Unavailable {
        op,
        message: "connection refused".into(),
    });
    assert!(unreachable.unwrap_err().contains("connection refused"));
}

#[test]
fn the_pod_level_check_says_which_method_is_missing() {
    let ok = pod_level(Ok(true), Ok(true));
    assert_eq!((ok.name, ok.state), (POD_LEVEL, Verdict::Ok));
    let neither = pod_level(Ok(false), Ok(false));
    assert_eq!(neither.state, Verdict::Failed);
    assert_eq!(
        neither.detail,
        "the runtime does not serve CRI CheckpointPod or RestorePod (Kubernetes 1.37): pods are \
         checkpointed and restored container by container"
    );
    assert!(
        pod_level(Ok(true), Ok(false))
            .detail
            .contains("serve CRI RestorePod (")
    );
    let unknown = pod_level(Err("deadline exceeded".into()), Ok(true));
    assert_eq!(unknown.state, Verdict::Failed);
    assert!(unknown.detail.contains("probing") && unknown.detail.contains("deadline"));
    // Reported, never a reason to be unready.
    let report = Report {
        checks: vec![
            Check::new(CRI, Verdict::Ok, "fake"),
            Check::new(CHECKPOINT_DIR, Verdict::Ok, "writable"),
            neither,
        ],
        ..Default::default()
    };
    assert!(report.ready());
    assert!(report.body().contains("pod_level: "), "{}", report.body());
}

/// The node's side of a check: a writable checkpoint directory and a runc.conf with
/// `tcp-close`, under `tmp`.
fn node(tmp: &Path) -> Paths {
    let conf = tmp.join("runc.conf");
    std::fs::write(&conf, "tcp-close\n").unwrap();
    Paths {
        checkpoint_dir: tmp.to_owned(),
        criu_runc_config: conf,
    }
}

fn states(report: &Report) -> Vec<(&'static str, Verdict)> {
    report.checks.iter().map(|c| (c.name, c.state)).collect()
}

#[tokio::test]
async fn a_containerd_node_is_checked_through_the_runtime() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = node(tmp.path());
    let report = check(
        &FakeRuntime::default(),
        Some(NodeCriu::Version("4.1".into())),
        &paths,
    )
    .await;
    assert_eq!(
        states(&report),
        [
            (CRI, Verdict::Ok),
            (CRIU, Verdict::Ok),
            (RESTORE, Verdict::Assumed),
            (CHECKPOINT_DIR, Verdict::Ok),
            (POD_LEVEL, Verdict::Failed),
            (TCP_CLOSE, Verdict::Ok),
        ]
    );
    assert!(report.ready(), "{}", report.body());
    assert_eq!(report.runtime_name.as_deref(), Some("containerd"));
    assert_eq!(report.criu_version.as_deref(), Some("4.1"));
    assert!(
        report
            .body()
            .contains("cri: ok (containerd v2.1.9, RuntimeReady)"),
        "{}",
        report.body()
    );

    // containerd's runc runs the node's criu: without one the CRIU check fails.
    let no_criu = check(
        &FakeRuntime::default(),
        Some(NodeCriu::Missing("no criu binary on PATH".into())),
        &paths,
    )
    .await;
    assert_eq!(no_criu.state(CRIU), Some(Verdict::Failed));
    assert_eq!(no_criu.criu_version, None);

    let pod_level = FakeRuntime {
        pod_level: true,
        ..Default::default()
    };
    let served = check(&pod_level, Some(NodeCriu::Version("4.1".into())), &paths).await;
    assert_eq!(served.state(POD_LEVEL), Some(Verdict::Ok));

    let not_ready = FakeRuntime {
        not_ready: Some("NetworkPluginNotReady".into()),
        ..Default::default()
    };
    let down = check(&not_ready, Some(NodeCriu::Version("4.1".into())), &paths).await;
    assert!(!down.ready());
    assert!(
        down.body()
            .contains("cri: failed (containerd v2.1.9: runtime not ready: NetworkPluginNotReady")
    );
}

#[tokio::test]
async fn a_crio_node_is_judged_by_its_config_not_the_criu_on_path() {
    let tmp = tempfile::tempdir().unwrap();
    let paths = node(tmp.path());
    let crio = FakeRuntime {
        crio_config: Some(
            "[crio.runtime]\nenable_criu_support = true\n[crio.checkpoint_restore]\n\
             container_level_enabled = \"checkpoint\"\n"
                .into(),
        ),
        ..Default::default()
    };
    let report = check(
        &crio,
        Some(NodeCriu::Missing("no criu binary on PATH".into())),
        &paths,
    )
    .await;
    assert_eq!(report.state(CRIU), Some(Verdict::Ok));
    assert_eq!(report.state(RESTORE), Some(Verdict::Failed));
    assert_eq!(
        report.cannot_restore().as_deref(),
        Some(
            "[crio.checkpoint_restore] container_level_enabled = \"checkpoint\"; restoring \
             needs \"checkpoint_restore\""
        )
    );
    assert!(
        report.body().contains(
            "cri: ok (cri-o 1.34.1, storage_driver overlay, cgroup_driver systemd, RuntimeReady)"
        ),
        "{}",
        report.body()
    );
}
