//! Real programs for the suite to move: Debian's redis-server with redis-cli clients writing to
//! it through a Service, and python3 holding a large dict. `testbed/up` builds their images
//! from unmodified Debian packages and serves them as `docker.io/ckpt-testbed/*` to both
//! runtimes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, PostParams};
use serde_json::json;

use crate::{Testbed, eventually};

/// redis-server and redis-cli, with dash, coreutils and mawk for the clients' shell loops.
pub const KV_IMAGE: &str = "docker.io/ckpt-testbed/redis:latest";
/// python3-minimal.
pub const INTERPRETER_IMAGE: &str = "docker.io/ckpt-testbed/python:latest";
pub const KV_PORT: u16 = 6379;
/// The containers of [`kv_clients_pod`]: one redis-cli per command, and one holding a
/// connection.
pub const KV_CLIENTS: [&str; 2] = ["per-command", "connected"];

/// Pod `name` (label `app=<name>`) on `node`, redis-server in container `redis`, as root or
/// as `run_as_user`. It saves nothing to disk: its data is in its memory only, which is what a
/// checkpoint has to carry.
pub fn kv_server_pod(name: &str, node: &str, run_as_user: Option<i64>) -> Pod {
    let security = run_as_user.map(|uid| json!({"runAsUser": uid}));
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "redis",
                "image": KV_IMAGE,
                "command": ["redis-server", "--port", KV_PORT.to_string(), "--save", "",
                            "--appendonly", "no", "--protected-mode", "no"],
                "ports": [{"containerPort": KV_PORT}],
                "securityContext": security,
            }],
        },
    }))
    .unwrap()
}

/// Runs `redis-cli ARGS` in the server pod `pod` (against itself); returns its output.
pub fn redis_cli(tb: &Testbed, ns: &str, pod: &str, args: &[&str]) -> String {
    let mut argv = vec!["exec", "-n", ns, pod, "-c", "redis", "--", "redis-cli"];
    argv.extend_from_slice(args);
    tb.kubectl_ok(&argv).trim().to_owned()
}

/// Stores `keys` keys, `key:N` = `value:N`, in the server pod `pod` with `redis-cli --pipe`
/// (Redis's mass insertion), asserting that every one was acknowledged.
pub fn kv_preload(tb: &Testbed, ns: &str, pod: &str, keys: u32) {
    // The protocol's form of SET key:N value:N, as redis-cli --pipe takes it.
    let script = format!(
        r#"seq 0 {} | mawk '{{k = "key:" $1; v = "value:" $1; printf "*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$%d\r\n%s\r\n", length(k), k, length(v), v}}' | redis-cli --pipe"#,
        keys - 1
    );
    let out = tb.kubectl_ok(&[
        "exec", "-n", ns, pod, "-c", "redis", "--", "sh", "-c", &script,
    ]);
    assert!(
        out.contains(&format!("errors: 0, replies: {keys}")),
        "preloading {keys} keys: {out}"
    );
}

/// Service `name` selecting `app=<name>` on the server's port; returns its ClusterIP (the
/// testbed has no cluster DNS).
pub async fn kv_service(client: &kube::Client, ns: &str, name: &str) -> String {
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"selector": {"app": name}, "ports": [{"port": KV_PORT, "targetPort": KV_PORT}]},
    }))
    .unwrap();
    let service = Api::<Service>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &service)
        .await
        .unwrap_or_else(|e| panic!("creating Service {name}: {e}"));
    service.spec.unwrap().cluster_ip.unwrap()
}

/// A redis-cli for each command, with a 2 s limit: the simplest client.
const PER_COMMAND_CLIENT: &str = r#"while true; do
  reply=$(timeout 2 redis-cli -t 2 -h "$SERVER" INCR counter 2>&1 | tr '\n' ' ')
  echo "$(date +%s.%N) $reply"
  sleep 0.3
done
"#;

/// One redis-cli for all commands, fed through a fifo: a connection established whenever a
/// checkpoint comes. redis-cli reconnects by itself when the server closes it; one that just
/// stops answering is replaced after 2-3 s, as a client library's read timeout would.
const CONNECTED_CLIENT: &str = r#"mkfifo /tmp/commands /tmp/replies
# Each reply, stamped, whichever connection brought it.
while true; do cat /tmp/replies; done | while read -r reply; do
  date +%s >/tmp/answered.new && mv /tmp/answered.new /tmp/answered
  echo "$(date +%s.%N) $reply"
done &
# Read-write, so that opening never blocks and redis-cli never reads an end of file.
exec 3<>/tmp/commands
connect() {
  date +%s >/tmp/answered
  redis-cli -t 2 -h "$SERVER" <&3 >/tmp/replies 2>&1 &
  cli=$!
}
connect
while true; do
  echo "INCR counter" >&3
  sleep 0.3
  if [ $(($(date +%s) - $(cat /tmp/answered))) -ge 3 ]; then
    kill "$cli"
    echo "$(date +%s.%N) no reply: reconnecting"
    connect
  fi
