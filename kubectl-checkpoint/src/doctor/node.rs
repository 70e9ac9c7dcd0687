//! One node as the doctor sees it: its runtime and architecture, whether its noded runs (its
//! Lease fresh, expired or missing), and the prerequisite checks noded publishes on the Lease,
//! each with what a human must do when it fails. Pure.

use checkpointing::names::{
    ARCH_ANNOTATION, CANNOT_RESTORE_ANNOTATION, PREREQUISITES_ANNOTATION, RUNTIME_ANNOTATION,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::advice::{advice, no_daemon, required};
use super::state::State;

/// The Lease's prerequisites annotation (noded's `lease` module writes it).
#[derive(Debug, Default, Deserialize)]
struct Published {
    #[serde(default)]
    runtime: PublishedRuntime,
    criu: Option<String>,
    /// RFC 3339.
    checked: Option<String>,
    #[serde(default)]
    checks: Vec<PublishedCheck>,
}

#[derive(Debug, Default, Deserialize)]
struct PublishedRuntime {
    name: Option<String>,
    version: Option<String>,
}

#[derive(Debug, Deserialize)]
struct PublishedCheck {
    name: String,
    state: State,
    #[serde(default)]
    detail: String,
}

/// Whether the node's noded runs, by its Lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Daemon {
    Running,
    /// The Lease was not renewed in time: expired this many seconds ago.
    Expired {
        seconds: i64,
    },
    /// No Lease at all.
    Missing,
}

#[derive(Debug, PartialEq, Serialize)]
pub struct CheckHealth {
    pub name: String,
    pub state: State,
    pub detail: String,
    /// Failing, it keeps the node from checkpointing or restoring.
    pub required: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeHealth {
    pub name: String,
    pub daemon: Daemon,
    pub runtime: Option<String>,
    pub runtime_version: Option<String>,
    pub arch: Option<String>,
    pub criu: Option<String>,
    /// Seconds since noded last checked.
    pub checked_seconds_ago: Option<i64>,
    pub checks: Vec<CheckHealth>,
    /// Why the runtime can restore nothing, as the Lease says (migrations avoid such a node).
    pub cannot_restore: Option<String>,
    /// Takes a pod pinned to it: not cordoned, no NoSchedule or NoExecute taint.
    pub schedulable: bool,
    /// What to do about the node as a whole (no noded, no checks published).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub advice: Option<String>,
}

impl NodeHealth {
    /// `node` with its noded `lease` (if any) at `now`; `lease_namespace` for the advice.
    pub fn new(node: &Node, lease: Option<&Lease>, now: Timestamp, lease_namespace: &str) -> Self {
        let name = node.metadata.name.clone().unwrap_or_default();
        let annotation = |key: &str| {
            lease
                .and_then(|l| l.metadata.annotations.as_ref()?.get(key))
                .cloned()
        };
        let published: Published = annotation(PREREQUISITES_ANNOTATION)
            .and_then(|json| serde_json::from_str(&json).ok())
            .unwrap_or_default();
        let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
        // `containerd://2.2.7`, `cri-o://1.34.1`: what the kubelet says when noded does not.
        let (kubelet_runtime, kubelet_version) = info
            .and_then(|i| i.container_runtime_version.split_once("://"))
            .map_or((None, None), |(n, v)| {
                (Some(n.to_owned()), Some(v.to_owned()))
            });
        let daemon = daemon(lease, now);
        let taints = taints(node);
        let runtime = published
            .runtime
            .name
            .or_else(|| annotation(RUNTIME_ANNOTATION))
            .or(kubelet_runtime);
        let pod_level_ok = published
            .checks
            .iter()
            .any(|c| c.name == "pod_level" && c.state == State::Ok);
        let checks = published
            .checks
            .into_iter()
            .map(|c| CheckHealth {
                advice: advice(&c.name, c.state, runtime.as_deref()),
                required: required(&c.name, pod_level_ok),
                name: c.name,
                state: c.state,
                detail: c.detail,
            })
            .collect::<Vec<_>>();
        let advice = match daemon {
            Daemon::Running if checks.is_empty() => Some(
                "its noded publishes no prerequisite checks (an older noded, or its first check \
                 has not ended): upgrade noded, or look again in a minute"
                    .to_owned(),
            ),
            Daemon::Running => None,
            Daemon::Expired { seconds } => {
                Some(no_daemon(&name, Some(seconds), &taints, lease_namespace))
            }
            Daemon::Missing => Some(no_daemon(&name, None, &taints, lease_namespace)),
        };
        let cordoned = node
            .spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false);
        Self {
            daemon,
            runtime_version: published.runtime.version.or(kubelet_version),
            arch: annotation(ARCH_ANNOTATION).or_else(|| info.map(|i| i.architecture.clone())),
            criu: published.criu,
            checked_seconds_ago: published
                .checked
                .and_then(|t| t.parse::<Timestamp>().ok())
                .map(|t| now.as_second() - t.as_second()),
            cannot_restore: annotation(CANNOT_RESTORE_ANNOTATION),
            schedulable: !cordoned && taints.iter().all(|t| t.ends_with(":PreferNoSchedule")),
            runtime,
            checks,
            advice,
            name,
        }
    }

