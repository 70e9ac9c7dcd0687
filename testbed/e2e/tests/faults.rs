//! Faults on node3, which no other test uses: the node daemon killed mid-checkpoint, the
//! container runtime gone, the daemon missing, the controller scaled away, the apiserver killed,
//! a full disk. Every request still ends Completed or Failed with its reason, and nothing partial
//! is left. The product is broken as a user would break it: its processes killed, its pods
//! deleted or scaled away. These tests run one at a time (see .config/nextest.toml).

use std::process::Command;
use std::time::{Duration, Instant};

use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use checkpointing::oci::ImageLayout;
use e2e::{
    ControllerDown, NodedDown, TestNamespace, Testbed, checkpoint, checkpoint_request, counter_pod,
    eventually, memory_hog, outcome, run_pod, wait_checkpoint,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, PostParams};

const NODE: &str = "node3";
const CHECKPOINTS: &str = "/var/lib/kubelet/checkpoints";

async fn final_state(client: &kube::Client, ns: &str, name: &str) -> (CheckpointState, String) {
    outcome(&wait_checkpoint(client, ns, name).await)
}

/// Files of this namespace in node3's checkpoint directory: (archives, temporary files).
fn files(tb: &Testbed, ns: &str) -> (Vec<String>, Vec<String>) {
    let names: Vec<String> = std::fs::read_dir(tb.node_path(NODE, CHECKPOINTS))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&format!("checkpoint-{ns}_")))
        .collect();
    names.into_iter().partition(|n| !n.ends_with(".partial"))
}

#[tokio::test]
async fn noded_killed_mid_checkpoint_resolves_the_request_on_restart() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "kill").await;
    let client = tb.client().await;
    // 300 MB of process memory: the checkpoint takes seconds, long enough to kill noded in it.
    memory_hog(&tb, &client, &ns.name, "hog", NODE, 300).await;

    start_hog_checkpoint(&tb, &client, &ns.name, "interrupted").await;
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    // SIGKILL, as a crash; the kubelet starts the container again.
    tb.kill_noded(&client, NODE).await;
    tb.wait_noded(&client, NODE).await;

    let (state, message) = final_state(&client, &ns.name, "interrupted").await;
    // Let a runtime that was still writing finish, then look for leftovers.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (archives, partials) = files(&tb, &ns.name);
    assert!(partials.is_empty(), "no temporary file left: {partials:?}");
    match state {
        CheckpointState::Completed => {
            assert_eq!(archives.len(), 1, "exactly one archive: {archives:?}");
            let uid = contents
                .get("interrupted")
                .await
                .unwrap()
                .metadata
                .uid
                .unwrap();
            ImageLayout::open(tb.node_path(NODE, &format!("{CHECKPOINTS}/oci")))
                .unwrap()
                .verify(&uid)
                .unwrap();
        }
        _ => {
            assert!(
                archives.is_empty(),
                "a failed request leaves no archive: {archives:?}"
            );
            assert!(message.contains("restarted"), "{message}");
        }
    }

    // The restarted daemon takes new checkpoints normally.
    Api::<ContainerCheckpoint>::namespaced(client.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &checkpoint_request("after-restart", "hog", "hog"),
        )
        .await
        .unwrap();
    let (state, message) = final_state(&client, &ns.name, "after-restart").await;
    assert_eq!(state, CheckpointState::Completed, "{message}");
}

#[tokio::test]
async fn runtime_gone_fails_clearly_and_recovers_when_it_returns() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "cri-gone").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", NODE, 1)).await;
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);

    let runtime = tb.runtime(NODE);
    tb.agents(&["stop", &runtime, NODE]);
    requests
        .create(
            &PostParams::default(),
            &checkpoint_request("while-down", "app", "counter"),
        )
        .await
        .unwrap();
    let outcome = final_state(&client, &ns.name, "while-down").await;
    tb.agents(&["start", &runtime, NODE]);
    let (state, message) = outcome;
    assert_eq!(state, CheckpointState::Failed);
    // deploy/ mounts the node's run directory at /host/run in noded's container
    assert!(
        message.contains("/host/run/"),
        "the message names the socket: {message}"
    );
    assert!(files(&tb, &ns.name).0.is_empty());

    requests
        .create(
            &PostParams::default(),
            &checkpoint_request("after-return", "app", "counter"),
        )
        .await
        .unwrap();
    let (state, message) = final_state(&client, &ns.name, "after-return").await;
    assert_eq!(state, CheckpointState::Completed, "{message}");
}

