//! Why a push or delete failed, in words for a request's status: never a registry's body
//! as it came ([`super::summary`]).

use std::path::PathBuf;

use axum::http::{Method, StatusCode};
use checkpointing::oci::OciError;

use super::TargetError;
use super::redirect::MAX_REDIRECTS;

fn summary_suffix(summary: &Option<String>) -> String {
    summary
        .as_deref()
        .map(|s| format!(": {s}"))
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{method} {url}")]
    Request {
        method: Method,
        url: String,
        #[source]
        source: hyper_util::client::legacy::Error,
    },
    #[error("{method} {url}: no answer within {timeout:?}")]
    Timeout {
        method: Method,
        url: String,
        timeout: std::time::Duration,
    },
    /// `summary`: the registry's error codes and messages, never its body as it came
    /// ([`super::summary::summarise`]).
    #[error("{method} {url} answered {status}{}", summary_suffix(summary))]
    Status {
        method: Method,
        url: String,
        status: StatusCode,
        summary: Option<String>,
    },
    #[error("{method} {url} not sent: {reason}")]
    NotSent {
        method: Method,
        url: String,
        reason: String,
    },
    #[error("{method} {url} answered {status} without a usable Location header")]
    NoLocation {
        method: Method,
        url: String,
        status: StatusCode,
    },
    #[error(
        "registry {host} answered POST {url} with an upload location on another server \
         ({location}); noded uploads only to the registry itself"
    )]
    ForeignLocation {
        host: String,
        url: String,
        location: String,
    },
    #[error("registry {host} redirected GET {url} to {location}, which noded may not reach")]
    RedirectRefused {
        host: String,
        url: String,
        location: String,
        #[source]
        source: TargetError,
    },
    #[error(
        "registry {host} redirected GET {url} more than {MAX_REDIRECTS} times (a loop?), the \
         last time to {location}"
    )]
    Redirects {
        host: String,
        url: String,
        location: String,
    },
    #[error(
        "registry {host} names token endpoint {realm}, which is neither HTTPS nor a host \
         listed in --insecure-registry; noded sends credentials for tokens over HTTPS only"
    )]
    Realm { host: String, realm: String },
    #[error(
        "registry {host} requires credentials and none were given ({method} {url} answered {status})"
    )]
    NoCredentials {
        host: String,
        method: Method,
        url: String,
        status: StatusCode,
    },
    #[error(
        "registry {host} refused the credentials: {method} {url} answered {status}{}",
        summary_suffix(summary)
    )]
    Denied {
        host: String,
        method: Method,
        url: String,
        status: StatusCode,
        summary: Option<String>,
    },
    #[error(
        "registry {host} answered {method} {url} with 401 and no usable WWW-Authenticate challenge ({challenge:?})"
    )]
    Challenge {
        host: String,
        method: Method,
        url: String,
        challenge: String,
    },
    #[error("getting a token for registry {host}")]
    Token {
        host: String,
        #[source]
        source: Box<PushError>,
    },
    #[error("getting a token for registry {host}: {url} answered without a token")]
    NoToken { host: String, url: String },
    #[error("registry {host} stored the manifest as {found}, not {expected}")]
    ManifestDigest {
        host: String,
        found: String,
        expected: String,
    },
    #[error("not an image pushed by digest: {0}")]
    Image(String),
    #[error("reading {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("compressing the archive layer into {}", path.display())]
    Compress {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("blob {digest} is {found} bytes in the local layout, its descriptor says {expected}")]
    Size {
        digest: String,
        found: u64,
        expected: u64,
    },
    #[error("parsing the local manifest {digest}")]
    Manifest {
        digest: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
    #[error(transparent)]
    Layout(#[from] OciError),
    #[error(transparent)]
    Target(#[from] TargetError),
}

impl PushError {
    /// The registry answered and will not do it (deletes disabled, not allowed, bad request,
    /// credentials refused or missing): asking again changes nothing. Timeouts, 5xx, 408 and
    /// 429 may pass.
    pub fn is_refusal(&self) -> bool {
        match self {
            Self::Status { status, .. } => {
                status.is_client_error()
                    && *status != StatusCode::REQUEST_TIMEOUT
                    && *status != StatusCode::TOO_MANY_REQUESTS
            }
            Self::NoCredentials { .. }
            | Self::Denied { .. }
            | Self::Challenge { .. }
            | Self::ForeignLocation { .. }
            | Self::RedirectRefused { .. }
            | Self::Redirects { .. }
            | Self::Realm { .. }
            | Self::Target(_)
            | Self::Image(_) => true,
            Self::Token { source, .. } => source.is_refusal(),
            _ => false,
        }
    }
}
