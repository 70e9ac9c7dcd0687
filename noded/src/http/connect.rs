//! TCP connections of the HTTP client. With an address check, a host is resolved here and
//! every address it resolves to is checked before one is connected to: the address connected
//! to is one that was checked (no second lookup between check and connect), and an IP address
//! written in the URL is checked too.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

use super::CONNECT_TIMEOUT;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Decides whether `host`, resolved to these addresses, may be connected to.
pub type AddressCheck = Arc<dyn Fn(&str, &[IpAddr]) -> Result<(), BoxError> + Send + Sync>;

#[derive(Clone)]
pub struct Connector {
    inner: HttpConnector,
    check: Option<AddressCheck>,
}

impl Connector {
    pub fn new(inner: HttpConnector, check: Option<AddressCheck>) -> Self {
        Self { inner, check }
    }
}

/// The addresses `host` (a name, or an IP address, IPv6 in brackets or not) resolves to.
pub async fn resolve(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let lookup = tokio::net::lookup_host((bare, port));
    let found: Vec<SocketAddr> = tokio::time::timeout(CONNECT_TIMEOUT, lookup)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("resolving {bare}")))??
        .collect();
    if found.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("{bare} resolves to no address"),
        ));
    }
    Ok(found)
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let mut inner = self.inner.clone();
        let Some(check) = self.check.clone() else {
            return Box::pin(async move { inner.call(uri).await.map_err(Into::into) });
        };
        Box::pin(async move {
            let host = uri.host().ok_or("a URL without a host")?;
            let https = uri.scheme_str() == Some("https");
            let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
            let addresses = resolve(host, port).await?;
            let ips: Vec<IpAddr> = addresses.iter().map(SocketAddr::ip).collect();
            check(host, &ips)?;
            let mut failed = None;
            for address in addresses {
                // Only the address is read from this URL; TLS above still names `host`.
                let at = Uri::builder()
                    .scheme("http")
                    .authority(address.to_string())
                    .path_and_query("/")
                    .build()?;
                match inner.call(at).await {
                    Ok(stream) => return Ok(stream),
                    Err(e) => failed = Some(e),
                }
            }
            Err(failed.map_or_else(|| "no address to connect to".into(), Into::into))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refuse_loopback() -> AddressCheck {
        Arc::new(|host: &str, ips: &[IpAddr]| {
            if ips.iter().any(IpAddr::is_loopback) {
                return Err(format!("{host} is loopback").into());
            }
            Ok(())
        })
    }

    #[tokio::test]
    async fn a_checked_connector_refuses_before_connecting() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connector = Connector::new(HttpConnector::new(), Some(refuse_loopback()));
        for url in [
            format!("http://{addr}/"),
            format!("http://localhost:{}/", addr.port()),
            format!("https://[::1]:{}/", addr.port()),
        ] {
            let e = connector.call(url.parse().unwrap()).await.err().unwrap();
            assert!(e.to_string().contains("is loopback"), "{url}: {e}");
        }
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(50), listener.accept());
        assert!(accepted.await.is_err(), "nothing connected");

        let mut open = Connector::new(HttpConnector::new(), None);
        assert!(
            open.call(format!("http://{addr}/").parse().unwrap())
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn names_and_addresses_resolve() {
        let v6 = resolve("[::1]", 5000).await.unwrap();
        assert_eq!(v6, vec!["[::1]:5000".parse().unwrap()]);
        let v4 = resolve("10.77.0.1", 443).await.unwrap();
        assert_eq!(v4, vec!["10.77.0.1:443".parse().unwrap()]);
        let named = resolve("localhost", 80).await.unwrap();
        assert!(named.iter().all(|a| a.ip().is_loopback()), "{named:?}");
    }
}
