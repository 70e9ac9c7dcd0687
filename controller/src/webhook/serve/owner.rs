//! The look-up of a migrating pod's workload, for [`workload::genuine`].

use k8s_openapi::api::apps::v1::{ReplicaSet, StatefulSet};
use k8s_openapi::api::authentication::v1::UserInfo;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};
use tracing::warn;

use super::LOOKUP_BUDGET;
use crate::kube_error::cause;
use crate::webhook::workload::{self, Owner};

/// Whether `pod`, created by `user`, is its workload's own. A forgery, or a look-up that
/// fails, is not: the pod is then left alone rather than denied, so a controller-manager
/// under an identity we do not know can still recreate its pod (which starts afresh).
pub(super) async fn genuine(client: &Client, user: &UserInfo, pod: &Pod, namespace: &str) -> bool {
    let owner = match tokio::time::timeout(LOOKUP_BUDGET, owner(client, pod, namespace)).await {
        Ok(Ok(owner)) => owner,
        Ok(Err(error)) => {
            warn!(namespace, error = %cause(&error), "getting a migrating pod's workload");
            return false;
        }
        Err(_) => {
            warn!(
                namespace,
                "getting a migrating pod's workload took over {LOOKUP_BUDGET:?}"
            );
            return false;
        }
    };
    match workload::genuine(pod, user, owner.as_ref()) {
        Ok(()) => true,
        Err(forgery) => {
            let user = user.username.as_deref().unwrap_or_default();
            warn!(namespace, user, %forgery, "not a migrating workload's own pod; not restoring it");
            false
        }
    }
}

/// The workload the pod names as its controller, by the reference's name.
async fn owner(client: &Client, pod: &Pod, namespace: &str) -> Result<Option<Owner>, kube::Error> {
    let Some(reference) = workload::controller_of(pod) else {
        return Ok(None);
    };
    let name = reference.name.as_str();
    let client = client.clone();
    Ok(match reference.kind.as_str() {
        "ReplicaSet" => Api::<ReplicaSet>::namespaced(client, namespace)
            .get_opt(name)
            .await?
            .map(|rs| Owner::ReplicaSet(Box::new(rs))),
        _ => Api::<StatefulSet>::namespaced(client, namespace)
            .get_opt(name)
            .await?
            .map(|sts| Owner::StatefulSet(Box::new(sts))),
    })
}