    /// The failing items of this node, one line each; none for a node without noded (it may
    /// be meant to run none).
    pub fn problems(&self) -> Vec<String> {
        if self.daemon != Daemon::Running {
            return Vec::new();
        }
        if self.checks.is_empty() {
            return vec![format!(
                "{}: {}",
                self.name,
                self.advice.as_deref().unwrap_or_default()
            )];
        }
        self.checks
            .iter()
            .filter(|c| c.required && !c.state.met())
            .map(|c| {
                let what = c.advice.as_deref().unwrap_or_default();
                format!(
                    "{}: {} {} ({}): {what}",
                    self.name, c.name, c.state, c.detail
                )
            })
            .collect()
    }

    /// Its noded runs and every required check is met.
    pub fn ready(&self) -> bool {
        self.daemon == Daemon::Running && self.problems().is_empty()
    }
}

/// Running while the Lease's renewal is within its duration.
fn daemon(lease: Option<&Lease>, now: Timestamp) -> Daemon {
    let Some(lease) = lease else {
        return Daemon::Missing;
    };
    let spec = lease.spec.as_ref();
    let renewed = spec.and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .map_or(0, i64::from);
    match renewed {
        Some(renewed) => {
            let expired_for = now.as_second() - renewed.as_second() - duration;
            if expired_for > 0 {
                Daemon::Expired {
                    seconds: expired_for,
                }
            } else {
                Daemon::Running
            }
        }
        None => Daemon::Expired { seconds: 0 },
    }
}

