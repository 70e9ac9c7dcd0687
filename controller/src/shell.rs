//! What the shells of the leader's controllers (requests, policies) share: the reconcile
//! error and its retry, status writes, Events and the log of each reconcile.

use std::time::Duration;

use checkpointing::names::CONTROLLER_MANAGER;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::serde::Serialize;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{Instrument, debug, warn};

use crate::kinds::Object;

/// How soon a failed reconcile is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Error {
    what: String,
    #[source]
    source: kube::Error,
}

impl Error {
    /// The API server's words when it refused the request for good (a 4xx other than a
    /// conflict or throttling): the same request again cannot succeed.
    pub fn refusal(&self) -> Option<&str> {
        match &self.source {
            kube::Error::Api(s) if (400..500).contains(&s.code) && !matches!(s.code, 409 | 429) => {
                Some(&s.message)
            }
            _ => None,
        }
    }
}

/// The error of a failed `what` (e.g. "reading Pod ns/name").
pub fn failed(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let what = what.into();
    move |source| Error { what, source }
}

/// Server-side apply of `status` on `object`'s status subresource.
pub async fn write_status<K: Object, S: Serialize>(
    client: &Client,
    object: &K,
    status: &S,
) -> Result<(), Error> {
    apply_status(client, object, status)
        .await
        .map(drop)
        .map_err(|source| {
            failed(format!(
                "writing the status of {} {}/{}",
                K::kind(&()),
                object.namespace().unwrap_or_default(),
                object.name_any()
            ))(source)
        })
}

/// Server-side apply of `status` on `object`'s status subresource: `Ok(false)` when the object
/// was deleted meanwhile (nothing left to report on).
pub async fn apply_status<K: Object, S: Serialize>(
    client: &Client,
    object: &K,
    status: &S,
) -> Result<bool, kube::Error> {
    let name = object.name_any();
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": { "name": name },
        "status": status,
    });
    let apply = PatchParams::apply(CONTROLLER_MANAGER).force();
    let api = Api::<K>::namespaced(client.clone(), &object.namespace().unwrap_or_default());
    match api.patch_status(&name, &apply, &Patch::Apply(body)).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(false),
        Err(source) => Err(source),
    }
}

/// Publishes an Event; a lost one is logged, not retried: the status says it all.
pub async fn announce<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    object: &K,
    event: Event,
) {
    publish(recorder, &object.object_ref(&()), &event).await;
}

async fn publish(recorder: &Recorder, reference: &ObjectReference, event: &Event) {
    if let Err(error) = recorder.publish(event, reference).await {
        warn!(%error, reason = %event.reason, "publishing an Event failed");
    }
}

/// Publishes an Event on a task of its own: the status already says it all, so the reconcile
/// (and the next one of this request) need not wait for it.
pub fn tell<K: Resource<DynamicType = ()>>(recorder: &Recorder, object: &K, event: Event) {
    tell_regarding(recorder, object.object_ref(&()), event);
}

/// [`tell`], regarding an object named by `reference` (one we do not hold, e.g. a pod).
pub fn tell_regarding(recorder: &Recorder, reference: ObjectReference, event: Event) {
    let recorder = recorder.clone();
    tokio::spawn(
        async move {
            publish(&recorder, &reference, &event).await;
        }
        .in_current_span(),
    );
}

/// The reference of pod `namespace/name`: with its UID, `kubectl describe pod` lists the
/// Event (it selects by UID).
pub fn pod_reference(namespace: &str, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_owned()),
        kind: Some("Pod".to_owned()),
        namespace: Some(namespace.to_owned()),
        name: Some(name.to_owned()),
        uid: uid.map(str::to_owned),
        ..ObjectReference::default()
    }
}

/// Logs the outcome of one reconcile of controller `which`.
pub fn log<K: Resource, E: std::error::Error + 'static>(
    which: &str,
    result: Result<(ObjectRef<K>, Action), controller::Error<E, watcher::Error>>,
) {
    match result {
        Ok((object, _)) => debug!(%object, "reconciled"),
        // Logged by the error policy; or deleted before its turn.
        Err(controller::Error::ReconcilerFailed(..) | controller::Error::ObjectNotFound(_)) => {}
        Err(error) => warn!(%error, controller = which, "controller"),
    }
}
