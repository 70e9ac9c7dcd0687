//! What a human must do about a failing check, a node without a node daemon, or a trial step
//! that failed: one line each, naming the file or setting. Pure.

use super::state::State;

/// CRI names of the runtimes noded knows (their profiles live on the node side).
const CRIO: &str = "cri-o";
const CONTAINERD: &str = "containerd";

/// The one thing to do about check `check` of a node running `runtime` (its CRI name) in
/// `state`; `None` when the check is met.
pub fn advice(check: &str, state: State, runtime: Option<&str>) -> Option<String> {
    if state.met() {
        return None;
    }
    let text = match (check, runtime) {
        ("cri", _) => format!(
            "noded gets no ready runtime over CRI: check that {} runs on the node and that the \
             DaemonSet mounts its socket (chart values noded.cri.endpoint and noded.cri.hostDir; \
             CRI-O nodes: -f deploy/crio/values.yaml)",
            runtime.unwrap_or("the container runtime")
        ),
        ("criu", Some(CRIO)) => "install CRIU (4.x) on the node and turn on CRI-O's CRIU support: \
             [crio.runtime] enable_criu_support = true (deploy/crio/10-checkpoint-restore.conf \
             in /etc/crio/crio.conf.d/), then restart CRI-O"
            .into(),
        ("criu", _) => "install CRIU (4.x) on the node, on the PATH the runtime's runc runs \
             with (e.g. /usr/local/sbin/criu): containerd's runc runs the node's criu"
            .into(),
        ("restore", Some(CRIO)) => {
            "turn on restore in CRI-O: deploy/crio/10-checkpoint-restore.conf \
             in /etc/crio/crio.conf.d/ (enable_criu_support = true, and on newer releases \
             [crio.checkpoint_restore] container_level_enabled = \"checkpoint_restore\"), then \
             restart CRI-O"
                .into()
        }
        ("restore", Some(CONTAINERD)) => "run containerd 2.1–2.3 (2.4 no longer restores \
             through CreateContainer) and merge deploy/containerd/config.toml into \
             /etc/containerd/config.toml (2.2.7+/2.3.4+: enable_experimental_restore_via_create), \
             then restart containerd"
            .into(),
        ("restore", _) => "run CRI-O or containerd 2.1–2.3 with checkpoint/restore turned on: \
             noded knows no other runtime"
            .into(),
        ("checkpoint_dir", _) => "noded cannot write its checkpoint directory on the node: check \
             the node's disk (full? read-only?) and the DaemonSet's hostPath for it"
            .into(),
        ("pod_level", _) => "optional: a runtime serving CRI CheckpointPod and RestorePod \
             (Kubernetes 1.37) takes a whole pod at once; until then pods go container by \
             container"
            .into(),
        ("tcp_close", _) => "install deploy/node/criu-runc.conf as /etc/criu/runc.conf on the \
             node (install -D -m 644 deploy/node/criu-runc.conf /etc/criu/runc.conf): its \
             tcp-close lets containers with TCP connections be checkpointed"
            .into(),
        (other, _) => format!("see the {other} check's detail"),
    };
    Some(text)
}

/// Whether a failing `check` keeps a node from checkpointing or restoring (`pod_level` and
/// `tcp_close` are reported, not required; a failing `restore` is made up for by a runtime that
/// serves the pod-level `RestorePod`).
pub fn required(check: &str, pod_level_ok: bool) -> bool {
    match check {
        "pod_level" | "tcp_close" => false,
        "restore" => !pod_level_ok,
        _ => true,
    }
}

/// What to do about a node whose noded does not run: `expired_for` seconds since its Lease
/// expired, or `None` without a Lease; `taints` as `key=value:Effect`.
pub fn no_daemon(
    node: &str,
    expired_for: Option<i64>,
    taints: &[String],
    lease_namespace: &str,
) -> String {
    let placement = if taints.is_empty() {
        "if it should run here, check the DaemonSet's nodeSelector and affinity (chart value \
         noded.nodeSelector)"
            .to_owned()
    } else {
        format!(
            "if it should run here, give the DaemonSet tolerations for the node's taints {} \
             (chart value noded.tolerations) and check its nodeSelector (noded.nodeSelector)",
            taints.join(", ")
        )
    };
    match expired_for {
        Some(_) => format!(
            "its noded stopped renewing its Lease (crashed, evicted or removed): see `kubectl \
             get pods -A -o wide --field-selector spec.nodeName={node}`; {placement}"
        ),
        None => format!(
            "{placement}; if noded runs but its Leases are elsewhere, pass --lease-namespace \
             (Helm: <release>-node-leases, not {lease_namespace})"
        ),
    }
}

