//! A tenant's pod that copies a migrating Deployment pod's ReplicaSet owner reference and
//! migration label is not the migration's replacement: the webhook restores only the pod the
//! ReplicaSet controller itself creates. Workload pods move only with their source deleted,
//! so the test holds the ReplicaSet's replacement back (a ValidatingAdmissionPolicy bound to
//! its namespace) to keep the migration waiting while the tenant strikes.

use std::time::Duration;

use checkpointing::crd::{MigrationPhase, PodMigration};
use checkpointing::names::{MIGRATION_LABEL, RESTORE_FROM_ANNOTATION};
use e2e::{
    TestNamespace, Testbed, counter_deployment, counter_log, counter_pod, eventually, grant,
    migration_outcome, migration_request, running_pod, wait_migration, wait_running,
};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const MALLORY: &str = "mallory";
const RS_CONTROLLER: &str = "system:serviceaccount:kube-system:replicaset-controller";

#[tokio::test]
async fn a_forged_owner_reference_is_not_restored_but_the_replacement_is() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "forged-owner").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    // Every right in its namespace, as a namespace admin might be given.
    let all = json!([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]);
    grant(&client, ns, "everything", MALLORY, all).await;

    counter_deployment(&client, ns, "api", 1).await;
    let source = running_pod(&client, ns, "app=api", "the Deployment's pod").await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let source_name = source.metadata.name.clone().unwrap();
    let node = source.spec.as_ref().unwrap().node_name.clone().unwrap();
    let target = if node == "node1" { "node2" } else { "node1" };
    counter_log(&tb, ns, &source_name, 2, Duration::from_secs(60)).await;

    // The ReplicaSet controller's pods are refused for now: the migration waits in Restoring
    // for its replacement, the window a forger aims at.
    let hold = Hold::create(&tb, &client, ns).await;
    let migrations: Api<PodMigration> = Api::namespaced(client.clone(), ns);
    migrations
        .create(
            &PostParams::default(),
            &migration_request("move-api", &source_name, Some(target)),
        )
        .await
        .unwrap();
    eventually(
        "the migration to delete its source",
        Duration::from_secs(180),
        || async {
            let pm = migrations.get("move-api").await.ok()?;
            let phase = pm.status.as_ref()?.phase?;
            assert_ne!(phase, MigrationPhase::Failed, "{:?}", pm.status);
            let source = pods.get_opt(&source_name).await.ok()?;
            let gone = source.is_none_or(|p| p.metadata.deletion_timestamp.is_some());
            (phase == MigrationPhase::Restoring && gone).then_some(())
        },
    )
    .await;

    // Mallory's copy of the source: its ReplicaSet as controller, its labels (the template
    // hash too) and the migration's label.
    let mut forged = Pod {
        spec: source.spec.clone(),
        ..Pod::default()
    };
    let spec = forged.spec.as_mut().unwrap();
    spec.node_name = None;
    let image = spec.containers[0].image.clone();
    forged.metadata.name = Some("forged".into());
    forged.metadata.owner_references = source.metadata.owner_references.clone();
    let mut labels = source.metadata.labels.clone().unwrap();
    labels.insert(MIGRATION_LABEL.into(), "move-api".into());
    forged.metadata.labels = Some(labels);
    let mallory = tb.client_as(MALLORY, &["system:authenticated"], &[]).await;
    let created = Api::<Pod>::namespaced(mallory, ns)
        .create(&PostParams::default(), &forged)
        .await
        .unwrap();
    assert_eq!(created.spec.unwrap().containers[0].image, image);
    let annotations = created.metadata.annotations.unwrap_or_default();
    assert!(
        !annotations.contains_key(RESTORE_FROM_ANNOTATION),
        "{annotations:?}"
    );
    // The ReplicaSet's pods admitted again, and the forged one out of its count (it may have
    // deleted it already, as one pod too many): it makes the real replacement.
    hold.release().await;
    match pods
        .delete("forged", &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => panic!("deleting the forged pod: {error}"),
    }
    let pm = wait_migration(&client, ns, "move-api").await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Succeeded, "{message}");
    let restored = pm.status.unwrap().restored_pod.unwrap();
    assert_ne!(restored, "forged");
    let restored = wait_running(&client, ns, &restored).await;
    assert_eq!(
        restored.metadata.owner_references,
        source.metadata.owner_references
    );
    assert_eq!(
        restored.spec.unwrap().node_name.as_deref(),
        Some(target),
        "the migration's target"
    );
}

/// A ValidatingAdmissionPolicy, bound to one namespace, refusing the pods the ReplicaSet
/// controller creates there.
struct Hold {
    name: String,
    client: kube::Client,
    controller: kube::Client,
    ns: String,
}

impl Hold {
    async fn create(tb: &Testbed, client: &kube::Client, ns: &str) -> Self {
        let name = format!("{ns}-hold");
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": [""], "apiVersions": ["v1"],
                    "operations": ["CREATE"], "resources": ["pods"],
                }]},
                "validations": [{
                    "expression": format!("request.userInfo.username != '{RS_CONTROLLER}'"),
                    "message": "held by the forged_owner test",
                }],
            },
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": ns},
                }},
            },
        }))
        .unwrap();
        let params = PostParams::default();
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .create(&params, &policy)
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicyBinding>::all(client.clone())
            .create(&params, &binding)
            .await
            .unwrap();
        let groups = ["system:serviceaccounts", "system:authenticated"];
        let hold = Self {
            name,
            client: client.clone(),
            controller: tb.client_as(RS_CONTROLLER, &groups, &[]).await,
            ns: ns.to_owned(),
        };
        hold.wait(true).await;
        hold
    }

    /// Waits until the API server refuses (or admits) the controller's pods.
    async fn wait(&self, refused: bool) {
        let pods: Api<Pod> = Api::namespaced(self.controller.clone(), &self.ns);
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let probe = counter_pod("probe", "node1", 1);
        eventually(
            "the ReplicaSet controller's pods to be held or let through",
            Duration::from_secs(30),
            || async {
                let held = match pods.create(&params, &probe).await {
                    Ok(_) => false,
                    Err(kube::Error::Api(s)) => s.message.contains("forged_owner"),
                    Err(_) => return None,
                };
                (held == refused).then_some(())
            },
        )
        .await;
    }

    async fn release(self) {
        let params = DeleteParams::default();
        Api::<ValidatingAdmissionPolicyBinding>::all(self.client.clone())
            .delete(&self.name, &params)
            .await
            .unwrap();
        Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
            .delete(&self.name, &params)
            .await
            .unwrap();
        self.wait(false).await;
    }
}
