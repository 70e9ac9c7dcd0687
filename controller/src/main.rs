//! The controller binary. `controller run` turns ContainerCheckpoint requests into
//! ContainerCheckpointContents for the node daemons and mirrors their results back;
//! `controller crd` prints both CRDs as YAML.

mod admin;
#[cfg(test)]
mod fake_api;
mod reconcile;
mod status;
mod validation;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointContent};
use checkpointing::daemon::{LogFormat, init_logging, kube_client};
use checkpointing::names::{CONTROLLER_MANAGER, DEFAULT_LEASE_NAMESPACE};
use clap::{Args, Parser, Subcommand};
use futures::{FutureExt, StreamExt, TryStreamExt};
use kube::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::Recorder;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::signal::unix::{SignalKind, signal};
use tracing::{debug, info, warn};

use crate::admin::{Admin, Metrics};
use crate::reconcile::{Context, error_policy, reconcile};

/// How long in-flight reconciles may take to finish after SIGTERM.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write one file each into --dir
    /// (how deploy/crds/ is regenerated).
    Crd {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Reconcile ContainerCheckpoints until SIGTERM or SIGINT.
    Run(RunArgs),
}

#[derive(Args)]
struct RunArgs {
    /// Kubeconfig file. Without it: the in-cluster service account, else $KUBECONFIG or
    /// ~/.kube/config.
    #[arg(long, env = "CONTROLLER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Namespace of the Leases the node daemons renew to show they are alive.
    #[arg(long, env = "CONTROLLER_LEASE_NAMESPACE", default_value = DEFAULT_LEASE_NAMESPACE)]
    lease_namespace: String,
    #[arg(long, env = "CONTROLLER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "CONTROLLER_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { dir } => write_crds(dir),
        Command::Run(args) => run(args).await,
    }
}

fn write_crds(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let files = checkpointing::crd::crd_files().context("rendering the CRDs")?;
    for (name, yaml) in files {
        match &dir {
            Some(dir) => {
                let path = dir.join(&name);
                std::fs::write(&path, yaml)
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            None => print!("---\n{yaml}"),
        }
    }
    Ok(())
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let shutdown = shutdown_signal().context("installing the signal handlers")?;

    let listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_addr))?;
    let metrics = Arc::new(Metrics::default());
    let requests_synced = Arc::new(AtomicBool::new(false));
    let contents_synced = Arc::new(AtomicBool::new(false));
    let admin = Admin {
        metrics: metrics.clone(),
        watches: vec![requests_synced.clone(), contents_synced.clone()],
    };
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(admin::serve(listener, admin, async {
        let _ = admin_stopped.await;
    }));
    info!(addr = %args.admin_addr, "serving /healthz, /readyz and /metrics");

    // Our own watches, not `Controller::new` and `owns()`, so readiness can tell when each has
    // listed everything. Contents: metadata only, as `owns()` would.
    let requests = Api::<ContainerCheckpoint>::all(client.clone());
    let (store, writer) = reflector::store();
    let request_changes = reflector(writer, watcher(requests, watcher::Config::default()))
        .inspect_ok(mark_synced(requests_synced, "ContainerCheckpoint"))
        .applied_objects();
    let contents = Api::<PartialObjectMeta<ContainerCheckpointContent>>::all(client.clone());
    let content_changes = watcher(contents, watcher::Config::default())
        .inspect_ok(mark_synced(contents_synced, "ContainerCheckpointContent"))
        .touched_objects();
    let controller = Controller::for_stream(request_changes, store)
        .owns_stream(content_changes)
        .graceful_shutdown_on(shutdown.clone());

    let recorder = Recorder::new(client.clone(), CONTROLLER_MANAGER.into());
    let ctx = Arc::new(Context::new(
        client,
        recorder,
        args.lease_namespace,
        metrics,
    ));
    info!("controller started");
    let controller = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(request = %object, "reconciled"),
                // Logged with its cause by the error policy.
                Err(controller::Error::ReconcilerFailed(..)) => {}
                Err(error) => warn!(%error, "controller"),
            }
        });
    // kube-runtime holds its runner until the first list has synced, so a controller that never
    // reached the API server would not stop by itself: bound the wait after the signal.
    let overdue = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::select! {
        () = controller => info!("controller stopped"),
        () = overdue => warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "controller did not stop in time; exiting anyway"
        ),
    }

    let _ = stop_admin.send(());
    admin_task
        .await
        .context("joining the admin server")?
        .context("serving the admin endpoints")?;
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT; cloneable. A task and a oneshot make the future
/// `Sync`, as `graceful_shutdown_on` requires.
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Clone + Send + Sync + 'static> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
        let _ = tx.send(());
    });
    Ok(rx.map(|_| ()).shared())
}

/// Sets `flag` when a watch has listed all its objects for the first time.
fn mark_synced<K>(flag: Arc<AtomicBool>, kind: &'static str) -> impl Fn(&watcher::Event<K>) {
    move |event| {
        if matches!(event, watcher::Event::InitDone) && !flag.swap(true, Ordering::Relaxed) {
            info!(kind, "watch synced");
        }
    }
}
