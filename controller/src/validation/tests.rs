use super::*;
use crate::fixtures::{lease, now, pod, request};
use k8s_openapi::api::core::v1::{
    ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `request()` naming `pod` and `container`, with `spec_ns` as its spec.namespace.
fn request_for(pod: &str, container: &str, spec_ns: Option<&str>) -> ContainerCheckpoint {
    let mut cc = request();
    cc.spec.pod_name = pod.into();
    cc.spec.container = container.into();
    cc.spec.namespace = spec_ns.map(Into::into);
    cc
}

/// `pod()` on `node`, its `counter` in `state`.
fn pod_on(node: Option<&str>, state: Option<ContainerState>) -> Pod {
    let mut p = pod();
    p.spec.as_mut().unwrap().node_name = node.map(Into::into);
    p.status
        .as_mut()
        .unwrap()
        .container_statuses
        .as_mut()
        .unwrap()[0]
        .state = state;
    p
}

fn running() -> Option<ContainerState> {
    Some(ContainerState {
        running: Some(ContainerStateRunning::default()),
        ..Default::default()
    })
}

#[test]
fn namespace_mismatch_is_refused_with_the_exact_message() {
    let err = check_request(&request_for("app", "counter", Some("other"))).unwrap_err();
    assert_eq!(
        err.to_string(),
        "spec.namespace \"other\" differs from the request's namespace \"default\"; a \
         ContainerCheckpoint can only checkpoint pods in its own namespace"
    );
    assert_eq!(err.reason(), "NamespaceMismatch");
    assert!(check_request(&request_for("app", "counter", Some("default"))).is_ok());
    assert!(check_request(&request_for("app", "counter", None)).is_ok());
}

#[test]
fn hostile_names_are_refused_before_any_lookup() {
    let err = check_request(&request_for("../../secrets/x", "counter", None)).unwrap_err();
    assert_eq!(err.reason(), "InvalidPodName");
    assert_eq!(
        err.to_string(),
        "pod \"../../secrets/x\" not found: spec.podName is not a valid pod name (lowercase \
         letters, digits, '-' and '.', at most 253 characters); fix spec.podName"
    );
    assert!(err.to_string().contains("fix spec.podName"), "{err}");

    let long = "a".repeat(10_000);
    let err = check_request(&request_for(&long, "counter", None)).unwrap_err();
    assert!(err.to_string().len() < 300, "{err}");
    assert!(err.to_string().contains("10000 characters"), "{err}");

    let err = check_request(&request_for("app", "Counter/..", None)).unwrap_err();
    assert_eq!(err.reason(), "InvalidContainerName");
    assert!(err.to_string().contains("fix spec.container"), "{err}");

    assert!(check_request(&request_for("app.v1-2", "c-1", None)).is_ok());
    assert!(check_request(&request_for("app", &"c".repeat(64), None)).is_err());
    assert!(check_request(&request_for("-app", "c", None)).is_err());
}

#[test]
fn timeouts_outside_the_schema_bounds_are_refused_naming_field_and_range() {
    for t in [i64::MAX, 400_000_000_000, 3601, 0, -1, i64::MIN] {
        let mut req = request();
        req.spec.timeout_seconds = Some(t);
        let err = check_request(&req).unwrap_err();
        assert_eq!(err, Refusal::TimeoutOutOfRange(t));
        assert_eq!(err.reason(), "TimeoutOutOfRange");
        assert_eq!(
            err.to_string(),
            format!(
                "spec.timeoutSeconds {t} is out of range: it must be between 1 and 3600 seconds; \
                 set spec.timeoutSeconds within that range or leave it unset for the node's \
                 default"
            )
        );
    }
    for t in [Some(1), Some(3600), None] {
        let mut req = request();
        req.spec.timeout_seconds = t;
        assert_eq!(check_request(&req), Ok(()), "{t:?}");
    }
}

#[test]
fn a_huge_spec_namespace_is_cut_in_the_message() {
    let huge = "n".repeat(1 << 20);
    let err = check_request(&request_for("app", "counter", Some(&huge))).unwrap_err();
    assert_eq!(err.reason(), "NamespaceMismatch");
    assert!(err.to_string().len() < 400, "{}", err.to_string().len());
}

#[test]
fn extreme_lease_durations_never_panic() {
    let now = now();
    for seconds in [i32::MAX, i32::MIN, 0, -1] {
        let mut l = lease("2025-01-01T00:00:30Z");
        l.spec.as_mut().unwrap().lease_duration_seconds = Some(seconds);
        let live = check_node_daemon("node1", Some(&l), "kube-system/x", now).is_ok();
        assert_eq!(live, seconds == i32::MAX, "{seconds}");
    }
    let mut ancient = lease("0001-01-01T00:00:00Z");
    ancient.spec.as_mut().unwrap().lease_duration_seconds = Some(i32::MIN);
    assert!(check_node_daemon("node1", Some(&ancient), "kube-system/x", now).is_err());
}

#[test]
fn missing_pod_is_refused() {
    let err = check_pod(&request_for("app", "counter", None), None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod \"app\" not found in namespace \"default\"; create the pod first or fix \
         spec.podName"
    );
}

#[test]
fn unscheduled_pod_is_refused() {
    let p = pod_on(None, None);
    let err = check_pod(&request_for("app", "counter", None), Some(&p)).unwrap_err();
    assert_eq!(err.reason(), "PodNotScheduled");
    assert_eq!(
        err.to_string(),
        "pod \"app\" is not scheduled to a node yet; create the request again once the pod \
         runs"
    );
}

#[test]
fn terminating_pod_is_refused() {
    let mut p = pod_on(Some("node1"), running());
    p.metadata.deletion_timestamp = Some(Time(Timestamp::UNIX_EPOCH));
    let err = check_pod(&request_for("app", "counter", None), Some(&p)).unwrap_err();
    assert_eq!(err.reason(), "PodTerminating");
    assert!(err.to_string().contains("being deleted"), "{err}");
}

#[test]
fn unknown_container_is_refused_listing_the_pods_containers() {
    let p = pod_on(Some("node1"), running());
    let err = check_pod(&request_for("app", "db", None), Some(&p)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod \"app\" has no container \"db\"; its containers are \"counter\", \"sidecar\"; \
         fix spec.container"
    );
}

#[test]
fn container_not_running_is_refused_saying_its_state() {
    let req = request_for("app", "counter", None);
    let waiting = pod_on(
        Some("node1"),
        Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some("ImagePullBackOff".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    let err = check_pod(&req, Some(&waiting)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "container \"counter\" of pod \"app\" is not running (waiting: ImagePullBackOff); \
         create the request again once it runs"
    );

    let terminated = pod_on(
        Some("node1"),
        Some(ContainerState {
            terminated: Some(ContainerStateTerminated {
                reason: Some("Error".into()),
                exit_code: 137,
                ..Default::default()
            }),
            ..Default::default()
        }),
    );
    let err = check_pod(&req, Some(&terminated)).unwrap_err();
    assert!(
        err.to_string()
            .contains("(terminated: Error, exit code 137)"),
        "{err}"
    );

    // The sidecar exists but has no status yet.
    let p = pod_on(Some("node1"), running());
    let err = check_pod(&request_for("app", "sidecar", None), Some(&p)).unwrap_err();
    assert!(
        err.to_string().contains("(no status reported yet)"),
        "{err}"
    );
}

#[test]
fn running_container_passes_and_names_its_node() {
    let p = pod_on(Some("node1"), running());
    let (_, node) = check_pod(&request_for("app", "counter", None), Some(&p)).unwrap();
    assert_eq!(node, "node1");
}

#[test]
fn lease_freshness() {
    let now = now();
    let at = |s: &str| Some(s.parse::<Timestamp>().unwrap());
    let lref = "kube-system/checkpoint-noded-node1";

    let fresh = lease("2025-01-01T00:00:30Z");
    assert_eq!(check_node_daemon("node1", Some(&fresh), lref, now), Ok(()));
    assert_eq!(lease_expiry(&fresh), at("2025-01-01T00:01:10Z"));

    // Expiry is exclusive: a lease that ends exactly now no longer vouches.
    let edge = lease("2025-01-01T00:00:20Z");
    assert!(check_node_daemon("node1", Some(&edge), lref, now).is_err());

    let stale = lease("2025-01-01T00:00:00Z");
    let err = check_node_daemon("node1", Some(&stale), lref, now).unwrap_err();
    assert_eq!(err.reason(), "NodeDaemonUnavailable");
    assert_eq!(
        err.to_string(),
        "no live node daemon on node \"node1\": its Lease \
         kube-system/checkpoint-noded-node1 expired 20s ago; check that noded (the \
         node daemon's DaemonSet) runs a ready pod on that node, then create the request \
         again"
    );

    let long_gone = lease("2024-12-31T21:55:00Z");
    let err = check_node_daemon("node1", Some(&long_gone), lref, now).unwrap_err();
    assert!(err.to_string().contains("expired 2h 5m 20s ago"), "{err}");

    let err = check_node_daemon("node1", None, lref, now).unwrap_err();
    assert!(
        err.to_string()
            .contains("its Lease kube-system/checkpoint-noded-node1 does not exist"),
        "{err}"
    );

    let mut unrenewed = lease("2025-01-01T00:00:59Z");
    unrenewed.spec.as_mut().unwrap().renew_time = None;
    let err = check_node_daemon("node1", Some(&unrenewed), lref, now).unwrap_err();
    assert!(err.to_string().contains("no renewTime"), "{err}");
    let mut no_duration = lease("2025-01-01T00:00:59Z");
    no_duration.spec.as_mut().unwrap().lease_duration_seconds = None;
    assert!(check_node_daemon("node1", Some(&no_duration), lref, now).is_err());
}

#[test]
fn only_states_that_pass_by_themselves_are_waited_for() {
    let req = request_for("app", "counter", None);
    let waits = |p: Pod| check_pod(&req, Some(&p)).unwrap_err().waits_for();
    let waiting = |reason: Option<&str>| {
        Some(ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: reason.map(Into::into),
                message: None,
            }),
            ..Default::default()
        })
    };
    assert_eq!(
        waits(pod_on(None, running())).as_deref(),
        Some("pod \"app\" is not scheduled to a node yet")
    );
    for starting in [Some("ContainerCreating"), Some("PodInitializing"), None] {
        let why = waits(pod_on(Some("node1"), waiting(starting)));
        assert!(
            why.as_deref().is_some_and(|w| w
                .starts_with("container \"counter\" of pod \"app\" is not running yet (waiting")),
            "{starting:?}: {why:?}"
        );
    }
    let mut unreported = pod_on(Some("node1"), None);
    unreported.status.as_mut().unwrap().container_statuses = Some(Vec::new());
    assert!(waits(unreported).is_some(), "no status reported yet");
    for stuck in ["CrashLoopBackOff", "ImagePullBackOff"] {
        assert_eq!(waits(pod_on(Some("node1"), waiting(Some(stuck)))), None);
    }
    let terminated = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 1,
            ..Default::default()
        }),
        ..Default::default()
    });
    assert_eq!(waits(pod_on(Some("node1"), terminated)), None);
    assert_eq!(check_pod(&req, None).unwrap_err().waits_for(), None);
    let no_daemon = check_node_daemon("node1", None, "kube-system/x", now()).unwrap_err();
    assert_eq!(
        no_daemon.waits_for().as_deref(),
        Some("no live node daemon on node \"node1\": its Lease kube-system/x does not exist")
    );
}
