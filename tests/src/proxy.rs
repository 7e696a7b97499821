//! A TCP proxy in front of a real server that counts the connections its
//! clients hold open: the server's view of what a probe left behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// A running proxy; stops (dropping every connection) on drop.
#[derive(Debug)]
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards every connection to
    /// `upstream`, both ways.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(Counts::default());
        let c = counts.clone();
        let task = tokio::spawn(async move {
            // Connections live in this set, so stopping the proxy drops them.
            let mut conns = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                c.accepted.fetch_add(1, Ordering::SeqCst);
                c.open.fetch_add(1, Ordering::SeqCst);
                conns.spawn(relay(client, upstream, c.clone()));
            }
        });
        Proxy { addr, counts, task }
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.counts.accepted.load(Ordering::SeqCst)
    }

    /// Connections whose client has not closed them.
    pub fn open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies both ways until the client closes (or fails), which is when the
/// connection stops counting as open.
async fn relay(mut client: TcpStream, upstream: SocketAddr, counts: Arc<Counts>) {
    let Ok(server) = TcpStream::connect(upstream).await else {
        counts.open.fetch_sub(1, Ordering::SeqCst);
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = { server }.into_split();
    let to_client = async {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = sr.read(&mut buf).await {
            if n == 0 || cw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        // The server is done; the client may still talk or close.
        std::future::pending::<()>().await;
    };
    let from_client = async {
        let mut buf = [0u8; 16 * 1024];
        let mut server_open = true;
        // Only the client's close ends this: a server that hung up does not
        // close the client's socket.
        while let Ok(n) = cr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if server_open && sw.write_all(&buf[..n]).await.is_err() {
                server_open = false;
            }
        }
    };
    tokio::select! {
        () = to_client => {}
        () = from_client => {}
    }
    counts.open.fetch_sub(1, Ordering::SeqCst);
}
