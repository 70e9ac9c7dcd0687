//! The pure decision of a PodCheckpoint reconcile: which ContainerCheckpoints it needs (one per
//! container, owned by it, so all the per-container machinery applies) and its status, summed
//! up from theirs.

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointSpec, ContainerResult, PodCheckpoint,
    PodCheckpointStatus,
};
use checkpointing::names::{POD_CHECKPOINT_LABEL, is_dns_subdomain};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

pub use failure::Failure;

use crate::status::ready;

mod failure;

/// Everything the decision depends on.
pub struct Observed<'a> {
    pub request: &'a PodCheckpoint,
    /// The pod, read only while the containers are still to be chosen.
    pub pod: Option<&'a Pod>,
    /// The ContainerCheckpoints this request owns.
    pub children: &'a [ContainerCheckpoint],
    pub now: Timestamp,
}

#[derive(Debug, Default)]
pub struct Plan {
    /// ContainerCheckpoints to create (server-side apply: a retry finds its own).
    pub create: Vec<ContainerCheckpoint>,
    /// New status, only when it differs.
    pub status: Option<PodCheckpointStatus>,
    /// Why the request failed, when this plan fails it.
    pub failure: Option<Failure>,
}

/// Name of the ContainerCheckpoint of `container`: `<request>-<container>`.
pub fn child_name(request: &str, container: &str) -> String {
    format!("{request}-{container}")
}

/// Whether deciding needs the pod: only until the containers are chosen, and only for a valid
/// pod name (a hostile one never reaches an API path).
pub fn needs_pod(request: &PodCheckpoint) -> bool {
    !is_final(request) && chosen(request).is_empty() && is_dns_subdomain(&request.spec.pod_name)
}

pub fn is_final(request: &PodCheckpoint) -> bool {
    request
        .status
        .as_ref()
        .and_then(|s| s.state)
        .is_some_and(CheckpointState::is_final)
}

/// The containers recorded in the status, once chosen.
fn chosen(request: &PodCheckpoint) -> Vec<String> {
    request
        .status
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| c.name.clone())
        .collect()
}

pub fn plan(o: &Observed) -> Plan {
    let request = o.request;
    if request.metadata.deletion_timestamp.is_some() || is_final(request) {
        return Plan::default();
    }
    let name = request.name_any();
    let mut containers = chosen(request);
    let mut create = Vec::new();
    if containers.is_empty() {
        // Created once, when the containers are chosen (again, if that status was lost: the
        // apply finds its own); one missing later was deleted, which fails the whole.
        match choose(request, o.pod) {
            Ok(chosen) => containers = chosen,
            Err(failure) => return fail(request, failure, o.now),
        }
        create = containers.iter().map(|c| child(request, c)).collect();
    } else if let Some(gone) = containers.iter().find(|c| {
        !o.children
            .iter()
            .any(|child| child.name_any() == child_name(&name, c))
    }) {
        let failure = Failure::ContainerCheckpointDeleted {
            child: child_name(&name, gone),
            container: gone.clone(),
        };
        return fail(request, failure, o.now);
    }
    let (status, failure) = summed_up(request, &containers, o.children, o.now);
    Plan {
        create,
        failure,
        ..with_status(request, status)
    }
}

/// The plan of a request one of whose ContainerCheckpoints the API server refused to create
/// (a policy, a quota): final, and the user is told why.
pub fn child_refused(
    request: &PodCheckpoint,
    child: &str,
    code: u16,
    why: &str,
    now: Timestamp,
) -> Plan {
    let failure = Failure::ContainerCheckpointRefused {
        child: child.to_owned(),
        code,
        why: why.to_owned(),
    };
    fail(request, failure, now)
}

/// The containers to checkpoint: the listed ones, else every container of the pod.
fn choose(request: &PodCheckpoint, pod: Option<&Pod>) -> Result<Vec<String>, Failure> {
    let namespace = request.namespace().unwrap_or_default();
    let pod_name = &request.spec.pod_name;
    if !is_dns_subdomain(pod_name) {
        return Err(Failure::InvalidPodName {
            pod: pod_name.clone(),
            namespace,
        });
    }
    let Some(spec) = pod.and_then(|p| p.spec.as_ref()) else {
        return Err(Failure::PodNotFound {
            pod: pod_name.clone(),
            namespace,
        });
    };
    let in_pod: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
    let wanted = if request.spec.containers.is_empty() {
        in_pod.clone()
    } else {
        request.spec.containers.clone()
    };
    if let Some(missing) = wanted.iter().find(|c| !in_pod.contains(c)) {
        return Err(Failure::ContainerNotFound {
            pod: pod_name.clone(),
            container: missing.clone(),
            containers: in_pod,
        });
    }
    let name = request.name_any();
    if let Some(c) = wanted
        .iter()
        .find(|c| !is_dns_subdomain(&child_name(&name, c)))
    {
        return Err(Failure::NameTooLong {
            container: c.clone(),
            child: child_name(&name, c),
        });
    }
    Ok(wanted)
}

