//! What the stand-in wants the runtime to do for one pod. Pure functions from the Pod object and
//! what the runtime reports ([`Observed`]) to CRI configs and an ordered plan of [`Action`]s;
//! `supervisor.rs` carries them out.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use checkpointing::cri::api;
use checkpointing::names::kubelet as label;
use k8s_openapi::api::core::v1::{Container, Pod};

/// Grace period when neither the deletion nor the pod spec names one (the API's default).
pub const DEFAULT_GRACE_SECONDS: i64 = 30;

/// Container annotations the kubelet sets (read back by tools such as crictl and checkpointctl).
pub mod annotation {
    pub const RESTART_COUNT: &str = "io.kubernetes.container.restartCount";
    pub const TERMINATION_MESSAGE_PATH: &str = "io.kubernetes.container.terminationMessagePath";
    pub const TERMINATION_MESSAGE_POLICY: &str = "io.kubernetes.container.terminationMessagePolicy";
    pub const TERMINATION_GRACE_PERIOD: &str = "io.kubernetes.pod.terminationGracePeriod";
}

/// What the stand-in knows about its node; every CRI config is derived from it and the Pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub node_name: String,
    pub node_ip: String,
    /// cgroupfs parent of every pod: `<cgroup_root>/pod<uid>`.
    pub cgroup_root: String,
    /// Directory under which each pod's `<ns>_<name>_<uid>/` log directory lives.
    pub pod_log_dir: PathBuf,
    /// `runtime_name` from CRI Version: the scheme of container IDs (`containerd://…`).
    pub runtime_name: String,
}

// ------------------------------------------------------------------ what the runtime reports

/// A pod sandbox as the runtime reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct SandboxObs {
    pub id: String,
    pub attempt: u32,
    pub ready: bool,
    /// Unix nanoseconds.
    pub created_at: i64,
    /// Primary IP first; empty when unknown (or not asked, for sandboxes that are not ready).
    pub ips: Vec<String>,
}

/// CRI container state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    Created,
    Running,
    Exited,
    Unknown,
}

impl RunState {
    pub fn from_cri(state: i32) -> Self {
        match api::ContainerState::try_from(state) {
            Ok(api::ContainerState::ContainerCreated) => Self::Created,
            Ok(api::ContainerState::ContainerRunning) => Self::Running,
            Ok(api::ContainerState::ContainerExited) => Self::Exited,
            _ => Self::Unknown,
        }
    }
}

/// A container as the runtime reports it (ListContainers + ContainerStatus).
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerObs {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: RunState,
    /// Unix nanoseconds; 0 when not (yet) reached.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    pub reason: String,
    pub message: String,
    /// The image the runtime resolved (`name@sha256:…` or an image ID).
    pub image_ref: String,
}

impl Default for ContainerObs {
    fn default() -> Self {
        Self {
            id: String::new(),
            sandbox_id: String::new(),
            name: String::new(),
            attempt: 0,
            state: RunState::Unknown,
            created_at: 0,
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
        }
    }
}

/// Everything the runtime holds for one pod UID (found by the `io.kubernetes.pod.uid` label).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    pub sandboxes: Vec<SandboxObs>,
    pub containers: Vec<ContainerObs>,
    /// Image reference (as in the pod spec) -> present in the runtime. Only images of
    /// containers still to be created are looked up.
    pub images: HashMap<String, bool>,
}

impl Observed {
    /// The ready sandbox the pod runs in: the one holding most containers, newest on a tie.
    pub fn ready_sandbox(&self) -> Option<&SandboxObs> {
        self.sandboxes
            .iter()
            .filter(|s| s.ready)
            .max_by_key(|s| (self.containers_in(&s.id), s.created_at))
    }

    /// The sandbox whose containers the pod status reports: the ready one, else the newest.
    pub fn current_sandbox(&self) -> Option<&SandboxObs> {
        self.ready_sandbox()
            .or_else(|| self.sandboxes.iter().max_by_key(|s| s.created_at))
    }

    pub fn containers_in(&self, sandbox_id: &str) -> usize {
        self.containers
            .iter()
            .filter(|c| c.sandbox_id == sandbox_id)
            .count()
    }

    /// The latest container named `name` in the sandbox (highest attempt, then newest).
    pub fn container(&self, sandbox_id: &str, name: &str) -> Option<&ContainerObs> {
        self.containers
            .iter()
            .filter(|c| c.sandbox_id == sandbox_id && c.name == name)
            .max_by_key(|c| (c.attempt, c.created_at))
    }

    /// Attempt number for a new sandbox: one past every sandbox seen.
    pub fn next_sandbox_attempt(&self) -> u32 {
        self.sandboxes
            .iter()
            .map(|s| s.attempt + 1)
            .max()
            .unwrap_or(0)
    }
}

// ------------------------------------------------------------------ failures and back-off

