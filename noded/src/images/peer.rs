//! Node-to-node transfer of checkpoint images: the [`Upstream`] of an image held by another
//! node's noded, whose peer server (admitting us by `registry::PeerAuth`) presents the
//! certificate its Lease pins, and which we present our peer token to.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::body::Body;
use axum::http::{Request, Response, StatusCode, header};
use checkpointing::oci::MANIFEST_MEDIA_TYPE;

use super::Repo;
use super::fetch::{FetchError, Upstream};
use crate::http::{self, HttpClient, SendError, Tls};

pub struct PeerClient {
    /// Port of every node's peer server.
    pub port: u16,
    token_file: PathBuf,
}

impl PeerClient {
    pub fn new(port: u16, token_file: PathBuf) -> Self {
        Self { port, token_file }
    }

    /// The peer server at `peer`, which must present the certificate with SHA-256 `pin`, as
    /// the upstream of `repo`'s images.
    pub async fn upstream(
        &self,
        peer: SocketAddr,
        pin: &str,
        repo: &Repo,
    ) -> Result<Peer, FetchError> {
        // Re-read every time: projected ServiceAccount tokens rotate.
        let token = tokio::fs::read_to_string(&self.token_file)
            .await
            .map_err(|source| FetchError::Token {
                path: self.token_file.clone(),
                source,
            })?;
        let token = token.trim();
        if token.is_empty() {
            return Err(FetchError::EmptyToken(self.token_file.clone()));
        }
        Ok(Peer {
            http: http::client(Tls::Pinned(pin.to_owned())).map_err(FetchError::Client)?,
            base: format!("https://{peer}/v2/{}/{}", repo.namespace, repo.name),
            token: token.to_owned(),
        })
    }
}

/// One peer server, for one repository.
pub struct Peer {
    http: HttpClient,
    base: String,
    token: String,
}

impl Upstream for Peer {
    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    async fn get(&self, path: &str) -> Result<Response<Body>, FetchError> {
        let url = self.url(path);
        let request = Request::get(&url)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::ACCEPT, MANIFEST_MEDIA_TYPE)
            .body(Body::empty())
            .map_err(|_| FetchError::Status {
                url: url.clone(),
                status: StatusCode::BAD_REQUEST,
            })?;
        http::send(&self.http, request, None)
            .await
            .map_err(|e| match e {
                SendError::Timeout(timeout) => FetchError::Timeout { url, timeout },
                SendError::Request(source) => FetchError::Request { url, source },
            })
    }
}
