//! noded: the node daemon. Watches the ContainerCheckpointContents of its node, checkpoints
//! containers through the runtime's CRI socket, and keeps archives and checkpoint images.

mod checkpoint;
mod cluster;
mod criu_log;
mod error;
mod freeze;
mod gc;
mod http;
mod identity;
mod images;
mod lease;
mod locks;
mod metrics;
mod node_labels;
mod outbound;
mod prereq;
mod push;
mod recent;
mod reconcile;
mod registry;
mod restore;
mod setup;
mod size;
mod slots;
mod space;
mod store;
#[cfg(test)]
mod testing;
mod volumes;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use checkpointing::admin;
use checkpointing::crd::{ContainerCheckpointContent, MAX_TIMEOUT_SECONDS};
use checkpointing::cri::{CriClient, CriConfig};
use checkpointing::daemon::{LogFormat, init_logging, kube_client};
use checkpointing::names::{DEFAULT_CREDENTIALS_NAMESPACE, DEFAULT_LEASE_NAMESPACE, NODE_LABEL};
use checkpointing::oci::ImageLayout;
use checkpointing::runtime::socket;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{Controller, watcher};

use crate::checkpoint::Checkpointer;
use crate::cluster::KubeCluster;
use crate::freeze::Freezer;
use crate::identity::PeerIdentity;
use crate::images::{Images, PeerClient};
use crate::reconcile::Context;
use crate::registry::{Mode, PeerAuth, Registry};
use crate::restore::Restore;
use crate::space::DiskSpace;
use crate::store::CheckpointDir;
use checkpointing::listen::Capped;
use checkpointing::tls::TlsListener;

/// Time open registry connections (a blob being streamed) get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// Port of the admin endpoints unless --admin-addr says otherwise.
const ADMIN_PORT: u16 = 9811;
/// Connections per server: far more than a node's restores and peers use at once.
const DEFAULT_MAX_CONNECTIONS: usize = 128;

