//! A fake OCI registry that records what is pushed to it and deletes manifests by digest.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};

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
    uploads: u64,
}

pub struct Registry {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<State>>,
}

impl Registry {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let router = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Body| {
                let state = shared.clone();
                async move { handle(&state, method, uri, headers, body).await }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, state }
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
    state.requests.push(Seen {
        method: method.clone(),
        target: uri.to_string(),
        content_type: text(header::CONTENT_TYPE),
        content_length: text(header::CONTENT_LENGTH),
        chunked: text(header::TRANSFER_ENCODING).is_some(),
        authorization: text(header::AUTHORIZATION),
    });
    let path = uri.path().strip_prefix("/v2/").unwrap_or_default();
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
    if let Some(repo) = path.strip_suffix("/blobs/uploads/")
        && method == Method::POST
    {
        state.uploads += 1;
        let location = format!("/v2/{repo}/blobs/uploads/u{}?_state=s", state.uploads);
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
            return answer(status, &[], "{\"errors\":[{\"code\":\"UNKNOWN\"}]}");
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
