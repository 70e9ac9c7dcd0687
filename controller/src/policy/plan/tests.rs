use super::*;
use crate::fixtures::{now, pod};
use checkpointing::crd::{
    CheckpointPolicySpec, PodCheckpointStatus, RegistrySpec, RetentionSpec, ScheduleSpec,
};
use checkpointing::names::is_dns_subdomain;
use k8s_openapi::api::core::v1::PodStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use CheckpointState::*;

const HOUR: i64 = 3600;

fn policy(interval: i64, keep_newest: u32, ttl_seconds: Option<i64>) -> CheckpointPolicy {
    let mut p = CheckpointPolicy::new(
        "nightly",
        CheckpointPolicySpec {
            selector: LabelSelector::default(),
            schedule: Some(ScheduleSpec {
                interval_seconds: interval,
            }),
            retention: RetentionSpec {
                keep_newest,
                ttl_seconds,
            },
            registry: Some(RegistrySpec {
                compression: None,
                repository: Some("reg.example:5443/team/ckpt".into()),
                secret_ref: None,
            }),
            containers: vec!["counter".into()],
            timeout_seconds: Some(30),
            on_eviction: None,
            on_node_loss: None,
        },
    );
    p.metadata.namespace = Some("default".into());
    p.metadata.generation = Some(2);
    p
}

/// Pod `name` in phase `phase`.
fn pod_in(name: &str, phase: &str) -> Pod {
    let mut p = pod();
    p.metadata.name = Some(name.into());
    p.status = Some(PodStatus {
        phase: Some(phase.into()),
        ..Default::default()
    });
    p
}

/// A PodCheckpoint of the policy for `pod`, asked for `age_s` seconds before [`now`].
fn attempt(name: &str, pod: &str, age_s: i64, state: CheckpointState) -> PodCheckpoint {
    let mut pc = PodCheckpoint::new(
        name,
        PodCheckpointSpec {
            pod_name: pod.into(),
            containers: Vec::new(),
            timeout_seconds: None,
            registry: None,
            hold_source: false,
        },
    );
    pc.metadata.uid = Some(format!("uid-{name}"));
    pc.metadata.creation_timestamp = Some(Time(ago(age_s)));
    pc.status = Some(PodCheckpointStatus {
        state: Some(state),
        message: Some(format!("{name} is {state:?}")),
        ..Default::default()
    });
    pc
}

fn ago(s: i64) -> Timestamp {
    now() - SignedDuration::from_secs(s)
}

fn observe(policy: &CheckpointPolicy, pods: &[Pod], checkpoints: &[PodCheckpoint]) -> Plan {
    plan(&Observed {
        policy,
        pods: Ok(pods),
        checkpoints,
        now: now(),
    })
}

fn deleted(plan: &Plan) -> Vec<&str> {
    let mut names: Vec<&str> = plan.delete.iter().map(|d| d.name.as_str()).collect();
    names.sort_unstable();
    names
}

fn entry(plan: &Plan) -> &PolicyPodStatus {
    &plan.status.as_ref().unwrap().pods[0]
}

#[test]
fn a_pod_without_checkpoints_is_due_at_once_and_its_checkpoint_carries_the_policys_spec() {
    let p = policy(HOUR, 3, None);
    let pods = [pod_in("app", "Running"), pod_in("starting", "Pending")];
    let plan = observe(&p, &pods, &[]);
    assert_eq!(plan.create.len(), 1, "only the running pod");
    let pc = &plan.create[0];
    // The current hour on the epoch's grid names it: a retry within the hour finds its own.
    let slot = now().as_second() / HOUR * HOUR;
    assert_eq!(pc.name_any(), checkpoint_name("nightly", "app", slot));
    assert_eq!(pc.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(pc.labels()[POLICY_LABEL], "nightly");
    assert_eq!(pc.labels()[POLICY_POD_LABEL], "app");
    assert!(
        pc.metadata.owner_references.is_none(),
        "deleting the policy keeps its checkpoints"
    );
    assert_eq!(pc.spec.pod_name, "app");
    assert_eq!(pc.spec.containers, ["counter"]);
    assert_eq!(pc.spec.timeout_seconds, Some(30));
    assert_eq!(pc.spec.registry, p.spec.registry);
    assert!(
        !pc.spec.hold_source,
        "a scheduled checkpoint lets the pod run on"
    );

    let status = plan.status.as_ref().unwrap();
    assert_eq!(status.selected_pods, Some(1));
    assert_eq!(status.pods.len(), 1);
    let next = later(now(), SignedDuration::from_secs(HOUR));
    assert_eq!(entry(&plan).next_due, Some(Time(next)));
    assert_eq!(entry(&plan).last_checkpoint, None);
    assert_eq!(status.conditions[0].reason, "Scheduled");
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(3600)));
}