#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Name of this node (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node_name: String,
    /// Kubeconfig file; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// CRI endpoint of the container runtime (CRI-O: unix:///var/run/crio/crio.sock). Default:
    /// the socket of the runtime the node's kubelet uses, found under --cri-search-dir.
    #[arg(long, env = "CRI_ENDPOINT")]
    cri_endpoint: Option<String>,
    /// With --cri-endpoint: the CRI socket's directory as the node names it, when noded sees it
    /// elsewhere. A file the runtime names beneath it (containerd's CRIU log of a failed
    /// checkpoint) is read there, and nothing outside it. Default: the socket's directory as
    /// noded sees it.
    #[arg(long, env = "CRI_HOST_DIR", requires = "cri_endpoint")]
    cri_host_dir: Option<PathBuf>,
    /// Without --cri-endpoint: the node's run directory as noded sees it, where CRI-O,
    /// containerd, k3s/RKE2 and microk8s keep their sockets (the chart mounts it at /host/run).
    #[arg(long, env = "CRI_SEARCH_DIR", default_value = "/run")]
    cri_search_dir: PathBuf,
    /// The node's name for --cri-search-dir (/run; microk8s: /var/snap/microk8s/common/run).
    /// Default: --cri-search-dir.
    #[arg(long, env = "CRI_SEARCH_DIR_ON_NODE")]
    cri_search_dir_on_node: Option<PathBuf>,
    /// The node's CRIU configuration for runc (/etc/criu/runc.conf) as mounted here: checked
    /// for `tcp-close`, reported as the `tcp_close` prerequisite.
    #[arg(long, env = "CRIU_RUNC_CONFIG", default_value = checkpointing::criu::conf::RUNC_CONF)]
    criu_runc_config: PathBuf,
    /// Where archives and the OCI image layout live.
    #[arg(
        long,
        env = "CHECKPOINT_DIR",
        default_value = "/var/lib/kubelet/checkpoints"
    )]
    checkpoint_dir: PathBuf,
    /// The kubelet's pods directory as mounted here: emptyDir volumes are taken from it with
    /// a checkpoint and put into it for a restored pod.
    #[arg(long, env = "KUBELET_PODS_DIR", default_value = volumes::DEFAULT_PODS_DIR)]
    kubelet_pods_dir: PathBuf,
    /// The node's cgroup file system (`/sys/fs/cgroup`) as mounted here: a migrating
    /// container is frozen through it from its dump on.
    #[arg(long, env = "CGROUP_ROOT", default_value = freeze::DEFAULT_CGROUP_ROOT)]
    cgroup_root: PathBuf,
    /// Registry host that checkpoint image references name (the node-local registry).
    #[arg(long, env = "IMAGE_REGISTRY", default_value = "localhost:5050")]
    image_registry: String,
    /// CRIU dumps (CRI CheckpointContainer calls) running at once on this node, 1 to 64.
    #[arg(
        long,
        env = "MAX_CONCURRENT_DUMPS",
        default_value_t = checkpoint::DEFAULT_CONCURRENT_DUMPS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=64)
    )]
    max_concurrent_dumps: usize,
    /// Disk space, in MiB (0 to 1048576), left free beyond what a checkpoint or a peer fetch
    /// needs: a checkpoint is refused unless the checkpoint directory's filesystem holds the
    /// container's memory and writable layer (the archive's estimated size) plus this, and a
    /// fetch from a peer unless it holds the image's missing blobs plus this. Without stats
    /// from the runtime a checkpoint checks this reserve alone.
    #[arg(
        long,
        env = "DISK_RESERVE_MIB",
        default_value_t = space::DEFAULT_RESERVE_MIB,
        value_parser = clap::value_parser!(u64).range(0..=1 << 20)
    )]
    disk_reserve_mib: u64,
    /// Share of the filesystem, in percent (0 to 90), left free beyond what a checkpoint or a
    /// peer fetch needs, when more than --disk-reserve-mib: keeps checkpoints from taking the
    /// node's disk below the kubelet's eviction threshold (nodefs.available<10% by default),
    /// where it would evict other pods.
    #[arg(
        long,
        env = "DISK_RESERVE_PERCENT",
        default_value_t = space::DEFAULT_RESERVE_PERCENT,
        value_parser = clap::value_parser!(u8).range(0..=90)
    )]
    disk_reserve_percent: u8,
    /// Checkpoint timeout when a request sets none, in seconds (1 to 3600, a request's bounds).
    #[arg(
        long,
        env = "DEFAULT_TIMEOUT_SECONDS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..=MAX_TIMEOUT_SECONDS.unsigned_abs())
    )]
    default_timeout_seconds: u64,
    /// Namespace of the node Lease the controller looks for.
    #[arg(long, env = "LEASE_NAMESPACE", default_value = DEFAULT_LEASE_NAMESPACE)]
    lease_namespace: String,
    /// The only namespace whose Secrets noded reads: the controller's copies of the registry
    /// Secrets requests name (the controller's --credentials-namespace must match), and
    /// --push-secret.
    #[arg(long, env = "CREDENTIALS_NAMESPACE", default_value = DEFAULT_CREDENTIALS_NAMESPACE)]
    credentials_namespace: String,
    /// How long a deleted checkpoint waits for its push registry to answer before its pushed
    /// copy is given up on (told in an Event on the Content), so that a registry gone for good
    /// does not hold the deletion; a registry that refuses the delete is given up on at once.
    #[arg(long, default_value_t = outbound::PUSHED_COPY_PATIENCE.as_secs(),
        value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pushed_copy_patience_seconds: u64,
    /// This node's IP (deploy/ passes the pod's `status.hostIP`: under hostNetwork, the node's
    /// own, the InternalIP peers reach it at). The peer server and the admin port listen on it
    /// alone; unset, they listen on every interface.
    #[arg(long, env = "NODE_IP")]
    node_ip: Option<IpAddr>,
    /// Address of /healthz, /readyz and /metrics. Default: port 9811 of --node-ip (the
    /// kubelet probes the pod IP, the node's under hostNetwork), else of every interface.
    #[arg(long, env = "ADMIN_ADDR")]
    admin_addr: Option<SocketAddr>,
    /// Address of the node-local registry the runtime pulls checkpoint images from (loopback:
    /// runtimes pull from `localhost` over plain HTTP).
    #[arg(long, env = "REGISTRY_ADDR", default_value = "127.0.0.1:5050")]
    registry_addr: SocketAddr,
    /// Port of the peer server other nodes' noded fetch checkpoint images from; every node uses
    /// the same one, at its InternalIP.
    #[arg(long, env = "PEER_PORT", default_value_t = 5051)]
    peer_port: u16,
    /// Address the peer server listens on. Default: --node-ip, else every interface.
    #[arg(long, env = "PEER_BIND_ADDR")]
    peer_bind_addr: Option<IpAddr>,
    /// Connections each of noded's servers (node-local registry, peer server, admin port)
    /// holds at once, TLS handshakes included, 1 to 4096; more wait until one closes.
    #[arg(
        long,
        env = "MAX_CONNECTIONS",
        default_value_t = DEFAULT_MAX_CONNECTIONS,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=4096)
    )]
    max_connections: usize,
    /// ServiceAccount token presented to peers, projected for the peer audience
    /// (`checkpointing.zacchaeuschok.github.io/peer`): peers accept no other, so the API token
    /// never leaves the node. Re-read for every fetch: projected tokens rotate.
    #[arg(
        long,
        env = "PEER_TOKEN_FILE",
        default_value = "/var/run/secrets/checkpointing/peer-token"
    )]
    peer_token_file: PathBuf,
    /// Users (as a TokenReview names them) allowed to fetch from the peer server, comma-separated.
    #[arg(
        long,
        env = "PEER_ALLOWED_USERS",
        value_delimiter = ',',
        default_value = "system:serviceaccount:kube-system:checkpoint-noded"
    )]
    peer_allowed_users: Vec<String>,
    /// Default OCI registry, HOST[:PORT][/PREFIX], checkpoint images are pushed to (as
    /// `<registry>/<prefix>/<namespace>/<name>:<Content UID>`) unless their request names a
    /// repository; checkpoints then reference the image there. Off when absent. Deleting a
    /// checkpoint deletes its pushed manifest too.
    #[arg(long, env = "PUSH_REGISTRY")]
    push_registry: Option<push::Target>,
    /// Talk to the push registry over plain HTTP instead of HTTPS (adds its host to the
    /// insecure registries).
    #[arg(long, env = "PUSH_INSECURE", requires = "push_registry")]
    push_insecure: bool,
    /// `kubernetes.io/dockerconfigjson` Secret NAME in --credentials-namespace (the only one
    /// noded reads), with the credentials for pushes whose request names no Secret
    /// (read for every push, so it can be rotated).
    #[arg(long, env = "PUSH_SECRET")]
    push_secret: Option<String>,
    /// Registry host (HOST[:PORT]) spoken to over plain HTTP instead of HTTPS; repeatable.
    #[arg(long, env = "INSECURE_REGISTRIES", value_delimiter = ',')]
    insecure_registry: Vec<String>,
    /// Registry host (HOST[:PORT]) requests may push to; repeatable. When set, requests may
    /// name only these (and --push-registry's); unset, any host that resolves to no loopback
    /// or link-local address.
    #[arg(long, env = "ALLOWED_PUSH_REGISTRIES", value_delimiter = ',', value_parser = push_host)]
    allowed_push_registry: Vec<String>,
    /// Also refuse registries that requests name resolving to private addresses (RFC 1918,
    /// fc00::/7). Off by default: in-cluster registries are common. --push-registry is exempt.
    #[arg(long, env = "REFUSE_PRIVATE_PUSH_TARGETS")]
    refuse_private_push_targets: bool,
    /// PEM bundle of CA certificates trusted for registries' HTTPS, besides the system's roots
    /// (read at start; a missing file adds none, as an absent optional ConfigMap leaves it).
    #[arg(long, env = "REGISTRY_CA_FILE")]
    registry_ca_file: Option<PathBuf>,
    /// How often copies of deleted checkpoints (cached images, the runtime's images) are looked
    /// for and removed, in seconds.
    #[arg(
        long,
        env = "PRUNE_INTERVAL_SECONDS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..=86400)
    )]
    prune_interval_seconds: u64,
    /// Checkpoints taken at once on this node.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: u16,
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
}

