//! Reconciling a ContainerCheckpoint: [`plan`] decides from what was observed, [`reconcile`]
//! reads the cluster, carries the plan out and reports.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use checkpointing::crd::{
    CheckpointState, ContainerCheckpoint, ContainerCheckpointContent,
    ContainerCheckpointContentSpec, ContainerCheckpointStatus,
};
use checkpointing::names::{CONTROLLER_MANAGER, NODE_LABEL, noded_lease_name};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use crate::admin::Metrics;
use crate::status::{self, Transition};
use crate::validation;

/// How often a request that is not final is looked at again without any watch event: a safety
/// net, not the driver (Content events are).
const RESYNC: Duration = Duration::from_secs(300);

/// How soon to look again while an earlier Content of the same name is being deleted.
const PREVIOUS_CONTENT_POLL: Duration = Duration::from_secs(5);

/// Longest wait between retries after errors.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Everything the decision depends on, as read from the cluster.
pub struct Observed<'a> {
    pub request: &'a ContainerCheckpoint,
    /// The Content of the request's name, whoever owns it.
    pub content: Option<&'a ContainerCheckpointContent>,
    /// Read only while a Content is still to be created.
    pub pod: Option<&'a Pod>,
    /// The noded Lease of the pod's node, read only while a Content is still to be created.
    pub lease: Option<&'a Lease>,
    pub lease_namespace: &'a str,
    pub now: Timestamp,
}

/// What to do. `Plan::default()` is "nothing".
#[derive(Debug, Default)]
pub struct Plan {
    /// Content to create (server-side apply of metadata and spec).
    pub create_content: Option<ContainerCheckpointContent>,
    /// New request status, only when it differs from the current one.
    pub status: Option<ContainerCheckpointStatus>,
    /// Event to publish once the status is written.
    pub transition: Option<Transition>,
    /// Look again after this long even without a watch event.
    pub requeue_after: Option<Duration>,
}

/// Decides what one reconcile does, from what was observed alone.
pub fn plan(o: &Observed) -> Plan {
    let request = o.request;
    // Being deleted: garbage collection removes the Content; nothing is left to decide.
    if request.metadata.deletion_timestamp.is_some() {
        return Plan::default();
    }
    let is_final = request
        .status
        .as_ref()
        .and_then(|s| s.state)
        .is_some_and(CheckpointState::is_final);
    let mut create_content = None;
    let mut requeue_after = None;
    let desired = match o.content {
        // Once the Content exists it is the truth, even for a request already final.
        Some(content) if owned_by(content, request) => status::mirror(request, content, o.now),
        _ if is_final => return Plan::default(),
        Some(content) if content.metadata.deletion_timestamp.is_some() => {
            requeue_after = Some(PREVIOUS_CONTENT_POLL);
            status::waiting(
                request,
                "PreviousContentDeleting",
                format!(
                    "waiting for ContainerCheckpointContent {} of an earlier request with this \
                     name to be deleted",
                    content_ref(content)
                ),
                o.now,
            )
        }
        Some(content) => status::failed(
            request,
            "ContentConflict",
            format!(
                "ContainerCheckpointContent {} already exists and belongs to another request; \
                 delete it or give the request another name",
                content_ref(content)
            ),
            o.now,
        ),
        None => match validate(o) {
            Err(refusal) => status::refused(request, &refusal, o.now),
            Ok((pod, node)) => {
                let Some(content) = desired_content(request, pod, node) else {
                    // Only objects read from the API server reach here, and they have a uid.
                    return Plan::default();
                };
                let desired = status::mirror(request, &content, o.now);
                create_content = Some(content);
                desired
            }
        },
    };
    let mut plan = with_status(request, desired);
    plan.create_content = create_content;
    plan.requeue_after = requeue_after.or(plan.requeue_after);
    plan
}

/// The plan when creating the Content failed: a rejected object (invalid, e.g. a node name too
/// long for a label) fails the request; anything else leaves it Pending and is retried.
pub fn content_not_created(
    request: &ContainerCheckpoint,
    content: &ContainerCheckpointContent,
    error: &kube::Error,
    now: Timestamp,
) -> Plan {
    let name = content_ref(content);
    let desired = match error {
        kube::Error::Api(s) if s.code == 400 || s.is_invalid() => status::failed(
            request,
            "ContentRejected",
            format!(
                "the API server rejected ContainerCheckpointContent {name}: {}",
                s.message
            ),
            now,
        ),
        other => status::waiting(
            request,
            "ContentNotCreated",
            format!(
                "creating ContainerCheckpointContent {name} failed ({}); retrying",
                cause(other)
            ),
            now,
        ),
    };
    with_status(request, desired)
}

