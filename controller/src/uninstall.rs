//! `controller uninstall`: removes every checkpoint while the controller and noded still run, so
//! that nothing is left behind when the product goes (the chart's pre-delete hook; by hand before
//! `kubectl delete -k deploy/`). Deleting the requests and policies lets their Contents go by
//! owner, and noded's finalizer on each Content removes its archive, runtime image and pushed
//! copy before the Content goes: so the work is done when no object of ours is left.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use checkpointing::crd::{
    CheckpointPolicy, ContainerCheckpoint, ContainerCheckpointContent, PodCheckpoint, PodMigration,
};
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

/// Deletes every object of ours and waits until none is left, or fails after `timeout` naming
/// what is left.
pub async fn run(client: kube::Client, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut said = String::new();
    loop {
        let found = list(&client).await?;
        let plan = plan(&found);
        for object in &plan.delete {
            delete(&client, object).await?;
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
