use super::*;

/// The end of `criu-dump.log` as containerd's shim keeps it, for a process with an open TCP
/// connection and no tcp-close (CRIU 4.2).
const TCP_LOG: &str = "\
(00.000000) Unable to get $HOME directory, local configuration file will not be used.
(00.000031) Parsing config file /etc/criu/runc.conf
(00.000061) Version: 4.2 (gitid 0)
(00.021510) Dumping pid 43117 with tid 43117
(00.034811) sockets: Searching for socket 0x2d0e3d family 2
(00.034834) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using --tcp-established option.
(00.034890) ----------------------------------------
(00.034901) Error (criu/cr-dump.c:1688): Dump files (pid: 43117) failed with -1
(00.036232) Unlock network
(00.036362) Unfreezing tasks into 1
(00.036912) Error (criu/cr-dump.c:2111): Dumping FAILED.
";

const CONTAINERD_MESSAGE: &str = "checkpointing container \
\"5be1d0c4\" failed: criu failed: type DUMP errno 0 path= \
/run/containerd/io.containerd.runtime.v2.task/k8s.io/5be1d0c4/criu-dump.log: unknown";

/// CRI-O's message: runc's stderr, which quotes `dump.log` around each error as logrus text.
const CRIO_MESSAGE: &str = r#"failed to checkpoint container 3f2a9c: running "/usr/local/sbin/runc" ["checkpoint" "--file-locks" "--image-path" "/var/lib/containers/storage/overlay-containers/3f2a9c/userdata/checkpoint" "--work-path" "/var/lib/containers/storage/overlay-containers/3f2a9c/userdata" "--leave-running" "3f2a9c"] failed: `/usr/local/sbin/runc --root /run/runc checkpoint --file-locks --image-path /var/lib/containers/storage/overlay-containers/3f2a9c/userdata/checkpoint --work-path /var/lib/containers/storage/overlay-containers/3f2a9c/userdata --leave-running 3f2a9c` failed: time="2026-08-20T10:01:02Z" level=warning msg="--- Quoting \"/var/lib/containers/storage/overlay-containers/3f2a9c/userdata/dump.log\""
time="2026-08-20T10:01:02Z" level=warning msg="1524:(00.021510) Dumping pid 43117 with tid 43117"
time="2026-08-20T10:01:02Z" level=warning msg="1528:(00.034834) Error (criu/sk-inet.c:199): inet: Connected TCP socket, consider using --tcp-established option."
time="2026-08-20T10:01:02Z" level=warning msg="1529:(00.034890) ----------------------------------------"
time="2026-08-20T10:01:02Z" level=warning msg="1530:(00.034901) Error (criu/cr-dump.c:1688): Dump files (pid: 43117) failed with -1"
time="2026-08-20T10:01:02Z" level=warning msg=...
time="2026-08-20T10:01:02Z" level=warning msg="1545:(00.036912) Error (criu/cr-dump.c:2111): Dumping FAILED."
time="2026-08-20T10:01:02Z" level=warning msg=---
time="2026-08-20T10:01:02Z" level=error msg="criu failed: type DUMP errno 0"
 : exit status 1"#;

fn dump<'a>(message: &'a str, log: NodeLog<'a>) -> Diagnosis {
    diagnose(&Dump {
        message,
        deadline: None,
        log,
    })
}

#[test]
fn error_lines_are_found_after_timestamps_and_line_numbers() {
    let e = first_error(TCP_LOG).unwrap();
    assert_eq!(e.source, "criu/sk-inet.c:199");
    assert_eq!(
        e.text,
        "inet: Connected TCP socket, consider using --tcp-established option"
    );
    let quoted = ErrorLine::parse(
        "1528:(00.034834) Error (criu/cr-dump.c:388): Can't get rlimit 0: Operation not permitted",
    )
    .unwrap();
    assert_eq!(quoted.source, "criu/cr-dump.c:388");
    assert_eq!(ErrorLine::parse("(00.1) Warn (criu/x.c:1): no"), None);
    assert_eq!(ErrorLine::parse("Error (not a source): x"), None);
    assert_eq!(ErrorLine::parse("an Error (x.c:12a): y"), None);
    assert_eq!(first_error("(00.1) all good\n"), None);
}

