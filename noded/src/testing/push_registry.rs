//! A fake OCI registry that records what is pushed to it, serves it back by digest (or
//! redirects blob GETs elsewhere) and deletes manifests by digest;
//! optionally behind Basic auth or bearer tokens from its own token endpoint (`/token`).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use base64::Engine as _;

/// The `service` the bearer challenge names; with a comma, as challenge parsing must cope.
pub const SERVICE: &str = "fake registry, for tests";

/// How requests must authenticate.
#[derive(Clone, Debug, Default)]
pub enum Auth {
    #[default]
    Anonymous,
    /// `Authorization: Basic` with this user and password.
    Basic { username: String, password: String },
    /// Bearer tokens from `/token`, which wants Basic credentials of this user and password;
    /// a token is good for the repository and actions it was asked for only.
    Bearer { username: String, password: String },
}

/// One request as the registry saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub target: String,
    pub content_type: Option<String>,
    pub content_length: Option<String>,
    pub chunked: bool,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub struct State {
    pub requests: Vec<Seen>,
    /// Blobs by digest.
    pub blobs: HashMap<String, Vec<u8>>,
    /// Manifests by `<repo>:<tag>`, with their content type.
    pub manifests: HashMap<String, (String, Vec<u8>)>,
    /// Answer manifest PUTs with this status.
    pub manifest_status: Option<StatusCode>,
    /// Answer manifest DELETEs with this status (as a registry with deletes disabled does).
    pub delete_status: Option<StatusCode>,
    /// The body of a refused manifest PUT instead of distribution's error JSON.
    pub error_body: Option<String>,
    /// Answer upload POSTs with this `Location` (a hostile registry's, say).
    pub location: Option<String>,
    /// Answer blob GETs with `307 Temporary Redirect` to this followed by the digest (where
    /// the blobs are stored, or this registry's own path: a loop).
    pub blob_redirect: Option<String>,
    /// Name this token endpoint in bearer challenges instead of the registry's own.
    pub realm: Option<String>,
    pub auth: Auth,
    /// The `scope` of every token request, granted or not.
    pub token_requests: Vec<String>,
    /// Scopes (`repository:<repo>:<actions>`) by the tokens issued.
    tokens: HashMap<String, String>,
    /// `http://<addr>` or `https://<addr>`.
    origin: String,
    uploads: u64,
}

pub struct Registry {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl Registry {
    /// Over plain HTTP, anonymous.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, router) = Self::router(format!("http://{addr}"));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, state }
    }

    /// Over HTTPS with `config`'s certificate, anonymous.
    pub async fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let listener = checkpointing::tls::TlsListener::new(listener, config).unwrap();
        let (state, router) = Self::router(format!("https://{addr}"));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, state }
    }

    fn router(origin: String) -> (Arc<Mutex<State>>, Router) {
        let state = Arc::new(Mutex::new(State {
            origin,
            ..State::default()
        }));
        let shared = state.clone();
        let router = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Body| {
                let state = shared.clone();
                async move { handle(&state, method, uri, headers, body).await }
            },
        );
        (state, router)
    }

    /// Requires `auth` from now on.
    pub fn require(&self, auth: Auth) {
        self.state.lock().unwrap().auth = auth;
    }

    pub fn requests(&self) -> Vec<(Method, String)> {
        let state = self.state.lock().unwrap();
        state
            .requests
            .iter()
            .map(|r| (r.method.clone(), r.target.clone()))
            .collect()
    }
}

fn answer(status: StatusCode, headers: &[(&str, String)], body: &str) -> Response<Body> {
    let mut response = Response::builder().status(status);
    for (k, v) in headers {
        response = response.header(*k, v);
    }
    response.body(Body::from(body.to_owned())).unwrap()
}

