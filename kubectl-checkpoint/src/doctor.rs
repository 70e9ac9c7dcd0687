//! `kubectl checkpoint doctor`: what works on each node and what still needs a human, read from
//! the noded Leases (their prerequisite checks), whether the CRDs and the restore webhook are
//! installed, and with `--trial` a throw-away checkpoint and restore across two nodes. This
//! file and `trial` talk to the API server; the rest is pure.

mod advice;
mod counter;
mod diagnosis;
mod node;
mod pair;
mod render;
mod state;
mod trial;

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use checkpointing::names::{PEER_CERTIFICATE_ANNOTATION, RESTORE_WEBHOOK, noded_lease_node};
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ListParams};

use crate::api::api;
use crate::cli::{Doctor, Output};
use diagnosis::{Crd, Diagnosis};
use node::NodeHealth;

pub async fn run(client: Client, namespace: &str, args: Doctor) -> anyhow::Result<ExitCode> {
    let mut nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api)
        .context("listing nodes")?
        .items;
    nodes.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // Without a namespace, every namespace: a node daemon's Lease is one named for its node
    // that carries its peer certificate (the chart names the namespace after the release).
    let (listed, place) = match &args.lease_namespace {
        Some(ns) => (Api::<Lease>::namespaced(client.clone(), ns), ns.clone()),
        None => (
            Api::<Lease>::all(client.clone()),
            "any namespace".to_owned(),
        ),
    };
    let leases: BTreeMap<String, Lease> = listed
        .list(&ListParams::default())
        .await
        .map_err(api)
        .with_context(|| format!("listing the Leases in {place}"))?
        .items
        .into_iter()
        .filter(|l| {
            l.metadata
                .annotations
                .as_ref()
                .is_some_and(|a| a.contains_key(PEER_CERTIFICATE_ANNOTATION))
        })
        .filter_map(|l| {
            let node = noded_lease_node(l.metadata.name.as_deref()?)?.to_owned();
            Some((node, l))
        })
        .collect();
    let ns = &args
        .lease_namespace
        .clone()
        .or_else(|| leases.values().find_map(|l| l.metadata.namespace.clone()))
        .unwrap_or(place);
    let now = Timestamp::now();
    let nodes: Vec<NodeHealth> = nodes
        .iter()
        .map(|n| {
            let lease = n.metadata.name.as_ref().and_then(|name| leases.get(name));
            NodeHealth::new(n, lease, now, ns)
        })
        .collect();
    let mut diagnosis = Diagnosis {
        crds: crds(&client).await?,
        webhook: webhook(&client).await?,
        nodes,
        trial: None,
    };
    if args.trial {
        let trial_ns = args.namespace_for_trial.as_deref().unwrap_or(namespace);
        let run = trial::run(&client, trial_ns, &args.trial_image, &diagnosis.nodes);
        diagnosis.trial = Some(run.await);
    }
    let verdict = diagnosis.verdict();
    match args.output {
        Output::Text => print!("{}", render::text(&diagnosis)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&verdict)?),
    }
    Ok(if verdict.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Each of our CRDs, by name, and whether the cluster has it.
async fn crds(client: &Client) -> anyhow::Result<Vec<Crd>> {
    let definitions = Api::<CustomResourceDefinition>::all(client.clone());
    let mut crds = Vec::new();
    for crd in checkpointing::crd::crds() {
        let name = crd.metadata.name.unwrap_or_default();
        let installed = definitions
            .get_opt(&name)
            .await
            .map_err(api)
            .with_context(|| format!("reading CRD {name}"))?
            .is_some();
        crds.push(Crd { name, installed });
    }
    Ok(crds)
}

/// The MutatingWebhookConfiguration that holds the restore webhook (its name follows the
/// release).
async fn webhook(client: &Client) -> anyhow::Result<Option<String>> {
    let configurations = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(api)
        .context("listing MutatingWebhookConfigurations")?;
    Ok(configurations
        .items
        .into_iter()
        .find(|c| {
            c.webhooks
                .iter()
                .flatten()
                .any(|w| w.name == RESTORE_WEBHOOK)
        })
        .and_then(|c| c.metadata.name))
}
