//! Where a Content's checkpoint image is pushed, and with which credentials: the request's
//! `spec.registry`, else the cluster's defaults (`--push-registry`, `--push-secret`). Resolved
//! before the checkpoint is taken, so a request naming a missing Secret or a malformed
//! repository fails before any memory is dumped.
//!
//! noded reads Secrets only in its credentials namespace (`--credentials-namespace`): a
//! request's Secret through the copy the controller made there (`spec.credentialsSecret`), which noded deletes with the Content;
//! the default one is created there by the cluster's admin.

use checkpointing::crd::{ContainerCheckpointContent, RegistrySpec};
use checkpointing::names::DEFAULT_CREDENTIALS_NAMESPACE;
use checkpointing::reference::normalise_host;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};

use crate::push::auth::CredentialsError;
use crate::push::{Credentials, Destination, Target, TargetError};

/// The type and key of a Secret holding registry credentials the way kubelets read them.
const DOCKER_CONFIG_TYPE: &str = "kubernetes.io/dockerconfigjson";
const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// How long a deleting Content waits for an unreachable push registry by default, so that a
/// registry gone for good does not hold the deletion.
pub const PUSHED_COPY_PATIENCE: std::time::Duration = std::time::Duration::from_secs(600);

/// The cluster's defaults, from noded's flags.
#[derive(Clone, Debug)]
pub struct Defaults {
    /// `--push-registry`: every checkpoint goes there unless its request names a repository.
    pub target: Option<Target>,
    /// `--push-secret NAME`: credentials for requests that name none, in
    /// `credentials_namespace`.
    pub secret: Option<SecretName>,
    /// `--credentials-namespace`: the only namespace whose Secrets noded reads.
    pub credentials_namespace: String,
    /// `--pushed-copy-patience-seconds`: how long a deleting Content waits for an unreachable
    /// push registry before its pushed copy is given up on.
    pub pushed_copy_patience: std::time::Duration,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            target: None,
            secret: None,
            credentials_namespace: DEFAULT_CREDENTIALS_NAMESPACE.to_owned(),
            pushed_copy_patience: PUSHED_COPY_PATIENCE,
        }
    }
}

impl Defaults {
    /// The default Secret, for the default registry's repositories of `namespace` only
    /// (`<prefix>/<namespace>/…`): a request that names a registry of its own must bring its
    /// credentials, or anyone who may checkpoint could push to (and delete from) any
    /// repository the cluster's account reaches, another namespace's checkpoints included.
    fn secret_for(&self, to: &Destination, namespace: &str) -> Option<SecretName> {
        let target = self.target.as_ref()?;
        let own = target.destination(namespace, "").repository;
        let under = to.repository.starts_with(&format!("{own}/"));
        (target.host == to.host && under)
            .then(|| self.secret.clone())
            .flatten()
    }
}

/// A Secret, by namespace and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretName {
    pub namespace: String,
    pub name: String,
}

impl SecretName {
    /// `--push-secret`: `NAME`, or `NAMESPACE/NAME` where noded may read it, the
    /// `credentials` namespace.
    pub fn parse(s: &str, credentials: &str) -> Result<Self, String> {
        let (namespace, name) = s.split_once('/').unwrap_or((credentials, s));
        if namespace != credentials {
            return Err(format!(
                "{s:?}: noded reads Secrets only in namespace {credentials}; create it there and \
                 give its NAME"
            ));
        }
        if name.is_empty() || name.contains('/') {
            return Err(format!("{s:?}: give the Secret's NAME"));
        }
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }
}

impl std::fmt::Display for SecretName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// Where one checkpoint goes: the destination, and the Secret whose credentials to use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub to: Destination,
    /// The Secret as the request (or the flag) names it, for messages.
    pub secret: Option<SecretName>,
    /// Where noded reads it: a name in the credentials namespace (`None`: no copy was made).
    pub stored: Option<String>,
    /// The request named the Secret (its absence, or no entry for the registry, is an error);
    /// the cluster default may hold no entry for a registry that needs none.
    pub named: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("spec.registry.repository {repository:?} is not HOST[:PORT]/REPOSITORY: {why}")]
    Repository { repository: String, why: String },
    #[error(
        "spec.registry.secretRef names Secret {secret} but no registry to push to: set \
         spec.registry.repository (this cluster has no default push registry)"
    )]
    NoRegistry { secret: String },
    #[error(
        "Secret {secret} (the credentials for registry {registry}) not found; create it as a \
         {DOCKER_CONFIG_TYPE} Secret or fix spec.registry.secretRef"
    )]
    SecretNotFound {
        secret: SecretName,
        registry: String,
    },
    #[error("reading Secret {secret} (the credentials for registry {registry})")]
    SecretUnreadable {
        secret: SecretName,
        registry: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "Secret {secret} is of type {found:?}; registry credentials must be a \
         {DOCKER_CONFIG_TYPE} Secret with key {DOCKER_CONFIG_KEY}"
    )]
    SecretType { secret: SecretName, found: String },
    #[error("Secret {secret} holds no credentials for registry {registry}; add an entry for it")]
    NoEntry {
        secret: SecretName,
        registry: String,
    },
    #[error("Secret {secret}: {source}")]
    Credentials {
        secret: SecretName,
        #[source]
        source: CredentialsError,
    },
    /// A registry noded may not push to (`--allowed-push-registry`, or where it resolves).
    #[error(transparent)]
    Target(#[from] TargetError),
}

