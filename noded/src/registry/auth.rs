//! Who may ask the registry for what.
//!
//! - The peer server admits another node's noded ([`peer`]): a bearer ServiceAccount token
//!   for the peer audience that a `TokenReview` authenticates as one of the allowed users,
//!   bound to its pod on a node; and it serves that node only images a pod there was admitted
//!   to restore.
//! - The node-local registry admits only the runtime pulling for a pod: Basic credentials whose
//!   password is the pod-bound token the kubelet gives our credential provider (audience
//!   [`REGISTRY_AUDIENCE`]). The token must be bound to a pod of the image's namespace on this
//!   node, and that pod must reference exactly the image asked for, which the restore webhook
//!   lets a pod do only when it was admitted to restore that checkpoint.
//!
//! Reviews are remembered by the token's hash (tokens are not kept): admissions for a minute,
//! refusals briefly ([`Reviews`]).

use std::time::Duration;

use axum::http::HeaderValue;
use base64::Engine as _;
use checkpointing::digest::sha256_hex;
use checkpointing::names::REGISTRY_AUDIENCE;
use k8s_openapi::api::authentication::v1::TokenReviewStatus;
use k8s_openapi::api::core::v1::Pod;

use super::problem::Problem;
use crate::cluster::Cluster;
use crate::error::error_chain;
use crate::recent::Recent;
use crate::restore::owners_of;
use crate::volumes::Owners;

mod peer;

pub use peer::PeerAuth;

/// How long a positive review or authorization is trusted.
const REVIEW_TTL: Duration = Duration::from_secs(60);
/// How long a refused token stays refused without another review: a stranger repeating a
/// bogus token costs one review per this time, not one per request.
const REFUSED_TTL: Duration = Duration::from_secs(10);
/// Refused tokens remembered at once (their hashes), the oldest forgotten first.
const MAX_REFUSED: usize = 1024;

/// Peers send a bearer token; runtimes send what the kubelet gave them as Basic credentials.
const BEARER: &str = "Bearer";
const BASIC: &str = "Basic";

/// Claims the API server adds to pod-bound ServiceAccount tokens.
const POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const NODE_NAME: &str = "authentication.kubernetes.io/node-name";

/// Why a request is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error("no credentials")]
    NoCredentials,
    #[error("the token is not authenticated{}", .0.as_deref().map(|e| format!(": {e}")).unwrap_or_default())]
    NotAuthenticated(Option<String>),
    #[error("the token is not meant for {0}")]
    WrongAudience(&'static str),
    #[error("user {0:?} may not fetch checkpoint images")]
    NotAllowed(String),
    #[error("the token is not bound to a pod on node {0}")]
    NotThisNode(String),
    #[error("pod {0} may not pull images of namespace {1}")]
    OtherNamespace(String, String),
    #[error("pod {0} does not reference {1}")]
    NotReferenced(String, String),
    #[error("the token of {0:?} is not bound to a pod on a node")]
    Unbound(String),
    #[error("no pod on node {node} was admitted to restore {image}")]
    NotRestoring { node: String, image: String },
}

