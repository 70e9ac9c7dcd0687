//! Real programs moved by PodMigration, checked as their users would check them: Debian's
//! redis-server moves while clients write to it through a Service, and loses no acknowledged
//! write; python3 moves with the dict it built; and a server running as a non-root user, which
//! these machines cannot checkpoint, stays where it is and the migration says why.

use std::time::Duration;

use checkpointing::crd::{MigrationPhase, PodMigration};
use e2e::{
    Reply, TestNamespace, Testbed, assert_container_resumes, counter_values, eventually,
    interpreter_pod, kv_client_logs, kv_clients_answered_after, kv_clients_pod, kv_preload,
    kv_server_pod, kv_service, migrate, migration_outcome, migration_request, redis_cli, run_pod,
    unix_now, values_at_checkpoint, wait_running,
};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

/// Keys the server holds before it moves.
const KEYS: u32 = 100_000;
/// Entries of the interpreter's dict.
const ENTRIES: u32 = 200_000;

/// When the checkpoint was asked for (Unix seconds), what the clients' logs are read against.
fn checkpoint_requested(pm: &PodMigration) -> Option<f64> {
    let at = pm.status.as_ref()?.checkpoint_request_time.as_ref()?.0;
    Some(at.as_millisecond() as f64 / 1000.0)
}

/// Each client's log, one reply a line, with its time since the checkpoint request.
fn show(logs: &[(&str, Vec<Reply>)], since: f64) -> String {
    let mut out = String::new();
    for (client, replies) in logs {
        out += &format!("--- client {client} (time since the checkpoint request, reply)\n");
        for r in replies {
            out += &format!("{:>+9.3} s  {:.3}  {}\n", r.at - since, r.at, r.text);
        }
    }
    out
}

/// The longest time a client waited between two acknowledged writes, in seconds.
fn longest_gap(replies: &[Reply]) -> f64 {
    let acked: Vec<f64> = replies
        .iter()
        .filter(|r| r.value().is_some())
        .map(|r| r.at)
        .collect();
    acked.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
}

#[tokio::test]
async fn a_kv_server_moves_under_writing_clients_and_loses_no_acknowledged_write() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "real-kv").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    run_pod(&client, ns, kv_server_pod("kv", "node1", None)).await;
    kv_preload(&tb, ns, "kv", KEYS);
    assert_eq!(redis_cli(&tb, ns, "kv", &["DBSIZE"]), KEYS.to_string());
    let address = kv_service(&client, ns, "kv").await;
    run_pod(&client, ns, kv_clients_pod("clients", "node1", &address)).await;
    // Both clients are writing, the connected one over the connection it will hold at the dump.
    kv_clients_answered_after(
        &tb,
        ns,
        "clients",
        unix_now() + 1.0,
        Duration::from_secs(60),
    )
    .await;

    let pm = migrate(
        &client,
        ns,
        migration_request("move-kv", "kv", Some("node2")),
    )
    .await;
    let done = unix_now();
    let status = pm.status.clone().unwrap_or_default();
    let since = checkpoint_requested(&pm).unwrap_or(done);
    println!(
        "migration {:?} in {:?} ms of downtime: {}",
        status.phase,
        status.downtime_milliseconds,
        status.message.as_deref().unwrap_or("")
    );
    let (phase, message) = migration_outcome(&pm);
    if phase != MigrationPhase::Succeeded {
        println!("{}", show(&kv_client_logs(&tb, ns, "clients"), since));
    }
    assert_eq!(phase, MigrationPhase::Succeeded, "{message}");
    let restored = status.restored_pod.as_deref().unwrap();
    wait_running(&client, ns, restored).await;

    // The data moved: every key, and their values.
    assert_eq!(
        redis_cli(&tb, ns, restored, &["DBSIZE"]),
        (KEYS + 1).to_string(),
        "the preloaded keys and the counter"
    );
    assert_eq!(
        redis_cli(&tb, ns, restored, &["GET", "key:4242"]),
        "value:4242"
    );
    // The clients went on, through the Service, against the restored server.
    let logs = kv_clients_answered_after(&tb, ns, "clients", done, Duration::from_secs(60)).await;
    let counter: i64 = redis_cli(&tb, ns, restored, &["GET", "counter"])
        .parse()
        .expect("the counter is a number");
    println!("{}", show(&logs, since));
    for (c, replies) in &logs {
        println!(
            "client {c}: {} writes acknowledged, longest without one {:.3} s",
            replies.iter().filter(|r| r.value().is_some()).count(),
            longest_gap(replies)
        );
    }
    println!(
        "downtime {:?} ms; counter on the restored server {counter}",
        status.downtime_milliseconds
    );

    let mut acked: Vec<i64> = logs
        .iter()
        .flat_map(|(_, replies)| replies.iter().filter_map(Reply::value))
        .collect();
    // One server answered at any time: a value counted out twice means two served at once (or
    // one started again from older data).
    for (c, replies) in &logs {
        let values: Vec<i64> = replies.iter().filter_map(Reply::value).collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "client {c}'s counter never goes back: {values:?}"
        );
    }
    acked.sort_unstable();
    let repeated: Vec<i64> = acked
        .windows(2)
        .filter(|w| w[0] == w[1])
        .map(|w| w[0])
        .collect();
    assert!(
        repeated.is_empty(),
        "values acknowledged twice: {repeated:?}"
    );
    // Every acknowledged INCR is in the restored server's counter.
    let highest = *acked.last().unwrap();
    assert!(
        counter >= highest,
        "acknowledged writes lost: the clients were told {highest}, the restored server has {counter}"
    );
}

