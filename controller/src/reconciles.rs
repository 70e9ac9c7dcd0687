//! The frame of every kind's reconciles (the requests' and the policies'): what they share
//! (clients, stores, settings, write memory, backoff), the span, metrics and backoff around
//! each, and the controller that runs them.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use checkpointing::backoff::Failures;
use checkpointing::names::CONTROLLER_MANAGER;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};
use tracing::{Instrument, Span, field, info_span, warn};

use crate::kinds::Request;
use crate::kube_error::cause;
use crate::metrics::Metrics;
use crate::reads::Reads;
use crate::shell::log;
use crate::stores::Stores;
use crate::written::Written;

/// The controller's flags the reconciles decide by.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long a node may not be Ready before it counts as lost (policies' `onNodeLoss`).
    pub node_loss_after: Duration,
    /// How long a request waits on a state that passes by itself before it fails
    /// ([`crate::pending`]).
    pub pending_timeout: Duration,
    /// Where registry Secrets are copied for noded, the only namespace whose Secrets it reads.
    pub credentials_namespace: String,
}

/// What the reconciles of kind `K` share: the clients, the stores the watches keep, the
/// settings, and what they remember between reconciles (`C`: the kind of the objects they
/// create).
pub struct Context<K: Request, C> {
    pub client: Client,
    pub recorder: Recorder,
    pub stores: Stores,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    /// Our writes the stores may not show yet.
    pub written: Written<K, C>,
    /// The pods read for requests (no watch keeps them), until their decisions look again.
    pub reads: Reads<Pod>,
    /// Consecutive failures per request, for the backoff.
    pub failures: Failures<ObjectRef<K>>,
}

impl<K: Request, C> Context<K, C> {
    pub fn new(client: Client, stores: Stores, metrics: Arc<Metrics>, settings: Settings) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), CONTROLLER_MANAGER.into()),
            client,
            stores,
            metrics,
            settings,
            written: Written::default(),
            reads: Reads::default(),
            failures: Failures::default(),
        }
    }

    /// Runs one reconcile of `object` in its span (kind, namespace, name, and the node once
    /// [`on_node`] tells it), timed and counted; a success resets its backoff.
    pub async fn run<E>(
        &self,
        object: &K,
        reconcile: impl Future<Output = Result<Action, E>>,
    ) -> Result<Action, E> {
        let span = info_span!(
            "reconcile",
            kind = ?K::KIND,
            namespace = %object.namespace().unwrap_or_default(),
            name = %object.name_any(),
            node = field::Empty,
        );
        let started = Instant::now();
        let result = reconcile.instrument(span).await;
        let label = if result.is_ok() {
            self.failures.succeeded(&ObjectRef::from(object));
            "success"
        } else {
            "error"
        };
        self.metrics
            .of(K::KIND)
            .reconciled(label, started.elapsed());
        result
    }
}

/// The error policy of every kind: log and retry with a per-object backoff.
pub fn backoff<K: Request, C, E: std::error::Error + 'static>(
    object: Arc<K>,
    error: &E,
    ctx: Arc<Context<K, C>>,
) -> Action {
    let object = object.as_ref();
    let (failures, retry) = ctx.failures.failed(ObjectRef::from(object));
    let source = error.source().and_then(|s| s.downcast_ref::<kube::Error>());
    warn!(
            %error,
            cause = source.map(cause).unwrap_or_default(),
            kind = ?K::KIND,
            name = %object.name_any(),
            namespace = %object.namespace().unwrap_or_default(),
            failures,
            retry_secs = retry.as_secs(),
        "reconcile failed"
    );
    Action::requeue(retry)
}

/// The node the reconcile in progress is about, for its span.
pub fn on_node(node: &str) {
    Span::current().record("node", node);
}

/// Runs `controller` until `shutdown`: `reconcile` in its frame, failures backed off.
pub async fn drive<K, C, E, F>(
    controller: Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<Context<K, C>>) -> F,
    ctx: Context<K, C>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) where
    K: Request,
    C: Send + Sync + 'static,
    F: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile, backoff, Arc::new(ctx))
        .for_each(|result| {
            log(&K::kind(&()), result);
            std::future::ready(())
        })
        .await;
}
