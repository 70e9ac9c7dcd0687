//! Command line: `kubectl checkpoint pod/<p>`, `… list`, `… restore <checkpoint> --as <pod>`,
//! `… migrate pod/<p>`, `… logs <checkpoint>`, `… drain <node>`,
//! `… warm-start deployment/<d> --from <checkpoint>`, `… doctor [--trial]`.

use std::ffi::OsString;
use std::path::PathBuf;

use checkpointing::crd::{MAX_TIMEOUT_SECONDS, MIN_TIMEOUT_SECONDS, RegistrySpec, SecretRef};
use clap::error::ErrorKind;
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

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
                      kubectl checkpoint logs <checkpoint>|pc/<name>|pm/<name> [OPTIONS]\n       \
                      kubectl checkpoint drain <node> [--dry-run] [--pod-selector <selector>] [OPTIONS]\n       \
                      kubectl checkpoint warm-start deployment/<name> --from <checkpoint>|--off [--replicas <n>] [OPTIONS]\n       \
                      kubectl checkpoint doctor [--trial [--namespace-for-trial <ns>] [--trial-image <image>]] [-o json] [OPTIONS]",
    about = "Checkpoint a pod's container, list checkpoints, restore one into a new pod, move a \
             pod to another node, print CRIU's log of a failed checkpoint, drain a node, start a \
             Deployment's pods from a checkpoint",
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
            compression: None,
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
    /// Cordon a node and evict its pods through the Eviction API, as `kubectl drain` does:
    /// the pods a CheckpointPolicy protects move (or are checkpointed) first
    #[command(long_about = DRAIN_ABOUT)]
    Drain(Drain),
    /// Start every pod of a Deployment from one checkpoint (the pod template's restore-from
    /// annotation), or stop doing so with --off
    WarmStart(WarmStart),
    /// Say per node what works and what still needs a human; with --trial, checkpoint a
    /// throw-away pod on one node and restore it on another
    Doctor(Doctor),
}

/// Check the install and every node.
#[derive(Args, Debug)]
pub struct Doctor {
    /// Namespace of the node daemons' Leases (Helm: <release>-node-leases; deploy/:
    /// checkpoint-node-leases). Default: wherever node daemons' Leases are found
    #[arg(long, value_name = "NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Also checkpoint a counter pod on one node, restore it on another and check that it
    /// counts on; everything it creates is deleted afterwards
    #[arg(long)]
    pub trial: bool,
    /// Namespace of the trial's pods and checkpoint (default: -n, else the context's)
    #[arg(long, value_name = "NAMESPACE", requires = "trial")]
    pub namespace_for_trial: Option<String>,
    /// Image of the trial's counter (it runs /bin/sh)
    #[arg(
        long,
        value_name = "IMAGE",
        default_value = "busybox",
        requires = "trial"
    )]
    pub trial_image: String,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

const DRAIN_ABOUT: &str = "\
Cordon a node and evict its pods through the Eviction API, as `kubectl drain` does: the pods a \
CheckpointPolicy protects (onEviction) move to another node or are checkpointed first, the \
others are evicted as usual. Each eviction is tried again every 5 seconds while it waits; the \
command ends when every pod is gone.

Pods of every namespace on the node are drained, except DaemonSet pods, mirror pods and \
finished pods. Unlike kubectl drain it takes no --force or --delete-emptydir-data: it is meant \
for nodes whose pods the product protects, where a bare pod moves rather than being lost and \
its emptyDir data travels with it. A pod no policy protects is evicted all the same, bare or \
not, and its emptyDirs are lost as with any eviction.

--dry-run evicts nothing and does not cordon: it asks the API server (a server-side dry run) and \
prints for each pod what an eviction would do: migrate, checkpoint, evict, wait (a \
PodDisruptionBudget allows no disruption now) or gone.";

