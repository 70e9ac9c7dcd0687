//! `kubectl checkpoint drain <node>`: cordon the node and evict its pods through the Eviction
//! API, as `kubectl drain` does, so the eviction webhook moves (or checkpoints) the pods a
//! CheckpointPolicy protects first. `--dry-run` only asks (a server-side dry run, which starts
//! nothing) and prints what each eviction would do.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use checkpointing::crd::{MigrationPhase, PodMigration};
use futures::future::join_all;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::Status;
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::api::api;
use crate::cli::Drain;
use crate::table::columns;

/// Between two evictions of a pod that waits: kubectl drain's pace, which the webhook's
/// messages assume.
const RETRY: Duration = Duration::from_secs(5);
/// Between two looks at an evicted pod that is still stopping.
const POLL: Duration = Duration::from_secs(2);

/// The kubelet's annotation on a mirror pod (the API's copy of a static pod): evicting it
/// does nothing.
const MIRROR_ANNOTATION: &str = "kubernetes.io/config.mirror";

/// What an eviction of a pod does (or would do).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum What {
    /// A PodMigration moves it; the eviction waits.
    Migrate,
    /// A PodCheckpoint is taken first; the eviction waits.
    Checkpoint,
    /// Allowed: evicted as any pod.
    Evict,
    /// Held, by a PodDisruptionBudget or anything else that answers 429.
    Wait,
    /// 404: gone already (a StatefulSet pod that left the node keeps its name elsewhere).
    Gone,
    /// Refused for good (403, 500, …): waiting does not help.
    Refused,
}

impl What {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Migrate => "migrate",
            Self::Checkpoint => "checkpoint",
            Self::Evict => "evict",
            Self::Wait => "wait",
            Self::Gone => "gone",
            Self::Refused => "refused",
        }
    }
}

/// What the answer to an eviction means: `refusal` is the code and message of a refused one,
/// `None` an allowed one.
pub fn classify(refusal: Option<(u16, &str)>) -> What {
    match refusal {
        None => What::Evict,
        Some((404, _)) => What::Gone,
        Some((429, message)) => first_named(message).map_or(What::Wait, |(what, _)| what),
        Some(_) => What::Refused,
    }
}

/// The first thing `message` names that says what holds the eviction, and the quoted name
/// after it. The first, because the webhook names what it does before any reason it quotes (a
/// failed migration's reason may name anything). The API server's own budget refusal says
/// "disruption budget".
fn first_named(message: &str) -> Option<(What, Option<&str>)> {
    [
        ("PodMigration", What::Migrate),
        ("PodCheckpoint", What::Checkpoint),
        ("PodDisruptionBudget", What::Wait),
        ("disruption budget", What::Wait),
    ]
    .into_iter()
    .filter_map(|(word, what)| Some((message.find(word)?, word, what)))
    .min_by_key(|(at, _, _)| *at)
    .map(|(at, word, what)| {
        let name = message[at + word.len()..]
            .strip_prefix(" \"")
            .and_then(|rest| rest.split_once('"'))
            .map(|(name, _)| name);
        (what, name)
    })
}

/// Whether a drain evicts `pod`, as kubectl drain chooses: not a DaemonSet's (its controller
/// ignores the cordon and puts it back), not a mirror pod, not one that has finished.
pub fn evicts(pod: &Pod) -> bool {
    let daemon = pod
        .owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && o.kind == "DaemonSet");
    let mirror = pod.annotations().contains_key(MIRROR_ANNOTATION);
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let finished = matches!(phase, Some("Succeeded" | "Failed"));
    !(daemon || mirror || finished)
}

/// The server's message with the causes it gives (the API server's budget refusal names the
/// budget there).
pub fn said(status: &Status) -> String {
    let causes: Vec<&str> = status
        .details
        .iter()
        .flat_map(|d| &d.causes)
        .map(|c| c.message.as_str())
        .filter(|m| !m.is_empty())
        .collect();
    if causes.is_empty() {
        status.message.clone()
    } else {
        format!("{} ({})", status.message, causes.join("; "))
    }
}

