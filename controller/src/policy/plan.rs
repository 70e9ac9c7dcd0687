//! The pure decision of a CheckpointPolicy reconcile: which selected pods are due for a
//! PodCheckpoint, which of the policy's PodCheckpoints retention lets go, the status, and when
//! to look again.
//!
//! Due: a running selected pod with no PodCheckpoint from the policy, or whose newest one was
//! asked for at least an interval ago and is final (a Failed attempt counts, so a failing pod
//! is tried once an interval; one still being taken is waited for). Retention, per pod (by
//! `spec.podName`, selected or not): Completed ones beyond the newest `keepNewest`, and those
//! older than `ttlSeconds` except the pod's newest Completed one (its last restore point stays
//! until someone deletes it); a Failed one once a newer attempt exists; never one that is not
//! final, and never the pod's newest attempt (the schedule counts from it).

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::time::Duration;

use checkpointing::crd::{
    CheckpointPolicy, CheckpointPolicyStatus, CheckpointState, MAX_INTERVAL_SECONDS,
    MAX_KEEP_NEWEST, MAX_LISTED_PODS, MAX_TTL_SECONDS, MIN_INTERVAL_SECONDS, MIN_KEEP_NEWEST,
    MIN_TTL_SECONDS, PodCheckpoint, PodCheckpointSpec, PolicyPodStatus,
};
use checkpointing::names::{DNS_LABEL_MAX, POLICY_LABEL, POLICY_POD_LABEL};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::{Resource, ResourceExt};

use crate::status::{MAX_EVENT_NOTE, READY, condition, truncated, whole_seconds};

/// Everything the decision depends on.
pub struct Observed<'a> {
    pub policy: &'a CheckpointPolicy,
    /// The pods the selector picks, or the API server's words refusing the selector.
    pub pods: Result<&'a [Pod], &'a str>,
    /// The PodCheckpoints labelled with the policy's name.
    pub checkpoints: &'a [PodCheckpoint],
    pub now: Timestamp,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// PodCheckpoints to create; one whose name exists already was created by an earlier try.
    pub create: Vec<PodCheckpoint>,
    pub delete: Vec<Doomed>,
    /// New status, only when it differs.
    pub status: Option<CheckpointPolicyStatus>,
    /// Attempts newly seen failed, in words: each deserves a Warning.
    pub failures: Vec<String>,
    /// When time alone changes the decision (a pod falls due, a checkpoint outlives the TTL).
    pub requeue_after: Option<Duration>,
}

/// A PodCheckpoint retention deletes, and why in words.
#[derive(Debug, PartialEq, Eq)]
pub struct Doomed {
    pub name: String,
    pub uid: String,
    pub why: String,
}

/// Longest requeue: a day, so no skewed clock postpones a policy beyond what the runtime's
/// timers hold.
const MAX_REQUEUE: Duration = Duration::from_secs(86_400);

/// Hex digits of the hash in a PodCheckpoint's name.
const HASH_LEN: usize = 8;

/// Name of the PodCheckpoint of `pod` for the slot starting at `slot` (Unix seconds):
/// `<policy>-<pod>-<hash>.<slot>`, its first part cut to fit one DNS label. The hash (of policy
/// and pod) keeps `a-b`+`c` apart from `a`+`b-c` and the cut names of long ones; the short last
/// part leaves room for the `-<container>` of its ContainerCheckpoints.
pub fn checkpoint_name(policy: &str, pod: &str, slot: i64) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{policy}\0{pod}").as_bytes());
    let hash: String = digest.as_ref()[..HASH_LEN / 2]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let readable = format!("{policy}-{pod}").replace('.', "-");
    let cut = &readable[..readable.len().min(DNS_LABEL_MAX - 1 - HASH_LEN)];
    format!("{}-{hash}.{}", cut.trim_end_matches('-'), slot.max(0))
}

/// The spec's numbers, within their bounds whatever an older CRD let through.
struct Rules {
    /// None: no schedule, the policy acts on evictions alone.
    interval: Option<SignedDuration>,
    keep_newest: usize,
    ttl: Option<SignedDuration>,
}

impl Rules {
    fn of(policy: &CheckpointPolicy) -> Self {
        let spec = &policy.spec;
        let interval = spec.schedule.as_ref().map(|s| {
            SignedDuration::from_secs(
                s.interval_seconds
                    .clamp(MIN_INTERVAL_SECONDS, MAX_INTERVAL_SECONDS),
            )
        });
        let keep = spec
            .retention
            .keep_newest
            .clamp(MIN_KEEP_NEWEST, MAX_KEEP_NEWEST);
        Self {
            interval,
            keep_newest: usize::try_from(keep).unwrap_or(1),
            ttl: spec
                .retention
                .ttl_seconds
                .map(|t| SignedDuration::from_secs(t.clamp(MIN_TTL_SECONDS, MAX_TTL_SECONDS))),
        }
    }
}

fn created(pc: &PodCheckpoint) -> Timestamp {
    pc.metadata
        .creation_timestamp
        .as_ref()
        .map_or(Timestamp::MIN, |t| t.0)
}

