//! The copy of a request's registry Secret that noded reads. noded may read Secrets only in
//! its credentials namespace (`--credentials-namespace`), so the controller (whose requests' authors had to be allowed to
//! `get` the Secret, see the admission policy) copies it there before it creates the Content.
//! The copy is named after the request's UID: unique per request, and known before the
//! Content exists. A copy is owned by nothing (owners cannot cross namespaces): noded deletes
//! it when it releases its finalizer on the Content, its only writer after creation.

use std::collections::BTreeMap;

use checkpointing::crd::{ContainerCheckpoint, ContainerCheckpointContent, RegistrySpec};
use checkpointing::names::{NAMESPACE_LABEL, NODE_LABEL};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};

/// The type and key of registry credentials, the only data copied.
const DOCKER_CONFIG_TYPE: &str = "kubernetes.io/dockerconfigjson";
const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// The name of `request`'s copy, when it names a registry Secret (and has a UID, as every
/// request read from the API server does).
pub fn copy_name(request: &ContainerCheckpoint) -> Option<String> {
    RegistrySpec::secret_name(request.spec.registry.as_ref())?;
    request.metadata.uid.clone()
}

/// The copy of `source` for `content`, named `name` in namespace `credentials`: only its
/// registry credentials, labelled with the node and namespace it serves. A Secret of another type is copied without data, under a type the
/// API server accepts without keys, so that noded reports the wrong type as before.
pub fn copy_of(
    source: &Secret,
    name: &str,
    credentials: &str,
    content: &ContainerCheckpointContent,
) -> Secret {
    let kind = source.type_.clone().unwrap_or_else(|| "Opaque".to_owned());
    let docker = kind == DOCKER_CONFIG_TYPE;
    let data = source
        .data
        .as_ref()
        .and_then(|d| d.get(DOCKER_CONFIG_KEY))
        .filter(|_| docker)
        .map(|v| BTreeMap::from([(DOCKER_CONFIG_KEY.to_owned(), v.clone())]));
    // The API server checks the keys of its own types: without theirs they cannot be created.
    let type_ = if docker || !kind.starts_with("kubernetes.io/") {
        kind
    } else {
        "Opaque".to_owned()
    };
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(credentials.to_owned()),
            labels: Some(BTreeMap::from([
                (NODE_LABEL.to_owned(), content.spec.node_name.clone()),
                (NAMESPACE_LABEL.to_owned(), content.spec.namespace.clone()),
            ])),
            ..ObjectMeta::default()
        },
        type_: Some(type_),
        data,
        immutable: Some(true),
        ..Secret::default()
    }
}

/// Copies the Secret `content`'s request names into namespace `credentials`, unless the
/// copy exists already (a retry). A missing Secret is not copied: noded then tells the
/// request it is missing, naming the registry, as for any other failed push.
pub async fn copy(
    client: &kube::Client,
    credentials: &str,
    content: &ContainerCheckpointContent,
) -> Result<(), kube::Error> {
    let (Some(name), Some(source)) = (
        content.spec.credentials_secret.as_deref(),
        RegistrySpec::secret_name(content.spec.registry.as_ref()),
    ) else {
        return Ok(());
    };
    let Some(found) = Api::<Secret>::namespaced(client.clone(), &content.spec.namespace)
        .get_opt(source)
        .await?
    else {
        return Ok(());
    };
    let copies = Api::<Secret>::namespaced(client.clone(), credentials);
    match copies
        .create(
            &PostParams::default(),
            &copy_of(&found, name, credentials, content),
        )
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests;