/// The node's taints as kubectl shows them: `key=value:Effect`.
fn taints(node: &Node) -> Vec<String> {
    node.spec
        .iter()
        .flat_map(|s| s.taints.iter().flatten())
        .map(|t| match &t.value {
            Some(v) => format!("{}={v}:{}", t.key, t.effect),
            None => format!("{}:{}", t.key, t.effect),
        })
        .collect()
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use serde_json::json;

    pub fn now() -> Timestamp {
        "2026-01-01T00:10:00Z".parse().unwrap()
    }

    pub fn node(name: &str, arch: &str, runtime: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"nodeInfo": {
                "architecture": arch, "containerRuntimeVersion": runtime,
                "bootID": "", "kernelVersion": "", "kubeProxyVersion": "", "kubeletVersion": "",
                "machineID": "", "operatingSystem": "linux", "osImage": "", "systemUUID": "",
            }},
        }))
        .unwrap()
    }

    /// A Lease renewed at `renewed` (for 30 s) publishing `checks` as `(name, state)`.
    pub fn lease(runtime: &str, renewed: &str, checks: &[(&str, &str)]) -> Lease {
        let checks: Vec<_> = checks
            .iter()
            .map(|(name, state)| json!({"name": name, "state": state, "detail": format!("{name} says")}))
            .collect();
        let published = json!({
            "runtime": {"name": runtime, "version": "9.9"},
            "criu": "4.1",
            "checked": "2026-01-01T00:09:30Z",
            "checks": checks,
        });
        serde_json::from_value(json!({
            "metadata": {"name": "l", "annotations": {
                RUNTIME_ANNOTATION: runtime,
                ARCH_ANNOTATION: "amd64",
                PREREQUISITES_ANNOTATION: published.to_string(),
            }},
            "spec": {"renewTime": renewed, "leaseDurationSeconds": 30},
        }))
        .unwrap()
    }

    pub const ALL_OK: [(&str, &str); 6] = [
        ("cri", "ok"),
        ("criu", "ok"),
        ("restore", "assumed"),
        ("checkpoint_dir", "ok"),
        ("pod_level", "failed"),
        ("tcp_close", "ok"),
    ];

    #[test]
    fn a_fresh_lease_tells_runtime_checks_and_advice() {
        let mut checks = ALL_OK.to_vec();
        checks[1] = ("criu", "failed");
        checks[5] = ("tcp_close", "failed");
        let lease = lease("cri-o", "2026-01-01T00:09:50.5Z", &checks);
        let health = NodeHealth::new(
            &node("n1", "amd64", "cri-o://1.0"),
            Some(&lease),
            now(),
            "ns",
        );
        assert_eq!(health.daemon, Daemon::Running);
        assert_eq!(
            (health.runtime.as_deref(), health.runtime_version.as_deref()),
            (Some("cri-o"), Some("9.9"))
        );
        assert_eq!(health.criu.as_deref(), Some("4.1"));
        assert_eq!(health.checked_seconds_ago, Some(30));
        assert_eq!(health.checks.len(), 6);
        let criu = &health.checks[1];
        assert!(
            criu.required
                && criu
                    .advice
                    .as_ref()
                    .unwrap()
                    .contains("enable_criu_support")
        );
        assert!(!health.checks[5].required && health.checks[5].advice.is_some());
        assert!(health.checks[0].advice.is_none());
        // Only the required one fails the node; tcp_close and pod_level are advice.
        let problems = health.problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("n1: criu failed (criu says): install CRIU"));
        assert!(!health.ready());
    }

    #[test]
    fn a_node_with_every_required_check_met_is_ready() {
        let lease = lease("containerd", "2026-01-01T00:09:45Z", &ALL_OK);
        let health = NodeHealth::new(&node("n1", "arm64", "x"), Some(&lease), now(), "ns");
        assert!(health.ready(), "{:?}", health.problems());
        assert_eq!(
            health.arch.as_deref(),
            Some("amd64"),
            "the Lease's word first"
        );
        assert!(health.schedulable);
    }

    #[test]
    fn a_failing_restore_is_made_up_for_by_restore_pod() {
        let health = |checks: &[(&str, &str)]| {
            let lease = lease("containerd", "2026-01-01T00:09:45Z", checks);
            NodeHealth::new(&node("n1", "amd64", "x"), Some(&lease), now(), "ns")
        };
        let mut checks = ALL_OK.to_vec();
        checks[2] = ("restore", "failed");
        assert!(!health(&checks).ready());
        checks[4] = ("pod_level", "ok");
        let pod_level = health(&checks);
        assert!(pod_level.ready(), "{:?}", pod_level.problems());
    }

    #[test]
    fn without_a_live_lease_there_is_no_daemon_and_the_kubelet_names_the_runtime() {
        let mut n = node("n2", "arm64", "containerd://2.2.7");
        n.spec = Some(
            serde_json::from_value(json!({"taints": [
                {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"},
                {"key": "gpu", "value": "yes", "effect": "NoExecute"},
            ]}))
            .unwrap(),
        );
        let missing = NodeHealth::new(&n, None, now(), "ns");
        assert_eq!(missing.daemon, Daemon::Missing);
        assert_eq!(
            (
                missing.runtime.as_deref(),
                missing.runtime_version.as_deref(),
                missing.arch.as_deref()
            ),
            (Some("containerd"), Some("2.2.7"), Some("arm64"))
        );
        let advice = missing.advice.as_deref().unwrap();
        assert!(
            advice.contains("node-role.kubernetes.io/control-plane:NoSchedule, gpu=yes:NoExecute"),
            "{advice}"
        );
        assert!(!missing.schedulable);
        assert!(missing.problems().is_empty() && !missing.ready());

        let stale = lease("containerd", "2026-01-01T00:08:00Z", &ALL_OK);
        let expired = NodeHealth::new(&n, Some(&stale), now(), "ns");
        assert_eq!(expired.daemon, Daemon::Expired { seconds: 90 });
        assert!(expired.advice.unwrap().contains("stopped renewing"));
    }

    #[test]
    fn a_lease_without_published_checks_is_not_ready() {
        let mut l = lease("cri-o", "2026-01-01T00:09:45Z", &[]);
        l.metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(PREREQUISITES_ANNOTATION);
        let health = NodeHealth::new(&node("n1", "amd64", "cri-o://1.36"), Some(&l), now(), "ns");
        assert_eq!(health.runtime.as_deref(), Some("cri-o"));
        assert_eq!(health.problems().len(), 1);
        assert!(health.problems()[0].contains("publishes no prerequisite checks"));
    }

    #[test]
    fn an_unknown_verdict_is_not_met() {
        let l = lease("cri-o", "2026-01-01T00:09:45Z", &[("cri", "maybe")]);
        let health = NodeHealth::new(&node("n1", "amd64", "x"), Some(&l), now(), "ns");
        assert_eq!(health.checks[0].state, State::Unknown);
        assert!(!health.ready());
    }
}