/// A step that failed for a pod, remembered between passes for back-off and for the status.
#[derive(Clone, Debug, PartialEq)]
pub struct Failure {
    /// Kubelet reason: `ErrImagePull`, `CreateContainerConfigError`, `CreateContainerError`,
    /// `RunContainerError`, `FailedCreatePodSandBox`.
    pub reason: String,
    pub message: String,
    /// Consecutive failures of this step.
    pub attempts: u32,
    pub at: Instant,
}

impl Failure {
    /// When the step may be tried again.
    pub fn retry_at(&self) -> Instant {
        self.at + backoff(self.attempts)
    }
}

/// 5 s after the first failure, doubling, at most 60 s (the kubelet: 10 s to 300 s; shorter
/// here so tests see a fixed registry or image quickly).
pub fn backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(4);
    Duration::from_secs(5 << exp).min(Duration::from_secs(60))
}

/// Failures of one pod: its sandbox and each container (by name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodFailures {
    pub sandbox: Option<Failure>,
    pub containers: HashMap<String, Failure>,
}

/// Which step of a pod failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Sandbox,
    Container(String),
}

impl PodFailures {
    pub fn record(&mut self, step: &Step, reason: &str, message: String, now: Instant) {
        let slot = match step {
            Step::Sandbox => &mut self.sandbox,
            Step::Container(name) => {
                let previous = self.containers.remove(name);
                self.containers.insert(
                    name.clone(),
                    next_failure(previous, reason, message.clone(), now),
                );
                return;
            }
        };
        *slot = Some(next_failure(slot.take(), reason, message, now));
    }

    pub fn clear(&mut self, step: &Step) {
        match step {
            Step::Sandbox => self.sandbox = None,
            Step::Container(name) => {
                self.containers.remove(name);
            }
        }
    }

    pub fn get(&self, step: &Step) -> Option<&Failure> {
        match step {
            Step::Sandbox => self.sandbox.as_ref(),
            Step::Container(name) => self.containers.get(name),
        }
    }

    fn backing_off(&self, step: &Step, now: Instant) -> bool {
        self.get(step).is_some_and(|f| now < f.retry_at())
    }
}

fn next_failure(previous: Option<Failure>, reason: &str, message: String, now: Instant) -> Failure {
    Failure {
        reason: reason.to_owned(),
        message,
        attempts: previous.map_or(1, |p| p.attempts.saturating_add(1)),
        at: now,
    }
}

// ------------------------------------------------------------------ the plan

/// One runtime or API effect. The plan lists them in the order they must happen.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// RunPodSandbox with this attempt number.
    RunSandbox {
        attempt: u32,
    },
    /// PullImage before creating `container`.
    PullImage {
        container: String,
        image: String,
    },
    /// CreateContainer, then StartContainer, in the ready (or just created) sandbox.
    CreateContainer {
        container: String,
    },
    /// StartContainer for a container created earlier but never started.
    StartContainer {
        container: String,
        id: String,
    },
    StopContainer {
        id: String,
        grace_seconds: i64,
    },
    StopSandbox {
        id: String,
    },
    RemoveSandbox {
        id: String,
    },
    /// Delete the Pod object (grace 0, UID precondition): the API waits for this.
    DeletePod,
}

/// What to do next for `pod`, given what the runtime holds and which steps are backing off.
/// Idempotent: running it again after its actions succeeded yields nothing new.
pub fn plan(pod: &Pod, observed: &Observed, failures: &PodFailures, now: Instant) -> Vec<Action> {
    if pod.metadata.deletion_timestamp.is_some() {
        return teardown(observed, grace_seconds(pod));
    }
    let mut actions = Vec::new();
    let sandbox = observed.ready_sandbox();
    if sandbox.is_none() {
        if !observed.containers.is_empty() {
            // The pod's containers ran in a sandbox that is gone or stopped. The kubelet would
            // restart the pod per restartPolicy; the stand-in does not restart (README).
            return actions;
        }
        if failures.backing_off(&Step::Sandbox, now) {
            return actions;
        }
        actions.push(Action::RunSandbox {
            attempt: observed.next_sandbox_attempt(),
        });
    }
    for container in containers(pod) {
        let step = Step::Container(container.name.clone());
        let existing = sandbox.and_then(|s| observed.container(&s.id, &container.name));
        match existing {
            Some(c) if c.state == RunState::Created => {
                if !failures.backing_off(&step, now) {
                    actions.push(Action::StartContainer {
                        container: container.name.clone(),
                        id: c.id.clone(),
                    });
                }
            }
            // Running, exited or unknown: nothing to do (no restarts).
            Some(_) => {}
            None => {
                if failures.backing_off(&step, now) {
                    continue;
                }
                let image = container.image.clone().unwrap_or_default();
                let present = observed.images.get(&image).copied().unwrap_or(false);
                match pull_policy(container) {
                    PullPolicy::Always => actions.push(Action::PullImage {
                        container: container.name.clone(),
                        image,
                    }),
                    PullPolicy::IfNotPresent if !present => actions.push(Action::PullImage {
                        container: container.name.clone(),
                        image,
                    }),
                    PullPolicy::Never if !present => continue,
                    PullPolicy::IfNotPresent | PullPolicy::Never => {}
                }
                actions.push(Action::CreateContainer {
                    container: container.name.clone(),
                });
            }
        }
    }
    actions
}

