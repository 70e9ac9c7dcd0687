//! `kubectl checkpoint logs`: CRIU's log of a failed checkpoint, as its node's daemon kept it in
//! the ContainerCheckpointContent (`status.criuLog`), so no one needs the node. Whoever may read
//! the Content may read it. A PodCheckpoint or PodMigration prints each container's.

use std::process::ExitCode;

use anyhow::{Context as _, anyhow, bail};
use checkpointing::crd::{
    CheckpointState, ContainerCheckpointContent, ContainerCheckpointContentStatus, PodCheckpoint,
    PodMigration,
};
use k8s_openapi::serde::de::DeserializeOwned;
use kube::{Api, Client};

use crate::api::api as api_error;

/// What `logs` was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `cc/<name>`: one ContainerCheckpoint (its Content has the same name).
    Container(String),
    /// `pc/<name>`.
    Pod(String),
    /// `pm/<name>`: its PodCheckpoint's containers.
    Migration(String),
    /// A bare name: whichever of the three exists, in that order.
    Any(String),
}

/// `<kind>/<name>` with kubectl's names and short names of the three kinds, or `<name>`.
pub fn parse_target(target: &str) -> Result<Target, String> {
    let (kind, name) = target.split_once('/').unwrap_or(("", target));
    if name.is_empty() || name.contains('/') || (kind.is_empty() && name != target) {
        return Err(format!(
            "{target:?} names nothing: use <checkpoint>, pc/<name> or pm/<name>"
        ));
    }
    let name = name.to_owned();
    Ok(match kind {
        "" => Target::Any(name),
        "cc" | "containercheckpoint" | "containercheckpoints" => Target::Container(name),
        "pc" | "podcheckpoint" | "podcheckpoints" => Target::Pod(name),
        "pm" | "podmigration" | "podmigrations" => Target::Migration(name),
        other => {
            return Err(format!(
                "{other:?} keeps no CRIU log: use cc/<name>, pc/<name> or pm/<name>"
            ));
        }
    })
}

/// One ContainerCheckpoint whose log is asked for, and its Content if there is one.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub checkpoint: String,
    /// The container, for a PodCheckpoint's.
    pub container: Option<String>,
    pub content: Option<ContainerCheckpointContentStatus>,
}

/// What to print: the logs on stdout, a note on stderr for each checkpoint without one.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: Vec<String>,
}

/// The logs of `entries`, each under a header when there are several.
pub fn render(entries: &[Entry]) -> Output {
    let mut out = Output::default();
    for e in entries {
        let who = match &e.container {
            Some(c) => format!("containercheckpoint/{} (container {c})", e.checkpoint),
            None => format!("containercheckpoint/{}", e.checkpoint),
        };
        let Some(status) = &e.content else {
            out.stderr
                .push(format!("{who}: not on a node yet, so no CRIU log"));
            continue;
        };
        let Some(log) = status.criu_log.as_deref().filter(|l| !l.is_empty()) else {
            out.stderr.push(format!("{who}: {}", without_log(status)));
            continue;
        };
        if entries.len() > 1 {
            out.stdout.push_str(&format!("==> {who} <==\n"));
        }
        out.stdout.push_str(log);
        if !log.ends_with('\n') {
            out.stdout.push('\n');
        }
    }
    out
}

fn without_log(status: &ContainerCheckpointContentStatus) -> String {
    match status.state {
        Some(CheckpointState::Failed) => format!(
            "no CRIU log (the failure was not CRIU's): {}",
            status.message.as_deref().unwrap_or("no message")
        ),
        Some(state) => format!("{state:?}: CRIU's log is kept only for failed checkpoints"),
        None => "not started: no CRIU log".to_owned(),
    }
}

/// Prints the logs `target` names in namespace `ns`.
pub async fn run(client: Client, ns: &str, target: Target) -> anyhow::Result<ExitCode> {
    let apis = Apis {
        contents: Api::namespaced(client.clone(), ns),
        pods: Api::namespaced(client.clone(), ns),
        migrations: Api::namespaced(client, ns),
        ns,
    };
    let out = render(&apis.entries(target).await?);
    print!("{}", out.stdout);
    for note in out.stderr {
        eprintln!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}

struct Apis<'a> {
    contents: Api<ContainerCheckpointContent>,
    pods: Api<PodCheckpoint>,
    migrations: Api<PodMigration>,
    ns: &'a str,
}

