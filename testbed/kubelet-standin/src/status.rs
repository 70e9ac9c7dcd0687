//! The pod status the stand-in reports: pure functions from the Pod, what the runtime holds and
//! the failures it remembers, to a `PodStatus` and the merge patch that writes it.

use std::time::Instant;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use crate::pod::{
    self, ContainerObs, Failure, Observed, PodFailures, PullPolicy, RunState, Settings,
};

/// Pod phase, as the kubelet computes it for pods without init containers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed)
    }

    fn parse(phase: &str) -> Option<Self> {
        match phase {
            "Pending" => Some(Self::Pending),
            "Running" => Some(Self::Running),
            "Succeeded" => Some(Self::Succeeded),
            "Failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

/// A container's state reduced to what the phase depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateKind {
    Waiting,
    Running,
    Terminated { exit_code: i32 },
}

impl StateKind {
    pub fn of(state: Option<&ContainerState>) -> Self {
        match state {
            Some(ContainerState {
                running: Some(_), ..
            }) => Self::Running,
            Some(ContainerState {
                terminated: Some(t),
                ..
            }) => Self::Terminated {
                exit_code: t.exit_code,
            },
            _ => Self::Waiting,
        }
    }
}

/// Pending while any container waits (or there are none), Running while any runs, and once all
/// have exited Succeeded (all exit 0) or Failed: no restartPolicy, nothing is restarted.
pub fn pod_phase(states: &[StateKind]) -> Phase {
    if states.is_empty() || states.contains(&StateKind::Waiting) {
        Phase::Pending
    } else if states.contains(&StateKind::Running) {
        Phase::Running
    } else if states
        .iter()
        .all(|s| *s == StateKind::Terminated { exit_code: 0 })
    {
        Phase::Succeeded
    } else {
        Phase::Failed
    }
}

/// CRI nanoseconds to an API time (whole seconds, as the API stores it); `None` for 0.
pub fn time_from_nanos(nanos: i64) -> Option<Time> {
    if nanos <= 0 {
        return None;
    }
    Timestamp::from_second(nanos / 1_000_000_000).ok().map(Time)
}

/// `now` cut to whole seconds, so a recomputed status compares equal to the stored one.
pub fn whole_seconds(now: Timestamp) -> Time {
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

/// The reason shown while a failed step waits for its retry.
pub fn backoff_reason(reason: &str) -> &str {
    match reason {
        "ErrImagePull" => "ImagePullBackOff",
        other => other,
    }
}

fn waiting(reason: &str, message: Option<String>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.to_owned()),
            message,
        }),
        ..Default::default()
    }
}

/// Waiting state for a step that failed. `fresh`: it failed in this pass (else it is backing off).
fn failed_waiting(failure: &Failure, fresh: bool, image: &str) -> ContainerState {
    if fresh {
        return waiting(&failure.reason, Some(failure.message.clone()));
    }
    let reason = backoff_reason(&failure.reason);
    let message = if reason == "ImagePullBackOff" {
        format!("Back-off pulling image {image:?}: {}", failure.message)
    } else {
        failure.message.clone()
    };
    waiting(reason, Some(message))
}

/// Everything a container status is computed from.
pub struct ContainerFacts<'a> {
    pub spec: &'a Container,
    pub observed: Option<&'a ContainerObs>,
    /// This container's remembered failure and whether it happened in this pass.
    pub failure: Option<(&'a Failure, bool)>,
    /// The sandbox's remembered failure (the pod cannot start at all).
    pub sandbox_failure: Option<&'a Failure>,
    /// Whether the runtime holds the image (`None`: not asked).
    pub image_present: Option<bool>,
    /// CRI runtime name: the container ID scheme.
    pub runtime_name: &'a str,
}

