//! `GET /containerLogs/{namespace}/{pod}/{container}` on :10250, the endpoint the API server
//! proxies `kubectl logs` to. Pure parsing and selection of CRI log lines first, then the HTTP
//! (or HTTPS) shell.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector::Store;
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_stream::wrappers::ReceiverStream;
use tracing::{debug, info, warn};

use crate::pod::log_dir_name;
use crate::runtime::Cri;

// ------------------------------------------------------------------ CRI log format

/// One record of a CRI log file: `<RFC3339Nano time> <stdout|stderr> <F|P> <content>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CriLine<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    /// `P`: the runtime split a long line; the next record continues it.
    pub partial: bool,
    pub content: &'a str,
}

/// Parses one record (without its trailing newline); `None` when it is not in CRI format.
pub fn parse_line(raw: &str) -> Option<CriLine<'_>> {
    let (time, rest) = raw.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ')?;
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let (tags, content) = rest.split_once(' ').unwrap_or((rest, ""));
    let partial = match tags.split(':').next() {
        Some("P") => true,
        Some("F") => false,
        _ => return None,
    };
    Some(CriLine {
        time,
        stream,
        partial,
        content,
    })
}

/// What a record contributes to `kubectl logs`: its content (a partial record without a
/// newline), prefixed by its time when `timestamps` is set. `None` when not in CRI format.
pub fn log_line(raw: &str, timestamps: bool) -> Option<String> {
    let line = parse_line(raw)?;
    let mut out = String::with_capacity(line.content.len() + 40);
    if timestamps {
        out.push_str(line.time);
        out.push(' ');
    }
    out.push_str(line.content);
    if !line.partial {
        out.push('\n');
    }
    Some(out)
}

/// The query parameters of `/containerLogs` (the API's PodLogOptions).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LogQuery {
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    /// Last N records only (negative: all).
    pub tail_lines: Option<usize>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<Timestamp>,
    pub limit_bytes: Option<usize>,
}

impl LogQuery {
    /// The earliest record time to show.
    pub fn since(&self, now: Timestamp) -> Option<Timestamp> {
        let by_seconds = self
            .since_seconds
            .and_then(|s| now.checked_sub(SignedDuration::from_secs(s)).ok());
        match (by_seconds, self.since_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" | "" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("invalid boolean for {key}: {value:?}")),
    }
}

fn parse_int(key: &str, value: &str) -> Result<i64, String> {
    value
        .parse()
        .map_err(|_| format!("invalid integer for {key}: {value:?}"))
}

/// Parses the raw query string; unknown parameters are ignored, as the kubelet does.
pub fn parse_query(query: &str) -> Result<LogQuery, String> {
    let mut q = LogQuery::default();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match key.as_ref() {
            "follow" => q.follow = parse_bool(&key, &value)?,
            "previous" => q.previous = parse_bool(&key, &value)?,
            "timestamps" => q.timestamps = parse_bool(&key, &value)?,
            "tailLines" => q.tail_lines = usize::try_from(parse_int(&key, &value)?).ok(),
            "sinceSeconds" => q.since_seconds = Some(parse_int(&key, &value)?.max(0)),
            "sinceTime" => {
                q.since_time = Some(
                    value
                        .parse()
                        .map_err(|e| format!("invalid sinceTime {value:?}: {e}"))?,
                );
            }
            "limitBytes" => q.limit_bytes = usize::try_from(parse_int(&key, &value)?).ok(),
            _ => {}
        }
    }
    Ok(q)
}

/// The complete records of `buf` (up to its last newline) and the length they take.
pub fn complete_records(buf: &str) -> (&str, usize) {
    match buf.rfind('\n') {
        Some(i) => (&buf[..i], i + 1),
        None => ("", 0),
    }
}

