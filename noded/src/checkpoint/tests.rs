//! Checkpoints against the fake runtime.

use super::*;
use crate::testing::{FakeRuntime, Writes, checkpointer, disk_space};
use checkpointing::admin::Telemetry as _;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn container(id: &str, state: api::ContainerState, created_at: i64) -> api::Container {
    crate::testing::container(
        id,
        state,
        created_at,
        ["default", "stateful-app", "pod-uid", "counter"],
    )
}

fn job() -> Job<'static> {
    Job {
        name: "counter-checkpoint",
        key: ArchiveKey {
            namespace: "default",
            pod: "stateful-app",
            container: "counter",
            uid: "content-uid",
        },
        pod_uid: "pod-uid",
        timeout: Duration::from_secs(42),
        volumes: Vec::new(),
        push: None,
        hold: false,
    }
}

fn leftovers(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "oci")
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn takes_the_running_container_into_an_archive_and_image() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime {
        containers: vec![
            container("old-exited", api::ContainerState::ContainerExited, 1),
            container("live", api::ContainerState::ContainerRunning, 2),
        ],
        ..Default::default()
    };
    let c = checkpointer(runtime, tmp.path());
    let a = c.take(&job()).await.unwrap();

    let calls = c.runtime.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].0, "live");
    assert!(
        calls[0]
            .1
            .file_name()
            .unwrap()
            .to_string_lossy()
            .ends_with(".partial")
    );
    assert_eq!(calls[0].2, Duration::from_secs(42));

    assert_eq!(a.container_id, "live");
    assert_eq!(std::fs::read(&a.path).unwrap(), FakeRuntime::archive());
    assert_eq!(
        std::fs::metadata(&a.path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        leftovers(tmp.path()),
        [a.path.file_name().unwrap().to_string_lossy().into_owned()]
    );
    assert!(
        a.image
            .starts_with("localhost:5050/default/counter-checkpoint@sha256:"),
        "{}",
        a.image
    );
    assert_eq!(a.runtime, "containerd v2.1.9");
    assert_eq!(a.checkpoint_time.to_string(), "2026-11-24T10:00:00Z");

    let manifest = c.layout.verify("content-uid").unwrap();
    assert_eq!(format!("{}", manifest.layers()[0].digest()), a.digest);
    let annotations = manifest.annotations().clone().unwrap();
    assert_eq!(annotations["org.criu.checkpoint.container.name"], "counter");
    assert_eq!(
        annotations["io.kubernetes.cri-o.annotations.checkpoint.name"],
        "counter"
    );
    assert_eq!(
        annotations["org.criu.checkpoint.rootfsImageName"],
        "docker.io/library/busybox:latest"
    );

    c.remove(&job()).unwrap();
    assert!(leftovers(tmp.path()).is_empty());
    assert!(c.layout.resolve("content-uid").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_running_container_is_refused_without_calling_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime {
        containers: vec![container("x", api::ContainerState::ContainerExited, 1)],
        ..Default::default()
    };
    let c = checkpointer(runtime, tmp.path());
    let e = c.take(&job()).await.unwrap_err();
    assert!(matches!(e, Failure::NotRunning { .. }), "{e}");
    assert_eq!(
        e.to_string(),
        "container \"counter\" of pod default/stateful-app is not running on this node"
    );
    assert!(c.runtime.calls.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runtime_error_leaves_no_partial_file() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime {
        containers: vec![container("live", api::ContainerState::ContainerRunning, 1)],
        fail_with: Some(|| CriError::Unimplemented {
            op: "CheckpointContainer",
            message: "criu not found".into(),
        }),
        ..Default::default()
    };
    let c = checkpointer(runtime, tmp.path());
    let e = c.take(&job()).await.unwrap_err();
    assert!(e.to_string().contains("criu not found"), "{e}");
    assert!(
        leftovers(tmp.path()).is_empty(),
        "{:?}",
        leftovers(tmp.path())
    );
}

/// runc's freeze can time out on a busy node; the container runs on, so the dump is tried
/// again. Three times in a row is the request's failure, and no other error is retried.
#[tokio::test(flavor = "multi_thread")]
async fn a_container_that_did_not_freeze_is_dumped_once_more() {
    let unfrozen = || CriError::Rpc {
        op: "CheckpointContainer",
        code: tonic::Code::Unknown,
        message: "checkpointing container \"c1\" failed: OCI runtime pause failed: unable to \
                  freeze"
            .into(),
    };
    for (failing_calls, completes, calls) in [(1, true, 2), (0, false, 3)] {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = FakeRuntime {
            containers: vec![container("live", api::ContainerState::ContainerRunning, 1)],
            fail_with: Some(unfrozen),
            failing_calls,
            ..Default::default()
        };
        let c = checkpointer(runtime, tmp.path());
        let outcome = c.take(&job()).await;
        assert_eq!(outcome.is_ok(), completes, "{outcome:?}");
        assert_eq!(c.runtime.calls.lock().unwrap().len(), calls);
        if !completes {
            assert!(leftovers(tmp.path()).is_empty());
        }
    }
    assert!(
        !CriError::Unimplemented {
            op: "CheckpointContainer",
            message: "criu not found".into(),
        }
        .freeze_failed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn success_without_archive_is_a_failure() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime {
        containers: vec![container("live", api::ContainerState::ContainerRunning, 1)],
        write_nothing: true,
        ..Default::default()
    };
    let c = checkpointer(runtime, tmp.path());
    assert!(matches!(c.take(&job()).await, Err(Failure::NoArchive(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_packages_a_finished_archive_and_discards_a_partial_one() {
    let tmp = tempfile::tempdir().unwrap();
    let c = checkpointer(FakeRuntime::default(), tmp.path());
    // Crash after the rename: the archive is complete, only the image is missing.
    std::fs::write(c.dir.archive_path(&job().key), FakeRuntime::archive()).unwrap();
    let a = c.recover(&job(), Some("live")).await.unwrap();
    assert_eq!(a.container_id, "live");
    c.layout.verify("content-uid").unwrap();
    c.remove(&job()).unwrap();

    // Crash mid-checkpoint: only the runtime's temporary file exists.
    std::fs::write(c.dir.partial_path(&job().key), b"half").unwrap();
    assert!(matches!(
        c.recover(&job(), None).await,
        Err(Failure::Interrupted)
    ));
    assert!(leftovers(tmp.path()).is_empty());
}

/// The archive is read while the runtime writes it, in pieces with pauses between them: its
/// digest is that of the file it left, and nothing is read again.
#[tokio::test(flavor = "multi_thread")]
async fn an_archive_is_hashed_while_the_runtime_writes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime {
        writes: Writes::Pieces,
        ..running()
    };
    let c = checkpointer(runtime, tmp.path());
    let a = c.take(&job()).await.unwrap();
    let written = std::fs::read(&a.path).unwrap();
    assert_eq!(written, FakeRuntime::archive());
    assert_eq!(
        a.digest,
        format!("sha256:{}", checkpointing::digest::sha256_hex(&written))
    );
    assert_eq!(a.size, written.len() as u64);
    assert!(
        c.metrics
            .render()
            .contains("checkpointing_noded_archive_rereads_total 0")
    );
    c.layout.verify("content-uid").unwrap();
}

/// A runtime that writes again over bytes already read, or cuts the file short of them: the
/// archive is read once more, and its digest is still that of the file it left.
#[tokio::test(flavor = "multi_thread")]
async fn bytes_changed_behind_the_reader_have_the_archive_read_again() {
    for writes in [Writes::Rewritten, Writes::Truncated] {
        let tmp = tempfile::tempdir().unwrap();
        let runtime = FakeRuntime {
            writes,
            ..running()
        };
        let c = checkpointer(runtime, tmp.path());
        let a = c.take(&job()).await.unwrap();
        let written = std::fs::read(&a.path).unwrap();
        assert_eq!(written, FakeRuntime::archive(), "{writes:?}");
        assert_eq!(
            a.digest,
            format!("sha256:{}", checkpointing::digest::sha256_hex(&written)),
            "{writes:?}"
        );
        assert_eq!(a.size, written.len() as u64, "{writes:?}");
        let text = c.metrics.render();
        assert!(
            text.contains("checkpointing_noded_archive_rereads_total 1"),
            "{writes:?}: {text}"
        );
        c.layout.verify("content-uid").unwrap();
    }
}

/// A checkpointer through `runtime` that may push to the plain-HTTP `registry`, and the job
/// pushing there.
fn pushing_to(
    registry: &crate::testing::push_registry::Registry,
    runtime: FakeRuntime,
    tmp: &std::path::Path,
) -> (Checkpointer<FakeRuntime>, Job<'static>) {
    let mut c = checkpointer(runtime, tmp);
    let own = crate::push::Targets {
        own: Some(registry.addr.to_string()),
        ..Default::default()
    };
    c.pusher = Pusher::new(vec![registry.addr.to_string()], None, own).unwrap();
    let target: crate::push::Target = format!("{}/checkpoints", registry.addr).parse().unwrap();
    let job = Job {
        push: Some(Push {
            to: target.destination("default", "counter-checkpoint"),
            credentials: None,
            compression: checkpointing::crd::Compression::None,
        }),
        ..job()
    };
    (c, job)
}

fn running() -> FakeRuntime {
    FakeRuntime {
        containers: vec![container("live", api::ContainerState::ContainerRunning, 1)],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_a_push_registry_the_image_is_referenced_there() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = crate::testing::push_registry::Registry::start().await;
    let (c, job) = pushing_to(&registry, running(), tmp.path());
    let a = c.take(&job).await.unwrap();
    let manifest = c.layout.resolve("content-uid").unwrap().unwrap();
    assert_eq!(
        a.image,
        format!(
            "{}/checkpoints/default/counter-checkpoint@{}",
            registry.addr,
            manifest.digest()
        )
    );
    assert!(
        c.metrics
            .render()
            .contains("checkpointing_noded_pushes_total{result=\"succeeded\"} 1")
    );
    assert!(
        c.metrics
            .render()
            .contains("checkpointing_noded_push_duration_seconds_count 1"),
        "the push's duration is recorded, for throughput figures"
    );
    let parsed =
        oci_spec::image::ImageManifest::from_file(c.layout.blob_path(manifest.digest())).unwrap();
    assert!(
        c.metrics.render().contains(&format!(
            "checkpointing_noded_push_bytes_total{{compression=\"none\"}} {}",
            parsed.config().size() + a.size
        )),
        "the config and the archive, as they are: {}",
        c.metrics.render()
    );
    let state = registry.state.lock().unwrap();
    assert_eq!(state.blobs[&a.digest], FakeRuntime::archive());
    assert!(
        state
            .manifests
            .contains_key("checkpoints/default/counter-checkpoint:content-uid")
    );
}

/// With `compression: Zstd` the node's image becomes the pushed one, and the status tells
/// what was sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_compressed_push_names_the_layouts_image_and_counts_its_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = crate::testing::push_registry::Registry::start().await;
    let (c, mut job) = pushing_to(&registry, running(), tmp.path());
    job.push.as_mut().unwrap().compression = checkpointing::crd::Compression::Zstd;
    let a = c.take(&job).await.unwrap();
    let manifest = c.layout.resolve("content-uid").unwrap().unwrap();
    assert!(
        a.image.ends_with(&format!("@{}", manifest.digest())),
        "{}",
        a.image
    );
    c.layout.verify("content-uid").unwrap();
    let pushed = a.pushed.clone().unwrap();
    assert!(pushed.ends_with(" zstd"), "{pushed}");
    let message = crate::reconcile::final_status(&Ok(a), None)
        .message
        .unwrap();
    assert!(message.ends_with(&pushed), "{message}");
    let text = c.metrics.render();
    let counted = |compression: &str| -> u64 {
        let prefix =
            format!("checkpointing_noded_push_bytes_total{{compression=\"{compression}\"}} ");
        let line = text.lines().find(|l| l.starts_with(&prefix)).unwrap();
        line[prefix.len()..].parse().unwrap()
    };
    assert!(counted("zstd") > 0, "{text}");
    assert_eq!(counted("none"), 0, "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_push_fails_the_checkpoint_naming_the_registry_and_status() {
    let tmp = tempfile::tempdir().unwrap();
    let registry = crate::testing::push_registry::Registry::start().await;
    registry.state.lock().unwrap().manifest_status =
        Some(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
    let (c, job) = pushing_to(&registry, running(), tmp.path());
    let outcome = c.take(&job).await;
    let e = outcome.as_ref().unwrap_err();
    assert!(matches!(e, Failure::Push { .. }), "{e}");
    let text = c.metrics.render();
    assert!(
        text.contains("checkpointing_noded_pushes_total{result=\"failed\"} 1"),
        "{text}"
    );
    assert!(
        text.contains(
            "checkpointing_noded_checkpoints_total{result=\"failed\",reason=\"PushFailed\"} 1"
        ),
        "{text}"
    );
    let status = crate::reconcile::final_status(&outcome, None);
    let message = status.message.unwrap();
    assert!(
        message.starts_with(&format!(
            "pushing the checkpoint image to registry {}: PUT http://{}/v2/checkpoints/default/counter-checkpoint/manifests/content-uid answered 500 Internal Server Error",
            registry.addr, registry.addr
        )),
        "{message}"
    );
    assert!(!status.ready);

    // The archive and local image are there, and go by the normal deletion path.
    assert_eq!(leftovers(tmp.path()).len(), 1);
    assert!(c.layout.resolve("content-uid").unwrap().is_some());
    c.remove(&job).unwrap();
    assert!(leftovers(tmp.path()).is_empty());
    assert!(c.layout.resolve("content-uid").unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_completed_checkpoint_shows_in_the_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let c = checkpointer(running(), tmp.path());
    let a = c.take(&job()).await.unwrap();
    let text = c.metrics.render();
    for line in [
        "checkpointing_noded_checkpoints_total{result=\"completed\",reason=\"Completed\"} 1"
            .to_owned(),
        "checkpointing_noded_archive_size_bytes_count 1".to_owned(),
        format!("checkpointing_noded_archive_size_bytes_sum {}.0", a.size),
        "checkpointing_noded_checkpoint_cri_duration_seconds_count 1".to_owned(),
        "checkpointing_noded_checkpoint_duration_seconds_count 1".to_owned(),
        "checkpointing_noded_archive_size_bytes_bucket{le=\"4294967296.0\"} 1".to_owned(),
    ] {
        assert!(text.contains(&line), "{line} missing from {text}");
    }

    // A failure counts under its reason, with no archive size.
    let c = checkpointer(FakeRuntime::default(), tmp.path());
    c.take(&job()).await.unwrap_err();
    let text = c.metrics.render();
    assert!(
        text.contains(
            "checkpointing_noded_checkpoints_total{result=\"failed\",reason=\"NotRunning\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("checkpointing_noded_archive_size_bytes_count 0"),
        "{text}"
    );
}

#[test]
fn failures_map_to_a_fixed_set_of_reasons() {
    let cri = |e: CriError| Failure::Runtime(e).reason();
    let op = "CheckpointContainer";
    let message = String::new;
    assert_eq!(
        cri(CriError::SocketMissing {
            path: "/run/x.sock".into()
        }),
        "RuntimeUnavailable"
    );
    assert_eq!(
        cri(CriError::Unavailable {
            op,
            message: message()
        }),
        "RuntimeUnavailable"
    );
    assert_eq!(
        cri(CriError::DeadlineExceeded {
            op,
            message: message()
        }),
        "RuntimeTimeout"
    );
    assert_eq!(
        cri(CriError::Unimplemented {
            op,
            message: message()
        }),
        "RuntimeUnsupported"
    );
    assert_eq!(
        cri(CriError::NotFound {
            op,
            message: message()
        }),
        "ContainerNotFound"
    );
    assert_eq!(
        cri(CriError::Rpc {
            op,
            code: CriError::Unavailable {
                op,
                message: message()
            }
            .code(),
            message: message()
        }),
        "RuntimeError"
    );
    let store = |kind| Failure::Store(std::io::Error::from(kind)).reason();
    assert_eq!(store(std::io::ErrorKind::StorageFull), "DiskFull");
    assert_eq!(store(std::io::ErrorKind::PermissionDenied), "StoreError");
    let unreadable = SpaceError::Unreadable {
        dir: "/x".into(),
        source: std::io::ErrorKind::PermissionDenied.into(),
    };
    assert_eq!(Failure::Space(unreadable).reason(), "StoreError");
    assert_eq!(Failure::NoArchive("/x".into()).reason(), "NoArchive");
    assert_eq!(Failure::Interrupted.reason(), "Interrupted");
    assert_eq!(
        Failure::NotRunning {
            namespace: "n".into(),
            pod: "p".into(),
            container: "c".into()
        }
        .reason(),
        "NotRunning"
    );
}

/// Six checkpoints of six containers at once: with a limit of two, never more than two dumps
/// run together; without one, they all do.
#[tokio::test(flavor = "multi_thread")]
async fn dumps_at_once_stay_within_the_limit() {
    let pods: Vec<String> = (0..6).map(|i| format!("app{i}")).collect();
    let runtime = || FakeRuntime {
        containers: pods
            .iter()
            .map(|p| {
                crate::testing::container(
                    &format!("c-{p}"),
                    api::ContainerState::ContainerRunning,
                    1,
                    ["default", p, &format!("uid-{p}"), "counter"],
                )
            })
            .collect(),
        ..Default::default()
    };
    let jobs: Vec<(String, String)> = pods
        .iter()
        .map(|p| (format!("ck-{p}"), format!("uid-{p}")))
        .collect();
    for (limit, expected) in [(2, 2), (6, 6)] {
        let tmp = tempfile::tempdir().unwrap();
        let fake = runtime();
        let most = fake.most_in_flight.clone();
        let c = checkpointer(fake, tmp.path()).with_concurrent_dumps(limit);
        let taken = futures::future::join_all(pods.iter().zip(&jobs).map(|(pod, (name, uid))| {
            let job = Job {
                name,
                key: ArchiveKey {
                    namespace: "default",
                    pod,
                    container: "counter",
                    uid: name,
                },
                pod_uid: uid,
                timeout: Duration::from_secs(42),
                volumes: Vec::new(),
                push: None,
                hold: false,
            };
            let c = &c;
            async move { c.take(&job).await }
        }))
        .await;
        assert!(taken.iter().all(Result::is_ok), "{taken:?}");
        assert_eq!(
            most.load(std::sync::atomic::Ordering::SeqCst),
            expected,
            "limit {limit}"
        );
    }
}

const MIB: u64 = 1 << 20;

fn stats(memory: Option<u64>, layer: Option<u64>) -> api::ContainerStats {
    let value = |v: Option<u64>| v.map(|value| api::UInt64Value { value });
    api::ContainerStats {
        memory: Some(api::MemoryUsage {
            working_set_bytes: value(memory),
        }),
        writable_layer: Some(api::FilesystemUsage {
            used_bytes: value(layer),
        }),
    }
}

#[test]
fn an_archive_needs_the_containers_memory_and_writable_layer() {
    let both = archive_need(Some(&stats(Some(1536 * MIB), Some(40 * MIB))));
    assert_eq!(both.bytes, 1576 * MIB);
    assert_eq!(
        both.basis,
        "the container's 1.5 GiB of memory and 40 MiB writable layer"
    );
    assert_eq!(
        archive_need(Some(&stats(Some(MIB), None))).bytes,
        MIB,
        "no writable layer figure: the memory alone"
    );
    let huge = archive_need(Some(&stats(Some(u64::MAX), Some(u64::MAX))));
    assert_eq!(huge.bytes, u64::MAX);
    for unknown in [None, Some(&stats(None, Some(MIB)))] {
        let need = archive_need(unknown);
        assert_eq!(need.bytes, 0, "only the reserve is checked");
        assert!(need.basis.contains("size unknown"), "{}", need.basis);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disk_without_room_fails_the_checkpoint_before_the_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let runtime = FakeRuntime {
        stats: Some(stats(Some(1536 * MIB), Some(40 * MIB))),
        ..running()
    };
    let mut c = checkpointer(runtime, tmp.path());
    c.space = disk_space(|_| Ok(1229 * MIB));
    let outcome = c.take(&job()).await;
    assert_eq!(
        outcome.as_ref().map_err(Failure::reason).unwrap_err(),
        "NotEnoughDiskSpace"
    );

    // The Content ends Failed with what to do about it in its message.
    let status = crate::reconcile::final_status(&outcome, None);
    assert_eq!(
        status.state,
        Some(checkpointing::crd::CheckpointState::Failed)
    );
    assert_eq!(
        status.message.unwrap(),
        format!(
            "not enough disk space on node node1 for the checkpoint archive: {} has 1.2 GiB \
             free, about 1.8 GiB needed (the container's 1.5 GiB of memory and 40 MiB writable \
             layer, plus 256 MiB kept free by noded's --disk-reserve-mib)",
            tmp.path().join("checkpoints").display()
        )
    );
    assert!(
        c.runtime.calls.lock().unwrap().is_empty(),
        "CheckpointContainer never called"
    );
    assert!(leftovers(tmp.path()).is_empty());
    assert!(c.layout.tags().unwrap().is_empty());

    // The same checkpoint on a disk with room goes ahead.
    c.space = disk_space(|_| Ok(1832 * MIB));
    c.take(&job()).await.unwrap();
    assert_eq!(c.runtime.calls.lock().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_container_stats_only_the_reserve_is_checked() {
    let tmp = tempfile::tempdir().unwrap();
    // The fake runtime implements no ContainerStats.
    let mut c = checkpointer(running(), tmp.path());
    c.space = disk_space(|_| Ok(255 * MIB));
    let e = c.take(&job()).await.unwrap_err();
    let message = e.to_string();
    assert!(
        message.contains("about 256 MiB needed (its size unknown: the runtime reports no memory usage for the container, plus 256 MiB kept free"),
        "{message}"
    );
    assert!(c.runtime.calls.lock().unwrap().is_empty());

    c.space = disk_space(|_| Ok(256 * MIB));
    c.take(&job()).await.unwrap();
    assert_eq!(c.runtime.calls.lock().unwrap().len(), 1);
}

mod hold;
