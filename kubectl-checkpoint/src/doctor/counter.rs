//! The trial's workload: a pod printing `Counter: N` every second, its checkpoint request, and
//! the judgement whether the restored copy counted on. Pure.

use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointSpec};
use checkpointing::names::{DOCTOR_TRIAL_LABEL, HOSTNAME_LABEL};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use serde_json::json;

/// The counting container's name.
pub const CONTAINER: &str = "counter";

/// Pod `trial` in `namespace` running `image`'s shell counter, pinned to `node`, labelled with
/// the trial (which the restored copy inherits).
pub fn pod(trial: &str, namespace: &str, node: &str, image: &str) -> Pod {
    let script = "i=0; while true; do echo \"Counter: $i\"; i=$((i+1)); sleep 1; done";
    serde_json::from_value(json!({
        "metadata": {
            "name": trial,
            "namespace": namespace,
            "labels": {DOCTOR_TRIAL_LABEL: trial},
        },
        "spec": {
            "nodeSelector": {HOSTNAME_LABEL: node},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": CONTAINER,
                "image": image,
                "command": ["/bin/sh", "-c", script],
            }],
        },
    }))
    .expect("a valid pod")
}

/// The ContainerCheckpoint `trial` of pod `trial`'s counter, labelled with the trial.
pub fn checkpoint(trial: &str) -> ContainerCheckpoint {
    let mut request = ContainerCheckpoint::new(
        trial,
        ContainerCheckpointSpec {
            pod_name: trial.to_owned(),
            container: CONTAINER.to_owned(),
            namespace: None,
            timeout_seconds: None,
            registry: None,
            hold_source: false,
        },
    );
    request.metadata.labels = Some([(DOCTOR_TRIAL_LABEL.to_owned(), trial.to_owned())].into());
    request
}

/// The counter values in a log.
pub fn values(log: &str) -> Vec<u64> {
    log.lines().filter_map(value).collect()
}

fn value(line: &str) -> Option<u64> {
    line.trim().strip_prefix("Counter: ")?.trim().parse().ok()
}

/// What the restored container printed itself.
#[derive(Debug, PartialEq, Eq)]
pub enum Continued {
    /// Nothing above the source's count yet.
    NotYet,
    /// It went on: its first value above the source's count.
    Yes(u64),
    /// It started again: a value below what the source had counted to.
    Restarted(u64),
}

/// Whether the restored counter went on, from what its log (taken with `--timestamps`) holds
/// since it `started`: the runtime carries the source's log over (containerd its last line
/// again, with a new time), so values down to `floor`, the last one the source had printed
/// before the checkpoint was asked for, may show; a value below it (a counter started again
/// prints 0; `floor` is at least 1) means it was not restored.
pub fn continued(log: &str, started: Timestamp, floor: u64) -> Continued {
    let since: Vec<u64> = log
        .lines()
        .filter_map(|line| {
            let (at, rest) = line.split_once(' ')?;
            let at: Timestamp = at.parse().ok()?;
            (at >= started).then(|| value(rest)).flatten()
        })
        .collect();
    if let Some(&below) = since.iter().find(|&&v| v < floor) {
        return Continued::Restarted(below);
    }
    match since.into_iter().find(|&v| v > floor) {
        Some(above) => Continued::Yes(above),
        None => Continued::NotYet,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_and_its_checkpoint_carry_the_trial_label() {
        let p = pod("doctor-trial-1", "ns", "node1", "busybox");
        assert_eq!(
            p.metadata.labels.unwrap()[DOCTOR_TRIAL_LABEL],
            "doctor-trial-1"
        );
        let spec = p.spec.unwrap();
        assert_eq!(spec.node_selector.unwrap()[HOSTNAME_LABEL], "node1");
        assert_eq!(spec.containers[0].image.as_deref(), Some("busybox"));
        let cc = checkpoint("doctor-trial-1");
        assert_eq!(
            cc.metadata.labels.unwrap()[DOCTOR_TRIAL_LABEL],
            "doctor-trial-1"
        );
        assert_eq!(
            (cc.spec.pod_name.as_str(), cc.spec.container.as_str()),
            ("doctor-trial-1", CONTAINER)
        );
    }

    #[test]
    fn values_are_read_from_counter_lines() {
        assert_eq!(values("Counter: 0\nnoise\nCounter: 1\n"), [0, 1]);
    }

    #[test]
    fn the_restored_counter_goes_on_or_starts_again() {
        let started: Timestamp = "2026-01-01T00:01:00Z".parse().unwrap();
        let old = "2026-01-01T00:00:05.5Z Counter: 5\n2026-01-01T00:00:06.5Z Counter: 6\n";
        assert_eq!(continued(old, started, 3), Continued::NotYet);
        // containerd writes the source's last line again as the copy starts.
        let carried = format!("{old}2026-01-01T00:01:00.1Z Counter: 6\n");
        assert_eq!(continued(&carried, started, 6), Continued::NotYet);
        let resumed = format!("{carried}2026-01-01T00:01:00.2Z Counter: 7\n");
        assert_eq!(continued(&resumed, started, 6), Continued::Yes(7));
        assert_eq!(continued(&resumed, started, 3), Continued::Yes(6));
        let restarted =
            format!("{old}2026-01-01T00:01:01Z Counter: 0\n2026-01-01T00:01:02Z Counter: 1\n");
        assert_eq!(continued(&restarted, started, 3), Continued::Restarted(0));
        assert_eq!(continued("garbage\n", started, 3), Continued::NotYet);
    }
}