/// Where the checkpoint of `content` is pushed; `None`: it stays on its node.
pub fn route(
    content: &ContainerCheckpointContent,
    defaults: &Defaults,
) -> Result<Option<Route>, OutboundError> {
    let registry = content.spec.registry.as_ref();
    // The Content's own namespace: spec.namespace is a copy a writer could make disagree.
    let namespace = namespace_of(content);
    let to = match registry.and_then(|r| r.repository.as_deref()) {
        Some(repository) => {
            repository
                .parse::<Destination>()
                .map_err(|why| OutboundError::Repository {
                    repository: repository.to_owned(),
                    why,
                })?
        }
        None => match &defaults.target {
            Some(target) => {
                let name = content.spec.container_checkpoint_ref.as_str();
                target.destination(namespace, name)
            }
            None => {
                return match named_secret(content) {
                    Some(secret) => Err(OutboundError::NoRegistry {
                        secret: secret.to_string(),
                    }),
                    None => Ok(None),
                };
            }
        },
    };
    Ok(Some(Route::to(to, content, defaults)))
}

/// Where the pushed copy `image` (`HOST/REPOSITORY@DIGEST`) of `content` is, to delete it:
/// `None` for an image of the node-local registry `local`.
pub fn of_image(
    content: &ContainerCheckpointContent,
    defaults: &Defaults,
    local: &str,
    image: &str,
) -> Option<Route> {
    let (to, _digest) = crate::push::parse_image(image).ok()?;
    let local = normalise_host(local).unwrap_or_else(|_| local.to_owned());
    (to.host != local).then(|| Route::to(to, content, defaults))
}

impl Route {
    /// The route to `to` for `content`: with the Secret its request names, else the default
    /// one where it applies.
    fn to(to: Destination, content: &ContainerCheckpointContent, defaults: &Defaults) -> Self {
        let named = named_secret(content);
        let default = defaults.secret_for(&to, namespace_of(content));
        let stored = match (&named, &default) {
            (Some(_), _) => content.spec.credentials_secret.clone(),
            (None, Some(default)) => Some(default.name.clone()),
            (None, None) => None,
        };
        Self {
            to,
            named: named.is_some(),
            secret: named.or(default),
            stored,
        }
    }
}

/// The Secret `content`'s request names, in its namespace.
fn named_secret(content: &ContainerCheckpointContent) -> Option<SecretName> {
    let name = RegistrySpec::secret_name(content.spec.registry.as_ref())?;
    Some(SecretName {
        namespace: namespace_of(content).to_owned(),
        name: name.to_owned(),
    })
}

/// The namespace `content` lives in, which is the only one its request may reach.
fn namespace_of(content: &ContainerCheckpointContent) -> &str {
    content.metadata.namespace.as_deref().unwrap_or_default()
}

/// The credentials `route` pushes (or deletes) with, read from its Secret (in namespace
/// `credentials`) now: a rotated Secret takes effect with the next request.
pub async fn credentials(
    client: &kube::Client,
    credentials: &str,
    route: &Route,
) -> Result<Option<Credentials>, OutboundError> {
    let Some(secret) = &route.secret else {
        return Ok(None);
    };
    let registry = route.to.host.clone();
    let found = match &route.stored {
        Some(stored) => Api::<Secret>::namespaced(client.clone(), credentials)
            .get_opt(stored)
            .await
            .map_err(|source| OutboundError::SecretUnreadable {
                secret: secret.clone(),
                registry: registry.clone(),
                source: Box::new(source),
            })?,
        None => None,
    };
    let Some(found) = found else {
        return Err(OutboundError::SecretNotFound {
            secret: secret.clone(),
            registry,
        });
    };
    from_secret(&found, secret, route)
}

/// The credentials for `route`'s registry in the Secret `found` (named `secret`).
pub fn from_secret(
    found: &Secret,
    secret: &SecretName,
    route: &Route,
) -> Result<Option<Credentials>, OutboundError> {
    let kind = found.type_.as_deref().unwrap_or_default();
    let data = found.data.as_ref().and_then(|d| d.get(DOCKER_CONFIG_KEY));
    let (true, Some(data)) = (kind == DOCKER_CONFIG_TYPE, data) else {
        return Err(OutboundError::SecretType {
            secret: secret.clone(),
            found: kind.to_owned(),
        });
    };
    let credentials =
        Credentials::from_docker_config(&data.0, &route.to.host).map_err(|source| {
            OutboundError::Credentials {
                secret: secret.clone(),
                source,
            }
        })?;
    match credentials {
        None if route.named => Err(OutboundError::NoEntry {
            secret: secret.clone(),
            registry: route.to.host.clone(),
        }),
        found => Ok(found),
    }
}

/// Deletes the controller's copy (in namespace `credentials`) of `content`'s registry Secret,
/// once nothing will push or delete with it: noded is its only deleter, when it releases the
/// Content.
pub async fn forget_copy(
    client: &kube::Client,
    credentials: &str,
    content: &ContainerCheckpointContent,
) -> Result<(), kube::Error> {
    let Some(name) = content.spec.credentials_secret.as_deref() else {
        return Ok(());
    };
    match Api::<Secret>::namespaced(client.clone(), credentials)
        .delete(name, &DeleteParams::default())
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests;
