//! The admin port: `/healthz` (the process serves), `/readyz` (the last prerequisites check
//! found the runtime ready and the checkpoint directory writable; the body lists every check)
//! and `/metrics` (Prometheus text).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;
use crate::prereq::Prerequisites;

/// What the endpoints report on.
#[derive(Clone)]
pub struct Admin {
    pub metrics: Arc<Metrics>,
    pub prerequisites: Arc<Prerequisites>,
}

pub fn router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

async fn ready(State(admin): State<Admin>) -> (StatusCode, String) {
    match admin.prerequisites.latest() {
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "prerequisites not checked yet\n".into(),
        ),
        Some(report) if report.ready() => (StatusCode::OK, report.body()),
        Some(report) => (StatusCode::SERVICE_UNAVAILABLE, report.body()),
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        admin.metrics.render(),
    )
}

pub async fn serve(addr: SocketAddr, admin: Admin) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(admin)).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prereq::{CHECKPOINT_DIR, CRI, CRIU, Check, RESTORE, Report};
    use axum::body::Body;
    use axum::http::Request;
    use checkpointing::runtime::Verdict as Met;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn get(admin: &Admin, path: &str) -> (StatusCode, String) {
        let response = router(admin.clone())
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn report(dir: Met) -> Report {
        let check = |name, state| Check {
            name,
            state,
            detail: "why".into(),
        };
        Report {
            runtime_name: Some("containerd".into()),
            runtime_version: Some("v2.1.4".into()),
            criu_version: Some("4.1".into()),
            checks: vec![
                check(CRI, Met::Ok),
                check(CRIU, Met::Ok),
                check(RESTORE, Met::Assumed),
                check(CHECKPOINT_DIR, dir),
            ],
        }
    }

    #[tokio::test]
    async fn readyz_follows_the_prerequisites_and_metrics_show_them() {
        let admin = Admin {
            metrics: Arc::default(),
            prerequisites: Arc::default(),
        };
        assert_eq!(get(&admin, "/healthz").await.0, StatusCode::OK);
        assert_eq!(
            get(&admin, "/readyz").await,
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "prerequisites not checked yet\n".into()
            )
        );

        admin.prerequisites.update(report(Met::Failed));
        let (status, body) = get(&admin, "/readyz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("checkpoint_dir: failed (why)"), "{body}");

        let ok = report(Met::Ok);
        admin.prerequisites.update(ok.clone());
        ok.record(&admin.metrics);
        let (status, body) = get(&admin, "/readyz").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.contains("restore: assumed (why)"), "{body}");

        let (status, text) = get(&admin, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        for line in [
            "noded_prerequisite{check=\"cri\"} 1",
            "noded_prerequisite{check=\"restore\"} 1",
            "noded_runtime_info{runtime_name=\"containerd\",runtime_version=\"v2.1.4\",criu_version=\"4.1\"} 1",
            "# EOF",
        ] {
            assert!(text.contains(line), "{line} missing from {text}");
        }
    }
}