/// The ContainerCheckpoint of `container`, owned by the request (its deletion takes them along)
/// and labelled with its name.
fn child(request: &PodCheckpoint, container: &str) -> ContainerCheckpoint {
    let name = request.name_any();
    let mut cc = ContainerCheckpoint::new(
        &child_name(&name, container),
        ContainerCheckpointSpec {
            pod_name: request.spec.pod_name.clone(),
            container: container.to_owned(),
            namespace: None,
            timeout_seconds: request.spec.timeout_seconds,
            registry: request.spec.registry.clone(),
            hold_source: request.spec.hold_source,
        },
    );
    cc.metadata.namespace = request.namespace();
    cc.metadata.labels = Some([(POD_CHECKPOINT_LABEL.to_owned(), name)].into());
    cc.metadata.owner_references = request.controller_owner_ref(&()).map(|o| vec![o]);
    cc
}

/// The request's status from its containers' requests: Failed as soon as one failed (and
/// why), Completed once all completed, Pending before.
fn summed_up(
    request: &PodCheckpoint,
    containers: &[String],
    children: &[ContainerCheckpoint],
    now: Timestamp,
) -> (PodCheckpointStatus, Option<Failure>) {
    let name = request.name_any();
    let mut status = PodCheckpointStatus::default();
    let mut failure = None;
    let mut done = 0;
    for container in containers {
        let cc_name = child_name(&name, container);
        let child = children
            .iter()
            .find(|c| c.name_any() == cc_name)
            .and_then(|c| c.status.as_ref());
        let state = child.and_then(|s| s.state);
        if let Some(s) = child {
            status.node_name = status.node_name.or_else(|| s.node_name.clone());
            status.pod_uid = status.pod_uid.or_else(|| s.pod_uid.clone());
        }
        match state {
            Some(CheckpointState::Completed) => done += 1,
            Some(CheckpointState::Failed) if failure.is_none() => {
                let message = child.and_then(|s| s.message.clone()).unwrap_or_default();
                failure = Some(Failure::ContainerFailed {
                    container: container.clone(),
                    message,
                });
            }
            _ => {}
        }
        status.containers.push(ContainerResult {
            name: container.clone(),
            container_checkpoint: cc_name,
            state,
            image: child.and_then(|s| s.image.clone()),
            archive_size: child.and_then(|s| s.archive_size),
        });
    }
    let (state, reason, message) = match &failure {
        Some(failure) => (
            CheckpointState::Failed,
            failure.reason(),
            failure.to_string(),
        ),
        None if done == containers.len() => (
            CheckpointState::Completed,
            "Completed",
            format!(
                "checkpointed {} of pod {:?}",
                plural(containers.len()),
                request.spec.pod_name
            ),
        ),
        None => (
            CheckpointState::Pending,
            "Checkpointing",
            format!(
                "checkpointing {} of pod {:?}: {done} done; each container's ContainerCheckpoint \
                 shows progress",
                plural(containers.len()),
                request.spec.pod_name
            ),
        ),
    };
    status.state = Some(state);
    status.message = Some(message);
    (finish(request, status, reason, now), failure)
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 container".to_owned()
    } else {
        format!("{n} containers")
    }
}

/// The plan that fails the request for `failure`.
fn fail(request: &PodCheckpoint, failure: Failure, now: Timestamp) -> Plan {
    let status = PodCheckpointStatus {
        state: Some(CheckpointState::Failed),
        message: Some(failure.to_string()),
        ..Default::default()
    };
    let status = finish(request, status, failure.reason(), now);
    Plan {
        failure: Some(failure),
        ..with_status(request, status)
    }
}

fn finish(
    request: &PodCheckpoint,
    mut status: PodCheckpointStatus,
    reason: &str,
    now: Timestamp,
) -> PodCheckpointStatus {
    let previous = request.status.as_ref().map_or(&[][..], |s| &s.conditions);
    let generation = request.meta().generation;
    status.conditions = vec![ready(
        previous,
        status.state,
        reason,
        status.message.as_deref(),
        generation,
        now,
    )];
    status.observed_generation = generation;
    status
}

