//! Trust on real node processes over mutual TLS, at the default cluster
//! settings: who may talk to a node is decided by the certificate it
//! presents. A plaintext client, a certificate from another CA (another
//! cluster), node 2's certificate claiming to be node 3, and an operator's
//! certificate sending raft messages are all refused and counted, with no
//! state change, and the cluster goes on committing; a read-only operator
//! may read but not change anything; a node restarted with a new
//! certificate from the same CA keeps its place (rotation).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_proto::v1::peer_client::PeerClient;
use faxi_proto::v1::watchdog_client::WatchdogClient;
use faxi_proto::v1::{RaftBatch, StatusRequest};
use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::tls::shared;
use faxi_tests::{http::AppStub, http_get, metric, wait_for};

const LONG: Duration = Duration::from_secs(30);

fn spec() -> Spec {
    let mut spec = Spec::zones(3);
    spec.cluster = String::new();
    spec.probe_defaults = String::new();
    spec.targets = |_, _, ctx| {
        format!(
            "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\n",
            ctx.service.unwrap()
        )
    };
    spec
}

fn ctx(app: &AppStub) -> Ctx {
    Ctx {
        service: Some(app.addr),
        closed: None,
    }
}

/// A cluster's commit index as node `i` sees it.
async fn commit(c: &Cluster, i: usize) -> u64 {
    c.status(i)
        .await
        .unwrap()
        .cluster
        .unwrap_or_default()
        .commit_index
}

/// `faxi_raft_messages_refused_total{reason}` on node `i`.
async fn refused(c: &Cluster, i: usize, reason: &str) -> f64 {
    let text = http_get(c.nodes[i].metrics, "/metrics").await.unwrap();
    metric(
        &text,
        "faxi_raft_messages_refused_total",
        &[("reason", reason)],
    )
    .unwrap_or(0.0)
}

/// Bytes in a raft message's place: refused batches are never read.
fn message(from: u64, to: u64, term: u64) -> Vec<u8> {
    format!("heartbeat {from}->{to} term {term}").into_bytes()
}

