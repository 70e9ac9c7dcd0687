//! Serving HTTP/1.1 with bounds a stranger cannot lift: at most so many connections per
//! listener ([`Capped`]), request headers within a deadline, idle connections closed after it
//! ([`serve`]). `axum::serve` has neither, so any client could hold connections open forever.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::serve::Listener;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// How long a client may take to send a request's headers, and a kept-alive connection may
/// stay idle: ample on any network, short enough that silent connections free their slot.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener that holds at most `max` connections at once: it accepts the next only when one
/// has closed, so the rest wait in the kernel's backlog instead of costing memory and tasks
/// here. Wrapped by [`crate::tls::TlsListener`] (feature `tls`), the cap includes handshakes.
pub struct Capped<L> {
    inner: L,
    permits: Arc<Semaphore>,
}

impl<L> Capped<L> {
    /// Caps `inner` at `max` connections (at least one).
    pub fn new(inner: L, max: usize) -> Self {
        Self {
            inner,
            permits: Arc::new(Semaphore::new(max.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }
}

impl<L: Listener> Listener for Capped<L> {
    type Io = Permitted<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed; were it, accepting nothing more is the safe answer.
        let Ok(permit) = self.permits.clone().acquire_owned().await else {
            return std::future::pending().await;
        };
        let (io, addr) = self.inner.accept().await;
        (
            Permitted {
                io,
                _permit: permit,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection of a [`Capped`] listener: its slot is free again when it is dropped.
pub struct Permitted<I> {
    io: I,
    _permit: OwnedSemaphorePermit,
}

impl<I: AsyncRead + Unpin> AsyncRead for Permitted<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Permitted<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How [`serve`] times clients out and shuts down.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// Time open connections (a response being streamed) get to finish once `stop` resolved.
    pub grace: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: HEADER_READ_TIMEOUT,
            grace: Duration::from_secs(10),
        }
    }
}

/// Serves `router` over HTTP/1.1 on `listener` until `stop` resolves, then lets open
/// connections finish for `timeouts.grace`.
pub async fn serve<L>(
    mut listener: L,
    router: Router,
    stop: impl Future<Output = ()> + Send,
    timeouts: Timeouts,
) where
    L: Listener,
{
    // `stopping` tells connections to finish; each holds a `open` receiver until it is done.
    let (stopping, stop_rx) = watch::channel(false);
    let (open_tx, open) = watch::channel(());
    let mut stop = pin!(stop);
    loop {
        let (io, _) = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stop => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let (mut stop_rx, open) = (stop_rx.clone(), open.clone());
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(timeouts.header_read);
            let mut connection = pin!(builder.serve_connection(TokioIo::new(io), service));
            let stopped = async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            };
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stopped => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "HTTP connection ended");
            }
            drop(open);
        });
    }
    // No new connections (nor TLS handshakes) while the open ones finish.
    drop(listener);
    let _ = stopping.send(true);
    drop(open);
    if tokio::time::timeout(timeouts.grace, open_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?timeouts.grace, "connections still open after the grace time; closing them");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    async fn start(max: usize, header_read: Duration) -> std::net::SocketAddr {
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let router = Router::new().route("/", get(|| async { "ok" }));
        let timeouts = Timeouts {
            header_read,
            grace: Duration::from_secs(1),
        };
        let stop = std::future::pending();
        tokio::spawn(serve(Capped::new(tcp, max), router, stop, timeouts));
        addr
    }

    /// Sends a GET on `stream` and reads the start of the answer, waiting at most `within`.
    async fn ask(stream: &mut TcpStream, within: Duration) -> Option<String> {
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        stream.write_all(request).await.unwrap();
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(within, stream.read(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    #[tokio::test]
    async fn connections_beyond_the_cap_wait_until_one_closes() {
        let addr = start(1, Duration::from_secs(30)).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        let answer = ask(&mut first, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        // The first is kept alive: the second waits for its slot, unanswered.
        let mut second = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut second, Duration::from_millis(500)).await, None);
        drop(first);
        let mut answer = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), second.read_exact(&mut answer))
            .await
            .expect("answered once the first closed")
            .unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
    }

    #[tokio::test]
    async fn a_client_that_sends_no_headers_is_cut_off_and_frees_its_slot() {
        let addr = start(1, Duration::from_millis(300)).await;
        let mut silent = TcpStream::connect(addr).await.unwrap();
        silent.write_all(b"GET / HTTP/1.1\r\nHos").await.unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), silent.read_to_end(&mut rest))
            .await
            .expect("closed by the server within its header timeout");
        // Closed, after at most a 408 (hyper answers some header timeouts).
        assert!(read.is_err() || rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"));
        let mut next = TcpStream::connect(addr).await.unwrap();
        let answer = ask(&mut next, Duration::from_secs(5)).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
}
