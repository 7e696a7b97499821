//! The mesh with real node processes on loopback: election, agreed state,
//! a zone cut off from one target, leader loss and restart from sled,
//! membership, leadership transfer, and faxictl against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use faxi_proto::v1 as pb;
use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::{http::AppStub, metric, wait_for};

const LONG: Duration = Duration::from_secs(30);

/// `app` is up for everyone; zone-c's route to `cache` is broken (its node
/// points at a closed port); `gone` is down for everyone.
fn targets(_id: u64, zone: &str, ctx: &Ctx) -> String {
    let service = ctx.service.unwrap();
    let closed = ctx.closed.unwrap();
    let cache = if zone == "zone-c" { closed } else { service };
    format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{service}/health\"\n\n\
         [[targets]]\nname = \"cache\"\nkind = \"tcp\"\naddr = \"{cache}\"\n\n\
         [[targets]]\nname = \"gone\"\nkind = \"tcp\"\naddr = \"{closed}\"\n"
    )
}

fn closed_addr() -> std::net::SocketAddr {
    ([127, 0, 0, 1], faxi_tests::free_port()).into()
}

/// Runs faxictl and insists it succeeds; its stdout.
async fn faxictl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = Cluster::faxictl(endpoints, args).await;
    assert!(
        out.status.success(),
        "faxictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn commit(c: &Cluster, i: usize) -> Result<u64, String> {
    Ok(c.status(i).await?.cluster.unwrap_or_default().commit_index)
}