/// Stop what runs, stop and remove every sandbox of the pod, then delete the Pod object.
fn teardown(observed: &Observed, grace_seconds: i64) -> Vec<Action> {
    let mut actions: Vec<Action> = observed
        .containers
        .iter()
        .filter(|c| c.state != RunState::Exited)
        .map(|c| Action::StopContainer {
            id: c.id.clone(),
            grace_seconds,
        })
        .collect();
    for s in &observed.sandboxes {
        actions.push(Action::StopSandbox { id: s.id.clone() });
        actions.push(Action::RemoveSandbox { id: s.id.clone() });
    }
    actions.push(Action::DeletePod);
    actions
}

/// Seconds a container gets between SIGTERM and SIGKILL: the deletion's grace period, else the
/// pod's `terminationGracePeriodSeconds`, else 30.
pub fn grace_seconds(pod: &Pod) -> i64 {
    pod.metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(DEFAULT_GRACE_SECONDS)
        .max(0)
}

/// The pod's (regular) containers.
pub fn containers(pod: &Pod) -> &[Container] {
    pod.spec.as_ref().map_or(&[], |s| s.containers.as_slice())
}

/// Images the plan needs to know about: those of containers not created in the ready sandbox.
pub fn images_to_check(pod: &Pod, observed: &Observed) -> Vec<String> {
    let sandbox = observed.ready_sandbox();
    let mut images: Vec<String> = containers(pod)
        .iter()
        .filter(|c| sandbox.is_none_or(|s| observed.container(&s.id, &c.name).is_none()))
        .filter_map(|c| c.image.clone())
        .collect();
    images.sort();
    images.dedup();
    images
}

// ------------------------------------------------------------------ image pull policy

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

/// The container's `imagePullPolicy`, or the API's default for its image when unset.
pub fn pull_policy(container: &Container) -> PullPolicy {
    match container.image_pull_policy.as_deref() {
        Some("Always") => PullPolicy::Always,
        Some("Never") => PullPolicy::Never,
        Some("IfNotPresent") => PullPolicy::IfNotPresent,
        _ => default_pull_policy(container.image.as_deref().unwrap_or_default()),
    }
}

/// `Always` for `:latest` or untagged images, `IfNotPresent` otherwise (digests included).
pub fn default_pull_policy(image: &str) -> PullPolicy {
    if image.contains('@') {
        return PullPolicy::IfNotPresent;
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.split_once(':') {
        Some((_, tag)) if tag != "latest" => PullPolicy::IfNotPresent,
        _ => PullPolicy::Always,
    }
}

// ------------------------------------------------------------------ CRI configs

/// `<ns>_<name>_<uid>`: the pod's log directory under `--pod-log-dir`, as the kubelet names it.
pub fn log_dir_name(namespace: &str, name: &str, uid: &str) -> String {
    format!("{namespace}_{name}_{uid}")
}

fn pod_identity(pod: &Pod) -> (&str, &str, &str) {
    (
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or_default(),
        pod.metadata.uid.as_deref().unwrap_or_default(),
    )
}

/// The kubelet's three pod labels.
pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let (namespace, name, uid) = pod_identity(pod);
    HashMap::from([
        (label::POD_NAME.to_owned(), name.to_owned()),
        (label::POD_NAMESPACE.to_owned(), namespace.to_owned()),
        (label::POD_UID.to_owned(), uid.to_owned()),
    ])
}

/// cgroupfs parent of the pod: `<cgroup_root>/pod<uid>`.
pub fn cgroup_parent(settings: &Settings, uid: &str) -> String {
    format!("{}/pod{uid}", settings.cgroup_root.trim_end_matches('/'))
}

/// The sandbox's hostname: `spec.hostname` or the pod name, cut to 63 characters.
pub fn hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default());
    let cut: String = name.chars().take(63).collect();
    cut.trim_end_matches(['-', '.']).to_owned()
}

fn namespace_options(pod: &Pod) -> api::NamespaceOption {
    let spec = pod.spec.as_ref();
    let flag = |f: fn(&k8s_openapi::api::core::v1::PodSpec) -> Option<bool>| {
        spec.and_then(f).unwrap_or(false)
    };
    let mode = |host: bool, otherwise: api::NamespaceMode| {
        if host {
            api::NamespaceMode::Node as i32
        } else {
            otherwise as i32
        }
    };
    let pid_default = if flag(|s| s.share_process_namespace) {
        api::NamespaceMode::Pod
    } else {
        api::NamespaceMode::Container
    };
    api::NamespaceOption {
        network: mode(flag(|s| s.host_network), api::NamespaceMode::Pod),
        pid: mode(flag(|s| s.host_pid), pid_default),
        ipc: mode(flag(|s| s.host_ipc), api::NamespaceMode::Pod),
        target_id: String::new(),
    }
}

