//! A real HTTP server standing in for Faxi's app: its `/health` status, its
//! delay and its life are set by the test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

#[derive(Debug)]
struct State {
    status: AtomicU16,
    delay_ms: AtomicU64,
    hits: AtomicU64,
}

/// A running app stub; stopped on drop or by [`AppStub::stop`].
#[derive(Debug)]
pub struct AppStub {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl AppStub {
    /// Starts on a free port, answering 200.
    pub async fn start() -> AppStub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            status: AtomicU16::new(200),
            delay_ms: AtomicU64::new(0),
            hits: AtomicU64::new(0),
        });
        let task = Self::serve(listener, state.clone());
        AppStub {
            addr,
            state,
            task: Some(task),
        }
    }

    fn serve(listener: TcpListener, s: Arc<State>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            // Connections live in this set, so stopping the server drops them too.
            let mut conns = JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let s = s.clone();
                        async move {
                            s.hits.fetch_add(1, Ordering::Relaxed);
                            let delay = s.delay_ms.load(Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            let mut r = Response::new(Full::new(Bytes::from_static(
                                b"{\"status\":\"ok\"}",
                            )));
                            *r.status_mut() =
                                hyper::StatusCode::from_u16(s.status.load(Ordering::Relaxed))
                                    .unwrap();
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
    }

    /// `http://127.0.0.1:PORT/health`.
    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    /// The status code every request gets from now on.
    pub fn set_status(&self, status: u16) {
        self.state.status.store(status, Ordering::Relaxed);
    }

    /// How long every request waits before its answer.
    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Requests served so far.
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::Relaxed)
    }

    /// Stops listening and drops every open connection.
    pub fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Listens again on the same address.
    pub async fn restart(&mut self) {
        self.stop();
        let listener = crate::wait_for(
            "the app port to be free again",
            Duration::from_secs(10),
            || {
                let addr = self.addr;
                async move { TcpListener::bind(addr).await.map_err(|e| e.to_string()) }
            },
        )
        .await;
        self.task = Some(Self::serve(listener, self.state.clone()));
    }
}

impl Drop for AppStub {
    fn drop(&mut self) {
        self.stop();
    }
}
