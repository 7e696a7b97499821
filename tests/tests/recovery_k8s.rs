//! The k8s recovery steps (`k8s.scale`, `k8s.rollout_restart`,
//! `k8s.delete_pods`) against a real HTTP server that speaks the
//! Kubernetes API paths and JSON they use, with the API server's
//! resourceVersion preconditions (tests/src/k8s.rs), reached through a
//! kubeconfig as a node's `[kubernetes] kubeconfig` would give it.
//!
//! What is checked is what goes over the wire: each request's method,
//! path, content type and body, the fencing annotations and the
//! resourceVersion precondition of every write; a 409 is a failure that
//! is not retried; an object carrying a newer token is left alone; an
//! unreachable API server fails the step and leaves the re-check unknown.
//! And end to end: three real node processes whose plan restarts a
//! deployment, the leader's one write carrying the incident's token.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faxi_tests::cluster::{Cluster, Ctx, Spec};
use faxi_tests::http::AppStub;
use faxi_tests::k8s::KubeStub;
use faxi_tests::{http_get, metric, wait_for};
use faxi_watchdog::mesh::state::State;
use faxi_watchdog::recovery::actions::{
    ActionFuture, ActionHttpClient, AgreedStates, DockerEngine, Fence, KubeApi, Outcome, Recheck,
    StepRun, World, bind,
};
use faxi_watchdog::recovery::{Action, K8sOp};
use serde_json::Value;

const TOKEN: &str = "stub-bearer-token-9f3c";

struct Nothing;

impl AgreedStates for Nothing {
    fn state(&self, _target: &str) -> Option<State> {
        None
    }
    fn changed(&self) -> ActionFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
}

/// A kubeconfig for `stub` (namespace `faxi`) in a temp dir, and the world
/// that reaches the API through it.
fn world(stub: &KubeStub) -> (tempfile::TempDir, World) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, stub.kubeconfig("faxi", TOKEN)).unwrap();
    (dir, world_at(path))
}

