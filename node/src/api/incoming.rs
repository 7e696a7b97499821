//! The gRPC server's connections: how many a node holds, and how long one
//! may stay without showing who it is.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio_stream::Stream;
use tonic::transport::server::Connected;

/// Most gRPC connections a node holds at once (peers and clients, TLS
/// handshakes in progress included); more are closed as they arrive and
/// counted, so a flood cannot exhaust the node's file descriptors or memory.
pub const MAX_CONNECTIONS: usize = 1024;
/// TCP keep-alive on accepted connections: a peer that vanished without a
/// word (a half-open connection) is found and its connection closed.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);
/// Where a client may connect without a certificate (a node that takes
/// automation tokens), the TLS handshake proves nothing: such a connection
/// is closed unless a request on it authenticates (a token, or a
/// certificate) within this long, so connections that never ask anything
/// cannot hold the node's places.
pub const FIRST_REQUEST: Duration = Duration::from_secs(10);

/// The connections still to authenticate a request, by their two ends.
/// Requests mark theirs ([`Proven::mark`]); a connection not marked by
/// [`FIRST_REQUEST`] is closed.
#[derive(Debug, Clone, Default)]
pub struct Proven(Arc<Mutex<HashMap<Ends, Arc<AtomicBool>>>>);

/// A connection's local and remote addresses.
type Ends = (SocketAddr, SocketAddr);

impl Proven {
    /// The connection from `remote` to `local` carried an authenticated
    /// request.
    pub fn mark(&self, local: Option<SocketAddr>, remote: Option<SocketAddr>) {
        let (Some(local), Some(remote)) = (local, remote) else {
            return;
        };
        let map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flag) = map.get(&(local, remote)) {
            flag.store(true, Ordering::Relaxed);
        }
    }

    #[cfg(test)]
    pub(super) fn is_empty(&self) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
    }

    fn watch(&self, key: Ends) -> Arc<AtomicBool> {
        let flag = Arc::new(AtomicBool::new(false));
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, flag.clone());
        flag
    }

    fn forget(&self, key: &Ends) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// The gRPC server's connections: TCP_NODELAY on each (tonic's
/// `Server::tcp_nodelay` does not apply to `serve_with_incoming`, and
/// without it every response's trailers wait on Nagle and delayed ACK,
/// ~40 ms), TCP keep-alive, and at most [`MAX_CONNECTIONS`] at once. With
/// `first_request`, each must authenticate a request within
/// [`FIRST_REQUEST`].
pub fn incoming(
    listener: tokio::net::TcpListener,
    first_request: Option<Proven>,
) -> impl Stream<Item = std::io::Result<Conn>> + Send + 'static {
    use tokio_stream::StreamExt as _;
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tonic::transport::server::TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
        .filter_map(move |accepted| match accepted {
            Ok(stream) => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let first = first_request.as_ref().and_then(|proven| {
                        let key = (stream.local_addr().ok()?, stream.peer_addr().ok()?);
                        Some(FirstRequest {
                            flag: proven.watch(key),
                            key,
                            proven: proven.clone(),
                            deadline: Box::pin(tokio::time::sleep(FIRST_REQUEST)),
                        })
                    });
                    Some(Ok(Conn {
                        stream,
                        _permit: permit,
                        first,
                    }))
                }
                Err(_) => {
                    metrics::counter!(crate::metrics::CONNECTIONS_REFUSED).increment(1);
                    if super::log_now("connections") {
                        tracing::warn!(
                            max = MAX_CONNECTIONS,
                            peer = ?stream.peer_addr().ok(),
                            "refused a gRPC connection: this node holds as many as it takes"
                        );
                    }
                    None
                }
            },
            Err(e) => Some(Err(e)),
        })
}

/// A connection's wait for its first authenticated request.
#[derive(Debug)]
struct FirstRequest {
    flag: Arc<AtomicBool>,
    key: Ends,
    proven: Proven,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Drop for FirstRequest {
    fn drop(&mut self) {
        self.proven.forget(&self.key);
    }
}

/// An accepted connection, holding its place among [`MAX_CONNECTIONS`].
#[derive(Debug)]
pub struct Conn {
    stream: tokio::net::TcpStream,
    _permit: tokio::sync::OwnedSemaphorePermit,
    /// Still to authenticate a request (nodes that take tokens).
    first: Option<FirstRequest>,
}

impl Conn {
    /// Whether TCP_NODELAY is set.
    pub fn nodelay(&self) -> std::io::Result<bool> {
        self.stream.nodelay()
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(first) = &mut self.first {
            if first.flag.load(Ordering::Relaxed) {
                self.first = None;
            } else if first.deadline.as_mut().poll(cx).is_ready() {
                metrics::counter!(crate::metrics::CONNECTIONS_UNPROVEN).increment(1);
                if super::log_now("first request") {
                    tracing::warn!(
                        peer = %first.key.1,
                        within = ?FIRST_REQUEST,
                        "closed a gRPC connection: no authenticated request came on it"
                    );
                }
                return Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no authenticated request on this connection",
                )));
            }
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

impl Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}
