//! `kubectl checkpoint`: checkpoint a pod's container, list checkpoints, restore one into a new
//! pod, move a pod to another node, print CRIU's log of a failed checkpoint, drain a node, start
//! a Deployment's pods from a checkpoint, say what each node still needs (`doctor`). The
//! choices are pure functions in the modules; this file, `logs`, `drain`, `warm_start` and
//! `doctor` (its shell and trial) talk to the API server.

mod api;
mod checkpoint;
mod cli;
mod doctor;
mod drain;
mod logs;
mod migrate;
mod name;
mod restore;
mod table;
mod warm_start;
mod watch;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, anyhow, bail};
use api::api;
use checkpointing::crd::{
    CheckpointPolicy, CheckpointState, ContainerCheckpoint, ContainerCheckpointSpec,
    ContainerCheckpointStatus, MigrationPhase, PodCheckpoint, PodMigration,
};
use checkpointing::names::RESTORE_FROM_ANNOTATION;
use checkpointing::restored::restored_pod;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::cli::{Cli, Command, Create, Global, Migrate, UsageError};
use crate::restore::Progress;
use crate::watch::updates;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::try_from_args(std::env::args_os()).unwrap_or_else(|err| err.exit());
    match run(cli).await {
        Ok(code) => code,
        Err(err) => {
            // `{:#}` prints the context chain on one line; API errors are their message only.
            eprintln!("error: {err:#}");
            if err.is::<UsageError>() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let (client, namespace) = connect(&cli.global).await?;
    match cli.command {
        None => create(client, &namespace, cli.create).await,
        Some(Command::List { all_namespaces }) => {
            list(client, (!all_namespaces).then_some(&*namespace)).await
        }
        Some(Command::Restore {
            checkpoint,
            new_pod,
            node,
        }) => restore(client, &namespace, &checkpoint, &new_pod, node.as_deref()).await,
        Some(Command::Migrate(args)) => migrate(client, &namespace, args).await,
        Some(Command::Logs { target }) => logs::run(client, &namespace, target).await,
        Some(Command::Drain(args)) => drain::run(client, args).await,
        Some(Command::WarmStart(args)) => warm_start::run(client, &namespace, args).await,
        Some(Command::Doctor(args)) => doctor::run(client, &namespace, args).await,
    }
}

/// A client for the chosen kubeconfig and context (kube's usual search without either), and the
/// namespace: `-n`, else the context's.
async fn connect(global: &Global) -> anyhow::Result<(Client, String)> {
    let config = if global.kubeconfig.is_none() && global.context.is_none() {
        Config::infer().await?
    } else {
        let kubeconfig = match &global.kubeconfig {
            Some(path) => Kubeconfig::read_from(path)?,
            None => Kubeconfig::read()?,
        };
        let options = KubeConfigOptions {
            context: global.context.clone(),
            ..KubeConfigOptions::default()
        };
        Config::from_custom_kubeconfig(kubeconfig, &options).await?
    };
    let namespace = global
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    // kube retries 429s by itself; a held eviction's 429 is an answer `drain` shows and acts
    // on (kubectl's own way), not a transient error to hide.
    let mut config = config;
    config.default_retry = false;
    Ok((Client::try_from(config)?, namespace))
}

async fn create(client: Client, ns: &str, args: Create) -> anyhow::Result<ExitCode> {
    let pod_name = args
        .pod
        .expect("clap requires the pod without a subcommand");
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get(&pod_name)
        .await
        .map_err(api)
        .with_context(|| format!("reading pod {ns}/{pod_name}"))?;
    let containers: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| &s.containers)
        .map(|c| &*c.name)
        .collect();
    let container =
        checkpoint::choose_container(&pod_name, &containers, args.container.as_deref())?;
    let name = args.name.unwrap_or_else(|| {
        checkpoint::default_name(&pod_name, &container, Timestamp::now().as_second() as u64)
    });
    let request = ContainerCheckpoint::new(
        &name,
        ContainerCheckpointSpec {
            pod_name,
            container,
            namespace: None,
            timeout_seconds: args.timeout_seconds,
            registry: args.registry.spec(),
            hold_source: false,
        },
    );
    let checkpoints = Api::<ContainerCheckpoint>::namespaced(client, ns);
    checkpoints
        .create(&PostParams::default(), &request)
        .await
        .map_err(api)
        .with_context(|| format!("creating ContainerCheckpoint {ns}/{name}"))?;
    println!("containercheckpoint/{name} created");
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }

    let started = Instant::now();
    let mut last = None;
    let mut updates = Box::pin(updates(checkpoints, &name));
    let status = loop {
        let cc: ContainerCheckpoint = updates
            .try_next()
            .await
            .with_context(|| format!("watching ContainerCheckpoint {ns}/{name}"))?
            .context("the watch ended")?;
        let status = cc.status.unwrap_or_default();
        let state = status.state.unwrap_or(CheckpointState::Pending);
        if last != Some(state) {
            println!("{name}: {state:?} ({}s)", started.elapsed().as_secs());
            last = Some(state);
        }
        if state.is_final() {
            break status;
        }
    };
    report(&name, status)
}