fn world_at(kubeconfig: PathBuf) -> World {
    World {
        docker: DockerEngine::default(),
        agreed: Arc::new(Nothing),
        http: ActionHttpClient::new(),
        kube: KubeApi::with_kubeconfig(kubeconfig),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Step 2 of incident 7 under token (3, 41), its intent recorded now.
fn step() -> StepRun {
    StepRun {
        incident: 7,
        target: "postgres".into(),
        plan: "postgres".into(),
        step: 2,
        fence: Fence { term: 3, index: 41 },
        intent_at_ms: now_ms(),
    }
}

fn k8s(op: K8sOp, namespace: Option<&str>) -> Action {
    Action::K8s {
        op,
        namespace: namespace.map(str::to_owned),
        timeout_ms: 10_000,
    }
}

fn scale(deployment: &str, replicas: u32) -> Action {
    k8s(
        K8sOp::Scale {
            deployment: deployment.into(),
            replicas,
        },
        None,
    )
}

fn done(o: Outcome) -> String {
    match o {
        Outcome::Done(t) => t,
        o => panic!("expected done, got {o:?}"),
    }
}

fn failed(o: Outcome) -> String {
    match o {
        Outcome::Failed(t) => t,
        o => panic!("expected a failure, got {o:?}"),
    }
}

/// The fencing annotations of step() as the API server keeps them.
fn assert_fenced(annotations: &Value, what: &str) {
    assert_eq!(
        annotations["watchdog.faxi.io/fence-term"], "3",
        "{what}: {annotations}"
    );
    assert_eq!(
        annotations["watchdog.faxi.io/fence-index"], "41",
        "{what}: {annotations}"
    );
    assert_eq!(
        annotations["watchdog.faxi.io/incident"], "7",
        "{what}: {annotations}"
    );
}

fn assert_bearer(stub: &KubeStub) {
    for r in stub.requests() {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{} {}",
            r.method,
            r.path
        );
    }
}

#[tokio::test]
async fn k8s_scale_reads_the_deployment_then_patches_replicas_and_the_fence_on_its_resource_version()
 {
    let stub = KubeStub::start().await;
    let rv = stub.add_deployment("faxi", "faxi-app", 2);
    let (_dir, world) = world(&stub);
    let a = bind(&scale("faxi-app", 0), &world);
    let s = step();

    // Nothing ran yet: the deployment does not carry the token.
    assert_eq!(a.recheck(&s).await, Recheck::NotDone);

    let text = done(a.run(&s).await);
    assert!(text.contains("faxi/faxi-app from 2 to 0"), "{text}");
    let writes = stub.writes();
    assert_eq!(writes.len(), 1, "one write, no retry: {writes:?}");
    let w = &writes[0];
    assert_eq!(w.method, "PATCH");
    assert_eq!(w.path, "/apis/apps/v1/namespaces/faxi/deployments/faxi-app");
    assert_eq!(
        w.header("content-type"),
        Some("application/merge-patch+json")
    );
    let body = w.json();
    assert_eq!(body["metadata"]["resourceVersion"], rv.as_str(), "{body}");
    assert_fenced(&body["metadata"]["annotations"], "patch");
    assert_eq!(body["spec"]["replicas"], 0, "{body}");
    // The read came first, for the resourceVersion.
    let reqs = stub.requests();
    let get = reqs
        .iter()
        .position(|r| r.method == "GET" && r.path.ends_with("/deployments/faxi-app"));
    let patch = reqs.iter().position(|r| r.method == "PATCH");
    assert!(get < patch && get.is_some(), "{reqs:?}");
    assert_bearer(&stub);

    let now = stub.get("deployments", "faxi", "faxi-app").unwrap();
    assert_eq!(now["spec"]["replicas"], 0);
    assert_fenced(&now["metadata"]["annotations"], "the deployment");

    // A leader that died before recording the outcome: the next one sees
    // the token and counts the step done; another step's token is not it.
    match a.recheck(&s).await {
        Recheck::Done(t) => assert!(t.contains("3:41"), "{t}"),
        r => panic!("expected done, got {r:?}"),
    }
    let mut other = step();
    other.fence.index = 42;
    assert_eq!(a.recheck(&other).await, Recheck::NotDone);
}

#[tokio::test]
async fn k8s_rollout_restart_stamps_the_pod_template_under_the_fence_in_the_steps_namespace() {
    let stub = KubeStub::start().await;
    let rv = stub.add_deployment("faxi-prod", "faxi-worker", 3);
    let (_dir, world) = world(&stub);
    let action = k8s(
        K8sOp::RolloutRestart {
            deployment: "faxi-worker".into(),
        },
        Some("faxi-prod"),
    );
    assert_eq!(
        action.describe(),
        "k8s.rollout_restart faxi-worker in faxi-prod"
    );
    let before = SystemTime::now() - Duration::from_secs(1);
    let text = done(bind(&action, &world).run(&step()).await);
    assert!(text.contains("faxi-prod/faxi-worker"), "{text}");

    let writes = stub.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(
        writes[0].path,
        "/apis/apps/v1/namespaces/faxi-prod/deployments/faxi-worker"
    );
    let body = writes[0].json();
    assert_eq!(body["metadata"]["resourceVersion"], rv.as_str(), "{body}");
    assert_fenced(&body["metadata"]["annotations"], "metadata");
    let template = &body["spec"]["template"]["metadata"]["annotations"];
    let at = template["kubectl.kubernetes.io/restartedAt"]
        .as_str()
        .unwrap_or_else(|| panic!("no restartedAt: {body}"));
    let at = humantime::parse_rfc3339(at).unwrap();
    assert!(at >= before, "restartedAt {at:?} is older than the step");
    assert_eq!(template["watchdog.faxi.io/fence-index"], "41", "{body}");
    // Replicas are not the restart's business.
    assert!(body["spec"].get("replicas").is_none(), "{body}");
    let now = stub.get("deployments", "faxi-prod", "faxi-worker").unwrap();
    assert_eq!(now["spec"]["replicas"], 3);
    assert_eq!(
        now["spec"]["template"]["spec"]["containers"][0]["image"], "faxi:1",
        "a merge patch keeps the rest of the template"
    );
}

#[tokio::test]
async fn k8s_delete_pods_marks_each_selected_pod_then_deletes_it_on_the_marked_version() {
    let stub = KubeStub::start().await;
    let old = "2024-01-01T00:00:00Z";
    let sel = [("app.kubernetes.io/name", "faxi-postgres")];
    stub.add_pod("faxi", "faxi-postgres-1", &sel, old);
    stub.add_pod("faxi", "faxi-postgres-0", &sel, old);
    stub.add_pod(
        "faxi",
        "faxi-app-5d9",
        &[("app.kubernetes.io/name", "faxi-app")],
        old,
    );
    stub.add_pod("other", "faxi-postgres-0", &sel, old);
    let (_dir, world) = world(&stub);
    let action = k8s(
        K8sOp::DeletePods {
            selector: "app.kubernetes.io/name=faxi-postgres".into(),
        },
        None,
    );
    let a = bind(&action, &world);
    let s = step();
    // Pods made before the intent are still there: not done.
    assert_eq!(a.recheck(&s).await, Recheck::NotDone);

    let text = done(a.run(&s).await);
    assert!(
        text.contains("faxi-postgres-0, faxi-postgres-1"),
        "name order: {text}"
    );

    let reqs = stub.requests();
    let list = &reqs.iter().find(|r| r.method == "GET").unwrap().path;
    assert!(
        list.starts_with("/api/v1/namespaces/faxi/pods?")
            && list.contains("labelSelector=app.kubernetes.io%2Fname%3Dfaxi-postgres"),
        "{list}"
    );
    let writes = stub.writes();
    let seen: Vec<(String, String)> = writes
        .iter()
        .map(|w| (w.method.clone(), w.path.clone()))
        .collect();
    assert_eq!(
        seen,
        [
            ("PATCH", "/api/v1/namespaces/faxi/pods/faxi-postgres-0"),
            ("DELETE", "/api/v1/namespaces/faxi/pods/faxi-postgres-0"),
            ("PATCH", "/api/v1/namespaces/faxi/pods/faxi-postgres-1"),
            ("DELETE", "/api/v1/namespaces/faxi/pods/faxi-postgres-1"),
        ]
        .map(|(m, p)| (m.to_owned(), p.to_owned()))
    );
    for pair in writes.chunks(2) {
        let (patch, delete) = (pair[0].json(), pair[1].json());
        assert_fenced(&patch["metadata"]["annotations"], "pod patch");
        let listed = patch["metadata"]["resourceVersion"].as_str().unwrap();
        let marked = delete["preconditions"]["resourceVersion"].as_str().unwrap();
        // The delete is conditional on the version the patch made, which
        // is newer than the one listed.
        assert!(
            marked.parse::<u64>().unwrap() > listed.parse::<u64>().unwrap(),
            "{patch} then {delete}"
        );
        assert!(
            delete["preconditions"]["uid"]
                .as_str()
                .unwrap()
                .starts_with("uid-faxi-postgres-"),
            "{delete}"
        );
    }
    assert!(stub.get("pods", "faxi", "faxi-postgres-0").is_none());
    assert!(stub.get("pods", "faxi", "faxi-postgres-1").is_none());
    assert!(stub.get("pods", "faxi", "faxi-app-5d9").is_some());
    assert!(stub.get("pods", "other", "faxi-postgres-0").is_some());
    assert_bearer(&stub);

    // Re-checks: no pod at all tells nothing; the StatefulSet's new pod,
    // made after the intent, tells it ran; an old one that survived, not.
    assert_eq!(a.recheck(&s).await, Recheck::CannotTell);
    let new = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(2));
    stub.add_pod("faxi", "faxi-postgres-0", &sel, &new.to_string());
    assert!(
        matches!(a.recheck(&s).await, Recheck::Done(_)),
        "a pod made after the intent"
    );
    stub.add_pod("faxi", "faxi-postgres-1", &sel, old);
    assert_eq!(a.recheck(&s).await, Recheck::NotDone);

    // No pod matching is a failure that names the selector.
    let none = k8s(
        K8sOp::DeletePods {
            selector: "app.kubernetes.io/name=nothing".into(),
        },
        None,
    );
    let e = failed(bind(&none, &world).run(&s).await);
    assert!(
        e.contains("no pod in faxi matches app.kubernetes.io/name=nothing"),
        "{e}"
    );
}

