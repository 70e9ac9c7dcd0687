//! Nothing in deploy/ grants more than this table: every rule of every Role and ClusterRole,
//! and who they are bound to. A grant added to the manifests fails this test until it is added
//! here with the e2e test that fails without it; each row names that test.

use std::collections::BTreeSet;

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding, Subject};
use serde_json::Value;

/// `role verb group/resource[/names]`, with the test that needs the grant.
const GRANTS: &[(&str, &str)] = &[
    // controller: requests
    (
        "checkpoint-controller get checkpointing.zacchaeuschok.github.io/containercheckpoints",
        "checkpoint::*",
    ),
    (
        "checkpoint-controller list checkpointing.zacchaeuschok.github.io/containercheckpoints",
        "checkpoint::*",
    ),
    (
        "checkpoint-controller watch checkpointing.zacchaeuschok.github.io/containercheckpoints",
        "checkpoint::*",
    ),
    (
        "checkpoint-controller delete checkpointing.zacchaeuschok.github.io/containercheckpoints",
        "retention::keeps_the_newest_three_and_the_pinned_one",
    ),
    (
        "checkpoint-controller create checkpointing.zacchaeuschok.github.io/containercheckpoints",
        "migration::* (a PodCheckpoint's per-container requests)",
    ),
    (
        "checkpoint-controller patch checkpointing.zacchaeuschok.github.io/containercheckpoints",
        "migration::* (server-side apply of them)",
    ),
    // controller: pod-level requests
    (
        "checkpoint-controller get checkpointing.zacchaeuschok.github.io/podcheckpoints",
        "migration::*",
    ),
    (
        "checkpoint-controller list checkpointing.zacchaeuschok.github.io/podcheckpoints",
        "migration::*",
    ),
    (
        "checkpoint-controller watch checkpointing.zacchaeuschok.github.io/podcheckpoints",
        "migration::*",
    ),
    (
        "checkpoint-controller create checkpointing.zacchaeuschok.github.io/podcheckpoints",
        "migration::* (a PodMigration's PodCheckpoint); policy::* (a policy's scheduled ones)",
    ),
    (
        "checkpoint-controller patch checkpointing.zacchaeuschok.github.io/podcheckpoints",
        "migration::*",
    ),
    (
        "checkpoint-controller patch checkpointing.zacchaeuschok.github.io/podcheckpoints/status",
        "migration::*",
    ),
    (
        "checkpoint-controller delete checkpointing.zacchaeuschok.github.io/podcheckpoints",
        "policy::a_policy_checkpoints_its_pods_on_schedule_and_keeps_the_newest_two (retention)",
    ),
    (
        "checkpoint-controller list checkpointing.zacchaeuschok.github.io/checkpointpolicies",
        "policy::*",
    ),
    (
        "checkpoint-controller watch checkpointing.zacchaeuschok.github.io/checkpointpolicies",
        "policy::*",
    ),
    (
        "checkpoint-controller patch checkpointing.zacchaeuschok.github.io/checkpointpolicies/status",
        "policy::a_policy_checkpoints_its_pods_on_schedule_and_keeps_the_newest_two",
    ),
    (
        "checkpoint-controller get checkpointing.zacchaeuschok.github.io/podmigrations",
        "migration::*",
    ),
    (
        "checkpoint-controller list checkpointing.zacchaeuschok.github.io/podmigrations",
        "migration::a_statefulset_pod_moves_under_its_name_and_owner (the webhook finds the migration)",
    ),
    (
        "checkpoint-controller watch checkpointing.zacchaeuschok.github.io/podmigrations",
        "migration::*",
    ),
    (
        "checkpoint-controller patch checkpointing.zacchaeuschok.github.io/podmigrations/status",
        "migration::*",
    ),
    (
        "checkpoint-controller list /pods",
        "migration::* (the restored pods, by label); policy::* (the pods a policy selects)",
    ),
    (
        "checkpoint-controller watch /pods",
        "migration::*; policy::*",
    ),
    (
        "checkpoint-controller create /pods",
        "migration::a_two_container_pod_moves_with_both_counters_and_reports_its_downtime (a bare pod's copy)",
    ),
    (
        "checkpoint-controller delete /pods",
        "migration::a_statefulset_pod_moves_under_its_name_and_owner (the source)",
    ),
    (
        "checkpoint-controller patch checkpointing.zacchaeuschok.github.io/containercheckpoints/status",
        "checkpoint::*",
    ),
    (
        "checkpoint-controller update checkpointing.zacchaeuschok.github.io/containercheckpoints/finalizers",
        "checkpoint::* (owner references under OwnerReferencesPermissionEnforcement)",
    ),
    (
        "checkpoint-controller get checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "checkpoint::*",
    ),
    (
        "checkpoint-controller list checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "checkpoint::*",
    ),
    (
        "checkpoint-controller watch checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "checkpoint::*",
    ),
    (
        "checkpoint-controller create checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "checkpoint::*",
    ),
    (
        "checkpoint-controller patch checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "faults::a_node_without_its_daemon_is_refused_and_lets_go_of_its_checkpoints",
    ),
    ("checkpoint-controller get /pods", "checkpoint::*"),
    (
        "checkpoint-controller get apps/replicasets",
        "forged_owner::a_forged_owner_reference_is_not_restored_but_the_replacement_is",
    ),
    (
        "checkpoint-controller get apps/statefulsets",
        "migration::* (a StatefulSet's replacement is restored)",
    ),
    (
        "checkpoint-controller create events.k8s.io/events",
        "checkpoint::* (Events)",
    ),
    (
        "checkpoint-controller patch events.k8s.io/events",
        "checkpoint::* (Events)",
    ),
    (
        "checkpoint-controller create authorization.k8s.io/subjectaccessreviews",
        "restore::bad_restores_are_denied_with_their_reason",
    ),
    (
        "checkpoint-controller patch admissionregistration.k8s.io/mutatingwebhookconfigurations/checkpointing-restore",
        "admission::the_controller_may_patch_only_its_own_webhook_registration",
    ),
    (
        "checkpoint-controller-leases list coordination.k8s.io/leases",
        "faults::a_node_without_its_daemon_is_refused_and_lets_go_of_its_checkpoints",
    ),
    (
        "checkpoint-controller-leases watch coordination.k8s.io/leases",
        "faults::a_node_without_its_daemon_is_refused_and_lets_go_of_its_checkpoints",
    ),
    (
        "checkpoint-controller-leader create coordination.k8s.io/leases",
        "failover::a_checkpoint_completes_after_the_leader_is_killed",
    ),
    (
        "checkpoint-controller-leader get coordination.k8s.io/leases/checkpoint-controller",
        "failover::a_checkpoint_completes_after_the_leader_is_killed",
    ),
    (
        "checkpoint-controller-leader update coordination.k8s.io/leases/checkpoint-controller",
        "failover::a_checkpoint_completes_after_the_leader_is_killed",
    ),
    (
        "checkpoint-controller get /secrets",
        "registries::a_checkpoint_pushed_to_a_token_registry_restores_on_another_node_from_it (reading the request's Secret to copy it)",
    ),
    (
        "checkpoint-controller-credentials create /secrets",
        "registries::a_checkpoint_pushed_to_a_token_registry_restores_on_another_node_from_it (the copy noded reads)",
    ),
    (
        "checkpoint-controller create checkpointing.zacchaeuschok.github.io/podmigrations",
        "drain::a_drain_migrates_the_pods_a_policy_protects_and_evicts_the_others",
    ),
    (
        "checkpoint-controller list policy/poddisruptionbudgets",
        "drain::a_drain_waits_for_a_budget_that_allows_no_disruption",
    ),
    (
        "checkpoint-controller get /nodes",
        "drain::a_drain_migrates_the_pods_a_policy_protects_and_evicts_the_others (its StatefulSet pod)",
    ),
    (
        "checkpoint-controller list /nodes",
        "node_loss::a_lost_nodes_protected_pod_comes_back_elsewhere_from_its_registry_checkpoint",
    ),
    (
        "checkpoint-controller watch /nodes",
        "node_loss::a_lost_nodes_protected_pod_comes_back_elsewhere_from_its_registry_checkpoint",
    ),
    (
        "checkpoint-controller-credentials list /secrets",
        "secrets::a_credentials_copy_no_content_names_is_swept",
    ),
    (
        "checkpoint-controller-credentials delete /secrets",
        "secrets::a_credentials_copy_no_content_names_is_swept",
    ),
    (
        "checkpoint-controller-leader create /secrets",
        "failover::a_checkpoint_completes_after_the_leader_is_killed (the webhook certificate both replicas share)",
    ),
    (
        "checkpoint-controller-leader get /secrets/checkpoint-controller-webhook-tls",
        "failover::a_checkpoint_completes_after_the_leader_is_killed",
    ),
    (
        "checkpoint-controller-leader update /secrets/checkpoint-controller-webhook-tls",
        "failover::a_checkpoint_completes_after_the_leader_is_killed",
    ),
    // noded
    (
        "checkpoint-noded get checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "restore::seed_migration_resumes_the_counter_on_node2",
    ),
    (
        "checkpoint-noded list checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "checkpoint::*",
    ),
    (
        "checkpoint-noded watch checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "checkpoint::*",
    ),
    (
        "checkpoint-noded patch checkpointing.zacchaeuschok.github.io/containercheckpointcontents",
        "checkpoint::* (its finalizer)",
    ),
    (
        "checkpoint-noded patch checkpointing.zacchaeuschok.github.io/containercheckpointcontents/status",
        "checkpoint::*",
    ),
    (
        "checkpoint-noded get /nodes",
        "restore::seed_migration_resumes_the_counter_on_node2",
    ),
    (
        "checkpoint-noded patch /nodes",
        "tenancy::a_node_daemon_taken_over_changes_no_node_but_the_runtime_labels_of_its_own",
    ),
    (
        "checkpoint-noded get /pods",
        "restore::the_node_local_registry_answers_only_pulls_for_admitted_pods",
    ),
    (
        "checkpoint-noded list /pods",
        "registries::a_checkpoint_pushed_to_a_token_registry_restores_on_another_node_from_it (this node's pods: the base image of a restore from a registry); peers::a_nodes_peer_token_fetches_only_what_a_pod_on_that_node_restores (a peer's node's pods)",
    ),
    (
        "checkpoint-noded watch /pods",
        "registries::a_checkpoint_pushed_to_a_token_registry_restores_on_another_node_from_it",
    ),
    (
        "checkpoint-noded create events.k8s.io/events",
        "registries::a_pushed_copy_the_registry_refuses_to_delete_is_reported_in_an_event; restore::the_node_local_registry_answers_only_pulls_for_admitted_pods (a refused pull, on the pod)",
    ),
    (
        "checkpoint-noded patch events.k8s.io/events",
        "none yet: a refusal repeated after a minute (the kubelet's backoff) patches its Event's series",
    ),
    (
        "checkpoint-noded create authentication.k8s.io/tokenreviews",
        "restore::peers_refuse_strangers_and_reject_tampered_blobs",
    ),
    (
        "checkpoint-noded-credentials get /secrets",
        "registries::a_checkpoint_pushed_to_a_token_registry_restores_on_another_node_from_it (the controller's copy of the request's registry credentials)",
    ),
    (
        "checkpoint-noded-credentials delete /secrets",
        "registries::a_pushed_copy_the_registry_refuses_to_delete_is_reported_in_an_event (the credentials copy goes with its Content)",
    ),
    (
        "checkpoint-noded-leases get coordination.k8s.io/leases",
        "restore::seed_migration_resumes_the_counter_on_node2 (a peer's certificate)",
    ),
    (
        "checkpoint-noded-leases create coordination.k8s.io/leases",
        "faults::a_node_without_its_daemon_is_refused_and_lets_go_of_its_checkpoints",
    ),
    (
        "checkpoint-noded-leases patch coordination.k8s.io/leases",
        "faults::a_node_without_its_daemon_is_refused_and_lets_go_of_its_checkpoints",
    ),
    // kubelets
    (
        "checkpointing-registry-audience request-serviceaccounts-token-audience /checkpointing.zacchaeuschok.github.io/registry",
        "restore::seed_migration_resumes_the_counter_on_node2 (the kubelet's pull credential)",
    ),
];

