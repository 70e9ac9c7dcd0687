use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use checkpointing::runtime::RuntimeKind;
use clap::Parser as _;

use super::files::{self, CriuConfig, Layout, Reader, RuntimeChoice};
use super::manifest::{self, Action, Manifest};
use super::report::STATE_SUBDIR;
use super::{Args, advice, apply, under};

/// The chart's defaults, as `noded setup apply` parses them.
fn layout(extra: &[&str]) -> Layout {
    #[derive(clap::Parser)]
    struct Only {
        #[command(flatten)]
        layout: Layout,
    }
    Only::parse_from(std::iter::once("t").chain(extra.iter().copied())).layout
}

fn state() -> PathBuf {
    Path::new("/var/lib/kubelet/checkpoints").join(STATE_SUBDIR)
}

/// Every file under `root`, as node paths.
fn tree(root: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(Path::new("/").join(p.strip_prefix(root).unwrap()));
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, root, &mut out);
    out.sort();
    out
}

#[test]
fn the_setup_command_line_parses_with_the_charts_flags() {
    Args::try_parse_from([
        "setup",
        "apply",
        "--root=/host",
        "--runtime=containerd",
        "--registry-port=5060",
        "--credential-provider=false",
        "--checkpoint-dir=/var/lib/kubelet/checkpoints",
    ])
    .unwrap();
    Args::try_parse_from(["setup", "undo", "--root=/host"]).unwrap();
    Args::try_parse_from(["setup", "wait", "--namespace=ns", "--daemonset=d"]).unwrap();
}

#[test]
fn the_runtime_is_the_one_named_or_whose_socket_is_there() {
    let auto = layout(&[]);
    let containerd = |p: &Path| p == Path::new("/run/k3s/containerd/containerd.sock");
    assert_eq!(
        files::runtime(&auto, containerd),
        Ok(RuntimeKind::Containerd)
    );
    let crio = |p: &Path| p == Path::new("/run/crio/crio.sock");
    assert_eq!(files::runtime(&auto, crio), Ok(RuntimeKind::CriO));
    let neither = files::runtime(&auto, |_| false).unwrap_err();
    assert!(
        neither.contains("neither") && neither.contains("nodeSetup.runtime"),
        "{neither}"
    );
    assert!(
        files::runtime(&auto, |_| true)
            .unwrap_err()
            .contains("both")
    );
    let named = layout(&["--runtime=crio"]);
    assert_eq!(named.runtime, RuntimeChoice::Crio);
    assert_eq!(files::runtime(&named, containerd), Ok(RuntimeKind::CriO));
}

#[test]
fn each_runtime_gets_its_own_drop_ins_with_the_registry_port() {
    let l = layout(&["--registry-port=5060"]);
    let crio = files::desired(&l, RuntimeKind::CriO, b"bin");
    let paths: Vec<&Path> = crio.iter().map(|f| f.path.as_path()).collect();
    assert_eq!(
        paths,
        [
            Path::new("/etc/crio/crio.conf.d/50-checkpointing.conf"),
            Path::new("/etc/containers/registries.conf.d/50-checkpointing.conf"),
            Path::new("/etc/kubernetes/credential-providers/bin/checkpointing-credential-provider"),
            Path::new("/etc/kubernetes/credential-providers/checkpointing.yaml"),
        ]
    );
    let text = |i: usize| String::from_utf8(crio[i].content.clone()).unwrap();
    assert!(text(0).contains("enable_criu_support = true"));
    assert!(text(1).contains("location = \"localhost:5060\"") && !text(1).contains("5050"));
    assert!(text(3).contains("matchImages: [\"localhost:5060\"]"));
    assert_eq!(
        (crio[2].mode, crio[2].content.as_slice()),
        (0o755, &b"bin"[..])
    );
    assert_eq!(crio[0].read_at_start, Some(Reader::Runtime));
    assert_eq!(crio[3].read_at_start, Some(Reader::Kubelet));

    let containerd = files::desired(
        &layout(&["--credential-provider=false"]),
        RuntimeKind::Containerd,
        b"",
    );
    assert_eq!(containerd.len(), 1, "{containerd:?}");
    assert_eq!(
        containerd[0].path,
        Path::new("/etc/containerd/certs.d/localhost:5050/hosts.toml")
    );
    assert_eq!(
        containerd[0].read_at_start, None,
        "containerd reads hosts.toml at every pull"
    );
    assert!(
        String::from_utf8_lossy(&containerd[0].content)
            .contains("server = \"http://localhost:5050\"")
    );
}