impl Denied {
    /// 401 (challenging with `scheme`) when the caller did not prove who it is, 403 when it
    /// did and may not.
    fn problem(self, scheme: &'static str) -> Problem {
        match self {
            Self::NoCredentials | Self::NotAuthenticated(_) | Self::WrongAudience(_) => {
                Problem::Unauthorized {
                    scheme,
                    why: self.to_string(),
                }
            }
            _ => Problem::Forbidden(self.to_string()),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer(value: Option<&HeaderValue>) -> Result<&str, Denied> {
    let (scheme, token) = scheme_and_value(value)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Denied::NoCredentials);
    }
    Ok(token)
}

/// The password of an `Authorization: Basic <base64 user:password>` header: what the runtime
/// sends with the credentials the kubelet gave it.
pub fn basic_password(value: Option<&HeaderValue>) -> Result<String, Denied> {
    let (scheme, encoded) = scheme_and_value(value)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(Denied::NoCredentials);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or(Denied::NoCredentials)?;
    match decoded.split_once(':') {
        Some((_, password)) if !password.is_empty() => Ok(password.to_owned()),
        _ => Err(Denied::NoCredentials),
    }
}

fn scheme_and_value(value: Option<&HeaderValue>) -> Result<(&str, &str), Denied> {
    let value = value
        .and_then(|v| v.to_str().ok())
        .ok_or(Denied::NoCredentials)?;
    let (scheme, rest) = value.split_once(' ').ok_or(Denied::NoCredentials)?;
    let rest = rest.trim();
    if rest.is_empty() {
        return Err(Denied::NoCredentials);
    }
    Ok((scheme, rest))
}

/// The username of a review that authenticated the token for `audience`.
fn authenticated<'a>(
    status: &'a TokenReviewStatus,
    audience: &'static str,
) -> Result<&'a str, Denied> {
    if status.authenticated != Some(true) {
        return Err(Denied::NotAuthenticated(status.error.clone()));
    }
    // An authenticator that ignores audiences must not let a token for something else in.
    if !status.audiences.iter().flatten().any(|a| a == audience) {
        return Err(Denied::WrongAudience(audience));
    }
    Ok(status
        .user
        .as_ref()
        .and_then(|u| u.username.as_deref())
        .unwrap_or_default())
}

/// The first value of claim `key` of an authenticated token's user.
fn claim(status: &TokenReviewStatus, key: &str) -> Option<String> {
    status
        .user
        .as_ref()?
        .extra
        .as_ref()?
        .get(key)?
        .first()
        .cloned()
}

async fn review<C: Cluster>(
    cluster: &C,
    token: &str,
    audience: &'static str,
) -> Result<TokenReviewStatus, Problem> {
    cluster
        .review_token(token, audience)
        .await
        .map_err(|e| Problem::Unavailable(format!("reviewing a token: {}", error_chain(&e))))
}

/// Token reviews by the token's hash: what a review admitted for [`REVIEW_TTL`], what it
/// refused for [`REFUSED_TTL`] (at most [`MAX_REFUSED`] of those). A review the API server
/// could not answer is not remembered.
struct Reviews<V> {
    admitted: Recent<V>,
    refused: Recent<Denied>,
}

impl<V: Clone> Reviews<V> {
    fn new() -> Self {
        Self {
            admitted: Recent::new(REVIEW_TTL),
            refused: Recent::bounded(REFUSED_TTL, MAX_REFUSED),
        }
    }

    /// What `decide` makes of a review of `token` for `audience`, refusals challenging with
    /// `scheme`.
    async fn decide<C: Cluster>(
        &self,
        cluster: &C,
        token: &str,
        audience: &'static str,
        scheme: &'static str,
        decide: impl FnOnce(&TokenReviewStatus) -> Result<V, Denied>,
    ) -> Result<V, Problem> {
        let key = sha256_hex(token.as_bytes());
        if let Some(admitted) = self.admitted.get(&key) {
            return Ok(admitted);
        }
        if let Some(refused) = self.refused.get(&key) {
            return Err(refused.problem(scheme));
        }
        let status = review(cluster, token, audience).await?;
        match decide(&status) {
            Ok(admitted) => {
                self.admitted.put(key, admitted.clone());
                Ok(admitted)
            }
            Err(refused) => {
                self.refused.put(key, refused.clone());
                Err(refused.problem(scheme))
            }
        }
    }
}

/// Who a request is answered for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The runtime pulling for a pod on this node.
    Pod(Puller),
    /// Another node's noded, fetching for a restore on that node.
    Peer { node: String },
}

/// The pod a pull is made for, as its token names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Puller {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
}

impl std::fmt::Display for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.pod)
    }
}

/// Admits a token the API server authenticated for [`REGISTRY_AUDIENCE`] that is bound to a
/// pod on `node`.
pub fn decide_puller(status: &TokenReviewStatus, node: &str) -> Result<Puller, Denied> {
    let user = authenticated(status, REGISTRY_AUDIENCE)?;
    let namespace = user
        .strip_prefix("system:serviceaccount:")
        .and_then(|rest| rest.split_once(':'))
        .map(|(namespace, _)| namespace)
        .ok_or_else(|| Denied::NotAllowed(user.to_owned()))?;
    if claim(status, NODE_NAME).as_deref() != Some(node) {
        return Err(Denied::NotThisNode(node.to_owned()));
    }
    match (claim(status, POD_NAME), claim(status, POD_UID)) {
        (Some(pod), Some(uid)) => Ok(Puller {
            namespace: namespace.to_owned(),
            pod,
            uid,
        }),
        _ => Err(Denied::NotThisNode(node.to_owned())),
    }
}

