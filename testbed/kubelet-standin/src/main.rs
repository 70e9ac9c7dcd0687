//! The testbed's kubelet stand-in: registers a Node with a Kubernetes 1.20 API server and runs
//! the pods bound to it through a CRI v1 runtime (containerd 2.x), with the kubelet's labels,
//! annotations and status reporting, and serves `kubectl logs`. See README.md for what it
//! deliberately does not do.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use checkpointing::cri::{CONTAINERD_ENDPOINT, CriClient, CriConfig};
use checkpointing::daemon::{LogFormat, init_logging, kube_client};
use clap::Parser;
use kube::runtime::reflector;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

use kubelet_standin::pod::Settings;
use kubelet_standin::runtime::Cri;
use kubelet_standin::supervisor::{self, Supervisor};
use kubelet_standin::{logs, node};

/// Testbed kubelet stand-in: registers a Node and runs its pods through CRI v1.
#[derive(Debug, Parser)]
#[command(name = "kubelet-standin", version, about)]
struct Cli {
    /// Name of the Node to register; pods with this spec.nodeName are run here.
    #[arg(long, env = "KUBELET_STANDIN_NODE_NAME")]
    node_name: String,

    /// Kubeconfig for the API server.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: PathBuf,

    /// CRI v1 endpoint of the container runtime (unix:///path).
    #[arg(long, env = "CONTAINER_RUNTIME_ENDPOINT", default_value = CONTAINERD_ENDPOINT)]
    cri_endpoint: String,

    /// The node's IP: its InternalIP address and every pod's hostIP.
    #[arg(long, env = "KUBELET_STANDIN_NODE_IP")]
    node_ip: IpAddr,

    /// cgroupfs parent of pod cgroups [default: /ckpt-testbed/<node-name>].
    #[arg(long, env = "KUBELET_STANDIN_CGROUP_ROOT")]
    cgroup_root: Option<String>,

    /// Where pod log directories are (`<ns>_<name>_<uid>/<container>/0.log`).
    #[arg(
        long,
        env = "KUBELET_STANDIN_POD_LOG_DIR",
        default_value = "/var/log/pods"
    )]
    pod_log_dir: PathBuf,

    /// PEM certificate (chain) for HTTPS on :10250; without it the port speaks plain HTTP.
    #[arg(
        long,
        env = "KUBELET_STANDIN_TLS_CERT_FILE",
        requires = "tls_private_key_file"
    )]
    tls_cert_file: Option<PathBuf>,

    /// PEM private key of --tls-cert-file.
    #[arg(
        long,
        env = "KUBELET_STANDIN_TLS_PRIVATE_KEY_FILE",
        requires = "tls_cert_file"
    )]
    tls_private_key_file: Option<PathBuf>,

    /// Log output format.
    #[arg(long, env = "KUBELET_STANDIN_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
}

impl Cli {
    fn cgroup_root(&self) -> String {
        self.cgroup_root
            .clone()
            .unwrap_or_else(|| format!("/ckpt-testbed/{}", self.node_name))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    tokio::select! {
        result = run(cli) => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                error!(error = format!("{e:#}"), "kubelet stand-in failed");
                ExitCode::FAILURE
            }
        },
        signal = shutdown_signal() => match signal {
            Ok(signal) => {
                info!(signal, "stopping; containers keep running");
                ExitCode::SUCCESS
            }
            Err(e) => {
                error!(error = format!("{e:#}"), "cannot handle signals");
                ExitCode::FAILURE
            }
        },
    }
}

/// Resolves on SIGTERM or SIGINT, naming it.
async fn shutdown_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