fn report(name: &str, status: ContainerCheckpointStatus) -> anyhow::Result<ExitCode> {
    let message = status.message.unwrap_or_default();
    if status.state != Some(CheckpointState::Completed) {
        eprintln!("checkpoint {name} Failed: {message}");
        return Ok(ExitCode::FAILURE);
    }
    let unknown = || "<none>".to_owned();
    println!("checkpoint {name} Completed");
    println!("  image: {}", status.image.unwrap_or_else(unknown));
    println!("  node:  {}", status.node_name.unwrap_or_else(unknown));
    println!(
        "  size:  {}",
        status
            .archive_size
            .map_or_else(unknown, |b| format!("{b} bytes"))
    );
    Ok(ExitCode::SUCCESS)
}

async fn list(client: Client, ns: Option<&str>) -> anyhow::Result<ExitCode> {
    let requests: Api<ContainerCheckpoint> = match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut items = requests
        .list(&ListParams::default())
        .await
        .map_err(api_or_missing_crd)
        .context("listing ContainerCheckpoints")?
        .items;
    items.sort_by_key(|cc| (cc.metadata.namespace.clone(), cc.metadata.name.clone()));
    let now = Timestamp::now();
    let rows: Vec<_> = items.iter().map(|cc| table::Row::new(cc, now)).collect();
    print!("{}", table::render(&rows, ns.is_none()));
    let policies: Api<CheckpointPolicy> = match ns {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    // A cluster without the policy kind (an older install) has none to show.
    let mut policies = match policies.list(&ListParams::default()).await {
        Ok(list) => list.items,
        Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
        Err(err) => return Err(api(err)).context("listing CheckpointPolicies"),
    };
    if !policies.is_empty() {
        policies.sort_by_key(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()));
        print!("\n{}", table::policies(&policies, now, ns.is_none()));
    }
    Ok(ExitCode::SUCCESS)
}

/// Listing a resource the cluster does not know answers a bare 404: say which.
fn api_or_missing_crd(err: kube::Error) -> anyhow::Error {
    match &err {
        kube::Error::Api(status) if status.code == 404 => anyhow!(
            "the cluster has no ContainerCheckpoint resource: is the checkpointing CRD installed?"
        ),
        _ => api(err),
    }
}

async fn restore(
    client: Client,
    ns: &str,
    checkpoint: &str,
    new_pod: &str,
    node: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let cc = Api::<ContainerCheckpoint>::namespaced(client.clone(), ns)
        .get(checkpoint)
        .await
        .map_err(api)
        .with_context(|| format!("reading ContainerCheckpoint {ns}/{checkpoint}"))?;
    let pods = Api::<Pod>::namespaced(client, ns);
    let source_name = &cc.spec.pod_name;
    let Some(source) = pods
        .get_opt(source_name)
        .await
        .map_err(api)
        .with_context(|| format!("reading pod {ns}/{source_name}"))?
    else {
        bail!(
            "pod {ns}/{source_name}, which {checkpoint} checkpointed, is gone, so there is no \
             spec to copy: create the new pod from a manifest annotated \
             {RESTORE_FROM_ANNOTATION}: {checkpoint} (like samples/restored-app-node2.yaml)"
        );
    };
    let pod = restored_pod(&source, new_pod, checkpoint, node);
    pods.create(&PostParams::default(), &pod)
        .await
        .map_err(api)
        .with_context(|| format!("creating pod {ns}/{new_pod}"))?;
    println!("pod/{new_pod} created");

    let started = Instant::now();
    let mut last = None;
    let mut updates = Box::pin(updates(pods, new_pod));
    loop {
        let pod: Pod = updates
            .try_next()
            .await
            .with_context(|| format!("watching pod {ns}/{new_pod}"))?
            .context("the watch ended")?;
        let elapsed = started.elapsed().as_secs();
        match restore::progress(&pod) {
            Progress::Running => {
                let on = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
                println!("pod/{new_pod} Running on {on} ({elapsed}s)");
                return Ok(ExitCode::SUCCESS);
            }
            Progress::Stuck(why) => {
                eprintln!("pod/{new_pod} does not start: {why}");
                return Ok(ExitCode::FAILURE);
            }
            Progress::Starting(what) => {
                if last.as_ref() != Some(&what) {
                    println!("pod/{new_pod}: {what} ({elapsed}s)");
                    last = Some(what);
                }
            }
        }
    }
}