/// Plan the write of `desired`, only if it changes something, with the Event its state change
/// deserves.
fn with_status(request: &ContainerCheckpoint, desired: ContainerCheckpointStatus) -> Plan {
    let current = request.status.as_ref();
    if current == Some(&desired) {
        return Plan {
            requeue_after: resync(desired.state),
            ..Plan::default()
        };
    }
    Plan {
        transition: status::transition(current.and_then(|s| s.state), desired.state),
        requeue_after: resync(desired.state),
        status: Some(desired),
        create_content: None,
    }
}

fn resync(state: Option<CheckpointState>) -> Option<Duration> {
    match state {
        Some(s) if s.is_final() => None,
        _ => Some(RESYNC),
    }
}

/// All checks in order; on success the pod and its node.
fn validate<'a>(o: &Observed<'a>) -> Result<(&'a Pod, &'a str), validation::Refusal> {
    validation::check_request(o.request)?;
    let (pod, node) = validation::check_pod(o.request, o.pod)?;
    let lease_ref = format!("{}/{}", o.lease_namespace, noded_lease_name(node));
    validation::check_node_daemon(node, o.lease, &lease_ref, o.now)?;
    Ok((pod, node))
}

/// The Content a valid request asks for: same name and namespace, labelled with its node so
/// only that node's noded picks it up, owned by the request so deleting the request deletes it.
fn desired_content(
    request: &ContainerCheckpoint,
    pod: &Pod,
    node: &str,
) -> Option<ContainerCheckpointContent> {
    let owner = OwnerReference {
        block_owner_deletion: Some(true),
        ..request.controller_owner_ref(&())?
    };
    let name = request.name_any();
    let namespace = request.namespace().unwrap_or_default();
    Some(ContainerCheckpointContent {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(namespace.clone()),
            labels: Some(BTreeMap::from([(NODE_LABEL.to_owned(), node.to_owned())])),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        spec: ContainerCheckpointContentSpec {
            container_checkpoint_ref: name,
            namespace,
            pod_name: request.spec.pod_name.clone(),
            container_name: request.spec.container.clone(),
            node_name: node.to_owned(),
            pod_uid: pod.metadata.uid.clone().unwrap_or_default(),
            timeout_seconds: request.spec.timeout_seconds,
        },
        status: None,
    })
}

fn owned_by(content: &ContainerCheckpointContent, request: &ContainerCheckpoint) -> bool {
    let Some(uid) = request.metadata.uid.as_deref() else {
        return false;
    };
    content
        .owner_references()
        .iter()
        .any(|o| o.uid == uid && o.controller == Some(true))
}

fn content_ref(content: &ContainerCheckpointContent) -> String {
    format!(
        "{}/{}",
        content.namespace().unwrap_or_default(),
        content.name_any()
    )
}

/// Wait before retry number `failures` (1-based): doubling from one second, capped.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
}

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub lease_namespace: String,
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per request, for the backoff.
    failures: Mutex<HashMap<ObjectRef<ContainerCheckpoint>, u32>>,
}