/// The dry run's table: one row (namespace, pod, what, message) per pod.
pub fn dry_run_table(rows: &[(String, String, What, String)]) -> String {
    let mut lines = vec![vec!["NAMESPACE", "POD", "WHAT", "MESSAGE"]];
    lines.extend(
        rows.iter()
            .map(|(ns, pod, what, message)| vec![&**ns, &**pod, what.as_str(), &**message]),
    );
    columns(&lines)
}

/// The PodMigration that moved the pod whose last held eviction said `last`.
pub fn moved_by(last: Option<&str>) -> Option<&str> {
    match first_named(last?)? {
        (What::Migrate, name) => name,
        _ => None,
    }
}

/// The line printed when pod `who` (`<namespace>/<name>`) is gone: moved when the migration a
/// held eviction named took it `to` a node, else `evicted` when its eviction was allowed, or
/// gone by itself (moved, or gone before); `last` is the last message of a held eviction.
pub fn done_line(who: &str, evicted: bool, last: Option<&str>, to: Option<&str>) -> String {
    let named = last.and_then(first_named);
    match (evicted, named, to) {
        // A migration that succeeded: the eviction may have been allowed after it, while the
        // pod was still stopping.
        (_, Some((What::Migrate, Some(pm))), Some(node)) => {
            format!("pod {who} moved to {node} by PodMigration {pm:?}")
        }
        (true, Some((What::Checkpoint, Some(pc))), _) => {
            format!("pod {who} evicted after PodCheckpoint {pc:?}")
        }
        (true, _, _) => format!("pod {who} evicted"),
        (false, Some((What::Migrate, Some(pm))), None) => {
            format!("pod {who} moved by PodMigration {pm:?}")
        }
        (false, _, _) => format!("pod {who} gone"),
    }
}

/// Drains `args.node`, or says what a drain would do.
pub async fn run(client: Client, args: Drain) -> anyhow::Result<ExitCode> {
    let node = &args.node;
    let nodes = Api::<Node>::all(client.clone());
    nodes
        .get(node)
        .await
        .map_err(api)
        .with_context(|| format!("reading node {node}"))?;
    let mut params = ListParams::default().fields(&format!("spec.nodeName={node}"));
    if let Some(selector) = &args.pod_selector {
        params = params.labels(selector);
    }
    let mut pods: Vec<Pod> = Api::<Pod>::all(client.clone())
        .list(&params)
        .await
        .map_err(api)
        .with_context(|| format!("listing the pods on node {node}"))?
        .items
        .into_iter()
        .filter(evicts)
        .collect();
    pods.sort_by_key(|p| (p.namespace(), p.name_any()));
    if args.dry_run {
        return dry_run(&client, &pods).await;
    }

    let cordon = json!({"spec": {"unschedulable": true}});
    nodes
        .patch(node, &PatchParams::default(), &Patch::Merge(&cordon))
        .await
        .map_err(api)
        .with_context(|| format!("cordoning node {node}"))?;
    println!("node/{node} cordoned");
    let deadline = Instant::now() + Duration::from_secs(args.timeout);
    let outcomes = join_all(pods.iter().map(|pod| drain_pod(&client, pod, deadline))).await;
    let mut code = ExitCode::SUCCESS;
    for (pod, outcome) in pods.iter().zip(outcomes) {
        if let Err(why) = outcome {
            let who = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
            eprintln!("pod {who}: {why}");
            code = ExitCode::FAILURE;
        }
    }
    if code == ExitCode::SUCCESS {
        println!("node/{node} drained");
    }
    Ok(code)
}