fn privileged(container: &Container) -> bool {
    container
        .security_context
        .as_ref()
        .and_then(|s| s.privileged)
        .unwrap_or(false)
}

/// RunPodSandbox's config, as the kubelet builds it (minus DNS, ports and sysctls' validation).
pub fn sandbox_config(pod: &Pod, settings: &Settings, attempt: u32) -> api::PodSandboxConfig {
    let (namespace, name, uid) = pod_identity(pod);
    let mut labels: HashMap<String, String> = pod
        .metadata
        .labels
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    labels.extend(pod_labels(pod));
    let annotations: HashMap<String, String> = pod
        .metadata
        .annotations
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    let pod_security = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sysctls = pod_security
        .and_then(|s| s.sysctls.as_ref())
        .map(|list| {
            list.iter()
                .map(|s| (s.name.clone(), s.value.clone()))
                .collect()
        })
        .unwrap_or_default();
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_owned(),
            uid: uid.to_owned(),
            namespace: namespace.to_owned(),
            attempt,
        }),
        hostname: hostname(pod),
        log_directory: settings
            .pod_log_dir
            .join(log_dir_name(namespace, name, uid))
            .to_string_lossy()
            .into_owned(),
        dns_config: None,
        labels,
        annotations,
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent(settings, uid),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(pod)),
                run_as_user: pod_security
                    .and_then(|s| s.run_as_user)
                    .map(|value| api::Int64Value { value }),
                run_as_group: pod_security
                    .and_then(|s| s.run_as_group)
                    .map(|value| api::Int64Value { value }),
                readonly_rootfs: false,
                privileged: containers(pod).iter().any(privileged),
            }),
            sysctls,
        }),
    }
}

/// Why a container's config could not be built (the kubelet's `CreateContainerConfigError`).
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Values the downward API (`env[].valueFrom.fieldRef`) may read that are not in the Pod object.
#[derive(Clone, Debug, Default)]
pub struct Downward {
    pub pod_ips: Vec<String>,
    pub host_ip: String,
}

/// CreateContainer's config for `container` of `pod`: the image exactly as in the spec (a
/// checkpoint image reference makes containerd restore), command/args/env with `$(VAR)`
/// expansion, the kubelet's labels and annotations, and `<container>/0.log` as log path.
pub fn container_config(
    pod: &Pod,
    container: &Container,
    downward: &Downward,
) -> Result<api::ContainerConfig, ConfigError> {
    let (_, pod_name, _) = pod_identity(pod);
    let env = environment(pod, container, downward)?;
    let lookup: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let expand_all = |items: &Option<Vec<String>>| -> Vec<String> {
        items.iter().flatten().map(|s| expand(s, &lookup)).collect()
    };
    let mut labels = pod_labels(pod);
    labels.insert(label::CONTAINER_NAME.to_owned(), container.name.clone());
    let annotations = HashMap::from([
        (annotation::RESTART_COUNT.to_owned(), "0".to_owned()),
        (
            annotation::TERMINATION_MESSAGE_PATH.to_owned(),
            container
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".to_owned()),
        ),
        (
            annotation::TERMINATION_MESSAGE_POLICY.to_owned(),
            container
                .termination_message_policy
                .clone()
                .unwrap_or_else(|| "File".to_owned()),
        ),
        (
            annotation::TERMINATION_GRACE_PERIOD.to_owned(),
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
                .unwrap_or(DEFAULT_GRACE_SECONDS)
                .to_string(),
        ),
    ]);
    let image = container.image.clone().unwrap_or_default();
    if image.is_empty() {
        return Err(ConfigError(format!(
            "container {:?} of pod {pod_name:?} has no image",
            container.name
        )));
    }
    let security = container.security_context.as_ref();
    let pod_security = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    Ok(api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: container.name.clone(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.clone(),
            user_specified_image: image,
            ..Default::default()
        }),
        command: expand_all(&container.command),
        args: expand_all(&container.args),
        working_dir: container.working_dir.clone().unwrap_or_default(),
        envs: env
            .iter()
            .map(|(key, value)| api::KeyValue {
                key: key.clone(),
                value: value.clone().into_bytes(),
            })
            .collect(),
        mounts: Vec::new(),
        labels,
        annotations,
        log_path: format!("{}/0.log", container.name),
        stdin: container.stdin.unwrap_or(false),
        stdin_once: container.stdin_once.unwrap_or(false),
        tty: container.tty.unwrap_or(false),
        linux: Some(api::LinuxContainerConfig {
            resources: None,
            security_context: Some(api::LinuxContainerSecurityContext {
                privileged: privileged(container),
                namespace_options: Some(namespace_options(pod)),
                run_as_user: security
                    .and_then(|s| s.run_as_user)
                    .or_else(|| pod_security.and_then(|s| s.run_as_user))
                    .map(|value| api::Int64Value { value }),
                run_as_username: String::new(),
                readonly_rootfs: security
                    .and_then(|s| s.read_only_root_filesystem)
                    .unwrap_or(false),
                no_new_privs: security
                    .and_then(|s| s.allow_privilege_escalation)
                    .is_some_and(|allow| !allow),
                run_as_group: security
                    .and_then(|s| s.run_as_group)
                    .or_else(|| pod_security.and_then(|s| s.run_as_group))
                    .map(|value| api::Int64Value { value }),
            }),
        }),
    })
}

