//! Migrations as the tests drive them: a pod of two counters, a PodMigration and its outcome,
//! and the value each container had when its checkpoint froze it.

use std::time::Duration;

use checkpointing::crd::{ContainerCheckpointContent, MigrationPhase, PodCheckpoint, PodMigration};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::{
    Testbed, assert_container_resumes, counter_pod, eventually, value_at_checkpoint, wait_running,
};

/// The seed's counter twice over (`counter`, `counter2`), pinned to `node`.
pub fn two_counter_pod(name: &str, node: &str) -> Pod {
    let mut pod = counter_pod(name, node, 1);
    let spec = pod.spec.as_mut().unwrap();
    let mut second = spec.containers[0].clone();
    second.name = "counter2".to_owned();
    spec.containers.push(second);
    pod
}

/// A workload's pod template: the seed's counter, kept off node3 (the fault tests break it).
pub fn counter_template(app: &str) -> serde_json::Value {
    let mut pod = serde_json::to_value(counter_pod(app, "node1", 1)).unwrap();
    pod["metadata"] = json!({"labels": {"app": app}});
    let spec = pod["spec"].as_object_mut().unwrap();
    spec.remove("nodeSelector");
    spec.insert(
        "affinity".into(),
        json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [
                {"key": "metadata.name", "operator": "NotIn", "values": ["node3"]}
            ]}]
        }}}),
    );
    spec.insert("terminationGracePeriodSeconds".into(), json!(1));
    pod
}

/// Creates Deployment `app` of `replicas` [`counter_template`] pods labelled `app=<app>`.
pub async fn counter_deployment(client: &kube::Client, ns: &str, app: &str, replicas: i32) {
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": app},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": app}},
            "template": counter_template(app),
        },
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap_or_else(|e| panic!("creating Deployment {app}: {e}"));
}

/// The first running pod labelled `selector` in `ns`, once there is one; `what` names it.
pub async fn running_pod(client: &kube::Client, ns: &str, selector: &str, what: &str) -> Pod {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(what, Duration::from_secs(120), || async {
        let list = pods
            .list(&ListParams::default().labels(selector))
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await
}

/// A PodMigration of `pod` to `target` (any other node when `None`).
pub fn migration_request(name: &str, pod: &str, target: Option<&str>) -> PodMigration {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "checkpointing.zacchaeuschok.github.io/v1alpha1",
        "kind": "PodMigration",
        "metadata": {"name": name},
        "spec": {"podName": pod, "targetNode": target},
    }))
    .unwrap()
}

/// Creates the migration and waits until it is final; returns it.
pub async fn migrate(client: &kube::Client, ns: &str, pm: PodMigration) -> PodMigration {
    let api: Api<PodMigration> = Api::namespaced(client.clone(), ns);
    let name = pm.metadata.name.clone().unwrap();
    api.create(&PostParams::default(), &pm)
        .await
        .unwrap_or_else(|e| panic!("creating PodMigration {name}: {e}"));
    wait_migration(client, ns, &name).await
}

/// Phase and message of a finished migration.
pub fn migration_outcome(pm: &PodMigration) -> (MigrationPhase, String) {
    let status = pm
        .status
        .as_ref()
        .expect("a finished migration has a status");
    (
        status.phase.expect("and a phase"),
        status.message.clone().unwrap_or_default(),
    )
}

pub async fn wait_migration(client: &kube::Client, ns: &str, name: &str) -> PodMigration {
    let api: Api<PodMigration> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("PodMigration {ns}/{name} to finish"),
        Duration::from_secs(240),
        || async {
            let pm = api.get(name).await.ok()?;
            pm.status.as_ref()?.phase?.is_final().then_some(pm)
        },
    )
    .await
}

/// Each checkpointed container of PodCheckpoint `name` and the counter value its archive
/// (on the node that took it) says the process had printed last.
pub async fn values_at_checkpoint(
    tb: &Testbed,
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Vec<(String, u64)> {
    let pc = Api::<PodCheckpoint>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), ns);
    let mut values = Vec::new();
    for container in pc.status.unwrap().containers {
        let content = contents.get(&container.container_checkpoint).await.unwrap();
        let path = content.status.unwrap().checkpoint_path.unwrap();
        let value = value_at_checkpoint(tb, &content.spec.node_name, &path);
        values.push((container.name, value));
    }
    values
}

/// The running pods labelled `app=<app>`, once there are `n`.
pub async fn app_pods(client: &kube::Client, ns: &str, app: &str, n: usize) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    eventually(
        &format!("{n} running pods of {app}"),
        Duration::from_secs(120),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&format!("app={app}")))
                .await
                .ok()?;
            let running: Vec<Pod> = list
                .items
                .into_iter()
                .filter(|p| {
                    p.metadata.deletion_timestamp.is_none()
                        && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                })
                .collect();
            (running.len() == n).then_some(running)
        },
    )
    .await
}

pub fn node_of(pod: &Pod) -> String {
    pod.spec.as_ref().unwrap().node_name.clone().unwrap()
}

/// Asserts the migration succeeded into a pod on `target` (any node but the source's when
/// `None`) and every checkpointed container of it counts on from its checkpoint; returns the
/// restored pod.
pub async fn assert_moved(
    tb: &Testbed,
    client: &kube::Client,
    ns: &str,
    pm: &PodMigration,
    target: Option<&str>,
) -> Pod {
    let (phase, message) = migration_outcome(pm);
    assert_eq!(phase, MigrationPhase::Succeeded, "{message}");
    let status = pm.status.as_ref().unwrap();
    assert!(
        status.downtime_milliseconds.is_some_and(|d| d > 0),
        "{status:?}"
    );
    let restored = wait_running(client, ns, status.restored_pod.as_deref().unwrap()).await;
    let landed = node_of(&restored);
    assert_eq!(status.target_node.as_deref(), Some(landed.as_str()));
    match target {
        Some(target) => assert_eq!(landed, target),
        None => assert_ne!(Some(landed.as_str()), status.source_node.as_deref()),
    }
    let checkpoint = status.pod_checkpoint.as_deref().unwrap();
    let values = values_at_checkpoint(tb, client, ns, checkpoint).await;
    assert!(!values.is_empty());
    for (container, value) in values {
        assert_container_resumes(tb, ns, &restored, &container, value).await;
    }
    restored
}
