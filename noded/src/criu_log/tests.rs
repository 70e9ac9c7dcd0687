use super::*;

fn deployed() -> RuntimeDir {
    RuntimeDir {
        on_node: "/run/containerd".into(),
        here: "/run/cri".into(),
    }
}

#[test]
fn node_paths_map_only_beneath_the_runtimes_directory() {
    let dir = deployed();
    assert_eq!(
        dir.local("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/criu-dump.log"),
        Some("/run/cri/io.containerd.runtime.v2.task/k8s.io/abc/criu-dump.log".into())
    );
    for refused in [
        "/run/containerd",
        "/run/containerd/../../etc/shadow",
        "/run/containerd/a/../../../etc/shadow",
        "/run/containerdx/criu-dump.log",
        "/etc/shadow",
        "run/containerd/x.log",
        "",
    ] {
        assert_eq!(dir.local(refused), None, "{refused}");
    }
    let deployed_socket = Path::new("/run/cri/containerd.sock");
    let on_node = Some(PathBuf::from("/run/containerd"));
    assert_eq!(RuntimeDir::of_socket(deployed_socket, on_node), Some(dir));
    let on_host = RuntimeDir::of_socket(Path::new("/run/containerd/containerd.sock"), None);
    assert_eq!(
        on_host.unwrap().local("/run/containerd/t/criu-dump.log"),
        Some("/run/containerd/t/criu-dump.log".into()),
        "noded on the node itself reads the path as named"
    );
    assert_eq!(RuntimeDir::of_socket(Path::new("/cri.sock"), None), None);
    let unset = RuntimeDir::default();
    assert_eq!(
        unset.local("/etc/shadow"),
        None,
        "no directory: nothing is read"
    );
}

fn checkpoint_failed(message: &str) -> Failure {
    Failure::Runtime(CriError::Rpc {
        op: "CheckpointContainer",
        code: tonic::Code::Unknown,
        message: message.into(),
    })
}

/// A runtime directory in `tmp` holding one task's `criu-dump.log` with `log`.
fn containerd_in(tmp: &Path, log: &str) -> (RuntimeDir, String) {
    let task = tmp.join("io.containerd.runtime.v2.task/k8s.io/abc");
    std::fs::create_dir_all(&task).unwrap();
    std::fs::write(task.join("criu-dump.log"), log).unwrap();
    let dir = RuntimeDir {
        on_node: "/run/containerd".into(),
        here: tmp.into(),
    };
    let message = "checkpointing container \"abc\" failed: criu failed: type DUMP errno 0 path= \
                   /run/containerd/io.containerd.runtime.v2.task/k8s.io/abc/criu-dump.log: unknown";
    (dir, message.into())
}

#[test]
fn containerds_log_file_is_read_through_the_mount() {
    let tmp = tempfile::tempdir().unwrap();
    let log = "(00.01) Dumping pid 7\n\
               (00.02) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using --tcp-established option.\n\
               (00.03) Error (criu/cr-dump.c:2111): Dumping FAILED.\n";
    let (dir, message) = containerd_in(tmp.path(), log);
    let failure = checkpoint_failed(&message);
    let d = diagnose(&failure, Duration::from_secs(120), &dir).unwrap();
    assert!(d.cause.contains("tcp-close"), "{d:?}");
    assert_eq!(d.log.as_deref(), Some(log));
    let said = super::message(&d, "cp1");
    assert!(
        said.starts_with("the runtime could not checkpoint the container: "),
        "{said}"
    );
    assert!(said.ends_with("kubectl checkpoint logs cp1"), "{said}");
    assert!(!said.contains("/run/containerd"), "no node path: {said}");
}

#[test]
fn only_the_end_of_a_long_log_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let log = format!(
        "{}(00.02) Error (criu/cr-dump.c:388): Can't get rlimit 0: Operation not permitted\n",
        "(00.01) filler line of CRIU's log\n".repeat(4000)
    );
    let (dir, message) = containerd_in(tmp.path(), &log);
    let d = diagnose(&checkpoint_failed(&message), Duration::from_secs(1), &dir).unwrap();
    let kept = d.log.unwrap();
    assert!(kept.len() <= criu::LOG_TAIL_BYTES, "{}", kept.len());
    assert!(kept.starts_with("(00.01) filler"), "from a line's start");
    assert!(d.cause.contains("CAP_SYS_RESOURCE"), "{}", d.cause);
}

#[test]
fn a_log_that_cannot_be_read_is_said_so() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, message) = containerd_in(tmp.path(), "");
    let gone = message.replace("/abc/", "/gone/");
    let d = diagnose(&checkpoint_failed(&gone), Duration::from_secs(1), &dir).unwrap();
    assert!(d.cause.contains("could not be read on the node"), "{d:?}");

    // A link planted where the log should be is not followed.
    let task = tmp.path().join("io.containerd.runtime.v2.task/k8s.io/abc");
    std::fs::remove_file(task.join("criu-dump.log")).unwrap();
    std::fs::write(tmp.path().join("secret"), "(00.1) Error (x.c:1): secret\n").unwrap();
    std::os::unix::fs::symlink(tmp.path().join("secret"), task.join("criu-dump.log")).unwrap();
    let d = diagnose(&checkpoint_failed(&message), Duration::from_secs(1), &dir).unwrap();
    assert!(!d.cause.contains("secret"), "{d:?}");
    assert_eq!(d.log, None);
}

#[test]
fn deadlines_and_other_failures() {
    let dir = deployed();
    let timed_out = Failure::Runtime(CriError::DeadlineExceeded {
        op: "CheckpointContainer",
        message: "no answer within 30s".into(),
    });
    let d = diagnose(&timed_out, Duration::from_secs(30), &dir).unwrap();
    assert!(d.cause.contains("within 30s") && d.cause.contains("spec.timeoutSeconds"));

    let listing = Failure::Runtime(CriError::Unavailable {
        op: "ListContainers",
        message: "connection refused".into(),
    });
    assert_eq!(diagnose(&listing, Duration::from_secs(1), &dir), None);
    assert_eq!(
        diagnose(&Failure::Interrupted, Duration::from_secs(1), &dir),
        None
    );
}