#[test]
fn containerd_names_the_log_file() {
    assert_eq!(
        log_path(CONTAINERD_MESSAGE),
        Some("/run/containerd/io.containerd.runtime.v2.task/k8s.io/5be1d0c4/criu-dump.log")
    );
    assert_eq!(
        log_path("criu failed: type DUMP errno 0 path= /run/x/criu-dump.log"),
        Some("/run/x/criu-dump.log")
    );
    assert_eq!(log_path("path= relative/file"), None);
    assert_eq!(log_path(CRIO_MESSAGE), None);
}

#[test]
fn a_connected_tcp_socket_points_at_the_node_setting() {
    for d in [
        dump(CONTAINERD_MESSAGE, NodeLog::Read(TCP_LOG)),
        dump(CRIO_MESSAGE, NodeLog::Absent),
    ] {
        assert!(d.cause.contains("tcp-close"), "{d:?}");
        assert!(d.cause.contains("/etc/criu/runc.conf"), "{d:?}");
        assert!(d.cause.contains(NODE_SETUP), "{d:?}");
        assert!(!d.cause.contains('\n'));
        let log = d.log.unwrap();
        assert!(log.contains("Connected TCP socket"), "{log}");
    }
}

#[test]
fn crio_messages_yield_the_quoted_lines_unescaped() {
    let quoted = runc_quote(CRIO_MESSAGE).unwrap();
    assert!(
        quoted.starts_with("1524:(00.021510) Dumping pid 43117"),
        "{quoted}"
    );
    assert!(
        quoted.contains("\n...\n"),
        "the gap runc marks stays: {quoted}"
    );
    assert!(quoted.ends_with("Dumping FAILED.\n"), "{quoted}");
    assert!(!quoted.contains("level="), "{quoted}");
    assert!(!quoted.contains("Quoting"), "{quoted}");
    assert_eq!(
        runc_quote(
            r#"time="t" level=warning msg="--- Quoting \"a\""
time="t" level=warning msg="1:say \"hi\"\tthere \u00e9\x41"
time="t" level=warning msg=---"#
        )
        .as_deref(),
        Some("1:say \"hi\"\tthere éA\n")
    );
    assert_eq!(runc_quote("criu failed: type DUMP errno 0"), None);
}

#[test]
fn a_non_root_process_without_cap_sys_resource_is_named() {
    let log = "(00.012001) Dumping pid 5120 with tid 5120\n\
               (00.012010) Error (criu/cr-dump.c:388): Can't get rlimit 0: Operation not permitted\n\
               (00.012100) Error (criu/cr-dump.c:1505): Dump misc (pid: 5120) failed with -1\n\
               (00.013000) Error (criu/cr-dump.c:2111): Dumping FAILED.\n";
    let d = dump(CONTAINERD_MESSAGE, NodeLog::Read(log));
    assert!(d.cause.contains("non-root user"), "{d:?}");
    assert!(d.cause.contains("CAP_SYS_RESOURCE"), "{d:?}");
}

#[test]
fn unsupported_files_and_sockets_are_named() {
    let file = "(00.020000) Error (criu/files-ext.c:96): Can't dump file 7 of that type [20666] (chr 10:200)\n\
                (00.020010) Error (criu/cr-dump.c:1688): Dump files (pid: 77) failed with -1\n";
    let d = dump(CONTAINERD_MESSAGE, NodeLog::Read(file));
    assert!(
        d.cause
            .contains("open file CRIU cannot checkpoint (fd 7, chr 10:200)"),
        "{d:?}"
    );

    let socket = "(00.02) unix: \tRunaway socket: ino 0x3a1 peer_ino 0x3a2 family 1\n\
                  (00.03) Error (criu/sk-unix.c:874): unix: External socket is used. Consider using --ext-unix-sk option.\n";
    let d = dump(CONTAINERD_MESSAGE, NodeLog::Read(socket));
    assert!(
        d.cause
            .contains("Unix socket connected to a process outside"),
        "{d:?}"
    );

    let ghost = "(00.05) Error (criu/files-reg.c:1031): Can't dump ghost file /tmp/big of 1073741824 size, increase limit\n";
    assert!(
        dump(CONTAINERD_MESSAGE, NodeLog::Read(ghost))
            .cause
            .contains("ghost-limit")
    );
}

