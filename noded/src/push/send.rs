//! Sending a push's requests, authenticating as the registry asks: a request goes with the
//! cached authorization for its scope, or none; a `401` is answered per its challenge (Basic
//! credentials, or a bearer token from the registry's token endpoint) and the request is sent
//! once more.

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use bytes::Bytes;

use super::auth::{self, Challenge, Scope};
use super::summary::{one_line, shown_url, summarise};
use super::{MAX_ERROR_BODY, PushError, Pusher, TargetError};
use crate::http::{self, Progress, SendError};

/// Token answers are small; a larger one is not a token endpoint's.
const MAX_TOKEN_ANSWER: usize = 64 << 10;
/// Longest `WWW-Authenticate` value quoted in a message.
const MAX_CHALLENGE: usize = 200;

/// A request that can be sent twice: its body is bytes (or nothing).
#[derive(Clone)]
pub struct Retryable<'a> {
    pub method: Method,
    pub url: &'a str,
    pub content_type: Option<&'static str>,
    /// The media type asked for (a manifest's).
    pub accept: Option<&'static str>,
    pub body: Bytes,
}

impl Retryable<'_> {
    pub fn build(&self, authorization: Option<&HeaderValue>) -> Result<Request<Body>, PushError> {
        let mut request = Request::builder().method(self.method.clone()).uri(self.url);
        if let Some(content_type) = self.content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        if let Some(accept) = self.accept {
            request = request.header(header::ACCEPT, accept);
        }
        if self.method == Method::POST || self.method == Method::PUT {
            request = request.header(header::CONTENT_LENGTH, self.body.len());
        }
        if let Some(authorization) = authorization {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        request
            .body(Body::from(self.body.clone()))
            .map_err(|e| not_sent(&self.method, self.url, e))
    }
}

fn not_sent(method: &Method, url: &str, e: axum::http::Error) -> PushError {
    PushError::NotSent {
        method: method.clone(),
        url: shown_url(url),
        reason: e.to_string(),
    }
}

impl Pusher {
    /// Sends `request` with the scope's cached authorization; on a `401`, authenticates as the
    /// challenge says and sends it again. A `401` then is the registry refusing.
    pub(super) async fn authorized(
        &self,
        scope: &Scope<'_>,
        request: &Retryable<'_>,
    ) -> Result<Response<Body>, PushError> {
        let cached = self.tokens.get(scope);
        let response = self
            .send(scope.host, request.build(cached.as_ref())?, None)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        if cached.is_some() {
            // Revoked or expired early: a fresh one, once.
            self.tokens.forget(scope);
        }
        let header = response
            .headers()
            .get(header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let Some(challenge) = auth::parse_challenge(&header) else {
            return Err(PushError::Challenge {
                host: scope.host.to_owned(),
                method: request.method.clone(),
                url: shown_url(request.url),
                challenge: one_line(&header, MAX_CHALLENGE),
            });
        };
        let authorization = self
            .authenticate(scope, challenge, &request.method, request.url)
            .await?;
        let response = self
            .send(scope.host, request.build(Some(&authorization))?, None)
            .await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            self.tokens.forget(scope);
            return Err(refused(scope, &request.method, request.url, response).await);
        }
        Ok(response)
    }

