//! The seed's counter: its pod, its log, the value a checkpoint froze and the assertion that a
//! restored process goes on from there.

use std::process::Command;
use std::time::Duration;

use checkpointing::crd::ContainerCheckpointContent;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::{Testbed, eventually};

/// A busybox pod printing `Counter: N` every `period_s` seconds (the seed's program), pinned to
/// `node`.
pub fn counter_pod(name: &str, node: &str, period_s: u32) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "containers": [{
                "name": "counter",
                "image": "busybox",
                "command": ["/bin/sh", "-c"],
                "args": [format!("counter=0\nwhile true; do\n  echo \"Counter: $counter\"\n  counter=$((counter+1))\n  sleep {period_s}\ndone\n")],
            }],
        },
    }))
    .unwrap()
}

/// A busybox pod pinned to `node` (a root one, gone within a second when deleted) whose
/// container `counter` runs `script` with the emptyDir `data` at `/data`.
pub fn volume_pod(name: &str, node: &str, script: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "counter",
                "image": "busybox",
                "command": ["/bin/sh", "-c", script],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }))
    .unwrap()
}

/// The `Counter: N` values in a log.
pub fn counter_values(log: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| l.trim().strip_prefix("Counter: ")?.trim().parse().ok())
        .collect()
}

/// Waits until `kubectl logs` of the pod shows at least `n` counter values; returns them.
pub async fn counter_log(
    testbed: &Testbed,
    namespace: &str,
    pod: &str,
    n: usize,
    timeout: Duration,
) -> Vec<u64> {
    eventually(
        &format!("{n} counter lines from {namespace}/{pod}"),
        timeout,
        || async {
            let out = testbed.kubectl(&["logs", "-n", namespace, pod, "-c", "counter"]);
            let values = counter_values(&String::from_utf8_lossy(&out.stdout));
            (values.len() >= n).then_some(values)
        },
    )
    .await
}

/// The counter value the checkpointed process had printed last: the end of the container log
/// the runtime put into the archive (containerd names it `container.log`, CRI-O after the
/// annotation that held its path).
pub fn value_at_checkpoint(tb: &Testbed, node: &str, archive: &str) -> u64 {
    let member = match tb.runtime(node).as_str() {
        "crio" => "io.kubernetes.cri-o.LogPath",
        _ => "container.log",
    };
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(tb.node_path(node, archive))
        .arg(member)
        .output()
        .unwrap();
    assert!(out.status.success(), "reading {member} from {archive}");
    *counter_values(
        &String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.splitn(4, ' ').last().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .last()
    .expect("the archive's log has counter lines")
}

/// The counter value at checkpoint `name` in `ns`, from its archive on `node` (where its
/// Content says the archive lies).
pub async fn counter_at_checkpoint(
    tb: &Testbed,
    client: &kube::Client,
    ns: &str,
    name: &str,
    node: &str,
) -> u64 {
    let path = Api::<ContainerCheckpointContent>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("reading ContainerCheckpointContent {ns}/{name}: {e}"))
        .status
        .and_then(|s| s.checkpoint_path)
        .unwrap_or_else(|| panic!("ContainerCheckpointContent {ns}/{name} has no archive path"));
    value_at_checkpoint(tb, node, &path)
}

/// Asserts that the restored `running` pod's counter (its container `counter`) goes on from
/// `at_checkpoint`.
pub async fn assert_counter_resumes(tb: &Testbed, ns: &str, running: &Pod, at_checkpoint: u64) {
    assert_container_resumes(tb, ns, running, "counter", at_checkpoint).await;
}

/// Asserts that `container` of the restored `running` pod counts on from `at_checkpoint`.
pub async fn assert_container_resumes(
    tb: &Testbed,
    ns: &str,
    running: &Pod,
    container: &str,
    at_checkpoint: u64,
) {
    let name = running.metadata.name.clone().unwrap();
    // The runtime carries the old log over into the restored container's log (containerd its
    // last line, again, CRI-O all of it); what the restored process prints itself must go on from
    // there, never start again at 0.
    let started = running
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .find(|c| c.name == container)
        .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
        .unwrap_or_else(|| panic!("{container} of {name} runs, with a start time"))
        .0;
    let lines = eventually(
        &format!("the restored {container} of {name} to tick"),
        Duration::from_secs(60),
        || async {
            let out = tb.kubectl(&["logs", "--timestamps", "-n", ns, &name, "-c", container]);
            let lines = timestamped_counter(&String::from_utf8_lossy(&out.stdout));
            lines
                .iter()
                .any(|&(_, v)| v > at_checkpoint)
                .then_some(lines)
        },
    )
    .await;
    let values: Vec<u64> = lines.iter().map(|&(_, v)| v).collect();
    let first_new = values.iter().find(|&&v| v > at_checkpoint).unwrap();
    assert_eq!(
        *first_new,
        at_checkpoint + 1,
        "the restored {container} goes on from {at_checkpoint}: {values:?}"
    );
    assert!(
        values.windows(2).all(|w| w[0] <= w[1]),
        "{container}'s counter never starts again: {values:?}"
    );
    // Anything below the checkpoint's value was written by the old process, before this one.
    assert!(
        lines
            .iter()
            .all(|&(at, v)| v >= at_checkpoint || at < started),
        "the restored {container} printed nothing from before the checkpoint (started {started}): {lines:?}"
    );
}

/// Asserts that the restored process in `container` of pod `name` goes on appending its
/// counter to `file` (a value a line): the file holds what the source wrote up to
/// `at_checkpoint`, from 0 once (it never started again), then more. Returns the values.
pub async fn assert_file_resumes(
    tb: &Testbed,
    ns: &str,
    (name, container): (&str, &str),
    file: &str,
    at_checkpoint: u64,
) -> Vec<u64> {
    let log = eventually(
        &format!("the restored process to append to {file}"),
        Duration::from_secs(60),
        || async {
            let out = tb.kubectl(&["exec", "-n", ns, name, "-c", container, "--", "cat", file]);
            let values: Vec<u64> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect();
            values
                .last()
                .is_some_and(|&v| v > at_checkpoint + 1)
                .then_some(values)
        },
    )
    .await;
    let written: Vec<u64> = (0..=at_checkpoint).collect();
    assert_eq!(log[..written.len()], written[..], "{file}: {log:?}");
    let zeros = log.iter().filter(|&&v| v == 0).count();
    assert_eq!(zeros, 1, "{file}: {log:?}");
    log
}

/// `(timestamp, N)` of the `Counter: N` lines of `kubectl logs --timestamps`.
fn timestamped_counter(log: &str) -> Vec<(k8s_openapi::jiff::Timestamp, u64)> {
    log.lines()
        .filter_map(|l| {
            let (at, text) = l.split_once(' ')?;
            let value = counter_values(text).pop()?;
            Some((at.parse().ok()?, value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn counter_values_ignore_other_lines() {
        assert_eq!(
            super::counter_values("Counter: 0\nnoise\nCounter: 1\r\n Counter: x\n"),
            [0, 1]
        );
    }
}
