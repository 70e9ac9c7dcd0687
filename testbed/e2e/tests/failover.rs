//! Two controller replicas with leader election: the testbed's own (started by `testbed/up` with
//! `--leader-elect`) and a second one this test starts on the host. Exactly one leads; when the
//! leader is SIGKILLed (no release) with a checkpoint request in flight, the other takes the
//! Lease over once it expires and the request still completes. Runs alone (see .config/nextest.toml): it kills the
//! controller.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use checkpointing::crd::{CheckpointState, ContainerCheckpoint, ContainerCheckpointContent};
use e2e::{
    ControllerBack, TestNamespace, Testbed, checkpoint_request, eventually, memory_hog, outcome,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TESTBED_ADMIN: &str = "127.0.0.1:18080";
const SECOND_ADMIN: &str = "127.0.0.1:18081";
/// Where testbed/up (like deploy/) puts the controller's election Lease.
const LEASE_NAMESPACE: &str = "external-checkpointer-system";
const LEASE_NAME: &str = "checkpoint-controller";

#[tokio::test]
async fn a_checkpoint_completes_after_the_leader_is_killed() {
    let tb = Testbed::get();
    let client = tb.client().await;
    let pidfile = tb.state.join("pids/controller.pid");
    let testbed_pid: u32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{testbed_pid}/cmdline")).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&cmdline).contains("--leader-elect"),
        "the testbed's controller must run with --leader-elect (TESTBED_CONTROLLER_ARGS)"
    );

    // Declared first, dropped last: after the second replica is stopped, `testbed/up` brings
    // the testbed's controller back if it was killed.
    let _restore = ControllerBack(&tb);
    let mut second = Second::start(&tb);

    // Exactly one leads, and the Lease names it.
    let (leader_addr, follower_addr) = eventually(
        "one leader and one follower",
        Duration::from_secs(30),
        || async {
            let a = leader_gauge(TESTBED_ADMIN).await?;
            let b = leader_gauge(SECOND_ADMIN).await?;
            match (a, b) {
                (1, 0) => Some((TESTBED_ADMIN, SECOND_ADMIN)),
                (0, 1) => Some((SECOND_ADMIN, TESTBED_ADMIN)),
                _ => None,
            }
        },
    )
    .await;
    let (leader_pid, follower_pid) = if leader_addr == TESTBED_ADMIN {
        (testbed_pid, second.pid())
    } else {
        (second.pid(), testbed_pid)
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let holder = holder(&leases).await;
    assert!(
        holder.ends_with(&format!("_{leader_pid}")),
        "Lease holder {holder:?}, leader pid {leader_pid}"
    );

    let ns = TestNamespace::create(&tb, "failover").await;
    // Its checkpoint takes seconds, so the leader dies with it in flight.
    memory_hog(&tb, &client, &ns.name, "counter", "node1", 200).await;
    let requests: Api<ContainerCheckpoint> = Api::namespaced(client.clone(), &ns.name);
    requests
        .create(
            &PostParams::default(),
            &checkpoint_request("in-flight", "counter", "counter"),
        )
        .await
        .unwrap();
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &ns.name);
    eventually(
        "the leader to hand the request to noded",
        Duration::from_secs(30),
        || async { contents.get_opt("in-flight").await.ok()?.map(|_| ()) },
    )
    .await;

    // SIGKILL: no release, the follower must wait for the Lease to expire.
    if leader_pid == testbed_pid {
        let status = Command::new("kill")
            .args(["-KILL", &testbed_pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    } else {
        second.kill();
    }
    eventually("the leader to exit", Duration::from_secs(10), || async {
        (!std::path::Path::new(&format!("/proc/{leader_pid}")).exists()).then_some(())
    })
    .await;

    let done = eventually(
        "the request to finish via the other replica",
        Duration::from_secs(60),
        || async {
            let cc = requests.get("in-flight").await.ok()?;
            cc.status.as_ref()?.state?.is_final().then_some(cc)
        },
    )
    .await;
    let (state, message) = outcome(&done);
    assert_eq!(state, CheckpointState::Completed, "{message}");
    assert_eq!(leader_gauge(follower_addr).await, Some(1));
    let holder = self::holder(&leases).await;
    assert!(
        holder.ends_with(&format!("_{follower_pid}")),
        "Lease holder {holder:?}, new leader pid {follower_pid}"
    );
}

async fn holder(leases: &Api<Lease>) -> String {
    leases
        .get(LEASE_NAME)
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

/// `checkpoint_controller_leader` from the replica's /metrics; None when it does not answer.
async fn leader_gauge(addr: &str) -> Option<i64> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response
        .lines()
        .find_map(|l| l.strip_prefix("checkpoint_controller_leader "))?
        .trim()
        .parse()
        .ok()
}

/// The second replica: same binary, no webhook, its own admin port; stopped with SIGTERM (it
/// releases the Lease, so the testbed's controller takes over at once) when dropped.
struct Second {
    child: Child,
    killed: bool,
}

impl Second {
    fn start(tb: &Testbed) -> Self {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map_or_else(|| tb.repo.join("target"), PathBuf::from);
        let binary = target.join("debug/controller");
        assert!(
            binary.exists(),
            "{} is not built: cargo build -p controller",
            binary.display()
        );
        let log = std::fs::File::create(tb.state.join("logs/controller-failover-test.log"))
            .expect("creating the second controller's log");
        let child = Command::new(binary)
            .args(["run", "--kubeconfig"])
            // The same identity and election as the testbed's replica.
            .arg(
                tb.state
                    .join("kubeconfigs/checkpoint-controller.kubeconfig"),
            )
            .args([
                "--leader-elect",
                "--leader-election-namespace",
                LEASE_NAMESPACE,
            ])
            .args(["--admin-addr", SECOND_ADMIN])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the second controller");
        Self {
            child,
            killed: false,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.killed = true;
    }
}

impl Drop for Second {
    fn drop(&mut self) {
        if self.killed {
            return;
        }
        let _ = Command::new("kill").arg(self.pid().to_string()).status();
        for _ in 0..30 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        self.kill();
    }
}
