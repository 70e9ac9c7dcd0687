//! `noded setup wait`: the Helm pre-delete hook Job's wait for the undo DaemonSet. Helm waits
//! for hook Jobs but not for hook DaemonSets; this Job ends once every node's undo pod is ready
//! (its init container removed the node's files), so `helm uninstall` goes on only then.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::Api;

const POLL: Duration = Duration::from_secs(2);

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    #[arg(long)]
    daemonset: String,
    #[arg(long, default_value_t = 180)]
    timeout_seconds: u64,
}

/// Whether every pod of `ds`'s current generation is scheduled, updated and ready; why not
/// otherwise.
pub fn rolled_out(ds: &DaemonSet) -> Result<(), String> {
    let status = ds.status.as_ref().ok_or("no status yet")?;
    let generation = ds.metadata.generation.unwrap_or_default();
    if status.observed_generation.unwrap_or_default() < generation {
        return Err("its controller has not seen it yet".into());
    }
    let desired = status.desired_number_scheduled;
    let updated = status.updated_number_scheduled.unwrap_or_default();
    let ready = status.number_ready;
    if updated == desired && ready == desired {
        Ok(())
    } else {
        Err(format!(
            "{ready} of {desired} nodes done ({updated} scheduled)"
        ))
    }
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = checkpointing::daemon::kube_client(None).await?;
    let api: Api<DaemonSet> = Api::namespaced(client, &args.namespace);
    let wait = async {
        loop {
            let why = match api.get(&args.daemonset).await {
                Ok(ds) => match rolled_out(&ds) {
                    Ok(()) => return,
                    Err(why) => why,
                },
                Err(e) => e.to_string(),
            };
            tracing::info!(daemonset = %args.daemonset, "waiting: {why}");
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(args.timeout_seconds), wait)
        .await
        .with_context(|| {
            format!(
                "{} did not finish on every node within {}s: its pods' logs say why",
                args.daemonset, args.timeout_seconds
            )
        })?;
    tracing::info!(daemonset = %args.daemonset, "every node's setup undone");
    Ok(())
}
