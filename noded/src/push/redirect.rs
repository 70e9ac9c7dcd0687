//! Following a registry's redirects of a pushed copy's GETs: registries backed by object
//! storage (S3 and the like, most public ones) answer blob GETs with a redirect to it. At most
//! [`MAX_REDIRECTS`] hops; the registry's credentials go only to its own scheme and authority;
//! every other host is reached as a push target would be ([`super::Targets`]: allowed, and not
//! resolving to the node itself, a link-local address such as the metadata service, or a
//! private one when refused), so that a redirect never takes noded where a push could not.

use axum::body::Body;
use axum::http::{Method, Response, StatusCode, header};
use checkpointing::reference::normalise_host;

use super::auth::Scope;
use super::location::{origin, resolve};
use super::send::Retryable;
use super::summary::shown_url;
use super::{PushError, Pusher};

/// Redirects followed for one request, as most HTTP clients do; more is a loop.
pub const MAX_REDIRECTS: usize = 5;

/// One redirect to follow.
#[derive(Debug, PartialEq, Eq)]
pub struct Hop {
    pub url: String,
    /// `HOST[:PORT]` normalised, as push targets' are.
    pub host: String,
    /// On the registry's own scheme and authority: its credentials go along.
    pub own: bool,
}

/// Whether a GET answered `status` is sent on to its `Location`.
pub fn is_redirect(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT
    )
}

/// Where the redirect to `location`, answered to a GET of `url`, goes, for the registry first
/// asked at `registry_url`: `None` unless an HTTP(S) URL without userinfo, which would make
/// its host read otherwise.
pub fn hop(registry_url: &str, url: &str, location: &str) -> Option<Hop> {
    let next = resolve(url, location)?;
    let (scheme, authority) = origin(&next)?;
    if !matches!(scheme.as_str(), "http" | "https") || authority.contains('@') {
        return None;
    }
    Some(Hop {
        host: normalise_host(&authority).ok()?,
        own: origin(&next) == origin(registry_url),
        url: next,
    })
}

impl Pusher {
    /// `response`, answered to `request` (a GET), or where its redirects lead.
    pub(super) async fn followed(
        &self,
        scope: &Scope<'_>,
        request: &Retryable<'_>,
        mut response: Response<Body>,
    ) -> Result<Response<Body>, PushError> {
        let mut at = request.url.to_owned();
        let mut hops = 0;
        while is_redirect(response.status()) {
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let Some(next) = hop(request.url, &at, location) else {
                return Err(PushError::NoLocation {
                    method: Method::GET,
                    url: shown_url(&at),
                    status: response.status(),
                });
            };
            if hops == MAX_REDIRECTS {
                return Err(PushError::Redirects {
                    host: scope.host.to_owned(),
                    url: shown_url(request.url),
                    location: shown_url(&next.url),
                });
            }
            hops += 1;
            let onward = Retryable {
                url: &next.url,
                ..request.clone()
            };
            response = if next.own {
                self.authorized(scope, &onward).await?
            } else {
                self.send(&next.host, onward.build(None)?, None)
                    .await
                    .map_err(|e| match e {
                        PushError::Target(source) => PushError::RedirectRefused {
                            host: scope.host.to_owned(),
                            url: shown_url(request.url),
                            location: shown_url(&next.url),
                            source,
                        },
                        e => e,
                    })?
            };
            at = next.url;
        }
        Ok(response)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGISTRY: &str = "https://r.example:5000/v2/team/cp/blobs/sha256:aa";

    #[test]
    fn a_redirect_keeps_the_credentials_on_the_registrys_own_origin_only() {
        let to = |location: &str| hop(REGISTRY, REGISTRY, location);
        let storage = to("https://Bucket.S3.example/cp/aa?X-Amz-Signature=s").unwrap();
        assert_eq!(storage.host, "bucket.s3.example");
        assert!(!storage.own);
        assert_eq!(
            storage.url,
            "https://Bucket.S3.example/cp/aa?X-Amz-Signature=s"
        );
        let here = to("/v2/team/cp/blobs/sha256:aa?mirror=1").unwrap();
        assert_eq!(
            (here.host.as_str(), here.own),
            ("r.example:5000", true),
            "{here:?}"
        );
        for elsewhere in [
            "http://r.example:5000/v2/x",
            "https://r.example:5001/v2/x",
            "//r.example/x",
        ] {
            assert!(!to(elsewhere).unwrap().own, "{elsewhere}");
        }
        for unusable in [
            "",
            " ",
            "file:///etc/shadow",
            "https://r.example:5000@meta/x",
        ] {
            assert_eq!(to(unusable), None, "{unusable:?}");
        }
        assert!(is_redirect(StatusCode::TEMPORARY_REDIRECT));
        assert!(!is_redirect(StatusCode::NOT_MODIFIED));
    }
}