impl Args {
    /// Where the peer server and the admin port listen: this node's IP when known, never
    /// every interface unless it is not.
    fn listen_addrs(&self) -> (SocketAddr, SocketAddr) {
        let ip = self.node_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let peer = SocketAddr::new(self.peer_bind_addr.unwrap_or(ip), self.peer_port);
        let admin = self.admin_addr.unwrap_or(SocketAddr::new(ip, ADMIN_PORT));
        (peer, admin)
    }
}

impl Args {
    /// The CRI endpoint, and its socket's directory as the node names it: as given, or the
    /// socket of the runtime the Node says its kubelet uses.
    async fn cri(&self, client: &kube::Client) -> anyhow::Result<(String, Option<PathBuf>)> {
        if let Some(endpoint) = &self.cri_endpoint {
            return Ok((endpoint.clone(), self.cri_host_dir.clone()));
        }
        let node = Api::<Node>::all(client.clone()).get(&self.node_name).await;
        let version = match &node {
            Ok(node) => node
                .status
                .as_ref()
                .and_then(|s| s.node_info.as_ref())
                .map(|i| i.container_runtime_version.as_str()),
            Err(error) => {
                tracing::warn!(%error, "reading this node's runtime failed; trying every runtime's sockets");
                None
            }
        };
        let search = &self.cri_search_dir;
        let on_node = self.cri_search_dir_on_node.as_deref().unwrap_or(search);
        let found = socket::find(version, search, on_node, |p| p.exists()).map_err(|why| {
            anyhow::anyhow!(why).context("finding the container runtime's CRI socket")
        })?;
        tracing::info!(runtime = found.kind.cri_name(), socket = %found.socket.display(), "found the CRI socket");
        Ok((found.endpoint(), Some(found.dir_on_node)))
    }
}

