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
use crate::mesh::guard::{self, Envelope, Refusal};
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
                cluster_id: s.sm.cluster_id().to_owned(),
            }),
            targets,
            incidents: Vec::new(),
        }
    }
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
        MeshError::Rejected(_) => Status::failed_precondition(e.to_string()),
    }
}

/// A client for the leader's API, for requests only the leader may decide.
async fn leader_client(
    leader: NodeId,
    addr: Option<String>,
    deadline: Duration,
) -> Result<WatchdogClient<tonic::transport::Channel>, Status> {
    let addr =
        addr.ok_or_else(|| Status::unavailable(format!("leader {leader} has no known address")))?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Status::internal(format!("leader address {addr}: {e}")))?
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .timeout(deadline);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Status::unavailable(format!("cannot reach leader {leader} at {addr}: {e}")))?;
    Ok(WatchdogClient::new(channel))
}

/// Whether a request was already carried here from another node (it is
/// then never carried again, so two nodes that disagree on the leader
/// cannot bounce it between them).
fn forwarded<T>(r: &Request<T>) -> bool {
    r.metadata().contains_key(FORWARDED)
}

/// Marks a request as carried to the leader.
fn mark_forwarded<T>(mut r: Request<T>) -> Request<T> {
    r.metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    r
}

/// Metadata key set on a request carried to the leader.
const FORWARDED: &str = "x-faxi-forwarded";

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
        let r = request.get_ref().clone();
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
        if let Some((leader, addr)) = self.leader_elsewhere(&request)? {
            return leader_client(leader, addr, WRITE_DEADLINE + Duration::from_secs(1))
                .await?
                .add_member(mark_forwarded(Request::new(r)))
                .await;
        }
        let member = Member {
            zone: r.zone,
            addr: r.addr,
            instance: 0,
        };
        self.change_member(MemberChange::Set(r.id, member)).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::MemberChangeResponse>, Status> {
        let pb::RemoveMemberRequest { id, force } = *request.get_ref();
        if let Some((leader, addr)) = self.leader_elsewhere(&request)? {
            return leader_client(leader, addr, WRITE_DEADLINE + TRANSFER_DEADLINE)
                .await?
                .remove_member(mark_forwarded(Request::new(pb::RemoveMemberRequest {
                    id,
                    force,
                })))
                .await;
        }
        if id != self.me {
            return self.change_member(MemberChange::Remove(id, force)).await;
        }
        // Removing the leader: hand leadership to the most caught-up voter
        // first, then have the new leader remove this node, so the cluster
        // never runs on a leader that is no longer a member.
        let to = {
            let s = self.mesh.read();
            let others: Vec<NodeId> = s
                .info
                .voters
                .iter()
                .copied()
                .filter(|v| *v != self.me)
                .collect();
            // Prefer a reachable voter; raft picks up its progress.
            others
                .iter()
                .copied()
                .find(|v| s.info.reachable.get(v).copied().unwrap_or(false))
                .or_else(|| others.first().copied())
        };
        let Some(to) = to else {
            return Err(Status::failed_precondition(format!(
                "node {id} is the last voter; a cluster cannot remove it"
            )));
        };
        self.transfer_to(to).await?;
        let (leader, addr) = {
            let s = self.mesh.read();
            let l = s.info.leader;
            (l, s.sm.members().get(&l).map(|m| m.addr.clone()))
        };
        leader_client(leader, addr, WRITE_DEADLINE + Duration::from_secs(1))
            .await?
            .remove_member(mark_forwarded(Request::new(pb::RemoveMemberRequest {
                id,
                force,
            })))
            .await
    }

    async fn transfer_leader(
        &self,
        request: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::TransferLeaderResponse>, Status> {
        let to = request.get_ref().to;
        if !self.mesh.read().sm.members().contains_key(&to) {
            return Err(Status::not_found(format!("node {to} is not a member")));
        }
        if let Some((leader, addr)) = self.leader_elsewhere(&request)? {
            return leader_client(leader, addr, TRANSFER_DEADLINE + Duration::from_secs(1))
                .await?
                .transfer_leader(mark_forwarded(Request::new(pb::TransferLeaderRequest {
                    to,
                })))
                .await;
        }
        let term = self.transfer_to(to).await?;
        Ok(Response::new(pb::TransferLeaderResponse {
            leader: to,
            term,
        }))
    }
}

