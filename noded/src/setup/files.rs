//! Which files the setup owns on a node, and their contents: pure, from the node's layout (the
//! chart's paths) and runtime. The texts are deploy/'s own files, so a node set up by hand and
//! one set up by the chart hold the same settings.

use std::path::{Path, PathBuf};

use checkpointing::runtime::{RuntimeKind, socket};

/// CRI-O's checkpoint/restore switches (deploy/crio/).
const CRIO_DROP_IN: &str = include_str!("../../../deploy/crio/10-checkpoint-restore.conf");
/// The node-local registry for CRI-O, named with port 5050 (deploy/crio/).
const CRIO_REGISTRIES: &str = include_str!("../../../deploy/crio/registries.conf");
/// CRIU's options for runc (deploy/node/).
pub const CRIU_RUNC_CONF: &str = include_str!("../../../deploy/node/criu-runc.conf");
/// The kubelet's provider configuration, named with port 5050 (deploy/kubelet/).
const PROVIDER_CONFIG: &str = include_str!("../../../deploy/kubelet/credential-provider.yaml");
/// The registry as deploy/'s files spell it.
const SHIPPED_REGISTRY: &str = "localhost:5050";
/// The provider's name: its binary's file name and the name in its configuration.
pub const PROVIDER_NAME: &str = "checkpointing-credential-provider";
/// Name of the setup's own drop-in files.
const DROP_IN_NAME: &str = "50-checkpointing.conf";

/// The node's runtime: named, or `auto` (the one whose socket is there).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuntimeChoice {
    Auto,
    Containerd,
    Crio,
}

/// Where the node keeps what the setup writes, as node paths (the chart's `nodeSetup` values;
/// defaults: a kubeadm node).
#[derive(clap::Args, Clone, Debug)]
pub struct Layout {
    #[arg(long, value_enum, default_value_t = RuntimeChoice::Auto)]
    pub runtime: RuntimeChoice,
    /// Port of noded's node-local registry (the chart's `registry.port`).
    #[arg(long, default_value_t = 5050)]
    pub registry_port: u16,
    /// The node's run directory, where `auto` looks for the runtime's socket (the chart's
    /// `noded.cri.runDir`: the places noded looks too).
    #[arg(long, default_value = "/run")]
    pub run_dir: PathBuf,
    /// containerd's config.toml (k3s/RKE2: their generated one), read, never written.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    pub containerd_config: PathBuf,
    /// containerd's registry host directory (its `config_path`).
    #[arg(long, default_value = "/etc/containerd/certs.d")]
    pub containerd_certs_dir: PathBuf,
    #[arg(long, default_value = "/etc/crio/crio.conf.d")]
    pub crio_drop_in_dir: PathBuf,
    #[arg(long, default_value = "/etc/containers/registries.conf.d")]
    pub registries_drop_in_dir: PathBuf,
    #[arg(long, default_value = checkpointing::criu::conf::RUNC_CONF)]
    pub criu_config: PathBuf,
    /// Install the credential provider (binary and configuration).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub credential_provider: bool,
    /// The kubelet's `--image-credential-provider-bin-dir`.
    #[arg(long, default_value = "/etc/kubernetes/credential-providers/bin")]
    pub provider_bin_dir: PathBuf,
    /// The kubelet's `--image-credential-provider-config`.
    #[arg(
        long,
        default_value = "/etc/kubernetes/credential-providers/checkpointing.yaml"
    )]
    pub provider_config: PathBuf,
}

/// One file the setup wants on the node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFile {
    /// Node path.
    pub path: PathBuf,
    pub content: Vec<u8>,
    pub mode: u32,
    /// The runtime reads it only when it starts.
    pub read_at_start: Option<Reader>,
}

/// Who reads a file only when it starts, so a change needs its restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    Runtime,
    Kubelet,
}

fn file(path: PathBuf, content: impl Into<Vec<u8>>, read_at_start: Option<Reader>) -> NodeFile {
    NodeFile {
        path,
        content: content.into(),
        mode: 0o644,
        read_at_start,
    }
}

