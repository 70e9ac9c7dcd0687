//! noded: the node daemon. Watches the ContainerCheckpointContents of its node, checkpoints
//! containers through the runtime's CRI socket, and keeps archives and checkpoint images.

mod admin;
mod checkpoint;
mod lease;
mod reconcile;
mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use checkpointing::crd::ContainerCheckpointContent;
use checkpointing::cri::{CONTAINERD_ENDPOINT, CriClient, CriConfig};
use checkpointing::daemon::{LogFormat, init_logging, kube_client};
use checkpointing::names::{DEFAULT_LEASE_NAMESPACE, NODE_LABEL};
use checkpointing::oci::ImageLayout;
use clap::Parser;
use futures::StreamExt;
use kube::Api;
use kube::runtime::{Controller, watcher};

use crate::checkpoint::Checkpointer;
use crate::reconcile::Context;
use crate::store::CheckpointDir;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Name of this node (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// CRI endpoint of the container runtime (CRI-O: unix:///var/run/crio/crio.sock).
    #[arg(long, env = "CRI_ENDPOINT", default_value = CONTAINERD_ENDPOINT)]
    cri_endpoint: String,
    /// Where archives and the OCI image layout live.
    #[arg(
        long,
        env = "CHECKPOINT_DIR",
        default_value = "/var/lib/kubelet/checkpoints"
    )]
    checkpoint_dir: PathBuf,
    /// Registry host that checkpoint image references name (the node-local registry).
    #[arg(long, env = "IMAGE_REGISTRY", default_value = "localhost:5050")]
    image_registry: String,
    /// Checkpoint timeout when a request sets none, in seconds.
    #[arg(long, env = "DEFAULT_TIMEOUT_SECONDS", default_value_t = 120)]
    default_timeout_seconds: u64,
    /// Namespace of the node Lease the controller looks for.
    #[arg(long, env = "LEASE_NAMESPACE", default_value = DEFAULT_LEASE_NAMESPACE)]
    lease_namespace: String,
    /// Address of /healthz and /readyz.
    #[arg(long, env = "ADMIN_ADDR", default_value = "0.0.0.0:9811")]
    admin_addr: SocketAddr,
    /// Checkpoints taken at once on this node.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let cri = CriClient::lazy(&CriConfig::new(&args.cri_endpoint))
        .context("configuring the CRI client")?;
    let dir = CheckpointDir::open(&args.checkpoint_dir).with_context(|| {
        format!(
            "opening checkpoint directory {}",
            args.checkpoint_dir.display()
        )
    })?;
    let layout = ImageLayout::open(args.checkpoint_dir.join("oci"))
        .context("opening the OCI image layout")?;
    tracing::info!(node = %args.node_name, cri = %args.cri_endpoint, dir = %args.checkpoint_dir.display(), "noded starting");

    tokio::spawn(lease::keep_renewed(
        client.clone(),
        args.lease_namespace.clone(),
        args.node_name.clone(),
    ));
    let admin = tokio::spawn(admin::serve(args.admin_addr, cri.clone()));

    let context = Arc::new(Context {
        client: client.clone(),
        checkpointer: Checkpointer::new(cri, dir, layout, args.image_registry.clone()),
        default_timeout: Duration::from_secs(args.default_timeout_seconds),
    });
    let contents: Api<ContainerCheckpointContent> = Api::all(client);
    let mine = watcher::Config::default().labels(&format!("{NODE_LABEL}={}", args.node_name));
    let config = kube::runtime::controller::Config::default().concurrency(args.concurrency);
    Controller::new(contents, mine)
        .with_config(config)
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|_| async {})
        .await;
    admin.abort();
    tracing::info!("noded stopped");
    Ok(())
}