impl Apis<'_> {
    async fn entries(&self, target: Target) -> anyhow::Result<Vec<Entry>> {
        match target {
            Target::Container(name) => {
                let content = get(&self.contents, self.ns, &name, KIND_CONTENT).await?;
                Ok(vec![entry(name, None, content.status)])
            }
            Target::Pod(name) => {
                let pc = get(&self.pods, self.ns, &name, KIND_POD).await?;
                self.of_pod(pc).await
            }
            Target::Migration(name) => {
                let pm = get(&self.migrations, self.ns, &name, KIND_MIGRATION).await?;
                self.of_migration(pm).await
            }
            Target::Any(name) => {
                if let Some(content) = opt(&self.contents, self.ns, &name, KIND_CONTENT).await? {
                    Ok(vec![entry(name, None, content.status)])
                } else if let Some(pc) = opt(&self.pods, self.ns, &name, KIND_POD).await? {
                    self.of_pod(pc).await
                } else if let Some(pm) =
                    opt(&self.migrations, self.ns, &name, KIND_MIGRATION).await?
                {
                    self.of_migration(pm).await
                } else {
                    bail!(
                        "no {KIND_CONTENT}, {KIND_POD} or {KIND_MIGRATION} {}/{name} (a \
                         ContainerCheckpoint refused before it reached a node has no CRIU log: \
                         see its status.message)",
                        self.ns
                    )
                }
            }
        }
    }

    /// Each container's, as the PodCheckpoint's status lists them.
    async fn of_pod(&self, pc: PodCheckpoint) -> anyhow::Result<Vec<Entry>> {
        let pc_name = pc.metadata.name.unwrap_or_default();
        let containers = pc.status.map(|s| s.containers).unwrap_or_default();
        if containers.is_empty() {
            bail!("podcheckpoint/{pc_name} has no container checkpoints yet: no CRIU log");
        }
        let mut entries = Vec::new();
        for c in containers {
            let name = c.container_checkpoint;
            let content = opt(&self.contents, self.ns, &name, KIND_CONTENT).await?;
            entries.push(Entry {
                checkpoint: name,
                container: Some(c.name),
                content: content.map(|c| c.status.unwrap_or_default()),
            });
        }
        Ok(entries)
    }

    /// Its PodCheckpoint's.
    async fn of_migration(&self, pm: PodMigration) -> anyhow::Result<Vec<Entry>> {
        let pm_name = pm.metadata.name.unwrap_or_default();
        let Some(pc_name) = pm.status.and_then(|s| s.pod_checkpoint) else {
            bail!("podmigration/{pm_name} has not checkpointed its pod yet: no CRIU log");
        };
        let pc = get(&self.pods, self.ns, &pc_name, KIND_POD).await?;
        self.of_pod(pc).await
    }
}

const KIND_CONTENT: &str = "ContainerCheckpointContent";
const KIND_POD: &str = "PodCheckpoint";
const KIND_MIGRATION: &str = "PodMigration";

fn entry(
    checkpoint: String,
    container: Option<String>,
    status: Option<ContainerCheckpointContentStatus>,
) -> Entry {
    Entry {
        checkpoint,
        container,
        content: Some(status.unwrap_or_default()),
    }
}

async fn get<K>(api: &Api<K>, ns: &str, name: &str, kind: &str) -> anyhow::Result<K>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    opt(api, ns, name, kind)
        .await?
        .ok_or_else(|| anyhow!("{kind} {ns}/{name} not found"))
}

/// `None` when there is no such object (any other refusal is an error).
async fn opt<K>(api: &Api<K>, ns: &str, name: &str, kind: &str) -> anyhow::Result<Option<K>>
where
    K: Clone + DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(api_error)
        .with_context(|| format!("reading {kind} {ns}/{name}"))
}

#[cfg(test)]
mod tests;