#[test]
fn an_unknown_error_is_quoted_with_its_source() {
    let log = "(00.01) Error (criu/mount.c:1093): mnt: Mount 1023 ./sys/fs/cgroup has unreachable sharing. Try --enable-external-masters.\n\
               (00.02) Error (criu/cr-dump.c:2111): Dumping FAILED.\n";
    let d = dump(CONTAINERD_MESSAGE, NodeLog::Read(log));
    assert_eq!(
        d.cause,
        "CRIU: mnt: Mount 1023 ./sys/fs/cgroup has unreachable sharing. Try \
         --enable-external-masters (criu/mount.c:1093)"
    );
}

#[test]
fn timeouts_name_the_requests_setting() {
    let d = diagnose(&Dump {
        message: "no answer within 120s",
        deadline: Some(Duration::from_secs(120)),
        log: NodeLog::Absent,
    });
    assert!(d.cause.contains("within 120s"), "{d:?}");
    assert!(d.cause.contains("spec.timeoutSeconds"), "{d:?}");
    assert_eq!(d.log, None);
    let crio = dump(
        "failed to checkpoint container x: context deadline exceeded",
        NodeLog::Absent,
    );
    assert!(crio.cause.contains("spec.timeoutSeconds"), "{crio:?}");
}

#[test]
fn without_criu_lines_the_runtimes_first_line_is_said() {
    let d = dump(
        CONTAINERD_MESSAGE,
        NodeLog::Unreadable {
            path: "/run/containerd/x/criu-dump.log",
            why: "No such file or directory (os error 2)",
        },
    );
    assert!(
        d.cause
            .starts_with("the runtime said: checkpointing container"),
        "{d:?}"
    );
    assert!(d.cause.contains("could not be read on the node"), "{d:?}");
    assert_eq!(d.log, None, "a one-line message is in the cause whole");

    let d = dump(
        "container \"x\" is in CONTAINER_EXITED state. only CONTAINER_RUNNING containers can be checkpointed",
        NodeLog::Absent,
    );
    assert!(d.cause.ends_with("can be checkpointed"), "{d:?}");

    let long = format!("first line\n{}", "detail ".repeat(200));
    let d = dump(&long, NodeLog::Absent);
    assert_eq!(d.cause, "the runtime said: first line");
    assert_eq!(
        d.log.as_deref(),
        Some(long.as_str()),
        "kept whole in the log"
    );
}

#[test]
fn causes_are_one_bounded_line() {
    let log = format!(
        "(00.01) Error (criu/x.c:1): {}\n",
        "word\twith\rbreaks ".repeat(100)
    );
    let d = dump(CONTAINERD_MESSAGE, NodeLog::Read(&log));
    assert!(!d.cause.contains(['\n', '\r', '\t']), "{d:?}");
    assert_eq!(d.cause.chars().count(), CAUSE_MAX + 1);
    assert!(d.cause.ends_with('…'));
}

#[test]
fn the_log_keeps_its_end_from_a_line_start() {
    assert_eq!(tail("short\n", 100), "short\n");
    assert_eq!(tail("one\ntwo\nthree\n", 9), "three\n");
    assert_eq!(tail("one\ntwo\nthree\n", 10), "two\nthree\n");
    assert_eq!(
        tail("averyveryverylongline", 5),
        "gline",
        "a line longer than the bound is cut"
    );
    assert_eq!(tail("ééé\n", 5), "éé\n", "never inside a character");
    let big = "(00.000001) a line of CRIU's log\n".repeat(5000);
    let kept = tail(&big, LOG_TAIL_BYTES);
    assert!(kept.len() <= LOG_TAIL_BYTES);
    assert!(kept.starts_with("(00.000001)"));
    let d = dump(
        CONTAINERD_MESSAGE,
        NodeLog::Read(&format!("{big}{TCP_LOG}")),
    );
    let log = d.log.unwrap();
    assert!(log.len() <= LOG_TAIL_BYTES && log.ends_with("Dumping FAILED.\n"));
}

/// Seen on every dump of these machines (CRIU without CAP_SYS_RESOURCE): logged as an error,
/// then CRIU goes on; the cause is the error after it.
#[test]
fn an_error_criu_carries_on_from_is_not_the_cause() {
    let log = "(00.033657) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE for self: Operation not permitted\n\
               (00.034008) freezing cgroup /sys/fs/cgroup/freezer/x\n\
               (10.034017) Error (criu/cr-dump.c:1655): Timeout reached. Try to interrupt: 0\n\
               (10.034149) Error (criu/cr-dump.c:1975): Dumping FAILED.\n";
    let e = first_error(log).unwrap();
    assert_eq!(e.source, "criu/cr-dump.c:1655");
}
