//! The registry's servers: one router per [`Mode`], served until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method, Uri};
use checkpointing::cri::Runtime;
use checkpointing::listen::{self, Timeouts};

use super::{Mode, Registry};
use crate::cluster::Cluster;

/// The routes of `mode`, all answered by [`Registry::serve`].
pub fn router<R: Runtime + 'static, C: Cluster>(
    registry: Arc<Registry<R, C>>,
    mode: Mode,
) -> Router {
    Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
        let registry = registry.clone();
        async move { registry.serve(mode, &method, &uri, &headers).await }
    })
}

/// Serves `router` on `listener` (plain TCP for the local registry, TLS for the peer server;
/// [`checkpointing::listen::Capped`] in the daemon) until `stop` resolves; connections still
/// open then get `grace` to finish. Clients get [`listen::HEADER_READ_TIMEOUT`] for their
/// request headers.
pub async fn serve<L>(
    listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) where
    L: axum::serve::Listener,
{
    let timeouts = Timeouts {
        header_read: listen::HEADER_READ_TIMEOUT,
        grace,
    };
    listen::serve(listener, router, stop, timeouts).await;
}