/// The container's environment in spec order, each value `$(VAR)`-expanded against the ones
/// before it; `valueFrom.fieldRef` is resolved, other sources are refused.
pub fn environment(
    pod: &Pod,
    container: &Container,
    downward: &Downward,
) -> Result<Vec<(String, String)>, ConfigError> {
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(ConfigError(format!(
            "container {:?}: envFrom is not supported by the testbed kubelet stand-in",
            container.name
        )));
    }
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, &var.value_from) {
            (_, Some(from)) => match &from.field_ref {
                Some(field) => field_value(pod, &field.field_path, downward).ok_or_else(|| {
                    ConfigError(format!(
                        "env {:?}: unsupported fieldRef {:?}",
                        var.name, field.field_path
                    ))
                })?,
                None => {
                    return Err(ConfigError(format!(
                        "env {:?}: only valueFrom.fieldRef is supported by the testbed kubelet \
                         stand-in (no configMapKeyRef, secretKeyRef, resourceFieldRef)",
                        var.name
                    )));
                }
            },
            (Some(value), None) => {
                let lookup: HashMap<&str, &str> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                expand(value, &lookup)
            }
            (None, None) => String::new(),
        };
        env.retain(|(k, _)| *k != var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

/// The downward API's `fieldRef` paths the kubelet resolves.
pub fn field_value(pod: &Pod, path: &str, downward: &Downward) -> Option<String> {
    let (namespace, name, uid) = pod_identity(pod);
    let spec = pod.spec.as_ref();
    let keyed = |prefix: &str, map: &Option<BTreeMap<String, String>>| -> Option<String> {
        let key = path
            .strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")?;
        Some(
            map.as_ref()
                .and_then(|m| m.get(key))
                .cloned()
                .unwrap_or_default(),
        )
    };
    match path {
        "metadata.name" => Some(name.to_owned()),
        "metadata.namespace" => Some(namespace.to_owned()),
        "metadata.uid" => Some(uid.to_owned()),
        "spec.nodeName" => Some(spec.and_then(|s| s.node_name.clone()).unwrap_or_default()),
        "spec.serviceAccountName" => Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_default(),
        ),
        "status.hostIP" => Some(downward.host_ip.clone()),
        "status.podIP" => Some(downward.pod_ips.first().cloned().unwrap_or_default()),
        "status.podIPs" => Some(downward.pod_ips.join(",")),
        _ => keyed("metadata.labels", &pod.metadata.labels)
            .or_else(|| keyed("metadata.annotations", &pod.metadata.annotations)),
    }
}

