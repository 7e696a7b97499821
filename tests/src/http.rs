//! A real HTTP server standing in for Faxi's app: its `/health` status, its
//! delay and its life are set by the test. It also stands in for what a
//! recovery step talks to (the app's scaling endpoint, a webhook): it keeps
//! the latest requests it was sent, headers and body, for the test to read.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Requests kept, the latest ones (a benchmark sends millions).
const KEPT: usize = 256;

/// A request the stub was sent.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    /// The body (up to 1 MiB).
    pub body: Vec<u8>,
}

impl Recorded {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

#[derive(Debug)]
struct State {
    status: AtomicU16,
    delay_ms: AtomicU64,
    hits: AtomicU64,
    requests: Mutex<VecDeque<Recorded>>,
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
            requests: Mutex::new(VecDeque::new()),
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
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let s = s.clone();
                        async move {
                            let (head, body) = req.into_parts();
                            let body = http_body_util::Limited::new(body, 1 << 20)
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let recorded = Recorded {
                                method: head.method.to_string(),
                                path: head
                                    .uri
                                    .path_and_query()
                                    .map_or("/".to_owned(), |p| p.to_string()),
                                headers: head
                                    .headers
                                    .iter()
                                    .map(|(n, v)| {
                                        (
                                            n.as_str().to_owned(),
                                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                                        )
                                    })
                                    .collect(),
                                body,
                            };
                            {
                                let mut q = s.requests.lock().unwrap();
                                if q.len() == KEPT {
                                    q.pop_front();
                                }
                                q.push_back(recorded);
                            }
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

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The latest requests (at most 256), oldest first. A request is
    /// recorded before it is answered.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect()
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