fn with_status(request: &PodCheckpoint, status: PodCheckpointStatus) -> Plan {
    Plan {
        status: (request.status.as_ref() != Some(&status)).then_some(status),
        ..Plan::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{now, pod};
    use checkpointing::crd::{ContainerCheckpointStatus, PodCheckpointSpec};

    fn request(containers: &[&str]) -> PodCheckpoint {
        let mut pc = PodCheckpoint::new(
            "pc1",
            PodCheckpointSpec {
                pod_name: "app".into(),
                containers: containers.iter().map(|&c| c.into()).collect(),
                timeout_seconds: Some(30),
                registry: None,
                hold_source: false,
            },
        );
        pc.metadata.namespace = Some("default".into());
        pc.metadata.uid = Some("uid-pc1".into());
        pc
    }

    fn observe<'a>(
        request: &'a PodCheckpoint,
        pod: Option<&'a Pod>,
        children: &'a [ContainerCheckpoint],
    ) -> Plan {
        plan(&Observed {
            request,
            pod,
            children,
            now: now(),
        })
    }

    fn finished(
        mut cc: ContainerCheckpoint,
        state: CheckpointState,
        message: &str,
    ) -> ContainerCheckpoint {
        cc.status = Some(ContainerCheckpointStatus {
            state: Some(state),
            message: Some(message.into()),
            node_name: Some("node1".into()),
            image: (state == CheckpointState::Completed).then(|| {
                format!(
                    "localhost:5050/default/{}@sha256:{}",
                    cc.name_any(),
                    "a".repeat(64)
                )
            }),
            archive_size: Some(100),
            ..Default::default()
        });
        cc
    }

    #[test]
    fn every_container_of_the_pod_gets_an_owned_request() {
        let mut pc = request(&[]);
        let registry = checkpointing::crd::RegistrySpec {
            compression: None,
            repository: Some("reg.example:5443/team/ckpt".into()),
            secret_ref: None,
        };
        pc.spec.registry = Some(registry.clone());
        let plan = observe(&pc, Some(&pod()), &[]);
        let names: Vec<_> = plan
            .create
            .iter()
            .map(|c| (c.name_any(), c.spec.container.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("pc1-counter".into(), "counter".into()),
                ("pc1-sidecar".into(), "sidecar".into())
            ]
        );
        let owner = &plan.create[0].metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("PodCheckpoint", "uid-pc1", Some(true))
        );
        assert_eq!(plan.create[0].spec.timeout_seconds, Some(30));
        assert!(
            plan.create
                .iter()
                .all(|c| c.spec.registry == Some(registry.clone())),
            "each container's image goes where the pod's was asked to"
        );
        let status = plan.status.unwrap();
        assert_eq!(status.state, Some(CheckpointState::Pending));
        assert_eq!(status.containers.len(), 2);
    }

    #[test]
    fn listed_containers_only_and_unknown_ones_fail_with_the_pods_containers() {
        let plan = observe(&request(&["sidecar"]), Some(&pod()), &[]);
        assert_eq!(plan.create.len(), 1);
        let status = observe(&request(&["nope"]), Some(&pod()), &[])
            .status
            .unwrap();
        assert_eq!(status.state, Some(CheckpointState::Failed));
        assert_eq!(
            status.message.unwrap(),
            "pod \"app\" has no container \"nope\" (its containers are \"counter\", \"sidecar\"); \
             list only containers of the pod"
        );
        let missing = observe(&request(&[]), None, &[]).status.unwrap();
        assert_eq!(missing.conditions[0].reason, "PodNotFound");
        let mut hostile = request(&[]);
        hostile.spec.pod_name = "../../secrets/x".into();
        assert!(!needs_pod(&hostile), "never looked up");
        let refused = observe(&hostile, None, &[]).status.unwrap();
        assert_eq!(refused.conditions[0].reason, "InvalidPodName");
    }

    #[test]
    fn a_failing_plan_says_which_failure_it_is() {
        let unknown = observe(&request(&["nope"]), Some(&pod()), &[]);
        assert!(
            matches!(&unknown.failure, Some(Failure::ContainerNotFound { container, .. })
                if container == "nope"),
            "{unknown:?}"
        );
        let missing = observe(&request(&[]), None, &[]);
        assert!(matches!(missing.failure, Some(Failure::PodNotFound { .. })));
        assert_eq!(observe(&request(&[]), Some(&pod()), &[]).failure, None);
    }

    #[test]
    fn one_failed_container_fails_the_request_and_all_completed_complete_it() {
        let mut pc = request(&[]);
        let first = observe(&pc, Some(&pod()), &[]);
        pc.status = first.status;
        let [a, b] = [first.create[0].clone(), first.create[1].clone()];
        let done = [
            finished(a.clone(), CheckpointState::Completed, "ok"),
            finished(b.clone(), CheckpointState::Completed, "ok"),
        ];
        // Once chosen, the pod is no longer needed: it may be gone (a migration deletes it).
        assert!(!needs_pod(&pc));
        let status = observe(&pc, None, &done).status.unwrap();
        assert_eq!(status.state, Some(CheckpointState::Completed));
        assert_eq!(status.conditions[0].status, "True");
        assert!(
            status
                .containers
                .iter()
                .all(|c| c.image.as_deref().unwrap().contains("@sha256:"))
        );
        let broken = [
            finished(a, CheckpointState::Completed, "ok"),
            finished(b, CheckpointState::Failed, "CRIU failed"),
        ];
        let status = observe(&pc, None, &broken).status.unwrap();
        assert_eq!(status.state, Some(CheckpointState::Failed));
        assert_eq!(
            status.message.as_deref(),
            Some("container \"sidecar\": CRIU failed")
        );
        // A container's request deleted under it fails the whole, rather than checkpoint again.
        let lost = observe(&pc, None, &broken[..1]);
        assert!(lost.create.is_empty());
        assert_eq!(
            lost.status.unwrap().conditions[0].reason,
            "ContainerCheckpointDeleted"
        );
        // Nothing to create again, and a final request is left alone.
        pc.status = Some(status);
        let again = observe(&pc, None, &broken);
        assert!(again.create.is_empty() && again.status.is_none());
    }
}
