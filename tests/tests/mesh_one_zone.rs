//! A mesh whose nodes all live in one zone: a target that one node of three
//! cannot reach is SUSPECT, the zone is named in `down_zones`, and faxictl
//! says which node cannot reach it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::http::AppStub;
use faxi_tests::wait_for;

const LONG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_of_one_zone_seeing_down_is_suspect_and_named() {
    let app = AppStub::start().await;
    let mut spec = Spec::zones(3);
    spec.zones = vec!["dc".to_owned(); 3];
    // Node 3 is pointed at a closed port: it alone sees `cache` DOWN.
    spec.targets = |id, _, ctx| {
        let addr = if id == 3 {
            ctx.closed.unwrap()
        } else {
            ctx.service.unwrap()
        };
        format!("[[targets]]\nname = \"cache\"\nkind = \"tcp\"\naddr = \"{addr}\"\n")
    };
    let ctx = Ctx {
        service: Some(app.addr),
        closed: Some(([127, 0, 0, 1], faxi_tests::free_port()).into()),
    };
    let c = Cluster::start(&spec, &ctx).await;
    c.wait_leader(&[0, 1, 2], LONG).await;
    // SUSPECT while the zone's majority (nodes 1 and 2) says UP.
    wait_for("cache SUSPECT with dc UP everywhere", LONG, || async {
        let mut seen = Vec::new();
        for i in 0..3 {
            let s = c.status(i).await?;
            let t = s
                .targets
                .iter()
                .find(|t| t.name == "cache")
                .ok_or("no cache")?;
            seen.push((t.state.clone(), t.zones.get("dc").cloned()));
        }
        if seen
            .iter()
            .all(|(s, z)| s == "SUSPECT" && z.as_deref() == Some("UP"))
        {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
    for i in 0..3 {
        let s = c.status(i).await.unwrap();
        let t = s.targets.iter().find(|t| t.name == "cache").unwrap();
        assert_eq!(t.down_zones, ["dc"], "node {}", i + 1);
    }
    let table = wait_for("faxictl names node 3", LONG, || async {
        let out = Cluster::faxictl(&c.endpoints(&[0, 1, 2]), &["status"]).await;
        let table = String::from_utf8_lossy(&out.stdout).into_owned();
        if table.contains("node 3 in dc cannot reach cache") {
            Ok(table)
        } else {
            Err(table)
        }
    })
    .await;
    assert!(!table.contains("| cannot reach"), "{table}");
}
