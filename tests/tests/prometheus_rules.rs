//! deploy/'s Prometheus rules and Grafana dashboard, held to what the nodes
//! really export: promtool checks the rules and runs their unit tests
//! (deploy/prometheus/tests); then a real Prometheus scrapes a real mesh,
//! evaluates the rules and answers every dashboard query, so a metric name
//! or label that no node exports fails here. promtool and prometheus must
//! be installed (tests/run installs them): without them these tests fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::http::AppStub;
use faxi_tests::prometheus::{Prometheus, deploy_dir, require, rule_files, selectors};
use faxi_tests::s3::{ACCESS_KEY, S3Server, SECRET_KEY};
use faxi_tests::{http_get, metric, wait_for};
use tokio::process::Command;

const LONG: Duration = Duration::from_secs(60);

fn unit_tests() -> Vec<PathBuf> {
    let dir = deploy_dir().join("prometheus/tests");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    files
}

async fn promtool(args: &[&str], files: &[PathBuf]) -> (bool, String) {
    let out = Command::new(require("promtool"))
        .args(args)
        .args(files)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The names after `- alert:` in the rule files.
fn alert_names() -> Vec<String> {
    rule_files()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("- alert:")
                        .map(|n| n.trim().to_owned())
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn promtool_checks_the_rules_and_their_unit_tests_pass_and_can_fail() {
    let rules = rule_files();
    let (ok, text) = promtool(&["check", "rules"], &rules).await;
    assert!(ok, "promtool check rules:\n{text}");
    assert!(text.contains("SUCCESS"), "{text}");

    let tests = unit_tests();
    assert!(!tests.is_empty(), "no promtool unit tests");
    let (ok, text) = promtool(&["test", "rules"], &tests).await;
    assert!(ok, "promtool test rules:\n{text}");

    // Every alert has a unit test in which it fires (and the tests'
    // expectations name it with its labels and annotations).
    let all_tests: String = tests
        .iter()
        .map(|t| std::fs::read_to_string(t).unwrap())
        .collect();
    let alerts = alert_names();
    assert!(alerts.len() >= 10, "alerts: {alerts:?}");
    for a in &alerts {
        let fires = all_tests
            .split(&format!("alertname: {a}\n"))
            .skip(1)
            .any(|rest| {
                rest.trim_start()
                    .strip_prefix("exp_alerts:")
                    .is_some_and(|r| r.trim_start().starts_with("- exp_labels:"))
            });
        assert!(fires, "no unit test expects {a} to fire");
    }

    // The unit tests catch a moved threshold: the fast burn rate at 15.4x
    // instead of 14.4x no longer fires at 15x.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    for r in &rules {
        let text = std::fs::read_to_string(r)
            .unwrap()
            .replace("(14.4 * (1 - 0.999))", "(15.4 * (1 - 0.999))");
        std::fs::write(dir.path().join(r.file_name().unwrap()), text).unwrap();
    }
    let mutant = dir.path().join("tests/slo_test.yml");
    std::fs::copy(deploy_dir().join("prometheus/tests/slo_test.yml"), &mutant).unwrap();
    let (ok, text) = promtool(&["test", "rules"], &[mutant]).await;
    assert!(!ok, "a moved threshold passed the unit tests:\n{text}");
    assert!(text.contains("FaxiErrorBudgetBurnFast"), "{text}");
}

/// `app` (HTTP) and `db` (TCP) on every node; `db` starts DOWN (nothing
/// listens on its port) so that an incident opens and, once the test
/// listens there, resolves: time to detect and to recover are recorded.
fn targets(_id: u64, _zone: &str, ctx: &Ctx) -> String {
    format!(
        "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\nrto = \"15m\"\n\n\
         [[targets]]\nname = \"db\"\nkind = \"tcp\"\naddr = \"{}\"\nrto = \"1h\"\n\n",
        ctx.service.unwrap(),
        ctx.closed.unwrap()
    )
}

/// A dashboard's panels, rows' panels included.
fn panels(v: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p.clone());
        out.extend(panels(p));
    }
    out
}

/// Grafana's variables, as they are when `target` is `db`.
fn substitute(expr: &str) -> String {
    let mut e = expr.to_owned();
    for (var, value) in [
        ("${target}", "db"),
        ("$target", "db"),
        ("${__rate_interval}", "1m"),
        ("$__rate_interval", "1m"),
        ("${__range}", "1h"),
        ("$__range", "1h"),
        ("${__interval}", "15s"),
        ("$__interval", "15s"),
    ] {
        e = e.replace(var, value);
    }
    e
}

