//! Retention: the testbed's controller keeps the newest 3 completed checkpoints per container
//! (`--retain-newest 3`, see testbed/up); pinned ones are kept besides, and the rest go with
//! their files through the normal deletion path.

use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use checkpointing::names::PINNED_ANNOTATION;
use e2e::{
    TestNamespace, Testbed, checkpoint, checkpoint_request, counter_pod, eventually, outcome,
    run_pod,
};
use kube::api::Api;

#[tokio::test]
async fn keeps_the_newest_three_and_the_pinned_one() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "retention").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", "node2", 1)).await;

    let mut pinned = checkpoint_request("pinned", "app", "counter");
    pinned.metadata.annotations = Some([(PINNED_ANNOTATION.to_owned(), "true".to_owned())].into());
    let mut paths = Vec::new();
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    for cc in [pinned]
        .into_iter()
        .chain((1..=4).map(|i| checkpoint_request(&format!("ck{i}"), "app", "counter")))
    {
        let name = cc.metadata.name.clone().unwrap();
        let done = checkpoint(&client, &ns.name, cc).await;
        assert_eq!(
            outcome(&done).0,
            CheckpointState::Completed,
            "{name}: {}",
            outcome(&done).1
        );
        let path = contents
            .get(&name)
            .await
            .unwrap()
            .status
            .unwrap()
            .checkpoint_path
            .unwrap();
        paths.push((name, tb.node_path("node2", &path)));
        // Distinct checkpoint times order them.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    let left = eventually(
        "retention to delete the oldest unpinned checkpoint",
        Duration::from_secs(60),
        || async {
            let mut names: Vec<String> = requests
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter_map(|c| c.metadata.name)
                .collect();
            names.sort();
            (names.len() == 4).then_some(names)
        },
    )
    .await;
    assert_eq!(left, ["ck2", "ck3", "ck4", "pinned"]);
    eventually(
        "ck1's archive to be removed",
        Duration::from_secs(60),
        || async { (!paths[1].1.exists()).then_some(()) },
    )
    .await;
    for (name, path) in &paths {
        assert_eq!(path.exists(), name != "ck1", "{name}: {}", path.display());
    }
}