/// `binding -> role: subjects`, the only bindings deploy/ may have.
const BINDINGS: &[&str] = &[
    "checkpoint-controller -> checkpoint-controller: ServiceAccount external-checkpointer-system/checkpoint-controller",
    "checkpoint-controller-leases -> checkpoint-controller-leases: ServiceAccount external-checkpointer-system/checkpoint-controller",
    "checkpoint-controller-leader -> checkpoint-controller-leader: ServiceAccount external-checkpointer-system/checkpoint-controller",
    "checkpoint-controller-credentials -> checkpoint-controller-credentials: ServiceAccount external-checkpointer-system/checkpoint-controller",
    "checkpoint-noded -> checkpoint-noded: ServiceAccount kube-system/checkpoint-noded",
    "checkpoint-noded-leases -> checkpoint-noded-leases: ServiceAccount kube-system/checkpoint-noded",
    "checkpoint-noded-credentials -> checkpoint-noded-credentials: ServiceAccount kube-system/checkpoint-noded",
    "checkpointing-registry-audience -> checkpointing-registry-audience: Group system:nodes",
];

/// Every object of deploy/base.
fn objects() -> Vec<Value> {
    let base = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base");
    let mut all = Vec::new();
    for entry in std::fs::read_dir(base).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            all.extend(docs.into_iter().filter(|d| !d.is_null()));
        }
    }
    all
}

