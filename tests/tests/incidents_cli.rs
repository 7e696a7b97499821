//! Incidents through faxictl against real node processes: a target that
//! goes DOWN opens an incident that `incidents`, `incident show`, `status`
//! and `rto` show; maintenance on and off (recorded in the audit log, and
//! carried to the leader by a follower); approve and drill refused with
//! the state machine's reason; a reader refused; and the incident finished
//! with its recovery time once the target is back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::http::AppStub;
use faxi_tests::wait_for;
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);

/// `app`, the HTTP stub, probed by every node; no recovery config.
fn targets(_id: u64, _zone: &str, ctx: &Ctx) -> String {
    format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\nrto = \"15m\"\n",
        ctx.service.unwrap()
    )
}

/// faxictl as `who`: exit code, stdout, stderr.
async fn faxictl(who: &str, endpoints: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Cluster::faxictl_as(who, endpoints, args).await;
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// faxictl as `who`, which must succeed: its stdout.
async fn ok(who: &str, endpoints: &str, args: &[&str]) -> String {
    let (code, out, err) = faxictl(who, endpoints, args).await;
    assert_eq!(code, Some(0), "faxictl {args:?}: {err}");
    out
}

/// faxictl as `who` with `--output json`, which must succeed and parse.
async fn json(who: &str, endpoints: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["--output", "json"]);
    let out = ok(who, endpoints, &args).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("faxictl {args:?}: {e}: {out}"))
}