#[test]
fn a_nodes_own_criu_configuration_is_kept_and_what_it_lacks_reported() {
    let l = layout(&[]);
    let CriuConfig::Write(f) = files::criu_config(&l, None) else {
        panic!("none there: written")
    };
    assert_eq!(f.content, files::CRIU_RUNC_CONF.as_bytes());
    assert_eq!(
        files::criu_config(&l, Some("tcp-close\nskip-in-flight\n")),
        CriuConfig::Sufficient
    );
    assert_eq!(
        files::criu_config(&l, Some("# mine\ntcp-established\n")),
        CriuConfig::Lacks(vec!["tcp-close", "skip-in-flight"])
    );
}

#[test]
fn only_the_setups_own_files_are_replaced() {
    assert_eq!(manifest::action(false, None, b"a"), Action::Create);
    assert_eq!(manifest::action(true, Some(b"a"), b"a"), Action::Unchanged);
    assert_eq!(manifest::action(true, Some(b"old"), b"a"), Action::Replace);
    assert_eq!(
        manifest::action(false, Some(b"theirs"), b"a"),
        Action::Foreign
    );
    let m = Manifest {
        files: [PathBuf::from("/a"), PathBuf::from("/b")].into(),
        dirs: Default::default(),
    };
    assert_eq!(
        manifest::stale(&m, &[PathBuf::from("/b")].into()),
        [Path::new("/a")]
    );
}

#[test]
fn a_file_changed_after_its_reader_started_needs_a_restart() {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
    let later = t0 + Duration::from_secs(5);
    let f = Path::new("/etc/crio/crio.conf.d/50-checkpointing.conf");
    let r = advice::restart("crio", f, later, Some(t0), false).unwrap();
    assert!(
        r.starts_with("restart crio:") && r.contains("never restarts"),
        "{r}"
    );
    assert_eq!(advice::restart("crio", f, t0, Some(later), true), None);
    assert!(
        advice::restart("crio", f, t0, None, true).is_some(),
        "unknown start, changed now"
    );
    assert_eq!(advice::restart("crio", f, t0, None, false), None);
}

#[test]
fn missing_or_other_kubelet_flags_are_reported() {
    let config = Path::new("/etc/k/p.yaml");
    let bin = Path::new("/etc/k/bin");
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let set = args(&[
        "/usr/bin/kubelet",
        "--image-credential-provider-config=/etc/k/p.yaml",
        "--image-credential-provider-bin-dir",
        "/etc/k/bin",
    ]);
    assert!(advice::kubelet_flags(Some(&set), config, bin).is_empty());
    let none = advice::kubelet_flags(Some(&args(&["kubelet", "--v=2"])), config, bin);
    assert_eq!(none.len(), 2, "{none:?}");
    assert!(none[0].contains("--image-credential-provider-config=/etc/k/p.yaml"));
    let other = advice::kubelet_flags(
        Some(&args(&[
            "kubelet",
            "--image-credential-provider-config=/x.yaml",
        ])),
        config,
        bin,
    );
    assert!(
        other[0].contains("is /x.yaml") && other[0].contains("merge"),
        "{other:?}"
    );
    let k3s = advice::kubelet_flags(None, config, bin);
    assert!(k3s[0].contains("--kubelet-arg"), "{k3s:?}");
}

#[test]
fn containerds_config_is_read_for_what_only_a_person_can_set() {
    let path = Path::new("/etc/containerd/config.toml");
    let certs = Path::new("/etc/containerd/certs.d");
    let shipped = include_str!("../../../deploy/containerd/config.toml");
    assert!(advice::containerd_config(Some(shipped), path, certs).is_empty());
    let bare = advice::containerd_config(Some("version = 3\n"), path, certs);
    assert!(
        bare[0].contains("sets no config_path") && bare[1].contains("restore_via_create"),
        "{bare:?}"
    );
    let other = advice::containerd_config(Some("config_path = '/x'\n"), path, certs);
    assert!(other[0].contains("\"/x\""), "{other:?}");
    assert!(advice::containerd_config(None, path, certs)[0].starts_with("no /etc/containerd"));
}

