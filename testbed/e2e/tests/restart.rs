//! What a restart of a restored container means: the kubelet makes the container again from
//! the same checkpoint image, so it resumes from the checkpoint again, on either runtime (its
//! state since the restore is gone, as a virtual machine reverted to its snapshot). The README
//! says so under "Restarts".

use std::time::Duration;

use checkpointing::crd::CheckpointState;
use checkpointing::names::RESTORE_FROM_ANNOTATION;
use e2e::{
    TestNamespace, Testbed, assert_counter_resumes, checkpoint, checkpoint_request,
    counter_at_checkpoint, counter_log, counter_pod, counter_values, eventually, outcome, run_pod,
};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// The restart count of the pod's only container, and whether it runs.
fn restarts(pod: &Pod) -> Option<(i32, bool)> {
    let status = pod.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let running = status.state.as_ref()?.running.is_some();
    Some((status.restart_count, running))
}

#[tokio::test]
async fn a_restored_container_that_restarts_resumes_from_its_checkpoint_again() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "restart").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("counter", "node1", 1)).await;
    counter_log(&tb, &ns.name, "counter", 3, Duration::from_secs(60)).await;
    let cc = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("cp", "counter", "counter"),
    )
    .await;
    let (state, message) = outcome(&cc);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    let at_checkpoint = counter_at_checkpoint(&tb, &client, &ns.name, "cp", "node1").await;

    let mut restored = counter_pod("restored", "node2", 1);
    restored.metadata.annotations = Some([(RESTORE_FROM_ANNOTATION.into(), "cp".into())].into());
    let running = run_pod(&client, &ns.name, restored).await;
    assert_counter_resumes(&tb, &ns.name, &running, at_checkpoint).await;
    // It counts on past the checkpoint before it stops.
    let past = at_checkpoint + 3;
    eventually(
        &format!("the restored counter to pass {past}"),
        Duration::from_secs(60),
        || async {
            let log = tb.kubectl(&["logs", "-n", &ns.name, "restored"]);
            let values = counter_values(&String::from_utf8_lossy(&log.stdout));
            values.iter().any(|&v| v >= past).then_some(())
        },
    )
    .await;

    let id = String::from_utf8_lossy(
        &tb.node_exec(
            "node2",
            &[
                "crictl",
                "ps",
                "-q",
                "--name",
                "counter",
                "--label",
                &format!("io.kubernetes.pod.namespace={}", ns.name),
            ],
        )
        .stdout,
    )
    .trim()
    .to_owned();
    assert!(!id.is_empty(), "the restored container runs on node2");
    let stopped = tb.node_exec("node2", &["crictl", "stop", &id]);
    assert!(
        stopped.status.success(),
        "{}",
        String::from_utf8_lossy(&stopped.stderr)
    );

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let again = eventually(
        "the kubelet to start the restored container again",
        Duration::from_secs(120),
        || async {
            let pod = pods.get("restored").await.ok()?;
            (restarts(&pod)? == (1, true)).then_some(pod)
        },
    )
    .await;
    // From the checkpoint again: its next value is the checkpoint's next, not 0 and not where
    // the first restore had got to.
    assert_counter_resumes(&tb, &ns.name, &again, at_checkpoint).await;
}
