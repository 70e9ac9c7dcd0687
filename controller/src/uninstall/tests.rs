use checkpointing::testing::FakeApi;
use serde_json::json;

use super::*;

const GROUP: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1";

fn found(kind: Ours, name: &str, deleting: bool) -> Found {
    Found {
        kind,
        namespace: "apps".to_owned(),
        name: name.to_owned(),
        deleting,
    }
}

#[test]
fn requests_and_policies_are_deleted_once_and_contents_only_waited_for() {
    let all = [
        found(Ours::CheckpointPolicy, "nightly", false),
        found(Ours::ContainerCheckpoint, "db-1", true),
        found(Ours::ContainerCheckpoint, "db-2", false),
        found(Ours::ContainerCheckpointContent, "db-1-node1", false),
    ];
    let plan = plan(&all);
    assert_eq!(plan.delete, vec![&all[0], &all[2]]);
    assert_eq!(plan.left.len(), 4);
}

#[test]
fn nothing_listed_is_done() {
    let plan = plan(&[]);
    assert!(plan.delete.is_empty());
    assert!(plan.left.is_empty());
}

#[test]
fn progress_counts_what_is_left_by_kind() {
    let all = [
        found(Ours::ContainerCheckpointContent, "a", true),
        found(Ours::PodMigration, "m", true),
        found(Ours::ContainerCheckpointContent, "b", true),
    ];
    let left: Vec<&Found> = all.iter().collect();
    assert_eq!(
        progress(&left),
        "waiting for 1 PodMigration, 2 ContainerCheckpointContent"
    );
}

#[test]
fn the_timeout_names_every_object_left_and_where_to_look() {
    let all = [found(Ours::ContainerCheckpointContent, "db-1-node1", true)];
    let left: Vec<&Found> = all.iter().collect();
    let text = leftover(&left, Duration::from_secs(240));
    assert!(
        text.starts_with("after 240 s, 1 object(s) of ours are left:"),
        "{text}"
    );
    assert!(
        text.contains("ContainerCheckpointContent apps/db-1-node1 (deleting)"),
        "{text}"
    );
    assert!(text.contains("kubectl get ccc -A"), "{text}");
}

fn listed(api: &FakeApi, plural: &str, items: serde_json::Value) {
    api.put(
        &format!("{GROUP}/{plural}"),
        json!({"apiVersion": "v1", "kind": "List", "metadata": {}, "items": items}),
    );
}

fn item(name: &str, deleting: bool) -> serde_json::Value {
    let mut metadata = json!({"name": name, "namespace": "apps"});
    if deleting {
        metadata["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    }
    json!({"metadata": metadata})
}

fn empty(api: &FakeApi) {
    for plural in [
        "checkpointpolicies",
        "podmigrations",
        "podcheckpoints",
        "containercheckpoints",
        "containercheckpointcontents",
    ] {
        listed(api, plural, json!([]));
    }
}

#[tokio::test]
async fn with_nothing_of_ours_it_only_lists() {
    let api = FakeApi::default();
    empty(&api);
    run(api.client(), Duration::from_secs(5), None)
        .await
        .unwrap();
    let seen = api.take();
    assert_eq!(seen.len(), 5);
    assert!(seen.iter().all(|s| s.method == "GET"), "{seen:?}");
}

#[tokio::test]
async fn kinds_without_their_crd_count_as_empty() {
    let api = FakeApi::default();
    run(api.client(), Duration::from_secs(5), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn it_deletes_what_is_not_deleting_yet_and_fails_on_time_naming_the_contents_left() {
    let api = FakeApi::default();
    empty(&api);
    listed(&api, "podmigrations", json!([item("move-db", false)]));
    listed(&api, "containercheckpoints", json!([item("db-1", true)]));
    listed(
        &api,
        "containercheckpointcontents",
        json!([item("db-1-node1", true)]),
    );
    let error = run(api.client(), Duration::ZERO, None).await.unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("ContainerCheckpointContent apps/db-1-node1"),
        "{text}"
    );
    assert!(text.contains("kubectl get ccc -A"), "{text}");
    let deletes: Vec<String> = api
        .take()
        .into_iter()
        .filter(|s| s.method == "DELETE")
        .map(|s| s.uri)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(
        deletes[0].starts_with(&format!("{GROUP}/namespaces/apps/podmigrations/move-db")),
        "{deletes:?}"
    );
}

#[tokio::test]
async fn a_refused_delete_is_an_error_naming_the_object() {
    let api = FakeApi::default();
    empty(&api);
    listed(&api, "checkpointpolicies", json!([item("nightly", false)]));
    api.fail_writes(
        &format!("{GROUP}/namespaces/apps/checkpointpolicies/nightly"),
        403,
        "Forbidden",
    );
    let error = run(api.client(), Duration::from_secs(5), None)
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("deleting CheckpointPolicy apps/nightly"),
        "{text}"
    );
    assert!(text.contains("403"), "{text}");
}

const NODED: &str = "/apis/apps/v1/namespaces/kube-system/daemonsets/noded";

fn node_daemon() -> NodeDaemon {
    "kube-system/noded".parse().unwrap()
}

#[test]
fn the_node_daemon_is_named_namespace_slash_name() {
    assert_eq!(
        node_daemon(),
        NodeDaemon {
            namespace: "kube-system".into(),
            name: "noded".into()
        }
    );
    for bad in ["noded", "/noded", "kube-system/", "a/b/c"] {
        let error = bad.parse::<NodeDaemon>().unwrap_err();
        assert!(error.contains("NAMESPACE/NAME"), "{error}");
    }
}

#[tokio::test]
async fn once_no_checkpoint_is_left_the_node_daemons_go_first_and_are_waited_for() {
    let api = FakeApi::default();
    empty(&api);
    api.put(
        NODED,
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
               "metadata": {"name": "noded", "namespace": "kube-system"}}),
    );
    // Still there when time is up: the error names it and where to look.
    let error = run(api.client(), Duration::ZERO, Some(&node_daemon()))
        .await
        .unwrap_err();
    let text = format!("{error:#}");
    assert!(
        text.contains("DaemonSet kube-system/noded still waits for its pods"),
        "{text}"
    );
    let seen = api.take();
    let delete = seen.iter().find(|s| s.method == "DELETE").expect("deleted");
    assert!(delete.uri.starts_with(NODED), "{delete:?}");
    // Its pods first: the DaemonSet stays until they are gone.
    assert_eq!(
        delete.body.as_ref().unwrap()["propagationPolicy"],
        "Foreground"
    );
}

#[tokio::test]
async fn a_node_daemon_already_gone_is_done() {
    let api = FakeApi::default();
    empty(&api);
    api.fail_writes(NODED, 404, "NotFound");
    run(api.client(), Duration::from_secs(5), Some(&node_daemon()))
        .await
        .unwrap();
}
