//! Command line: `kubectl checkpoint pod/<p>`, `… list`, `… restore <checkpoint> --as <pod>`,
//! `… migrate pod/<p>`, `… logs <checkpoint>`.

use std::ffi::OsString;
use std::path::PathBuf;

use checkpointing::crd::{MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS, RegistrySpec, SecretRef};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand};

/// A mistake in the command line found only after asking the cluster (exit status 2, like
/// clap's).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

#[derive(Parser, Debug)]
#[command(
    name = "kubectl-checkpoint",
    bin_name = "kubectl checkpoint",
    version,
    override_usage = "kubectl checkpoint pod/<pod> [-c <container>] [OPTIONS]\n       \
                      kubectl checkpoint list [-A] [OPTIONS]\n       \
                      kubectl checkpoint restore <checkpoint> --as <pod> [--node <node>] [OPTIONS]\n       \
                      kubectl checkpoint migrate pod/<pod> [--to <node>] [--keep-source] [OPTIONS]\n       \
                      kubectl checkpoint logs <checkpoint>|pc/<name>|pm/<name> [OPTIONS]",
    about = "Checkpoint a pod's container, list checkpoints, restore one into a new pod, move a \
             pod to another node, print CRIU's log of a failed checkpoint",
    // `kubectl checkpoint pod/<p>` creates; `list`, `restore` and `migrate` are subcommands (a
    // pod named like one is `pod/list`).
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(flatten)]
    pub create: Create,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Args, Debug)]
pub struct Global {
    /// Kubeconfig file (default: $KUBECONFIG, ~/.kube/config or in-cluster)
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: its current context)
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Namespace (default: the context's)
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
}