#[test]
fn a_pod_is_due_an_interval_after_its_newest_attempt() {
    let p = policy(HOUR, 3, None);
    let pods = [pod_in("app", "Running")];
    let recent = [attempt("a1", "app", 20 * 60, Completed)];
    let plan = observe(&p, &pods, &recent);
    assert!(plan.create.is_empty());
    assert_eq!(entry(&plan).last_checkpoint.as_deref(), Some("a1"));
    assert_eq!(entry(&plan).last_checkpoint_time, Some(Time(ago(20 * 60))));
    assert_eq!(entry(&plan).next_due, Some(Time(ago(20 * 60 - HOUR))));
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(40 * 60)));

    let old = [attempt("a1", "app", HOUR + 5, Completed)];
    let plan = observe(&p, &pods, &old);
    assert_eq!(plan.create.len(), 1);
    // Named after its due time, whenever the reconcile runs.
    let due = ago(5).as_second();
    assert_eq!(
        plan.create[0].name_any(),
        checkpoint_name("nightly", "app", due)
    );
    assert_eq!(
        observe(&p, &pods, &old).create[0].name_any(),
        plan.create[0].name_any(),
        "the same slot, the same name"
    );
}

#[test]
fn a_failed_attempt_counts_tells_its_error_once_and_is_retried_an_interval_later() {
    let mut p = policy(HOUR, 3, None);
    let pods = [pod_in("app", "Running")];
    let failed = [
        attempt("a2", "app", 10 * 60, Failed),
        attempt("a1", "app", 2 * HOUR, Completed),
    ];
    let plan = observe(&p, &pods, &failed);
    assert!(plan.create.is_empty(), "no new attempt before the interval");
    assert_eq!(entry(&plan).last_error.as_deref(), Some("a2: a2 is Failed"));
    assert_eq!(
        entry(&plan).last_checkpoint.as_deref(),
        Some("a1"),
        "still the last restore point"
    );
    assert_eq!(
        plan.failures,
        ["checkpoint of pod \"app\" failed: PodCheckpoint a2: a2 is Failed"]
    );
    let status = plan.status.clone().unwrap();
    assert_eq!(
        (
            status.conditions[0].status.as_str(),
            status.conditions[0].reason.as_str()
        ),
        ("False", "CheckpointFailed")
    );
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(50 * 60)));
    assert!(
        plan.delete.is_empty(),
        "the newest attempt anchors the schedule"
    );

    // Written: the next reconcile writes and tells nothing new.
    p.status = Some(status);
    let again = observe(&p, &pods, &failed);
    assert!(again.status.is_none() && again.failures.is_empty() && again.create.is_empty());

    // An interval on, the next attempt; once it exists, the failed one goes.
    let later_on = [
        attempt("a2", "app", HOUR, Failed),
        attempt("a1", "app", 3 * HOUR, Completed),
    ];
    assert_eq!(observe(&p, &pods, &later_on).create.len(), 1);
    let superseded = [
        attempt("a3", "app", 0, Pending),
        attempt("a2", "app", HOUR, Failed),
        attempt("a1", "app", 3 * HOUR, Completed),
    ];
    let plan = observe(&p, &pods, &superseded);
    assert_eq!(deleted(&plan), ["a2"]);
    assert_eq!(entry(&plan).last_error, None);
}

