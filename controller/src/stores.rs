//! The watches the controllers decide from, started by `main` and shared: each kind is listed
//! and watched once, its store read by every controller that needs it, and its changes handed
//! to each controller they reconcile. Our own watches rather than `Controller::new`, `owns()`
//! and `watches()`, so readiness can tell when each has listed everything.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use checkpointing::crd::{
    CheckpointPolicy, ContainerCheckpoint, ContainerCheckpointContent, PodCheckpoint, PodMigration,
};
use checkpointing::names::{MIGRATION_LABEL, noded_lease_name};
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

/// How many changes of one kind may wait for a controller that is busy: more, and the watch
/// waits for it.
const BACKLOG: usize = 1024;

/// One flag per watch, set once it has listed everything. Reconciles and retention read these
/// instead of awaiting `Store::wait_until_ready`, which wakes only the last of several tasks
/// waiting at once (kube-runtime keeps one waker): the others would hang for good.
#[derive(Clone, Default)]
pub struct Synced {
    pub requests: Arc<AtomicBool>,
    pub contents: Arc<AtomicBool>,
    pub leases: Arc<AtomicBool>,
    pub pod_checkpoints: Arc<AtomicBool>,
    pub migrations: Arc<AtomicBool>,
    pub restored: Arc<AtomicBool>,
    pub policies: Arc<AtomicBool>,
    pub nodes: Arc<AtomicBool>,
}

impl Synced {
    /// Whether the Content and Lease stores a reconcile decides from have listed everything.
    pub fn for_reconciles(&self) -> bool {
        listed(&[&self.contents, &self.leases])
    }

    /// Whether the ContainerCheckpoints a PodCheckpoint sums up have all been listed.
    pub fn for_pod_checkpoints(&self) -> bool {
        listed(&[&self.requests])
    }

    /// Whether the PodCheckpoints, restored pods and Leases a migration decides from have.
    pub fn for_migrations(&self) -> bool {
        listed(&[&self.pod_checkpoints, &self.restored, &self.leases])
    }

    /// Whether the Nodes a policy tells lost ones from have been listed: before, every node
    /// would look deleted.
    pub fn for_lost_nodes(&self) -> bool {
        listed(&[&self.nodes])
    }

    /// The flags of the leader's watches (all but the Leases, which every replica watches).
    pub fn leaders(&self) -> Vec<Arc<AtomicBool>> {
        [
            &self.requests,
            &self.contents,
            &self.pod_checkpoints,
            &self.migrations,
            &self.restored,
            &self.policies,
            &self.nodes,
        ]
        .map(Arc::clone)
        .into()
    }
}

fn listed(flags: &[&Arc<AtomicBool>]) -> bool {
    flags.iter().all(|f| f.load(Ordering::Relaxed))
}

/// The changes of one kind a controller reacts to (deletions included).
pub type Changes<K> = futures::stream::Map<mpsc::Receiver<K>, fn(K) -> watcher::Result<K>>;

/// The stores of the leader's watches.
#[derive(Clone)]
pub struct Stores {
    pub requests: Store<ContainerCheckpoint>,
    pub contents: Store<ContainerCheckpointContent>,
    pub pod_checkpoints: Store<PodCheckpoint>,
    pub migrations: Store<PodMigration>,
    /// The pods labelled with a migration: the copies it restored.
    pub restored: Store<Pod>,
    pub policies: Store<CheckpointPolicy>,
    /// The cluster's Nodes: which are lost (policies' `onNodeLoss`).
    pub nodes: Store<Node>,
    /// The noded Leases: every Lease of `lease_namespace`.
    pub leases: Store<Lease>,
    pub lease_namespace: String,
    pub synced: Synced,
}

impl Stores {
    /// The Lease of `node`'s daemon, if the watch shows one.
    pub fn lease(&self, node: &str) -> Option<Arc<Lease>> {
        let key = ObjectRef::new(&noded_lease_name(node)).within(&self.lease_namespace);
        self.leases.get(&key)
    }
}

/// What wakes each controller: its own kind's changes, and those of what it reads.
pub struct Triggers {
    pub requests: (
        Changes<ContainerCheckpoint>,
        Changes<ContainerCheckpointContent>,
    ),
    pub pod_checkpoints: (Changes<PodCheckpoint>, Changes<ContainerCheckpoint>),
    pub migrations: (Changes<PodMigration>, Changes<PodCheckpoint>, Changes<Pod>),
    pub policies: PolicyTriggers,
}

