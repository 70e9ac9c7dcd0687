//! Requests the registry cannot answer with content, as OCI distribution error responses.

use crate::error::error_chain;
use crate::images::ImageError;
use crate::restore::RestoreError;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The distribution API version header every answer carries.
pub const API_VERSION: (&str, &str) = ("docker-distribution-api-version", "registry/2.0");

/// A request that cannot be answered with content, as a status and an OCI error body.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    BadPath(String),
    #[error("only GET and HEAD are served")]
    Unsupported,
    /// No or unproven credentials; `scheme` is the one to answer with (Basic or Bearer).
    #[error("{why}")]
    Unauthorized { scheme: &'static str, why: String },
    /// Proven credentials that may not have what they ask for.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NameUnknown(String),
    #[error("{0}")]
    ManifestUnknown(String),
    #[error("{0}")]
    BlobUnknown(String),
    /// The peer holding the image failed us.
    #[error("{0}")]
    Upstream(String),
    /// The base image could not be made present, or a dependency is down.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl Problem {
    pub fn status(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadPath(_) => (StatusCode::NOT_FOUND, "NAME_INVALID"),
            Self::Unsupported => (StatusCode::METHOD_NOT_ALLOWED, "UNSUPPORTED"),
            Self::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "UNAUTHORIZED"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "DENIED"),
            Self::NameUnknown(_) => (StatusCode::NOT_FOUND, "NAME_UNKNOWN"),
            Self::ManifestUnknown(_) => (StatusCode::NOT_FOUND, "MANIFEST_UNKNOWN"),
            Self::BlobUnknown(_) => (StatusCode::NOT_FOUND, "BLOB_UNKNOWN"),
            Self::Upstream(_) => (StatusCode::BAD_GATEWAY, "UNKNOWN"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        }
    }
}

impl From<ImageError> for Problem {
    fn from(e: ImageError) -> Self {
        match e {
            ImageError::Unknown(why) => Self::ManifestUnknown(why),
            ImageError::Unavailable(why) => Self::Unavailable(why),
            ImageError::Upstream(why) => Self::Upstream(why),
            ImageError::Internal(why) => Self::Internal(why),
        }
    }
}

impl From<RestoreError> for Problem {
    fn from(e: RestoreError) -> Self {
        match e {
            RestoreError::Image(e) => e.into(),
            RestoreError::Archive(why) => Self::Internal(why),
            e @ (RestoreError::BaseImage { .. } | RestoreError::Volumes { .. }) => {
                Self::Unavailable(error_chain(&e))
            }
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let challenge = match &self {
            Self::Unauthorized { scheme, .. } => {
                HeaderValue::from_str(&format!("{scheme} realm=\"checkpoint-noded\"")).ok()
            }
            _ => None,
        };
        let body = serde_json::json!({
            "errors": [{"code": code, "message": self.to_string(), "detail": null}]
        })
        .to_string();
        let mut response = (
            status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::HeaderName::from_static(API_VERSION.0),
                    API_VERSION.1,
                ),
            ],
            body,
        )
            .into_response();
        if let Some(challenge) = challenge {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
        }
        response
    }
}