fn state(pc: &PodCheckpoint) -> Option<CheckpointState> {
    pc.status.as_ref().and_then(|s| s.state)
}

fn later(t: Timestamp, by: SignedDuration) -> Timestamp {
    t.checked_add(by).unwrap_or(Timestamp::MAX)
}

pub fn plan(o: &Observed) -> Plan {
    let policy = o.policy;
    if policy.metadata.deletion_timestamp.is_some() {
        return Plan::default();
    }
    let rules = Rules::of(policy);
    // Each pod's attempts, newest first; those being deleted no longer count.
    let mut attempts: BTreeMap<&str, Vec<&PodCheckpoint>> = BTreeMap::new();
    for pc in o.checkpoints {
        if pc.metadata.deletion_timestamp.is_none() {
            attempts.entry(&pc.spec.pod_name).or_default().push(pc);
        }
    }
    for list in attempts.values_mut() {
        list.sort_by_key(|pc| Reverse((created(pc), pc.name_any())));
    }
    let mut plan = Plan::default();
    let mut wake = Vec::new();
    for (pod, list) in &attempts {
        retain(pod, list, &rules, o.now, &mut plan.delete, &mut wake);
    }
    let (status, create) = match o.pods {
        Ok(pods) => schedule(o, &rules, pods, &attempts, &mut plan.failures, &mut wake),
        Err(refusal) => (refused_selector(refusal), Vec::new()),
    };
    plan.create = create;
    plan.requeue_after = wake
        .into_iter()
        .filter(|at| *at > o.now)
        .min()
        .map(|at| o.now.duration_until(at).unsigned_abs().min(MAX_REQUEUE));
    let status = finish(policy, status, o.now);
    plan.status = (policy.status.as_ref() != Some(&status)).then_some(status);
    plan
}

/// Retention of one pod's attempts (newest first): what goes, and when the TTL next lets one go.
fn retain(
    pod: &str,
    attempts: &[&PodCheckpoint],
    rules: &Rules,
    now: Timestamp,
    delete: &mut Vec<Doomed>,
    wake: &mut Vec<Timestamp>,
) {
    let mut completed = 0;
    for (i, pc) in attempts.iter().enumerate() {
        let why = match state(pc) {
            Some(CheckpointState::Completed) => {
                completed += 1;
                match rules.ttl {
                    _ if completed > rules.keep_newest => Some(format!(
                        "retention keeps the newest {} completed checkpoints of pod {pod:?}",
                        rules.keep_newest
                    )),
                    // The pod's newest Completed one stays, whatever its age.
                    Some(ttl) if completed > 1 => {
                        let expires = later(created(pc), ttl);
                        if expires <= now {
                            Some(format!("older than ttlSeconds {}", ttl.as_secs()))
                        } else {
                            wake.push(expires);
                            None
                        }
                    }
                    _ => None,
                }
            }
            Some(CheckpointState::Failed) if i > 0 => Some(format!(
                "a failed attempt of pod {pod:?} with a newer one after it"
            )),
            _ => None,
        };
        if let Some(why) = why {
            delete.push(Doomed {
                name: pc.name_any(),
                uid: pc.uid().unwrap_or_default(),
                why,
            });
        }
    }
}

/// The selected running pods' entries, and the PodCheckpoints of those due.
fn schedule(
    o: &Observed,
    rules: &Rules,
    pods: &[Pod],
    attempts: &BTreeMap<&str, Vec<&PodCheckpoint>>,
    failures: &mut Vec<String>,
    wake: &mut Vec<Timestamp>,
) -> (CheckpointPolicyStatus, Vec<PodCheckpoint>) {
    let mut running: Vec<&Pod> = pods.iter().filter(|p| is_running(p)).collect();
    running.sort_by_key(|p| p.name_any());
    let previous = o.policy.status.as_ref().map_or(&[][..], |s| &s.pods);
    let mut create = Vec::new();
    let mut entries = Vec::new();
    for pod in &running {
        let pod = pod.name_any();
        let list = attempts.get(pod.as_str()).map_or(&[][..], Vec::as_slice);
        let newest = list.first();
        let last_error = newest
            .filter(|pc| state(pc) == Some(CheckpointState::Failed))
            .map(|pc| {
                let message = pc.status.as_ref().and_then(|s| s.message.as_deref());
                let why = format!("{}: {}", pc.name_any(), message.unwrap_or("failed"));
                truncated(&why, MAX_EVENT_NOTE)
            });
        let before = previous.iter().find(|e| e.pod == pod);
        if let Some(error) = &last_error
            && before.and_then(|e| e.last_error.as_ref()) != Some(error)
        {
            failures.push(format!(
                "checkpoint of pod {pod:?} failed: PodCheckpoint {error}"
            ));
        }
        let settled = newest.is_none_or(|pc| state(pc).is_some_and(CheckpointState::is_final));
        let next_due = rules
            .interval
            .map(|every| due(o, pod.as_str(), newest, every, settled, &mut create, wake));
        let last = list
            .iter()
            .find(|pc| state(pc) == Some(CheckpointState::Completed));
        entries.push(PolicyPodStatus {
            pod,
            last_checkpoint: last.map(|pc| pc.name_any()),
            last_checkpoint_time: last.and_then(|pc| pc.metadata.creation_timestamp.clone()),
            next_due: next_due.map(Time),
            last_error,
        });
    }
    let failing = entries.iter().filter(|e| e.last_error.is_some()).count();
    let mut message = match rules.interval {
        Some(interval) => format!(
            "checkpointing {} every {}s, keeping the newest {} of each",
            pods_in_words(running.len()),
            interval.as_secs(),
            rules.keep_newest
        ),
        None => format!(
            "{} selected, checkpointed only when evicted",
            pods_in_words(running.len())
        ),
    };
    if failing > 0 {
        message.push_str(&format!(
            "; the newest checkpoint of {} failed (status.pods[].lastError)",
            pods_in_words(failing)
        ));
    }
    if entries.len() > MAX_LISTED_PODS {
        entries.truncate(MAX_LISTED_PODS);
        message.push_str(&format!("; status.pods lists the first {MAX_LISTED_PODS}"));
    }
    let status = CheckpointPolicyStatus {
        selected_pods: i64::try_from(running.len()).ok(),
        pods: entries,
        message: Some(message),
        ..Default::default()
    };
    (status, create)
}

