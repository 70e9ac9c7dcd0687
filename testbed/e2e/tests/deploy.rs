//! The manifests in deploy/ are valid for the API server: `kubectl apply --dry-run=server` of
//! them (one variant for every runtime: noded finds the node's socket) succeeds, without
//! kustomize deprecation warnings, and yields the seed's object names.

use e2e::Testbed;

#[test]
fn deploy_passes_a_server_side_dry_run() {
    let tb = Testbed::get();
    // Namespaced objects need their namespace to exist, even for a dry run.
    let ns = tb.kubectl(&["create", "namespace", "external-checkpointer-system"]);
    let variant = "deploy/";
    let out = tb.kubectl(&["apply", "--dry-run=server", "-k", variant]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{variant}: {stderr}");
    // kustomize v5 warns about fields it will drop (`bases`, `patchesStrategicMerge`, ...).
    assert!(
        !stderr.contains("deprecated"),
        "{variant} uses deprecated kustomization fields: {stderr}"
    );
    for object in [
        "deployment.apps/external-checkpointer-controller-manager",
        "daemonset.apps/container-checkpoint-sidecar",
        "clusterrole.rbac.authorization.k8s.io/checkpoint-noded",
        "customresourcedefinition.apiextensions.k8s.io/containercheckpoints.checkpointing.zacchaeuschok.github.io",
    ] {
        assert!(
            stdout.contains(object),
            "{variant} yields {object}: {stdout}"
        );
    }
    if ns.status.success() {
        tb.kubectl_ok(&[
            "delete",
            "namespace",
            "external-checkpointer-system",
            "--wait=false",
        ]);
    }
}
