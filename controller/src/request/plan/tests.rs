use super::*;
use crate::fixtures::{content, content_with, lease, now, pod, request};
use checkpointing::crd::ContainerCheckpointContentStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const PENDING_TIMEOUT: Duration = Duration::from_secs(300);

fn observed<'a>(
    request: &'a ContainerCheckpoint,
    content: Option<&'a ContainerCheckpointContent>,
    pod: Option<&'a Pod>,
    lease: Option<&'a Lease>,
) -> Observed<'a> {
    Observed {
        request,
        content,
        pod,
        lease,
        lease_namespace: "kube-system",
        pending_timeout: PENDING_TIMEOUT,
        now: now(),
    }
}

/// Nothing to write and nothing to announce.
fn assert_idle(plan: &Plan) {
    assert!(plan.create_content.is_none(), "{plan:?}");
    assert_eq!(plan.status, None);
    assert_eq!(plan.transition, None);
}

/// `request` after the plan's status was written.
fn applied(request: &ContainerCheckpoint, plan: &Plan) -> ContainerCheckpoint {
    let mut request = request.clone();
    request.status = plan.status.clone().or(request.status);
    request
}

#[test]
fn valid_request_creates_its_content_and_goes_pending() {
    let req = request();
    let (p, l) = (pod(), lease("2025-01-01T00:00:50Z"));
    let plan = plan(&observed(&req, None, Some(&p), Some(&l)));

    let content = plan.create_content.as_ref().unwrap();
    assert_eq!(content.metadata.name.as_deref(), Some("cc1"));
    assert_eq!(content.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        content.labels().get(NODE_LABEL).map(String::as_str),
        Some("node1")
    );
    let owner = &content.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.uid.as_str()),
        ("ContainerCheckpoint", "cc1", "uid-cc1")
    );
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    assert_eq!(
        content.spec,
        ContainerCheckpointContentSpec {
            container_checkpoint_ref: "cc1".into(),
            namespace: "default".into(),
            pod_name: "app".into(),
            container_name: "counter".into(),
            node_name: "node1".into(),
            pod_uid: "uid-pod".into(),
            timeout_seconds: Some(30),
            volumes: Vec::new(),
            registry: None,
            credentials_secret: None,
            hold_source: false,
        }
    );
    assert_eq!(
        serde_json::to_value(content).unwrap(),
        serde_json::to_value(crate::fixtures::content()).unwrap(),
        "the shared fixture is what the plan creates"
    );
    // Metadata and spec only: the status belongs to noded.
    let json = serde_json::to_value(content).unwrap();
    assert!(json.get("status").is_none(), "{json}");

    let status = plan.status.as_ref().unwrap();
    assert_eq!(status.state, Some(CheckpointState::Pending));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "checkpoint requested from the node daemon on node1; its ContainerCheckpointContent shows progress"
        )
    );
    assert_eq!(status.node_name.as_deref(), Some("node1"));
    assert_eq!(status.content_name.as_deref(), Some("cc1"));
    assert_eq!(status.pod_uid.as_deref(), Some("uid-pod"));
    assert_eq!(plan.transition, None, "only final states are announced");
    assert_eq!(plan.requeue_after, Some(RESYNC));
}

#[test]
fn first_mirror_after_creation_changes_nothing() {
    let req = request();
    let (p, l) = (pod(), lease("2025-01-01T00:00:50Z"));
    let first = plan(&observed(&req, None, Some(&p), Some(&l)));
    let content = first.create_content.clone().unwrap();
    let req = applied(&req, &first);
    let again = plan(&observed(&req, Some(&content), None, None));
    assert_idle(&again);
    assert_eq!(again.requeue_after, Some(RESYNC));
}

/// `request()`, created `secs` seconds before the tests' clock.
fn created_ago(secs: u64) -> ContainerCheckpoint {
    let mut req = request();
    req.metadata.creation_timestamp = Some(Time(now() - Duration::from_secs(secs)));
    req
}