/// Renders complete records: the last `tail` of them (all when `None`), from `since` on.
pub fn render(
    records: &str,
    tail: Option<usize>,
    since: Option<Timestamp>,
    timestamps: bool,
) -> String {
    if records.is_empty() {
        return String::new();
    }
    let lines: Vec<&str> = records.split('\n').collect();
    let start = tail.map_or(0, |n| lines.len().saturating_sub(n));
    let mut out = String::new();
    for raw in &lines[start..] {
        if let Some(since) = since {
            let before = parse_line(raw)
                .and_then(|l| l.time.parse::<Timestamp>().ok())
                .is_some_and(|t| t < since);
            if before {
                continue;
            }
        }
        if let Some(text) = log_line(raw, timestamps) {
            out.push_str(&text);
        }
    }
    out
}

/// Cuts `text` to at most `*budget` bytes (on a character boundary) and lowers the budget.
pub fn take_budget(mut text: String, budget: &mut Option<usize>) -> String {
    if let Some(left) = budget {
        if text.len() > *left {
            let mut cut = *left;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        *left -= text.len();
    }
    text
}

// ------------------------------------------------------------------ HTTP shell

/// What the log endpoint needs: the pods of this node, the runtime, and where logs are.
#[derive(Clone)]
pub struct LogService {
    pub pods: Store<Pod>,
    pub cri: Cri,
    pub pod_log_dir: PathBuf,
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    let mut body = message.into();
    body.push('\n');
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

pub fn router(service: LogService) -> Router {
    Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async {
            text(
                StatusCode::NOT_FOUND,
                "not supported by the testbed kubelet stand-in (only /containerLogs and /healthz)",
            )
        })
        .with_state(Arc::new(service))
}

async fn container_logs(
    State(service): State<Arc<LogService>>,
    UrlPath((namespace, pod_name, container)): UrlPath<(String, String, String)>,
    RawQuery(query): RawQuery,
) -> Response {
    let query = match parse_query(query.as_deref().unwrap_or_default()) {
        Ok(q) => q,
        Err(e) => return text(StatusCode::BAD_REQUEST, e),
    };
    let Some(pod) = service.pods.find(|p| {
        p.metadata.namespace.as_deref() == Some(namespace.as_str())
            && p.metadata.name.as_deref() == Some(pod_name.as_str())
    }) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("pod {namespace}/{pod_name} not found on this node"),
        );
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !crate::pod::containers(&pod)
        .iter()
        .any(|c| c.name == container)
    {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container} is not valid for pod {pod_name}"),
        );
    }
    if query.previous {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "previous terminated container {container:?} in pod {pod_name:?} not found \
                 (the testbed kubelet stand-in never restarts containers)"
            ),
        );
    }
    let path = service
        .pod_log_dir
        .join(log_dir_name(&namespace, &pod_name, &uid))
        .join(&container)
        .join("0.log");
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let reason = waiting_reason(&pod, &container).unwrap_or("ContainerCreating".into());
            return text(
                StatusCode::BAD_REQUEST,
                format!(
                    "container {container:?} in pod {pod_name:?} is waiting to start: {reason}"
                ),
            );
        }
        Err(e) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading {}: {e}", path.display()),
            );
        }
    };
    let mut buf = Vec::new();
    if let Err(e) = file.read_to_end(&mut buf).await {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading {}: {e}", path.display()),
        );
    }
    let content = String::from_utf8_lossy(&buf);
    let (records, consumed) = complete_records(&content);
    let since = query.since(Timestamp::now());
    let mut budget = query.limit_bytes;
    let first = take_budget(
        render(records, query.tail_lines, since, query.timestamps),
        &mut budget,
    );
    debug!(
        namespace,
        pod = pod_name,
        container,
        follow = query.follow,
        "serving logs"
    );
    if !query.follow || budget == Some(0) {
        return text_body(Body::from(first));
    }
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(16);
    let follower = Follower {
        cri: service.cri.clone(),
        path,
        uid,
        container,
        offset: consumed as u64,
        since,
        timestamps: query.timestamps,
        budget,
    };
    tokio::spawn(async move {
        if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        follower.run(tx).await;
    });
    text_body(Body::from_stream(ReceiverStream::new(rx)))
}

fn text_body(body: Body) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn waiting_reason(pod: &Pod, container: &str) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == container)?
        .state
        .as_ref()?
        .waiting
        .as_ref()?
        .reason
        .clone()
}