impl Api {
    /// `Some(leader, its address)` when the leader is another node and the
    /// request should be carried there; `None` when this node leads. A
    /// request that was already carried once is refused rather than
    /// carried again.
    fn leader_elsewhere<T>(
        &self,
        request: &Request<T>,
    ) -> Result<Option<(NodeId, Option<String>)>, Status> {
        let s = self.mesh.read();
        let leader = s.info.leader;
        if leader == 0 {
            return Err(to_status(MeshError::NoLeader));
        }
        if leader == self.me {
            return Ok(None);
        }
        if forwarded(request) {
            return Err(to_status(MeshError::NotLeader {
                me: self.me,
                leader,
            }));
        }
        Ok(Some((
            leader,
            s.sm.members().get(&leader).map(|m| m.addr.clone()),
        )))
    }

    /// On the leader: hands leadership to `to` and waits until it took
    /// over; answers with the new term.
    async fn transfer_to(&self, to: NodeId) -> Result<u64, Status> {
        let mut changes = self.mesh.subscribe();
        self.mesh.transfer_leader(to).await.map_err(to_status)?;
        let deadline = tokio::time::Instant::now() + TRANSFER_DEADLINE;
        loop {
            {
                let s = self.mesh.read();
                if s.info.leader == to {
                    return Ok(s.info.term);
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
        let env = Envelope {
            cluster_id: batch.cluster_id,
            from: batch.from,
            from_instance: batch.from_instance,
            to: batch.to,
            to_instance: batch.to_instance,
        };
        let unbound = {
            let s = self.mesh.read();
            guard::check_envelope(&env, self.me, s.info.instance, &s.sm).map_err(|r| refuse(&r))?;
            s.sm.members()
                .get(&env.from)
                .is_some_and(|m| m.instance == 0)
        };
        let mut msgs = Vec::with_capacity(batch.messages.len());
        for bytes in &batch.messages {
            let m = raft::eraftpb::Message::parse_from_bytes(bytes).map_err(|e| {
                metrics::counter!(crate::metrics::RAFT_REFUSED, "reason" => "malformed")
                    .increment(1);
                Status::invalid_argument(format!("not a raft message: {e}"))
            })?;
            guard::check_message(&env, &m).map_err(|r| refuse(&r))?;
            msgs.push(m);
        }
        if unbound {
            // A learner not yet promoted: the leader binds this data dir to
            // its membership when it promotes it.
            let _ = self
                .mesh
                .send(Input::PeerInstance(env.from, env.from_instance));
        }
        for m in msgs {
            self.mesh
                .send(Input::Raft(Box::new(m)))
                .map_err(to_status)?;
        }
        Ok(Response::new(pb::RaftAck {}))
    }
}

/// Counts and words a refused peer batch. A node told that the cluster
/// knows it by another data dir says so loudly: it lost its state.
fn refuse(r: &Refusal) -> Status {
    metrics::counter!(crate::metrics::RAFT_REFUSED, "reason" => r.label()).increment(1);
    if log_now(r.label()) {
        match r {
            Refusal::ReplacedHere { .. } => {
                tracing::error!(reason = %r, "refused a peer message");
            }
            _ => tracing::warn!(reason = %r, "refused a peer message"),
        }
    }
    Status::failed_precondition(r.to_string())
}

/// Whether a refusal of this kind may be logged now: at most one line per
/// kind every ten seconds (a leader retries many times a second).
fn log_now(kind: &'static str) -> bool {
    static LAST: std::sync::Mutex<BTreeMap<&'static str, tokio::time::Instant>> =
        std::sync::Mutex::new(BTreeMap::new());
    let now = tokio::time::Instant::now();
    let mut last = LAST.lock().unwrap_or_else(|p| p.into_inner());
    match last.get(kind) {
        Some(t) if now.duration_since(*t) < Duration::from_secs(10) => false,
        _ => {
            last.insert(kind, now);
            true
        }
    }
}
