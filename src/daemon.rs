//! Start-up shared by our daemons (controller, noded): log output and the Kubernetes client.

use std::io::IsTerminal;
use std::path::Path;
use std::time::Duration;

use tracing_subscriber::EnvFilter;

/// `--log-format`: JSON for log collectors, plain text for people.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    #[default]
    Plain,
}

/// Logs to stderr at `info` unless `RUST_LOG` says otherwise; colours only on a terminal, so
/// log files and collectors get plain text.
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    tracing::subscriber::set_global_default(subscriber(format, filter, ansi, std::io::stderr))
        .expect("logging is set up once, at start");
}

/// One line per event. JSON lines are flat (`message` and the event's fields at the top, the
/// spans it happened in under `spans`), as log collectors index them.
fn subscriber<W>(
    format: LogFormat,
    filter: EnvFilter,
    ansi: bool,
    writer: W,
) -> Box<dyn tracing::Subscriber + Send + Sync>
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    match format {
        LogFormat::Json => Box::new(builder.json().flatten_event(true).finish()),
        LogFormat::Plain => Box::new(builder.finish()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading kubeconfig {path}")]
    Read {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("loading kubeconfig {path}")]
    Load {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("finding the cluster (in-cluster service account or KUBECONFIG)")]
    Infer(#[source] kube::config::InferConfigError),
    #[error("building the Kubernetes client")]
    Build(#[source] kube::Error),
}

/// Connecting to the API server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for the next bytes of an answer. A watch's answer is open for the server's
/// watch timeout (kube's watcher asks for 290 s, plus its own idle margin) and may carry
/// nothing for all of it: a shorter read timeout would cut every quiet watch. Calls that must
/// be quicker (lease renewals, the registry's look-ups) set their own deadline.
pub const READ_TIMEOUT: Duration = Duration::from_secs(295);
/// Longest wait to send the next bytes of a request (our requests are small).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

/// `config` with our timeouts: without them, a connection to an API server that stops
/// answering (a half-open TCP connection after a network cut) hangs its call for good.
pub fn with_timeouts(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    config.write_timeout = Some(WRITE_TIMEOUT);
    // Counted from the request, not from when its pooled connection fell idle.
    config.reset_reader_on_write = true;
    config
}

/// A client from `kubeconfig`, or in-cluster / `$KUBECONFIG` configuration when absent.
pub async fn kube_client(kubeconfig: Option<&Path>) -> Result<kube::Client, ClientError> {
    let config = match kubeconfig {
        Some(path) => {
            let display = path.display().to_string();
            let file =
                kube::config::Kubeconfig::read_from(path).map_err(|source| ClientError::Read {
                    path: display.clone(),
                    source,
                })?;
            kube::Config::from_custom_kubeconfig(file, &Default::default())
                .await
                .map_err(|source| ClientError::Load {
                    path: display,
                    source,
                })?
        }
        None => kube::Config::infer().await.map_err(ClientError::Infer)?,
    };
    kube::Client::try_from(with_timeouts(config)).map_err(ClientError::Build)
}

#[cfg(test)]
mod tests;
