//! `migrate`'s request, how long to wait for it, and what it says while the migration runs.

use std::time::Duration;

use checkpointing::crd::{
    MigrationPhase, PodCheckpoint, PodMigration, PodMigrationSpec, PodMigrationStatus, RegistrySpec,
};

use crate::name;

/// Seconds a migration may take when the request does not say (the CRD's default).
pub const DEFAULT_TIMEOUT_SECONDS: i64 = 600;

/// Waited beyond the migration's own timeout: the controller needs a moment to notice that it
/// ran out and to say Failed, which explains more than our giving up does.
pub const MARGIN: Duration = Duration::from_secs(30);

const NONE: &str = "<none>";

/// `<pod>-migration-<unix seconds>`, made a DNS label: the controller labels the restored pod
/// with it.
pub fn default_name(pod: &str, unix_seconds: u64) -> String {
    name::dated(&format!("{pod}-migration"), unix_seconds)
}

/// The PodMigration `name` moving `pod` (to `target_node` if given); `keep_source` asks for a
/// copy, leaving the source running.
pub fn request(
    name: &str,
    pod: &str,
    target_node: Option<String>,
    keep_source: bool,
    timeout_seconds: Option<i64>,
    registry: Option<RegistrySpec>,
) -> PodMigration {
    PodMigration::new(
        name,
        PodMigrationSpec {
            pod_name: pod.to_owned(),
            target_node,
            // Unset rather than `true`: the default is the controller's to keep.
            delete_source: keep_source.then_some(false),
            timeout_seconds,
            registry,
            from_checkpoint: None,
        },
    )
}

/// How long to wait for a migration allowed `timeout_seconds` to end.
pub fn patience(timeout_seconds: Option<i64>) -> Duration {
    let seconds = timeout_seconds.unwrap_or(DEFAULT_TIMEOUT_SECONDS).max(0);
    Duration::from_secs(seconds as u64) + MARGIN
}

/// What the progress lines say: a new line each time it changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    pub phase: MigrationPhase,
    /// The archives' sizes summed, once one is known.
    pub bytes: Option<i64>,
    pub message: Option<String>,
}

impl Progress {
    /// Where the migration stands, its bytes from `checkpoint` if that is the PodCheckpoint its
    /// status names (the latest one seen may be a stale one of the same name).
    pub fn new(status: &PodMigrationStatus, checkpoint: Option<&PodCheckpoint>) -> Self {
        let checkpoint = checkpoint
            .filter(|pc| pc.metadata.name.is_some() && pc.metadata.name == status.pod_checkpoint);
        Self {
            // No status yet: the controller has not seen the request.
            phase: status.phase.unwrap_or(MigrationPhase::Pending),
            bytes: checkpoint.and_then(checkpointed_bytes),
            message: status.message.clone().filter(|m| !m.is_empty()),
        }
    }
}

/// The sum of the containers' archive sizes, if any is known yet.
fn checkpointed_bytes(pc: &PodCheckpoint) -> Option<i64> {
    pc.status
        .as_ref()?
        .containers
        .iter()
        .filter_map(|c| c.archive_size)
        .reduce(i64::saturating_add)
}

/// `<name>: <phase>[, <bytes> bytes checkpointed] (<elapsed>s)[: <message>]`.
pub fn progress_line(name: &str, progress: &Progress, elapsed_secs: u64) -> String {
    let mut line = format!("podmigration/{name}: {:?}", progress.phase);
    if let Some(bytes) = progress.bytes {
        line += &format!(", {bytes} bytes checkpointed");
    }
    line += &format!(" ({elapsed_secs}s)");
    if let Some(message) = &progress.message {
        line += &format!(": {message}");
    }
    line
}

