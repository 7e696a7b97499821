//! Peer transport: raft messages to other nodes over tonic.
//!
//! One task and one bounded queue per peer. A full queue drops the message
//! (Raft resends what matters), so a slow or dead peer never blocks the
//! driver. Every call has a deadline; after a failure the link backs off
//! (50 ms doubling to 1 s) and drops what queued meanwhile. The driver hears
//! of failures (`report_unreachable`, snapshot status) through its inbox.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::Duration;

use faxi_proto::v1::RaftBatch;
use faxi_proto::v1::peer_client::PeerClient;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::driver::{Identity, Input, PeerAddr};
use super::state::NodeId;
use crate::tls::Tls;

/// Messages queued per peer before new ones are dropped.
const QUEUE: usize = 4096;
/// Messages sent in one call, at most.
const BATCH: usize = 512;
/// Deadline of an ordinary call.
const CALL_DEADLINE: Duration = Duration::from_secs(1);
/// Deadline of a call that carries a snapshot.
const SNAPSHOT_DEADLINE: Duration = Duration::from_secs(30);
/// An idle link checks its peer this often.
const IDLE_PING: Duration = Duration::from_secs(1);
/// Largest message either side accepts (snapshots of many targets).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

struct Link {
    peer: PeerAddr,
    me: Identity,
    tx: mpsc::Sender<Message>,
    reachable: Arc<AtomicBool>,
    /// A snapshot is queued or on its way (its outcome not yet reported).
    snapshot_pending: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

/// Outgoing raft traffic, owned by the driver thread.
pub struct Transport {
    me: NodeId,
    rt: tokio::runtime::Handle,
    links: BTreeMap<NodeId, Link>,
    feedback: SyncSender<Input>,
    /// Mutual TLS to every peer (None: `insecure = true`).
    tls: Option<Arc<Tls>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("me", &self.me)
            .field("peers", &self.links.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Transport {
    /// A transport for node `me`; link tasks run on `rt`; with `tls`,
    /// each link checks that its peer's certificate names that peer.
    pub fn new(
        me: NodeId,
        rt: tokio::runtime::Handle,
        feedback: SyncSender<Input>,
        tls: Option<Arc<Tls>>,
    ) -> Self {
        Self {
            me,
            rt,
            links: BTreeMap::new(),
            feedback,
            tls,
        }
    }

    /// Sets this node's identity and every peer's address; links to
    /// removed or changed peers close. Returns the peers whose closed link
    /// still held an unreported snapshot (raft must hear it failed).
    pub fn set_peers(&mut self, me: &Identity, book: BTreeMap<NodeId, PeerAddr>) -> Vec<NodeId> {
        let mut lost = Vec::new();
        self.links.retain(|id, link| {
            let keep = book.get(id) == Some(&link.peer) && link.me == *me;
            if !keep {
                link.task.abort();
                if link.snapshot_pending.swap(false, Ordering::Relaxed) {
                    lost.push(*id);
                }
            }
            keep
        });
        for (id, peer) in book {
            if self.links.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(QUEUE);
            let reachable = Arc::new(AtomicBool::new(false));
            let snapshot_pending = Arc::new(AtomicBool::new(false));
            let task = self.rt.spawn(run_link(
                me.clone(),
                id,
                peer.clone(),
                rx,
                LinkState {
                    reachable: reachable.clone(),
                    snapshot_pending: snapshot_pending.clone(),
                    feedback: self.feedback.clone(),
                    tls: self.tls.clone(),
                },
            ));
            self.links.insert(
                id,
                Link {
                    peer,
                    me: me.clone(),
                    tx,
                    reachable,
                    snapshot_pending,
                    task,
                },
            );
        }
        lost
    }

    /// Queues messages; never blocks. Returns the peers whose snapshot
    /// could not be queued.
    pub fn send(&mut self, msgs: Vec<Message>) -> Vec<NodeId> {
        let mut failed = Vec::new();
        for m in msgs {
            let is_snapshot = m.get_msg_type() == MessageType::MsgSnapshot;
            let to = m.to;
            match self.links.get(&to) {
                Some(link) => {
                    if is_snapshot {
                        link.snapshot_pending.store(true, Ordering::Relaxed);
                    }
                    if link.tx.try_send(m).is_err() {
                        metrics::counter!(crate::metrics::RAFT_DROPPED).increment(1);
                        if is_snapshot {
                            link.snapshot_pending.store(false, Ordering::Relaxed);
                            failed.push(to);
                        }
                    }
                }
                None => {
                    tracing::debug!(to, "no address for a raft message's destination");
                    if is_snapshot {
                        failed.push(to);
                    }
                }
            }
        }
        failed
    }

    /// Whether the last call to each peer succeeded.
    pub fn reachable(&self) -> BTreeMap<NodeId, bool> {
        self.links
            .iter()
            .map(|(id, l)| (*id, l.reachable.load(Ordering::Relaxed)))
            .collect()
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        for l in self.links.values() {
            l.task.abort();
        }
    }
}

/// What a link task shares with the transport and the driver.
struct LinkState {
    reachable: Arc<AtomicBool>,
    snapshot_pending: Arc<AtomicBool>,
    feedback: SyncSender<Input>,
    tls: Option<Arc<Tls>>,
}

impl LinkState {
    /// Tells the driver how a snapshot send ended. If its inbox is full the
    /// flag stays set and the driver's stuck-snapshot bound catches it.
    fn snapshot_done(&self, to: NodeId, ok: bool) {
        if self.feedback.try_send(Input::SnapshotDone(to, ok)).is_ok() {
            self.snapshot_pending.store(false, Ordering::Relaxed);
        }
    }
}

async fn run_link(
    me: Identity,
    to: NodeId,
    peer: PeerAddr,
    mut rx: mpsc::Receiver<Message>,
    state: LinkState,
) {
    let addr = peer.addr.clone();
    let LinkState {
        reachable,
        feedback,
        tls,
        ..
    } = &state;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("{scheme}://{addr}")) {
        Ok(e) => e
            .connect_timeout(CALL_DEADLINE)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5)),
        Err(e) => {
            tracing::error!(peer = to, %addr, error = %e, "bad peer address; no messages will reach it");
            return;
        }
    };
    // With TLS the peer must hold node `to`'s certificate from the CA.
    let endpoint = match tls {
        Some(tls) => match endpoint.tls_config(tls.client(&crate::tls::node_dns(to))) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(peer = to, error = %e, "cannot set up TLS to this peer; no messages will reach it");
                return;
            }
        },
        None => endpoint,
    };
    let mut client = PeerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut backoff = Duration::from_millis(50);
    let mut warned = false;
    loop {
        // An idle link sends an empty batch now and then: followers do not
        // talk to each other, yet status should say whether they could.
        let mut batch = match tokio::time::timeout(IDLE_PING, rx.recv()).await {
            Ok(Some(first)) => vec![first],
            Ok(None) => return,
            Err(_) => Vec::new(),
        };
        while !batch.is_empty() && batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let has_snapshot = batch
            .iter()
            .any(|m| m.get_msg_type() == MessageType::MsgSnapshot);
        let mut messages = Vec::with_capacity(batch.len());
        for m in &batch {
            match m.write_to_bytes() {
                Ok(b) => messages.push(b),
                Err(e) => tracing::error!(error = %e, "cannot encode a raft message"),
            }
        }
        let deadline = if has_snapshot {
            SNAPSHOT_DEADLINE
        } else {
            CALL_DEADLINE
        };
        let mut req = tonic::Request::new(RaftBatch {
            from: me.id,
            to,
            messages,
            cluster_id: me.cluster_id.clone(),
            from_instance: me.instance,
            to_instance: peer.instance,
            from_bound_at: me.bound_at,
        });
        req.set_timeout(deadline);
        let result = tokio::time::timeout(deadline, client.step(req)).await;
        let error = match result {
            Ok(Ok(_)) => None,
            Ok(Err(status)) => {
                // A member whose state predates this node's joining refuses
                // it as a stranger: the driver hands leadership over.
                if status.message().contains("is not a member of this cluster") {
                    let _ = feedback.try_send(Input::RefusedAsStranger(to));
                }
                Some(format!("{}: {}", status.code(), status.message()))
            }
            Err(_) => Some(format!("no answer within {deadline:?}")),
        };
        match error {
            None => {
                if !reachable.swap(true, Ordering::Relaxed) || warned {
                    tracing::info!(peer = to, %addr, "peer reachable");
                    warned = false;
                }
                backoff = Duration::from_millis(50);
                if has_snapshot {
                    state.snapshot_done(to, true);
                }
            }
            Some(error) => {
                reachable.store(false, Ordering::Relaxed);
                if !warned {
                    tracing::warn!(peer = to, %addr, %error, "peer unreachable; backing off");
                    warned = true;
                }
                let _ = feedback.try_send(Input::Unreachable(to));
                if has_snapshot {
                    state.snapshot_done(to, false);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                // Raft resends what still matters; stale traffic would only
                // delay it. A snapshot dropped here is reported failed.
                let mut dropped_snapshot = false;
                while let Ok(m) = rx.try_recv() {
                    dropped_snapshot |= m.get_msg_type() == MessageType::MsgSnapshot;
                }
                if dropped_snapshot {
                    state.snapshot_done(to, false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A peer that accepts connections and never says a word: the link's
    /// first call waits, and its queue fills.
    async fn silent_peer() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        });
        (addr, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_that_does_not_drain_its_queue_loses_messages_not_memory() {
        let (addr, _peer) = silent_peer().await;
        let (tx, _rx) = std::sync::mpsc::sync_channel(16);
        let mut t = Transport::new(1, tokio::runtime::Handle::current(), tx, None);
        let me = Identity {
            cluster_id: "c".into(),
            id: 1,
            instance: 1,
            bound_at: 0,
        };
        let book = BTreeMap::from([(
            2,
            PeerAddr {
                addr: addr.to_string(),
                instance: 0,
            },
        )]);
        t.set_peers(&me, book);
        // Snapshots, so that the transport says which it could not queue.
        let sends = QUEUE + BATCH + 1_000;
        let msgs: Vec<Message> = (0..sends)
            .map(|_| {
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgSnapshot);
                m.from = 1;
                m.to = 2;
                m
            })
            .collect();
        let failed = t.send(msgs);
        // At most the queue and one batch in flight were taken; the rest
        // were refused at once, and the driver is told.
        assert!(
            failed.len() >= sends - QUEUE - BATCH,
            "{} of {sends} refused",
            failed.len()
        );
        assert!(failed.iter().all(|id| *id == 2));
        // A message for a node with no address is refused too.
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.to = 9;
        assert_eq!(t.send(vec![m]), vec![9]);
    }
}