/// What wakes the policy controller: its own kind, the PodCheckpoints (a policy's carry its
/// name), every pod (one may come to match a selector) and the Nodes (one may be lost).
pub type PolicyTriggers = (
    Changes<CheckpointPolicy>,
    Changes<PodCheckpoint>,
    Changes<Pod>,
    Changes<Node>,
);

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

/// Starts the leader's watches, each in a task of its own until the process ends.
pub fn start(
    client: &Client,
    leases: Store<Lease>,
    lease_namespace: String,
    synced: &Synced,
) -> (Stores, Triggers) {
    let all = watcher::Config::default;
    let (requests, [cc_requests, pc_requests]) = watch(
        Api::all(client.clone()),
        all(),
        &synced.requests,
        "ContainerCheckpoint",
    );
    let (contents, [cc_contents]) = watch(
        Api::all(client.clone()),
        all(),
        &synced.contents,
        "ContainerCheckpointContent",
    );
    let (pod_checkpoints, [pc_own, pm_checkpoints, cp_checkpoints]) = watch(
        Api::all(client.clone()),
        all(),
        &synced.pod_checkpoints,
        "PodCheckpoint",
    );
    let (migrations, [pm_own]) = watch(
        Api::all(client.clone()),
        all(),
        &synced.migrations,
        "PodMigration",
    );
    // The restored pods carry the migration's name: their changes reconcile it.
    let (restored, [pm_pods]) = watch(
        Api::all(client.clone()),
        all().labels(MIGRATION_LABEL),
        &synced.restored,
        "Pod",
    );
    let (policies, [cp_own]) = watch(
        Api::all(client.clone()),
        all(),
        &synced.policies,
        "CheckpointPolicy",
    );
    let (nodes, [cp_nodes]) = watch(Api::all(client.clone()), all(), &synced.nodes, "Node");
    // Every pod, for its changes only: the policies list what they select when they reconcile.
    let [cp_pods] = follow(Api::all(client.clone()), all(), "Pod");
    let stores = Stores {
        requests,
        contents,
        pod_checkpoints,
        migrations,
        restored,
        policies,
        nodes,
        leases,
        lease_namespace,
        synced: synced.clone(),
    };
    let triggers = Triggers {
        requests: (cc_requests, cc_contents),
        pod_checkpoints: (pc_own, pc_requests),
        migrations: (pm_own, pm_checkpoints, pm_pods),
        policies: (cp_own, cp_checkpoints, cp_pods, cp_nodes),
    };
    (stores, triggers)
}

/// Watches `api` into a store, and hands every change to each of `N` controllers.
fn watch<K, const N: usize>(
    api: Api<K>,
    config: watcher::Config,
    flag: &Arc<AtomicBool>,
    kind: &'static str,
) -> (Store<K>, [Changes<K>; N])
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: k8s_openapi::serde::de::DeserializeOwned,
{
    let (store, writer) = reflector::store();
    let changes = reflector(writer, lean(watcher(api, config)).default_backoff())
        .inspect_ok(mark_synced(flag.clone(), kind))
        .touched_objects();
    (store, fan_out(changes, kind))
}

/// Watches `api` for its changes alone, keeping no store, and hands every change to each of
/// `N` controllers.
fn follow<K, const N: usize>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
) -> [Changes<K>; N]
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: k8s_openapi::serde::de::DeserializeOwned,
{
    let changes = lean(watcher(api, config))
        .default_backoff()
        .touched_objects();
    fan_out(changes, kind)
}

/// Hands every change of `changes` to each of `N` controllers, on a task of its own.
fn fan_out<K, const N: usize>(
    changes: impl Stream<Item = watcher::Result<K>> + Send + 'static,
    kind: &'static str,
) -> [Changes<K>; N]
where
    K: Clone + Send + 'static,
{
    let mut senders = Vec::with_capacity(N);
    let receivers = std::array::from_fn(|_| {
        let (sender, receiver) = mpsc::channel(BACKLOG);
        senders.push(sender);
        receiver.map(Ok as fn(K) -> watcher::Result<K>)
    });
    tokio::spawn(changes.for_each(move |change| {
        let mut senders = senders.clone();
        async move {
            match change {
                Ok(object) => {
                    for sender in &mut senders {
                        // A controller that stopped (shutdown) takes no more.
                        let _ = sender.send(object.clone()).await;
                    }
                }
                Err(error) => warn!(%error, kind, "watch"),
            }
        }
    }));
    receivers
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