/// Checkpoint one container of a pod.
#[derive(Args, Debug)]
pub struct Create {
    /// The pod: pod/<name>, pods/<name> or <name>
    #[arg(value_name = "POD", value_parser = parse_target, required = true)]
    pub pod: Option<String>,
    /// Container to checkpoint (default: the pod's only one)
    #[arg(short, long)]
    pub container: Option<String>,
    /// Name of the ContainerCheckpoint (default: <pod>-<container>-<unix seconds>)
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds the runtime may take (default: the node's)
    #[arg(long, value_parser = clap::value_parser!(i64).range(MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<i64>,
    /// Return once the request is created
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub registry: Registry,
}

/// Where the checkpoint images go (default: the cluster's).
#[derive(Args, Debug, Default)]
pub struct Registry {
    /// Push the checkpoint images to this repository, HOST[:PORT]/REPOSITORY
    #[arg(long = "registry", value_name = "REPOSITORY")]
    pub repository: Option<String>,
    /// kubernetes.io/dockerconfigjson Secret with the registry's credentials
    #[arg(long = "registry-secret", value_name = "SECRET")]
    pub secret: Option<String>,
}

impl Registry {
    /// `spec.registry`, or `None` when neither flag is given.
    pub fn spec(&self) -> Option<RegistrySpec> {
        if self.repository.is_none() && self.secret.is_none() {
            return None;
        }
        Some(RegistrySpec {
            repository: self.repository.clone(),
            secret_ref: self.secret.clone().map(|name| SecretRef { name }),
        })
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// List checkpoints
    List {
        /// In every namespace
        #[arg(short = 'A', long, conflicts_with = "namespace")]
        all_namespaces: bool,
    },
    /// Start a new pod that resumes a checkpointed container
    Restore {
        /// The ContainerCheckpoint to restore
        checkpoint: String,
        /// Name of the new pod
        #[arg(long = "as", value_name = "POD")]
        new_pod: String,
        /// Node to run it on (default: wherever the scheduler puts it)
        #[arg(long)]
        node: Option<String>,
    },
    /// Move a running pod to another node: checkpoint its containers, run it there from them
    Migrate(Migrate),
    /// Print CRIU's log of a failed checkpoint (each container's for a PodCheckpoint or
    /// PodMigration)
    Logs {
        /// <checkpoint> (cc/<name>), pc/<name> or pm/<name>
        #[arg(value_name = "CHECKPOINT", value_parser = crate::logs::parse_target)]
        target: crate::logs::Target,
    },
}

/// Move a pod through a PodMigration.
#[derive(Args, Debug)]
pub struct Migrate {
    /// The pod: pod/<name>, pods/<name> or <name>
    #[arg(value_name = "POD", value_parser = parse_target)]
    pub pod: String,
    /// Node to move it to (default: another one the scheduler finds fitting)
    #[arg(long, value_name = "NODE")]
    pub to: Option<String>,
    /// Name of the PodMigration (default: <pod>-migration-<unix seconds>)
    #[arg(long)]
    pub name: Option<String>,
    /// Leave the pod running beside its copy (bare pods only)
    #[arg(long)]
    pub keep_source: bool,
    /// Seconds the whole migration may take (default: 600)
    #[arg(long, value_parser = clap::value_parser!(i64).range(MIN_TIMEOUT_SECONDS..=MAX_TIMEOUT_SECONDS))]
    pub timeout_seconds: Option<i64>,
    /// Return once the request is created
    #[arg(long)]
    pub no_wait: bool,
    #[command(flatten)]
    pub registry: Registry,
}

impl Cli {
    /// Parses `args` (the program name first), refusing the create arguments beside a
    /// subcommand: clap's own rule for that (`args_conflicts_with_subcommands`) also refuses the
    /// global flags before one.
    pub fn try_from_args(
        args: impl IntoIterator<Item = impl Into<OsString> + Clone>,
    ) -> Result<Self, clap::Error> {
        let cli = Self::try_parse_from(args)?;
        let c = &cli.create;
        let create_args = c.pod.is_some()
            || c.container.is_some()
            || c.name.is_some()
            || c.timeout_seconds.is_some()
            || c.no_wait
            || c.registry.spec().is_some();
        if cli.command.is_some() && create_args {
            return Err(Self::command().error(
                ErrorKind::ArgumentConflict,
                "a pod, -c, --name, --timeout-seconds, --no-wait, --registry and \
                 --registry-secret go without list, restore or logs, and after migrate",
            ));
        }
        Ok(cli)
    }
}

/// The pod name in `pod/<p>`, `pods/<p>` (also kubectl's `po/<p>`) or `<p>`.
fn parse_target(target: &str) -> Result<String, String> {
    let name = match target.split_once('/') {
        None => target,
        Some(("pod" | "pods" | "po", name)) => name,
        Some((kind, _)) => {
            return Err(format!(
                "only pods have containers to checkpoint, not {kind:?}: use pod/<name>"
            ));
        }
    };
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "{target:?} names no pod: use pod/<name>, pods/<name> or <name>"
        ));
    }
    Ok(name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_from_args(std::iter::once("kubectl-checkpoint").chain(args.iter().copied()))
    }

    #[test]
    fn every_pod_form_names_the_pod() {
        for form in ["pod/app", "pods/app", "po/app", "app"] {
            let cli = parse(&[form]).unwrap();
            assert_eq!(cli.create.pod.as_deref(), Some("app"), "{form}");
            assert!(cli.command.is_none());
        }
    }

    #[test]
    fn other_kinds_and_empty_names_are_refused() {
        for bad in ["deploy/app", "pod/", "pod/a/b", "/app", ""] {
            let err = parse(&[bad]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::ValueValidation, "{bad}");
            assert_eq!(err.exit_code(), 2);
        }
    }

    #[test]
    fn create_flags() {
        let cli = parse(&[
            "pod/app",
            "-c",
            "web",
            "-n",
            "prod",
            "--name",
            "cp1",
            "--timeout-seconds",
            "30",
            "--no-wait",
            "--kubeconfig",
            "/k",
            "--context",
            "ctx",
        ])
        .unwrap();
        assert_eq!(cli.create.container.as_deref(), Some("web"));
        assert_eq!(cli.create.name.as_deref(), Some("cp1"));
        assert_eq!(cli.create.timeout_seconds, Some(30));
        assert!(cli.create.no_wait);
        assert_eq!(cli.global.namespace.as_deref(), Some("prod"));
        assert_eq!(cli.global.kubeconfig, Some(PathBuf::from("/k")));
        assert_eq!(cli.global.context.as_deref(), Some("ctx"));
    }

    #[test]
    fn usage_errors_exit_2() {
        for args in [
            &[][..],
            &["pod/app", "--timeout-seconds", "0"],
            &["pod/app", "--timeout-seconds", "3601"],
            &["pod/a", "pod/b"],
            &["list", "-n", "x", "-A"],
            &["list", "pod/app"],
            &["pod/app", "list"],
            &["-c", "app", "list"],
            &["--no-wait", "restore", "cp1", "--as", "x"],
            &["restore", "cp1"],
            &["pod/app", "--as", "x"],
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn list_takes_a_namespace_or_all() {
        let cli = parse(&["list", "-A"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::List {
                all_namespaces: true
            })
        ));
        let cli = parse(&["-n", "x", "--kubeconfig", "/k", "list"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("x"));
        assert!(matches!(
            cli.command,
            Some(Command::List {
                all_namespaces: false
            })
        ));
        let cli = parse(&["list", "--namespace", "y"]).unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("y"));
    }

    #[test]
    fn restore_flags() {
        let cli = parse(&[
            "--context",
            "c",
            "restore",
            "cp1",
            "--as",
            "new",
            "-n",
            "ns",
            "--node",
            "node2",
        ])
        .unwrap();
        let Some(Command::Restore {
            checkpoint,
            new_pod,
            node,
        }) = cli.command
        else {
            panic!("not restore: {:?}", cli.command)
        };
        assert_eq!(
            (checkpoint.as_str(), new_pod.as_str(), node.as_deref()),
            ("cp1", "new", Some("node2"))
        );
        assert_eq!(cli.global.namespace.as_deref(), Some("ns"));
    }

    fn migrate(args: &[&str]) -> Migrate {
        match parse(args).unwrap().command {
            Some(Command::Migrate(m)) => m,
            other => panic!("not migrate: {other:?}"),
        }
    }

    #[test]
    fn migrate_takes_every_pod_form() {
        for form in ["pod/app", "pods/app", "po/app", "app"] {
            let m = migrate(&["migrate", form]);
            assert_eq!(m.pod, "app", "{form}");
            assert_eq!(
                (m.to, m.name, m.keep_source, m.timeout_seconds, m.no_wait),
                (None, None, false, None, false),
                "{form}"
            );
        }
    }

    #[test]
    fn migrate_flags() {
        let cli = parse(&[
            "--context",
            "c",
            "migrate",
            "pod/app",
            "--to",
            "node2",
            "--name",
            "move-app",
            "--keep-source",
            "--timeout-seconds",
            "3600",
            "--no-wait",
            "-n",
            "ns",
        ])
        .unwrap();
        assert_eq!(cli.global.namespace.as_deref(), Some("ns"));
        assert_eq!(cli.global.context.as_deref(), Some("c"));
        let Some(Command::Migrate(m)) = cli.command else {
            panic!("not migrate: {:?}", cli.command)
        };
        assert_eq!(
            (m.pod.as_str(), m.to.as_deref(), m.name.as_deref()),
            ("app", Some("node2"), Some("move-app"))
        );
        assert!(m.keep_source && m.no_wait);
        assert_eq!(m.timeout_seconds, Some(3600));
        assert_eq!(
            migrate(&["migrate", "app", "--timeout-seconds", "1"]).timeout_seconds,
            Some(1)
        );
    }

    #[test]
    fn migrate_usage_errors_exit_2() {
        for (args, kind) in [
            (&["migrate"][..], ErrorKind::MissingRequiredArgument),
            (&["migrate", "deploy/app"], ErrorKind::ValueValidation),
            (&["migrate", "pod/"], ErrorKind::ValueValidation),
            (&["migrate", "pod/a/b"], ErrorKind::ValueValidation),
            (
                &["migrate", "app", "--timeout-seconds", "0"],
                ErrorKind::ValueValidation,
            ),
            (
                &["migrate", "app", "--timeout-seconds", "3601"],
                ErrorKind::ValueValidation,
            ),
            (&["migrate", "app", "--to"], ErrorKind::InvalidValue),
            (&["migrate", "a", "b"], ErrorKind::UnknownArgument),
            (&["migrate", "app", "-c", "x"], ErrorKind::UnknownArgument),
            (
                &["--name", "x", "migrate", "app"],
                ErrorKind::ArgumentConflict,
            ),
            (&["pod/app", "migrate", "app"], ErrorKind::ArgumentConflict),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), kind, "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn logs_take_one_target() {
        let Some(Command::Logs { target }) = parse(&["logs", "pc/p1", "-n", "ns"]).unwrap().command
        else {
            panic!("not logs");
        };
        assert_eq!(target, crate::logs::Target::Pod("p1".into()));
        for args in [
            &["logs"][..],
            &["logs", "a", "b"],
            &["logs", "pod/x"],
            &["pod/a", "logs", "x"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
        }
    }

    #[test]
    fn a_pod_named_like_a_subcommand_is_reachable() {
        for name in ["list", "restore", "migrate", "logs"] {
            let cli = parse(&[&format!("pod/{name}")]).unwrap();
            assert_eq!(cli.create.pod.as_deref(), Some(name));
        }
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn registry_flags_become_the_requests_registry() {
        let cli = parse(&["pod/app", "--registry", "reg.example:5443/team/ckpt"]).unwrap();
        let spec = cli.create.registry.spec().unwrap();
        assert_eq!(
            spec.repository.as_deref(),
            Some("reg.example:5443/team/ckpt")
        );
        assert_eq!(spec.secret_ref, None);

        let cli = parse(&["migrate", "pod/app", "--registry-secret", "creds"]).unwrap();
        let Some(Command::Migrate(m)) = cli.command else {
            panic!("migrate parsed as {:?}", cli.command);
        };
        assert_eq!(m.registry.spec().unwrap().secret_ref.unwrap().name, "creds");

        assert!(
            parse(&["pod/app"])
                .unwrap()
                .create
                .registry
                .spec()
                .is_none()
        );
        assert!(parse(&["--registry", "reg.example/x", "list"]).is_err());
    }
}