#[tokio::test]
async fn an_interpreter_moves_with_the_dict_it_built_and_counts_on() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "real-python").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    run_pod(&client, ns, interpreter_pod("interp", "node1", ENTRIES)).await;
    eventually(
        "the interpreter to count",
        Duration::from_secs(60),
        || async {
            let out = tb.kubectl(&["logs", "-n", ns, "interp", "-c", "python"]);
            (counter_values(&String::from_utf8_lossy(&out.stdout)).len() >= 2).then_some(())
        },
    )
    .await;

    let pm = migrate(
        &client,
        ns,
        migration_request("move-interp", "interp", Some("node2")),
    )
    .await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Succeeded, "{message}");
    let status = pm.status.as_ref().unwrap();
    println!("downtime {:?} ms", status.downtime_milliseconds);
    let restored = wait_running(&client, ns, status.restored_pod.as_deref().unwrap()).await;
    assert_eq!(
        restored.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node2")
    );
    // The process counts on from where its checkpoint froze it, never from 0 ...
    let values = values_at_checkpoint(&tb, &client, ns, "move-interp").await;
    let [(container, at_checkpoint)] = &values[..] else {
        panic!("one checkpointed container: {values:?}")
    };
    assert_container_resumes(&tb, ns, &restored, container, *at_checkpoint).await;
    // ... with its dict whole: what the restored process itself printed (after it started).
    let started = restored
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c[0].state.as_ref()?.running.as_ref()?.started_at.clone())
        .expect("the restored container runs, with a start time")
        .0;
    let name = restored.metadata.name.as_deref().unwrap();
    let out = tb.kubectl_ok(&["logs", "--timestamps", "-n", ns, name, "-c", "python"]);
    let entries: Vec<&str> = out
        .lines()
        .filter_map(|l| {
            let (at, text) = l.split_once(' ')?;
            let at: k8s_openapi::jiff::Timestamp = at.parse().ok()?;
            (at > started && text.starts_with("Entries:")).then_some(text.trim())
        })
        .collect();
    let whole = format!("Entries: {ENTRIES} last={}", ENTRIES - 1);
    assert!(
        !entries.is_empty() && entries.iter().all(|e| *e == whole),
        "the restored process prints {whole:?}: {out}"
    );
}

#[tokio::test]
async fn non_root_server_needs_cap_sys_resource_which_this_machine_lacks() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "real-nonroot").await;
    let ns = ns.name.as_str();
    let client = tb.client().await;
    let source = run_pod(&client, ns, kv_server_pod("kv", "node1", Some(100))).await;
    kv_preload(&tb, ns, "kv", 1000);
    let uid = tb.kubectl_ok(&["exec", "-n", ns, "kv", "-c", "redis", "--", "id", "-u"]);
    assert_eq!(uid.trim(), "100");

    // CRIU dumps a process of another user only with CAP_SYS_RESOURCE, which the nodes of
    // this machine do not have: the checkpoint fails, and the migration must say so.
    let pm = migrate(
        &client,
        ns,
        migration_request("move-kv", "kv", Some("node2")),
    )
    .await;
    let (phase, message) = migration_outcome(&pm);
    assert_eq!(phase, MigrationPhase::Failed, "{message}");
    assert!(message.contains("CAP_SYS_RESOURCE"), "{message}");

    // The server never stopped being the one users reach, with its data.
    let now = Api::<Pod>::namespaced(client.clone(), ns)
        .get("kv")
        .await
        .unwrap();
    assert_eq!(now.metadata.uid, source.metadata.uid, "the same pod");
    assert_eq!(
        now.status.as_ref().unwrap().phase.as_deref(),
        Some("Running")
    );
    assert_eq!(redis_cli(&tb, ns, "kv", &["PING"]), "PONG");
    assert_eq!(redis_cli(&tb, ns, "kv", &["DBSIZE"]), "1000");
}