/// When `pod` (whose newest attempt is `newest`, final if `settled`) is next due on a schedule
/// of `interval`; a pod due now gets its PodCheckpoint in `create`.
fn due(
    o: &Observed,
    pod: &str,
    newest: Option<&&PodCheckpoint>,
    interval: SignedDuration,
    settled: bool,
    create: &mut Vec<PodCheckpoint>,
    wake: &mut Vec<Timestamp>,
) -> Timestamp {
    let due_at = newest.map(|pc| later(created(pc), interval));
    match due_at {
        Some(at) if !(settled && at <= o.now) => {
            // Not due yet, or waiting for the attempt in flight (its change wakes us).
            if settled {
                wake.push(at);
            }
            at
        }
        _ => {
            // The slot's start names the PodCheckpoint: the due time after an attempt, else
            // the current interval on the epoch's grid, so a retry finds its own.
            let seconds = interval.as_secs();
            let slot = due_at.map_or(o.now.as_second() / seconds * seconds, |at| at.as_second());
            create.push(checkpoint(o.policy, pod, slot));
            let next = later(whole_seconds(o.now), interval);
            wake.push(next);
            next
        }
    }
}

fn pods_in_words(n: usize) -> String {
    if n == 1 {
        "1 pod".to_owned()
    } else {
        format!("{n} pods")
    }
}

/// Running and staying: the only pods a checkpoint can be taken of.
fn is_running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
}

/// The PodCheckpoint of `pod` for `slot`, labelled with the policy (and pod). No owner
/// reference: deleting the policy leaves the checkpoints, which are the user's data.
pub fn checkpoint(policy: &CheckpointPolicy, pod: &str, slot: i64) -> PodCheckpoint {
    let name = policy.name_any();
    let spec = &policy.spec;
    let mut pc = PodCheckpoint::new(
        &checkpoint_name(&name, pod, slot),
        PodCheckpointSpec {
            pod_name: pod.to_owned(),
            containers: spec.containers.clone(),
            timeout_seconds: spec.timeout_seconds,
            registry: spec.registry.clone(),
            hold_source: false,
        },
    );
    pc.metadata.namespace = policy.namespace();
    let mut labels = std::collections::BTreeMap::from([(POLICY_LABEL.to_owned(), name)]);
    if pod.len() <= DNS_LABEL_MAX {
        labels.insert(POLICY_POD_LABEL.to_owned(), pod.to_owned());
    }
    pc.metadata.labels = Some(labels);
    pc
}

fn refused_selector(refusal: &str) -> CheckpointPolicyStatus {
    CheckpointPolicyStatus {
        message: Some(format!(
            "the API server refuses spec.selector ({refusal}); no pod is checkpointed until \
             spec.selector is fixed"
        )),
        ..Default::default()
    }
}

/// Adds the `Ready` condition (True while the selector works and no selected pod's newest
/// attempt failed) and `observedGeneration`.
fn finish(
    policy: &CheckpointPolicy,
    mut status: CheckpointPolicyStatus,
    now: Timestamp,
) -> CheckpointPolicyStatus {
    let generation = policy.meta().generation;
    let (ready, reason) = match &status.selected_pods {
        // Only a refused selector leaves the pods uncounted.
        None => (false, "InvalidSelector"),
        Some(_) if status.pods.iter().any(|p| p.last_error.is_some()) => {
            (false, "CheckpointFailed")
        }
        Some(_) => (true, "Scheduled"),
    };
    let previous = policy.status.as_ref().map_or(&[][..], |s| &s.conditions);
    let message = status.message.as_deref().unwrap_or_default();
    status.conditions = vec![condition(
        previous, READY, ready, reason, message, generation, now,
    )];
    status.observed_generation = generation;
    status
}

#[cfg(test)]
mod tests;