impl Context {
    pub fn new(
        client: Client,
        recorder: Recorder,
        lease_namespace: String,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            recorder,
            lease_namespace,
            metrics,
            failures: Mutex::default(),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectRef<ContainerCheckpoint>, u32>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {namespace}/{name}")]
    Read {
        kind: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("creating ContainerCheckpointContent {namespace}/{name}")]
    CreateContent {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("writing the status of ContainerCheckpoint {namespace}/{name}")]
    WriteStatus {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The controller's reconcile function.
pub async fn reconcile(
    object: Arc<ContainerCheckpoint>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let result = run(&object, &ctx).await;
    let label = if result.is_ok() {
        ctx.failures().remove(&ObjectRef::from(object.as_ref()));
        "success"
    } else {
        "error"
    };
    ctx.metrics.reconciled(label, started.elapsed());
    result
}

/// The controller's error policy: log and retry with a per-request backoff.
pub fn error_policy(object: Arc<ContainerCheckpoint>, error: &Error, ctx: Arc<Context>) -> Action {
    let failures = {
        let mut all = ctx.failures();
        let n = all.entry(ObjectRef::from(object.as_ref())).or_default();
        *n = n.saturating_add(1);
        *n
    };
    let retry = backoff(failures);
    warn!(
        error = %error,
        cause = %error_source(error),
        request = %object.name_any(),
        namespace = %object.namespace().unwrap_or_default(),
        failures,
        retry_secs = retry.as_secs(),
        "reconcile failed"
    );
    Action::requeue(retry)
}

fn error_source(error: &Error) -> String {
    match error {
        Error::Read { source, .. }
        | Error::CreateContent { source, .. }
        | Error::WriteStatus { source, .. } => cause(source),
    }
}

/// A kube error in one line: an API error's Display repeats the whole Status in Debug form.
pub(crate) fn cause(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => format!("{} {}: {}", s.code, s.reason, s.message),
        other => other.to_string(),
    }
}

async fn run(object: &ContainerCheckpoint, ctx: &Context) -> Result<Action, Error> {
    let namespace = object.namespace().unwrap_or_default();
    let name = object.name_any();
    let read = |kind: &'static str, what: &str| {
        let (namespace, name) = (namespace.clone(), what.to_owned());
        move |source| Error::Read {
            kind,
            namespace,
            name,
            source,
        }
    };
    let requests: Api<ContainerCheckpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let contents: Api<ContainerCheckpointContent> = Api::namespaced(ctx.client.clone(), &namespace);

    // The cached object may lag behind our own last status write; reading it afresh keeps the
    // old state exact, so each transition yields exactly one Event.
    let Some(request) = requests
        .get_opt(&name)
        .await
        .map_err(read("ContainerCheckpoint", &name))?
    else {
        return Ok(Action::await_change());
    };
    let content = contents
        .get_opt(&name)
        .await
        .map_err(read("ContainerCheckpointContent", &name))?;

    // Pod and Lease matter only until a Content exists, and only for a request that passes
    // the checks that need nothing else (which also keeps hostile names out of API paths).
    let undecided = content.is_none()
        && request.metadata.deletion_timestamp.is_none()
        && !request
            .status
            .as_ref()
            .and_then(|s| s.state)
            .is_some_and(CheckpointState::is_final)
        && validation::check_request(&request).is_ok();
    let (mut pod, mut lease) = (None, None);
    if undecided {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        pod = pods
            .get_opt(&request.spec.pod_name)
            .await
            .map_err(read("Pod", &request.spec.pod_name))?;
        let node = pod
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .and_then(|s| s.node_name.as_deref());
        if let Some(node) = node {
            let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.lease_namespace);
            let lease_name = noded_lease_name(node);
            lease = leases
                .get_opt(&lease_name)
                .await
                .map_err(|source| Error::Read {
                    kind: "Lease",
                    namespace: ctx.lease_namespace.clone(),
                    name: lease_name,
                    source,
                })?;
        }
    }

    let now = Timestamp::now();
    let mut plan = plan(&Observed {
        request: &request,
        content: content.as_ref(),
        pod: pod.as_ref(),
        lease: lease.as_ref(),
        lease_namespace: &ctx.lease_namespace,
        now,
    });

    let apply = PatchParams::apply(CONTROLLER_MANAGER).force();
    let mut failure = None;
    if let Some(content) = plan.create_content.take() {
        // Apply, not create: a retry after a lost response finds its own object and changes
        // nothing. Only metadata and spec are sent; noded owns the status.
        if let Err(source) = contents.patch(&name, &apply, &Patch::Apply(&content)).await {
            plan = content_not_created(&request, &content, &source, now);
            let rejected =
                plan.status.as_ref().and_then(|s| s.state) == Some(CheckpointState::Failed);
            if !rejected {
                failure = Some(Error::CreateContent {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    source,
                });
            }
        } else {
            info!(
                request = %name,
                namespace = %namespace,
                node = %content.spec.node_name,
                "created ContainerCheckpointContent"
            );
        }
    }

