//! `noded setup`: the opt-in node setup the chart's node-setup DaemonSet runs (README.md, "Node
//! setup"). It writes the runtime's drop-ins, CRIU's runc.conf and the kubelet's credential
//! provider onto the node (seen at `--root`), records each file it wrote in a manifest, and
//! reports what still needs a person: a runtime or kubelet restart, a kubelet flag, an edit of
//! a file that is not its own. It never restarts anything and never edits a file it did not
//! write; `undo` removes exactly what the manifest lists.
//!
//! A subcommand of noded rather than its own binary: the image already ships `/noded`, and the
//! report it writes is read by noded's prerequisites ([`report`]), one type for both sides.

mod advice;
mod apply;
mod files;
mod host;
mod manifest;
pub mod report;
mod wait;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use checkpointing::daemon::{LogFormat, init_logging};
use clap::Parser;

use files::Layout;

#[derive(Parser, Debug)]
#[command(name = "noded setup", about = "Opt-in node setup: write, report, undo")]
pub struct Args {
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Plain)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Writes the node's files, records them and writes the report.
    Apply(Box<ApplyArgs>),
    /// Removes every file the manifest lists (and the manifest).
    Undo(RootArgs),
    /// Waits for SIGTERM: keeps the DaemonSet's pod running once its init container is done.
    Idle,
    /// Prints the node's `criu --version`, run under the node's root (a child of `apply`).
    #[command(hide = true)]
    NodeCriu {
        #[arg(long, default_value = "/host")]
        root: PathBuf,
    },
    /// Waits until every pod of a DaemonSet is ready (the undo DaemonSet, from a Helm hook).
    Wait(wait::Args),
}

#[derive(clap::Args, Debug)]
struct RootArgs {
    /// The node's `/` as mounted here: every node path is taken beneath it.
    #[arg(long, default_value = "/host")]
    root: PathBuf,
    /// noded's checkpoint directory on the node (`<kubelet root>/checkpoints`): the manifest
    /// and the report live in its `node-setup/`, where noded reads the report.
    #[arg(long, default_value = "/var/lib/kubelet/checkpoints")]
    checkpoint_dir: PathBuf,
}

impl RootArgs {
    fn state_dir(&self) -> PathBuf {
        self.checkpoint_dir.join(report::STATE_SUBDIR)
    }
}

#[derive(clap::Args, Debug)]
struct ApplyArgs {
    #[command(flatten)]
    root: RootArgs,
    #[command(flatten)]
    layout: Layout,
    /// The node's `/proc` as seen here (the pod shares the host's PID namespace).
    #[arg(long, default_value = "/proc")]
    proc: PathBuf,
    /// The credential provider binary in this image, copied onto the node.
    #[arg(
        long,
        default_value = "/usr/local/bin/checkpointing-credential-provider"
    )]
    provider_source: PathBuf,
}

/// A node path beneath the mounted root.
pub fn under(root: &Path, node_path: &Path) -> PathBuf {
    root.join(node_path.strip_prefix("/").unwrap_or(node_path))
}

/// Runs `noded setup ...` (`args` without the leading `setup`).
pub async fn main(args: impl IntoIterator<Item = String>) -> anyhow::Result<()> {
    let args = Args::parse_from(args);
    init_logging(args.log_format);
    match args.command {
        Command::Apply(a) => {
            let provider = if a.layout.credential_provider {
                std::fs::read(&a.provider_source).with_context(|| {
                    format!(
                        "reading the credential provider {}",
                        a.provider_source.display()
                    )
                })?
            } else {
                Vec::new()
            };
            let report = apply::run(
                &a.root.root,
                &a.root.state_dir(),
                &a.layout,
                &a.proc,
                provider,
            )?;
            report.log();
            Ok(())
        }
        Command::Undo(a) => {
            let removed = manifest::undo(&a.root, &a.state_dir())?;
            tracing::info!(removed = ?removed, "node setup undone");
            Ok(())
        }
        Command::Idle => {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            term.recv().await;
            Ok(())
        }
        Command::NodeCriu { root } => {
            // One line for the parent's report, without anyhow's backtrace.
            if let Err(e) = host::criu_version_in(&root) {
                eprintln!("{e:#}");
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Wait(a) => wait::run(a).await,
    }
}
