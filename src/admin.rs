//! The admin port both daemons serve (feature `admin`): `/healthz` (the process serves),
//! `/readyz` (what "ready" means is the daemon's: a [`Readiness`]) and `/metrics` (the
//! daemon's Prometheus registry as OpenMetrics text).

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::serve::Listener;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use crate::listen::{self, Timeouts};

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What `/readyz` answers.
pub trait Readiness: Send + Sync + 'static {
    /// Ready or not, and a body that says why.
    fn readiness(&self) -> (bool, String);
}

/// The namespace of every metric the product exports, before the daemon's name (issue 28), so
/// dashboards and alerts find them together.
pub const NAMESPACE: &str = "checkpointing";

/// An empty registry for `component`'s metrics: each one it registers is named
/// `checkpointing_<component>_…`.
pub fn registry(component: &str) -> Registry {
    Registry::with_prefix(format!("{NAMESPACE}_{component}"))
}

/// Panics unless every family of `telemetry` is rendered and named `checkpointing_<component>_…`.
/// A daemon's test records into each family first: families without samples are not rendered.
#[cfg(feature = "test-util")]
pub fn assert_namespaced(telemetry: &dyn Telemetry, component: &str) {
    let text = telemetry.render();
    let families: Vec<_> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.split(' ').next())
        .collect();
    // The registry's Debug shows one Descriptor per registered family; counting them makes a new
    // family that the test does not record into fail here instead of escaping the check.
    let registered = format!("{:?}", telemetry.registry())
        .matches("Descriptor {")
        .count();
    assert_eq!(
        families.len(),
        registered,
        "a family has no sample:\n{text}"
    );
    let prefix = format!("{NAMESPACE}_{component}_");
    for family in families {
        assert!(
            family.starts_with(&prefix),
            "{family} is not named {prefix}…"
        );
    }
}

/// A daemon's metrics: anything that holds its Prometheus registry.
pub trait Telemetry: Send + Sync + 'static {
    fn registry(&self) -> &Registry;

    /// The registry as OpenMetrics text.
    fn render(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, self.registry());
        text
    }
}

#[derive(Clone)]
struct Admin {
    telemetry: Arc<dyn Telemetry>,
    readiness: Arc<dyn Readiness>,
}

pub fn router(telemetry: Arc<dyn Telemetry>, readiness: Arc<dyn Readiness>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(Admin {
            telemetry,
            readiness,
        })
}

/// Serves the admin endpoints on `listener` (a [`crate::listen::Capped`] one to bound its
/// connections) until `shutdown` resolves, timing out clients as [`crate::listen::serve`] does.
pub async fn serve<L: Listener>(
    listener: L,
    telemetry: Arc<dyn Telemetry>,
    readiness: Arc<dyn Readiness>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router(telemetry, readiness);
    listen::serve(listener, router, shutdown, Timeouts::default()).await;
    Ok(())
}

async fn readyz(State(admin): State<Admin>) -> (StatusCode, String) {
    match admin.readiness.readiness() {
        (true, body) => (StatusCode::OK, body),
        (false, body) => (StatusCode::SERVICE_UNAVAILABLE, body),
    }
}

async fn metrics(State(admin): State<Admin>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        admin.telemetry.render(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    use prometheus_client::metrics::gauge::Gauge;
    use tokio::net::TcpListener;

    struct Gauged(Registry);
    impl Telemetry for Gauged {
        fn registry(&self) -> &Registry {
            &self.0
        }
    }

    struct Flag(AtomicBool);
    impl Readiness for Flag {
        fn readiness(&self) -> (bool, String) {
            let ready = self.0.load(Ordering::Relaxed);
            (ready, if ready { "ready\n" } else { "not yet\n" }.into())
        }
    }

    #[tokio::test]
    async fn serves_health_readiness_and_metrics_until_shutdown() {
        let mut registry = Registry::with_prefix("test");
        let gauge = Gauge::<i64>::default();
        registry.register("answer", "A gauge", gauge.clone());
        gauge.set(42);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            Arc::new(Gauged(registry)),
            flag.clone(),
            async {
                let _ = stopped.await;
            },
        ));

        assert!(get(addr, "/healthz").await.starts_with("HTTP/1.1 200"));
        let not_ready = get(addr, "/readyz").await;
        assert!(not_ready.starts_with("HTTP/1.1 503"), "{not_ready}");
        assert!(not_ready.ends_with("not yet\n"), "{not_ready}");
        flag.0.store(true, Ordering::Relaxed);
        assert!(get(addr, "/readyz").await.starts_with("HTTP/1.1 200"));
        let metrics = get(addr, "/metrics").await;
        assert!(metrics.contains(OPENMETRICS), "{metrics}");
        assert!(metrics.contains("test_answer 42"), "{metrics}");
        assert!(metrics.contains("# EOF"), "{metrics}");

        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }

    /// A bare HTTP/1.1 GET: the library has no HTTP client to spare for this.
    async fn get(addr: std::net::SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }
}