/// Each pod's answer to a dry-run eviction, as a table.
async fn dry_run(client: &Client, pods: &[Pod]) -> anyhow::Result<ExitCode> {
    let params = EvictParams {
        post_options: PostParams {
            dry_run: true,
            ..PostParams::default()
        },
        ..EvictParams::default()
    };
    let answers = join_all(pods.iter().map(|pod| {
        let api = Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let params = params.clone();
        async move { api.evict(&pod.name_any(), &params).await }
    }))
    .await;
    let mut rows = Vec::new();
    for (pod, answer) in pods.iter().zip(answers) {
        let (what, message) = match answer {
            Ok(_) => (What::Evict, String::new()),
            Err(kube::Error::Api(status)) => (
                classify(Some((status.code, &status.message))),
                said(&status),
            ),
            Err(err) => {
                return Err(err).with_context(|| format!("evicting pod {}", pod.name_any()));
            }
        };
        rows.push((
            pod.namespace().unwrap_or_default(),
            pod.name_any(),
            what,
            message,
        ));
    }
    print!("{}", dry_run_table(&rows));
    Ok(ExitCode::SUCCESS)
}

/// Evicts `pod` until it is gone and prints how it went. Err: a refusal that waiting does not
/// end, or the pod still there at `deadline` (with the last message its eviction was held with).
async fn drain_pod(client: &Client, pod: &Pod, deadline: Instant) -> Result<(), String> {
    let ns = pod.namespace().unwrap_or_default();
    let who = format!("{ns}/{}", pod.name_any());
    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let mut last = None;
    let evicted = match tokio::time::timeout_at(deadline, evict(&pods, pod, &who, &mut last)).await
    {
        Ok(evicted) => evicted?,
        Err(_) => {
            let last = last.map_or_else(
                || "it was still stopping".to_owned(),
                |m| format!("last: {m}"),
            );
            return Err(format!("still there at the timeout ({last})"));
        }
    };
    let to = match moved_by(last.as_deref()) {
        Some(pm) => migrated_to(client, &ns, pm).await,
        None => None,
    };
    println!(
        "{}",
        done_line(&who, evicted, last.as_deref(), to.as_deref())
    );
    Ok(())
}

/// Evicts `pod` every [`RETRY`] while the eviction is held (429, each new message printed and
/// kept in `last`), then waits until it is gone; whether it was evicted (else it went by
/// itself, moved).
async fn evict(
    pods: &Api<Pod>,
    pod: &Pod,
    who: &str,
    last: &mut Option<String>,
) -> Result<bool, String> {
    let name = pod.name_any();
    loop {
        if gone(pods, pod).await? {
            return Ok(false);
        }
        match pods.evict(&name, &EvictParams::default()).await {
            Ok(_) => break,
            Err(kube::Error::Api(status)) if status.code == 404 => {
                last.get_or_insert_with(|| said(&status));
                return Ok(false);
            }
            Err(kube::Error::Api(status)) if status.code == 429 => {
                let message = said(&status);
                if last.as_ref() != Some(&message) {
                    eprintln!("pod {who}: {message}");
                    *last = Some(message);
                }
                tokio::time::sleep(RETRY).await;
            }
            Err(err) => return Err(format!("eviction refused: {}", api(err))),
        }
    }
    // Evicted: the kubelet stops it within its grace period.
    while !gone(pods, pod).await? {
        tokio::time::sleep(POLL).await;
    }
    Ok(true)
}

/// Whether `pod` is gone: no pod of its name, or one of its name with another UID (a
/// StatefulSet's new pod, a migration's restored copy).
async fn gone(pods: &Api<Pod>, pod: &Pod) -> Result<bool, String> {
    let now = pods
        .get_opt(&pod.name_any())
        .await
        .map_err(|e| api(e).to_string())?;
    Ok(now.is_none_or(|p| p.metadata.uid != pod.metadata.uid))
}

/// The node a succeeded PodMigration took its pod to; `None` when it cannot be read.
async fn migrated_to(client: &Client, ns: &str, name: &str) -> Option<String> {
    let pm = Api::<PodMigration>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .ok()??;
    let status = pm.status?;
    (status.phase == Some(MigrationPhase::Succeeded))
        .then_some(status.target_node)
        .flatten()
}

#[cfg(test)]
mod tests;
