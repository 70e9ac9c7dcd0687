//! `spec.registry` of the checkpoint requests: the registry a checkpoint image is pushed to,
//! and the credentials for it, kept the way Kubernetes users keep registry credentials.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::names::DNS_SUBDOMAIN_MAX;

/// Longest `spec.registry.repository` (a reference's name part is bounded by 255 characters).
pub const REPOSITORY_MAX: usize = 255;

/// Where the checkpoint image goes, and with which credentials. Unset fields take the
/// cluster's defaults (noded's `--push-registry` and `--push-secret`).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RegistrySpec {
    /// `HOST[:PORT]/REPOSITORY` the image is pushed to, tagged with the checkpoint's UID; the
    /// request's `status.image` then names it there, by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = REPOSITORY_MAX))]
    pub repository: Option<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the request's namespace holding the
    /// registry's credentials. Creating the request needs `get` on it; noded pushes with (a
    /// copy of) it, and fetches the pushed copy back with it for a restore no node can serve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretRef>,
    /// How the checkpoint archive layer is compressed in the pushed image. `Auto` (the
    /// default): zstd when a sample of the archive shrinks to at most 0.8 of its size, else
    /// none. `Zstd`: always (`application/vnd.oci.image.layer.v1.tar+zstd`). `None`: pushed as
    /// the plain tar it is on the node. A compressed push also makes the node's own copy the
    /// compressed image: `status.image` names the same image everywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<Compression>,
}

/// See `RegistrySpec::compression`.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Compression {
    #[default]
    Auto,
    None,
    Zstd,
}

/// A Secret in the referring object's namespace.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = DNS_SUBDOMAIN_MAX))]
    pub name: String,
}

impl RegistrySpec {
    /// The name of the Secret it refers to, if any.
    pub fn secret_name(registry: Option<&Self>) -> Option<&str> {
        Some(registry?.secret_ref.as_ref()?.name.as_str())
    }

    /// The repository it names, if any.
    pub fn repository(registry: Option<&Self>) -> Option<&str> {
        registry?.repository.as_deref()
    }
}