#[test]
fn an_attempt_still_running_is_waited_for() {
    let p = policy(HOUR, 3, None);
    let pods = [pod_in("app", "Running")];
    let stuck = [attempt("a1", "app", 2 * HOUR, Running)];
    let plan = observe(&p, &pods, &stuck);
    assert!(plan.create.is_empty());
    assert!(plan.delete.is_empty());
    assert_eq!(entry(&plan).next_due, Some(Time(ago(HOUR))));
    assert_eq!(
        plan.requeue_after, None,
        "its change wakes the policy, not the clock"
    );
}

#[test]
fn retention_keeps_the_newest_completed_of_each_pod_and_never_unfinished_ones() {
    let p = policy(HOUR, 2, None);
    let pods = [pod_in("app", "Running")];
    let mut going = attempt("gone-already", "app", 9 * HOUR, Completed);
    going.metadata.deletion_timestamp = Some(Time(now()));
    let all = [
        attempt("a5", "app", 10, Pending),
        attempt("a4", "app", HOUR, Completed),
        attempt("a3", "app", 2 * HOUR, Failed),
        attempt("a2", "app", 3 * HOUR, Completed),
        attempt("a0", "app", 4 * HOUR, Running),
        attempt("a1", "app", 5 * HOUR, Completed),
        attempt("a-1", "app", 6 * HOUR, Completed),
        going,
        // A pod no longer selected keeps its newest two as well.
        attempt("b2", "old-pod", 7 * HOUR, Completed),
        attempt("b1", "old-pod", 8 * HOUR, Completed),
        attempt("b0", "old-pod", 9 * HOUR, Completed),
    ];
    let plan = observe(&p, &pods, &all);
    assert_eq!(deleted(&plan), ["a-1", "a1", "a3", "b0"]);
    let a1 = plan.delete.iter().find(|d| d.name == "a1").unwrap();
    assert_eq!(a1.uid, "uid-a1", "deleted only if still that object");
    assert_eq!(
        a1.why,
        "retention keeps the newest 2 completed checkpoints of pod \"app\""
    );
    assert_eq!(entry(&plan).last_checkpoint.as_deref(), Some("a4"));
    assert_eq!(plan.status.unwrap().selected_pods, Some(1));
}

#[test]
fn the_ttl_lets_old_checkpoints_go_but_never_a_pods_newest_completed_one() {
    let p = policy(HOUR, 10, Some(HOUR));
    let pods = [pod_in("app", "Running")];
    let all = [
        attempt("a4", "app", 30 * 60, Completed),
        attempt("a3", "app", 50 * 60, Completed),
        attempt("a2", "app", 2 * HOUR, Completed),
        attempt("a1", "app", 3 * HOUR, Completed),
        attempt("only", "old-pod", 30 * HOUR, Completed),
    ];
    let plan = observe(&p, &pods, &all);
    assert_eq!(deleted(&plan), ["a1", "a2"]);
    assert_eq!(
        plan.delete[0].why, "older than ttlSeconds 3600",
        "{:?}",
        plan.delete
    );
    // a3 outlives the TTL in ten minutes, before app falls due.
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(10 * 60)));
}

#[test]
fn names_are_deterministic_dns_names_that_leave_room_for_containers() {
    let short = checkpoint_name("nightly", "app", 1_767_225_600);
    assert!(short.starts_with("nightly-app-"), "{short}");
    assert!(short.ends_with(".1767225600"), "{short}");
    assert_eq!(short, checkpoint_name("nightly", "app", 1_767_225_600));
    assert_ne!(short, checkpoint_name("nightly", "app", 1_767_229_200));
    // Joined the same way, told apart by the hash.
    assert_ne!(
        checkpoint_name("a-b", "c", 0),
        checkpoint_name("a", "b-c", 0)
    );
    let long_policy = "p".repeat(63);
    let long_pod = format!("{}.{}", "x".repeat(126), "y".repeat(126));
    for (policy, pod) in [
        ("nightly", "app"),
        (long_policy.as_str(), long_pod.as_str()),
        ("a.b", "c.d-"),
    ] {
        let name = checkpoint_name(policy, pod, i64::MAX);
        assert!(is_dns_subdomain(&name), "{name}");
        // Its ContainerCheckpoints are `<name>-<container>`.
        let child = format!("{name}-{}", "c".repeat(42));
        assert!(is_dns_subdomain(&child), "{child}");
    }
    assert_ne!(
        checkpoint_name(&long_policy, &format!("{long_pod}1"), 0),
        checkpoint_name(&long_policy, &format!("{long_pod}2"), 0),
        "cut names differ by their hash"
    );
    assert!(checkpoint_name("p", "q", -5).ends_with(".0"));
    // A pod name too long for a label value leaves the pod label out.
    let pc = checkpoint(&policy(HOUR, 3, None), &long_pod, 0);
    assert!(!pc.labels().contains_key(POLICY_POD_LABEL));
}

