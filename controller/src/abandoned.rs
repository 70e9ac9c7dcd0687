//! Contents abandoned by their node: a Content being deleted waits for noded's finalizer, and
//! when the node is gone (Node deleted, machine lost) or its noded has been absent for a long
//! time, nobody will ever remove it, and the deletion (often a whole namespace's) hangs. Once a
//! Content has been deleting for `after` and its node's Lease is expired or missing, the
//! controller releases the finalizer, with an Event saying that the archive on that node stays.
//! Likewise a copy of a registry Secret (see `request::credentials`) that no Content names
//! any more: noded deletes it with its Content's finalizer, so a finalizer released here, or a
//! request deleted between the copy and its Content, leaves it behind.
//! Pure [`abandoned`] and [`orphaned_copies`] decide; [`release`] is the loop around them
//! (leader only).

use std::sync::Arc;
use std::time::Duration;

use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::names::{
    ARCHIVE_FINALIZER, CONTROLLER_MANAGER, NAMESPACE_LABEL, noded_lease_name,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{
    Api, DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, Preconditions,
};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use serde_json::json;
use tracing::{info, warn};

use crate::kube_error::cause;
use crate::stores::Synced;
use crate::validation::lease_expiry;

/// Shortest and longest wait a user may configure, in seconds.
pub const MIN_AFTER_SECONDS: u64 = 10;
pub const MAX_AFTER_SECONDS: u64 = 7 * 86_400;

/// A Content to let go, and why in words.
#[derive(Debug)]
pub struct Abandoned<'a> {
    pub content: &'a ContainerCheckpointContent,
    pub why: String,
}

/// The Contents, among `contents`, to release: being deleted for at least `after`, still
/// held by noded's finalizer, and their node's Lease (`lease_of(node)`) expired or missing.
pub fn abandoned<'a>(
    contents: impl IntoIterator<Item = &'a ContainerCheckpointContent>,
    lease_of: impl Fn(&str) -> Option<Arc<Lease>>,
    after: Duration,
    now: Timestamp,
) -> Vec<Abandoned<'a>> {
    contents
        .into_iter()
        .filter_map(|content| {
            let deleting = content.metadata.deletion_timestamp.as_ref()?.0;
            let waited = now.duration_since(deleting);
            let held = content.finalizers().iter().any(|f| f == ARCHIVE_FINALIZER);
            if !held || waited.is_negative() || waited.unsigned_abs() < after {
                return None;
            }
            let node = &content.spec.node_name;
            let absent = match lease_of(node).as_deref().map(lease_expiry) {
                None => "has no Lease".to_owned(),
                Some(None) => "has a Lease without renewTime or duration".to_owned(),
                Some(Some(expiry)) if expiry <= now => {
                    format!("stopped renewing its Lease at {expiry}")
                }
                Some(Some(_)) => return None,
            };
            Some(Abandoned {
                content,
                why: format!(
                    "the node daemon of node {node} {absent}, and the deletion waited {}s for it; \
                     finalizer released: the archive and image on node {node} are not removed",
                    waited.as_secs()
                ),
            })
        })
        .collect()
}

/// The names of the credential copies among `copies` that no Content among `contents` names
/// and that are at least `after` old (younger ones may be waiting for their Content).
pub fn orphaned_copies<'a>(
    copies: &'a [PartialObjectMeta<Secret>],
    contents: &[&ContainerCheckpointContent],
    after: Duration,
    now: Timestamp,
) -> Vec<&'a PartialObjectMeta<Secret>> {
    copies
        .iter()
        .filter(|copy| {
            let named = contents
                .iter()
                .any(|c| c.spec.credentials_secret.as_deref() == copy.metadata.name.as_deref());
            let old = copy
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| now.duration_since(t.0))
                .is_some_and(|age| !age.is_negative() && age.unsigned_abs() >= after);
            !named && old
        })
        .collect()
}

/// Every `interval`, releases the Contents [`abandoned`] picks and deletes the copies
/// [`orphaned_copies`] picks, deciding from the controller's stores once they have listed
/// everything.
pub async fn release(
    client: kube::Client,
    contents: Store<ContainerCheckpointContent>,
    leases: Store<Lease>,
    synced: Synced,
    lease_namespace: String,
    credentials_namespace: String,
    after: Duration,
) {
    let recorder = Recorder::new(client.clone(), CONTROLLER_MANAGER.into());
    let mut tick =
        tokio::time::interval((after / 2).clamp(Duration::from_secs(1), Duration::from_secs(60)));
    loop {
        tick.tick().await;
        if !synced.for_reconciles() {
            continue;
        }
        let all = contents.state();
        let lease_of = |node: &str| {
            leases.get(&ObjectRef::new(&noded_lease_name(node)).within(&lease_namespace))
        };
        for gone in abandoned(
            all.iter().map(AsRef::as_ref),
            lease_of,
            after,
            Timestamp::now(),
        ) {
            let_go(&client, &recorder, gone).await;
        }
        // Listed after the store was read: a copy made since, for a Content the store does
        // not show yet, is younger than `after`.
        let copies = Api::<Secret>::namespaced(client.clone(), &credentials_namespace);
        match copies
            .list_metadata(&ListParams::default().labels(NAMESPACE_LABEL))
            .await
        {
            Ok(listed) => {
                let contents: Vec<&ContainerCheckpointContent> =
                    all.iter().map(AsRef::as_ref).collect();
                for copy in orphaned_copies(&listed.items, &contents, after, Timestamp::now()) {
                    delete_copy(&copies, copy).await;
                }
            }
            Err(error) => warn!(error = %cause(&error), "listing credential copies failed"),
        }
    }
}