#[tokio::test]
async fn a_node_without_its_daemon_is_refused_and_lets_go_of_its_checkpoints() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "no-daemon").await;
    let client = tb.client().await;
    run_pod(&client, &ns.name, counter_pod("app", NODE, 1)).await;
    let kept = checkpoint(
        &client,
        &ns.name,
        checkpoint_request("kept", "app", "counter"),
    )
    .await;
    assert_eq!(
        outcome(&kept).0,
        CheckpointState::Completed,
        "{}",
        outcome(&kept).1
    );
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);

    // The node loses its daemon: noded killed while the kubelet, which would restart it, is
    // stopped.
    let restart = NodedDown::new(&tb, &client, NODE).await;
    // The controller trusts the Lease until it expires.
    let leases: Api<Lease> = Api::namespaced(
        client.clone(),
        checkpointing::names::DEFAULT_LEASE_NAMESPACE,
    );
    eventually(
        "node3's noded Lease to expire",
        Duration::from_secs(90),
        || async {
            let spec = leases
                .get(&checkpointing::names::noded_lease_name(NODE))
                .await
                .ok()?
                .spec?;
            let renewed = spec.renew_time?.0;
            let expires =
                renewed + Duration::from_secs(u64::try_from(spec.lease_duration_seconds?).ok()?);
            (expires < k8s_openapi::jiff::Timestamp::now()).then_some(())
        },
    )
    .await;
    requests
        .create(
            &PostParams::default(),
            &checkpoint_request("orphan", "app", "counter"),
        )
        .await
        .unwrap();
    let outcome = final_state(&client, &ns.name, "orphan").await;

    // Deleting a checkpoint of that node does not hang on its daemon's finalizer: the testbed's
    // controller lets go after 20 s (--release-abandoned-after-seconds), and says so.
    requests
        .delete("kept", &DeleteParams::background())
        .await
        .unwrap();
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        "the Content of the deleted checkpoint to go",
        Duration::from_secs(120),
        || async { contents.get_opt("kept").await.ok()?.is_none().then_some(()) },
    )
    .await;
    // The controller releases the finalizer first, then records the Event: wait for it.
    let events: Api<Event> = Api::namespaced(client.clone(), &ns.name);
    let said = eventually(
        "the NodeDaemonGone Event",
        Duration::from_secs(30),
        || async {
            events
                .list(&Default::default())
                .await
                .ok()?
                .items
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("NodeDaemonGone"))
                .map(|e| e.note)
        },
    )
    .await;
    drop(restart);
    tb.wait_noded(&client, NODE).await;
    let (state, message) = outcome;
    assert_eq!(state, CheckpointState::Failed);
    assert!(
        message.contains("node3") && message.contains("daemon"),
        "{message}"
    );
    let said = said.expect("an Event says why the finalizer was released");
    assert!(
        said.contains("node3") && said.contains("not removed"),
        "{said}"
    );
}

#[tokio::test]
async fn ordinary_pods_start_while_the_controller_is_down() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "no-controller").await;
    let client = tb.client().await;
    // Every replica gone (scaled to zero); back to two, and serving, when the guard drops.
    let down = ControllerDown::new(&tb, &client).await;
    // The restore webhook's match conditions keep ordinary pods away from it: nothing but
    // restore pods (and checkpoint images) depends on the controller.
    run_pod(&client, &ns.name, counter_pod("plain", NODE, 1)).await;
    drop(down);
}