/// One container's status, as `kubectl get pod -o yaml` shows it.
pub fn container_status(facts: &ContainerFacts<'_>) -> ContainerStatus {
    let image = facts.spec.image.clone().unwrap_or_default();
    let mut status = ContainerStatus {
        name: facts.spec.name.clone(),
        image: image.clone(),
        image_id: String::new(),
        ready: false,
        restart_count: 0,
        started: Some(false),
        // The API always returns `lastState: {}`; say the same so a re-read compares equal.
        last_state: Some(ContainerState::default()),
        ..Default::default()
    };
    let Some(obs) = facts.observed else {
        status.state = Some(match (facts.failure, facts.sandbox_failure) {
            (Some((failure, fresh)), _) => failed_waiting(failure, fresh, &image),
            (None, Some(sandbox)) => waiting(
                "ContainerCreating",
                Some(format!("{}: {}", sandbox.reason, sandbox.message)),
            ),
            (None, None)
                if pod::pull_policy(facts.spec) == PullPolicy::Never
                    && facts.image_present == Some(false) =>
            {
                waiting(
                    "ErrImageNeverPull",
                    Some(format!(
                        "Container image {image:?} is not present with pull policy of Never"
                    )),
                )
            }
            (None, None) => waiting("ContainerCreating", None),
        });
        return status;
    };
    status.container_id = Some(format!("{}://{}", facts.runtime_name, obs.id));
    status.image_id = obs.image_ref.clone();
    status.state = Some(match obs.state {
        RunState::Created => match facts.failure {
            Some((failure, fresh)) => failed_waiting(failure, fresh, &image),
            None => waiting("ContainerCreating", None),
        },
        RunState::Running => {
            status.ready = true;
            status.started = Some(true);
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time_from_nanos(obs.started_at),
                }),
                ..Default::default()
            }
        }
        RunState::Exited => {
            let reason = if !obs.reason.is_empty() {
                obs.reason.clone()
            } else if obs.exit_code == 0 {
                "Completed".to_owned()
            } else {
                "Error".to_owned()
            };
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    container_id: status.container_id.clone(),
                    exit_code: obs.exit_code,
                    reason: Some(reason),
                    message: Some(obs.message.clone()).filter(|m| !m.is_empty()),
                    started_at: time_from_nanos(obs.started_at),
                    finished_at: time_from_nanos(obs.finished_at),
                    signal: None,
                }),
                ..Default::default()
            }
        }
        RunState::Unknown => waiting(
            "ContainerStatusUnknown",
            Some("the runtime reports the container's state as unknown".to_owned()),
        ),
    });
    status
}

/// Inputs of [`pod_status`].
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub observed: &'a Observed,
    pub failures: &'a PodFailures,
    pub settings: &'a Settings,
    /// When this pass began: failures recorded since then are "fresh".
    pub pass_start: Instant,
    pub now: Timestamp,
}