#[test]
fn numbers_an_older_crd_let_through_are_held_to_their_bounds() {
    let p = policy(1, 0, Some(1));
    let pods = [pod_in("app", "Running")];
    let plan = observe(&p, &pods, &[attempt("a1", "app", 30, Completed)]);
    assert!(plan.create.is_empty(), "at most once a minute");
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));
    let kept = [
        attempt("a2", "app", 30, Completed),
        attempt("a1", "app", 90, Completed),
    ];
    assert_eq!(
        deleted(&observe(&p, &pods, &kept)),
        ["a1"],
        "at least one kept"
    );
    for extreme in [i64::MIN, i64::MAX] {
        let p = policy(extreme, u32::MAX, Some(extreme));
        let mut edges = [
            attempt("a2", "app", 0, Completed),
            attempt("a1", "app", 0, Completed),
        ];
        edges[0].metadata.creation_timestamp = Some(Time(Timestamp::MAX));
        edges[1].metadata.creation_timestamp = Some(Time(Timestamp::MIN));
        let plan = observe(&p, &pods, &edges);
        assert!(plan.requeue_after.unwrap() <= MAX_REQUEUE);
    }
}

#[test]
fn a_refused_selector_checkpoints_nothing_and_says_why_but_retention_goes_on() {
    let p = policy(HOUR, 1, None);
    let all = [
        attempt("a2", "app", HOUR, Completed),
        attempt("a1", "app", 2 * HOUR, Completed),
    ];
    let plan = plan(&Observed {
        policy: &p,
        pods: Err("unable to parse requirement: invalid label key"),
        checkpoints: &all,
        now: now(),
    });
    assert!(plan.create.is_empty());
    assert_eq!(deleted(&plan), ["a1"]);
    let status = plan.status.unwrap();
    assert_eq!(status.conditions[0].reason, "InvalidSelector");
    assert!(
        status
            .message
            .unwrap()
            .contains("invalid label key); no pod is checkpointed until spec.selector is fixed")
    );
}

#[test]
fn a_policy_being_deleted_does_nothing() {
    let mut p = policy(HOUR, 1, None);
    p.metadata.deletion_timestamp = Some(Time(now()));
    let plan = observe(&p, &[pod_in("app", "Running")], &[]);
    assert!(plan.create.is_empty() && plan.delete.is_empty() && plan.status.is_none());
}

#[test]
fn a_policy_without_a_schedule_takes_no_checkpoint_but_keeps_retention() {
    let mut p = policy(HOUR, 1, None);
    p.spec.schedule = None;
    let pods = [pod_in("app", "Running")];
    let checkpoints = [
        attempt("old", "app", 3 * HOUR, Completed),
        attempt("new", "app", HOUR, Completed),
    ];
    let plan = observe(&p, &pods, &checkpoints);
    assert!(
        plan.create.is_empty(),
        "only evictions take its checkpoints"
    );
    assert_eq!(deleted(&plan), ["old"], "retention still applies");
    assert_eq!(entry(&plan).next_due, None);
    assert_eq!(entry(&plan).last_checkpoint.as_deref(), Some("new"));
    let message = plan.status.unwrap().message.unwrap();
    assert!(message.contains("only when evicted"), "{message}");
}