#[tokio::test]
async fn a_conflict_fails_the_step_says_so_and_is_not_retried() {
    let stub = KubeStub::start().await;
    stub.add_deployment("faxi", "faxi-app", 2);
    let (_dir, world) = world(&stub);
    // Another writer changes the deployment between the step's read and
    // its write.
    stub.touch_after_next_read("deployments", "faxi", "faxi-app");
    let e = failed(bind(&scale("faxi-app", 0), &world).run(&step()).await);
    assert!(e.starts_with("k8s.scale faxi-app to 0: conflict: "), "{e}");
    assert!(e.contains("HTTP 409") && e.contains("not retried"), "{e}");
    let writes = stub.writes();
    assert_eq!(writes.len(), 1, "exactly one write, no retry: {writes:?}");
    let now = stub.get("deployments", "faxi", "faxi-app").unwrap();
    assert_eq!(
        now["spec"]["replicas"], 2,
        "the other writer's version stands"
    );
    assert!(
        now["metadata"]["annotations"]
            .get("watchdog.faxi.io/fence-index")
            .is_none()
    );

    // A pod changed between the list and its mark: that pod's delete is
    // not sent.
    let sel = [("app", "redis")];
    stub.add_pod("faxi", "redis-0", &sel, "2024-01-01T00:00:00Z");
    stub.touch_after_next_read("pods", "faxi", "redis-0");
    let del = k8s(
        K8sOp::DeletePods {
            selector: "app=redis".into(),
        },
        None,
    );
    let e = failed(bind(&del, &world).run(&step()).await);
    assert!(
        e.contains("redis-0: conflict: ") && e.contains("HTTP 409"),
        "{e}"
    );
    assert!(stub.get("pods", "faxi", "redis-0").is_some());
    assert!(
        !stub.writes().iter().any(|w| w.method == "DELETE"),
        "no delete after a failed mark"
    );
}