/// The status the stand-in reports, starting from the stored one so fields it does not own
/// (qosClass, conditions set by others) survive.
pub fn pod_status(facts: &PodFacts<'_>) -> PodStatus {
    let previous = facts.pod.status.clone().unwrap_or_default();
    let sandbox = facts.observed.current_sandbox();
    let mut container_statuses: Vec<ContainerStatus> = pod::containers(facts.pod)
        .iter()
        .map(|spec| {
            let observed = sandbox.and_then(|s| facts.observed.container(&s.id, &spec.name));
            let failure = facts
                .failures
                .containers
                .get(&spec.name)
                .map(|f| (f, f.at >= facts.pass_start));
            container_status(&ContainerFacts {
                spec,
                observed,
                failure,
                sandbox_failure: facts.failures.sandbox.as_ref(),
                image_present: spec
                    .image
                    .as_ref()
                    .and_then(|i| facts.observed.images.get(i).copied()),
                runtime_name: &facts.settings.runtime_name,
            })
        })
        .collect();
    container_statuses.sort_by(|a, b| a.name.cmp(&b.name));

    let states: Vec<StateKind> = container_statuses
        .iter()
        .map(|c| StateKind::of(c.state.as_ref()))
        .collect();
    let phase = match previous.phase.as_deref().and_then(Phase::parse) {
        Some(p) if p.is_terminal() => p,
        _ => pod_phase(&states),
    };

    let host_network = facts
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let ips: Vec<String> = if host_network {
        vec![facts.settings.node_ip.clone()]
    } else {
        sandbox.map(|s| s.ips.clone()).unwrap_or_default()
    };

    let now = whole_seconds(facts.now);
    let unready: Vec<&str> = container_statuses
        .iter()
        .filter(|c| !c.ready)
        .map(|c| c.name.as_str())
        .collect();
    let (ready, reason, message) = if phase == Phase::Succeeded {
        (false, Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    let previous_conditions = previous.conditions.clone().unwrap_or_default();
    let condition = |type_: &str, ok: bool, reason: Option<&str>, message: Option<String>| {
        let status = if ok { "True" } else { "False" };
        let since = previous_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.clone());
        PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.map(str::to_owned),
            message,
            last_transition_time: Some(since),
            last_probe_time: None,
            observed_generation: None,
        }
    };
    let mut conditions: Vec<PodCondition> = previous_conditions
        .iter()
        .filter(|c| {
            !matches!(
                c.type_.as_str(),
                "Initialized" | "ContainersReady" | "Ready"
            )
        })
        .cloned()
        .collect();
    if !conditions.iter().any(|c| c.type_ == "PodScheduled") {
        conditions.push(condition("PodScheduled", true, None, None));
    }
    conditions.push(condition("Initialized", true, None, None));
    conditions.push(condition("ContainersReady", ready, reason, message.clone()));
    conditions.push(condition("Ready", ready, reason, message));
    conditions.sort_by_key(|c| condition_rank(&c.type_));

    PodStatus {
        phase: Some(phase.as_str().to_owned()),
        conditions: Some(conditions),
        host_ip: Some(facts.settings.node_ip.clone()),
        pod_ip: ips.first().cloned().or(previous.pod_ip.clone()),
        pod_ips: if ips.is_empty() {
            previous.pod_ips.clone()
        } else {
            Some(ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect())
        },
        start_time: previous.start_time.clone().or(Some(now)),
        container_statuses: Some(container_statuses),
        ..previous
    }
}

/// The order `kubectl describe` shows conditions in.
fn condition_rank(type_: &str) -> u8 {
    match type_ {
        "PodScheduled" => 4,
        "Initialized" => 0,
        "Ready" => 1,
        "ContainersReady" => 2,
        _ => 3,
    }
}

