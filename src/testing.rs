//! Test fakes shared by both binaries (feature `test-util`): a recording stand-in for the API
//! server that answers each request from a table the test fills and remembers what was asked.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

/// One request as the API server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub uri: String,
    pub content_type: Option<String>,
    pub body: Option<Value>,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    /// Objects by path; a GET of any other path answers 404.
    objects: Arc<Mutex<HashMap<String, Value>>>,
    /// Writes to these paths fail with this HTTP status.
    failing: Arc<Mutex<HashMap<String, (u16, &'static str)>>>,
    /// Writes to these paths are answered only as permits are added, one each.
    held: Arc<Mutex<HashMap<String, Arc<tokio::sync::Semaphore>>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeApi {
    pub fn put(&self, path: &str, object: impl serde::Serialize) {
        let object = serde_json::to_value(object).expect("test object serializes");
        self.objects.lock().unwrap().insert(path.to_owned(), object);
    }

    pub fn fail_writes(&self, path: &str, code: u16, reason: &'static str) {
        self.failing
            .lock()
            .unwrap()
            .insert(path.to_owned(), (code, reason));
    }

    /// Writes to `path` are seen at once but answered only as the returned semaphore gets
    /// permits, one per write: what runs meanwhile shows what waits on the API server.
    pub fn hold_writes(&self, path: &str) -> Arc<tokio::sync::Semaphore> {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        self.held
            .lock()
            .unwrap()
            .insert(path.to_owned(), gate.clone());
        gate
    }

    /// Everything asked so far, and forget it.
    pub fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }

    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<kube::client::Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(request).await) }
        });
        kube::Client::new(service, "default")
    }

    async fn answer(&self, request: Request<kube::client::Body>) -> Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = body.collect_bytes().await.expect("request body");
        let body: Option<Value> = serde_json::from_slice(&bytes).ok();
        let path = parts.uri.path().to_owned();
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            uri: parts.uri.to_string(),
            content_type: parts
                .headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            body: body.clone(),
        });
        let held = self.held.lock().unwrap().get(&path).cloned();
        if let Some(gate) = held.filter(|_| parts.method != "GET") {
            gate.acquire().await.expect("gate stays open").forget();
        }
        // A subresource write lands on its object.
        let object_path = path.strip_suffix("/status").unwrap_or(&path);
        let stored = self.objects.lock().unwrap().get(object_path).cloned();
        let failing = self.failing.lock().unwrap().get(&path).copied();
        if let Some((code, reason)) = failing.filter(|_| parts.method != "GET") {
            let code = StatusCode::from_u16(code).expect("valid test status");
            return respond(code, &status(code.as_u16(), reason));
        }
        match (parts.method.as_str(), stored, body) {
            ("GET", Some(object), _) => respond(StatusCode::OK, &object),
            ("GET", None, _) => respond(StatusCode::NOT_FOUND, &status(404, "NotFound")),
            // A JSON patch (a list of operations) answers what is stored, unpatched.
            (_, Some(stored), Some(Value::Array(_))) => respond(StatusCode::OK, &stored),
            // Writes echo what was sent, over what is stored: enough for the shell, which only
            // looks at whether they succeeded.
            (_, stored, Some(mut sent)) => {
                if let (Some(Value::Object(stored)), Value::Object(sent)) = (stored, &mut sent) {
                    for (k, v) in stored {
                        sent.entry(k).or_insert(v);
                    }
                }
                respond(StatusCode::OK, &sent)
            }
            _ => respond(StatusCode::BAD_REQUEST, &status(400, "BadRequest")),
        }
    }
}

fn status(code: u16, reason: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": reason, "reason": reason, "code": code,
    })
}

fn respond(code: StatusCode, body: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string().into_bytes()))
        .expect("valid response")
}