/// Drain a node.
#[derive(Args, Debug)]
pub struct Drain {
    /// The node to drain (its pods of every namespace: -n is refused rather than ignored)
    #[arg(value_name = "NODE")]
    pub node: String,
    /// Change nothing: print what an eviction of each pod would do
    #[arg(long)]
    pub dry_run: bool,
    /// Seconds to wait for every pod to be gone before giving up
    #[arg(long, value_name = "SECONDS", default_value_t = 600,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Only the pods with these labels (a label selector, as in kubectl)
    #[arg(long, value_name = "SELECTOR")]
    pub pod_selector: Option<String>,
}

/// Point a Deployment's pod template at a checkpoint, or away from it.
#[derive(Args, Debug)]
pub struct WarmStart {
    /// The Deployment: deployment/<name> (also deployments/ or deploy/)
    #[arg(value_name = "DEPLOYMENT", value_parser = parse_deployment)]
    pub deployment: String,
    /// The ContainerCheckpoint or PodCheckpoint (Completed, in the Deployment's namespace)
    /// every new pod restores from
    #[arg(long, value_name = "CHECKPOINT", required_unless_present = "off")]
    pub from: Option<String>,
    /// Remove the annotation: new pods start afresh
    #[arg(long, conflicts_with = "from")]
    pub off: bool,
    /// Scale the Deployment to this many replicas too
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(0..))]
    pub replicas: Option<i32>,
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
                 --registry-secret go without a subcommand, or after migrate",
            ));
        }
        // Clap's `conflicts_with` does not reach a global flag from a subcommand's argument.
        if matches!(cli.command, Some(Command::Drain(_))) && cli.global.namespace.is_some() {
            return Err(Self::command().error(
                ErrorKind::ArgumentConflict,
                "drain takes the node's pods of every namespace: -n would not narrow it (use \
                 --pod-selector)",
            ));
        }
        Ok(cli)
    }
}

