//! `controller uninstall`: removes every checkpoint while the controller and noded still run, so
//! that nothing is left behind when the product goes (the chart's pre-delete hook; by hand before
//! `kubectl delete -k deploy/`). Deleting the requests and policies lets their Contents go by
//! owner, and noded's finalizer on each Content removes its archive, runtime image and pushed
//! copy before the Content goes: so the work is done when no object of ours is left. Then, with
//! `--node-daemon`, noded's DaemonSet goes and is waited for while everything it needs is still
//! there: each node daemon takes its node's labels and its empty image layout with it, which it
//! could not once its RBAC were gone (Helm deletes the rest at once).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use checkpointing::crd::{
    CheckpointPolicy, ContainerCheckpoint, ContainerCheckpointContent, PodCheckpoint, PodMigration,
};
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams};
use kube::core::ApiResource;

use crate::kube_error::cause;

/// How often the objects are listed again while waiting.
const POLL: Duration = Duration::from_secs(2);

/// The kinds uninstall removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Ours {
    CheckpointPolicy,
    PodMigration,
    PodCheckpoint,
    ContainerCheckpoint,
    /// Never deleted here (its owner's deletion removes it; no delete right): only waited for.
    ContainerCheckpointContent,
}

impl Ours {
    /// The kinds deleted, makers first (a policy makes migrations and pod checkpoints, those
    /// make ContainerCheckpoints), so that few new objects appear behind the sweep.
    pub const DELETED: [Ours; 4] = [
        Ours::CheckpointPolicy,
        Ours::PodMigration,
        Ours::PodCheckpoint,
        Ours::ContainerCheckpoint,
    ];

    fn resource(self) -> ApiResource {
        match self {
            Ours::CheckpointPolicy => ApiResource::erase::<CheckpointPolicy>(&()),
            Ours::PodMigration => ApiResource::erase::<PodMigration>(&()),
            Ours::PodCheckpoint => ApiResource::erase::<PodCheckpoint>(&()),
            Ours::ContainerCheckpoint => ApiResource::erase::<ContainerCheckpoint>(&()),
            Ours::ContainerCheckpointContent => {
                ApiResource::erase::<ContainerCheckpointContent>(&())
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            Ours::CheckpointPolicy => "CheckpointPolicy",
            Ours::PodMigration => "PodMigration",
            Ours::PodCheckpoint => "PodCheckpoint",
            Ours::ContainerCheckpoint => "ContainerCheckpoint",
            Ours::ContainerCheckpointContent => "ContainerCheckpointContent",
        }
    }
}

/// One object of ours as listed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Found {
    pub kind: Ours,
    pub namespace: String,
    pub name: String,
    /// It has a deletion timestamp: deleting it again changes nothing.
    pub deleting: bool,
}

/// What one round does, from what it listed.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Objects to delete now.
    pub delete: Vec<&'a Found>,
    /// Everything still there; uninstall is done when it is empty.
    pub left: Vec<&'a Found>,
}

pub fn plan(found: &[Found]) -> Plan<'_> {
    Plan {
        delete: found
            .iter()
            .filter(|f| !f.deleting && f.kind != Ours::ContainerCheckpointContent)
            .collect(),
        left: found.iter().collect(),
    }
}

/// One progress line: how many of each kind are left.
pub fn progress(left: &[&Found]) -> String {
    let mut counts: Vec<(Ours, usize)> = Vec::new();
    for found in left {
        match counts.iter_mut().find(|(kind, _)| *kind == found.kind) {
            Some((_, n)) => *n += 1,
            None => counts.push((found.kind, 1)),
        }
    }
    counts.sort();
    let parts: Vec<String> = counts
        .iter()
        .map(|(kind, n)| format!("{n} {}", kind.name()))
        .collect();
    format!("waiting for {}", parts.join(", "))
}

/// The timeout's message: every object left by name, and where to look.
pub fn leftover(left: &[&Found], timeout: Duration) -> String {
    let mut text = format!(
        "after {} s, {} object(s) of ours are left:",
        timeout.as_secs(),
        left.len()
    );
    for found in left {
        let _ = write!(
            text,
            "\n  {} {}/{}{}",
            found.kind.name(),
            found.namespace,
            found.name,
            if found.deleting { " (deleting)" } else { "" }
        );
    }
    // A Content waits for its node's noded to remove the archive, image and pushed copy.
    text.push_str(
        "\nsee `kubectl get ccc -A` (a Content's status and events say what noded is waiting \
         for) and noded's logs on its node; run `controller uninstall` again to go on waiting",
    );
    text
}

