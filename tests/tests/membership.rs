//! Membership and cluster identity on real node processes, at the default
//! cluster settings (100 ms tick, 10 election ticks, 5 s refresh, a
//! snapshot every 1,000 entries): the operator actions that must not lose
//! the cluster. A node added at runtime catches up at once (a snapshot made
//! on demand, not the last periodic one) and is promoted to voter; removing
//! the leader hands leadership over first and the survivors keep
//! committing; a node whose disk was wiped is refused with what to do, never
//! re-bootstraps, and rejoins once removed and added back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::{http::AppStub, wait_for};

const LONG: Duration = Duration::from_secs(30);

/// What the targets point at: the app stub every node can reach.
fn ctx(app: &AppStub) -> Ctx {
    Ctx {
        service: Some(app.addr),
        closed: None,
    }
}

/// Default cluster settings; one http target every node can reach.
fn spec(n: usize) -> Spec {
    let mut spec = Spec::zones(n);
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

async fn faxictl_ok(endpoints: &str, args: &[&str]) -> String {
    let out = Cluster::faxictl(endpoints, args).await;
    assert!(
        out.status.success(),
        "faxictl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The role node `id` has in node `i`'s view.
async fn role(c: &Cluster, i: usize, id: u64) -> Result<String, String> {
    let s = c.status(i).await?;
    let cl = s.cluster.unwrap_or_default();
    cl.members
        .iter()
        .find(|m| m.id == id)
        .map(|m| m.role.clone())
        .ok_or(format!(
            "node {id} is not a member in node {}'s view",
            i + 1
        ))
}

/// Waits until node `i`'s commit index passes `past`.
async fn commits_past(c: &Cluster, i: usize, past: u64) -> u64 {
    wait_for("a commit", LONG, || async {
        let ci = c.status(i).await?.cluster.unwrap_or_default().commit_index;
        if ci > past {
            Ok(ci)
        } else {
            Err(format!("commit {ci}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_added_at_runtime_catches_up_by_a_fresh_snapshot_and_becomes_a_voter() {
    let app = AppStub::start().await;
    let ctx = ctx(&app);
    let mut c = Cluster::start_some(&spec(4), &ctx, 3, &[3], None).await;
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    let at_add = commits_past(&c, 0, 3).await;

    let addr4 = c.nodes[3].grpc.to_string();
    // Asked of a follower: carried to the leader, which decides.
    let follower = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    faxictl_ok(
        &c.endpoints(&[follower]),
        &["members", "add", "4", "zone-d", &addr4],
    )
    .await;
    assert_eq!(role(&c, 0, 4).await.unwrap(), "learner");
    c.restart(3).await;
    // Caught up and promoted, with the defaults: the leader's periodic
    // snapshot (every 1,000 entries) is far away, so this only works with
    // a snapshot made on demand that names node 4.
    wait_for("node 4 a voter", LONG, || async {
        match role(&c, c.index(leader), 4).await?.as_str() {
            "follower" | "leader" => Ok(()),
            other => Err(format!("node 4 is {other}")),
        }
    })
    .await;
    let s = c.status(3).await.unwrap();
    let cl = s.cluster.unwrap();
    assert!(
        cl.applied_index >= at_add,
        "node 4 applied {}",
        cl.applied_index
    );
    assert_eq!(cl.members.len(), 4);
    let installed: Vec<u64> = c
        .log_lines(3)
        .iter()
        .filter(|l| l["message"] == "installed a snapshot from the leader")
        .map(|l| l["index"].as_u64().unwrap())
        .collect();
    assert!(
        installed.iter().any(|i| *i >= at_add),
        "node 4 installed snapshots {installed:?}, not one made after it was added (commit {at_add})"
    );
    // Its observations count.
    wait_for("node 4's verdict in the log", LONG, || async {
        let s = c.status(0).await?;
        let seen = s
            .targets
            .iter()
            .filter(|t| t.name == "app")
            .flat_map(|t| t.nodes.iter())
            .any(|n| n.id == 4 && n.verdict == "UP" && n.fresh);
        if seen { Ok(()) } else { Err("not yet".into()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_the_leader_hands_over_first_and_the_survivors_keep_committing() {
    let app = AppStub::start().await;
    let ctx = ctx(&app);
    let c = Cluster::start(&spec(3), &ctx).await;
    let (leader, term) = c.wait_leader(&[0, 1, 2], LONG).await;
    let li = c.index(leader);
    let rest: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    // As an operator would see it first: every member answers.
    wait_for("every member reachable from the leader", LONG, || async {
        let cl = c.status(li).await?.cluster.unwrap_or_default();
        if cl.members.len() == 3 && cl.members.iter().all(|m| m.reachable) {
            Ok(())
        } else {
            Err(format!("{:?}", cl.members))
        }
    })
    .await;
    // Asked of the leader itself.
    faxictl_ok(
        &c.endpoints(&[li]),
        &["members", "remove", &leader.to_string()],
    )
    .await;
    let (new, new_term) = c.wait_leader(&rest, LONG).await;
    assert_ne!(new, leader);
    assert!(new_term > term);
    wait_for("the removal applied on both survivors", LONG, || async {
        for i in &rest {
            let cl = c.status(*i).await?.cluster.unwrap_or_default();
            if cl.members.iter().any(|m| m.id == leader) {
                return Err(format!("node {} still lists the removed node", i + 1));
            }
        }
        Ok(())
    })
    .await;
    // Observations keep committing on the survivors (log time moves).
    let before = c
        .status(rest[0])
        .await
        .unwrap()
        .cluster
        .unwrap()
        .commit_index;
    commits_past(&c, rest[0], before).await;
    commits_past(&c, rest[1], before).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_is_refused_until_removed_and_added_back() {
    let app = AppStub::start().await;
    let ctx = ctx(&app);
    let mut c = Cluster::start(&spec(3), &ctx).await;
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    // Wipe a follower's disk; restart it with its unchanged config.
    let victim = (0..3).find(|i| *i as u64 + 1 != leader).unwrap();
    let id = victim as u64 + 1;
    c.kill(victim).await;
    std::fs::remove_dir_all(c.dir.path().join(format!("data{id}"))).unwrap();
    c.restart(victim).await;
    let hint = format!("faxictl members remove {id}");
    wait_for("the wiped node says what to do", LONG, || async {
        let text = std::fs::read_to_string(&c.nodes[victim].log).unwrap_or_default();
        if text.contains(&hint) {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    let text = std::fs::read_to_string(&c.nodes[victim].log).unwrap();
    assert!(!text.contains("panicked"), "{text}");
    // It did not re-bootstrap: no state, no leader of its own.
    let s = c.status(victim).await.unwrap().cluster.unwrap();
    assert_eq!(s.cluster_id, "", "the wiped node took state: {s:?}");
    assert_eq!(s.applied_index, 0);
    // The cluster goes on with two of three.
    let rest: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let before = c.status(rest[0]).await.unwrap().cluster.unwrap();
    commits_past(&c, rest[0], before.commit_index).await;

    // As the message says: remove it, add it back; it catches up and votes.
    let addr = c.nodes[victim].grpc.to_string();
    let zone = c.nodes[victim].zone.clone();
    faxictl_ok(&c.endpoints(&rest), &["members", "remove", &id.to_string()]).await;
    faxictl_ok(
        &c.endpoints(&rest),
        &["members", "add", &id.to_string(), &zone, &addr],
    )
    .await;
    wait_for("the node back as a voter", LONG, || async {
        let l = c.status(rest[0]).await?.cluster.unwrap_or_default().leader;
        let li = c.index(l);
        match role(&c, li, id).await?.as_str() {
            "follower" | "leader" => Ok(()),
            other => Err(format!("node {id} is {other}")),
        }
    })
    .await;
    let s = c.status(victim).await.unwrap().cluster.unwrap();
    assert_eq!(s.cluster_id, before.cluster_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_that_disagrees_with_the_membership_is_reported_not_used() {
    let app = AppStub::start().await;
    let ctx = ctx(&app);
    let mut c = Cluster::start(&spec(3), &ctx).await;
    c.wait_leader(&[0, 1, 2], LONG).await;
    // Node 3's config gets a typo in node 2's zone; restarted, it keeps the
    // cluster's view and says so.
    c.kill(2).await;
    let cfg = std::fs::read_to_string(&c.nodes[2].config).unwrap();
    let typo = cfg.replacen("zone = \"zone-b\"", "zone = \"zone-bb\"", 1);
    assert_ne!(cfg, typo);
    std::fs::write(&c.nodes[2].config, typo).unwrap();
    c.restart(2).await;
    wait_for("the mismatch reported", LONG, || async {
        let text = std::fs::read_to_string(&c.nodes[2].log).unwrap_or_default();
        if text.contains("disagrees with the cluster's membership") && text.contains("zone-bb") {
            Ok(())
        } else {
            Err("not yet".into())
        }
    })
    .await;
    let s = c.status(2).await.unwrap().cluster.unwrap();
    let zone2 = s.members.iter().find(|m| m.id == 2).unwrap().zone.clone();
    assert_eq!(zone2, "zone-b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_that_would_leave_no_reachable_quorum_is_refused_unless_forced() {
    let app = AppStub::start().await;
    let ctx = ctx(&app);
    let mut c = Cluster::start(&spec(3), &ctx).await;
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    let li = c.index(leader);
    let others: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    // One follower is down; removing the other would leave the leader and
    // the dead one: no quorum that answers.
    c.kill(others[0]).await;
    let down_id = others[0] as u64 + 1;
    wait_for("the leader sees the node down", LONG, || async {
        let s = c.status(li).await?.cluster.unwrap_or_default();
        match s.members.iter().find(|m| m.id == down_id) {
            Some(m) if !m.reachable => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let victim = (others[1] as u64 + 1).to_string();
    let refused = wait_for("the removal refused", LONG, || async {
        let out = Cluster::faxictl(&c.endpoints(&[li]), &["members", "remove", &victim]).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if out.status.code() == Some(1) && err.contains("no quorum") {
            Ok(err)
        } else {
            // The leader may not have noticed the dead node yet.
            Err(format!("exit {:?}: {err}", out.status.code()))
        }
    })
    .await;
    assert!(refused.contains("--force"), "{refused}");
    let s = c.status(li).await.unwrap().cluster.unwrap();
    assert_eq!(s.members.len(), 3, "a refused removal changed the members");
    // Removing the leader itself is refused the same way, before it hands
    // leadership over: nothing moves.
    let term = s.term;
    let out = Cluster::faxictl(
        &c.endpoints(&[li]),
        &["members", "remove", &leader.to_string()],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no quorum"), "{err}");
    // Moving the live follower to an address where nothing answers could
    // lose it: refused too.
    let dead = format!("127.0.0.1:{}", faxi_tests::free_port());
    let zone = c.nodes[others[1]].zone.clone();
    let out = Cluster::faxictl(
        &c.endpoints(&[li]),
        &["members", "add", &victim, &zone, &dead],
    )
    .await;
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no quorum"), "{err}");
    let s = c.status(li).await.unwrap().cluster.unwrap();
    assert_eq!(
        (s.leader, s.term),
        (leader, term),
        "a refused change moved leadership"
    );
    assert!(s.members.iter().all(|m| m.addr != dead));
    // Forced, it is done; the two voters left wait for the dead one, which
    // comes back and the cluster commits again.
    faxictl_ok(
        &c.endpoints(&[li]),
        &["members", "remove", &victim, "--force"],
    )
    .await;
    c.restart(others[0]).await;
    let (l, _) = c.wait_leader(&[li, others[0]], LONG).await;
    assert!(l == leader || l == down_id);
    let before = c.status(li).await.unwrap().cluster.unwrap().commit_index;
    commits_past(&c, li, before).await;
}
