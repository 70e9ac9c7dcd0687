//! The controller binary. `controller run` turns ContainerCheckpoint requests into
//! ContainerCheckpointContents for the node daemons and mirrors their results back, and drives
//! PodCheckpoints, PodMigrations and CheckpointPolicies;
//! `controller crd` prints both CRDs as YAML. With `--webhook-addr` it also serves and
//! registers the restore admission webhook. `controller uninstall` removes every checkpoint
//! before the product is uninstalled.

mod abandoned;
#[cfg(test)]
mod fixtures;
mod kinds;
mod kube_error;
mod leader;
mod metrics;
mod pending;
mod placement;
mod pod;
mod policy;
mod readiness;
mod reads;
mod reconciles;
mod request;
mod retention;
mod shell;
mod status;
mod stores;
mod tls;
mod tls_reload;
mod tls_secret;
mod uninstall;
mod validation;
mod webhook;
mod written;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use checkpointing::admin;
use checkpointing::daemon::{LogFormat, init_logging, kube_client};
use checkpointing::names::{DEFAULT_CREDENTIALS_NAMESPACE, DEFAULT_LEASE_NAMESPACE};
use clap::{Args, Parser, Subcommand};
use futures::FutureExt;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use crate::metrics::Metrics;
use crate::readiness::Ready;
use crate::reconciles::{Context, Settings, drive};
use crate::webhook::registration;
use crate::webhook::start::{WebhookArgs, start_webhook};

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
    /// Reconcile the requests and policies until SIGTERM or SIGINT.
    Run(Box<RunArgs>),
    /// Delete every PodMigration, PodCheckpoint, CheckpointPolicy and ContainerCheckpoint in
    /// all namespaces, then wait until no ContainerCheckpointContent is left (noded removed
    /// their archives, images and pushed copies). Run it before uninstalling, while the
    /// controller and noded still run.
    Uninstall(UninstallArgs),
}

#[derive(Args)]
struct UninstallArgs {
    /// Kubeconfig file. Without it: the in-cluster service account, else $KUBECONFIG or
    /// ~/.kube/config.
    #[arg(long, env = "CONTROLLER_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Give up after this many seconds, naming what is left, and exit non-zero.
    #[arg(
        long,
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(0..=86_400)
    )]
    timeout_seconds: u64,
    /// noded's DaemonSet, NAMESPACE/NAME: deleted once no checkpoint is left, and waited for,
    /// so that each node daemon takes its node's labels with it while its rights still stand.
    #[arg(long, value_name = "NAMESPACE/NAME")]
    node_daemon: Option<uninstall::NodeDaemon>,
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
    /// Namespace the registry Secrets requests name are copied to for noded, the only one whose
    /// Secrets it reads (noded's --credentials-namespace must match).
    #[arg(long, env = "CONTROLLER_CREDENTIALS_NAMESPACE", default_value = DEFAULT_CREDENTIALS_NAMESPACE)]
    credentials_namespace: String,
    #[arg(long, env = "CONTROLLER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "CONTROLLER_ADMIN_ADDR", default_value = "0.0.0.0:8080")]
    admin_addr: SocketAddr,
    /// Run as one of several replicas: only the holder of a coordination.k8s.io Lease
    /// reconciles and registers the webhook; every replica serves the webhook, with the
    /// certificates kept in Secret checkpoint-controller-webhook-tls of the election namespace.
    #[arg(long, env = "CONTROLLER_LEADER_ELECT")]
    leader_elect: bool,
    /// Namespace of the leader-election Lease (and of the webhook's certificate Secret)
    /// [default: --lease-namespace].
    #[arg(long, env = "CONTROLLER_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, env = "CONTROLLER_LEADER_ELECTION_ID", default_value = leader::DEFAULT_ID)]
    leader_election_id: String,
    #[command(flatten)]
    webhook: WebhookArgs,
    #[command(flatten)]
    retention: RetentionArgs,
    /// Release noded's finalizer from a Content that has been deleting this long while its
    /// node's daemon is gone (Lease expired or missing), so the deletion completes; the archive
    /// on that node stays. A copy of a registry Secret no Content names, this old, is deleted
    /// too. In seconds.
    #[arg(
        long,
        env = "CONTROLLER_RELEASE_ABANDONED_AFTER_SECONDS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64)
            .range(abandoned::MIN_AFTER_SECONDS..=abandoned::MAX_AFTER_SECONDS)
    )]
    release_abandoned_after_seconds: u64,
    /// A node that has not been Ready this long is lost: the pods CheckpointPolicies restore
    /// on node loss (`onNodeLoss: Restore`, StatefulSets' pods excepted: they wait for the
    /// out-of-service taint or the Node's deletion) are restored elsewhere. Below the 300 s
    /// pods tolerate an unreachable node by default, so the restore starts before Kubernetes
    /// evicts them. In seconds.
    #[arg(
        long,
        env = "CONTROLLER_NODE_LOSS_AFTER_SECONDS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(10..=86_400)
    )]
    node_loss_after_seconds: u64,
    /// How long a request waits, Pending, on a state that passes by itself before it fails: a
    /// ContainerCheckpoint whose pod is not scheduled yet, whose container is still being
    /// created or initialized, or whose node's daemon is not live; a PodMigration whose pod is
    /// not Running yet. Counted from the request's creation. In seconds.
    #[arg(
        long,
        env = "CONTROLLER_PENDING_TIMEOUT_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pending_timeout_seconds: u64,
}