/// The name in `deployment/<d>`, `deployments/<d>` or `deploy/<d>`.
fn parse_deployment(target: &str) -> Result<String, String> {
    match target.split_once('/') {
        Some(("deployment" | "deployments" | "deploy", name))
            if !name.is_empty() && !name.contains('/') =>
        {
            Ok(name.to_owned())
        }
        _ => Err(format!(
            "{target:?} names no Deployment: use deployment/<name>"
        )),
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
    fn drain_flags() {
        let Some(Command::Drain(d)) = parse(&["drain", "node1"]).unwrap().command else {
            panic!("not drain");
        };
        assert_eq!(
            (d.node.as_str(), d.dry_run, d.timeout, d.pod_selector),
            ("node1", false, 600, None)
        );
        let cli = parse(&[
            "--context",
            "c",
            "drain",
            "node1",
            "--dry-run",
            "--timeout",
            "30",
            "--pod-selector",
            "app=web,tier!=db",
        ])
        .unwrap();
        let Some(Command::Drain(d)) = cli.command else {
            panic!("not drain");
        };
        assert!(d.dry_run);
        assert_eq!(d.timeout, 30);
        assert_eq!(d.pod_selector.as_deref(), Some("app=web,tier!=db"));
    }

    #[test]
    fn drain_usage_errors_exit_2() {
        for (args, kind) in [
            (&["drain"][..], ErrorKind::MissingRequiredArgument),
            (&["drain", "a", "b"], ErrorKind::UnknownArgument),
            (
                &["drain", "node1", "--timeout", "0"],
                ErrorKind::ValueValidation,
            ),
            (
                &["drain", "node1", "--timeout", "x"],
                ErrorKind::ValueValidation,
            ),
            // The drain takes every namespace's pods: a namespace would not narrow it.
            (&["drain", "node1", "-n", "ns"], ErrorKind::ArgumentConflict),
            (&["-n", "ns", "drain", "node1"], ErrorKind::ArgumentConflict),
            (&["pod/app", "drain", "node1"], ErrorKind::ArgumentConflict),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), kind, "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    fn warm_start(args: &[&str]) -> WarmStart {
        match parse(args).unwrap().command {
            Some(Command::WarmStart(w)) => w,
            other => panic!("not warm-start: {other:?}"),
        }
    }

    #[test]
    fn warm_start_flags() {
        for form in ["deployment/web", "deployments/web", "deploy/web"] {
            let w = warm_start(&["warm-start", form, "--from", "cp1"]);
            assert_eq!(w.deployment, "web", "{form}");
            assert_eq!(
                (w.from.as_deref(), w.off, w.replicas),
                (Some("cp1"), false, None)
            );
        }
        let w = warm_start(&[
            "-n",
            "ns",
            "warm-start",
            "deploy/web",
            "--from",
            "cp1",
            "--replicas",
            "3",
        ]);
        assert_eq!(w.replicas, Some(3));
        let w = warm_start(&["warm-start", "deploy/web", "--off", "--replicas", "0"]);
        assert_eq!((w.from, w.off, w.replicas), (None, true, Some(0)));
    }

    #[test]
    fn warm_start_usage_errors_exit_2() {
        for (args, kind) in [
            (
                &["warm-start", "deploy/web"][..],
                ErrorKind::MissingRequiredArgument,
            ),
            (
                &["warm-start", "deploy/web", "--from", "cp1", "--off"],
                ErrorKind::ArgumentConflict,
            ),
            (
                &["warm-start", "web", "--from", "cp1"],
                ErrorKind::ValueValidation,
            ),
            (
                &["warm-start", "statefulset/db", "--from", "cp1"],
                ErrorKind::ValueValidation,
            ),
            (
                &["warm-start", "deploy/", "--from", "cp1"],
                ErrorKind::ValueValidation,
            ),
            (
                &["warm-start", "deploy/a/b", "--from", "cp1"],
                ErrorKind::ValueValidation,
            ),
            (
                &["warm-start", "deploy/web", "--from", "cp1", "--replicas=-1"],
                ErrorKind::ValueValidation,
            ),
        ] {
            let err = parse(args).unwrap_err();
            assert_eq!(err.kind(), kind, "{args:?}: {err}");
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }

    #[test]
    fn a_pod_named_like_a_subcommand_is_reachable() {
        for name in [
            "list",
            "restore",
            "migrate",
            "logs",
            "drain",
            "warm-start",
            "doctor",
        ] {
            let cli = parse(&[&format!("pod/{name}")]).unwrap();
            assert_eq!(cli.create.pod.as_deref(), Some(name));
        }
    }

    fn doctor(args: &[&str]) -> Doctor {
        match parse(args).unwrap().command {
            Some(Command::Doctor(d)) => d,
            other => panic!("not doctor: {other:?}"),
        }
    }

    #[test]
    fn doctor_flags() {
        let d = doctor(&["doctor"]);
        assert_eq!(d.lease_namespace, None);
        assert!(!d.trial);
        assert_eq!(
            (d.namespace_for_trial, d.trial_image.as_str()),
            (None, "busybox")
        );
        assert_eq!(d.output, Output::Text);
        let d = doctor(&[
            "doctor",
            "--trial",
            "--namespace-for-trial",
            "t",
            "--trial-image",
            "reg.example/busybox:1",
            "--lease-namespace",
            "cp-node-leases",
            "-o",
            "json",
        ]);
        assert!(d.trial);
        assert_eq!(d.namespace_for_trial.as_deref(), Some("t"));
        assert_eq!(d.trial_image, "reg.example/busybox:1");
        assert_eq!(d.lease_namespace.as_deref(), Some("cp-node-leases"));
        assert_eq!(d.output, Output::Json);
        for args in [
            &["doctor", "--namespace-for-trial", "t"][..],
            &["doctor", "--trial-image", "x"],
            &["doctor", "-o", "yaml"],
            &["pod/app", "doctor"],
        ] {
            assert_eq!(parse(args).unwrap_err().exit_code(), 2, "{args:?}");
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
