//! A tenant shaping its own emptyDir for the node that will place it (noded, as root, writes
//! the volume into the restored pod's directory): a setuid-root copy of busybox, a hard link,
//! links that stay inside, and, in a second pod, links out of the volume to the node's files.
//! The first arrives with no setuid bit, the hard link as a file of its own and the inner
//! links as links; the second's migration fails naming the link, and its source keeps running
//! on its node.

use std::time::Duration;

use checkpointing::crd::MigrationPhase;
use e2e::{
    TestNamespace, Testbed, counter_log, eventually, migrate, migration_outcome, migration_request,
    run_pod, running_pod, volume_pod,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

/// A root pod on node1, labelled `app=<name>`, that runs `setup` in its emptyDir `/data` and
/// then counts.
fn shaping_pod(name: &str, setup: &str) -> Pod {
    let script = format!(
        "set -e\ncd /data\n{setup}\ncounter=0\nwhile true; do\n  echo \"Counter: $counter\"\n  \
         counter=$((counter+1))\n  sleep 1\ndone\n"
    );
    let mut pod = volume_pod(name, "node1", &script);
    pod.metadata.labels = Some([("app".to_owned(), name.to_owned())].into());
    pod
}

/// `stat` of `paths` in `pod`'s container: `<octal mode> <links> <type> <name>` per line.
fn stat(tb: &Testbed, ns: &str, pod: &str, paths: &[&str]) -> String {
    let mut args = vec!["exec", "-n", ns, pod, "--", "stat", "-c", "%a %h %F %N"];
    args.extend(paths);
    let out = tb.kubectl(&args);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_volume_arrives_without_setuid_bits_hard_links_or_links_out() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "volume-placement").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let setup = "echo secret > plain\ncp /bin/busybox tool\nchmod 4755 tool\nchmod 2755 plain\n\
                 ln plain hard\nln -s plain inside\nmkdir sub\nln -s ../plain sub/up";
    run_pod(&client, ns, shaping_pod("shaped", setup)).await;
    counter_log(&tb, ns, "shaped", 2, Duration::from_secs(60)).await;
    let before = stat(&tb, ns, "shaped", &["/data/tool", "/data/plain"]);
    assert!(
        before.starts_with("4755 1 regular file") && before.contains("\n2755 2 regular file"),
        "the source had setuid, setgid and a hard link: {before}"
    );

    let pm = migrate(
        &client,
        ns,
        migration_request("move-shaped", "shaped", Some("node2")),
    )
    .await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Succeeded, "{message}");
    // The source may still be going (frozen): the restored pod is the one on node2.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let name = eventually(
        "the restored pod on node2",
        Duration::from_secs(120),
        || async {
            let list = pods.list(&ListParams::default().labels("app=shaped")).await;
            list.ok()?.items.into_iter().find_map(|p| {
                let on_node2 = p.spec.as_ref()?.node_name.as_deref() == Some("node2");
                let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
                (on_node2 && running).then(|| p.metadata.name.clone())?
            })
        },
    )
    .await;
    let after = stat(
        &tb,
        ns,
        &name,
        &[
            "/data/tool",
            "/data/plain",
            "/data/hard",
            "/data/inside",
            "/data/sub/up",
        ],
    );
    let lines: Vec<&str> = after.lines().collect();
    assert_eq!(
        lines,
        [
            "755 1 regular file /data/tool",
            "755 1 regular file /data/plain",
            "755 1 regular file /data/hard",
            "777 1 symbolic link '/data/inside' -> 'plain'",
            "777 1 symbolic link '/data/sub/up' -> '../plain'",
        ],
        "{after}"
    );
    let hard = tb.kubectl(&["exec", "-n", ns, &name, "--", "cat", "/data/hard"]);
    assert_eq!(String::from_utf8_lossy(&hard.stdout), "secret\n");
}

#[tokio::test]
async fn a_volume_with_a_link_out_of_it_is_not_placed_and_its_source_runs_on() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "volume-link-out").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let setup = "echo mine > own\nln -s /etc/shadow shadow\nmkdir sub\nln -s ../../.. sub/up";
    run_pod(&client, ns, shaping_pod("reaching", setup)).await;
    counter_log(&tb, ns, "reaching", 2, Duration::from_secs(60)).await;

    let pm = migrate(
        &client,
        ns,
        migration_request("move-reaching", "reaching", Some("node2")),
    )
    .await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Failed, "{message}");
    assert!(
        message.contains("symbolic link out of its volume"),
        "the status says why: {message}"
    );
    // The source is released and counts on where it was.
    let source = running_pod(&client, ns, "app=reaching", "the source pod").await;
    assert_eq!(
        source.spec.unwrap().node_name.as_deref(),
        Some("node1"),
        "the source stays on node1"
    );
    counter_log(&tb, ns, "reaching", 2, Duration::from_secs(60)).await;
}
