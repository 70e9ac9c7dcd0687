//! The chart's opt-in node setup on the testbed's release: enabled, it writes its files on every
//! node and reports the node's CRIU; its uninstall hooks (the objects `helm uninstall` runs
//! first, as `helm get hooks` shows them) leave every node's files as they were before. Turns
//! nodeSetup off again at the end. Needs the testbed's helm.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use e2e::Testbed;
use serde_json::Value;

const RELEASE: &str = "checkpointing";
const NAMESPACE: &str = "kube-system";
/// The seed's noded name (deploy/seed-values.yaml) with the setup's suffixes.
const SETUP: &str = "checkpoint-noded-node-setup";
const UNDO_WAIT: &str = "checkpoint-noded-node-setup-undo-wait";
/// Directories the setup writes into with its default paths, and its own state directory.
const WATCHED: [&str; 6] = [
    "/etc/kubernetes/credential-providers",
    "/etc/containerd/certs.d",
    "/etc/crio/crio.conf.d",
    "/etc/containers/registries.conf.d",
    "/etc/criu",
    "/var/lib/kubelet/checkpoints/node-setup",
];

fn helm(tb: &Testbed, args: &[&str]) -> String {
    let cache = std::env::var("TESTBED_CACHE").unwrap_or_else(|_| "/var/cache/ckpt-testbed".into());
    let out = Command::new(Path::new(&cache).join("bin/helm"))
        .arg("--kubeconfig")
        .arg(tb.state.join("kubeconfig"))
        .args(args)
        .current_dir(&tb.repo)
        .output()
        .expect("running the testbed's helm");
    assert!(
        out.status.success(),
        "helm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Every file and directory under the watched directories of `node`, with its content.
fn node_files(tb: &Testbed, node: &str) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.insert(p.clone(), Vec::new());
                walk(&p, out);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
            }
        }
    }
    let mut out = BTreeMap::new();
    for dir in WATCHED {
        let dir = tb.node_path(node, dir);
        if dir.exists() {
            out.insert(dir.clone(), Vec::new());
        }
        walk(&dir, &mut out);
    }
    out
}

fn set_enabled(tb: &Testbed, on: bool) {
    helm(
        tb,
        &[
            "upgrade",
            RELEASE,
            "deploy/chart",
            "-n",
            NAMESPACE,
            "--reuse-values",
            "--set",
            &format!("nodeSetup.enabled={on}"),
            "--wait",
            "--timeout=5m",
        ],
    );
}

#[test]
fn the_node_setup_writes_reports_and_its_uninstall_hooks_leave_nothing_behind() {
    let tb = Testbed::get();
    let nodes = tb.kubectl_ok(&["get", "nodes", "-o", "jsonpath={.items[*].metadata.name}"]);
    let nodes: Vec<&str> = nodes.split_whitespace().collect();
    let before: Vec<_> = nodes.iter().map(|n| node_files(&tb, n)).collect();

    set_enabled(&tb, true);
    tb.rollout_status(NAMESPACE, &format!("daemonset/{SETUP}"));
    for node in &nodes {
        let runtime = tb.cri_name(node);
        let state = tb.node_path(node, "/var/lib/kubelet/checkpoints/node-setup");
        let report: Value =
            serde_json::from_slice(&std::fs::read(state.join("report.json")).unwrap()).unwrap();
        assert_eq!(report["runtime"], runtime, "{node}: {report}");
        assert!(
            report["criu"]["version"].is_string(),
            "{node}: the node's criu answers: {report}"
        );
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(state.join("manifest.json")).unwrap()).unwrap();
        for f in manifest["files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            assert!(
                tb.node_path(node, f).exists(),
                "{node}: {f} recorded and there"
            );
        }
        assert!(
            tb.node_path(
                node,
                "/etc/kubernetes/credential-providers/bin/checkpointing-credential-provider"
            )
            .exists(),
            "{node}: the provider is installed"
        );
    }

    // What `helm uninstall` runs first: the release's hooks from node-setup.yaml.
    let hooks = helm(&tb, &["get", "hooks", RELEASE, "-n", NAMESPACE]);
    let ours: Vec<&str> = hooks
        .split("\n---")
        .filter(|doc| doc.contains("# Source: checkpointing/templates/node-setup.yaml"))
        .collect();
    assert_eq!(
        ours.len(),
        5,
        "the undo DaemonSet, its waiter Job and its rights: {hooks}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ours.join("\n---\n")).unwrap();
    let manifests = file.path().to_str().unwrap();
    tb.kubectl_ok(&["apply", "-f", manifests]);
    let waited = tb.kubectl(&[
        "wait",
        "-n",
        NAMESPACE,
        "--for=condition=complete",
        &format!("job/{UNDO_WAIT}"),
        "--timeout=300s",
    ]);
    tb.kubectl_ok(&["delete", "-f", manifests, "--wait"]);
    assert!(
        waited.status.success(),
        "the undo finished on every node: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    for (node, before) in nodes.iter().zip(&before) {
        assert_eq!(
            &node_files(&tb, node),
            before,
            "{node}: the node's files are as they were before the setup"
        );
    }
    set_enabled(&tb, false);
}