#[test]
fn every_refusal_fails_the_request_with_its_message() {
    // Waited long enough for the states that pass by themselves.
    let req = created_ago(PENDING_TIMEOUT.as_secs());
    let p = pod();
    let fresh = lease("2025-01-01T00:00:50Z");
    let stale = lease("2025-01-01T00:00:00Z");
    let mut other_ns = req.clone();
    other_ns.spec.namespace = Some("other".into());
    let mut unscheduled = pod();
    unscheduled.spec.as_mut().unwrap().node_name = None;

    let cases = [
        (
            &other_ns,
            Some(&p),
            Some(&fresh),
            "NamespaceMismatch",
            "spec.namespace \"other\" differs from the request's namespace \"default\"; a \
             ContainerCheckpoint can only checkpoint pods in its own namespace",
        ),
        (
            &req,
            None,
            None,
            "PodNotFound",
            "pod \"app\" not found in namespace \"default\"; create the pod first or fix \
             spec.podName",
        ),
        (
            &req,
            Some(&unscheduled),
            None,
            "PodNotScheduled",
            "pod \"app\" is not scheduled to a node yet; create the request again once the \
             pod runs",
        ),
        (
            &req,
            Some(&p),
            None,
            "NodeDaemonUnavailable",
            "no live node daemon on node \"node1\": its Lease \
             kube-system/checkpoint-noded-node1 does not exist; check that noded (the \
             node daemon's DaemonSet) runs a ready pod on that node, then create the \
             request again",
        ),
        (
            &req,
            Some(&p),
            Some(&stale),
            "NodeDaemonUnavailable",
            "no live node daemon on node \"node1\": its Lease \
             kube-system/checkpoint-noded-node1 expired 20s ago; check that noded (the \
             node daemon's DaemonSet) runs a ready pod on that node, then create the \
             request again",
        ),
    ];
    for (req, pod, lease, reason, message) in cases {
        let plan = plan(&observed(req, None, pod, lease));
        assert!(plan.create_content.is_none(), "{reason}");
        let status = plan.status.as_ref().unwrap();
        assert_eq!(status.state, Some(CheckpointState::Failed), "{reason}");
        assert_eq!(status.message.as_deref(), Some(message));
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason)
        );
        assert_eq!(plan.transition, Some(Transition::Failed));
        assert_eq!(plan.requeue_after, None, "a refusal is final");
    }
}

#[test]
fn a_request_waits_on_a_passing_state_then_fails_with_its_refusal() {
    let mut unscheduled = pod();
    unscheduled.spec.as_mut().unwrap().node_name = None;
    let creating = waiting_in(pod(), "ContainerCreating");
    let p = pod();
    let fresh = lease("2025-01-01T00:00:50Z");
    // (pod, lease, reason, what it waits for)
    let cases = [
        (
            &unscheduled,
            Some(&fresh),
            "PodNotScheduled",
            "waiting: pod \"app\" is not scheduled to a node yet",
        ),
        (
            &creating,
            Some(&fresh),
            "ContainerNotRunning",
            "waiting: container \"counter\" of pod \"app\" is not running yet (waiting: \
             ContainerCreating)",
        ),
        (
            &p,
            None,
            "NodeDaemonUnavailable",
            "waiting: no live node daemon on node \"node1\": its Lease \
             kube-system/checkpoint-noded-node1 does not exist",
        ),
    ];
    for (pod, lease, reason, waiting) in cases {
        // Created 10 s ago: Pending, saying what it waits for, and looked at again soon.
        let young = created_ago(10);
        let plan = plan(&observed(&young, None, Some(pod), lease));
        assert!(plan.create_content.is_none(), "{reason}");
        let status = plan.status.as_ref().unwrap();
        assert_eq!(status.state, Some(CheckpointState::Pending), "{reason}");
        assert_eq!(status.message.as_deref(), Some(waiting));
        let ready = &status.conditions[0];
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("False", reason)
        );
        assert_eq!(plan.transition, None);
        assert_eq!(
            plan.requeue_after,
            Some(Duration::from_secs(10)),
            "{reason}"
        );
        // Looked at again unchanged: nothing to write, still waiting.
        let again = plan_of(&applied(&young, &plan), pod, lease);
        assert_eq!(again.status, None, "{reason}");
        assert_eq!(again.requeue_after, Some(Duration::from_secs(10)));
        // Past the bound: Failed, with the refusal's own message.
        let old = applied(&created_ago(PENDING_TIMEOUT.as_secs() + 1), &plan);
        let failed = plan_of(&old, pod, lease);
        let status = failed.status.as_ref().unwrap();
        assert_eq!(status.state, Some(CheckpointState::Failed), "{reason}");
        assert!(
            !status.message.as_deref().unwrap().starts_with("waiting"),
            "{status:?}"
        );
        assert_eq!(status.conditions[0].reason, reason);
        assert_eq!(failed.transition, Some(Transition::Failed));
        assert_eq!(failed.requeue_after, None);
    }
    // Once the pod runs, the waiting request gets its Content.
    let young = created_ago(10);
    let waited = applied(&young, &plan_of(&young, &unscheduled, Some(&fresh)));
    let ready = plan_of(&waited, &p, Some(&fresh));
    assert!(ready.create_content.is_some());
    assert_eq!(ready.status.unwrap().state, Some(CheckpointState::Pending));
}