/// What a restored pod that will not start (`why`, as [`crate::restore::progress`] says)
/// asks of a human, when its words tell.
pub fn stuck_restore(why: &str) -> Option<&'static str> {
    let why = why.to_ascii_lowercase();
    if why.contains("http response to https client") {
        Some(
            "the runtime pulls the node-local registry over HTTPS: install \
             deploy/crio/registries.conf (CRI-O) or deploy/containerd/config.toml's registry \
             config_path (containerd) on the node",
        )
    } else if why.contains("pull") || why.contains("unauthorized") || why.contains("credentials") {
        Some(
            "the kubelet could not pull the checkpoint image from the node-local registry: \
             install its image credential provider (deploy/kubelet/credential-provider.yaml and \
             the checkpointing-credential-provider binary; kubelet flags \
             --image-credential-provider-config and --image-credential-provider-bin-dir; \
             Kubernetes 1.34 or later), and let the nodes reach each other's noded peer port \
             (chart value noded.peerPort, 5051)",
        )
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_met_check_needs_nothing() {
        for state in [State::Ok, State::Assumed] {
            assert_eq!(advice("criu", state, Some(CRIO)), None);
        }
    }

    #[test]
    fn criu_and_restore_advice_names_each_runtimes_setting() {
        let crio = advice("criu", State::Failed, Some(CRIO)).unwrap();
        assert!(crio.contains("enable_criu_support = true"), "{crio}");
        let containerd = advice("criu", State::Failed, Some(CONTAINERD)).unwrap();
        assert!(containerd.contains("PATH"), "{containerd}");
        assert!(!containerd.contains("enable_criu_support"), "{containerd}");
        let restore = advice("restore", State::Failed, Some(CONTAINERD)).unwrap();
        assert!(
            restore.contains("deploy/containerd/config.toml"),
            "{restore}"
        );
        let restore = advice("restore", State::Failed, Some(CRIO)).unwrap();
        assert!(restore.contains("10-checkpoint-restore.conf"), "{restore}");
        let unknown = advice("restore", State::Unknown, None).unwrap();
        assert!(
            unknown.contains("noded knows no other runtime"),
            "{unknown}"
        );
    }

    #[test]
    fn node_settings_advice_names_the_file() {
        let tcp = advice("tcp_close", State::Failed, Some(CRIO)).unwrap();
        assert!(tcp.contains("/etc/criu/runc.conf"), "{tcp}");
        let cri = advice("cri", State::Failed, Some(CONTAINERD)).unwrap();
        assert!(
            cri.contains("containerd runs") && cri.contains("noded.cri.endpoint"),
            "{cri}"
        );
        let cri = advice("cri", State::Failed, None).unwrap();
        assert!(cri.contains("the container runtime runs"), "{cri}");
        assert!(advice("checkpoint_dir", State::Failed, None).is_some());
        assert!(
            advice("pod_level", State::Failed, None)
                .unwrap()
                .starts_with("optional")
        );
        assert_eq!(
            advice("new_check", State::Failed, None).unwrap(),
            "see the new_check check's detail"
        );
    }

    #[test]
    fn only_the_checks_that_stop_checkpoints_or_restores_are_required() {
        for check in ["cri", "criu", "checkpoint_dir", "restore"] {
            assert!(required(check, false), "{check}");
        }
        assert!(!required("restore", true), "RestorePod makes up for it");
        assert!(!required("tcp_close", false));
        assert!(!required("pod_level", false));
    }

    #[test]
    fn a_node_without_noded_is_told_where_to_look() {
        let tainted = no_daemon("n1", None, &["gpu=yes:NoSchedule".into()], "leases");
        assert!(tainted.contains("tolerations") && tainted.contains("gpu=yes:NoSchedule"));
        assert!(tainted.contains("--lease-namespace") && tainted.contains("not leases"));
        let untainted = no_daemon("n1", None, &[], "leases");
        assert!(!untainted.contains("tolerations") && untainted.contains("nodeSelector"));
        let expired = no_daemon("n1", Some(90), &[], "leases");
        assert!(expired.contains("stopped renewing") && expired.contains("spec.nodeName=n1"));
        assert!(!expired.contains("--lease-namespace"), "{expired}");
    }

    #[test]
    fn a_stuck_restore_names_the_credential_provider_or_the_registry_config() {
        let pull =
            stuck_restore("Pending: ErrImagePull: failed to pull localhost:5050/x: 401").unwrap();
        assert!(
            pull.contains("--image-credential-provider-config"),
            "{pull}"
        );
        let https =
            stuck_restore("Pending: ErrImagePull: http: server gave HTTP response to HTTPS client")
                .unwrap();
        assert!(https.contains("registries.conf"), "{https}");
        assert_eq!(stuck_restore("Failed: OOMKilled"), None);
    }
}
