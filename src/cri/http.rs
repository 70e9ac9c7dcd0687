//! A runtime's own HTTP API on its CRI socket, beside gRPC: CRI-O answers `GET /config` (its
//! configuration in TOML) and `GET /info` there as plain HTTP.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use hyperlocal::UnixConnector;

use crate::error::error_chain;

/// `GET path` over `socket`, as plain HTTP, within `timeout`: the body, or why not in words.
pub async fn get(socket: &Path, path: &str, timeout: Duration) -> Result<String, String> {
    let get = async {
        let client: Client<UnixConnector, Empty<Bytes>> =
            Client::builder(TokioExecutor::new()).build(UnixConnector);
        let response = client
            .get(hyperlocal::Uri::new(socket, path).into())
            .await
            .map_err(|e| format!("connecting to {}: {}", socket.display(), error_chain(&e)))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    };
    match tokio::time::timeout(timeout, get).await {
        Ok(result) => result.map_err(|e| format!("CRI-O GET {path}: {e}")),
        Err(_) => Err(format!("CRI-O GET {path}: no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn crio_settings_are_read_over_its_socket_as_plain_http() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = tmp.path().join("crio.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let app = axum::Router::new()
            .route(
                "/config",
                axum::routing::get(|| async {
                    "[crio.checkpoint_restore]\ncontainer_level_enabled = \"checkpoint_restore\"\n"
                }),
            )
            .route(
                "/info",
                axum::routing::get(|| async { r#"{"cgroup_driver":"systemd"}"# }),
            );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let config = get(&socket, "/config", WAIT).await.unwrap();
        assert_eq!(
            crate::runtime::crio::parse_config(&config)
                .container_level_enabled
                .as_deref(),
            Some("checkpoint_restore")
        );
        assert!(
            get(&socket, "/info", WAIT)
                .await
                .unwrap()
                .contains("systemd")
        );
        let missing = get(&socket, "/nope", WAIT).await.unwrap_err();
        assert_eq!(missing, "CRI-O GET /nope: answered 404 Not Found");
        server.abort();
        let gone = get(&tmp.path().join("absent.sock"), "/info", WAIT)
            .await
            .unwrap_err();
        assert!(gone.contains("connecting to"), "{gone}");
    }
}