/// Every selector of `expr` that matches no series.
async fn missing(p: &Prometheus, expr: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (name, matchers) in selectors(expr) {
        let sel = format!("{name}{matchers}");
        if p.query(&sel).await?.as_array().is_none_or(Vec::is_empty) {
            out.push(sel);
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_and_dashboard_query_finds_what_a_real_mesh_exports() {
    let app = AppStub::start().await;
    let s3 = S3Server::start().await;
    s3.create_bucket("faxi-backups").await;
    s3.put_aged(
        "faxi-backups",
        "postgres/faxi.sql.gz",
        Duration::from_secs(600),
    )
    .await;
    let db: std::net::SocketAddr = ([127, 0, 0, 1], faxi_tests::free_port()).into();
    // Key files, not the environment: `faxi-watchdog init` reads the
    // config too, without the nodes' environment.
    let keys = tempfile::tempdir().unwrap();
    let (ak, sk) = (keys.path().join("ak"), keys.path().join("sk"));
    std::fs::write(&ak, ACCESS_KEY).unwrap();
    std::fs::write(&sk, SECRET_KEY).unwrap();
    let mut spec = Spec::zones(3);
    spec.targets = targets;
    spec.extra = format!(
        "[[targets]]\nname = \"pg-backups\"\nkind = \"backup\"\nendpoint = \"{}\"\nbucket = \"faxi-backups\"\n\
         path_style = true\nprefix = \"postgres/\"\nrpo = \"2h\"\naccess_key_file = \"{}\"\nsecret_key_file = \"{}\"\n\
         interval = \"1s\"\ntimeout = \"900ms\"\n",
        s3.endpoint(),
        ak.display(),
        sk.display()
    );
    let ctx = Ctx {
        service: Some(app.addr),
        closed: Some(db),
    };
    let c = Cluster::start(&spec, &ctx).await;
    let all = [0, 1, 2];
    let metrics: Vec<_> = c.nodes.iter().map(|m| m.metrics).collect();
    let prom = Prometheus::start(&metrics, &rule_files()).await;

    // An incident on db: DOWN, then UP once something listens.
    c.wait_state(&all, "db", "DOWN", LONG).await;
    c.wait_state(&all, "app", "UP", LONG).await;
    let listener = tokio::net::TcpListener::bind(db).await.unwrap();
    let db_up = tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            drop(s);
        }
    });
    c.wait_state(&all, "db", "UP", LONG).await;
    c.wait_state(&all, "pg-backups", "UP", LONG).await;
    for m in &metrics {
        wait_for("db's time to recover on every node", LONG, || async {
            let text = http_get(*m, "/metrics").await?;
            match metric(
                &text,
                "faxi_time_to_recover_seconds_count",
                &[("target", "db")],
            ) {
                Some(n) if n >= 1.0 => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    // Every node counted db's DOWN time as valid but not good, and app's
    // time as good; every node knows the leader, so it counts.
    for m in &metrics {
        let text = http_get(*m, "/metrics").await.unwrap();
        let slo = |name: &str, target: &str| metric(&text, name, &[("target", target)]).unwrap();
        let (good, valid) = (
            slo("faxi_slo_good_seconds_total", "db"),
            slo("faxi_slo_valid_seconds_total", "db"),
        );
        assert!(
            valid > good && good > 0.0,
            "{m}: db good {good} valid {valid}"
        );
        let (good, valid) = (
            slo("faxi_slo_good_seconds_total", "app"),
            slo("faxi_slo_valid_seconds_total", "app"),
        );
        assert!(
            valid > 0.0 && good == valid,
            "{m}: app good {good} valid {valid}"
        );
        assert_eq!(metric(&text, "faxi_slo_counting", &[]), Some(1.0), "{m}");
    }

    // Every rule evaluated without error, every recording rule has a
    // result, and every metric a rule names (with its label matchers)
    // matches series the nodes export.
    let rules = wait_for("every rule evaluated, with data", LONG, || async {
        let groups = prom.api("/api/v1/rules").await?["groups"].clone();
        let mut rules = Vec::new();
        let mut problems = Vec::new();
        for g in groups.as_array().into_iter().flatten() {
            for r in g["rules"].as_array().into_iter().flatten() {
                let name = r["name"].as_str().unwrap_or_default().to_owned();
                let query = r["query"].as_str().unwrap_or_default().to_owned();
                if r["health"] != "ok" {
                    problems.push(format!("{name}: health {} {}", r["health"], r["lastError"]));
                }
                if r["type"] == "recording"
                    && prom
                        .query(&name)
                        .await?
                        .as_array()
                        .is_none_or(Vec::is_empty)
                {
                    problems.push(format!("{name}: no result"));
                }
                for sel in missing(&prom, &query).await? {
                    problems.push(format!("{name}: {sel} matches nothing"));
                }
                rules.push((name, query));
            }
        }
        if problems.is_empty() {
            Ok(rules)
        } else {
            Err(problems.join("; "))
        }
    })
    .await;
    let alerts: BTreeSet<String> = alert_names().into_iter().collect();
    let loaded: BTreeSet<String> = rules.iter().map(|(n, _)| n.clone()).collect();
    assert!(
        alerts.is_subset(&loaded),
        "{alerts:?} not all in {loaded:?}"
    );
    assert!(
        loaded.contains("faxi:slo_availability:ratio_rate30d")
            && loaded.contains("faxi:slo_error_budget_remaining:ratio30d"),
        "{loaded:?}"
    );
    // Nothing fires but what db's incident may have set off (FaxiNoLeader
    // included: the mesh has its leader).
    let firing = prom
        .query("ALERTS{alertstate=\"firing\", target!=\"db\"}")
        .await
        .unwrap();
    assert_eq!(firing.as_array().map(Vec::len), Some(0), "{firing}");

    // The SLI counted the incident: db was DOWN for a while, app never.
    let avail = |target: &'static str| {
        let p = &prom;
        async move {
            let r = p
                .query(&format!(
                    "faxi:slo_availability:ratio_rate5m{{target=\"{target}\"}}"
                ))
                .await?;
            r[0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or(format!("{r}"))
        }
    };
    assert_eq!(avail("app").await.unwrap(), 1.0);

    dashboard_queries_run_against(&prom, &deploy_dir().join("grafana/faxi-watchdog.json")).await;
    drop(c);
    db_up.abort();
}

async fn dashboard_queries_run_against(prom: &Prometheus, path: &Path) {
    let text = std::fs::read_to_string(path).unwrap();
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    // The variables: a Prometheus datasource and a target picked from the
    // targets the nodes export.
    let vars = dash["templating"]["list"].as_array().unwrap();
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).cloned();
    let ds = var("datasource").expect("a datasource variable");
    assert_eq!(ds["type"], "datasource");
    assert_eq!(ds["query"], "prometheus");
    let target = var("target").expect("a target variable");
    let q = target["query"]["query"]
        .as_str()
        .or(target["query"].as_str())
        .unwrap()
        .to_owned();
    let metric = q
        .strip_prefix("label_values(")
        .and_then(|r| r.strip_suffix(", target)"))
        .unwrap_or_else(|| panic!("target variable query {q}"));
    let values = prom
        .api(&format!(
            "/api/v1/label/target/values?match[]={}",
            faxi_tests::prometheus::encode(metric)
        ))
        .await
        .unwrap();
    assert!(
        values.as_array().unwrap().iter().any(|v| v == "db"),
        "{values}"
    );

    let mut exprs = Vec::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push((p["title"].as_str().unwrap_or("").to_owned(), e.to_owned()));
            }
        }
    }
    assert!(exprs.len() >= 10, "only {} queries", exprs.len());
    let mut names = BTreeSet::new();
    wait_for("every dashboard query answers with data", LONG, || async {
        let mut problems = Vec::new();
        for (title, e) in &exprs {
            let q = substitute(e);
            if q.contains('$') {
                problems.push(format!("{title}: unknown variable in {q}"));
                continue;
            }
            match prom.query(&q).await {
                Err(err) => problems.push(format!("{title}: {err}")),
                Ok(r) if r.as_array().is_none_or(Vec::is_empty) => {
                    problems.push(format!("{title}: no data for {q}"))
                }
                Ok(_) => {}
            }
            for sel in missing(prom, &q).await? {
                problems.push(format!("{title}: {sel} matches nothing"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    })
    .await;
    for (_, e) in &exprs {
        names.extend(selectors(e).into_iter().map(|(n, _)| n));
    }
    // The panels the dashboard promises.
    for n in [
        "faxi:slo_availability:ratio_rate30d",
        "faxi:slo_error_budget_remaining:ratio30d",
        "faxi_target_state",
        "faxi_time_to_detect_seconds_bucket",
        "faxi_time_to_recover_seconds_bucket",
        "faxi_target_rto_seconds",
        "faxi_backup_age_seconds",
        "faxi_backup_rpo_seconds",
        "faxi_raft_is_leader",
        "faxi_raft_term",
        "faxi_raft_commit_index",
        "faxi_raft_peer_reachable",
        "faxi_node_info",
    ] {
        assert!(names.contains(n), "no panel queries {n}: {names:?}");
    }
}