/// Retention of completed checkpoints, per container (namespace, pod, container). Requests
/// annotated `checkpointing.zacchaeuschok.github.io/pinned: "true"` are always kept.
#[derive(Args)]
struct RetentionArgs {
    /// Keep only the newest N completed checkpoints of each container.
    #[arg(long, env = "CONTROLLER_RETAIN_NEWEST")]
    retain_newest: Option<usize>,
    /// Delete completed checkpoints older than this many seconds.
    #[arg(long, env = "CONTROLLER_RETAIN_MAX_AGE_SECONDS")]
    retain_max_age_seconds: Option<u64>,
    /// How often retention runs, in seconds (1 to 86400).
    #[arg(
        long,
        env = "CONTROLLER_RETENTION_INTERVAL_SECONDS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=retention::MAX_INTERVAL_SECONDS)
    )]
    retention_interval_seconds: u64,
}

impl RetentionArgs {
    fn policy(&self) -> retention::Policy {
        retention::Policy {
            keep_newest: self.retain_newest,
            max_age: self.retain_max_age_seconds.map(Duration::from_secs),
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { dir } => write_crds(dir),
        Command::Run(args) => run(*args).await,
        Command::Uninstall(args) => {
            let client = kube_client(args.kubeconfig.as_deref()).await?;
            let timeout = Duration::from_secs(args.timeout_seconds);
            uninstall::run(client, timeout, args.node_daemon.as_ref()).await
        }
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
    let elector = args.leader_elect.then(|| {
        let namespace = args
            .leader_election_namespace
            .as_deref()
            .unwrap_or(&args.lease_namespace);
        let elector = leader::Elector::new(
            client.clone(),
            namespace,
            args.leader_election_id.clone(),
            leader::identity(),
        );
        info!(lease = %args.leader_election_id, %namespace, identity = elector.identity(), "leader election on");
        (elector, namespace.to_owned())
    });

    let listener = tokio::net::TcpListener::bind(args.admin_addr)
        .await
        .with_context(|| format!("binding the admin address {}", args.admin_addr))?;
    let metrics = Arc::new(Metrics::default());
    let synced = stores::Synced::default();
    let leading = Arc::new(AtomicBool::new(elector.is_none()));
    metrics.set_leader(elector.is_none());
    let ready = Ready {
        watches: synced.leaders(),
        serving: vec![synced.leases.clone()],
        leading: leading.clone(),
    };
    let (stop_admin, admin_stopped) = tokio::sync::oneshot::channel::<()>();
    let admin_task = tokio::spawn(admin::serve(
        listener,
        metrics.clone(),
        Arc::new(ready),
        async {
            let _ = admin_stopped.await;
        },
    ));
    info!(addr = %args.admin_addr, "serving /healthz, /readyz and /metrics");

    // Every replica watches the noded Leases: its webhook places restores by them.
    let leases = stores::leases(client.clone(), &args.lease_namespace, &synced);
    let webhook = match args.webhook.settings(client.default_namespace())? {
        Some(settings) => {
            let shared = elector.as_ref().map(|(_, namespace)| namespace.as_str());
            let listed = (leases.clone(), synced.leases.clone());
            let started = start_webhook(
                &client,
                &metrics,
                settings,
                listed,
                shared,
                shutdown.clone(),
            );
            Some(started.await?)
        }
        None => None,
    };
    let (webhook_task, configuration) = webhook.unzip();
    let configuration = configuration.flatten();
    let mut servers = Servers {
        stop_admin,
        admin_task,
        webhook: webhook_task,
        registration: None,
    };

    // A follower serves the webhook and waits; only the leader goes on.
    if let Some((elector, _)) = &elector {
        tokio::select! {
            () = elector.acquire() => {}
            () = shutdown.clone() => return servers.stop(None).await,
        }
        leading.store(true, Ordering::Relaxed);
        metrics.set_leader(true);
    }
    servers.registration = configuration
        .map(|configuration| tokio::spawn(registration::register(client.clone(), configuration)));
    let (stores, triggers) = stores::start(&client, leases, args.lease_namespace, &synced);
    // Only the leader deletes; the task ends with the process.
    let policy = args.retention.policy();
    if policy.is_active() {
        info!(?policy, "retention on");
        let interval = Duration::from_secs(args.retention.retention_interval_seconds.max(1));
        tokio::spawn(retention::enforce(
            client.clone(),
            stores.requests.clone(),
            synced.requests.clone(),
            policy,
            interval,
        ));
    }
    tokio::spawn(abandoned::release(
        client.clone(),
        stores.contents.clone(),
        stores.leases.clone(),
        synced.clone(),
        stores.lease_namespace.clone(),
        args.credentials_namespace.clone(),
        Duration::from_secs(args.release_abandoned_after_seconds),
    ));
    info!("controller started");
    let settings = Settings {
        node_loss_after: Duration::from_secs(args.node_loss_after_seconds),
        pending_timeout: Duration::from_secs(args.pending_timeout_seconds),
        credentials_namespace: args.credentials_namespace,
    };
    // The request and policy controllers, peers over the shared stores.
    let controllers = futures::future::join4(
        drive(
            request::controller(&stores, triggers.requests),
            request::reconcile,
            Context::new(
                client.clone(),
                stores.clone(),
                metrics.clone(),
                settings.clone(),
            ),
            shutdown.clone(),
        ),
        drive(
            pod::checkpoints(&stores, triggers.pod_checkpoints),
            pod::reconcile_checkpoint,
            Context::new(
                client.clone(),
                stores.clone(),
                metrics.clone(),
                settings.clone(),
            ),
            shutdown.clone(),
        ),
        drive(
            pod::migrations(&stores, triggers.migrations),
            pod::reconcile_migration,
            Context::new(
                client.clone(),
                stores.clone(),
                metrics.clone(),
                settings.clone(),
            ),
            shutdown.clone(),
        ),
        drive(
            policy::controller(&stores, triggers.policies),
            policy::reconcile,
            Context::new(client.clone(), stores.clone(), metrics.clone(), settings),
            shutdown.clone(),
        ),
    );
    // kube-runtime holds its runner until the first list has synced, so a controller that never
    // reached the API server would not stop by itself: bound the wait after the signal.
    let overdue = async {
        shutdown.await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    // Lost leadership ends the process with an error, reconciles in flight or not: another
    // replica may already be reconciling, and the restart comes back as a follower.
    let lost = async {
        match &elector {
            Some((elector, _)) => elector.keep().await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = controllers => info!("controller stopped"),
        () = overdue => warn!(
            grace_secs = SHUTDOWN_GRACE.as_secs(),
            "controller did not stop in time; exiting anyway"
        ),
        error = lost => {
            metrics.set_leader(false);
            return Err(error.context("stopping: no longer the leader"));
        }
    }
    servers.stop(elector.as_ref().map(|(e, _)| e)).await
}

/// The servers that run on every replica, and the leader's webhook registration.
struct Servers {
    stop_admin: tokio::sync::oneshot::Sender<()>,
    admin_task: tokio::task::JoinHandle<std::io::Result<()>>,
    webhook: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    registration: Option<tokio::task::JoinHandle<()>>,
}

impl Servers {
    /// After shutdown: stops registering, releases the Lease (so the next leader need not wait
    /// for it to expire), waits for the webhook to drain and stops the admin server.
    async fn stop(self, elector: Option<&leader::Elector>) -> anyhow::Result<()> {
        if let Some(registration) = self.registration {
            registration.abort();
        }
        if let Some(elector) = elector
            && let Err(error) = elector.release().await
        {
            warn!(%error, "releasing the leader Lease failed; it expires by itself");
        }
        if let Some(server) = self.webhook {
            server
                .await
                .context("joining the webhook server")?
                .context("serving the webhook")?;
        }
        let _ = self.stop_admin.send(());
        self.admin_task
            .await
            .context("joining the admin server")?
            .context("serving the admin endpoints")?;
        Ok(())
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_interval_out_of_range_is_refused_at_start_up() {
        let parse = |v: &str| {
            Cli::try_parse_from(["controller", "run", "--retention-interval-seconds", v])
                .map(drop)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("86400"), Ok(()));
        for bad in ["0", "86401", "18446744073709551615"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("--retention-interval-seconds"), "{err}");
        }
    }

    #[test]
    fn requests_wait_five_minutes_on_a_passing_state_unless_told_otherwise() {
        let parse = |extra: &[&str]| {
            let argv = ["controller", "run"].iter().chain(extra);
            match Cli::try_parse_from(argv)
                .map_err(|e| e.to_string())?
                .command
            {
                Command::Run(args) => Ok(args.pending_timeout_seconds),
                Command::Crd { .. } | Command::Uninstall(_) => Err("not run".to_owned()),
            }
        };
        assert_eq!(parse(&[]), Ok(300));
        assert_eq!(parse(&["--pending-timeout-seconds", "30"]), Ok(30));
        for bad in ["0", "86401"] {
            let err = parse(&["--pending-timeout-seconds", bad]).unwrap_err();
            assert!(err.contains("--pending-timeout-seconds"), "{err}");
        }
    }

    #[test]
    fn uninstall_waits_five_minutes_unless_told_otherwise() {
        let parse = |extra: &[&str]| match Cli::try_parse_from(
            ["controller", "uninstall"].iter().chain(extra),
        )
        .map_err(|e| e.to_string())?
        .command
        {
            Command::Uninstall(args) => Ok(args.timeout_seconds),
            _ => Err("not uninstall".to_owned()),
        };
        assert_eq!(parse(&[]), Ok(300));
        assert_eq!(parse(&["--timeout-seconds", "60"]), Ok(60));
        assert!(parse(&["--timeout-seconds", "86401"]).is_err());
    }
}