async fn three(app: &AppStub) -> Cluster {
    let mut spec = Spec::zones(3);
    spec.targets = targets;
    let ctx = Ctx {
        service: Some(app.addr),
        closed: Some(closed_addr()),
    };
    Cluster::start(&spec, &ctx).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zones_agree_a_zone_cut_off_from_a_target_is_suspect_never_down() {
    let app = AppStub::start().await;
    let c = three(&app).await;
    // Watch node 1 from the start, reading as it goes: every state `cache`
    // takes in what the watch sends.
    let mut stream = c
        .client(0)
        .watch(pb::StatusRequest::default())
        .await
        .unwrap()
        .into_inner();
    let watched = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader = {
        let watched = watched.clone();
        tokio::spawn(async move {
            while let Ok(Some(s)) = stream.message().await {
                if let Some(t) = s.targets.iter().find(|t| t.name == "cache") {
                    watched.lock().unwrap().push(t.state.clone());
                }
            }
        })
    };
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    c.wait_state(&[0, 1, 2], "gone", "DOWN", LONG).await;
    c.wait_state(&[0, 1, 2], "cache", "SUSPECT", LONG).await;

    // Several refreshes later it is still SUSPECT, and it never was DOWN:
    // not in the watch, and not in any transition any node applied (each
    // node logs every change of an agreed state, so its log is the whole
    // history, including changes too brief for the watch to show).
    let s = c.status(1).await.unwrap();
    let start_commit = s.cluster.unwrap().commit_index;
    wait_for("three more refresh rounds committed", LONG, || async {
        let ci = commit(&c, 1).await?;
        if ci >= start_commit + 9 {
            Ok(())
        } else {
            Err(format!("commit {ci}"))
        }
    })
    .await;
    reader.abort();
    let cache_states = watched.lock().unwrap().clone();
    assert!(
        cache_states.iter().any(|s| s == "SUSPECT"),
        "watch saw {cache_states:?}"
    );
    assert!(
        !cache_states.iter().any(|s| s == "DOWN"),
        "cache was DOWN at some point: {cache_states:?}"
    );
    for i in 0..3 {
        let changes: Vec<(String, String)> = c
            .log_lines(i)
            .iter()
            .filter(|l| l["message"] == "agreed state changed" && l["target_name"] == "cache")
            .map(|l| {
                let s = |k: &str| l[k].as_str().unwrap_or_default().to_owned();
                (s("from"), s("to"))
            })
            .collect();
        assert!(
            changes.iter().any(|(_, to)| to == "SUSPECT"),
            "node {} logged no change of cache to SUSPECT: {changes:?}",
            i + 1
        );
        assert!(
            !changes.iter().any(|(_, to)| to == "DOWN"),
            "node {} applied cache DOWN: {changes:?}",
            i + 1
        );
    }

    for i in 0..3 {
        let s = c.status(i).await.unwrap();
        let cache = s.targets.iter().find(|t| t.name == "cache").unwrap();
        assert_eq!(cache.state, "SUSPECT");
        assert_eq!(cache.down_zones, vec!["zone-c".to_owned()]);
        assert_eq!(cache.zones.get("zone-c").map(String::as_str), Some("DOWN"));
        assert_eq!(cache.zones.get("zone-a").map(String::as_str), Some("UP"));
        // Metrics say the same, and exactly one node leads.
        let m = faxi_tests::http_get(c.nodes[i].metrics, "/metrics")
            .await
            .unwrap();
        assert_eq!(
            metric(
                &m,
                "faxi_target_state",
                &[("target", "cache"), ("state", "SUSPECT")]
            ),
            Some(1.0)
        );
        assert_eq!(
            metric(
                &m,
                "faxi_target_state",
                &[("target", "cache"), ("state", "DOWN")]
            ),
            Some(0.0)
        );
        let is_leader = metric(&m, "faxi_raft_is_leader", &[]).unwrap();
        assert_eq!(is_leader, if c.nodes[i].id == leader { 1.0 } else { 0.0 });
    }

    // faxictl status --output json carries the contract's fields.
    let out = faxictl_ok(&c.endpoints(&[0, 1, 2]), &["status", "--output", "json"]).await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["cluster"]["leader"], leader);
    assert!(v["cluster"]["term"].as_u64().unwrap() >= 1);
    assert!(v["cluster"]["commit_index"].as_u64().unwrap() > 1);
    let members = v["cluster"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    for m in members {
        for k in ["id", "zone", "addr", "role", "reachable"] {
            assert!(m.get(k).is_some(), "member lacks {k}: {m}");
        }
    }
    let cache = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "cache")
        .unwrap();
    assert_eq!(cache["kind"], "tcp");
    assert_eq!(cache["state"], "SUSPECT");
    assert_eq!(cache["zones"]["zone-c"], "DOWN");
    assert!(cache["since"].is_string());
    let nodes = cache["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        for k in ["id", "verdict", "latency_ms", "error"] {
            assert!(n.get(k).is_some(), "node verdict lacks {k}: {n}");
        }
    }
    assert!(v["incidents"].is_array());

    // The table names the zone that cannot reach the target.
    let out = Cluster::faxictl(&c.endpoints(&[0, 1, 2]), &["status"]).await;
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("zone-c cannot reach cache"), "{table}");
    assert!(table.contains(&format!("leader {leader}")), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_a_new_leader_is_elected_and_the_restarted_node_loses_nothing() {
    let app = AppStub::start().await;
    let mut c = three(&app).await;
    let (old, old_term) = c.wait_leader(&[0, 1, 2], LONG).await;
    // Every target settled first, so the states compared after the restart
    // are not ones still being reached.
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    c.wait_state(&[0, 1, 2], "gone", "DOWN", LONG).await;
    c.wait_state(&[0, 1, 2], "cache", "SUSPECT", LONG).await;
    let li = c.index(old);
    let before = c.status(li).await.unwrap();
    let committed = before.cluster.as_ref().unwrap().commit_index;
    let agreed: BTreeMap<String, String> = before
        .targets
        .iter()
        .map(|t| (t.name.clone(), t.state.clone()))
        .collect();

    c.kill(li).await;
    let rest: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let (new, new_term) = c.wait_leader(&rest, LONG).await;
    assert_ne!(new, old);
    assert!(new_term > old_term);

    // The survivors keep committing; then the old leader comes back from sled.
    c.restart(li).await;
    wait_for("the restarted node caught up", LONG, || async {
        let s = c.status(li).await?;
        let cl = s.cluster.clone().unwrap_or_default();
        if cl.leader == new && cl.applied_index > committed {
            Ok(s)
        } else {
            Err(format!("leader {} applied {}", cl.leader, cl.applied_index))
        }
    })
    .await;
    // While it was down its own observations expired (cache may read UP
    // without zone-c's DOWN): the agreed states return once it reports again.
    wait_for("the agreed states as before the kill", LONG, || async {
        let s = c.status(li).await?;
        let now: BTreeMap<String, String> = s
            .targets
            .iter()
            .map(|t| (t.name.clone(), t.state.clone()))
            .collect();
        if now == agreed {
            Ok(())
        } else {
            Err(format!("{now:?}, before: {agreed:?}"))
        }
    })
    .await;
    // What the node read back from its own sled log on restart, before
    // hearing from anyone: every entry it had committed, and the commit.
    let opened: Vec<(u64, u64)> = c
        .log_lines(li)
        .iter()
        .filter(|l| l["message"] == "raft log opened")
        .map(|l| {
            (
                l["last_index"].as_u64().unwrap(),
                l["commit"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(opened.len(), 2, "{opened:?}");
    let (last_index, commit) = opened[1];
    assert!(
        last_index >= committed && commit >= committed,
        "reopened log: last index {last_index}, commit {commit}; committed before the kill: {committed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_at_runtime_catches_up_by_snapshot_then_leaves() {
    let app = AppStub::start().await;
    let mut spec = Spec::zones(4);
    spec.zones[3] = "zone-c".into();
    spec.cluster.push_str("snapshot_entries = 20\n");
    spec.targets = |_, _, ctx| {
        format!(
            "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\n",
            ctx.service.unwrap()
        )
    };
    let ctx = Ctx {
        service: Some(app.addr),
        closed: None,
    };
    // Node 4 is written as a joiner: it waits to be added.
    let mut c = Cluster::start_some(&spec, &ctx, 3, &[3], None).await;
    let (_, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    // Let the log pass a few snapshots, so node 4 cannot be sent index 2.
    wait_for("the log past two snapshots", LONG, || async {
        let ci = commit(&c, 0).await?;
        if ci > 45 {
            Ok(())
        } else {
            Err(format!("commit {ci}"))
        }
    })
    .await;

    let addr4 = c.nodes[3].grpc.to_string();
    faxictl_ok(
        &c.endpoints(&[1]),
        &["members", "add", "4", "zone-c", &addr4],
    )
    .await;
    c.restart(3).await;
    let s = wait_for("node 4 caught up", LONG, || async {
        let s = c.status(3).await?;
        let cl = s.cluster.clone().unwrap_or_default();
        if cl.leader != 0 && cl.members.len() == 4 && cl.applied_index > 45 {
            Ok(s)
        } else {
            Err(format!(
                "leader {} members {} applied {}",
                cl.leader,
                cl.members.len(),
                cl.applied_index
            ))
        }
    })
    .await;
    assert!(s.targets.iter().any(|t| t.name == "app"));
    // By a snapshot past the compacted log (index 1 is the bootstrap state,
    // which every node but node 1 also installs).
    let installed: Vec<u64> = c
        .log_lines(3)
        .iter()
        .filter(|l| l["message"] == "installed a snapshot from the leader")
        .filter_map(|l| l["index"].as_u64())
        .collect();
    assert!(
        installed.iter().any(|i| *i > 45),
        "node 4 did not catch up by a snapshot past compaction: {installed:?}"
    );
    // Its observations count: zone-c now has two members.
    wait_for("node 4's verdict in the log", LONG, || async {
        let s = c.status(0).await?;
        let nodes: Vec<(u64, String)> = s
            .targets
            .iter()
            .filter(|t| t.name == "app")
            .flat_map(|t| t.nodes.iter().map(|n| (n.id, n.verdict.clone())))
            .collect();
        if nodes.contains(&(4, "UP".to_owned())) {
            Ok(())
        } else {
            Err(format!("{nodes:?}"))
        }
    })
    .await;

    // Replacing a member's zone (or address) in place: `members add` again.
    // Node 4's promotion to voter may still be in flight; the refusal says
    // to retry, as an operator would.
    let addr4 = c.nodes[3].grpc.to_string();
    wait_for("the zone change accepted", LONG, || async {
        let out = Cluster::faxictl(
            &c.endpoints(&[2]),
            &["members", "add", "4", "zone-d", &addr4],
        )
        .await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.success() {
            Ok(())
        } else if err.contains("another membership change is still being applied") {
            Err(err)
        } else {
            panic!("members add 4 zone-d: {err}")
        }
    })
    .await;
    wait_for("node 4 in zone-d everywhere", LONG, || async {
        for i in 0..4 {
            let s = c.status(i).await?;
            let cl = s.cluster.unwrap_or_default();
            let z = cl
                .members
                .iter()
                .find(|m| m.id == 4)
                .map(|m| m.zone.clone());
            if z.as_deref() != Some("zone-d") {
                return Err(format!("node {} says {z:?}", i + 1));
            }
        }
        Ok(())
    })
    .await;

    faxictl_ok(&c.endpoints(&[0]), &["members", "remove", "4"]).await;
    wait_for("node 4 gone everywhere", LONG, || async {
        for i in 0..3 {
            let cl = c.status(i).await?.cluster.unwrap_or_default();
            let ids: Vec<u64> = cl.members.iter().map(|m| m.id).collect();
            if ids != [1, 2, 3] {
                return Err(format!("node {} has members {ids:?}", i + 1));
            }
        }
        Ok(())
    })
    .await;
    // A removed node may never hear of its own removal (the leader stops
    // talking to it); still running, it must not disturb the others.
    let term = c.status(0).await.unwrap().cluster.unwrap().term;
    let ci = commit(&c, 0).await.unwrap();
    wait_for("commits after the removal", LONG, || async {
        let now = commit(&c, 0).await?;
        if now > ci + 5 {
            Ok(())
        } else {
            Err(format!("commit {now}"))
        }
    })
    .await;
    assert_eq!(c.status(0).await.unwrap().cluster.unwrap().term, term);
    // Its observations no longer count anywhere.
    let s = c.status(0).await.unwrap();
    assert!(
        s.targets
            .iter()
            .flat_map(|t| t.nodes.iter())
            .all(|n| n.id != 4),
        "node 4's views survived its removal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leadership_moves_on_request() {
    let app = AppStub::start().await;
    let c = three(&app).await;
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    let to = if leader == 3 { 2 } else { 3 };
    // Asked of a follower that is not the target: carried to the leader.
    let via = (1..=3u64).find(|i| *i != leader && *i != to).unwrap();
    let out = faxictl_ok(
        &c.endpoints(&[c.index(via)]),
        &[
            "transfer-leader",
            &to.to_string(),
            "--output",
            "json",
            "--timeout",
            "10s",
        ],
    )
    .await;
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["leader"], to);
    let (now, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    assert_eq!(now, to);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faxictl_says_what_is_wrong() {
    // Nothing listens: every endpoint is named, exit 3.
    let dead = format!("{},{}", closed_addr(), closed_addr());
    let out = Cluster::faxictl(&dead, &["status"]).await;
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    for ep in dead.split(',') {
        assert!(err.contains(ep), "{err}");
    }
    // Usage errors: exit 2.
    let out = Cluster::faxictl(&dead, &["members", "add", "x"]).await;
    assert_eq!(out.status.code(), Some(2));
    let out = Cluster::faxictl(&dead, &["--output", "yaml", "status"]).await;
    assert_eq!(out.status.code(), Some(2));

    // A bad request reaches a node and comes back as a clear error, exit 1.
    let app = AppStub::start().await;
    let c = three(&app).await;
    c.wait_leader(&[0, 1, 2], LONG).await;
    let eps = c.endpoints(&[0, 1, 2]);
    let out = Cluster::faxictl(&eps, &["members", "add", "9", "zone-x", "no-port"]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("addr") && err.contains("no-port"), "{err}");
    let out = Cluster::faxictl(&eps, &["members", "add", "9", "bad zone!", "h:1"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("zone"));
    let out = Cluster::faxictl(&eps, &["members", "remove", "42"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a member"));
    // A dead endpoint first is skipped.
    let out = faxictl_ok(&format!("{},{}", closed_addr(), eps), &["members"]).await;
    assert!(out.contains("zone-b"));
}