/// The line a succeeded migration ends with: where the pod runs now and for how long it did not.
pub fn succeeded_line(name: &str, status: &PodMigrationStatus) -> String {
    let pod = status.restored_pod.as_deref().unwrap_or(NONE);
    let node = status.target_node.as_deref().unwrap_or(NONE);
    let downtime = status
        .downtime_milliseconds
        .map_or_else(|| "unknown".to_owned(), |ms| format!("{ms} ms"));
    format!("podmigration/{name} Succeeded: pod {pod} running on {node}; downtime {downtime}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpointing::names::is_dns_label;
    use serde_json::json;

    fn status(value: serde_json::Value) -> PodMigrationStatus {
        serde_json::from_value(value).unwrap()
    }

    fn checkpoint(name: &str, sizes: &[Option<i64>]) -> PodCheckpoint {
        let containers: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                json!({"name": format!("c{i}"), "containerCheckpoint": format!("{name}-c{i}"),
                       "archiveSize": size})
            })
            .collect();
        serde_json::from_value(json!({
            "apiVersion": "checkpointing.zacchaeuschok.github.io/v1alpha1",
            "kind": "PodCheckpoint",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"podName": "web"},
            "status": {"state": "Running", "containers": containers},
        }))
        .unwrap()
    }

    #[test]
    fn default_names_are_dns_labels() {
        assert_eq!(
            default_name("web", 1_700_000_000),
            "web-migration-1700000000"
        );
        let name = default_name(&"a".repeat(253), 1_700_000_000);
        assert!(is_dns_label(&name), "{name}");
        assert!(name.ends_with("-1700000000"), "{name}");
    }

    #[test]
    fn keep_source_asks_for_a_copy_and_the_default_is_left_unset() {
        let pm = request("m", "web", Some("node2".into()), true, Some(60), None);
        assert_eq!(
            serde_json::to_value(&pm.spec).unwrap(),
            json!({"podName": "web", "targetNode": "node2", "deleteSource": false,
                   "timeoutSeconds": 60})
        );
        let pm = request("m", "web", None, false, None, None);
        assert_eq!(
            serde_json::to_value(&pm.spec).unwrap(),
            json!({"podName": "web"})
        );
        assert!(pm.spec.deletes_source());
    }

    #[test]
    fn patience_is_the_timeout_and_a_margin() {
        assert_eq!(patience(None), Duration::from_secs(600) + MARGIN);
        assert_eq!(patience(Some(5)), Duration::from_secs(5) + MARGIN);
    }

    #[test]
    fn bytes_count_once_known_and_only_from_the_named_checkpoint() {
        let named = status(json!({"phase": "Checkpointing", "podCheckpoint": "m"}));
        let pc = checkpoint("m", &[Some(1000), None, Some(24)]);
        assert_eq!(Progress::new(&named, Some(&pc)).bytes, Some(1024));
        assert_eq!(
            Progress::new(&named, Some(&checkpoint("m", &[None, None]))).bytes,
            None
        );
        let unnamed = status(json!({"phase": "Checkpointing"}));
        assert_eq!(Progress::new(&unnamed, Some(&pc)).bytes, None);
        let other = status(json!({"phase": "Checkpointing", "podCheckpoint": "other"}));
        assert_eq!(Progress::new(&other, Some(&pc)).bytes, None);
        assert_eq!(Progress::new(&named, None).bytes, None);
    }

    #[test]
    fn a_new_request_is_pending() {
        assert_eq!(
            Progress::new(&status(json!({})), None),
            Progress {
                phase: MigrationPhase::Pending,
                bytes: None,
                message: None,
            }
        );
    }

    #[test]
    fn progress_lines() {
        let mut progress = Progress {
            phase: MigrationPhase::Pending,
            bytes: None,
            message: None,
        };
        assert_eq!(
            progress_line("m", &progress, 0),
            "podmigration/m: Pending (0s)"
        );
        progress.phase = MigrationPhase::Checkpointing;
        progress.bytes = Some(1_572_864);
        assert_eq!(
            progress_line("m", &progress, 3),
            "podmigration/m: Checkpointing, 1572864 bytes checkpointed (3s)"
        );
        progress.phase = MigrationPhase::Restoring;
        progress.message = Some("waiting for pod web on node2".into());
        assert_eq!(
            progress_line("m", &progress, 12),
            "podmigration/m: Restoring, 1572864 bytes checkpointed (12s): waiting for pod web on \
             node2"
        );
    }

    #[test]
    fn the_succeeded_line_names_pod_node_and_downtime() {
        let done = status(json!({
            "phase": "Succeeded", "restoredPod": "web", "targetNode": "node2",
            "downtimeMilliseconds": 1830,
        }));
        assert_eq!(
            succeeded_line("m", &done),
            "podmigration/m Succeeded: pod web running on node2; downtime 1830 ms"
        );
        assert_eq!(
            succeeded_line("m", &status(json!({"phase": "Succeeded"}))),
            "podmigration/m Succeeded: pod <none> running on <none>; downtime unknown"
        );
    }
}