/// A pod pulls only images of its own namespace: checked before anything is looked up, so
/// other namespaces' checkpoint names stay unknown.
pub fn same_namespace(puller: &Puller, namespace: &str) -> Result<(), Denied> {
    if puller.namespace == namespace {
        Ok(())
    } else {
        Err(Denied::OtherNamespace(
            puller.to_string(),
            namespace.to_owned(),
        ))
    }
}

/// Whether `pod` (looked up for `puller`) is that pod, on `node`, and one of its containers
/// runs `image`.
pub fn pod_runs(puller: &Puller, pod: Option<&Pod>, node: &str, image: &str) -> Result<(), Denied> {
    let pod = pod
        .filter(|p| p.metadata.uid.as_deref() == Some(&puller.uid))
        .ok_or_else(|| Denied::NotThisNode(node.to_owned()))?;
    let spec = pod.spec.as_ref();
    if spec.and_then(|s| s.node_name.as_deref()) != Some(node) {
        return Err(Denied::NotThisNode(node.to_owned()));
    }
    let mut images = spec.into_iter().flat_map(|s| {
        let ephemeral = s.ephemeral_containers.iter().flatten();
        s.containers
            .iter()
            .chain(s.init_containers.iter().flatten())
            .map(|c| c.image.as_deref())
            .chain(ephemeral.map(|c| c.image.as_deref()))
    });
    if images.any(|i| i == Some(image)) {
        Ok(())
    } else {
        Err(Denied::NotReferenced(puller.to_string(), image.to_owned()))
    }
}

/// The node-local registry's gate.
pub struct PullAuth {
    reviews: Reviews<Puller>,
    /// How to own the volumes of authorized (pod UID, image) pairs.
    authorized: Recent<Owners>,
}

impl Default for PullAuth {
    fn default() -> Self {
        Self {
            reviews: Reviews::new(),
            authorized: Recent::new(REVIEW_TTL),
        }
    }
}

impl PullAuth {
    /// Who is pulling, before anything else is looked at.
    pub async fn authenticate<C: Cluster>(
        &self,
        cluster: &C,
        authorization: Option<&HeaderValue>,
        node: &str,
    ) -> Result<Puller, Problem> {
        let token = basic_password(authorization).map_err(|d| d.problem(BASIC))?;
        self.reviews
            .decide(cluster, &token, REGISTRY_AUDIENCE, BASIC, |status| {
                decide_puller(status, node)
            })
            .await
    }

    /// Whether `puller` may pull images of `namespace` at all.
    pub fn admit_namespace(&self, puller: &Puller, namespace: &str) -> Result<(), Problem> {
        same_namespace(puller, namespace).map_err(|d| d.problem(BASIC))
    }

    /// Whether `puller` may pull `image`: its pod runs it. Returns who the volumes placed for
    /// the pod belong to, as its spec says.
    pub async fn authorize<C: Cluster>(
        &self,
        cluster: &C,
        puller: &Puller,
        node: &str,
        image: &str,
    ) -> Result<Owners, Problem> {
        let key = format!("{} {image}", puller.uid);
        if let Some(owners) = self.authorized.get(&key) {
            return Ok(owners);
        }
        let pod = cluster
            .pod(&puller.namespace, &puller.pod)
            .await
            .map_err(|e| {
                Problem::Unavailable(format!("looking up pod {puller}: {}", error_chain(&e)))
            })?;
        pod_runs(puller, pod.as_ref(), node, image).map_err(|d| d.problem(BASIC))?;
        let owners = pod
            .as_ref()
            .map(|p| owners_of(p, image))
            .unwrap_or_default();
        self.authorized.put(key, owners);
        Ok(owners)
    }
}

#[cfg(test)]
mod tests;
