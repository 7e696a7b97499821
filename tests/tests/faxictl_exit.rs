//! faxictl's exit codes against endpoints that connect but cannot answer:
//! an endpoint that said UNAVAILABLE (no leader) answered, so faxictl exits
//! 1 naming it, not 3 ("no endpoint answered"), whether or not a dead
//! endpoint is tried too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use faxi_proto::v1 as pb;
use faxi_proto::v1::watchdog_server::{Watchdog, WatchdogServer};
use faxi_tests::cluster::Cluster;
use faxi_tests::free_port;
use tonic::{Request, Response, Status};

/// A Watchdog endpoint. Without `dies_mid_write`, one with no leader:
/// every call is UNAVAILABLE. With it, a node that answers the status check
/// and then dies while a write (remove-member, maintenance) is on its way:
/// the write's handler counts it and tells the test, which cuts the
/// connection.
#[derive(Default)]
struct Stub {
    dies_mid_write: Option<MidWrite>,
}

#[derive(Clone)]
struct MidWrite {
    got_write: std::sync::Arc<tokio::sync::Notify>,
    writes: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Stub {
    async fn write<T>(&self) -> Result<Response<T>, Status> {
        let Some(m) = &self.dies_mid_write else {
            return unavailable();
        };
        m.writes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        m.got_write.notify_waiters();
        std::future::pending().await
    }
}

fn unavailable<T>() -> Result<Response<T>, Status> {
    Err(Status::unavailable("no leader: elections in progress"))
}

#[tonic::async_trait]
impl Watchdog for Stub {
    async fn status(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        match self.dies_mid_write {
            Some(_) => Ok(Response::new(pb::StatusResponse::default())),
            None => unavailable(),
        }
    }

    type WatchStream = std::pin::Pin<
        Box<dyn tokio_stream::Stream<Item = Result<pb::StatusResponse, Status>> + Send>,
    >;

    async fn watch(
        &self,
        _: Request<pb::StatusRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        unavailable()
    }

    async fn add_member(
        &self,
        _: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        unavailable()
    }

    async fn remove_member(
        &self,
        _: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        self.write().await
    }

    async fn transfer_leader(
        &self,
        _: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        unavailable()
    }

    async fn audit(
        &self,
        _: Request<pb::AuditRequest>,
    ) -> Result<Response<pb::AuditResponse>, Status> {
        unavailable()
    }

    async fn incidents(
        &self,
        _: Request<pb::IncidentsRequest>,
    ) -> Result<Response<pb::IncidentsResponse>, Status> {
        unavailable()
    }

    async fn incident(
        &self,
        _: Request<pb::IncidentRequest>,
    ) -> Result<Response<pb::IncidentResponse>, Status> {
        unavailable()
    }

    async fn rto(&self, _: Request<pb::RtoRequest>) -> Result<Response<pb::RtoResponse>, Status> {
        unavailable()
    }

    async fn approve(
        &self,
        _: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        unavailable()
    }

    async fn maintenance(
        &self,
        _: Request<pb::MaintenanceRequest>,
    ) -> Result<Response<pb::MaintenanceResponse>, Status> {
        self.write().await
    }

    async fn drill(
        &self,
        _: Request<pb::DrillRequest>,
    ) -> Result<Response<pb::DrillResponse>, Status> {
        unavailable()
    }
}

async fn no_leader() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(WatchdogServer::new(Stub::default()))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connected_but_unavailable_is_exit_1_not_3() {
    let (a, task_a) = no_leader().await;
    let (b, task_b) = no_leader().await;
    let dead: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    for (endpoints, args) in [
        // The stub speaks plaintext gRPC, as a node with insecure = true.
        (format!("http://{a}"), vec!["status"]),
        (
            format!("http://{dead},http://{a},http://{b}"),
            vec!["status"],
        ),
        (format!("http://{a},http://{dead}"), vec!["members"]),
        (
            format!("http://{dead},http://{b}"),
            vec!["members", "remove", "2"],
        ),
        (format!("http://{a}"), vec!["transfer-leader", "2"]),
        (format!("http://{a},http://{dead}"), vec!["audit"]),
        (format!("http://{a},http://{dead}"), vec!["incidents"]),
        (
            format!("http://{dead},http://{a}"),
            vec!["incident", "show", "3"],
        ),
        (format!("http://{a}"), vec!["rto"]),
        (format!("http://{a}"), vec!["maintenance"]),
        (format!("http://{a},http://{b}"), vec!["approve", "3"]),
        (
            format!("http://{a}"),
            vec!["maintenance", "on", "--reason", "x", "--for", "1h"],
        ),
        (format!("http://{a}"), vec!["maintenance", "off"]),
        (format!("http://{a}"), vec!["drill", "redis"]),
    ] {
        let out = Cluster::faxictl(&endpoints, &args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{endpoints} {args:?}: {err}");
        assert!(err.contains("no endpoint could answer"), "{err}");
        assert!(
            err.contains("unavailable: no leader: elections in progress"),
            "{err}"
        );
        for ep in endpoints.split(',') {
            assert!(err.contains(ep), "{ep} not named: {err}");
        }
    }
    // Nothing listening at all is still 3.
    let out = Cluster::faxictl(&dead.to_string(), &["status"]).await;
    assert_eq!(out.status.code(), Some(3));
    task_a.abort();
    task_b.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_node_dies_after_it_was_sent_is_outcome_unknown_and_never_resent() {
    let got_write = std::sync::Arc::new(tokio::sync::Notify::new());
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let serve = |listener: tokio::net::TcpListener| {
        let svc = Stub {
            dies_mid_write: Some(MidWrite {
                got_write: got_write.clone(),
                writes: writes.clone(),
            }),
        };
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(WatchdogServer::new(svc))
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
                .await
                .unwrap();
        })
    };
    let node = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let node_addr = node.local_addr().unwrap();
    let task = serve(node);
    let second = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second_addr = second.local_addr().unwrap();
    let task2 = serve(second);
    // faxictl reaches the first node through a proxy that the test cuts
    // once the write has arrived (the node "dies" mid-write).
    let proxy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = proxy.local_addr().unwrap();
    let cut = got_write.clone();
    let proxy_task = tokio::spawn(async move {
        loop {
            let (mut client, _) = proxy.accept().await.unwrap();
            let mut upstream = tokio::net::TcpStream::connect(node_addr).await.unwrap();
            let cut = cut.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
                    () = cut.notified() => {}
                }
            });
        }
    });
    let out = Cluster::faxictl(
        &format!("http://{proxy_addr},http://{second_addr}"),
        &["members", "remove", "2"],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&proxy_addr.to_string()), "{err}");
    assert!(err.contains("outcome unknown"), "{err}");
    assert!(err.contains("faxictl audit"), "{err}");
    // Sent once, to the first node only: never again elsewhere.
    assert_eq!(writes.load(std::sync::atomic::Ordering::SeqCst), 1, "{err}");
    // So is a maintenance request.
    let out = Cluster::faxictl(
        &format!("http://{proxy_addr},http://{second_addr}"),
        &["maintenance", "on", "--reason", "db upgrade", "--for", "1h"],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("outcome unknown"), "{err}");
    assert!(err.contains("faxictl maintenance"), "{err}");
    assert_eq!(writes.load(std::sync::atomic::Ordering::SeqCst), 2, "{err}");
    proxy_task.abort();
    task.abort();
    task2.abort();
}