/// Streams what a log file gains until the container stops or the client goes away.
struct Follower {
    cri: Cri,
    path: PathBuf,
    uid: String,
    container: String,
    offset: u64,
    since: Option<Timestamp>,
    timestamps: bool,
    budget: Option<usize>,
}

const FOLLOW_POLL: Duration = Duration::from_millis(250);
/// Polls without new data between two checks that the container still runs.
const RUNNING_CHECK_EVERY: u32 = 8;

impl Follower {
    async fn run(mut self, tx: mpsc::Sender<Result<Bytes, io::Error>>) {
        let mut idle = 0u32;
        loop {
            let chunk = match self.read_new().await {
                Ok(chunk) => chunk,
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            };
            if !chunk.is_empty() {
                idle = 0;
                let chunk = take_budget(chunk, &mut self.budget);
                if tx.send(Ok(Bytes::from(chunk))).await.is_err() || self.budget == Some(0) {
                    return;
                }
                continue;
            }
            if tx.is_closed() {
                return;
            }
            idle += 1;
            if idle.is_multiple_of(RUNNING_CHECK_EVERY) {
                match self.cri.container_running(&self.uid, &self.container).await {
                    Ok(true) => {}
                    Ok(false) => {
                        // Drain what the runtime wrote last, then end the stream.
                        if let Ok(rest) = self.read_new().await
                            && !rest.is_empty()
                        {
                            let _ = tx
                                .send(Ok(Bytes::from(take_budget(rest, &mut self.budget))))
                                .await;
                        }
                        return;
                    }
                    Err(e) => debug!(error = %e, "log follow: container state unknown"),
                }
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }

    /// Rendered complete records appended since the last call.
    async fn read_new(&mut self) -> io::Result<String> {
        let mut file = tokio::fs::File::open(&self.path).await?;
        let len = file.metadata().await?.len();
        if len < self.offset {
            // Truncated or replaced: start over.
            self.offset = 0;
        }
        if len == self.offset {
            return Ok(String::new());
        }
        file.seek(io::SeekFrom::Start(self.offset)).await?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).await?;
        let content = String::from_utf8_lossy(&buf);
        let (records, consumed) = complete_records(&content);
        self.offset += consumed as u64;
        Ok(render(records, None, self.since, self.timestamps))
    }
}

// ------------------------------------------------------------------ listeners

/// TLS connections, handshaken off the accept loop so a slow client cannot stall others.
struct TlsListener {
    connections: mpsc::Receiver<(tokio_rustls::server::TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    fn new(tcp: TcpListener, acceptor: TlsAcceptor) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, connections) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match tcp.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let acceptor = acceptor.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { connections, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(connection) => connection,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// A TLS acceptor for the kubelet's serving certificate (PEM chain and key), HTTP/1.1 only.
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading certificate {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing certificate {}", cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("reading private key {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS certificate and key do not match")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves the log endpoint on `addr`: HTTPS with `tls`, plain HTTP without.
pub async fn serve(
    addr: SocketAddr,
    tls: Option<TlsAcceptor>,
    service: LogService,
) -> anyhow::Result<()> {
    let tcp = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the log endpoint on {addr}"))?;
    let app = router(service);
    match tls {
        Some(acceptor) => {
            info!(%addr, "serving /containerLogs over HTTPS");
            axum::serve(TlsListener::new(tcp, acceptor)?, app).await?;
        }
        None => {
            warn!(
                %addr,
                "serving /containerLogs over plain HTTP: no --tls-cert-file/--tls-private-key-file, \
                 so `kubectl logs` through the API server (which dials HTTPS) will fail"
            );
            axum::serve(tcp, app).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "2024-05-01T10:00:00.000000001Z stdout F Counter: 1\n\
2024-05-01T10:00:01.000000001Z stderr F oops\n\
2024-05-01T10:00:02.000000001Z stdout P Counter: \n\
2024-05-01T10:00:02.000000002Z stdout F 3\n\
2024-05-01T10:00:03.000000001Z stdout F \n\
2024-05-01T10:00:04.000000001Z stdout F Counter: 5";

    #[test]
    fn parses_records() {
        assert_eq!(
            parse_line("2024-05-01T10:00:00.1Z stdout F hello world"),
            Some(CriLine {
                time: "2024-05-01T10:00:00.1Z",
                stream: "stdout",
                partial: false,
                content: "hello world"
            })
        );
        assert!(
            parse_line("2024-05-01T10:00:00.1Z stdout P x")
                .unwrap()
                .partial
        );
        assert_eq!(
            parse_line("2024-05-01T10:00:00.1Z stdout F")
                .unwrap()
                .content,
            ""
        );
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_line("t other F x"), None);
        assert_eq!(parse_line("t stdout X x"), None);
    }

    #[test]
    fn log_line_strips_prefix_unless_timestamps() {
        assert_eq!(
            log_line("2024-05-01T10:00:00.1Z stdout F hi", false).as_deref(),
            Some("hi\n")
        );
        assert_eq!(
            log_line("2024-05-01T10:00:00.1Z stdout F hi", true).as_deref(),
            Some("2024-05-01T10:00:00.1Z hi\n")
        );
        assert_eq!(
            log_line("2024-05-01T10:00:00.1Z stdout P hi", false).as_deref(),
            Some("hi")
        );
    }

    #[test]
    fn complete_records_stop_at_last_newline() {
        let (records, used) = complete_records(LOG);
        assert!(records.ends_with("stdout F "));
        assert_eq!(used, LOG.rfind('\n').unwrap() + 1);
        assert_eq!(complete_records("no newline"), ("", 0));
    }

    #[test]
    fn render_all_tail_and_since() {
        let (records, _) = complete_records(LOG);
        assert_eq!(
            render(records, None, None, false),
            "Counter: 1\noops\nCounter: 3\n\n"
        );
        assert_eq!(render(records, Some(1), None, false), "\n");
        assert_eq!(render(records, Some(3), None, false), "Counter: 3\n\n");
        assert_eq!(render(records, Some(0), None, false), "");
        let since: Timestamp = "2024-05-01T10:00:01Z".parse().unwrap();
        assert_eq!(
            render(records, None, Some(since), false),
            "oops\nCounter: 3\n\n"
        );
        assert!(
            render(records, Some(1), None, true).starts_with("2024-05-01T10:00:03.000000001Z ")
        );
    }

    #[test]
    fn queries() {
        let q = parse_query("follow=true&tailLines=10&timestamps=1&sinceSeconds=5&limitBytes=100")
            .unwrap();
        assert!(q.follow && q.timestamps && !q.previous);
        assert_eq!(q.tail_lines, Some(10));
        assert_eq!(q.since_seconds, Some(5));
        assert_eq!(q.limit_bytes, Some(100));
        assert_eq!(parse_query("tailLines=-1").unwrap().tail_lines, None);
        assert_eq!(parse_query("").unwrap(), LogQuery::default());
        assert!(parse_query("follow=maybe").is_err());
        assert!(parse_query("tailLines=x").is_err());
        let t = parse_query("sinceTime=2024-05-01T10%3A00%3A01Z").unwrap();
        assert_eq!(t.since_time, Some("2024-05-01T10:00:01Z".parse().unwrap()));
        assert!(parse_query("unknown=1").is_ok());
    }

    #[test]
    fn since_takes_the_later_bound() {
        let now: Timestamp = "2024-05-01T10:00:10Z".parse().unwrap();
        let q = LogQuery {
            since_seconds: Some(5),
            ..Default::default()
        };
        assert_eq!(q.since(now), Some("2024-05-01T10:00:05Z".parse().unwrap()));
        let q = LogQuery {
            since_seconds: Some(5),
            since_time: Some("2024-05-01T10:00:08Z".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(q.since(now), Some("2024-05-01T10:00:08Z".parse().unwrap()));
        assert_eq!(LogQuery::default().since(now), None);
    }

    #[test]
    fn byte_budget() {
        let mut budget = Some(5);
        assert_eq!(take_budget("abcdefg".into(), &mut budget), "abcde");
        assert_eq!(budget, Some(0));
        let mut budget = Some(2);
        assert_eq!(take_budget("é€".into(), &mut budget), "é");
        let mut none = None;
        assert_eq!(take_budget("abc".into(), &mut none), "abc");
    }
}