fn of_kind<T: k8s_openapi::serde::de::DeserializeOwned>(objects: &[Value], kind: &str) -> Vec<T> {
    objects
        .iter()
        .filter(|o| o["kind"] == kind)
        .map(|o| serde_json::from_value(o.clone()).unwrap())
        .collect()
}

#[test]
fn deploy_grants_nothing_beyond_its_table() {
    let objects = objects();
    let mut rules = Vec::new();
    for role in of_kind::<ClusterRole>(&objects, "ClusterRole") {
        rules.push((role.metadata.name.unwrap(), role.rules.unwrap_or_default()));
    }
    for role in of_kind::<Role>(&objects, "Role") {
        rules.push((role.metadata.name.unwrap(), role.rules.unwrap_or_default()));
    }
    let mut granted = BTreeSet::new();
    for (role, rules) in rules {
        for rule in rules {
            let names = rule.resource_names.unwrap_or_default();
            let names = if names.is_empty() {
                vec![None]
            } else {
                names.into_iter().map(Some).collect()
            };
            for group in rule.api_groups.unwrap_or_default() {
                for resource in rule.resources.iter().flatten() {
                    for verb in &rule.verbs {
                        for name in &names {
                            let name = name.as_ref().map(|n| format!("/{n}")).unwrap_or_default();
                            granted.insert(format!("{role} {verb} {group}/{resource}{name}"));
                        }
                    }
                }
            }
        }
    }
    let expected: BTreeSet<String> = GRANTS.iter().map(|(g, _)| (*g).to_owned()).collect();
    let wider: Vec<_> = granted.difference(&expected).collect();
    let unused: Vec<_> = expected.difference(&granted).collect();
    assert!(
        wider.is_empty(),
        "deploy/ grants what no test justifies: {wider:#?}"
    );
    assert!(
        unused.is_empty(),
        "the table lists grants deploy/ no longer has: {unused:#?}"
    );

    let describe = |name: Option<String>, role: String, subjects: Option<Vec<Subject>>| {
        let subjects: Vec<String> = subjects
            .unwrap_or_default()
            .iter()
            .map(|s| match &s.namespace {
                Some(ns) => format!("{} {ns}/{}", s.kind, s.name),
                None => format!("{} {}", s.kind, s.name),
            })
            .collect();
        format!(
            "{} -> {role}: {}",
            name.unwrap_or_default(),
            subjects.join(", ")
        )
    };
    let mut bound = BTreeSet::new();
    for b in of_kind::<ClusterRoleBinding>(&objects, "ClusterRoleBinding") {
        bound.insert(describe(b.metadata.name, b.role_ref.name, b.subjects));
    }
    for b in of_kind::<RoleBinding>(&objects, "RoleBinding") {
        bound.insert(describe(b.metadata.name, b.role_ref.name, b.subjects));
    }
    let expected: BTreeSet<String> = BINDINGS.iter().map(|b| (*b).to_owned()).collect();
    assert_eq!(
        bound, expected,
        "deploy/ binds roles to others than the table says"
    );
}