#[test]
fn apply_writes_records_and_undo_removes_exactly_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // the node before: its own containerd config and registry hosts, and the kubelet's root
    for (p, text) in [
        ("/etc/containerd/config.toml", "version = 3\n"),
        (
            "/etc/containerd/certs.d/docker.io/hosts.toml",
            "server = \"x\"\n",
        ),
        ("/var/lib/kubelet/checkpoints/a.tar", "archive"),
    ] {
        let p = under(root, Path::new(p));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let before = tree(root);
    let l = layout(&[]);
    let out = apply::files(root, &state(), &l, RuntimeKind::Containerd, b"bin").unwrap();
    assert_eq!(out.written.len(), 4, "{out:?}");
    assert!(out.manual.is_empty(), "{out:?}");
    let provider = under(root, &l.provider_bin_dir.join(files::PROVIDER_NAME));
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(
        std::fs::metadata(&provider).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let kubelet = out
        .read_at_start
        .iter()
        .find(|f| f.reader == Reader::Kubelet)
        .unwrap();
    assert!(kubelet.changed_now);

    // again: nothing to write, every file still the setup's
    let again = apply::files(root, &state(), &l, RuntimeKind::Containerd, b"bin").unwrap();
    assert!(again.written.is_empty(), "{again:?}");
    assert_eq!(again.owned, out.owned);
    assert!(again.read_at_start.iter().all(|f| !f.changed_now));

    // another port: the old host directory goes, the new one comes
    let moved = layout(&["--registry-port=5060"]);
    let out = apply::files(root, &state(), &moved, RuntimeKind::Containerd, b"bin").unwrap();
    assert_eq!(
        out.written.len(),
        2,
        "hosts.toml and the provider config: {out:?}"
    );
    assert!(!under(root, Path::new("/etc/containerd/certs.d/localhost:5050")).exists());

    let removed = manifest::undo(root, &state()).unwrap();
    assert_eq!(removed.len(), 4, "{removed:?}");
    assert_eq!(tree(root), before, "only the node's own files are left");
}

#[test]
fn a_nodes_own_files_are_kept_and_reported_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let l = layout(&["--credential-provider=false"]);
    let theirs = [
        (l.criu_config.clone(), "tcp-established\n"),
        (
            l.crio_drop_in_dir.join("50-checkpointing.conf"),
            "# theirs\n",
        ),
    ];
    for (p, text) in &theirs {
        let p = under(root, p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    let out = apply::files(root, &state(), &l, RuntimeKind::CriO, b"").unwrap();
    assert_eq!(
        out.written,
        [l.registries_drop_in_dir.join("50-checkpointing.conf")]
    );
    assert_eq!(out.manual.len(), 2, "{out:?}");
    assert!(
        out.manual[0].contains("add tcp-close and skip-in-flight"),
        "{out:?}"
    );
    assert!(out.manual[1].starts_with("kept /etc/crio/crio.conf.d/50-checkpointing.conf"));
    manifest::undo(root, &state()).unwrap();
    for (p, text) in &theirs {
        assert_eq!(std::fs::read_to_string(under(root, p)).unwrap(), *text);
    }
    assert!(
        !under(root, &l.registries_drop_in_dir).exists(),
        "made by the setup, removed"
    );
    assert!(!under(root, &state()).exists());
}

#[test]
fn the_undo_daemonset_is_done_when_every_node_is_ready() {
    use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
    let ds = |generation, observed, desired, updated, ready| DaemonSet {
        metadata: kube::api::ObjectMeta {
            generation: Some(generation),
            ..Default::default()
        },
        status: Some(DaemonSetStatus {
            observed_generation: Some(observed),
            desired_number_scheduled: desired,
            updated_number_scheduled: Some(updated),
            number_ready: ready,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(super::wait::rolled_out(&ds(1, 1, 3, 3, 3)), Ok(()));
    assert!(
        super::wait::rolled_out(&ds(1, 1, 3, 3, 2))
            .unwrap_err()
            .contains("2 of 3")
    );
    assert!(super::wait::rolled_out(&ds(2, 1, 3, 3, 3)).is_err());
    assert!(super::wait::rolled_out(&DaemonSet::default()).is_err());
}

#[test]
fn a_process_is_found_by_name_with_its_command_line_and_start() {
    let tmp = tempfile::tempdir().unwrap();
    let proc = tmp.path();
    std::fs::write(proc.join("stat"), "cpu 1 2 3\nbtime 1000\n").unwrap();
    // the daemon (started 5 s after boot) and a child it forked later; another process
    for (pid, comm, start) in [(40, "crio", 500), (41, "crio", 900), (7, "kubelet", 100)] {
        let dir = proc.join(pid.to_string());
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("comm"), format!("{comm}\n")).unwrap();
        let fields = (4..22).map(|f| f.to_string()).collect::<Vec<_>>().join(" ");
        std::fs::write(
            dir.join("stat"),
            format!("{pid} ({comm} x) S {fields} {start} 0 0\n"),
        )
        .unwrap();
        std::fs::write(dir.join("cmdline"), format!("/usr/bin/{comm}\0--v=2\0")).unwrap();
    }
    std::fs::create_dir(proc.join("self")).unwrap();
    let crio = super::host::process(proc, "crio").unwrap();
    assert_eq!(crio.cmdline, ["/usr/bin/crio", "--v=2"]);
    let ticks = rustix::param::clock_ticks_per_second();
    assert_eq!(
        crio.started,
        Some(
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(1000)
                + Duration::from_secs_f64(500.0 / ticks as f64)
        )
    );
    assert!(super::host::process(proc, "containerd").is_none());
}