/// A JSON merge patch for `pods/status` writing the fields the stand-in owns, or `None` when
/// `next` says nothing new. Lists are replaced whole by a merge patch, which is what we want.
pub fn status_patch(previous: Option<&PodStatus>, next: &PodStatus) -> Option<serde_json::Value> {
    if previous == Some(next) {
        return None;
    }
    let mut owned = serde_json::Map::new();
    let value = serde_json::to_value(next).ok()?;
    for key in [
        "phase",
        "conditions",
        "hostIP",
        "podIP",
        "podIPs",
        "startTime",
        "containerStatuses",
    ] {
        if let Some(v) = value.get(key) {
            owned.insert(key.to_owned(), v.clone());
        }
    }
    Some(serde_json::json!({ "status": owned }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod::{SandboxObs, Step};
    use k8s_openapi::api::core::v1::PodSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::time::Duration;

    const SEC: i64 = 1_000_000_000;

    fn settings() -> Settings {
        Settings {
            node_name: "node1".into(),
            node_ip: "10.77.0.11".into(),
            cgroup_root: "/ckpt-testbed/node1".into(),
            pod_log_dir: "/var/log/pods".into(),
            runtime_name: "containerd".into(),
        }
    }

    fn pod(names: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                namespace: Some("default".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: names
                    .iter()
                    .map(|n| Container {
                        name: (*n).into(),
                        image: Some("busybox:1.36".into()),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Pending".into()),
                qos_class: Some("BestEffort".into()),
                conditions: Some(vec![PodCondition {
                    type_: "PodScheduled".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn observed(states: &[(&str, RunState, i32)]) -> Observed {
        Observed {
            sandboxes: vec![SandboxObs {
                id: "s".into(),
                attempt: 0,
                ready: true,
                created_at: SEC,
                ips: vec!["10.88.1.7".into()],
            }],
            containers: states
                .iter()
                .map(|(name, state, exit_code)| ContainerObs {
                    id: format!("id-{name}"),
                    sandbox_id: "s".into(),
                    name: (*name).into(),
                    state: *state,
                    created_at: SEC,
                    started_at: 2 * SEC + 5,
                    finished_at: if *state == RunState::Exited {
                        9 * SEC
                    } else {
                        0
                    },
                    exit_code: *exit_code,
                    image_ref: "sha256:abc".into(),
                    ..Default::default()
                })
                .collect(),
            images: Default::default(),
        }
    }

    fn status_of(p: &Pod, obs: &Observed, failures: &PodFailures, start: Instant) -> PodStatus {
        pod_status(&PodFacts {
            pod: p,
            observed: obs,
            failures,
            settings: &settings(),
            pass_start: start,
            now: Timestamp::from_second(100).unwrap(),
        })
    }

    #[test]
    fn phases() {
        use StateKind::*;
        assert_eq!(pod_phase(&[]), Phase::Pending);
        assert_eq!(pod_phase(&[Running, Waiting]), Phase::Pending);
        assert_eq!(pod_phase(&[Running, Running]), Phase::Running);
        assert_eq!(
            pod_phase(&[Running, Terminated { exit_code: 1 }]),
            Phase::Running
        );
        assert_eq!(
            pod_phase(&[Terminated { exit_code: 0 }, Terminated { exit_code: 0 }]),
            Phase::Succeeded
        );
        assert_eq!(
            pod_phase(&[Terminated { exit_code: 0 }, Terminated { exit_code: 2 }]),
            Phase::Failed
        );
    }

    #[test]
    fn running_pod_status() {
        let p = pod(&["b", "a"]);
        let obs = observed(&[("a", RunState::Running, 0), ("b", RunState::Running, 0)]);
        let s = status_of(&p, &obs, &PodFailures::default(), Instant::now());
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.88.1.7"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.88.1.7");
        assert_eq!(s.host_ip.as_deref(), Some("10.77.0.11"));
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
        assert_eq!(
            s.start_time,
            Some(Time(Timestamp::from_second(100).unwrap()))
        );
        let cs = s.container_statuses.as_ref().unwrap();
        assert_eq!(cs[0].name, "a");
        assert_eq!(cs[0].container_id.as_deref(), Some("containerd://id-a"));
        assert_eq!(cs[0].image, "busybox:1.36");
        assert_eq!(cs[0].image_id, "sha256:abc");
        assert!(cs[0].ready);
        assert_eq!(cs[0].started, Some(true));
        let running = cs[0].state.as_ref().unwrap().running.as_ref().unwrap();
        assert_eq!(
            running.started_at,
            Some(Time(Timestamp::from_second(2).unwrap()))
        );
        let types: Vec<(&str, &str)> = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| (c.type_.as_str(), c.status.as_str()))
            .collect();
        assert_eq!(
            types,
            [
                ("Initialized", "True"),
                ("Ready", "True"),
                ("ContainersReady", "True"),
                ("PodScheduled", "True")
            ]
        );
    }

    #[test]
    fn exited_containers_make_the_pod_terminal() {
        let p = pod(&["a"]);
        let ok = status_of(
            &p,
            &observed(&[("a", RunState::Exited, 0)]),
            &PodFailures::default(),
            Instant::now(),
        );
        assert_eq!(ok.phase.as_deref(), Some("Succeeded"));
        let t = ok.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .terminated
            .clone()
            .unwrap();
        assert_eq!(t.reason.as_deref(), Some("Completed"));
        assert_eq!(
            t.finished_at,
            Some(Time(Timestamp::from_second(9).unwrap()))
        );
        let bad = status_of(
            &p,
            &observed(&[("a", RunState::Exited, 3)]),
            &PodFailures::default(),
            Instant::now(),
        );
        assert_eq!(bad.phase.as_deref(), Some("Failed"));
        let ready = bad
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "False");
        assert_eq!(ready.reason.as_deref(), Some("ContainersNotReady"));
    }

    #[test]
    fn terminal_phase_sticks() {
        let mut p = pod(&["a"]);
        p.status.as_mut().unwrap().phase = Some("Failed".into());
        let s = status_of(
            &p,
            &observed(&[("a", RunState::Running, 0)]),
            &PodFailures::default(),
            Instant::now(),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn pull_failure_is_visible_then_backs_off() {
        let p = pod(&["a"]);
        let obs = Observed::default();
        let start = Instant::now();
        let mut failures = PodFailures::default();
        failures.record(
            &Step::Container("a".into()),
            "ErrImagePull",
            "failed to resolve reference".into(),
            start + Duration::from_millis(1),
        );
        let fresh = status_of(&p, &obs, &failures, start);
        let w = fresh.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
        assert_eq!(w.message.as_deref(), Some("failed to resolve reference"));
        assert_eq!(fresh.phase.as_deref(), Some("Pending"));

        let later = status_of(&p, &obs, &failures, start + Duration::from_secs(2));
        let w = later.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ImagePullBackOff"));
        assert!(w.message.unwrap().contains("failed to resolve reference"));
    }

    #[test]
    fn sandbox_failure_shows_in_container_creating() {
        let p = pod(&["a"]);
        let mut failures = PodFailures::default();
        failures.record(
            &Step::Sandbox,
            "FailedCreatePodSandBox",
            "cni failed".into(),
            Instant::now(),
        );
        let s = status_of(&p, &Observed::default(), &failures, Instant::now());
        let w = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ContainerCreating"));
        assert_eq!(
            w.message.as_deref(),
            Some("FailedCreatePodSandBox: cni failed")
        );
    }

    #[test]
    fn never_pull_absent_image() {
        let mut p = pod(&["a"]);
        p.spec.as_mut().unwrap().containers[0].image_pull_policy = Some("Never".into());
        let obs = Observed {
            images: [("busybox:1.36".to_owned(), false)].into(),
            ..Default::default()
        };
        let s = status_of(&p, &obs, &PodFailures::default(), Instant::now());
        let w = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .waiting
            .unwrap();
        assert_eq!(w.reason.as_deref(), Some("ErrImageNeverPull"));
    }

    #[test]
    fn recomputed_status_needs_no_patch() {
        let mut p = pod(&["a"]);
        let obs = observed(&[("a", RunState::Running, 0)]);
        let first = status_of(&p, &obs, &PodFailures::default(), Instant::now());
        let patch = status_patch(p.status.as_ref(), &first).expect("first write");
        assert_eq!(patch["status"]["phase"], "Running");
        assert_eq!(patch["status"]["podIP"], "10.88.1.7");
        assert!(patch["status"].get("qosClass").is_none());
        // What the API returns after the write (round trip through JSON), then a later pass.
        let stored: PodStatus =
            serde_json::from_value(serde_json::to_value(&first).unwrap()).unwrap();
        p.status = Some(stored);
        let mut later = pod_status(&PodFacts {
            pod: &p,
            observed: &obs,
            failures: &PodFailures::default(),
            settings: &settings(),
            pass_start: Instant::now(),
            now: Timestamp::from_second(500).unwrap(),
        });
        assert_eq!(status_patch(p.status.as_ref(), &later), None);
        later.phase = Some("Failed".into());
        assert!(status_patch(p.status.as_ref(), &later).is_some());
    }

    #[test]
    fn host_network_pod_uses_node_ip() {
        let mut p = pod(&["a"]);
        p.spec.as_mut().unwrap().host_network = Some(true);
        let s = status_of(
            &p,
            &observed(&[("a", RunState::Running, 0)]),
            &PodFailures::default(),
            Instant::now(),
        );
        assert_eq!(s.pod_ip.as_deref(), Some("10.77.0.11"));
    }

    #[test]
    fn times() {
        assert_eq!(time_from_nanos(0), None);
        assert_eq!(
            time_from_nanos(1_700_000_000 * SEC + 999_999_999),
            Some(Time(Timestamp::from_second(1_700_000_000).unwrap()))
        );
    }
}