/// How long the last pruning may take as noded stops (within the pod's 30 s grace period).
const LAST_PRUNE: Duration = Duration::from_secs(15);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `noded setup ...` is its own command line: the daemon's required flags do not apply.
    if std::env::args().nth(1).as_deref() == Some("setup") {
        return setup::main(std::env::args().skip(1)).await;
    }
    let args = Args::parse();
    init_logging(args.log_format);
    // Checked before anything starts, as clap checks the other flags.
    let push_secret = args.push_secret.as_deref().map(|s| {
        outbound::SecretName::parse(s, &args.credentials_namespace)
            .map_err(|why| anyhow::anyhow!("--push-secret {why}"))
    });
    let push_secret = push_secret.transpose()?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let (cri_endpoint, cri_host_dir) = args.cri(&client).await?;
    let cri =
        CriClient::lazy(&CriConfig::new(&cri_endpoint)).context("configuring the CRI client")?;
    let dir = CheckpointDir::open(&args.checkpoint_dir).with_context(|| {
        format!(
            "opening checkpoint directory {}",
            args.checkpoint_dir.display()
        )
    })?;
    let layout = Arc::new(
        ImageLayout::open(args.checkpoint_dir.join("oci"))
            .context("opening the OCI image layout")?,
    );
    gc::clear_ingest(&layout).context("clearing interrupted image downloads")?;
    let cap = |listener| Capped::new(listener, args.max_connections);
    let local_listener = cap(tokio::net::TcpListener::bind(args.registry_addr)
        .await
        .with_context(|| format!("listening on {} (--registry-addr)", args.registry_addr))?);
    let (peer_addr, admin_addr) = args.listen_addrs();
    let identity =
        PeerIdentity::generate(&args.node_name).context("making the peer certificate")?;
    let peer_listener = TlsListener::new(
        cap(tokio::net::TcpListener::bind(peer_addr)
            .await
            .with_context(|| format!("listening on {peer_addr} (--peer-port)"))?),
        identity.server_config()?,
    )?;
    tracing::info!(node = %args.node_name, cri = %cri_endpoint, dir = %args.checkpoint_dir.display(),
        registry = %args.registry_addr, peer = %peer_addr, admin = %admin_addr, "noded starting");

    let prerequisites = Arc::new(prereq::Prerequisites::default());
    tokio::spawn(lease::keep_renewed(
        client.clone(),
        args.lease_namespace.clone(),
        args.node_name.clone(),
        identity.fingerprint(),
        prerequisites.clone(),
    ));
    let labeller = tokio::spawn(node_labels::keep_labelled(
        client.clone(),
        args.node_name.clone(),
        prerequisites.clone(),
    ));
    let metrics = Arc::new(metrics::Metrics::default());
    let space = DiskSpace::new(args.node_name.clone(), args.disk_reserve_mib)
        .with_reserve_percent(args.disk_reserve_percent);
    let checker = tokio::spawn(prereq::keep_checked(
        prerequisites.clone(),
        cri.clone(),
        prereq::Paths {
            checkpoint_dir: args.checkpoint_dir.clone(),
            criu_runc_config: args.criu_runc_config.clone(),
        },
        metrics.clone(),
    ));
    let admin_listener = cap(tokio::net::TcpListener::bind(admin_addr)
        .await
        .with_context(|| format!("binding the admin address {admin_addr}"))?);

    let mut insecure = args.insecure_registry.clone();
    if let Some(target) = args.push_registry.as_ref().filter(|_| args.push_insecure) {
        insecure.push(target.host.clone());
    }
    let roots = match &args.registry_ca_file {
        Some(path) => match std::fs::read(path) {
            Ok(pem) => Some(pem),
            // An optional ConfigMap that is not there: deploy/ mounts one, many clusters need
            // no private CA.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no registry CA bundle; trusting the system's roots only");
                None
            }
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("reading --registry-ca-file {}", path.display()));
            }
        },
        None => None,
    };
    let targets = push::Targets {
        own: args.push_registry.as_ref().map(|t| t.host.clone()),
        allowed: args.allowed_push_registry.clone(),
        refuse_private: args.refuse_private_push_targets,
    };
    let outbound = outbound::Defaults {
        target: args.push_registry.clone(),
        secret: push_secret,
        credentials_namespace: args.credentials_namespace.clone(),
        pushed_copy_patience: Duration::from_secs(args.pushed_copy_patience_seconds),
    };
    let pusher = |targets| {
        push::Pusher::new(insecure.clone(), roots.as_deref(), targets)
            .context("loading the root certificates for registries (--registry-ca-file)")
    };
    // The restores' own client: pushed copies are fetched back from where they were pushed.
    let copies = images::Copies::new(pusher(targets.clone())?, outbound.clone());
    let pusher = pusher(targets)?;
    if let Some(target) = &outbound.target {
        tracing::info!(registry = %target, insecure = args.push_insecure, "pushing checkpoint images");
    }
    let cluster = KubeCluster {
        client: client.clone(),
        lease_namespace: args.lease_namespace.clone(),
        credentials_namespace: args.credentials_namespace.clone(),
        metrics: metrics.clone(),
        recorder: kube::runtime::events::Recorder::new(
            client.clone(),
            checkpointing::names::NODED_MANAGER.into(),
        ),
    };
    let images = Arc::new(
        Images::new(
            layout.clone(),
            cluster.clone(),
            (args.node_name.clone(), args.image_registry.clone()),
            PeerClient::new(args.peer_port, args.peer_token_file.clone()),
            space.clone(),
        )
        .with_copies(copies)
        .with_metrics(metrics.clone()),
    );
    let restore = Arc::new(
        Restore::new(images.clone(), cluster.clone(), cri.clone())
            .with_pods_dir(args.kubelet_pods_dir.clone()),
    );
    let registry = Arc::new(
        Registry::new(
            images.clone(),
            restore.clone(),
            cluster.clone(),
            PeerAuth::new(args.peer_allowed_users.clone()),
        )
        .with_metrics(metrics.clone()),
    );
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let admin = tokio::spawn(admin::serve(
        admin_listener,
        metrics.clone(),
        prerequisites.clone(),
        until_stopped(stopped.clone()),
    ));
    let router = |mode| registry::router(registry.clone(), mode);
    let servers = [
        tokio::spawn(registry::serve(
            local_listener,
            router(Mode::Local),
            until_stopped(stopped.clone()),
            SHUTDOWN_GRACE,
        )),
        tokio::spawn(registry::serve(
            peer_listener,
            router(Mode::Peer),
            until_stopped(stopped.clone()),
            SHUTDOWN_GRACE,
        )),
    ];
    let arrivals = tokio::spawn(restore::arrivals::run(
        client.clone(),
        args.node_name.clone(),
        args.registry_addr.port(),
        restore.clone(),
    ));
    let forget = {
        let restore = restore.clone();
        checkpoint::Forget::new(move |tag| restore.forget(tag))
    };
    let collector = Arc::new(gc::Collector {
        images,
        restore,
        cluster,
        registry: args.image_registry.clone(),
        archives: args.checkpoint_dir.clone(),
        metrics: metrics.clone(),
    });
    let interval = Duration::from_secs(args.prune_interval_seconds);
    let pruner = tokio::spawn(collector.clone().run(interval));

    let runtime_dir = criu_log::RuntimeDir::of_socket(cri.socket(), cri_host_dir);
    let context = Arc::new(
        Context::new(
            client.clone(),
            Checkpointer::new(
                cri,
                dir,
                layout.clone(),
                args.image_registry.clone(),
                pusher,
                space,
            )
            .with_concurrent_dumps(args.max_concurrent_dumps)
            .with_pods_dir(args.kubelet_pods_dir.clone())
            .with_freezer(Freezer::new(&args.cgroup_root))
            .with_forget(forget)
            .with_metrics(metrics),
            Duration::from_secs(args.default_timeout_seconds),
            prerequisites,
            outbound,
        )
        .with_runtime_dir(runtime_dir),
    );
    let labels_client = client.clone();
    let contents: Api<ContainerCheckpointContent> = Api::all(client);
    let mine = watcher::Config::default().labels(&format!("{NODE_LABEL}={}", args.node_name));
    let config = kube::runtime::controller::Config::default().concurrency(args.concurrency);
    Controller::new(contents, mine)
        .with_config(config)
        .shutdown_on_signal()
        .run(reconcile::reconcile, reconcile::error_policy, context)
        .for_each(|_| async {})
        .await;
    let _ = stop.send(true);
    pruner.abort();
    arrivals.abort();
    for server in servers {
        let _ = server.await;
    }
    let _ = admin.await;
    checker.abort();
    labeller.abort();
    node_labels::remove(labels_client, &args.node_name).await;
    // Nothing of noded stays on a node it leaves without checkpoints (helm uninstall): the
    // copies of deleted ones, then the layout if nothing is left in it.
    collector.last_round(LAST_PRUNE).await;
    match layout.remove_if_empty() {
        Ok(true) => {
            tracing::info!(layout = %layout.root().display(), "removed the empty image layout")
        }
        Ok(false) => {}
        Err(error) => tracing::warn!(%error, "removing the empty image layout failed"),
    }
    tracing::info!("noded stopped");
    Ok(())
}