    if let Some(status) = &plan.status {
        let body = serde_json::json!({
            "apiVersion": ContainerCheckpoint::api_version(&()),
            "kind": ContainerCheckpoint::kind(&()),
            "metadata": { "name": name },
            "status": status,
        });
        match requests
            .patch_status(&name, &apply, &Patch::Apply(body))
            .await
        {
            Ok(_) => {}
            // Deleted meanwhile: nothing left to report on.
            Err(kube::Error::Api(s)) if s.is_not_found() => return Ok(Action::await_change()),
            Err(source) => {
                return Err(failure.unwrap_or(Error::WriteStatus {
                    namespace,
                    name,
                    source,
                }));
            }
        }
        info!(
            request = %name,
            namespace = %namespace,
            state = ?status.state,
            message = status.message.as_deref().unwrap_or_default(),
            "status written"
        );
        if let Some(transition) = plan.transition {
            announce(ctx, &request, transition, status).await;
        }
    }

    match failure {
        Some(error) => Err(error),
        None => Ok(plan
            .requeue_after
            .map_or_else(Action::await_change, Action::requeue)),
    }
}

/// Publishes the Event of a state change and counts final states. A lost Event is logged, not
/// retried: the status already says it all.
async fn announce(
    ctx: &Context,
    request: &ContainerCheckpoint,
    transition: Transition,
    status: &ContainerCheckpointStatus,
) {
    if let Some(state) = status.state.filter(|s| s.is_final()) {
        ctx.metrics.finished(state, status::reason(status));
    }
    let event = status::event(transition, status.message.as_deref().unwrap_or_default());
    if let Err(error) = ctx.recorder.publish(&event, &request.object_ref(&())).await {
        warn!(
            %error,
            request = %request.name_any(),
            reason = %event.reason,
            "publishing an Event failed"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use checkpointing::crd::{ContainerCheckpointContentStatus, ContainerCheckpointSpec};
    use checkpointing::testing::{FakeApi, Seen};
    use k8s_openapi::api::coordination::v1::LeaseSpec;
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStatus, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};

    fn now() -> Timestamp {
        "2025-01-01T00:01:00Z".parse().unwrap()
    }

    fn request() -> ContainerCheckpoint {
        let mut cc = ContainerCheckpoint::new(
            "cc1",
            ContainerCheckpointSpec {
                pod_name: "app".into(),
                container: "counter".into(),
                namespace: Some("default".into()),
                timeout_seconds: Some(30),
            },
        );
        cc.metadata.namespace = Some("default".into());
        cc.metadata.uid = Some("uid-cc1".into());
        cc.metadata.generation = Some(1);
        cc
    }

    fn pod() -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("app".into()),
                namespace: Some("default".into()),
                uid: Some("uid-pod".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("node1".into()),
                containers: vec![Container {
                    name: "counter".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: "counter".into(),
                    state: Some(ContainerState {
                        running: Some(ContainerStateRunning::default()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn lease(renewed: &str) -> Lease {
        Lease {
            metadata: ObjectMeta::default(),
            spec: Some(LeaseSpec {
                renew_time: Some(MicroTime(renewed.parse().unwrap())),
                lease_duration_seconds: Some(40),
                ..Default::default()
            }),
        }
    }

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
            now: now(),
        }
    }

    /// The Content the controller creates for `request()` on `pod()`.
    fn created(request: &ContainerCheckpoint) -> ContainerCheckpointContent {
        let (p, l) = (pod(), lease("2025-01-01T00:00:50Z"));
        plan(&observed(request, None, Some(&p), Some(&l)))
            .create_content
            .unwrap()
    }

    fn with_status(
        mut content: ContainerCheckpointContent,
        status: ContainerCheckpointContentStatus,
    ) -> ContainerCheckpointContent {
        content.status = Some(status);
        content
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
            }
        );
        // Metadata and spec only: the status belongs to noded.
        let json = serde_json::to_value(content).unwrap();
        assert!(json.get("status").is_none(), "{json}");

        let status = plan.status.as_ref().unwrap();
        assert_eq!(status.state, Some(CheckpointState::Pending));
        assert_eq!(
            status.message.as_deref(),
            Some("checkpoint requested on node node1, waiting for its node daemon")
        );
        assert_eq!(status.node_name.as_deref(), Some("node1"));
        assert_eq!(status.content_name.as_deref(), Some("cc1"));
        assert_eq!(status.pod_uid.as_deref(), Some("uid-pod"));
        assert_eq!(plan.transition, Some(Transition::Requested));
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

    #[test]
    fn every_refusal_fails_the_request_with_its_message() {
        let req = request();
        let p = pod();
        let fresh = lease("2025-01-01T00:00:50Z");
        let stale = lease("2025-01-01T00:00:00Z");
        let mut other_ns = request();
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
                 kube-system/checkpoint-noded-node1 does not exist; check that the \
                 checkpoint-noded DaemonSet runs a ready pod on that node, then create the \
                 request again",
            ),
            (
                &req,
                Some(&p),
                Some(&stale),
                "NodeDaemonUnavailable",
                "no live node daemon on node \"node1\": its Lease \
                 kube-system/checkpoint-noded-node1 expired 20s ago; check that the \
                 checkpoint-noded DaemonSet runs a ready pod on that node, then create the \
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
        let content = created(&req);
        let req = applied(&req, &plan(&observed(&req, Some(&content), None, None)));
        let done = with_status(
            content,
            ContainerCheckpointContentStatus {
                state: Some(CheckpointState::Completed),
                ready: true,
                archive_size: Some(4096),
                image: Some("localhost:5000/checkpoints/cc1@sha256:ab".into()),
                checkpoint_time: Some(Time(now())),
                ..Default::default()
            },
        );
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
        let content = with_status(
            created(&req),
            ContainerCheckpointContentStatus {
                state: Some(CheckpointState::Failed),
                message: Some("CheckpointContainer: criu dump failed".into()),
                ..Default::default()
            },
        );
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
    fn running_content_is_mirrored_without_an_event() {
        let req = request();
        let content = created(&req);
        let req = applied(&req, &plan(&observed(&req, Some(&content), None, None)));
        let running = with_status(
            content,
            ContainerCheckpointContentStatus {
                state: Some(CheckpointState::Running),
                ..Default::default()
            },
        );
        let p = plan(&observed(&req, Some(&running), None, None));
        assert_eq!(p.status.unwrap().state, Some(CheckpointState::Running));
        assert_eq!(p.transition, None);
    }

    #[test]
    fn content_is_the_truth_once_it_exists() {
        // The pod is gone and the node daemon silent, yet the Content decides.
        let req = request();
        let content = created(&req);
        let p = plan(&observed(&req, Some(&content), None, None));
        assert!(p.create_content.is_none());
        assert_eq!(p.status.unwrap().state, Some(CheckpointState::Pending));
    }

    #[test]
    fn content_of_another_request_is_not_taken_over() {
        let req = request();
        let mut foreign = created(&req);
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
        let content = created(&req);
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
        let content = created(&req);
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

    const REQUEST_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/\
                                namespaces/default/containercheckpoints/cc1";
    const CONTENT_PATH: &str = "/apis/checkpointing.zacchaeuschok.github.io/v1alpha1/\
                                namespaces/default/containercheckpointcontents/cc1";
    const POD_PATH: &str = "/api/v1/namespaces/default/pods/app";
    const LEASE_PATH: &str =
        "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/checkpoint-noded-node1";
    const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/default/events";
    const APPLY: &str = "force=true&fieldManager=checkpoint-controller";

    /// A fake API server holding a valid request, its running pod and a live node daemon.
    fn cluster() -> (FakeApi, Arc<Context>) {
        let api = FakeApi::default();
        api.put(REQUEST_PATH, request());
        api.put(POD_PATH, pod());
        let mut live = lease("2025-01-01T00:00:00Z");
        live.spec.as_mut().unwrap().renew_time = Some(MicroTime(Timestamp::now()));
        api.put(LEASE_PATH, live);
        let ctx = context(&api);
        (api, ctx)
    }

    fn context(api: &FakeApi) -> Arc<Context> {
        let client = api.client();
        let recorder = Recorder::new(client.clone(), CONTROLLER_MANAGER.into());
        Arc::new(Context::new(
            client,
            recorder,
            "kube-system".into(),
            Arc::default(),
        ))
    }

    fn calls(seen: &[Seen]) -> Vec<String> {
        seen.iter()
            .map(|s| format!("{} {}", s.method, s.uri))
            .collect()
    }

    #[tokio::test]
    async fn shell_creates_the_content_then_writes_status_and_one_event() {
        let (api, ctx) = cluster();
        let action = reconcile(Arc::new(request()), ctx.clone()).await.unwrap();
        assert_eq!(action, Action::requeue(RESYNC));
        let seen = api.take();
        assert_eq!(
            calls(&seen),
            [
                format!("GET {REQUEST_PATH}"),
                format!("GET {CONTENT_PATH}"),
                format!("GET {POD_PATH}"),
                format!("GET {LEASE_PATH}"),
                format!("PATCH {CONTENT_PATH}?&{APPLY}"),
                format!("PATCH {REQUEST_PATH}/status?&{APPLY}"),
                format!("POST {EVENTS_PATH}?"),
            ]
        );
        let content = &seen[4];
        assert_eq!(
            content.content_type.as_deref(),
            Some("application/apply-patch+yaml")
        );
        let content = content.body.clone().unwrap();
        assert_eq!(content["metadata"]["labels"][NODE_LABEL], "node1");
        assert_eq!(content["spec"]["podUID"], "uid-pod");
        assert!(content.get("status").is_none(), "{content}");
        let status = seen[5].body.clone().unwrap();
        assert_eq!(status["status"]["state"], "Pending");
        assert_eq!(status["status"]["contentName"], "cc1");
        let event = seen[6].body.clone().unwrap();
        assert_eq!(event["reason"], "CheckpointRequested");
        assert_eq!(event["type"], "Normal");
        assert_eq!(event["regarding"]["name"], "cc1");

        // Re-run against what was written: reads only, no write, no Event.
        let mut written = request();
        written.status = serde_json::from_value(status["status"].clone()).unwrap();
        api.put(REQUEST_PATH, &written);
        api.put(CONTENT_PATH, content);
        reconcile(Arc::new(written), ctx).await.unwrap();
        assert_eq!(
            calls(&api.take()),
            [format!("GET {REQUEST_PATH}"), format!("GET {CONTENT_PATH}")]
        );
    }

    #[tokio::test]
    async fn shell_fails_the_request_when_the_content_is_rejected() {
        let (api, ctx) = cluster();
        api.fail_writes(CONTENT_PATH, 422, "Invalid");
        reconcile(Arc::new(request()), ctx).await.unwrap();
        let seen = api.take();
        let status = seen
            .iter()
            .find(|s| s.uri.starts_with(&format!("{REQUEST_PATH}/status")))
            .and_then(|s| s.body.clone())
            .unwrap();
        assert_eq!(status["status"]["state"], "Failed");
        assert_eq!(
            status["status"]["conditions"][0]["reason"],
            "ContentRejected"
        );
        let event = seen.last().unwrap().body.clone().unwrap();
        assert_eq!(event["reason"], "CheckpointFailed");
    }

    #[tokio::test]
    async fn shell_keeps_the_request_pending_and_retries_on_transient_errors() {
        let (api, ctx) = cluster();
        api.fail_writes(CONTENT_PATH, 503, "ServiceUnavailable");
        let error = reconcile(Arc::new(request()), ctx.clone())
            .await
            .unwrap_err();
        assert!(matches!(error, Error::CreateContent { .. }), "{error}");
        let status = api
            .take()
            .iter()
            .find(|s| s.uri.starts_with(&format!("{REQUEST_PATH}/status")))
            .and_then(|s| s.body.clone())
            .unwrap();
        assert_eq!(status["status"]["state"], "Pending");
        assert_eq!(
            status["status"]["conditions"][0]["reason"],
            "ContentNotCreated"
        );
        let first = error_policy(Arc::new(request()), &error, ctx.clone());
        let second = error_policy(Arc::new(request()), &error, ctx);
        assert_eq!(first, Action::requeue(Duration::from_secs(1)));
        assert_eq!(second, Action::requeue(Duration::from_secs(2)));
    }

    #[tokio::test]
    async fn shell_does_nothing_for_a_deleted_request() {
        let api = FakeApi::default();
        let action = reconcile(Arc::new(request()), context(&api)).await.unwrap();
        assert_eq!(action, Action::await_change());
        assert_eq!(calls(&api.take()), [format!("GET {REQUEST_PATH}")]);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }
}