/// A crash-looping or ended container is no passing state: it fails at once.
#[test]
fn a_container_that_will_not_start_fails_at_once() {
    let crashing = waiting_in(pod(), "CrashLoopBackOff");
    let fresh = lease("2025-01-01T00:00:50Z");
    let plan = plan_of(&created_ago(1), &crashing, Some(&fresh));
    let status = plan.status.unwrap();
    assert_eq!(status.state, Some(CheckpointState::Failed));
    assert_eq!(status.conditions[0].reason, "ContainerNotRunning");
}

/// `pod` with its `counter` waiting for `reason`.
fn waiting_in(mut pod: Pod, reason: &str) -> Pod {
    let statuses = pod.status.as_mut().unwrap().container_statuses.as_mut();
    statuses.unwrap()[0].state = Some(k8s_openapi::api::core::v1::ContainerState {
        waiting: Some(k8s_openapi::api::core::v1::ContainerStateWaiting {
            reason: Some(reason.into()),
            message: None,
        }),
        ..Default::default()
    });
    pod
}

fn plan_of(request: &ContainerCheckpoint, pod: &Pod, lease: Option<&Lease>) -> Plan {
    plan(&observed(request, None, Some(pod), lease))
}

/// Timeouts an older CRD lets through end the request Failed, with nothing sent to a node.
#[test]
fn out_of_range_timeouts_fail_the_request() {
    let p = pod();
    let l = lease("2025-01-01T00:00:50Z");
    for t in [i64::MAX, 400_000_000_000, 0, -1] {
        let mut req = request();
        req.spec.timeout_seconds = Some(t);
        assert!(!needs_pod(&req, None), "refused before any lookup");
        let plan = plan(&observed(&req, None, Some(&p), Some(&l)));
        assert!(plan.create_content.is_none(), "{t}");
        let status = plan.status.as_ref().unwrap();
        assert_eq!(status.state, Some(CheckpointState::Failed), "{t}");
        assert_eq!(status.conditions[0].reason, "TimeoutOutOfRange");
        let message = status.message.as_deref().unwrap();
        assert!(
            message.starts_with(&format!("spec.timeoutSeconds {t} ")),
            "{message}"
        );
        assert!(message.contains("between 1 and 3600"), "{message}");
        assert_eq!(plan.transition, Some(Transition::Failed));
    }
}

#[test]
fn refused_request_is_left_alone_afterwards() {
    let req = request();
    let first = plan(&observed(&req, None, None, None));
    let req = applied(&req, &first);
    let p = pod();
    let l = lease("2025-01-01T00:00:50Z");
    // Even if the pod shows up later: a final request is not revisited.
    let again = plan(&observed(&req, None, Some(&p), Some(&l)));
    assert_idle(&again);
    assert_eq!(again.requeue_after, None);
}

#[test]
fn completed_content_completes_the_request_once() {
    let req = request();
    let content = content();
    let req = applied(&req, &plan(&observed(&req, Some(&content), None, None)));
    let done = content_with(ContainerCheckpointContentStatus {
        state: Some(CheckpointState::Completed),
        ready: true,
        archive_size: Some(4096),
        image: Some("localhost:5000/checkpoints/cc1@sha256:ab".into()),
        checkpoint_time: Some(Time(now())),
        ..Default::default()
    });
    let p = plan(&observed(&req, Some(&done), None, None));
    let status = p.status.as_ref().unwrap();
    assert_eq!(status.state, Some(CheckpointState::Completed));
    assert_eq!(status.archive_size, Some(4096));
    assert_eq!(
        status.image.as_deref(),
        Some("localhost:5000/checkpoints/cc1@sha256:ab")
    );
    assert_eq!(status.node_name.as_deref(), Some("node1"));
    assert_eq!(status.conditions[0].status, "True");
    assert_eq!(p.transition, Some(Transition::Completed));
    assert_eq!(p.requeue_after, None);

    // Idempotent: the mirrored request has nothing left to do.
    let req = applied(&req, &p);
    let again = plan(&observed(&req, Some(&done), None, None));
    assert_idle(&again);
    assert_eq!(again.requeue_after, None);
}

#[test]
fn failed_content_fails_the_request_with_its_message() {
    let req = request();
    let content = content_with(ContainerCheckpointContentStatus {
        state: Some(CheckpointState::Failed),
        message: Some("CheckpointContainer: criu dump failed".into()),
        ..Default::default()
    });
    let p = plan(&observed(&req, Some(&content), None, None));
    let status = p.status.as_ref().unwrap();
    assert_eq!(status.state, Some(CheckpointState::Failed));
    assert_eq!(
        status.message.as_deref(),
        Some("CheckpointContainer: criu dump failed")
    );
    assert_eq!(p.transition, Some(Transition::Failed));
}