#[tokio::test]
async fn an_object_carrying_a_newer_fencing_token_is_left_alone() {
    let stub = KubeStub::start().await;
    stub.add_deployment("faxi", "faxi-app", 2);
    let (_dir, world) = world(&stub);
    // A later leader (term 4) scaled it.
    let mut later = step();
    later.fence = Fence { term: 4, index: 2 };
    done(bind(&scale("faxi-app", 1), &world).run(&later).await);
    let e = failed(bind(&scale("faxi-app", 0), &world).run(&step()).await);
    assert!(e.contains("newer fencing token (4:2)"), "{e}");
    assert_eq!(
        stub.writes().len(),
        1,
        "the deposed leader's write was never sent"
    );
    let now = stub.get("deployments", "faxi", "faxi-app").unwrap();
    assert_eq!(now["spec"]["replicas"], 1);
}

#[tokio::test]
async fn an_unreachable_api_server_or_a_missing_object_fails_the_step_without_leaking_the_token() {
    // A port that answered once and no longer listens.
    let mut stub = KubeStub::start().await;
    let addr = stub.addr;
    let (dir, world) = world(&stub);
    stub.add_deployment("faxi", "faxi-app", 2);
    let e = failed(bind(&scale("faxi-api", 0), &world).run(&step()).await);
    assert!(e.contains("not found") && e.contains("HTTP 404"), "{e}");
    assert!(!e.contains(TOKEN), "{e}");
    drop(std::mem::replace(&mut stub, KubeStub::start().await));

    let a = bind(&scale("faxi-app", 0), &world);
    let e = failed(a.run(&step()).await);
    assert!(e.starts_with("k8s.scale faxi-app to 0: "), "{e}");
    assert!(
        e.contains(&format!("kubernetes API unreachable at http://{addr}")),
        "{e}"
    );
    assert!(!e.contains(TOKEN), "{e}");
    assert_eq!(a.recheck(&step()).await, Recheck::CannotTell);

    // A kubeconfig that is not there: the step says which.
    let missing = dir.path().join("no-such-kubeconfig");
    let w = world_at(missing.clone());
    let e = failed(bind(&scale("faxi-app", 0), &w).run(&step()).await);
    assert!(e.contains(&missing.display().to_string()), "{e}");
    assert_eq!(
        bind(&scale("faxi-app", 0), &w).recheck(&step()).await,
        Recheck::CannotTell
    );
    assert!(stub.requests().is_empty());
}