/// The runtime `choice` names, else the one whose socket `exists` (a node path test) in the
/// run directory, where noded looks too ([`socket`]); both or neither is for the user to say.
pub fn runtime(layout: &Layout, exists: impl Fn(&Path) -> bool) -> Result<RuntimeKind, String> {
    match layout.runtime {
        RuntimeChoice::Containerd => Ok(RuntimeKind::Containerd),
        RuntimeChoice::Crio => Ok(RuntimeKind::CriO),
        RuntimeChoice::Auto => {
            let run = &layout.run_dir;
            let found: Vec<RuntimeKind> = RuntimeKind::ALL
                .into_iter()
                .filter(|kind| socket::find_kind(*kind, run, run, &exists).is_some())
                .collect();
            match found[..] {
                [kind] => Ok(kind),
                _ => Err(format!(
                    "{} of CRI-O's and containerd's sockets found under {}: set nodeSetup.runtime",
                    if found.is_empty() { "neither" } else { "both" },
                    run.display()
                )),
            }
        }
    }
}

/// The files the setup wants on a node running `runtime`; `provider` is the credential
/// provider binary. CRIU's runc.conf is left to [`criu_config`]: the node may have its own.
pub fn desired(layout: &Layout, runtime: RuntimeKind, provider: &[u8]) -> Vec<NodeFile> {
    let registry = format!("localhost:{}", layout.registry_port);
    let mut files = match runtime {
        RuntimeKind::CriO => vec![
            file(
                layout.crio_drop_in_dir.join(DROP_IN_NAME),
                CRIO_DROP_IN,
                Some(Reader::Runtime),
            ),
            // CRI-O reads registries.conf.d when it starts (or on SIGHUP).
            file(
                layout.registries_drop_in_dir.join(DROP_IN_NAME),
                CRIO_REGISTRIES.replace(SHIPPED_REGISTRY, &registry),
                Some(Reader::Runtime),
            ),
        ],
        // containerd reads hosts.toml at every pull: no restart.
        RuntimeKind::Containerd => vec![file(
            layout
                .containerd_certs_dir
                .join(&registry)
                .join("hosts.toml"),
            hosts_toml(&registry),
            None,
        )],
    };
    if layout.credential_provider {
        files.push(NodeFile {
            mode: 0o755,
            ..file(layout.provider_bin_dir.join(PROVIDER_NAME), provider, None)
        });
        files.push(file(
            layout.provider_config.clone(),
            PROVIDER_CONFIG.replace(SHIPPED_REGISTRY, &registry),
            Some(Reader::Kubelet),
        ));
    }
    files
}

/// containerd's host configuration for the node-local registry: plain HTTP on loopback.
fn hosts_toml(registry: &str) -> String {
    format!(
        "# Written by the checkpointing chart's node setup: noded's node-local registry, plain \
         HTTP on the node's loopback.\nserver = \"http://{registry}\"\n\n[host.\"http://{registry}\"]\n  \
         capabilities = [\"pull\", \"resolve\"]\n"
    )
}

/// What to do with CRIU's runc.conf, given the node's file (`None`: there is none).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CriuConfig {
    /// None there: write deploy/node/criu-runc.conf.
    Write(NodeFile),
    /// The node's own file sets what migration needs.
    Sufficient,
    /// The node's own file lacks these options: kept, and reported for a person to add.
    Lacks(Vec<&'static str>),
}

/// The options deploy/node/criu-runc.conf sets, each needed by a migration.
const CRIU_OPTIONS: [&str; 2] = ["tcp-close", "skip-in-flight"];

pub fn criu_config(layout: &Layout, existing: Option<&str>) -> CriuConfig {
    let Some(text) = existing else {
        return CriuConfig::Write(file(layout.criu_config.clone(), CRIU_RUNC_CONF, None));
    };
    let lacks: Vec<&str> = CRIU_OPTIONS
        .into_iter()
        .filter(|o| !checkpointing::criu::conf::sets(text, o))
        .collect();
    if lacks.is_empty() {
        CriuConfig::Sufficient
    } else {
        CriuConfig::Lacks(lacks)
    }
}