/// Connects to the runtime, waiting for it to come up (the testbed starts it just before us).
async fn connect_cri(
    endpoint: &str,
) -> anyhow::Result<(Cri, checkpointing::cri::api::VersionResponse)> {
    let config = CriConfig::new(endpoint);
    let mut delay = Duration::from_millis(250);
    loop {
        let attempt = async {
            let cri = Cri::new(CriClient::connect(&config).await?);
            let version = cri.version().await?;
            Ok::<_, checkpointing::cri::CriError>((cri, version))
        }
        .await;
        match attempt {
            Ok(ok) => return Ok(ok),
            Err(e)
                if e.is_transient()
                    || matches!(e, checkpointing::cri::CriError::SocketMissing { .. }) =>
            {
                warn!(endpoint, error = %e, "container runtime not reachable yet; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e).context("connecting to the container runtime"),
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = kube_client(Some(&cli.kubeconfig)).await?;
    let tls = match (&cli.tls_cert_file, &cli.tls_private_key_file) {
        (Some(cert), Some(key)) => Some(logs::tls_acceptor(cert, key)?),
        _ => None,
    };

    let (cri, version) = connect_cri(&cli.cri_endpoint).await?;
    info!(
        runtime = %version.runtime_name,
        version = %version.runtime_version,
        api = %version.runtime_api_version,
        "container runtime connected"
    );
    let settings = Settings {
        node_name: cli.node_name.clone(),
        node_ip: cli.node_ip.to_string(),
        cgroup_root: cli.cgroup_root(),
        pod_log_dir: cli.pod_log_dir.clone(),
        runtime_name: version.runtime_name.clone(),
    };
    let facts = node::read_facts(format!(
        "{}://{}",
        version.runtime_name, version.runtime_version
    ));

    let (pods, writer) = reflector::store();
    let (wake_tx, wake_rx) = mpsc::channel(1);
    let supervisor = Arc::new(Supervisor::new(
        client.clone(),
        cri.clone(),
        settings.clone(),
        pods.clone(),
    ));
    let log_service = logs::LogService {
        pods,
        cri,
        pod_log_dir: settings.pod_log_dir.clone(),
    };
    let log_addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), node::KUBELET_PORT);

    let mut tasks: JoinSet<(&'static str, anyhow::Result<()>)> = JoinSet::new();
    tasks.spawn(async move { ("node", node::run(client.clone(), settings, facts).await) });
    let watch_client = supervisor.client.clone();
    let node_name = cli.node_name.clone();
    tasks.spawn(async move {
        (
            "pod watch",
            supervisor::watch_pods(watch_client, node_name, writer, wake_tx).await,
        )
    });
    tasks.spawn(async move { ("pods", supervisor.run(wake_rx).await) });
    tasks.spawn(async move { ("logs", logs::serve(log_addr, tls, log_service).await) });
    info!(node = %cli.node_name, node_ip = %cli.node_ip, "kubelet stand-in running");

    // Every task runs forever; one ending is a failure.
    let ended = tasks.join_next().await;
    tasks.abort_all();
    match ended {
        Some(Ok((task, Ok(())))) => anyhow::bail!("{task} task ended unexpectedly"),
        Some(Ok((task, Err(e)))) => Err(e.context(format!("{task} task failed"))),
        Some(Err(e)) => Err(anyhow::Error::new(e).context("a task panicked")),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from([
            "kubelet-standin",
            "--node-name",
            "node1",
            "--kubeconfig",
            "/etc/testbed/kubeconfig",
            "--cri-endpoint",
            "unix:///run/containerd/containerd.sock",
            "--node-ip",
            "10.77.0.11",
        ])
        .unwrap();
        assert_eq!(cli.cgroup_root(), "/ckpt-testbed/node1");
        assert_eq!(cli.pod_log_dir, PathBuf::from("/var/log/pods"));
        assert_eq!(cli.log_format, LogFormat::Plain);
        assert!(cli.tls_cert_file.is_none());
    }

    #[test]
    fn tls_flags_come_in_pairs() {
        let err = Cli::try_parse_from([
            "kubelet-standin",
            "--node-name",
            "n",
            "--kubeconfig",
            "k",
            "--node-ip",
            "10.0.0.1",
            "--tls-cert-file",
            "c.pem",
        ]);
        assert!(err.is_err());
    }
}
