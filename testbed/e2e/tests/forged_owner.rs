//! A tenant's pod that copies a migrating Deployment pod's ReplicaSet owner reference and
//! migration label is not the migration's replacement: the webhook restores only the pod the
//! ReplicaSet controller itself creates.

use std::time::Duration;

use checkpointing::crd::{MigrationPhase, PodMigration};
use checkpointing::names::{MIGRATION_LABEL, RESTORE_FROM_ANNOTATION};
use e2e::{
    TestNamespace, Testbed, counter_deployment, counter_log, eventually, grant, migration_outcome,
    migration_request, running_pod, wait_migration, wait_running,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

const MALLORY: &str = "mallory";

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

    // The source stays until this test deletes it: the migration waits in Restoring for its
    // replacement, the window a forger aims at.
    let mut pm = migration_request("move-api", &source_name, Some(target));
    pm.spec.delete_source = Some(false);
    let migrations: Api<PodMigration> = Api::namespaced(client.clone(), ns);
    migrations
        .create(&PostParams::default(), &pm)
        .await
        .unwrap();
    eventually(
        "the migration to restore",
        Duration::from_secs(180),
        || async {
            let pm = migrations.get("move-api").await.ok()?;
            let phase = pm.status.as_ref()?.phase?;
            assert_ne!(phase, MigrationPhase::Failed, "{:?}", pm.status);
            (phase == MigrationPhase::Restoring).then_some(())
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
    // Out of the ReplicaSet's count, so that it makes the real replacement (the ReplicaSet
    // may have deleted it already, as one pod too many).
    match pods
        .delete("forged", &DeleteParams::default().grace_period(0))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(error) => panic!("deleting the forged pod: {error}"),
    }

    pods.delete(&source_name, &DeleteParams::default())
        .await
        .unwrap();
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