/// Deletes `copy`, if it is still the one that was listed.
async fn delete_copy(copies: &Api<Secret>, copy: &PartialObjectMeta<Secret>) {
    let name = copy.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: copy.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match copies.delete(&name, &params).await {
        Ok(_) => info!(%name, "deleted a credentials copy no Content names"),
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(error) => warn!(%name, error = %cause(&error), "deleting a credentials copy failed"),
    }
}

/// Drops noded's finalizer (only if the Content is unchanged since it was read) and says so.
async fn let_go(client: &kube::Client, recorder: &Recorder, gone: Abandoned<'_>) {
    let content = gone.content;
    let (namespace, name) = (content.namespace().unwrap_or_default(), content.name_any());
    let rest: Vec<&String> = content
        .finalizers()
        .iter()
        .filter(|f| *f != ARCHIVE_FINALIZER)
        .collect();
    // resourceVersion makes this fail instead of overwriting a concurrent change of the list.
    let patch = json!({"metadata": {
        "finalizers": rest,
        "resourceVersion": content.resource_version(),
    }});
    let api: Api<ContainerCheckpointContent> = Api::namespaced(client.clone(), &namespace);
    if let Err(error) = api
        .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(%namespace, %name, error = %cause(&error), "releasing an abandoned Content failed");
        return;
    }
    info!(%namespace, %name, why = %gone.why, "released an abandoned Content");
    let event = Event {
        type_: EventType::Warning,
        reason: "NodeDaemonGone".to_owned(),
        note: Some(gone.why),
        action: "ReleaseFinalizer".to_owned(),
        secondary: None,
    };
    if let Err(error) = recorder.publish(&event, &content.object_ref(&())).await {
        warn!(%namespace, %name, %error, "publishing an Event failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{content, lease};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    const NOW: &str = "2026-12-01T12:00:00Z";
    const AFTER: Duration = Duration::from_secs(600);

    fn deleting(since: &str, finalizers: &[&str]) -> ContainerCheckpointContent {
        let mut c = content();
        c.metadata.deletion_timestamp = Some(Time(since.parse().unwrap()));
        c.metadata.finalizers = Some(finalizers.iter().map(|f| (*f).to_owned()).collect());
        c
    }

    fn picked(c: &ContainerCheckpointContent, lease: Option<&Lease>) -> Option<String> {
        let lease = lease.cloned().map(Arc::new);
        abandoned([c], |_| lease.clone(), AFTER, NOW.parse().unwrap())
            .pop()
            .map(|a| a.why)
    }

    #[test]
    fn a_content_waiting_long_on_a_silent_node_is_released() {
        let c = deleting("2026-12-01T11:45:00Z", &[ARCHIVE_FINALIZER, "other/keep"]);
        let why = picked(&c, None).expect("no Lease at all");
        assert!(
            why.contains("node node1 has no Lease") && why.contains("900s"),
            "{why}"
        );
        let expired = lease("2026-12-01T11:00:00Z");
        let why = picked(&c, Some(&expired)).expect("Lease expired");
        assert!(why.contains("stopped renewing its Lease"), "{why}");
        assert!(why.contains("are not removed"), "{why}");
    }

    fn copy(name: &str, created: &str) -> PartialObjectMeta<Secret> {
        let mut copy = PartialObjectMeta::<Secret>::default();
        copy.metadata.name = Some(name.to_owned());
        copy.metadata.creation_timestamp = Some(Time(created.parse().unwrap()));
        copy
    }

    #[test]
    fn only_old_copies_no_content_names_are_orphans() {
        let mut named = content();
        named.spec.credentials_secret = Some("uid-named".into());
        let copies = [
            copy("uid-named", "2026-12-01T11:00:00Z"),
            copy("uid-gone", "2026-12-01T11:00:00Z"),
            copy("uid-young", "2026-12-01T11:59:00Z"),
            copy("uid-future", "2026-12-01T13:00:00Z"),
        ];
        let picked: Vec<String> = orphaned_copies(&copies, &[&named], AFTER, NOW.parse().unwrap())
            .into_iter()
            .map(|c| c.name_any())
            .collect();
        assert_eq!(picked, ["uid-gone"]);
    }

    #[test]
    fn a_live_node_a_short_wait_or_no_finalizer_keeps_it() {
        let live = lease("2026-12-01T11:59:50Z");
        let long = deleting("2026-12-01T11:00:00Z", &[ARCHIVE_FINALIZER]);
        assert_eq!(
            picked(&long, Some(&live)),
            None,
            "noded still renews its Lease"
        );
        let short = deleting("2026-12-01T11:55:00Z", &[ARCHIVE_FINALIZER]);
        assert_eq!(picked(&short, None), None, "not waited long enough");
        let released = deleting("2026-12-01T11:00:00Z", &["other/keep"]);
        assert_eq!(picked(&released, None), None, "not ours to release");
        let future = deleting("2026-12-01T13:00:00Z", &[ARCHIVE_FINALIZER]);
        assert_eq!(picked(&future, None), None, "clock skew");
        assert_eq!(picked(&content(), None), None, "not being deleted");
    }
}