/// noded's DaemonSet, `NAMESPACE/NAME` (`--node-daemon`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeDaemon {
    pub namespace: String,
    pub name: String,
}

impl std::str::FromStr for NodeDaemon {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.split_once('/') {
            Some((namespace, name))
                if !namespace.is_empty() && !name.is_empty() && !name.contains('/') =>
            {
                Ok(Self {
                    namespace: namespace.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => Err(format!(
                "{value:?}: give NAMESPACE/NAME of noded's DaemonSet"
            )),
        }
    }
}

/// Deletes every object of ours and waits until none is left, then stops the node daemons
/// (`node_daemon`), or fails after `timeout` naming what is left.
pub async fn run(
    client: kube::Client,
    timeout: Duration,
    node_daemon: Option<&NodeDaemon>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    remove_checkpoints(&client, deadline, timeout).await?;
    match node_daemon {
        Some(daemon) => stop_node_daemons(client, daemon, deadline, timeout).await,
        None => Ok(()),
    }
}

/// Deletes noded's DaemonSet, its pods first (foreground), and waits until it is gone.
async fn stop_node_daemons(
    client: kube::Client,
    daemon: &NodeDaemon,
    deadline: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let NodeDaemon { namespace, name } = daemon;
    let api: Api<DaemonSet> = Api::namespaced(client, namespace);
    match api.delete(name, &DeleteParams::foreground()).await {
        Ok(_) => println!("deleting DaemonSet {namespace}/{name} and its node daemons"),
        Err(kube::Error::Api(status)) if status.code == 404 => return Ok(()),
        Err(error) => {
            return Err(anyhow::anyhow!(cause(&error)))
                .with_context(|| format!("deleting DaemonSet {namespace}/{name}"));
        }
    }
    loop {
        let left = api
            .get_opt(name)
            .await
            .map_err(|e| anyhow::anyhow!(cause(&e)))
            .with_context(|| format!("reading DaemonSet {namespace}/{name}"))?;
        if left.is_none() {
            println!("the node daemons stopped");
            return Ok(());
        }
        if Instant::now() >= deadline {
            anyhow::bail!(
                "after {} s, DaemonSet {namespace}/{name} still waits for its pods: see `kubectl \
                 -n {namespace} get pods` and their logs",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Deletes every checkpoint object and waits until none is left.
async fn remove_checkpoints(
    client: &kube::Client,
    deadline: Instant,
    timeout: Duration,
) -> anyhow::Result<()> {
    let mut said = String::new();
    loop {
        let found = list(client).await?;
        let plan = plan(&found);
        for object in &plan.delete {
            delete(client, object).await?;
            println!(
                "deleted {} {}/{}",
                object.kind.name(),
                object.namespace,
                object.name
            );
        }
        if plan.left.is_empty() {
            println!("no checkpoint object is left");
            return Ok(());
        }
        let line = progress(&plan.left);
        if line != said {
            println!("{line}");
            said = line;
        }
        if Instant::now() >= deadline {
            anyhow::bail!(leftover(&plan.left, timeout));
        }
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Every object of ours in all namespaces, by metadata. A kind whose CRD is gone has none.
async fn list(client: &kube::Client) -> anyhow::Result<Vec<Found>> {
    let mut found = Vec::new();
    for kind in Ours::DELETED
        .into_iter()
        .chain([Ours::ContainerCheckpointContent])
    {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource());
        let items = match api.list_metadata(&ListParams::default()).await {
            Ok(list) => list.items,
            Err(kube::Error::Api(status)) if status.code == 404 => Vec::new(),
            Err(error) => anyhow::bail!("listing the {}s: {}", kind.name(), cause(&error)),
        };
        found.extend(items.into_iter().map(|item| Found {
            kind,
            namespace: item.metadata.namespace.unwrap_or_default(),
            name: item.metadata.name.unwrap_or_default(),
            deleting: item.metadata.deletion_timestamp.is_some(),
        }));
    }
    Ok(found)
}

/// Deletes one object; one already gone is fine.
async fn delete(client: &kube::Client, object: &Found) -> anyhow::Result<()> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &object.namespace, &object.kind.resource());
    match api.delete(&object.name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(anyhow::anyhow!(cause(&error))).with_context(|| {
            format!(
                "deleting {} {}/{}",
                object.kind.name(),
                object.namespace,
                object.name
            )
        }),
    }
}

#[cfg(test)]
mod tests;