/// A registry host as `--allowed-push-registry` takes it, normalised as requests' are.
fn push_host(value: &str) -> Result<String, String> {
    if value.contains('/') {
        return Err(format!(
            "{value:?}: give HOST[:PORT], without a scheme or path"
        ));
    }
    checkpointing::reference::normalise_host(value).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_default_timeout_out_of_range_is_refused_at_start_up() {
        let parse = |v: &str| {
            Args::try_parse_from(["noded", "--node-name", "n", "--default-timeout-seconds", v])
                .map(|a| a.default_timeout_seconds)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse("3600"), Ok(3600));
        for bad in ["0", "3601", "400000000000"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("--default-timeout-seconds"), "{err}");
        }
    }

    #[test]
    fn the_peer_and_admin_ports_listen_on_the_node_ip_when_it_is_known() {
        let addrs = |extra: &[&str]| {
            let mut argv = vec!["noded", "--node-name", "n"];
            argv.extend(extra);
            let (peer, admin) = Args::try_parse_from(argv).unwrap().listen_addrs();
            (peer.to_string(), admin.to_string())
        };
        assert_eq!(addrs(&[]), ("0.0.0.0:5051".into(), "0.0.0.0:9811".into()));
        assert_eq!(
            addrs(&["--node-ip", "10.77.0.11"]),
            ("10.77.0.11:5051".into(), "10.77.0.11:9811".into())
        );
        assert_eq!(
            addrs(&["--node-ip", "fd00::11", "--peer-port", "6000"]),
            ("[fd00::11]:6000".into(), "[fd00::11]:9811".into())
        );
        let explicit = [
            "--node-ip",
            "10.77.0.11",
            "--peer-bind-addr",
            "0.0.0.0",
            "--admin-addr",
            "127.0.0.1:9000",
        ];
        assert_eq!(
            addrs(&explicit),
            ("0.0.0.0:5051".into(), "127.0.0.1:9000".into())
        );
        let cap = |v: &str| {
            Args::try_parse_from(["noded", "--node-name", "n", "--max-connections", v])
                .map(|a| a.max_connections)
                .map_err(|e| e.to_string())
        };
        assert_eq!(cap("1"), Ok(1));
        assert!(cap("0").unwrap_err().contains("--max-connections"));
        assert!(cap("4097").is_err());
    }

    #[test]
    fn the_disk_reserve_is_bounded() {
        let parse = |v: Option<&str>| {
            let mut argv = vec!["noded", "--node-name", "n"];
            argv.extend(v.iter().flat_map(|v| ["--disk-reserve-mib", v]));
            Args::try_parse_from(argv)
                .map(|a| a.disk_reserve_mib)
                .map_err(|e| e.to_string())
        };
        assert_eq!(parse(None), Ok(256));
        assert_eq!(parse(Some("0")), Ok(0));
        assert_eq!(parse(Some("1048576")), Ok(1 << 20));
        for bad in ["1048577", "18446744073709551616", "lots"] {
            let err = parse(Some(bad)).unwrap_err();
            assert!(err.contains("--disk-reserve-mib"), "{err}");
        }
        let percent = |v: &str| {
            Args::try_parse_from(["noded", "--node-name", "n", "--disk-reserve-percent", v])
                .map(|a| a.disk_reserve_percent)
                .map_err(|e| e.to_string())
        };
        assert_eq!(percent("0"), Ok(0));
        assert_eq!(percent("90"), Ok(90));
        assert!(
            percent("91")
                .unwrap_err()
                .contains("--disk-reserve-percent")
        );
        let default = Args::try_parse_from(["noded", "--node-name", "n"]).unwrap();
        assert_eq!(default.disk_reserve_percent, 15);
    }
}