#[test]
fn running_content_leaves_a_pending_request_alone() {
    let req = request();
    let req = applied(&req, &plan(&observed(&req, Some(&content()), None, None)));
    let running = content_with(ContainerCheckpointContentStatus {
        state: Some(CheckpointState::Running),
        ..Default::default()
    });
    let p = plan(&observed(&req, Some(&running), None, None));
    assert_idle(&p);
    assert_eq!(p.requeue_after, Some(RESYNC));

    // A request that has no state yet learns it, without an Event.
    let p = plan(&observed(&request(), Some(&running), None, None));
    assert_eq!(p.status.unwrap().state, Some(CheckpointState::Running));
    assert_eq!(p.transition, None);
}

#[test]
fn content_is_the_truth_once_it_exists() {
    // The pod is gone and the node daemon silent, yet the Content decides.
    let req = request();
    let content = content();
    let p = plan(&observed(&req, Some(&content), None, None));
    assert!(p.create_content.is_none());
    assert_eq!(p.status.unwrap().state, Some(CheckpointState::Pending));
}

#[test]
fn content_of_another_request_is_not_taken_over() {
    let req = request();
    let mut foreign = content();
    foreign.metadata.owner_references.as_mut().unwrap()[0].uid = "uid-old".into();
    let p = plan(&observed(&req, Some(&foreign), Some(&pod()), None));
    assert!(p.create_content.is_none());
    let status = p.status.unwrap();
    assert_eq!(status.state, Some(CheckpointState::Failed));
    assert_eq!(status.conditions[0].reason, "ContentConflict");

    // Still being deleted (its noded cleans up first): wait and look again soon.
    foreign.metadata.deletion_timestamp = Some(Time(now()));
    let p = plan(&observed(&req, Some(&foreign), Some(&pod()), None));
    assert!(p.create_content.is_none());
    let status = p.status.unwrap();
    assert_eq!(status.state, Some(CheckpointState::Pending));
    assert_eq!(status.conditions[0].reason, "PreviousContentDeleting");
    assert_eq!(p.requeue_after, Some(PREVIOUS_CONTENT_POLL));
}

#[test]
fn request_being_deleted_needs_nothing() {
    let mut req = request();
    req.metadata.deletion_timestamp = Some(Time(now()));
    let p = plan(&observed(&req, None, None, None));
    assert_idle(&p);
    assert_eq!(p.requeue_after, None);
}

#[test]
fn generation_change_is_recorded() {
    let req = request();
    let content = content();
    let mut req = applied(&req, &plan(&observed(&req, Some(&content), None, None)));
    req.metadata.generation = Some(2);
    let p = plan(&observed(&req, Some(&content), None, None));
    let status = p.status.unwrap();
    assert_eq!(status.observed_generation, Some(2));
    assert_eq!(status.conditions[0].observed_generation, Some(2));
    assert_eq!(p.transition, None);
}

fn api_error(code: u16, reason: &str) -> kube::Error {
    kube::Error::Api(Box::new(kube::core::Status {
        code,
        reason: reason.into(),
        message: "metadata.labels: Invalid value".into(),
        ..kube::core::Status::failure("metadata.labels: Invalid value", reason)
    }))
}

#[test]
fn rejected_content_fails_the_request_other_errors_keep_it_pending() {
    let req = request();
    let content = content();
    let p = content_not_created(&req, &content, &api_error(422, "Invalid"), now());
    let status = p.status.unwrap();
    assert_eq!(status.state, Some(CheckpointState::Failed));
    assert_eq!(
        status.message.as_deref(),
        Some(
            "the API server rejected ContainerCheckpointContent default/cc1: \
             metadata.labels: Invalid value"
        )
    );
    assert_eq!(p.transition, Some(Transition::Failed));

    let p = content_not_created(&req, &content, &api_error(503, "ServiceUnavailable"), now());
    let status = p.status.unwrap();
    assert_eq!(status.state, Some(CheckpointState::Pending));
    assert_eq!(status.conditions[0].reason, "ContentNotCreated");
    assert!(status.message.unwrap().ends_with("; retrying"));
}

#[test]
fn the_pod_is_read_only_while_a_content_is_to_be_created() {
    assert!(needs_pod(&request(), None));
    assert!(!needs_pod(&request(), Some(&content())));
    let mut hostile = request();
    hostile.spec.pod_name = "../../secrets/x".into();
    assert!(!needs_pod(&hostile, None));
    let refused = applied(&request(), &plan(&observed(&request(), None, None, None)));
    assert!(!needs_pod(&refused, None));
}
