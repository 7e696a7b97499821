//! The recovery step actions against real parts: a real HTTP server for
//! `http` and `notify` (the webhook's URL in a real process environment),
//! real programs for `exec`, and the real Docker engine for `docker.*`,
//! on a busybox image built here (no registry).
//!
//! The Docker tests fail when the engine does not answer, unless
//! `FAXI_SKIP_DOCKER=1` skips them knowingly.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faxi_tests::docker::{SLEEPER, TestContainer, container_name, docker_or_skip};
use faxi_tests::http::AppStub;
use faxi_tests::{Silent, free_port, wait_for};
use faxi_watchdog::mesh::state::State;
use faxi_watchdog::recovery::actions::{
    ActionFuture, ActionHttpClient, AgreedStates, DockerEngine, Fence, KubeApi, Outcome, Recheck,
    StepRun, World, bind,
};
use faxi_watchdog::recovery::{Action, ContainerRef, DockerOp};
use tokio::io::AsyncWriteExt as _;
use tokio::time::Instant;

/// No agreed state: these actions do not read it.
struct Nothing;

impl AgreedStates for Nothing {
    fn state(&self, _target: &str) -> Option<State> {
        None
    }
    fn changed(&self) -> ActionFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

fn world() -> World {
    World {
        docker: DockerEngine::default(),
        agreed: Arc::new(Nothing),
        http: ActionHttpClient::new(),
        kube: KubeApi::default(),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Step 2 of plan `redis` for incident 7, under token (3, 41), its intent
/// recorded now.
fn step() -> StepRun {
    StepRun {
        incident: 7,
        target: "redis".into(),
        plan: "redis".into(),
        step: 2,
        fence: Fence { term: 3, index: 41 },
        intent_at_ms: now_ms(),
    }
}

async fn run(action: &Action, step: &StepRun) -> Outcome {
    bind(action, &world()).run(step).await
}

async fn recheck(action: &Action, step: &StepRun) -> Recheck {
    bind(action, &world()).recheck(step).await
}

fn failed(o: Outcome) -> String {
    match o {
        Outcome::Failed(e) => e,
        o => panic!("expected a failure, got {o:?}"),
    }
}

fn done(o: Outcome) -> String {
    match o {
        Outcome::Done(t) => t,
        o => panic!("expected done, got {o:?}"),
    }
}

// ---------------------------------------------------------------- http

fn http(method: &str, url: &str, expect: u16, body: Option<&str>, timeout_ms: u64) -> Action {
    Action::Http {
        method: method.into(),
        url: url.into(),
        expect_status: expect,
        body: body.map(str::to_owned),
        timeout_ms,
    }
}

#[tokio::test]
async fn an_http_step_sends_one_request_with_its_json_body_and_fencing_token() {
    let app = AppStub::start().await;
    app.set_status(202);
    let a = http(
        "post",
        &app.url_for("/scale?app=faxi"),
        202,
        Some(r#"{"replicas": 0}"#),
        5_000,
    );
    let text = done(run(&a, &step()).await);
    assert!(text.contains("202"), "{text}");

    let reqs = app.requests();
    assert_eq!(reqs.len(), 1, "one request, no retry: {reqs:?}");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/scale?app=faxi");
    assert_eq!(r.header("X-Faxi-Incident"), Some("7"));
    assert_eq!(r.header("X-Faxi-Fence-Term"), Some("3"));
    assert_eq!(r.header("X-Faxi-Fence-Index"), Some("41"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json(), serde_json::json!({"replicas": 0}));
}

#[tokio::test]
async fn an_http_step_fails_naming_a_status_it_did_not_expect() {
    let app = AppStub::start().await;
    app.set_status(503);
    let a = http("DELETE", &app.url_for("/pods/app-0"), 200, None, 5_000);
    let e = failed(run(&a, &step()).await);
    assert!(e.contains("HTTP 503") && e.contains("expected 200"), "{e}");
    assert!(e.starts_with("http DELETE"), "{e}");

    let reqs = app.requests();
    assert_eq!(reqs.len(), 1, "one request, no retry: {reqs:?}");
    assert_eq!(reqs[0].method, "DELETE");
    assert_eq!(reqs[0].header("content-type"), None);
    assert!(reqs[0].body.is_empty());
    assert_eq!(reqs[0].header("X-Faxi-Fence-Index"), Some("41"));

    // A 200 is not a 201.
    app.set_status(200);
    let a = http("PUT", &app.url_for("/x"), 201, Some("{}"), 5_000);
    let e = failed(run(&a, &step()).await);
    assert!(e.contains("HTTP 200") && e.contains("expected 201"), "{e}");
}

#[tokio::test]
async fn an_http_step_that_gets_no_answer_fails_at_its_timeout() {
    // A server that takes the request and never answers.
    let app = AppStub::start().await;
    app.set_delay(Duration::from_secs(3600));
    let a = http("POST", &app.url_for("/scale"), 200, Some("{}"), 300);
    let t0 = Instant::now();
    let e = failed(run(&a, &step()).await);
    let took = t0.elapsed();
    assert!(e.contains("no answer within 300ms"), "{e}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert_eq!(app.requests().len(), 1);

    // A server that accepts the connection and never reads a byte.
    let silent = Silent::start().await;
    let a = http("GET", &format!("http://{}/", silent.addr), 200, None, 300);
    let t0 = Instant::now();
    let e = failed(run(&a, &step()).await);
    assert!(e.contains("no answer within 300ms"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
}

#[tokio::test]
async fn an_http_step_to_a_closed_port_or_a_bad_method_fails_saying_so() {
    let a = http(
        "GET",
        &format!("http://127.0.0.1:{}/", free_port()),
        200,
        None,
        5_000,
    );
    let e = failed(run(&a, &step()).await);
    assert!(e.contains("request failed"), "{e}");

    let a = http("GO T", "http://127.0.0.1:1/", 200, None, 5_000);
    let e = failed(run(&a, &step()).await);
    assert!(e.contains("invalid method"), "{e}");
}

// -------------------------------------------------------------- notify

/// What the step process said, and what it logged.
#[derive(Debug)]
struct Ran {
    outcome: String,
    text: String,
    log: String,
}

/// Runs `action` in a process of its own (`faxi-run-step`) with `env` set
/// and `unset` removed from its environment, logging at trace level.
async fn run_in_process(
    action: &Action,
    step: &StepRun,
    env: &[(&str, &str)],
    unset: &[&str],
) -> Ran {
    let input = serde_json::json!({
        "action": action,
        "incident": step.incident,
        "target": step.target,
        "plan": step.plan,
        "step": step.step,
        "term": step.fence.term,
        "index": step.fence.index,
        "intent_at_ms": step.intent_at_ms,
    });
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_faxi-run-step"));
    cmd.env("FAXI_LOG", "trace")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    for k in unset {
        cmd.env_remove(k);
    }
    let mut child = cmd.spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.to_string().as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("the step process ends within 30 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "faxi-run-step: {}\n{stdout}\n{log}",
        out.status
    );
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("faxi-run-step printed {stdout:?}: {e}\n{log}"));
    Ran {
        outcome: v["outcome"].as_str().unwrap().to_owned(),
        text: v["text"].as_str().unwrap().to_owned(),
        log,
    }
}

fn notify(url_env: &str, timeout_ms: u64) -> Action {
    Action::Notify {
        url_env: url_env.into(),
        message: "restarting redis".into(),
        timeout_ms,
    }
}

/// The part of a webhook URL that is its secret.
const TOKEN: &str = "s3cr3t-hook-token-4b1d";

/// Asserts the URL's secret is nowhere in what the step said or logged.
fn assert_no_secret(ran: &Ran, url: &str) {
    for (what, text) in [("outcome", &ran.text), ("log", &ran.log)] {
        assert!(!text.contains(TOKEN), "the token is in the {what}: {text}");
        assert!(!text.contains(url), "the URL is in the {what}: {text}");
    }
}

#[tokio::test]
async fn a_notify_step_posts_the_incident_and_fencing_token_to_the_url_in_its_variable() {
    let app = AppStub::start().await;
    let url = app.url_for(&format!("/hooks/T0/{TOKEN}"));
    let s = step();
    let ran = run_in_process(
        &notify("FAXI_TEST_HOOK_URL", 5_000),
        &s,
        &[("FAXI_TEST_HOOK_URL", &url)],
        &[],
    )
    .await;
    assert_eq!(ran.outcome, "done", "{ran:?}");
    assert!(ran.text.contains("$FAXI_TEST_HOOK_URL"), "{ran:?}");
    assert_no_secret(&ran, &url);

    let reqs = app.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/hooks/T0/{TOKEN}"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("X-Faxi-Fence-Term"), Some("3"));
    assert_eq!(
        r.json(),
        serde_json::json!({
            "incident": 7,
            "target": "redis",
            "plan": "redis",
            "step": 2,
            "fence": {"term": 3, "index": 41},
            "message": "restarting redis",
        })
    );

    // Any 2xx will do.
    app.set_status(204);
    let ran = run_in_process(
        &notify("FAXI_TEST_HOOK_URL", 5_000),
        &s,
        &[("FAXI_TEST_HOOK_URL", &url)],
        &[],
    )
    .await;
    assert_eq!(ran.outcome, "done", "{ran:?}");
}

#[tokio::test]
async fn a_notify_step_fails_naming_its_variable_never_its_url() {
    let s = step();
    let a = notify("FAXI_TEST_HOOK_URL", 500);

    let ran = run_in_process(&a, &s, &[], &["FAXI_TEST_HOOK_URL"]).await;
    assert_eq!(ran.outcome, "failed", "{ran:?}");
    assert!(
        ran.text.contains("FAXI_TEST_HOOK_URL") && ran.text.contains("not set"),
        "{ran:?}"
    );

    let ran = run_in_process(&a, &s, &[("FAXI_TEST_HOOK_URL", " ")], &[]).await;
    assert_eq!(ran.outcome, "failed", "{ran:?}");
    assert!(
        ran.text.contains("FAXI_TEST_HOOK_URL") && ran.text.contains("empty"),
        "{ran:?}"
    );

    let not_a_url = format!("hooks.example/{TOKEN}");
    let ran = run_in_process(&a, &s, &[("FAXI_TEST_HOOK_URL", &not_a_url)], &[]).await;
    assert_eq!(ran.outcome, "failed", "{ran:?}");
    assert!(ran.text.contains("FAXI_TEST_HOOK_URL"), "{ran:?}");
    assert_no_secret(&ran, &not_a_url);

    // The hook says no.
    let app = AppStub::start().await;
    app.set_status(500);
    let url = app.url_for(&format!("/hooks/{TOKEN}?token={TOKEN}"));
    let ran = run_in_process(&a, &s, &[("FAXI_TEST_HOOK_URL", &url)], &[]).await;
    assert_eq!(ran.outcome, "failed", "{ran:?}");
    assert!(
        ran.text.contains("FAXI_TEST_HOOK_URL") && ran.text.contains("500"),
        "{ran:?}"
    );
    assert_no_secret(&ran, &url);

    // Nobody listens.
    let url = format!("http://127.0.0.1:{}/hooks/{TOKEN}", free_port());
    let ran = run_in_process(&a, &s, &[("FAXI_TEST_HOOK_URL", &url)], &[]).await;
    assert_eq!(ran.outcome, "failed", "{ran:?}");
    assert!(ran.text.contains("request failed"), "{ran:?}");
    assert_no_secret(&ran, &url);

    // Credentials in the authority are refused before anything is sent
    // (the HTTP client's pool would log them).
    let url = format!("http://user:{TOKEN}@{}/hooks", app.addr);
    let hits = app.hits();
    let ran = run_in_process(&a, &s, &[("FAXI_TEST_HOOK_URL", &url)], &[]).await;
    assert_eq!(ran.outcome, "failed", "{ran:?}");
    assert!(ran.text.contains("credentials"), "{ran:?}");
    assert_no_secret(&ran, &url);
    assert_eq!(app.hits(), hits, "nothing was sent");

    // Nobody answers: the timeout holds.
    let silent = Silent::start().await;
    let url = format!("http://{}/hooks/{TOKEN}", silent.addr);
    let t0 = Instant::now();
    let ran = run_in_process(&a, &s, &[("FAXI_TEST_HOOK_URL", &url)], &[]).await;
    assert_eq!(ran.outcome, "failed", "{ran:?}");
    assert!(ran.text.contains("no answer within 500ms"), "{ran:?}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_no_secret(&ran, &url);
}

// ---------------------------------------------------------------- exec

fn exec(argv: &[&str], env: &[(&str, &str)], timeout_ms: u64) -> Action {
    Action::Exec {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        timeout_ms,
    }
}

#[tokio::test]
async fn an_exec_step_runs_its_program_with_the_incident_and_fencing_token_in_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("steps.log");
    let file = file.to_str().unwrap();
    let a = exec(
        &[
            "/bin/sh",
            "-c",
            r#"echo "$FAXI_INCIDENT $FAXI_FENCE_TERM $FAXI_FENCE_INDEX $FAXI_TARGET $GREETING" >> "$1"; echo appended"#,
            "sh",
            file,
        ],
        &[("GREETING", "hello")],
        10_000,
    );
    let mut s = step();
    assert_eq!(run(&a, &s).await, Outcome::Done("appended".into()));
    s.fence = Fence { term: 4, index: 57 };
    s.incident = 8;
    assert_eq!(run(&a, &s).await, Outcome::Done("appended".into()));
    assert_eq!(
        std::fs::read_to_string(file).unwrap(),
        "7 3 41 redis hello\n8 4 57 redis hello\n"
    );
}

#[tokio::test]
async fn an_exec_step_that_fails_says_its_exit_status_and_what_it_said() {
    let a = exec(
        &["/bin/sh", "-c", "echo 'disk full' >&2; exit 3"],
        &[],
        10_000,
    );
    let e = failed(run(&a, &step()).await);
    assert!(e.contains("exit status: 3"), "{e}");
    assert!(e.contains("disk full"), "{e}");

    let a = exec(&["/nonexistent/faxi-restart"], &[], 10_000);
    let e = failed(run(&a, &step()).await);
    assert!(
        e.contains("/nonexistent/faxi-restart") && e.contains("cannot start"),
        "{e}"
    );
}

/// Whether process `pid` is gone (or a zombie: killed, not yet reaped).
fn gone(pid: u32) -> Result<(), String> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => Ok(()),
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .unwrap_or("?");
            if state == "Z" || state == "X" {
                Ok(())
            } else {
                Err(format!("{pid} is in state {state}"))
            }
        }
    }
}

#[tokio::test]
async fn an_exec_step_past_its_timeout_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let pidfile = pidfile.to_str().unwrap();
    let a = exec(
        &[
            "/bin/sh",
            "-c",
            r#"echo $$ > "$1"; exec sleep 60"#,
            "sh",
            pidfile,
        ],
        &[],
        1_000,
    );
    let t0 = Instant::now();
    let e = failed(run(&a, &step()).await);
    assert!(e.contains("killed after its timeout"), "{e}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let pid: u32 = std::fs::read_to_string(pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_for(
        "the timed-out program to be killed",
        Duration::from_secs(10),
        || async move { gone(pid) },
    )
    .await;
}

// -------------------------------------------------------------- docker

fn docker(op: DockerOp, c: ContainerRef) -> Action {
    Action::Docker {
        op,
        container: c,
        timeout_ms: 30_000,
    }
}

fn by_name(c: &TestContainer) -> ContainerRef {
    ContainerRef::Name(c.name.clone())
}

#[tokio::test]
async fn docker_restart_by_name_restarts_it_and_the_recheck_counts_only_a_start_after_the_intent() {
    if !docker_or_skip("docker.restart").await {
        return;
    }
    let c = TestContainer::run("restart", &[], SLEEPER).await;
    let before = c.started_at().await;
    let a = docker(DockerOp::Restart, by_name(&c));
    let s = step();
    assert!(ms(before) <= s.intent_at_ms);
    // Started before the intent: not done.
    assert_eq!(recheck(&a, &s).await, Recheck::NotDone);

    let text = done(run(&a, &s).await);
    assert!(text.contains(&c.name), "{text}");
    assert!(c.running().await.unwrap());
    let after = c.started_at().await;
    assert!(after > before, "StartedAt {before:?} -> {after:?}");

    match recheck(&a, &s).await {
        Recheck::Done(t) => assert!(t.contains(&c.name), "{t}"),
        r => panic!("restarted after the intent, yet {r:?}"),
    }
    // An intent recorded after the restart: the restart does not count.
    let later = StepRun {
        intent_at_ms: ms(after) + 60_000,
        ..s.clone()
    };
    assert_eq!(recheck(&a, &later).await, Recheck::NotDone);
}

#[tokio::test]
async fn docker_stop_and_start_are_idempotent_and_rechecked_by_the_containers_state() {
    if !docker_or_skip("docker.stop and docker.start").await {
        return;
    }
    let c = TestContainer::run("stopstart", &[], SLEEPER).await;
    let stop = docker(DockerOp::Stop, by_name(&c));
    let start = docker(DockerOp::Start, by_name(&c));

    let s = step();
    assert_eq!(recheck(&stop, &s).await, Recheck::NotDone, "it runs");
    done(run(&stop, &s).await);
    assert!(!c.running().await.unwrap());
    assert!(matches!(recheck(&stop, &s).await, Recheck::Done(_)));
    // Stopping a stopped container is done, and changes nothing.
    done(run(&stop, &s).await);
    assert!(!c.running().await.unwrap());

    let s = step();
    assert_eq!(recheck(&start, &s).await, Recheck::NotDone, "it is stopped");
    done(run(&start, &s).await);
    assert!(c.running().await.unwrap());
    let started = c.started_at().await;
    assert!(matches!(recheck(&start, &s).await, Recheck::Done(_)));
    // Starting a running container is done, and does not restart it.
    done(run(&start, &s).await);
    assert!(c.running().await.unwrap());
    assert_eq!(c.started_at().await, started);

    // Docker takes no token: the step logs it, with the container, as a
    // node does.
    let ran = run_in_process(&start, &s, &[], &[]).await;
    assert_eq!(ran.outcome, "done", "{ran:?}");
    let fenced = ran
        .log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["container"] == c.name.as_str())
        .unwrap_or_else(|| panic!("no log line names {}:\n{}", c.name, ran.log));
    assert_eq!(fenced["incident"], 7, "{fenced}");
    assert_eq!(fenced["term"], 3, "{fenced}");
    assert_eq!(fenced["index"], 41, "{fenced}");
    assert_eq!(fenced["action"], "docker.start", "{fenced}");
}

#[tokio::test]
async fn docker_restart_by_label_restarts_every_container_with_it_and_no_other() {
    if !docker_or_skip("docker.restart by label").await {
        return;
    }
    let group = format!("{:08x}", rand::random::<u32>());
    let mine = [("faxi.test.group", group.as_str())];
    let (c1, c2, other) = tokio::join!(
        TestContainer::run("label-a", &mine, SLEEPER),
        TestContainer::run("label-b", &mine, SLEEPER),
        TestContainer::run("label-other", &[("faxi.test.group", "other")], SLEEPER),
    );
    let (b1, b2, bo) = (
        c1.started_at().await,
        c2.started_at().await,
        other.started_at().await,
    );
    let label = format!("faxi.test.group={group}");
    let a = docker(DockerOp::Restart, ContainerRef::Label(label.clone()));
    let s = step();
    let text = done(run(&a, &s).await);
    assert!(text.contains(&c1.name) && text.contains(&c2.name), "{text}");
    assert!(!text.contains(&other.name), "{text}");
    assert!(c1.started_at().await > b1);
    assert!(c2.started_at().await > b2);
    assert_eq!(
        other.started_at().await,
        bo,
        "a container without the label was restarted"
    );
    assert!(matches!(recheck(&a, &s).await, Recheck::Done(_)));

    let nobody = format!("faxi.test.group=nobody-{group}");
    let a = docker(DockerOp::Restart, ContainerRef::Label(nobody.clone()));
    let e = failed(run(&a, &step()).await);
    assert!(e.contains(&nobody) && e.contains("no container"), "{e}");
}

#[tokio::test]
async fn a_docker_step_on_a_missing_container_fails_naming_it() {
    if !docker_or_skip("docker steps on a missing container").await {
        return;
    }
    let name = container_name("missing");
    for op in [DockerOp::Restart, DockerOp::Stop, DockerOp::Start] {
        let a = docker(op, ContainerRef::Name(name.clone()));
        let e = failed(run(&a, &step()).await);
        assert!(e.contains(&name), "{e}");
        assert!(e.to_lowercase().contains("no such container"), "{e}");
        assert_eq!(recheck(&a, &step()).await, Recheck::CannotTell);
    }
}
