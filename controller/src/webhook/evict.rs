//! Serving evictions (every replica): the look-ups [`super::eviction::decide`] reads, the
//! PodMigration or PodCheckpoint it starts, and the answer. The registration fails open, so a
//! controller that is down lets evictions go on as for any pod; a look-up that fails here
//! makes the eviction wait (429) and be tried again. `authenticated`: the caller showed the
//! API server's client certificate; otherwise only a cordoned node's evictions start anything
//! (see [`super::eviction`]).

use checkpointing::crd::{CheckpointPolicy, PodCheckpoint, PodMigration};
use checkpointing::names::EVICTION_LABEL;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::api::{ListParams, PostParams};
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, Operation};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{info, warn};

use super::LOOKUP_BUDGET;
use super::eviction::{self, Decision, Observed, Start};
use crate::kube_error::cause;
use crate::metrics::Metrics;

/// The answer to the AdmissionReview of a pod's eviction.
pub async fn evict(
    client: &Client,
    metrics: &Metrics,
    request: &AdmissionRequest<DynamicObject>,
    authenticated: bool,
) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(request);
    let namespace = request.namespace.clone().unwrap_or_default();
    if request.operation != Operation::Create || namespace.is_empty() {
        return response;
    }
    let decided = tokio::time::timeout(LOOKUP_BUDGET, decide(client, request, authenticated))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from the API server within {LOOKUP_BUDGET:?}"
            ))
        });
    let pod = request.name.as_str();
    let (code, reason, message) = match decided {
        Ok(Decision::Allow) => {
            metrics.admitted("allowed", "Eviction");
            return response;
        }
        Ok(Decision::Gone { message }) => {
            metrics.admitted("denied", "EvictedPodGone");
            (404, "NotFound", message)
        }
        Ok(Decision::Wait { message, start }) => {
            let message = match (start, request.dry_run) {
                (Some(start), false) => match create(client, &namespace, start).await {
                    Ok(()) => message,
                    Err(error) => format!(
                        "pod {pod:?} is protected by a CheckpointPolicy, but starting its \
                         protection failed ({error}); the eviction is tried again"
                    ),
                },
                _ => message,
            };
            metrics.admitted("denied", "EvictionWaits");
            (429, "TooManyRequests", message)
        }
        Err(error) => {
            warn!(pod, %namespace, %error, "looking up a protected eviction failed");
            metrics.admitted("denied", "EvictionLookupFailed");
            let message = format!(
                "could not check whether pod {pod:?} is protected by a CheckpointPolicy \
                 ({error}); the eviction is tried again"
            );
            (429, "TooManyRequests", message)
        }
    };
    info!(pod, %namespace, code, %message, "held an eviction");
    response = response.deny(message);
    response.result.code = code;
    response.result.reason = reason.to_owned();
    response
}

/// Looks up what the decision reads and decides.
async fn decide(
    client: &Client,
    request: &AdmissionRequest<DynamicObject>,
    authenticated: bool,
) -> Result<Decision, String> {
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let Some(pod) = Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(&request.name)
        .await
        .map_err(|e| cause(&e))?
    else {
        return Ok(Decision::Allow);
    };
    let policies: Vec<CheckpointPolicy> = list(client, namespace, None).await?;
    if policies.iter().all(|p| p.spec.on_eviction.is_none()) {
        return Ok(Decision::Allow);
    }
    let budgets: Vec<PodDisruptionBudget> = list(client, namespace, None).await?;
    let migrations: Vec<PodMigration> = list(client, namespace, Some(EVICTION_LABEL)).await?;
    let checkpoints: Vec<PodCheckpoint> = list(client, namespace, Some(EVICTION_LABEL)).await?;
    let left = match eviction::copy_of(&pod, &migrations) {
        Some(m) => {
            let from = m.status.as_ref().and_then(|s| s.source_node.clone());
            let here = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            match (from, here) {
                (Some(from), Some(here))
                    if cordoned(client, &from).await? && !cordoned(client, &here).await? =>
                {
                    Some(from)
                }
                _ => None,
            }
        }
        None => None,
    };
    let trusted = authenticated
        || match pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) {
            Some(node) => cordoned(client, node).await?,
            None => false,
        };
    Ok(eviction::decide(&Observed {
        pod: &pod,
        policies: &policies,
        budgets: &budgets,
        migrations: &migrations,
        checkpoints: &checkpoints,
        left_drained_node: left.as_deref(),
        now: Timestamp::now(),
        trusted,
    }))
}

async fn list<K>(client: &Client, namespace: &str, label: Option<&str>) -> Result<Vec<K>, String>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let params = label.map_or_else(ListParams::default, |l| ListParams::default().labels(l));
    Api::<K>::namespaced(client.clone(), namespace)
        .list(&params)
        .await
        .map(|l| l.items)
        .map_err(|e| cause(&e))
}

/// Whether node `name` is cordoned (`spec.unschedulable`); a node gone counts as cordoned.
async fn cordoned(client: &Client, name: &str) -> Result<bool, String> {
    let node = Api::<Node>::all(client.clone())
        .get_opt(name)
        .await
        .map_err(|e| cause(&e))?;
    Ok(node.is_none_or(|n| n.spec.and_then(|s| s.unschedulable) == Some(true)))
}

/// Creates what the decision started; one that exists already was started by an earlier try.
async fn create(client: &Client, namespace: &str, start: Start) -> Result<(), String> {
    let params = PostParams::default();
    let created = match start {
        Start::Migration(m) => Api::<PodMigration>::namespaced(client.clone(), namespace)
            .create(&params, &m)
            .await
            .map(|m| m.name_any()),
        Start::Checkpoint(pc) => Api::<PodCheckpoint>::namespaced(client.clone(), namespace)
            .create(&params, &pc)
            .await
            .map(|pc| pc.name_any()),
    };
    match created {
        Ok(name) => {
            info!(%namespace, %name, "started for an eviction");
            Ok(())
        }
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(cause(&e)),
    }
}