async fn handle(
    state: &Mutex<State>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response<Body> {
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap().to_vec();
    let text = |name| {
        headers
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut state = state.lock().unwrap();
    if uri.path() == "/token" {
        return token(&mut state, &uri, text(header::AUTHORIZATION));
    }
    state.requests.push(Seen {
        method: method.clone(),
        target: uri.to_string(),
        content_type: text(header::CONTENT_TYPE),
        content_length: text(header::CONTENT_LENGTH),
        chunked: text(header::TRANSFER_ENCODING).is_some(),
        authorization: text(header::AUTHORIZATION),
    });
    let path = uri.path().strip_prefix("/v2/").unwrap_or_default();
    if let Some(refusal) = check_auth(&state, &method, path, text(header::AUTHORIZATION)) {
        return refusal;
    }
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":")))
        .collect();
    if let Some((_, digest)) = path.split_once("/blobs/")
        && !digest.starts_with("uploads/")
        && method == Method::HEAD
    {
        return match state.blobs.get(digest) {
            Some(b) => answer(
                StatusCode::OK,
                &[("content-length", b.len().to_string())],
                "",
            ),
            None => answer(StatusCode::NOT_FOUND, &[], ""),
        };
    }
    if let Some((_, digest)) = path.split_once("/blobs/")
        && method == Method::GET
    {
        if let Some(prefix) = &state.blob_redirect {
            let location = format!("{prefix}{digest}");
            return answer(
                StatusCode::TEMPORARY_REDIRECT,
                &[("location", location)],
                "",
            );
        }
        return match state.blobs.get(digest) {
            Some(b) => Response::new(Body::from(b.clone())),
            None => answer(StatusCode::NOT_FOUND, &[], ""),
        };
    }
    if let Some((repo, digest)) = path.split_once("/manifests/")
        && method == Method::GET
    {
        let found = state.manifests.iter().find(|(key, (_, bytes))| {
            key.starts_with(&format!("{repo}:"))
                && format!("sha256:{}", checkpointing::digest::sha256_hex(bytes)) == digest
        });
        return match found {
            Some((_, (content_type, bytes))) => {
                let mut response = Response::new(Body::from(bytes.clone()));
                if let Ok(value) = content_type.parse() {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                response
            }
            None => answer(StatusCode::NOT_FOUND, &[], "MANIFEST_UNKNOWN"),
        };
    }
    if let Some(repo) = path.strip_suffix("/blobs/uploads/")
        && method == Method::POST
    {
        state.uploads += 1;
        let location = match &state.location {
            Some(location) => location.clone(),
            None => format!("/v2/{repo}/blobs/uploads/u{}?_state=s", state.uploads),
        };
        return answer(StatusCode::ACCEPTED, &[("location", location)], "");
    }
    if path.contains("/blobs/uploads/u") && method == Method::PUT {
        let digest = query.get("digest").cloned().unwrap_or_default();
        if query.get("_state").map(String::as_str) != Some("s")
            || digest != format!("sha256:{}", checkpointing::digest::sha256_hex(&body))
        {
            return answer(StatusCode::BAD_REQUEST, &[], "DIGEST_INVALID");
        }
        state.blobs.insert(digest, body);
        return answer(StatusCode::CREATED, &[], "");
    }
    if let Some((repo, tag)) = path.split_once("/manifests/")
        && method == Method::PUT
    {
        if let Some(status) = state.manifest_status {
            let body = state.error_body.as_deref();
            return answer(
                status,
                &[],
                body.unwrap_or("{\"errors\":[{\"code\":\"UNKNOWN\"}]}"),
            );
        }
        let digest = format!("sha256:{}", checkpointing::digest::sha256_hex(&body));
        let content_type = text(header::CONTENT_TYPE).unwrap_or_default();
        state
            .manifests
            .insert(format!("{repo}:{tag}"), (content_type, body));
        return answer(
            StatusCode::CREATED,
            &[("docker-content-digest", digest)],
            "",
        );
    }
    if let Some((repo, digest)) = path.split_once("/manifests/")
        && method == Method::DELETE
    {
        if let Some(status) = state.delete_status {
            return answer(status, &[], "{\"errors\":[{\"code\":\"UNSUPPORTED\"}]}");
        }
        let before = state.manifests.len();
        state.manifests.retain(|key, (_, bytes)| {
            !(key.starts_with(&format!("{repo}:"))
                && format!("sha256:{}", checkpointing::digest::sha256_hex(bytes)) == digest)
        });
        let status = if state.manifests.len() < before {
            StatusCode::ACCEPTED
        } else {
            StatusCode::NOT_FOUND
        };
        return answer(status, &[], "");
    }
    answer(StatusCode::NOT_FOUND, &[], "no such route")
}

fn basic(username: &str, password: &str) -> String {
    let encoded =
        base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    format!("Basic {encoded}")
}

/// A `401` with `challenge`, unless `authorization` is good for `method` on `path`'s
/// repository.
fn check_auth(
    state: &State,
    method: &Method,
    path: &str,
    authorization: Option<String>,
) -> Option<Response<Body>> {
    let unauthorized = |challenge: String| {
        Some(answer(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", challenge)],
            "{\"errors\":[{\"code\":\"UNAUTHORIZED\"}]}",
        ))
    };
    match &state.auth {
        Auth::Anonymous => None,
        Auth::Basic { username, password } => {
            if authorization == Some(basic(username, password)) {
                None
            } else {
                unauthorized("Basic realm=\"fake registry\"".to_owned())
            }
        }
        Auth::Bearer { .. } => {
            let repository = path
                .split_once("/blobs/")
                .or_else(|| path.split_once("/manifests/"))
                .map_or("", |(repository, _)| repository);
            let action = match *method {
                Method::GET | Method::HEAD => "pull",
                Method::DELETE => "delete",
                _ => "push",
            };
            let granted = authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .and_then(|token| state.tokens.get(token))
                .and_then(|scope| scope.strip_prefix(&format!("repository:{repository}:")))
                .is_some_and(|actions| actions.split(',').any(|a| a == action));
            if granted {
                return None;
            }
            let realm = state
                .realm
                .clone()
                .unwrap_or_else(|| format!("{}/token", state.origin));
            unauthorized(format!(
                "Bearer realm=\"{realm}\",service=\"{SERVICE}\",scope=\"repository:{repository}:{action}\""
            ))
        }
    }
}

/// The token endpoint: a token for the asked scope, to the bearer auth's user.
fn token(state: &mut State, uri: &Uri, authorization: Option<String>) -> Response<Body> {
    let query: HashMap<String, String> = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), percent_decode(v)))
        .collect();
    let scope = query.get("scope").cloned().unwrap_or_default();
    state.token_requests.push(scope.clone());
    let Auth::Bearer { username, password } = &state.auth else {
        return answer(StatusCode::NOT_FOUND, &[], "no token endpoint");
    };
    if authorization != Some(basic(username, password)) {
        return answer(
            StatusCode::UNAUTHORIZED,
            &[],
            "{\"details\":\"incorrect username or password\"}",
        );
    }
    if query.get("service").map(String::as_str) != Some(SERVICE)
        || !scope.starts_with("repository:")
    {
        return answer(StatusCode::BAD_REQUEST, &[], "bad service or scope");
    }
    use std::hash::BuildHasher as _;
    let random = |n: usize| std::collections::hash_map::RandomState::new().hash_one(n);
    let token = format!("{:016x}{:016x}", random(state.tokens.len()), random(0));
    state.tokens.insert(token.clone(), scope);
    answer(
        StatusCode::OK,
        &[("content-type", "application/json".to_owned())],
        &format!("{{\"token\":\"{token}\",\"expires_in\":300}}"),
    )
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
