//! The gRPC edge: the client API `faxictl` uses and the peer service raft
//! traffic arrives on. Protobuf types live here and nowhere deeper: requests
//! are checked and converted to domain types, answers built from them.
//!
//! Reads are answered by any node from what it has applied (with its applied
//! index and leader contact, so a caller sees how far it lags). Membership
//! changes are raft proposals, which followers forward to the leader; a
//! leadership transfer is carried to the leader over gRPC.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Duration;

use faxi_proto::v1 as pb;
use faxi_proto::v1::peer_server::{Peer, PeerServer};
use faxi_proto::v1::watchdog_client::WatchdogClient;
use faxi_proto::v1::watchdog_server::{Watchdog, WatchdogServer};
use protobuf::Message as _;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::mesh::driver::{Input, MemberChange, Mesh, MeshError, Shared};
use crate::mesh::state::{Member, NodeId};
use crate::mesh::transport::MAX_MESSAGE_BYTES;

/// Deadline for a membership change to commit.
const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Deadline for a leadership transfer to take effect.
const TRANSFER_DEADLINE: Duration = Duration::from_secs(5);
/// Fewest milliseconds between two messages of a watch stream.
const WATCH_MIN_GAP: Duration = Duration::from_millis(100);

/// Serves both services.
#[derive(Debug, Clone)]
pub struct Api {
    mesh: Mesh,
    me: NodeId,
    zone: String,
    /// Target kinds from this node's config (the log carries names only).
    kinds: BTreeMap<String, &'static str>,
}

impl Api {
    /// The API of node `me`.
    pub fn new(
        mesh: Mesh,
        me: NodeId,
        zone: String,
        kinds: BTreeMap<String, &'static str>,
    ) -> Self {
        Self {
            mesh,
            me,
            zone,
            kinds,
        }
    }

    /// The tonic services, ready for a `Server`.
    pub fn services(self) -> (WatchdogServer<Api>, PeerServer<Api>) {
        (
            WatchdogServer::new(self.clone()),
            PeerServer::new(self)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
    }

    /// Every member, with its role and reachability as this node sees them.
    fn members(s: &Shared) -> Vec<pb::Member> {
        let info = &s.info;
        s.sm.members()
            .iter()
            .map(|(id, m)| pb::Member {
                id: *id,
                zone: m.zone.clone(),
                addr: m.addr.clone(),
                role: if *id == info.id {
                    info.role
                } else if *id == info.leader {
                    "leader"
                } else if info.learners.contains(id) {
                    "learner"
                } else if info.voters.contains(id) {
                    "follower"
                } else {
                    "unknown"
                }
                .to_owned(),
                reachable: *id == info.id || info.reachable.get(id).copied().unwrap_or(false),
            })
            .collect()
    }

    /// Proposes a membership change and answers with the members after it.
    async fn change_member(
        &self,
        change: MemberChange,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let index = self
            .mesh
            .change_member(change, WRITE_DEADLINE)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::MemberChangeResponse {
            index,
            members: Self::members(&self.mesh.read()),
        }))
    }

    fn status_now(&self) -> pb::StatusResponse {
        let s = self.mesh.read();
        let info = &s.info;
        let members = Self::members(&s);
        let now = s.sm.log_now_ms();
        let targets =
            s.sm.agreed()
                .iter()
                .map(|(name, a)| {
                    let nodes =
                        s.sm.views(name)
                            .map(|views| {
                                views
                                    .iter()
                                    .map(|(id, v)| pb::NodeVerdict {
                                        id: *id,
                                        zone: s
                                            .sm
                                            .members()
                                            .get(id)
                                            .map(|m| m.zone.clone())
                                            .unwrap_or_default(),
                                        verdict: v.verdict.as_str().to_owned(),
                                        latency_ms: v.latency_us as f64 / 1000.0,
                                        error: v.error.clone().unwrap_or_default(),
                                        fresh: v.expires_at_ms >= now,
                                        at_unix_ms: i64::try_from(v.at_ms).unwrap_or(i64::MAX),
                                    })
                                    .collect()
                            })
                            .unwrap_or_default();
                    pb::TargetStatus {
                        name: name.clone(),
                        kind: self.kinds.get(name).copied().unwrap_or("").to_owned(),
                        state: a.state.as_str().to_owned(),
                        since_unix_ms: i64::try_from(a.since_ms).unwrap_or(i64::MAX),
                        zones: a
                            .zones
                            .iter()
                            .map(|(z, v)| (z.clone(), v.as_str().to_owned()))
                            .collect(),
                        down_zones: a.down_zones.clone(),
                        nodes,
                    }
                })
                .collect();
        pb::StatusResponse {
            cluster: Some(pb::ClusterStatus {
                leader: info.leader,
                term: info.term,
                commit_index: info.commit,
                node_id: self.me,
                node_zone: self.zone.clone(),
                applied_index: info.applied,
                leader_contact_ms: s
                    .leader_contact()
                    .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                members,
            }),
            targets,
            incidents: Vec::new(),
        }
    }
}