/// The TLS handshake failed: the call never reached the service.
fn refused_at_handshake(e: &tonic::Status) -> bool {
    // How the refusal surfaces depends on when the server's alert arrives:
    // during the handshake, or as the first request's stream is closed.
    matches!(
        e.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) && (e.message().contains("transport error") || e.message().contains("canceled"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_impostors_are_refused_and_the_cluster_goes_on() {
    let app = AppStub::start().await;
    let c = Cluster::start(&spec(), &ctx(&app)).await;
    let (leader, term) = c.wait_leader(&[0, 1, 2], LONG).await;
    let before = commit(&c, 0).await;
    let tls = shared();

    // Plaintext to a TLS port: no answer.
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{}", c.nodes[0].grpc))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(2))
        .connect_lazy();
    assert!(
        WatchdogClient::new(plain)
            .status(StatusRequest::default())
            .await
            .is_err()
    );

    // Another cluster's CA: the handshake fails, as a client and as a peer.
    let other = tempfile::tempdir().unwrap();
    faxi_watchdog::tls::make_certs(&faxi_watchdog::tls::CertRequest {
        dir: other.path().to_owned(),
        nodes: vec![2],
        operators: vec![("mallory".into(), faxi_watchdog::tls::Role::Admin)],
        replace: false,
    })
    .unwrap();
    let foreign = |file: &str| {
        tls.channel_with(
            c.nodes[0].grpc,
            tls.client_files(
                &other.path().join(format!("{file}.pem")),
                &other.path().join(format!("{file}.key")),
            ),
        )
    };
    let e = WatchdogClient::new(foreign("client-mallory"))
        .status(StatusRequest::default())
        .await
        .unwrap_err();
    assert!(refused_at_handshake(&e), "{e}");
    let e = PeerClient::new(foreign("node-2"))
        .step(RaftBatch {
            from: 2,
            to: 1,
            messages: vec![message(2, 1, u64::MAX)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(refused_at_handshake(&e), "{e}");

    // Node 2's own certificate, claiming to be node 3: refused and counted.
    let wrong_before = refused(&c, 0, "wrong_identity").await;
    let as_node2 = tls.node_channel(c.nodes[0].grpc, 2);
    let e = PeerClient::new(as_node2)
        .step(RaftBatch {
            from: 3,
            to: 1,
            messages: vec![message(3, 1, u64::MAX)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("authenticated as node 2"), "{e}");
    // An operator's certificate cannot speak raft either.
    let e = PeerClient::new(tls.channel(c.nodes[0].grpc, "admin"))
        .step(RaftBatch {
            from: 2,
            to: 1,
            messages: vec![message(2, 1, u64::MAX)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.message().contains("only from a node's certificate"),
        "{e}"
    );
    assert_eq!(refused(&c, 0, "wrong_identity").await, wrong_before + 1.0);
    // A node certificate from the cluster's CA, for a node that was never
    // added (or was removed): it speaks raft to nobody, asks for nothing.
    let as_node9 = tls.node_channel(c.nodes[0].grpc, 9);
    let s = c.status(0).await.unwrap().cluster.unwrap();
    let e = PeerClient::new(as_node9.clone())
        .step(RaftBatch {
            from: 9,
            to: 1,
            messages: vec![message(9, 1, s.term + 1)],
            cluster_id: s.cluster_id.clone(),
            from_bound_at: u64::MAX,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.message().contains("not a member"), "{e}");
    let e = WatchdogClient::new(as_node9)
        .remove_member(faxi_proto::v1::RemoveMemberRequest { id: 3, force: true })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");

    // A read-only operator reads, and changes nothing.
    let eps = c.endpoints(&[0, 1, 2]);
    let out = Cluster::faxictl_as("reader", &eps, &["status"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for args in [
        vec!["members", "remove", "3"],
        vec!["members", "add", "4", "zone-d", "127.0.0.1:9"],
        vec!["transfer-leader", "2"],
    ] {
        let out = Cluster::faxictl_as("reader", &eps, &args).await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains("reader (read) may not") && err.contains("role"),
            "{args:?}: {err}"
        );
    }
    // An operator may move leadership but not change the membership.
    let out = Cluster::faxictl_as("operator", &eps, &["members", "remove", "3"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("needs the admin role"), "{err}");

    // Nothing changed: the same leader and term, three members, and the
    // cluster still commits.
    let s = c.status(0).await.unwrap().cluster.unwrap();
    assert_eq!((s.leader, s.term), (leader, term));
    assert_eq!(s.members.len(), 3);
    wait_for("the cluster to commit on", LONG, || async {
        let now = commit(&c, 0).await;
        if now > before {
            Ok(())
        } else {
            Err(format!("commit {now}"))
        }
    })
    .await;
    // Each refusal left a line in the log saying why.
    assert!(
        c.log_lines(0).iter().any(|l| l["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("authenticated as")))
            || c.log_lines(0).iter().any(|l| l["reason"]
                .as_str()
                .is_some_and(|r| r.contains("authenticated as"))),
        "no log line for the refused batch"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_a_new_certificate_from_the_same_ca_keeps_its_place() {
    let app = AppStub::start().await;
    let mut c = Cluster::start(&spec(), &ctx(&app)).await;
    c.wait_leader(&[0, 1, 2], LONG).await;
    // A new certificate and key for node 2 from the same CA, in a new place.
    let tls = shared();
    let new = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "ca.key"] {
        std::fs::copy(tls.dir.join(f), new.path().join(f)).unwrap();
    }
    faxi_watchdog::tls::make_certs(&faxi_watchdog::tls::CertRequest {
        dir: new.path().to_owned(),
        nodes: vec![2],
        operators: vec![],
        replace: false,
    })
    .unwrap();
    assert_ne!(
        std::fs::read(new.path().join("node-2.pem")).unwrap(),
        std::fs::read(tls.dir.join("node-2.pem")).unwrap()
    );
    c.kill(1).await;
    let config = std::fs::read_to_string(&c.nodes[1].config).unwrap();
    let rotated = config
        .replace(
            &tls.dir.join("node-2.pem").display().to_string(),
            &new.path().join("node-2.pem").display().to_string(),
        )
        .replace(
            &tls.dir.join("node-2.key").display().to_string(),
            &new.path().join("node-2.key").display().to_string(),
        );
    assert_ne!(config, rotated);
    std::fs::write(&c.nodes[1].config, rotated).unwrap();
    let before = commit(&c, 0).await;
    c.restart(1).await;
    // Node 2 catches up past what was committed while it was down, and the
    // leader reaches it again.
    wait_for("node 2 back in the cluster", LONG, || async {
        let s = c.status(1).await?.cluster.unwrap_or_default();
        let l = c.status(0).await?.cluster.unwrap_or_default();
        let reached = l.members.iter().all(|m| m.reachable);
        if s.applied_index > before && s.leader != 0 && reached {
            Ok(())
        } else {
            Err(format!(
                "node 2 applied {} leader {}; members {:?}",
                s.applied_index, s.leader, l.members
            ))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_connections_that_never_speak_is_shed_and_the_cluster_goes_on() {
    use faxi_watchdog::api::MAX_CONNECTIONS;
    let app = AppStub::start().await;
    let c = Cluster::start(&spec(), &ctx(&app)).await;
    c.wait_leader(&[0, 1, 2], LONG).await;
    let target = c.nodes[0].grpc;
    // More connections than a node takes, none of which ever says a word
    // (not even a TLS hello).
    let mut flood = Vec::new();
    for _ in 0..MAX_CONNECTIONS + 100 {
        flood.push(tokio::net::TcpStream::connect(target).await.unwrap());
    }
    // Those past the bound are closed on arrival, and counted.
    wait_for("connections past the bound refused", LONG, || async {
        let text = http_get(c.nodes[0].metrics, "/metrics").await?;
        let n = metric(&text, "faxi_grpc_connections_refused_total", &[]).unwrap_or(0.0);
        if n >= 100.0 {
            Ok(())
        } else {
            Err(format!("{n} refused"))
        }
    })
    .await;
    // The others are closed when their TLS handshake does not come: every
    // one of them ends (none is left open for good).
    wait_for(
        "every silent connection closed by the node",
        LONG,
        || async {
            let mut open = 0;
            let mut buf = [0u8; 16];
            for s in &flood {
                match s.try_read(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
                    _ => {}
                }
            }
            if open == 0 {
                Ok(())
            } else {
                Err(format!("{open} still open"))
            }
        },
    )
    .await;
    drop(flood);
    // The node serves again and the cluster commits on.
    let before = commit(&c, 1).await;
    wait_for(
        "node 1 answering and the cluster committing",
        LONG,
        || async {
            let s = c.status(0).await?.cluster.unwrap_or_default();
            if s.commit_index > before && s.leader != 0 {
                Ok(())
            } else {
                Err(format!("commit {} leader {}", s.commit_index, s.leader))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mutation_is_recorded_with_who_what_and_when_on_every_node() {
    let app = AppStub::start().await;
    let c = Cluster::start(&spec(), &ctx(&app)).await;
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    let follower = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    let to = follower as u64 + 1;
    // An operator asks a follower, which carries it to the leader.
    let out = Cluster::faxictl_as(
        "operator",
        &c.endpoints(&[follower]),
        &["transfer-leader", &to.to_string()],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // An admin asks the new leader directly.
    let out = Cluster::faxictl_as(
        "admin",
        &c.endpoints(&[follower]),
        &["members", "add", "7", "zone-x", "127.0.0.1:9"],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A refused request leaves no record.
    let out = Cluster::faxictl_as("reader", &c.endpoints(&[0]), &["members", "remove", "7"]).await;
    assert_eq!(out.status.code(), Some(1));

    // Every node holds the same records, newest first; a reader may see them.
    for i in 0..3 {
        let out = Cluster::faxictl_as("reader", &c.endpoints(&[i]), &["audit", "-o", "json"]).await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let records = v["records"].as_array().unwrap();
        let got: Vec<(String, String, u64)> = records
            .iter()
            .map(|r| {
                (
                    r["by"].as_str().unwrap().to_owned(),
                    r["action"].as_str().unwrap().to_owned(),
                    r["recorded_by"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "admin (admin)".to_owned(),
                    "members add 7 zone-x 127.0.0.1:9".to_owned(),
                    to
                ),
                (
                    format!("operator (operate) via node {to}"),
                    format!("transfer-leader {to}"),
                    leader
                ),
            ],
            "node {}",
            i + 1
        );
        assert!(records.iter().all(|r| r["at"].is_string()), "{v}");
    }
    let table = Cluster::faxictl_as("reader", &c.endpoints(&[0]), &["audit"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("operator (operate) via node"), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_automation_token_stands_in_for_a_certificate_with_its_role() {
    use faxi_watchdog::tls::{Role, new_token};
    let dir = tempfile::tempdir().unwrap();
    let (token, entry) = new_token("ci-bot", Role::Operate).unwrap();
    std::fs::write(dir.path().join("tokens.toml"), entry).unwrap();
    std::fs::write(dir.path().join("token"), format!("{token}\n")).unwrap();
    std::fs::write(dir.path().join("wrong"), "0123456789abcdef\n").unwrap();
    let app = AppStub::start().await;
    let mut spec = spec();
    spec.tls = format!(
        "tokens_file = {:?}\n",
        dir.path().join("tokens.toml").display().to_string()
    );
    let c = Cluster::start(&spec, &ctx(&app)).await;
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    let ca = shared().dir.join("ca.pem").display().to_string();
    let eps = c.endpoints(&[0, 1, 2]);
    let faxictl = |token: &'static str, args: &'static [&'static str]| {
        let (ca, eps, file) = (ca.clone(), eps.clone(), dir.path().join(token));
        async move {
            let out = tokio::process::Command::new(faxi_tests::workspace_bin("faxictl"))
                .args(["--config", "/dev/null", "--ca", &ca, "--token-file"])
                .arg(&file)
                .args(args)
                .env("FAXI_ENDPOINTS", &eps)
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    // The token reads, and does what its role allows.
    let (code, _, err) = faxictl("token", &["status"]).await;
    assert_eq!(code, Some(0), "{err}");
    let follower = (1..=3u64).find(|id| *id != leader).unwrap();
    let to = follower.to_string();
    let out = tokio::process::Command::new(faxi_tests::workspace_bin("faxictl"))
        .args(["--config", "/dev/null", "--ca", &ca, "--token-file"])
        .arg(dir.path().join("token"))
        .args(["transfer-leader", &to])
        .env("FAXI_ENDPOINTS", &eps)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not more.
    let (code, _, err) = faxictl("token", &["members", "remove", "3"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("ci-bot (operate) may not"), "{err}");
    // A token the nodes do not know: nothing.
    let (code, _, err) = faxictl("wrong", &["status"]).await;
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("not one of this cluster's tokens"), "{err}");
    // The audit log names the token's holder.
    let (code, out, err) = faxictl("token", &["audit", "-o", "json"]).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ci-bot (operate)"), "{out}");
    // A token cannot speak raft: peers need their certificate.
    let no_cert = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(
            std::fs::read(shared().dir.join("ca.pem")).unwrap(),
        ))
        .domain_name(faxi_watchdog::tls::ANY_NODE);
    let mut req = tonic::Request::new(RaftBatch {
        from: 2,
        to: 1,
        messages: vec![message(2, 1, 5)],
        ..Default::default()
    });
    req.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    let e = PeerClient::new(shared().channel_with(c.nodes[0].grpc, no_cert.clone()))
        .step(req)
        .await
        .unwrap_err();
    assert!(
        e.message().contains("only from a node's certificate"),
        "{e}"
    );
    // Where tokens are taken, a TLS handshake without a certificate proves
    // nothing: a connection that then never asks anything is closed (and
    // counted) instead of holding one of the node's places for good.
    let idle = tonic::transport::Endpoint::from_shared(format!("https://{}", c.nodes[1].grpc))
        .unwrap()
        .tls_config(no_cert)
        .unwrap()
        .connect()
        .await
        .unwrap();
    wait_for(
        "the connection that asked nothing closed by node 2",
        LONG,
        || async {
            let text = http_get(c.nodes[1].metrics, "/metrics").await?;
            match metric(&text, "faxi_grpc_connections_unauthenticated_total", &[]) {
                Some(n) if n >= 1.0 => Ok(()),
                n => Err(format!("{n:?} closed")),
            }
        },
    )
    .await;
    drop(idle);
    // Connections that did authenticate (the test's, the peers') stay:
    // the cluster still answers and commits.
    let before = commit(&c, 1).await;
    wait_for("the cluster committing on", LONG, || async {
        let s = c.status(1).await?.cluster.unwrap_or_default();
        if s.commit_index > before {
            Ok(())
        } else {
            Err(format!("commit {}", s.commit_index))
        }
    })
    .await;
}

/// Sum of every series of `name` in a Prometheus text.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compromised_member_cannot_panic_wedge_or_steer_the_leader() {
    use protobuf::Message as _;
    use raft::eraftpb::{Entry, Message, MessageType, Snapshot};
    let app = AppStub::start().await;
    let c = Cluster::start(&spec(), &ctx(&app)).await;
    let (leader, term) = c.wait_leader(&[0, 1, 2], LONG).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    let li = c.index(leader);
    let s = c.status(li).await.unwrap().cluster.unwrap();
    let cluster_id = s.cluster_id.clone();
    // A follower's key is stolen: the attacker speaks as that node, with
    // its real certificate, to the leader.
    let sender = (1..=3u64).find(|id| *id != leader).unwrap();
    let tls = shared();
    let channel = tls.node_channel(c.nodes[li].grpc, sender);
    let msg = |t: MessageType, term: u64| {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = sender;
        m.to = leader;
        m.term = term;
        m
    };
    let other = (1..=3u64)
        .find(|id| *id != leader && *id != sender)
        .unwrap();
    let observe_for_other =
        faxi_watchdog::mesh::driver::encode(&faxi_watchdog::mesh::state::Command::Observe {
            node: other,
            at_ms: 253_402_300_799_000,
            valid_for_ms: 3_600_000,
            seen: vec![faxi_watchdog::mesh::state::Seen {
                target: "app".into(),
                verdict: faxi_watchdog::mesh::state::State::Down,
                latency_us: 1,
                error: Some("forged".into()),
            }],
            whole: false,
        })
        .unwrap();
    let mut attacks = Vec::new();
    // A term from nowhere.
    attacks.push(msg(MessageType::MsgHeartbeat, u64::MAX));
    // An empty proposal.
    attacks.push(msg(MessageType::MsgPropose, 0));
    // A proposal of another node's observation, from the far future.
    let mut p = msg(MessageType::MsgPropose, 0);
    p.set_entries(
        vec![Entry {
            data: observe_for_other.into(),
            ..Default::default()
        }]
        .into(),
    );
    attacks.push(p);
    // A heartbeat with a commit past the log, as if it led.
    let mut hb = msg(MessageType::MsgHeartbeat, term);
    hb.commit = 1 << 40;
    attacks.push(hb);
    // A snapshot of garbage.
    let mut snap = msg(MessageType::MsgSnapshot, term);
    let mut sn = Snapshot {
        data: b"\x00garbage\xff".to_vec().into(),
        ..Default::default()
    };
    sn.mut_metadata().index = 1 << 20;
    sn.mut_metadata().term = term;
    snap.set_snapshot(sn);
    attacks.push(snap);
    // TimeoutNow, again and again.
    for _ in 0..3 {
        attacks.push(msg(MessageType::MsgTimeoutNow, term + 1));
    }
    let metrics = c.nodes[li].metrics;
    let refused_before = total(
        &http_get(metrics, "/metrics").await.unwrap(),
        "faxi_raft_messages_refused_total",
    );
    let mut peer = PeerClient::new(channel);
    for m in &attacks {
        // The edge may take the batch (its envelope is a member's); the
        // driver then refuses the message.
        let _ = peer
            .step(RaftBatch {
                from: sender,
                to: leader,
                messages: vec![m.write_to_bytes().unwrap()],
                cluster_id: cluster_id.clone(),
                ..Default::default()
            })
            .await;
    }
    wait_for("every attack refused and counted", LONG, || async {
        let now = total(
            &http_get(metrics, "/metrics").await?,
            "faxi_raft_messages_refused_total",
        );
        if now >= refused_before + attacks.len() as f64 {
            Ok(())
        } else {
            Err(format!(
                "{} refused of {}",
                now - refused_before,
                attacks.len()
            ))
        }
    })
    .await;
    // Nothing moved: the same leader and term, and the cluster commits on.
    let before = commit(&c, li).await;
    wait_for("the cluster committing on", LONG, || async {
        let s = c.status(li).await?.cluster.unwrap_or_default();
        if s.commit_index > before && (s.leader, s.term) == (leader, term) {
            Ok(())
        } else {
            Err(format!(
                "leader {} term {} commit {}",
                s.leader, s.term, s.commit_index
            ))
        }
    })
    .await;
    // No node took an observation for another node, or a stamp from the
    // far future.
    let s = c.status(li).await.unwrap();
    let app = s.targets.iter().find(|t| t.name == "app").unwrap();
    assert_eq!(app.state, "UP", "{app:?}");
    for n in &app.nodes {
        assert!(n.at_unix_ms < 253_402_300_000_000, "{app:?}");
        assert_ne!(n.error, "forged", "{app:?}");
    }
}