#[tokio::test]
async fn apiserver_restarted_mid_checkpoint_every_request_still_ends() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "apiserver").await;
    let client = tb.client().await;
    memory_hog(&tb, &client, &ns.name, "hog", NODE, 300).await;
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    start_hog_checkpoint(&tb, &client, &ns.name, "during").await;

    // Kill the apiserver while noded is inside the CRI call and every watch is open.
    let pid = std::fs::read_to_string(tb.state.join("pids/kube-apiserver.pid"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap()
            .success()
    );
    eventually(
        "kube-apiserver to exit",
        Duration::from_secs(60),
        || async { (!std::path::Path::new(&format!("/proc/{pid}")).exists()).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let up = Command::new(tb.repo.join("testbed/up")).output().unwrap();
    assert!(
        up.status.success(),
        "restarting kube-apiserver: {}",
        String::from_utf8_lossy(&up.stderr)
    );

    let (state, message) = final_state(&client, &ns.name, "during").await;
    assert!(state.is_final(), "{message}");
    let (_, partials) = files(&tb, &ns.name);
    assert!(partials.is_empty(), "{partials:?}");
    // Watches resumed: a new request completes.
    requests
        .create(
            &PostParams::default(),
            &checkpoint_request("after", "hog", "hog"),
        )
        .await
        .unwrap();
    let (state, message) = final_state(&client, &ns.name, "after").await;
    assert_eq!(state, CheckpointState::Completed, "{message}");
}

#[tokio::test]
async fn a_full_checkpoint_directory_fails_the_request_and_leaves_nothing() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "disk-full").await;
    let client = tb.client().await;
    memory_hog(&tb, &client, &ns.name, "hog", NODE, 300).await;
    // A 1 MiB tmpfs over node3's checkpoint directory; noded restarted to open it.
    let mount = tb.node_exec(
        NODE,
        &[
            "mount",
            "-t",
            "tmpfs",
            "-o",
            "size=1m,mode=0700",
            "tmpfs",
            CHECKPOINTS,
        ],
    );
    assert!(
        mount.status.success(),
        "{}",
        String::from_utf8_lossy(&mount.stderr)
    );
    let full = DiskFull(&tb);
    tb.replace_noded(&client, NODE).await;

    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    requests
        .create(
            &PostParams::default(),
            &checkpoint_request("no-room", "hog", "hog"),
        )
        .await
        .unwrap();
    let (state, message) = final_state(&client, &ns.name, "no-room").await;
    let (archives, partials) = files(&tb, &ns.name);
    drop(full);
    assert_eq!(state, CheckpointState::Failed);
    // Refused before the dump: 1 MiB holds neither the hog's memory nor noded's disk reserve.
    assert!(
        message.contains(&format!(
            "not enough disk space on node {NODE} for the checkpoint archive: {CHECKPOINTS} has"
        )),
        "the reason is the disk without room: {message}"
    );
    assert!(
        archives.is_empty() && partials.is_empty(),
        "nothing partial left: {archives:?} {partials:?}"
    );
}

/// Unmounts the small tmpfs and gives node3 a noded pod on its real directory again, however
/// the test ends.
struct DiskFull<'a>(&'a Testbed);

impl Drop for DiskFull<'_> {
    fn drop(&mut self) {
        let _ = self.0.node_exec(NODE, &["umount", CHECKPOINTS]);
        // Drop cannot be async: a thread with a runtime (and a client) of its own.
        let tb = self.0.clone();
        let replaced = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                let client = tb.client().await;
                tb.replace_noded(&client, NODE).await;
            });
        })
        .join();
        assert!(replaced.is_ok() || std::thread::panicking());
    }
}

/// Asks for a checkpoint of the hog and returns once the runtime is writing its archive:
/// noded is inside the CRI call. (Its Running status may land a moment later: it is written
/// while the dump runs.)
async fn start_hog_checkpoint(tb: &Testbed, client: &kube::Client, ns: &str, name: &str) {
    Api::<ContainerCheckpoint>::namespaced(client.clone(), ns)
        .create(
            &PostParams::default(),
            &checkpoint_request(name, "hog", "hog"),
        )
        .await
        .unwrap();
    let started = Instant::now();
    while files(tb, ns).1.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "noded never started the checkpoint"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A checkpoint whose finalizer was released without noded (as above) leaves its files on the
/// node. noded's next start sweeps the files named for a Content UID no Content has, written
/// over 10 minutes before; a file of the same kind written just now, and one named for no
/// checkpoint, stay.
#[tokio::test]
async fn files_of_checkpoints_deleted_without_noded_go_at_its_next_start() {
    let tb = Testbed::get();
    let ns = TestNamespace::create(&tb, "orphans").await;
    let client = tb.client().await;
    let dir = tb.node_path(NODE, CHECKPOINTS);
    let gone = "0f0f0f0f-1111-2222-3333-444444444444";
    let old = [
        format!("checkpoint-{}_app-counter-{gone}.tar", ns.name),
        format!("checkpoint-{}_app-counter-{gone}.volumes.tar", ns.name),
    ];
    let young = format!("checkpoint-{}_app-other-{gone}.tar", ns.name);
    let unnamed = format!("notes-{}.txt", ns.name);
    let hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for name in old.iter().chain([&unnamed]) {
        let file = std::fs::File::create(dir.join(name)).unwrap();
        file.set_modified(hour_ago).unwrap();
    }
    std::fs::write(dir.join(&young), b"just written").unwrap();

    tb.kill_noded(&client, NODE).await;
    tb.wait_noded(&client, NODE).await;
    eventually(
        "noded to sweep the old files of a checkpoint without a Content",
        Duration::from_secs(60),
        || async { old.iter().all(|n| !dir.join(n).exists()).then_some(()) },
    )
    .await;
    let kept = [&young, &unnamed].map(|n| dir.join(n).exists());
    for name in [&young, &unnamed] {
        let _ = std::fs::remove_file(dir.join(name));
    }
    assert_eq!(kept, [true, true], "{young} and {unnamed} stay");
}