/// The gRPC listener's connections, with `TCP_NODELAY` set on each:
/// `Server::tcp_nodelay` does not apply to `serve_with_incoming`, and
/// without it a response's trailers wait on Nagle and delayed ACK (~40 ms
/// per call on loopback).
pub fn incoming(listener: tokio::net::TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

fn to_status(e: MeshError) -> Status {
    match e {
        MeshError::NoLeader | MeshError::Dropped(_) | MeshError::Stopped => {
            Status::unavailable(e.to_string())
        }
        MeshError::Busy => Status::resource_exhausted(e.to_string()),
        MeshError::Timeout(_) => Status::deadline_exceeded(e.to_string()),
        MeshError::NotLeader { .. } => Status::failed_precondition(e.to_string()),
        MeshError::Invalid(_) => Status::invalid_argument(e.to_string()),
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::StatusResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Watchdog for Api {
    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(self.status_now()))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let (tx, rx) = mpsc::channel(16);
        let api = self.clone();
        let mut changes = self.mesh.subscribe();
        tokio::spawn(async move {
            let mut last: Option<pb::StatusResponse> = None;
            loop {
                let mut now = api.status_now();
                // Contact time moves constantly; it alone is not a change.
                if let Some(c) = now.cluster.as_mut() {
                    c.leader_contact_ms = c.leader_contact_ms.min(0);
                }
                if last.as_ref() != Some(&now) {
                    if tx.send(Ok(now.clone())).await.is_err() {
                        return;
                    }
                    last = Some(now);
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    () = tx.closed() => return,
                }
                tokio::time::sleep(WATCH_MIN_GAP).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let r = request.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("id: must be 1 or more"));
        }
        let mut p = Vec::new();
        crate::config::check_name("zone", &r.zone, &mut p);
        if let Some(problem) = p.first() {
            return Err(Status::invalid_argument(format!(
                "zone: {}",
                problem.reason
            )));
        }
        if let Err(reason) = crate::config::check_host_port(&r.addr) {
            return Err(Status::invalid_argument(format!("addr: {reason}")));
        }
        let member = Member {
            zone: r.zone,
            addr: r.addr,
        };
        self.change_member(MemberChange::Set(r.id, member)).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let id = request.into_inner().id;
        {
            let s = self.mesh.read();
            if !s.sm.members().contains_key(&id) {
                return Err(Status::not_found(format!("node {id} is not a member")));
            }
            if s.sm.members().len() == 1 {
                return Err(Status::failed_precondition(format!(
                    "node {id} is the last member; a cluster cannot remove its last node"
                )));
            }
        }
        self.change_member(MemberChange::Remove(id)).await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let to = request.into_inner().to;
        let (leader, leader_addr) = {
            let s = self.mesh.read();
            if !s.sm.members().contains_key(&to) {
                return Err(Status::not_found(format!("node {to} is not a member")));
            }
            let l = s.info.leader;
            (l, s.sm.members().get(&l).map(|m| m.addr.clone()))
        };
        if leader == 0 {
            return Err(to_status(MeshError::NoLeader));
        }
        if leader != self.me {
            // Carried to the leader, once (it does not forward again).
            let addr = leader_addr.ok_or_else(|| {
                Status::unavailable(format!("leader {leader} has no known address"))
            })?;
            let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| Status::internal(format!("leader address {addr}: {e}")))?
                .connect_timeout(Duration::from_secs(1))
                .timeout(TRANSFER_DEADLINE + Duration::from_secs(1));
            let channel = endpoint.connect().await.map_err(|e| {
                Status::unavailable(format!("cannot reach leader {leader} at {addr}: {e}"))
            })?;
            return WatchdogClient::new(channel)
                .transfer_leader(pb::TransferLeaderRequest { to })
                .await;
        }
        let mut changes = self.mesh.subscribe();
        self.mesh.transfer_leader(to).await.map_err(to_status)?;
        let deadline = tokio::time::Instant::now() + TRANSFER_DEADLINE;
        loop {
            {
                let s = self.mesh.read();
                if s.info.leader == to {
                    return Ok(Response::new(pb::TransferLeaderResponse {
                        leader: to,
                        term: s.info.term,
                    }));
                }
            }
            if tokio::time::timeout_at(deadline, changes.changed())
                .await
                .is_err()
            {
                return Err(Status::deadline_exceeded(format!(
                    "node {to} did not take over within {TRANSFER_DEADLINE:?} (is it caught up and reachable?)"
                )));
            }
        }
    }
}

#[tonic::async_trait]
impl Peer for Api {
    async fn step(&self, request: Request<pb::RaftBatch>) -> Result<Response<pb::RaftAck>, Status> {
        let batch = request.into_inner();
        if batch.to != self.me {
            return Err(Status::failed_precondition(format!(
                "this is node {}, not node {}: check cluster.peers addresses",
                self.me, batch.to
            )));
        }
        for bytes in &batch.messages {
            let m = raft::eraftpb::Message::parse_from_bytes(bytes)
                .map_err(|e| Status::invalid_argument(format!("not a raft message: {e}")))?;
            if m.to != self.me {
                return Err(Status::invalid_argument(format!(
                    "message for node {} in a batch for node {}",
                    m.to, self.me
                )));
            }
            self.mesh
                .send(Input::Raft(Box::new(m)))
                .map_err(to_status)?;
        }
        Ok(Response::new(pb::RaftAck {}))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn accepted_grpc_connections_have_nodelay() {
        use tokio_stream::StreamExt as _;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut inc = incoming(listener);
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = inc.next().await.unwrap().unwrap();
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY not set");
    }
}