    /// Sends a `PUT` of a streamed body, which cannot be sent again: with the authorization
    /// an earlier request of the same scope left cached.
    pub(super) async fn streamed(
        &self,
        scope: &Scope<'_>,
        url: &str,
        size: u64,
        body: Body,
        progress: &Progress,
    ) -> Result<Response<Body>, PushError> {
        let mut request = Request::put(url)
            .header(header::CONTENT_TYPE, "application/octet-stream")
            .header(header::CONTENT_LENGTH, size);
        if let Some(authorization) = self.tokens.get(scope) {
            request = request.header(header::AUTHORIZATION, authorization);
        }
        let request = request
            .body(body)
            .map_err(|e| not_sent(&Method::PUT, url, e))?;
        let response = self.send(scope.host, request, Some(progress)).await?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(refused(scope, &Method::PUT, url, response).await);
        }
        Ok(response)
    }

    /// The `Authorization` a challenge asks for, cached for the scope's next requests.
    async fn authenticate(
        &self,
        scope: &Scope<'_>,
        challenge: Challenge,
        method: &Method,
        url: &str,
    ) -> Result<HeaderValue, PushError> {
        let (realm, service) = match challenge {
            Challenge::Basic => {
                let Some(credentials) = scope.credentials else {
                    return Err(PushError::NoCredentials {
                        host: scope.host.to_owned(),
                        method: method.clone(),
                        url: shown_url(url),
                        status: StatusCode::UNAUTHORIZED,
                    });
                };
                self.tokens.basic(scope);
                return Ok(credentials.basic());
            }
            Challenge::Bearer { realm, service } => (realm, service),
        };
        if !auth::realm_allowed(&realm, &self.insecure_hosts) {
            return Err(PushError::Realm {
                host: scope.host.to_owned(),
                realm: shown_url(&realm),
            });
        }
        let token_url =
            auth::token_url(&realm, service.as_deref(), scope.repository, scope.actions);
        let in_token = |source: PushError| PushError::Token {
            host: scope.host.to_owned(),
            source: Box::new(source),
        };
        let mut request = Request::get(&token_url);
        // Anonymous otherwise: public registries hand out pull tokens to anyone.
        if let Some(credentials) = scope.credentials {
            request = request.header(header::AUTHORIZATION, credentials.basic());
        }
        let request = request
            .body(Body::empty())
            .map_err(|e| in_token(not_sent(&Method::GET, &token_url, e)))?;
        let response = self
            .send(scope.host, request, None)
            .await
            .map_err(in_token)?;
        if response.status() == StatusCode::UNAUTHORIZED {
            return Err(refused(scope, &Method::GET, &token_url, response).await);
        }
        let mut response = Self::success(Method::GET, &token_url, response)
            .await
            .map_err(in_token)?;
        let body = http::read_prefix(response.body_mut(), MAX_TOKEN_ANSWER)
            .await
            .unwrap_or_default();
        let Some((token, lifetime)) = auth::parse_token(&body) else {
            return Err(PushError::NoToken {
                host: scope.host.to_owned(),
                url: shown_url(&token_url),
            });
        };
        let authorization = auth::sensitive(format!("Bearer {token}"));
        self.tokens.bearer(scope, token, lifetime);
        Ok(authorization)
    }

    /// Sends `request` on behalf of `host` (a registry's, or where it redirected to), through
    /// the client its reach allows.
    pub(super) async fn send(
        &self,
        host: &str,
        request: Request<Body>,
        progress: Option<&Progress>,
    ) -> Result<Response<Body>, PushError> {
        let method = request.method().clone();
        let url = shown_url(&request.uri().to_string());
        let client = self.client_for(host)?;
        http::send(client, request, progress)
            .await
            .map_err(|e| match e {
                SendError::Request(source) => match refused_target(&source) {
                    Some(refused) => PushError::Target(refused),
                    None => PushError::Request {
                        method,
                        url,
                        source,
                    },
                },
                SendError::Timeout(timeout) => PushError::Timeout {
                    method,
                    url,
                    timeout,
                },
            })
    }

    /// The response if it is a success, else an error carrying the registry's explanation
    /// (its error codes, never its body).
    pub(super) async fn success(
        method: Method,
        url: &str,
        response: Response<Body>,
    ) -> Result<Response<Body>, PushError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        Err(PushError::Status {
            method,
            url: shown_url(url),
            status,
            summary: error_summary(response).await,
        })
    }
}

/// The error codes and messages of an error response ([`summarise`]).
async fn error_summary(response: Response<Body>) -> Option<String> {
    let mut body = response.into_body();
    let bytes = http::read_prefix(&mut body, MAX_ERROR_BODY).await.ok()?;
    summarise(&bytes)
}

/// A `401` after authenticating (or from the token endpoint): credentials refused, or none
/// given where they are needed.
async fn refused(
    scope: &Scope<'_>,
    method: &Method,
    url: &str,
    response: Response<Body>,
) -> PushError {
    let status = response.status();
    if scope.credentials.is_none() {
        return PushError::NoCredentials {
            host: scope.host.to_owned(),
            method: method.clone(),
            url: shown_url(url),
            status,
        };
    }
    PushError::Denied {
        host: scope.host.to_owned(),
        method: method.clone(),
        url: shown_url(url),
        status,
        summary: error_summary(response).await,
    }
}

/// The refusal of an address check among the causes of a failed request.
fn refused_target(error: &(dyn std::error::Error + 'static)) -> Option<TargetError> {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(refused) = e.downcast_ref::<TargetError>() {
            return Some(refused.clone());
        }
        cause = e.source();
    }
    None
}
