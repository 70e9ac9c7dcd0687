//! The pod-level requests. A PodCheckpoint owns one ContainerCheckpoint per container
//! ([`checkpoint`] decides); a PodMigration owns a PodCheckpoint and moves the pod
//! ([`migration`] decides, [`restored`] makes a bare pod's copy, [`health`] reads the
//! restored pod); [`shell`] reads, acts and
//! reports for both. Both run on the leader only, beside the ContainerCheckpoint controller.

mod checkpoint;
mod health;
mod migration;
mod restored;
mod shell;

use std::future::Future;
use std::sync::Arc;

use checkpointing::crd::{ContainerCheckpoint, PodCheckpoint, PodMigration};
use checkpointing::names::{CONTROLLER_MANAGER, MIGRATION_LABEL};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::Controller;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};

use crate::shell::{log, retry};

/// What the reconciles of both kinds share.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    /// The noded Leases, as the ContainerCheckpoint controller's watch keeps them.
    pub leases: Store<Lease>,
    pub lease_namespace: String,
}

/// Runs both controllers until `shutdown` resolves.
pub async fn run(
    client: Client,
    leases: Store<Lease>,
    lease_namespace: String,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), CONTROLLER_MANAGER.into()),
        client: client.clone(),
        leases,
        lease_namespace,
    });
    let config = watcher::Config::default;
    let checkpoints = Controller::new(Api::<PodCheckpoint>::all(client.clone()), config())
        .owns(Api::<ContainerCheckpoint>::all(client.clone()), config())
        .graceful_shutdown_on(shutdown.clone())
        .run(shell::reconcile_checkpoint, retry, ctx.clone())
        .for_each(|result| async move { log("PodCheckpoint", result) });
    // The restored pods carry the migration's name: their changes reconcile it.
    let restored = watcher::Config::default().labels(MIGRATION_LABEL);
    let migrations = Controller::new(Api::<PodMigration>::all(client.clone()), config())
        .owns(Api::<PodCheckpoint>::all(client.clone()), config())
        .watches(Api::<Pod>::all(client), restored, |pod: Pod| {
            let migration = pod.labels().get(MIGRATION_LABEL)?.clone();
            Some(ObjectRef::new(&migration).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(shell::reconcile_migration, retry, ctx)
        .for_each(|result| async move { log("PodMigration", result) });
    futures::join!(checkpoints, migrations);
}
