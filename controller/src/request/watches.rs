//! The watches reconciles decide from: the requests (they drive the Controller), their Contents
//! (a change reconciles the owner) and the noded Leases (only kept, never a trigger; the
//! webhook reads them too). Our own
//! watches rather than `Controller::new` and `owns()`, so readiness can tell when each has
//! listed everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointContent};
use checkpointing::names::CONTROLLER_MANAGER;
use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::controller::Controller;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::context::Context;
use super::synced::Synced;
use crate::metrics::Metrics;

/// Starts the watch of the noded Leases, in a task of its own until the process ends: every
/// replica's webhook places restores by them, and the leader's reconciles read them.
pub fn leases(client: Client, lease_namespace: &str, synced: &Synced) -> Store<Lease> {
    // Every Lease of the namespace: a handful, and one watch instead of a GET per request.
    let leases = Api::<Lease>::namespaced(client, lease_namespace);
    let (lease_store, writer) = reflector::store();
    let lease_watch = watcher(leases, watcher::Config::default()).default_backoff();
    let lease_changes =
        reflector(writer, lease_watch).inspect_ok(mark_synced(synced.leases.clone(), "Lease"));
    tokio::spawn(lease_changes.for_each(|event| {
        if let Err(error) = event {
            warn!(%error, "watching the noded Leases");
        }
        std::future::ready(())
    }));
    lease_store
}

/// Starts the watches: the Controller they drive, and what its reconciles share (with the
/// Leases [`leases`] keeps).
pub fn start(
    client: Client,
    lease_namespace: String,
    lease_store: Store<Lease>,
    metrics: Arc<Metrics>,
    synced: &Synced,
) -> (Controller<ContainerCheckpoint>, Arc<Context>) {
    let requests = Api::<ContainerCheckpoint>::all(client.clone());
    let (store, writer) = reflector::store();
    let request_changes = reflector(writer, lean(watcher(requests, watcher::Config::default())))
        .inspect_ok(mark_synced(synced.requests.clone(), "ContainerCheckpoint"))
        .applied_objects();
    let contents = Api::<ContainerCheckpointContent>::all(client.clone());
    let (content_store, writer) = reflector::store();
    let content_changes = reflector(writer, lean(watcher(contents, watcher::Config::default())))
        .inspect_ok(mark_synced(
            synced.contents.clone(),
            "ContainerCheckpointContent",
        ))
        .touched_objects();

    let controller = Controller::for_stream(request_changes, store).owns_stream(content_changes);
    let recorder = Recorder::new(client.clone(), CONTROLLER_MANAGER.into());
    let context = Context::new(
        client,
        recorder,
        metrics,
        content_store,
        lease_store,
        lease_namespace,
        synced.clone(),
    );
    (controller, Arc::new(context))
}

/// The watch without the objects' managedFields, which nothing here reads: at a thousand
/// requests and their Contents they would be most of what the stores hold.
fn lean<K: Resource + Clone>(
    events: impl Stream<Item = watcher::Result<watcher::Event<K>>>,
) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> {
    events.modify(|object| object.managed_fields_mut().clear())
}

/// Sets `flag` when a watch has listed all its objects for the first time.
fn mark_synced<K>(flag: Arc<AtomicBool>, kind: &'static str) -> impl Fn(&watcher::Event<K>) {
    move |event| {
        if matches!(event, watcher::Event::InitDone) && !flag.swap(true, Ordering::Relaxed) {
            info!(kind, "watch synced");
        }
    }
}