async fn migrate(client: Client, ns: &str, args: Migrate) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let pod = args.pod;
    let name = args
        .name
        .unwrap_or_else(|| migrate::default_name(&pod, Timestamp::now().as_second() as u64));
    let registry = args.registry.spec();
    let request = migrate::request(
        &name,
        &pod,
        args.to,
        args.keep_source,
        args.timeout_seconds,
        registry,
    );
    let migrations = Api::<PodMigration>::namespaced(client.clone(), ns);
    migrations
        .create(&PostParams::default(), &request)
        .await
        .map_err(api)
        .with_context(|| format!("creating PodMigration {ns}/{name}"))?;
    println!("podmigration/{name} created");
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }

    let patience = migrate::patience(args.timeout_seconds);
    let deadline = tokio::time::Instant::from_std(started + patience);
    let checkpoints = Api::<PodCheckpoint>::namespaced(client, ns);
    let mut updates_of_migration = Box::pin(updates(migrations, &name));
    // The PodCheckpoint's archive sizes change without the migration changing: watched too,
    // once the migration's status names it.
    let mut watched_checkpoint: Option<String> = None;
    let mut updates_of_checkpoint: BoxStream<'static, anyhow::Result<PodCheckpoint>> =
        futures::stream::pending().boxed();
    let mut checkpoint: Option<PodCheckpoint> = None;
    let mut status = None;
    let mut last = None;
    loop {
        tokio::select! {
            pm = updates_of_migration.try_next() => {
                let pm: PodMigration = pm
                    .with_context(|| format!("watching PodMigration {ns}/{name}"))?
                    .context("the watch ended")?;
                status = Some(pm.status.unwrap_or_default());
            }
            pc = updates_of_checkpoint.try_next() => {
                let pc = pc
                    .with_context(|| {
                        let pc_name = watched_checkpoint.as_deref().unwrap_or_default();
                        format!("watching PodCheckpoint {ns}/{pc_name}")
                    })?
                    .context("the watch ended")?;
                checkpoint = Some(pc);
            }
            () = tokio::time::sleep_until(deadline) => {
                let phase = last.map_or(MigrationPhase::Pending, |p: migrate::Progress| p.phase);
                bail!(
                    "podmigration/{name} is still {phase:?} after {}s, past its timeout: see \
                     `kubectl describe podmigration -n {ns} {name}` (is the controller running?)",
                    patience.as_secs()
                );
            }
        }
        // Nothing to say before the migration itself has been seen.
        let Some(status) = &status else { continue };
        if let Some(pc_name) = &status.pod_checkpoint
            && watched_checkpoint.as_ref() != Some(pc_name)
        {
            updates_of_checkpoint = updates(checkpoints.clone(), pc_name).boxed();
            watched_checkpoint = Some(pc_name.clone());
            checkpoint = None;
        }
        let progress = migrate::Progress::new(status, checkpoint.as_ref());
        if last.as_ref() != Some(&progress) {
            let elapsed = started.elapsed().as_secs();
            eprintln!("{}", migrate::progress_line(&name, &progress, elapsed));
            last = Some(progress.clone());
        }
        match progress.phase {
            MigrationPhase::Succeeded => {
                println!("{}", migrate::succeeded_line(&name, status));
                return Ok(ExitCode::SUCCESS);
            }
            MigrationPhase::Failed => {
                let message = status.message.as_deref().unwrap_or_default();
                eprintln!("podmigration/{name} Failed: {message}");
                return Ok(ExitCode::FAILURE);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tests::refused;

    #[test]
    fn listing_an_unknown_resource_names_the_crd() {
        let err = api_or_missing_crd(refused(404, "the server could not find the resource"));
        assert!(
            err.to_string().contains("checkpointing CRD installed"),
            "{err}"
        );
        let err = api_or_missing_crd(refused(403, "forbidden"));
        assert_eq!(err.to_string(), "forbidden");
    }
}
