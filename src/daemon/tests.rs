use super::*;

/// kube's watcher asks the server to end a watch after `timeoutSeconds`; a quiet watch sends
/// nothing until then, and must not be cut by the read timeout.
#[test]
fn the_read_timeout_outlasts_a_quiet_watch() {
    let watch = kube::core::Request::new("/api/v1/pods")
        .watch(&kube::api::WatchParams::default(), "0")
        .unwrap();
    let query = watch.uri().query().unwrap_or_default().to_owned();
    let seconds: u64 = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("timeoutSeconds="))
        .expect("kube's watches ask for a server-side timeout")
        .parse()
        .unwrap();
    assert!(READ_TIMEOUT > Duration::from_secs(seconds), "{query}");
    let config = with_timeouts(kube::Config::new("https://10.96.0.1".parse().unwrap()));
    assert_eq!(config.read_timeout, Some(READ_TIMEOUT));
    assert_eq!(config.connect_timeout, Some(CONNECT_TIMEOUT));
    assert_eq!(config.write_timeout, Some(WRITE_TIMEOUT));
    assert!(config.reset_reader_on_write);
}

/// An API server that accepts the connection and never answers (a half-open connection
/// after a network cut looks the same): the call fails once the read timeout passes.
#[tokio::test]
async fn an_api_server_that_stops_answering_fails_the_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut config = with_timeouts(kube::Config::new(format!("http://{addr}").parse().unwrap()));
    config.read_timeout = Some(Duration::from_millis(300));
    let client = kube::Client::try_from(config).unwrap();
    let answer = tokio::time::timeout(Duration::from_secs(20), client.apiserver_version()).await;
    assert!(
        matches!(answer, Ok(Err(_))),
        "the call failed on its own: {answer:?}"
    );
    silent.abort();
}

/// A JSON log line carries the message and the event's fields at its top level, and the span
/// it happened in by name and fields.
#[test]
fn json_log_lines_are_flat() {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let out = lines.clone();
    let subscriber = subscriber(LogFormat::Json, EnvFilter::new("info"), false, move || {
        out.clone()
    });
    tracing::subscriber::with_default(subscriber, || {
        let _span = tracing::info_span!("reconcile", kind = "PodMigration").entered();
        tracing::info!(pod = "app", "restored");
    });
    let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["message"], "restored", "{line}");
    assert_eq!(line["pod"], "app", "{line}");
    assert_eq!(line["spans"][0]["name"], "reconcile", "{line}");
    assert_eq!(line["spans"][0]["kind"], "PodMigration", "{line}");
    assert!(line.get("fields").is_none(), "{line}");
}