done
"#;

/// Pod `name` on `node` whose two containers ([`KV_CLIENTS`]) send `INCR counter` to the server
/// at `server` every 0.3 s and log each reply as `<unix time> <reply>`.
pub fn kv_clients_pod(name: &str, node: &str, server: &str) -> Pod {
    let container = |name: &str, script: &str| {
        json!({
            "name": name,
            "image": KV_IMAGE,
            "command": ["sh", "-c", script],
            "env": [{"name": "SERVER", "value": server}],
        })
    };
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                container(KV_CLIENTS[0], PER_COMMAND_CLIENT),
                container(KV_CLIENTS[1], CONNECTED_CLIENT),
            ],
        },
    }))
    .unwrap()
}

/// A line of a client's log: when (Unix seconds) and what the server said, or the client's
/// error.
#[derive(Clone, Debug, PartialEq)]
pub struct Reply {
    pub at: f64,
    pub text: String,
}

impl Reply {
    /// The counter's value, when this is an INCR's reply (an acknowledged write).
    pub fn value(&self) -> Option<i64> {
        self.text.trim().parse().ok()
    }
}

/// The lines of a client's log.
pub fn client_replies(log: &str) -> Vec<Reply> {
    log.lines()
        .filter_map(|l| {
            let (at, text) = l.split_once(' ')?;
            Some(Reply {
                at: at.parse().ok()?,
                text: text.trim().to_owned(),
            })
        })
        .collect()
}

/// The current log of each client of pod `pod`, by container.
pub fn kv_client_logs(tb: &Testbed, ns: &str, pod: &str) -> Vec<(&'static str, Vec<Reply>)> {
    KV_CLIENTS
        .iter()
        .map(|&c| {
            let out = tb.kubectl(&["logs", "-n", ns, pod, "-c", c]);
            (c, client_replies(&String::from_utf8_lossy(&out.stdout)))
        })
        .collect()
}

/// Waits until every client of pod `pod` has had a write acknowledged after `after` (Unix
/// seconds); returns their logs.
pub async fn kv_clients_answered_after(
    tb: &Testbed,
    ns: &str,
    pod: &str,
    after: f64,
    timeout: Duration,
) -> Vec<(&'static str, Vec<Reply>)> {
    eventually(
        &format!("every client in {ns}/{pod} to be answered after {after:.3}"),
        timeout,
        || async {
            let logs = kv_client_logs(tb, ns, pod);
            logs.iter()
                .all(|(_, replies)| replies.iter().any(|r| r.at > after && r.value().is_some()))
                .then_some(logs)
        },
    )
    .await
}

/// Unix time now, in seconds (the pods' clocks are this machine's).
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Pod `name` on `node`: python3 builds a dict of `entries` entries, then every second prints
/// `Entries: <len> last=<its last value>` and `Counter: N` (the seed's counter's line, so the
/// harness's counter checks apply).
pub fn interpreter_pod(name: &str, node: &str, entries: u32) -> Pod {
    let program = format!(
        "import time\n\
         table = {{i: str(i) for i in range({entries})}}\n\
         n = 0\n\
         while True:\n    \
             print('Entries:', len(table), 'last=' + table[{entries} - 1], flush=True)\n    \
             print('Counter:', n, flush=True)\n    \
             n += 1\n    \
             time.sleep(1)\n"
    );
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "python",
                "image": INTERPRETER_IMAGE,
                "command": ["python3", "-c", program],
            }],
        },
    }))
    .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_replies_keep_errors_and_values_apart() {
        let log = "1796490011.431043003 2\n\
                   1796490013.621851886 Could not connect to Redis at 10.0.0.5:6379: Connection refused \n\
                   garbage\n\
                   1796490015.1 (error) LOADING\n";
        let replies = client_replies(log);
        assert_eq!(replies.len(), 3);
        assert!((replies[0].at - 1_796_490_011.431).abs() < 1e-3);
        let values: Vec<_> = replies.iter().map(Reply::value).collect();
        assert_eq!(values, [Some(2), None, None]);
        assert!(replies[1].text.ends_with("refused"));
    }

    #[test]
    fn the_interpreter_program_is_python() {
        let pod = interpreter_pod("p", "node1", 5);
        let command = pod.spec.unwrap().containers[0].command.clone().unwrap();
        assert_eq!(
            command[2],
            "import time
table = {i: str(i) for i in range(5)}
n = 0
while True:
    print('Entries:', len(table), 'last=' + table[5 - 1], flush=True)
    print('Counter:', n, flush=True)
    n += 1
    time.sleep(1)
"
        );
    }
}