/// `faxictl audit`'s actions, newest first.
async fn audit_actions(endpoints: &str) -> Vec<String> {
    json("reader", endpoints, &["audit"]).await["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_is_shown_maintained_refused_and_finished_through_faxictl() {
    let app = AppStub::start().await;
    let mut spec = Spec::zones(3);
    spec.targets = targets;
    let ctx = Ctx {
        service: Some(app.addr),
        closed: None,
    };
    let c = Cluster::start(&spec, &ctx).await;
    let eps = c.endpoints(&[0, 1, 2]);
    let (leader, _) = c.wait_leader(&[0, 1, 2], LONG).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    let v = json("reader", &eps, &["incidents"]).await;
    assert_eq!(v["incidents"], Value::Array(Vec::new()), "{v}");
    assert_eq!(v["maintenance"]["on"], false, "{v}");

    // The app fails: DOWN in every zone opens an incident.
    app.set_status(503);
    let incident = wait_for("an incident for app", LONG, || async {
        let v = json("reader", &eps, &["incidents"]).await;
        match v["incidents"].as_array().unwrap().as_slice() {
            [i] => Ok(i.clone()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    let id = incident["id"].as_u64().unwrap();
    assert_eq!(incident["target"], "app");
    assert_eq!(incident["phase"], "OPEN");
    assert_eq!(incident["drill"], false);
    assert_eq!(incident["finished"], false);
    assert_eq!(incident["recover_ms"], Value::Null);
    assert_eq!(incident["resolved"], Value::Null);
    assert!(incident["opened"].is_string(), "{incident}");
    assert!(incident["detect_ms"].is_u64(), "{incident}");
    // The zones that saw it down when a quorum of them first did.
    let zones: Vec<&str> = incident["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z.as_str().unwrap())
        .collect();
    assert!(zones.len() >= 2, "{incident}");
    let ids = id.to_string();
    let table = ok("reader", &eps, &["incidents"]).await;
    for want in [ids.as_str(), "app", "OPEN", "Recover / RTO", "open "] {
        assert!(table.contains(want), "{want}: {table}");
    }

    // Its timeline starts with the detection, naming the zones.
    let shown = ok("reader", &eps, &["incident", "show", &ids]).await;
    assert!(shown.starts_with(&format!("Incident {id}: app")), "{shown}");
    assert!(shown.contains("detected"), "{shown}");
    assert!(
        shown.contains(&format!("DOWN in {}", zones.join(", "))),
        "{shown}"
    );
    let one = json("reader", &eps, &["incident", "show", &ids]).await;
    let first = &one["timeline"][0];
    assert_eq!(first["kind"], "detected", "{one}");
    assert!(first["text"].as_str().unwrap().contains(zones[1]), "{one}");
    assert!(first["at"].is_string(), "{one}");
    let (code, _, err) = faxictl("reader", &eps, &["incident", "show", "4242"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("not found: incident 4242"), "{err}");

    // Status lists it under the targets, and in its JSON.
    let status = ok("reader", &eps, &["status"]).await;
    assert!(
        status.contains(&format!("Incident {id}: app OPEN")),
        "{status}"
    );
    let s = json("reader", &eps, &["status"]).await;
    assert_eq!(s["incidents"][0]["id"], id, "{s}");
    assert_eq!(s["incidents"][0]["phase"], "OPEN", "{s}");

    // The RTO table has the open incident and nothing measured yet.
    let rto = json("reader", &eps, &["rto"]).await;
    let row = rto["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "app")
        .unwrap()
        .clone();
    assert_eq!(row["open_incident"], id, "{rto}");
    assert_eq!(row["count"], 0, "{rto}");
    assert_eq!(row["last_ms"], Value::Null, "{rto}");
    let table = ok("reader", &eps, &["rto"]).await;
    assert!(
        table.contains("Component") && table.contains("app"),
        "{table}"
    );

    // Maintenance on, asked of a follower (carried to the leader), shown,
    // then off; both recorded.
    let follower = (0..3).find(|i| c.nodes[*i].id != leader).unwrap();
    let on = ok(
        "operator",
        &c.endpoints(&[follower]),
        &["maintenance", "on", "--reason", "db upgrade", "--for", "1h"],
    )
    .await;
    assert!(on.starts_with("MAINTENANCE ON until"), "{on}");
    let m = json("reader", &eps, &["maintenance"]).await;
    assert_eq!(m["on"], true, "{m}");
    assert_eq!(m["reason"], "db upgrade", "{m}");
    let by = m["by"].as_str().unwrap();
    assert!(
        by.starts_with("operator (operate) via node"),
        "carried by the follower: {m}"
    );
    assert!(m["until"].is_string(), "{m}");
    let shown = ok("reader", &eps, &["maintenance"]).await;
    assert!(shown.contains("\"db upgrade\""), "{shown}");
    assert!(
        ok("reader", &eps, &["incidents"])
            .await
            .contains("MAINTENANCE ON"),
        "the incidents view says so"
    );
    let off = ok("operator", &eps, &["maintenance", "off"]).await;
    assert_eq!(off, "Maintenance is off.\n");
    let m = json("reader", &eps, &["maintenance"]).await;
    assert_eq!(m["on"], false, "{m}");
    let actions = audit_actions(&eps).await;
    assert_eq!(
        actions[..2],
        [
            "maintenance off".to_owned(),
            "maintenance on --reason \"db upgrade\" --for 1h".to_owned()
        ],
        "{actions:?}"
    );

    // An approval for an incident that waits for none, and a drill of a
    // target with no plan: refused with the reason, exit 1.
    let (code, _, err) = faxictl("operator", &eps, &["approve", &ids]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "refused: incident {id} waits for no approval (it is OPEN)"
        )),
        "{err}"
    );
    let (code, _, err) = faxictl("operator", &eps, &["drill", "app"]).await;
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("app has no recovery plan to drill"), "{err}");
    // Tried, so recorded.
    let actions = audit_actions(&eps).await;
    assert_eq!(
        actions[..2],
        ["drill app".to_owned(), format!("approve {id}")],
        "{actions:?}"
    );

    // A reader may not change maintenance (nor approve, nor drill), and
    // its refusals are not recorded.
    for args in [
        vec!["maintenance", "on", "--reason", "x", "--for", "1h"],
        vec!["maintenance", "off"],
        vec!["approve", &ids],
        vec!["drill", "app"],
    ] {
        let (code, _, err) = faxictl("reader", &eps, &args).await;
        assert_eq!(code, Some(1), "{args:?}: {err}");
        assert!(
            err.contains("reader (read) may not") && err.contains("needs the operate role"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(audit_actions(&eps).await.len(), actions.len());

    // The app comes back: the incident is finished, with its recovery time.
    app.set_status(200);
    let done = wait_for("the incident finished", LONG, || async {
        let v = json("reader", &eps, &["incidents", "--all"]).await;
        let i = v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == id)
            .cloned()
            .ok_or(format!("{v}"))?;
        if i["finished"] == true {
            Ok(i)
        } else {
            Err(format!("{i}"))
        }
    })
    .await;
    assert_eq!(done["phase"], "RESOLVED", "{done}");
    let recover_ms = done["recover_ms"].as_u64().unwrap();
    assert!(recover_ms > 0, "{done}");
    assert!(done["resolved"].is_string(), "{done}");
    let one = json("reader", &eps, &["incident", "show", &ids]).await;
    assert_eq!(one["recover_ms"], recover_ms, "{one}");
    let last = one["timeline"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["kind"], "resolved", "{one}");
    let table = ok("reader", &eps, &["incidents"]).await;
    assert!(table.starts_with("No open incidents"), "{table}");
    let table = ok("reader", &eps, &["incidents", "--all"]).await;
    assert!(table.contains("RESOLVED"), "{table}");
    let rto = json("reader", &eps, &["rto"]).await;
    let row = rto["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["target"] == "app")
        .unwrap()
        .clone();
    assert_eq!(row["count"], 1, "{rto}");
    assert_eq!(row["last_ms"], recover_ms, "{rto}");
    assert_eq!(row["p95_ms"], recover_ms, "{rto}");
    assert_eq!(row["open_incident"], Value::Null, "{rto}");
    assert_eq!(row["drill_count"], 0, "{rto}");
}