/// Kubernetes' `$(VAR)` expansion: defined variables are replaced, `$$` is an escaped `$`, and
/// anything else (undefined variables included) is left as written.
pub fn expand(input: &str, vars: &HashMap<&str, &str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match vars.get(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, EnvVar, EnvVarSource, ObjectFieldSelector, PodSpec, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn settings() -> Settings {
        Settings {
            node_name: "node1".into(),
            node_ip: "10.77.0.11".into(),
            cgroup_root: "/ckpt-testbed/node1".into(),
            pod_log_dir: "/var/log/pods".into(),
            runtime_name: "containerd".into(),
        }
    }

    fn container(name: &str, image: &str) -> Container {
        Container {
            name: name.into(),
            image: Some(image.into()),
            ..Default::default()
        }
    }

    fn pod(containers: Vec<Container>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("stateful-app".into()),
                namespace: Some("default".into()),
                uid: Some("u-1".into()),
                labels: Some(BTreeMap::from([("app".into(), "counter".into())])),
                annotations: Some(BTreeMap::from([("a".into(), "b".into())])),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers,
                node_name: Some("node1".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn sandbox(id: &str, ready: bool, created_at: i64) -> SandboxObs {
        SandboxObs {
            id: id.into(),
            attempt: 0,
            ready,
            created_at,
            ips: vec!["10.88.1.5".into()],
        }
    }

    fn ctr(id: &str, sandbox: &str, name: &str, state: RunState) -> ContainerObs {
        ContainerObs {
            id: id.into(),
            sandbox_id: sandbox.into(),
            name: name.into(),
            state,
            created_at: 1,
            ..Default::default()
        }
    }

    fn images(pairs: &[(&str, bool)]) -> HashMap<String, bool> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn fresh_pod_gets_sandbox_pull_and_create() {
        let p = pod(vec![container("app", "localhost:5000/busybox:1.36")]);
        let obs = Observed {
            images: images(&[("localhost:5000/busybox:1.36", false)]),
            ..Default::default()
        };
        assert_eq!(
            plan(&p, &obs, &PodFailures::default(), Instant::now()),
            vec![
                Action::RunSandbox { attempt: 0 },
                Action::PullImage {
                    container: "app".into(),
                    image: "localhost:5000/busybox:1.36".into()
                },
                Action::CreateContainer {
                    container: "app".into()
                },
            ]
        );
    }

    #[test]
    fn present_tagged_image_is_not_pulled_but_latest_is() {
        let p = pod(vec![
            container("a", "busybox:1.36"),
            container("b", "busybox:latest"),
            container("c", "busybox"),
        ]);
        let obs = Observed {
            sandboxes: vec![sandbox("s1", true, 1)],
            images: images(&[
                ("busybox:1.36", true),
                ("busybox:latest", true),
                ("busybox", true),
            ]),
            ..Default::default()
        };
        let actions = plan(&p, &obs, &PodFailures::default(), Instant::now());
        let pulls: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::PullImage { container, .. } => Some(container.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(pulls, ["b", "c"]);
        assert_eq!(
            actions
                .iter()
                .filter(|a| matches!(a, Action::CreateContainer { .. }))
                .count(),
            3
        );
    }

    #[test]
    fn running_pod_needs_nothing_and_exited_containers_stay_exited() {
        let p = pod(vec![container("a", "x:1"), container("b", "x:1")]);
        let obs = Observed {
            sandboxes: vec![sandbox("s1", true, 1)],
            containers: vec![
                ctr("c1", "s1", "a", RunState::Running),
                ctr("c2", "s1", "b", RunState::Exited),
            ],
            ..Default::default()
        };
        assert!(plan(&p, &obs, &PodFailures::default(), Instant::now()).is_empty());
    }

    #[test]
    fn created_container_is_started() {
        let p = pod(vec![container("a", "x:1")]);
        let obs = Observed {
            sandboxes: vec![sandbox("s1", true, 1)],
            containers: vec![ctr("c1", "s1", "a", RunState::Created)],
            ..Default::default()
        };
        assert_eq!(
            plan(&p, &obs, &PodFailures::default(), Instant::now()),
            vec![Action::StartContainer {
                container: "a".into(),
                id: "c1".into()
            }]
        );
    }

    #[test]
    fn failed_pull_backs_off_then_retries() {
        let p = pod(vec![container("a", "nope:1")]);
        let obs = Observed {
            sandboxes: vec![sandbox("s1", true, 1)],
            images: images(&[("nope:1", false)]),
            ..Default::default()
        };
        let t0 = Instant::now();
        let mut failures = PodFailures::default();
        failures.record(
            &Step::Container("a".into()),
            "ErrImagePull",
            "not found".into(),
            t0,
        );
        assert!(plan(&p, &obs, &failures, t0 + Duration::from_secs(1)).is_empty());
        assert_eq!(
            plan(&p, &obs, &failures, t0 + Duration::from_secs(6)).len(),
            2
        );
        failures.record(
            &Step::Container("a".into()),
            "ErrImagePull",
            "not found".into(),
            t0,
        );
        assert_eq!(failures.containers["a"].attempts, 2);
        assert!(plan(&p, &obs, &failures, t0 + Duration::from_secs(6)).is_empty());
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(5));
        assert_eq!(backoff(2), Duration::from_secs(10));
        assert_eq!(backoff(4), Duration::from_secs(40));
        assert_eq!(backoff(5), Duration::from_secs(60));
        assert_eq!(backoff(50), Duration::from_secs(60));
    }

    #[test]
    fn never_policy_with_absent_image_creates_nothing() {
        let mut c = container("a", "x:1");
        c.image_pull_policy = Some("Never".into());
        let p = pod(vec![c]);
        let obs = Observed {
            sandboxes: vec![sandbox("s1", true, 1)],
            images: images(&[("x:1", false)]),
            ..Default::default()
        };
        assert!(plan(&p, &obs, &PodFailures::default(), Instant::now()).is_empty());
    }

    #[test]
    fn gone_sandbox_with_containers_is_not_recreated() {
        let p = pod(vec![container("a", "x:1")]);
        let obs = Observed {
            sandboxes: vec![sandbox("s1", false, 1)],
            containers: vec![ctr("c1", "s1", "a", RunState::Exited)],
            ..Default::default()
        };
        assert!(plan(&p, &obs, &PodFailures::default(), Instant::now()).is_empty());
        let empty = Observed {
            sandboxes: vec![sandbox("s1", false, 1)],
            images: images(&[("x:1", true)]),
            ..Default::default()
        };
        assert_eq!(
            plan(&p, &empty, &PodFailures::default(), Instant::now())[0],
            Action::RunSandbox { attempt: 1 }
        );
    }

    #[test]
    fn deletion_stops_removes_and_deletes() {
        let mut p = pod(vec![container("a", "x:1")]);
        p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
        p.metadata.deletion_grace_period_seconds = Some(5);
        let obs = Observed {
            sandboxes: vec![sandbox("s1", true, 1)],
            containers: vec![
                ctr("c1", "s1", "a", RunState::Running),
                ctr("c0", "s1", "a", RunState::Exited),
            ],
            ..Default::default()
        };
        assert_eq!(
            plan(&p, &obs, &PodFailures::default(), Instant::now()),
            vec![
                Action::StopContainer {
                    id: "c1".into(),
                    grace_seconds: 5
                },
                Action::StopSandbox { id: "s1".into() },
                Action::RemoveSandbox { id: "s1".into() },
                Action::DeletePod,
            ]
        );
        let nothing = Observed::default();
        assert_eq!(
            plan(&p, &nothing, &PodFailures::default(), Instant::now()),
            vec![Action::DeletePod]
        );
    }

    #[test]
    fn grace_period_sources() {
        let mut p = pod(vec![]);
        assert_eq!(grace_seconds(&p), 30);
        p.spec.as_mut().unwrap().termination_grace_period_seconds = Some(3);
        assert_eq!(grace_seconds(&p), 3);
        p.metadata.deletion_grace_period_seconds = Some(0);
        assert_eq!(grace_seconds(&p), 0);
    }

    #[test]
    fn ready_sandbox_prefers_the_one_with_containers() {
        let obs = Observed {
            sandboxes: vec![
                sandbox("old", true, 1),
                sandbox("new", true, 2),
                sandbox("dead", false, 3),
            ],
            containers: vec![ctr("c1", "old", "a", RunState::Running)],
            ..Default::default()
        };
        assert_eq!(obs.ready_sandbox().unwrap().id, "old");
        assert_eq!(obs.current_sandbox().unwrap().id, "old");
        assert_eq!(obs.next_sandbox_attempt(), 1);
    }

    #[test]
    fn default_pull_policies() {
        assert_eq!(default_pull_policy("busybox"), PullPolicy::Always);
        assert_eq!(default_pull_policy("busybox:latest"), PullPolicy::Always);
        assert_eq!(
            default_pull_policy("localhost:5000/busybox"),
            PullPolicy::Always
        );
        assert_eq!(
            default_pull_policy("localhost:5000/busybox:1.36"),
            PullPolicy::IfNotPresent
        );
        assert_eq!(
            default_pull_policy("busybox@sha256:abc"),
            PullPolicy::IfNotPresent
        );
    }

    #[test]
    fn sandbox_config_carries_kubelet_labels_and_namespaces() {
        let p = pod(vec![container("a", "x:1")]);
        let cfg = sandbox_config(&p, &settings(), 0);
        let meta = cfg.metadata.as_ref().unwrap();
        assert_eq!(
            (
                meta.name.as_str(),
                meta.namespace.as_str(),
                meta.uid.as_str()
            ),
            ("stateful-app", "default", "u-1")
        );
        assert_eq!(cfg.hostname, "stateful-app");
        assert_eq!(cfg.log_directory, "/var/log/pods/default_stateful-app_u-1");
        assert_eq!(cfg.labels["app"], "counter");
        assert_eq!(cfg.labels[label::POD_UID], "u-1");
        assert_eq!(cfg.labels[label::POD_NAME], "stateful-app");
        assert_eq!(cfg.labels[label::POD_NAMESPACE], "default");
        assert_eq!(cfg.annotations["a"], "b");
        let linux = cfg.linux.unwrap();
        assert_eq!(linux.cgroup_parent, "/ckpt-testbed/node1/podu-1");
        let ns = linux.security_context.unwrap().namespace_options.unwrap();
        assert_eq!(ns.network, api::NamespaceMode::Pod as i32);
        assert_eq!(ns.pid, api::NamespaceMode::Container as i32);
        assert_eq!(ns.ipc, api::NamespaceMode::Pod as i32);
    }

    #[test]
    fn host_network_and_shared_pid_map_to_namespace_modes() {
        let mut p = pod(vec![]);
        let spec = p.spec.as_mut().unwrap();
        spec.host_network = Some(true);
        spec.share_process_namespace = Some(true);
        let ns = namespace_options(&p);
        assert_eq!(ns.network, api::NamespaceMode::Node as i32);
        assert_eq!(ns.pid, api::NamespaceMode::Pod as i32);
    }

    #[test]
    fn hostname_is_cut_to_63() {
        let mut p = pod(vec![]);
        p.metadata.name = Some(format!("{}-{}", "a".repeat(62), "b"));
        assert_eq!(hostname(&p), "a".repeat(62));
    }

    #[test]
    fn container_config_keeps_image_and_expands_env() {
        let mut c = container("counter", "localhost:5000/ckpt/counter@sha256:abc");
        c.command = Some(vec!["/bin/sh".into(), "-c".into()]);
        c.args = Some(vec!["echo $(GREETING) $(MISSING) $$(GREETING)".into()]);
        c.env = Some(vec![
            EnvVar {
                name: "WHO".into(),
                value: Some("world".into()),
                value_from: None,
            },
            EnvVar {
                name: "GREETING".into(),
                value: Some("hello $(WHO)".into()),
                value_from: None,
            },
            EnvVar {
                name: "POD".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "metadata.name".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
            },
            EnvVar {
                name: "IP".into(),
                value: None,
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "status.podIP".into(),
                        api_version: None,
                    }),
                    ..Default::default()
                }),
            },
        ]);
        c.ports = Some(vec![ContainerPort {
            container_port: 80,
            ..Default::default()
        }]);
        let p = pod(vec![c.clone()]);
        let downward = Downward {
            pod_ips: vec!["10.88.1.5".into()],
            host_ip: "10.77.0.11".into(),
        };
        let cfg = container_config(&p, &c, &downward).unwrap();
        let image = cfg.image.unwrap();
        assert_eq!(image.image, "localhost:5000/ckpt/counter@sha256:abc");
        assert_eq!(
            image.user_specified_image,
            "localhost:5000/ckpt/counter@sha256:abc"
        );
        assert_eq!(cfg.args, ["echo hello world $(MISSING) $(GREETING)"]);
        let env: Vec<(String, String)> = cfg
            .envs
            .iter()
            .map(|kv| (kv.key.clone(), String::from_utf8(kv.value.clone()).unwrap()))
            .collect();
        assert_eq!(
            env,
            [
                ("WHO".to_owned(), "world".to_owned()),
                ("GREETING".to_owned(), "hello world".to_owned()),
                ("POD".to_owned(), "stateful-app".to_owned()),
                ("IP".to_owned(), "10.88.1.5".to_owned()),
            ]
        );
        assert_eq!(cfg.log_path, "counter/0.log");
        assert_eq!(cfg.labels[label::CONTAINER_NAME], "counter");
        assert_eq!(cfg.labels[label::POD_UID], "u-1");
        assert_eq!(cfg.annotations[annotation::RESTART_COUNT], "0");
        assert_eq!(cfg.annotations[annotation::TERMINATION_GRACE_PERIOD], "30");
        assert_eq!(cfg.metadata.unwrap().attempt, 0);
    }

    #[test]
    fn unsupported_env_source_is_a_config_error() {
        let mut c = container("a", "x:1");
        c.env = Some(vec![EnvVar {
            name: "PASSWORD".into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: "s".into(),
                    key: "k".into(),
                    optional: None,
                }),
                ..Default::default()
            }),
        }]);
        let p = pod(vec![c.clone()]);
        let err = container_config(&p, &c, &Downward::default()).unwrap_err();
        assert!(err.0.contains("PASSWORD"), "{err}");
    }

    #[test]
    fn field_refs_read_labels_and_annotations() {
        let p = pod(vec![]);
        let d = Downward::default();
        assert_eq!(
            field_value(&p, "metadata.labels['app']", &d).as_deref(),
            Some("counter")
        );
        assert_eq!(
            field_value(&p, "metadata.annotations['a']", &d).as_deref(),
            Some("b")
        );
        assert_eq!(
            field_value(&p, "spec.nodeName", &d).as_deref(),
            Some("node1")
        );
        assert_eq!(field_value(&p, "status.nope", &d), None);
    }

    #[test]
    fn expansion_edge_cases() {
        let vars = HashMap::from([("A", "1")]);
        assert_eq!(expand("$(A)$(A)", &vars), "11");
        assert_eq!(expand("$$", &vars), "$");
        assert_eq!(expand("$", &vars), "$");
        assert_eq!(expand("$x $(A", &vars), "$x $(A");
        assert_eq!(expand("no vars", &vars), "no vars");
    }

    #[test]
    fn images_to_check_skips_created_containers() {
        let p = pod(vec![container("a", "x:1"), container("b", "y:1")]);
        let obs = Observed {
            sandboxes: vec![sandbox("s1", true, 1)],
            containers: vec![ctr("c1", "s1", "a", RunState::Running)],
            ..Default::default()
        };
        assert_eq!(images_to_check(&p, &obs), ["y:1"]);
    }
}
