//! The pod-level requests. A PodCheckpoint owns one ContainerCheckpoint per container
//! ([`checkpoint`] decides); a PodMigration owns a PodCheckpoint and moves the pod
//! ([`migration`] decides, [`restored`] makes a bare pod's copy, [`health`] reads the
//! restored pod); [`shell`] reads, acts and reports for both, telling the moved pods
//! too ([`outcome`]). Both run on the leader only,
//! peers of the ContainerCheckpoint controller over the same stores.

mod checkpoint;
mod health;
mod migration;
mod outcome;
mod restored;
mod shell;

use checkpointing::crd::{ContainerCheckpoint, PodCheckpoint, PodMigration};
use checkpointing::names::MIGRATION_LABEL;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::ObjectRef;

pub use shell::{reconcile_checkpoint, reconcile_migration};

use crate::stores::{Changes, Stores};

/// The controller of the PodCheckpoints: a change of one, or of a ContainerCheckpoint it owns,
/// reconciles it.
pub fn checkpoints(
    stores: &Stores,
    (checkpoints, requests): (Changes<PodCheckpoint>, Changes<ContainerCheckpoint>),
) -> Controller<PodCheckpoint> {
    Controller::for_stream(checkpoints, stores.pod_checkpoints.clone()).owns_stream(requests)
}

/// The controller of the PodMigrations: a change of one, of the PodCheckpoint it owns, or of a
/// pod it restored (they carry its name) reconciles it.
pub fn migrations(
    stores: &Stores,
    (migrations, checkpoints, pods): (Changes<PodMigration>, Changes<PodCheckpoint>, Changes<Pod>),
) -> Controller<PodMigration> {
    Controller::for_stream(migrations, stores.migrations.clone())
        .owns_stream(checkpoints)
        .watches_stream(pods, |pod: Pod| {
            let migration = pod.labels().get(MIGRATION_LABEL)?.clone();
            Some(ObjectRef::new(&migration).within(&pod.namespace()?))
        })
}