// ------------------------------------------------------------ end to end

const LONG: Duration = Duration::from_secs(30);

/// Three zones watching `app`, whose plan restarts the deployment
/// `faxi-app` through the kubeconfig at `kubeconfig`.
fn spec(kubeconfig: &std::path::Path) -> Spec {
    let mut spec = Spec::zones(3);
    spec.cluster = String::new();
    spec.probe_defaults = "interval = \"200ms\"\ntimeout = \"150ms\"\nfall = 2\nrise = 1\n".into();
    spec.targets = |_, _, ctx| {
        format!(
            "[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://{}/health\"\nrto = \"1m\"\nrecovery = \"app\"\n",
            ctx.service.unwrap()
        )
    };
    spec.extra = format!(
        "[kubernetes]\nkubeconfig = \"{}\"\n\n[recovery.app]\ncooldown = \"1h\"\nsteps = [\n  \
         {{ action = \"k8s.rollout_restart\", deployment = \"faxi-app\" }},\n]\n",
        kubeconfig.display()
    );
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_restarts_the_deployment_once_under_the_incidents_fencing_token() {
    let stub = KubeStub::start().await;
    let rv = stub.add_deployment("faxi", "faxi-app", 2);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, stub.kubeconfig("faxi", TOKEN)).unwrap();
    let app = AppStub::start().await;
    let ctx = Ctx {
        service: Some(app.addr),
        closed: None,
    };
    let c = Cluster::start(&spec(&kubeconfig), &ctx).await;
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    c.wait_leader(&[0, 1, 2], LONG).await;
    assert!(stub.requests().is_empty(), "nothing before a DOWN");

    // The app fails in every zone: DOWN, an incident, the plan.
    app.set_status(503);
    wait_for("the rollout restart", LONG, || async {
        if stub.writes().is_empty() {
            Err(format!("requests so far: {}", stub.requests().len()))
        } else {
            Ok(())
        }
    })
    .await;
    app.set_status(200);
    c.wait_state(&[0, 1, 2], "app", "UP", LONG).await;
    let (leader, term) = c.wait_leader(&[0, 1, 2], LONG).await;
    let li = c.index(leader);
    wait_for("the step's outcome on the leader", LONG, || async {
        let text = http_get(c.nodes[li].metrics, "/metrics")
            .await
            .unwrap_or_default();
        let labels = [
            ("plan", "app"),
            ("action", "k8s.rollout_restart"),
            ("result", "done"),
        ];
        match metric(&text, "faxi_recovery_steps_total", &labels) {
            Some(1.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    // One write, by the leader, under incident 1's token, on the version
    // it read.
    let writes = stub.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    let body = writes[0].json();
    assert_eq!(body["metadata"]["resourceVersion"], rv.as_str(), "{body}");
    let a = &body["metadata"]["annotations"];
    assert_eq!(a["watchdog.faxi.io/incident"], "1", "{body}");
    let fence_term: u64 = a["watchdog.faxi.io/fence-term"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let fence_index: u64 = a["watchdog.faxi.io/fence-index"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(fence_term >= 1 && fence_term <= term, "{body}");
    assert!(fence_index > 1, "{body}");
    assert_bearer(&stub);
    let now = stub.get("deployments", "faxi", "faxi-app").unwrap();
    assert!(
        now["spec"]["template"]["metadata"]["annotations"]
            .get("kubectl.kubernetes.io/restartedAt")
            .is_some(),
        "{now}"
    );
    // The leader logged the write under its token; no node logged the
    // kubeconfig's bearer token.
    let logged = c.log_lines(li).into_iter().any(|l| {
        l["message"] == "k8s step under its fencing token"
            && l["index"] == fence_index
            && l["object"] == "faxi-app"
    });
    assert!(logged, "no fenced log line on the leader");
    for i in 0..3 {
        for l in c.log_lines(i) {
            assert!(!l.to_string().contains(TOKEN), "node {}: {l}", i + 1);
        }
    }
}
