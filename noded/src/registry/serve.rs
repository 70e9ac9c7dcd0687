//! The registry's servers: one router per [`Mode`], served until told to stop.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderMap, Method, Uri};
use checkpointing::cri::Runtime;

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

/// Serves `router` on `listener` (plain TCP for the local registry, TLS for the peer server)
/// until `stop` resolves; connections still open then get `grace` to finish.
pub async fn serve<L>(
    listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router).with_graceful_shutdown(async move {
        stop.await;
        let _ = stopped_tx.send(());
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result,
        _ = stopped_rx => {}
    }
    match tokio::time::timeout(grace, server).await {
        Ok(result) => result,
        Err(_) => {
            tracing::warn!("registry connections still open after {grace:?}; closing them");
            Ok(())
        }
    }
}
