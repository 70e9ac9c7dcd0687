//! `/healthz` and `/readyz` on the admin port.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use checkpointing::cri::{CriClient, Runtime};

/// Ready when the runtime answers `Version`: without it no checkpoint can succeed.
async fn ready(State(cri): State<Arc<CriClient>>) -> (StatusCode, String) {
    match cri.version().await {
        Ok(v) => (
            StatusCode::OK,
            format!("ok: {} {}\n", v.runtime_name, v.runtime_version),
        ),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")),
    }
}

pub async fn serve(addr: SocketAddr, cri: CriClient) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(Arc::new(cri));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
