//! Parser unit tests; the corpus of bad files lives in tests/configs.

use std::time::Duration;

use super::*;

const NODE: &str = "tls = { insecure = true }\n[node]\nid = 1\nzone = \"zone-a\"\n";

fn problems(text: &str) -> Vec<String> {
    match Config::parse(text) {
        Ok(_) => vec![],
        Err(p) => p
            .into_iter()
            .map(|p| format!("{}: {}", p.key, p.reason))
            .collect(),
    }
}

#[test]
fn defaults_fill_what_is_not_said() {
    let c = Config::parse(&format!(
        "{NODE}\n[[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://app:4000/health\"\n"
    ))
    .unwrap();
    assert_eq!(c.node.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.node.metrics_listen.to_string(), DEFAULT_METRICS_LISTEN);
    assert_eq!(c.node.data_dir, PathBuf::from(DEFAULT_DATA_DIR));
    assert_eq!(c.cluster.tick, Duration::from_millis(100));
    assert_eq!(
        (c.cluster.election_ticks, c.cluster.heartbeat_ticks),
        (10, 1)
    );
    // No [cluster]: a cluster of this node alone.
    assert_eq!(
        c.cluster.peers,
        vec![Peer {
            id: 1,
            zone: "zone-a".into(),
            addr: DEFAULT_LISTEN.into()
        }]
    );
    let t = &c.targets[0];
    assert_eq!(
        (t.interval, t.timeout, t.fall, t.rise),
        (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 3, 2)
    );
    let Check::Http(h) = &t.check else {
        panic!("{t:?}")
    };
    assert_eq!(h.expect_status, 200);
}

#[test]
fn probe_defaults_apply_and_targets_override_them() {
    let c = Config::parse(&format!(
        "{NODE}\n[probe_defaults]\ninterval = \"2s\"\ntimeout = \"1s\"\nfall = 5\nrise = 4\n\n\
         [[targets]]\nname = \"a\"\nkind = \"tcp\"\naddr = \"a:1\"\n\n\
         [[targets]]\nname = \"b\"\nkind = \"tcp\"\naddr = \"b:1\"\ninterval = \"250ms\"\ntimeout = \"250ms\"\nfall = 1\n"
    ))
    .unwrap();
    let (a, b) = (&c.targets[0], &c.targets[1]);
    assert_eq!(
        (a.interval, a.timeout, a.fall, a.rise),
        (Duration::from_secs(2), Duration::from_secs(1), 5, 4)
    );
    assert_eq!(
        (b.interval, b.timeout, b.fall, b.rise),
        (Duration::from_millis(250), Duration::from_millis(250), 1, 4)
    );
}

#[test]
fn an_inherited_timeout_is_cut_to_a_shorter_interval_but_a_written_one_is_not() {
    let c = Config::parse(&format!(
        "{NODE}\n[[targets]]\nname = \"a\"\nkind = \"tcp\"\naddr = \"a:1\"\ninterval = \"250ms\"\n"
    ))
    .unwrap();
    assert_eq!(c.targets[0].timeout, Duration::from_millis(250));
    let p = problems(&format!(
        "{NODE}\n[[targets]]\nname = \"a\"\nkind = \"tcp\"\naddr = \"a:1\"\ninterval = \"250ms\"\ntimeout = \"300ms\"\n"
    ));
    assert_eq!(
        p,
        vec![
            "targets[0].timeout: 300ms exceeds the interval (250ms): probes of one target never overlap, so the timeout must fit in the interval"
        ]
    );
}

#[test]
fn secrets_are_read_from_files_and_never_debug_printed() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "pg-s3cret\n").unwrap();
    let c = Config::parse(&format!(
        "{NODE}\n[[targets]]\nname = \"db\"\nkind = \"postgres\"\ndsn = \"host=db user=faxi\"\npassword_file = \"{}\"\n",
        pw.display()
    ))
    .unwrap();
    let Check::Postgres(p) = &c.targets[0].check else {
        panic!()
    };
    assert_eq!(p.password.as_ref().unwrap().expose(), "pg-s3cret");
    assert_eq!(p.query, "SELECT 1");
    assert!(!format!("{c:?}").contains("pg-s3cret"));
}

#[test]
fn both_secret_sources_at_once_is_a_problem() {
    let p = problems(&format!(
        "{NODE}\n[[targets]]\nname = \"db\"\nkind = \"postgres\"\ndsn = \"host=db\"\npassword_env = \"A\"\npassword_file = \"/b\"\n"
    ));
    assert_eq!(
        p,
        vec!["targets[0].password_file: set only one of password_env and password_file"]
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let p = problems(
        "[node]\nid = 0\nzone = \"\"\nbogus = 1\n\n[probe_defaults]\ninterval = \"5ms\"\n\n\
         [[targets]]\nkind = \"tcp\"\n\n[[targets]]\nname = \"x\"\nkind = \"http\"\nurl = \"http://x\"\nrise = -1\n",
    );
    let want = [
        "node.id: 0 is out of range",
        "node.zone: \"\" is not a valid name",
        "node.bogus: unknown key",
        "probe_defaults.interval: 5ms is too short",
        "probe_defaults.timeout: 800ms exceeds the interval (5ms)",
        "targets[0].name: missing",
        "targets[0].addr: missing",
        "targets[1].rise: -1 is out of range",
    ];
    for w in want {
        assert!(p.iter().any(|x| x.starts_with(w)), "no {w:?} in {p:#?}");
    }
}

#[test]
fn a_config_error_names_file_key_and_reason_per_line() {
    let e = ConfigError {
        file: PathBuf::from("/etc/faxi.toml"),
        problems: vec![Problem::new("a.b", "bad"), Problem::new("c", "worse")],
    };
    assert_eq!(
        e.to_string(),
        "/etc/faxi.toml: a.b: bad\n/etc/faxi.toml: c: worse"
    );
}

#[test]
fn peers_with_this_node_parse() {
    let c = Config::parse(&format!(
        "{NODE}\n[cluster]\npeers = [\n {{ id = 1, zone = \"zone-a\", addr = \"wd-a:7400\" }},\n {{ id = 2, zone = \"zone-b\", addr = \"wd-b:7400\" }},\n]\n"
    ))
    .unwrap();
    assert_eq!(c.cluster.peers.len(), 2);
    assert_eq!(c.cluster.peers[1].zone, "zone-b");
}

#[test]
fn a_broken_target_still_counts_for_depends_on() {
    let p = problems(&format!(
        "{NODE}\n[[targets]]\nname = \"db\"\nkind = \"postgres\"\ndsn = \"host=db\"\npassword_env = \"FAXI_SURELY_UNSET_VAR_2\"\n\n\
         [[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://app\"\ndepends_on = [\"db\"]\n"
    ));
    assert_eq!(
        p,
        vec!["targets[0].password_env: environment variable FAXI_SURELY_UNSET_VAR_2 is not set"]
    );
}

#[test]
fn tls_is_required_unless_insecure_is_said_and_not_both() {
    let node = "[node]\nid = 1\nzone = \"zone-a\"\n";
    let p = problems(node);
    assert!(
        p.iter()
            .any(|p| p.starts_with("tls: missing section [tls]") && p.contains("insecure = true")),
        "{p:?}"
    );
    assert_eq!(
        problems(&format!("{node}[tls]\nca = \"ca.pem\"\n")),
        vec![
            "tls.cert: missing: this node's certificate (PEM), naming its id",
            "tls.key: missing: this node's private key (PEM)"
        ]
    );
    let p = problems(&format!("{node}[tls]\ninsecure = true\ncert = \"n.pem\"\n"));
    assert!(p[0].starts_with("tls.insecure: insecure = true turns TLS off, yet cert is given"));
    let c = Config::parse(&format!(
        "{node}[tls]\nca = \"ca.pem\"\ncert = \"/etc/n.pem\"\nkey = \"n.key\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.tls,
        TlsConfig::Files {
            ca: "ca.pem".into(),
            cert: "/etc/n.pem".into(),
            key: "n.key".into(),
            tokens_file: None,
        }
    );
    // Relative paths are read from the config file's directory.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("node.toml");
    std::fs::write(
        &f,
        format!("{node}[tls]\nca = \"ca.pem\"\ncert = \"/etc/n.pem\"\nkey = \"n.key\"\n"),
    )
    .unwrap();
    let c = Config::load(&f).unwrap();
    assert_eq!(
        c.tls,
        TlsConfig::Files {
            ca: dir.path().join("ca.pem"),
            cert: "/etc/n.pem".into(),
            key: dir.path().join("n.key"),
            tokens_file: None,
        }
    );
}

#[test]
fn the_refresh_is_at_most_20_minutes() {
    let refresh = |r: &str| problems(&format!("{NODE}\n[cluster]\nrefresh = \"{r}\"\n"));
    assert_eq!(refresh("20m"), Vec::<String>::new());
    assert_eq!(
        refresh("21m"),
        [
            "cluster.refresh: 1260s is too long: the maximum is 20m (observations stay fresh for \
          three refreshes, at most an hour)"
        ]
    );
    assert_eq!(
        MAX_REFRESH * 3,
        Duration::from_millis(crate::mesh::state::MAX_VALID_FOR_MS)
    );
}

#[test]
fn snapshot_bytes_is_a_size_from_64_kib_to_16_gib() {
    let size = |v: &str| {
        let text = format!("{NODE}\n[cluster]\nsnapshot_bytes = {v}\n");
        Config::parse(&text)
            .map(|c| c.cluster.snapshot_bytes)
            .map_err(|p| {
                p.into_iter()
                    .map(|p| format!("{}: {}", p.key, p.reason))
                    .collect::<Vec<_>>()
            })
    };
    let default = Config::parse(NODE).unwrap();
    assert_eq!(default.cluster.snapshot_bytes, 16 << 20);
    assert_eq!(size("\"16MiB\""), Ok(16 << 20));
    assert_eq!(size("\"512 KB\""), Ok(512_000));
    assert_eq!(size("\"1GiB\""), Ok(1 << 30));
    assert_eq!(size("65536"), Ok(65_536));
    assert_eq!(size("\"16GiB\""), Ok(16 << 30));
    for (v, why) in [
        (
            "\"1KiB\"",
            "cluster.snapshot_bytes: 1024 bytes is out of range: must be between 64KiB and 16GiB",
        ),
        (
            "\"17GiB\"",
            "cluster.snapshot_bytes: 18253611008 bytes is out of range: must be between 64KiB and 16GiB",
        ),
        ("-5", "cluster.snapshot_bytes: -5 is negative"),
        (
            "\"16 megs\"",
            "cluster.snapshot_bytes: \"16 megs\" is not a size: write a number and a unit, like \"16MiB\" or \"512KB\"",
        ),
        (
            "\"MiB\"",
            "cluster.snapshot_bytes: \"MiB\" is not a size: write a number and a unit, like \"16MiB\" or \"512KB\"",
        ),
        (
            "\"999999999999999999999TiB\"",
            "cluster.snapshot_bytes: \"999999999999999999999TiB\" is not a size: write a number and a unit, like \"16MiB\" or \"512KB\"",
        ),
        (
            "\"99999999TiB\"",
            "cluster.snapshot_bytes: \"99999999TiB\" is too large",
        ),
        (
            "1.5",
            "cluster.snapshot_bytes: expected a size like \"16MiB\" or a number of bytes, found float",
        ),
    ] {
        assert_eq!(size(v), Err(vec![why.to_owned()]), "{v}");
    }
}

#[test]
fn a_node_probes_at_most_10_000_targets() {
    let config = |n: usize| {
        let mut text = NODE.to_owned();
        for i in 0..n {
            text.push_str(&format!(
                "[[targets]]\nname = \"t{i}\"\nkind = \"tcp\"\naddr = \"h:1\"\n"
            ));
        }
        problems(&text)
    };
    assert_eq!(config(10_000), Vec::<String>::new());
    assert_eq!(
        config(10_001),
        ["targets: 10001 targets: at most 10000 (a node's whole set goes in one observation)"]
    );
}

#[test]
fn peer_addresses_are_what_the_state_machine_takes_and_differ() {
    let peers = |a: &str, b: &str| {
        problems(&format!(
            "{NODE}\n[cluster]\npeers = [\n {{ id = 1, zone = \"zone-a\", addr = \"{a}\" }},\n \
             {{ id = 2, zone = \"zone-b\", addr = \"{b}\" }},\n]\n"
        ))
    };
    assert_eq!(peers("wd-a:7400", "wd-b:7400"), Vec::<String>::new());
    assert_eq!(
        peers("wd-a:7400", "WD-A:07400"),
        ["cluster.peers[1].addr: \"WD-A:07400\" is also cluster.peers[0].addr"]
    );
    assert_eq!(
        peers("wd-a:7400", "wd-b:+7400"),
        ["cluster.peers[1].addr: \"wd-b:+7400\" has no valid port (a number from 1 to 65535)"]
    );
    let long = format!("{}:7400", "h".repeat(251));
    assert_eq!(
        peers("wd-a:7400", &long),
        [format!(
            "cluster.peers[1].addr: \"{long}\" is 256 bytes long: at most 255"
        )]
    );
    // The same address with credentials: refused once each, never echoed.
    let p = peers("u:secret@wd-a:7400", "u:secret@wd-a:7400");
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p.iter().all(|x| !x.contains("secret")), "{p:?}");
}

/// Two targets the plans below can wait for.
const TARGETS: &str = "[[targets]]\nname = \"postgres\"\nkind = \"tcp\"\naddr = \"db:5432\"\n\n\
     [[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://app:4000/health\"\n";

fn with_plans(plans: &str) -> String {
    format!("{NODE}\n{TARGETS}\n{plans}")
}

#[test]
fn a_plan_with_every_action_parses_and_defaults_fill_what_it_does_not_say() {
    use crate::recovery::{Action, ContainerRef, DockerOp, Plan, RecoveryDefaults, Step};
    let c = Config::parse(&with_plans(
        r#"
[recovery_defaults]
notify_url_env = "FAXI_WEBHOOK_URL"

[recovery.postgres]
steps = [
  { action = "docker.stop", container = "faxi-app" },
  { action = "docker.restart", label = "faxi.role=db", timeout = "1m", idempotent = false },
  { action = "wait_healthy", target = "postgres", timeout = "2m", then = "finish" },
  { action = "exec", argv = ["/usr/local/bin/restore", "--latest"], env = { PGHOST = "db" }, approval = true },
  { action = "http", url = "https://orchestrator:8080/scale?app=0" },
  { action = "notify", message = "postgres restored" },
]
finally = [
  { action = "docker.start", container = "faxi-app" },
  { action = "wait_healthy", target = "app", timeout = "30s" },
  { action = "http", method = "PUT", url = "http://orch/x", expect_status = 204, body = "{}", timeout = "3s", idempotent = true },
  { action = "notify", url_env = "OPS_HOOK", message = "done", timeout = "1s" },
]
"#,
    ))
    .unwrap();
    assert_eq!(
        c.recovery.defaults,
        RecoveryDefaults {
            max_concurrent: 1,
            notify_url_env: Some("FAXI_WEBHOOK_URL".into()),
            dry_run: false,
            approval_ttl_ms: 15 * 60_000,
        }
    );
    let step = |action, approval, idempotent| Step {
        action,
        approval,
        idempotent,
    };
    let want = Plan {
        name: "postgres".into(),
        steps: vec![
            step(
                Action::Docker {
                    op: DockerOp::Stop,
                    container: ContainerRef::Name("faxi-app".into()),
                    timeout_ms: 30_000,
                },
                false,
                true,
            ),
            step(
                Action::Docker {
                    op: DockerOp::Restart,
                    container: ContainerRef::Label("faxi.role=db".into()),
                    timeout_ms: 60_000,
                },
                false,
                false,
            ),
            step(
                Action::WaitHealthy {
                    target: "postgres".into(),
                    timeout_ms: 120_000,
                    finish: true,
                },
                false,
                true,
            ),
            step(
                Action::Exec {
                    argv: vec!["/usr/local/bin/restore".into(), "--latest".into()],
                    env: vec![("PGHOST".into(), "db".into())],
                    timeout_ms: 60_000,
                },
                true,
                false,
            ),
            step(
                Action::Http {
                    method: "POST".into(),
                    url: "https://orchestrator:8080/scale?app=0".into(),
                    expect_status: 200,
                    body: None,
                    timeout_ms: 10_000,
                },
                false,
                false,
            ),
            step(
                Action::Notify {
                    url_env: "FAXI_WEBHOOK_URL".into(),
                    message: "postgres restored".into(),
                    timeout_ms: 10_000,
                },
                false,
                false,
            ),
        ],
        finally: vec![
            step(
                Action::Docker {
                    op: DockerOp::Start,
                    container: ContainerRef::Name("faxi-app".into()),
                    timeout_ms: 30_000,
                },
                false,
                true,
            ),
            step(
                Action::WaitHealthy {
                    target: "app".into(),
                    timeout_ms: 30_000,
                    finish: false,
                },
                false,
                true,
            ),
            step(
                Action::Http {
                    method: "PUT".into(),
                    url: "http://orch/x".into(),
                    expect_status: 204,
                    body: Some("{}".into()),
                    timeout_ms: 3_000,
                },
                false,
                true,
            ),
            step(
                Action::Notify {
                    url_env: "OPS_HOOK".into(),
                    message: "done".into(),
                    timeout_ms: 1_000,
                },
                false,
                false,
            ),
        ],
        cooldown_ms: 10 * 60_000,
        max_attempts: 3,
        attempt_window_ms: 60 * 60_000,
        dry_run: false,
    };
    assert_eq!(c.recovery.plan("postgres"), Some(&want));
    assert_eq!(c.recovery.plans.len(), 1);
    // Every action the config takes is the action's own name.
    let names: Vec<&str> = want.steps.iter().map(|s| s.action.name()).collect();
    assert_eq!(
        names,
        [
            "docker.stop",
            "docker.restart",
            "wait_healthy",
            "exec",
            "http",
            "notify"
        ]
    );
    for n in ACTIONS {
        assert!(
            names.contains(&n) || n == "docker.start" || n.starts_with("k8s."),
            "{n} is not exercised (the k8s steps are in the next test)"
        );
    }
}

#[test]
fn k8s_steps_parse_with_their_namespace_timeout_and_idempotence() {
    use crate::recovery::{Action, K8sOp, Step};
    let c = Config::parse(&with_plans(
        r#"
[kubernetes]
kubeconfig = "kube/config"

[recovery.postgres]
steps = [
  { action = "k8s.scale", deployment = "faxi-app", replicas = 0 },
  { action = "k8s.delete_pods", selector = "app.kubernetes.io/name=faxi-postgres,tier!=cache", namespace = "faxi-db", timeout = "1m" },
  { action = "k8s.rollout_restart", deployment = "faxi.app-v2" },
  { action = "k8s.rollout_restart", deployment = "faxi-worker", idempotent = true },
]
"#,
    ))
    .unwrap();
    assert_eq!(
        c.kubernetes.kubeconfig.as_deref(),
        Some(std::path::Path::new("kube/config"))
    );
    let k8s = |op, namespace: Option<&str>, timeout_ms, idempotent| Step {
        action: Action::K8s {
            op,
            namespace: namespace.map(str::to_owned),
            timeout_ms,
        },
        approval: false,
        idempotent,
    };
    let want = vec![
        k8s(
            K8sOp::Scale {
                deployment: "faxi-app".into(),
                replicas: 0,
            },
            None,
            30_000,
            true,
        ),
        k8s(
            K8sOp::DeletePods {
                selector: "app.kubernetes.io/name=faxi-postgres,tier!=cache".into(),
            },
            Some("faxi-db"),
            60_000,
            false,
        ),
        k8s(
            K8sOp::RolloutRestart {
                deployment: "faxi.app-v2".into(),
            },
            None,
            30_000,
            false,
        ),
        k8s(
            K8sOp::RolloutRestart {
                deployment: "faxi-worker".into(),
            },
            None,
            30_000,
            true,
        ),
    ];
    let plan = c.recovery.plan("postgres").unwrap();
    assert_eq!(plan.steps, want);
    let names: Vec<&str> = plan.steps.iter().map(|s| s.action.name()).collect();
    assert_eq!(
        names,
        [
            "k8s.scale",
            "k8s.delete_pods",
            "k8s.rollout_restart",
            "k8s.rollout_restart"
        ]
    );
    assert_eq!(
        plan.steps[1].action.describe(),
        "k8s.delete_pods app.kubernetes.io/name=faxi-postgres,tier!=cache in faxi-db"
    );
    // No [kubernetes]: the pod's service account.
    let c = Config::parse(&with_plans("")).unwrap();
    assert_eq!(c.kubernetes.kubeconfig, None);
}

#[test]
fn plan_and_default_settings_are_read_and_a_plan_dry_runs_as_the_defaults_say() {
    let c = Config::parse(&with_plans(
        r#"
[recovery_defaults]
max_concurrent = 2
dry_run = true
approval_ttl = "1h"

[recovery.a]
steps = [{ action = "docker.restart", container = "a" }]
cooldown = "5m"
max_attempts = 5
attempt_window = "2h"

[recovery.b]
steps = [{ action = "docker.restart", container = "b" }]
dry_run = false
"#,
    ))
    .unwrap();
    let d = &c.recovery.defaults;
    assert_eq!(
        (
            d.max_concurrent,
            d.dry_run,
            d.approval_ttl_ms,
            &d.notify_url_env
        ),
        (2, true, 3_600_000, &None)
    );
    let a = c.recovery.plan("a").unwrap();
    assert_eq!(
        (
            a.cooldown_ms,
            a.max_attempts,
            a.attempt_window_ms,
            a.dry_run
        ),
        (300_000, 5, 7_200_000, true)
    );
    assert!(!c.recovery.plan("b").unwrap().dry_run);
    // No recovery at all: the defaults, no plans.
    let c = Config::parse(NODE).unwrap();
    assert_eq!(c.recovery, RecoveryConfig::default());
}

#[test]
fn recovery_defaults_are_checked() {
    let p = problems(&with_plans(
        "[recovery_defaults]\nmax_concurrent = 0\nnotify_url_env = \"faxi-hook\"\n\
         dry_run = \"yes\"\napproval_ttl = \"30s\"\nretries = 2\n",
    ));
    assert_eq!(
        p,
        [
            "recovery_defaults.max_concurrent: 0 is out of range: must be between 1 and 1000",
            "recovery_defaults.notify_url_env: \"faxi-hook\" is not an environment variable name: \
             use letters, digits and '_', not starting with a digit (like FAXI_WEBHOOK_URL)",
            "recovery_defaults.dry_run: expected true or false, found string",
            "recovery_defaults.approval_ttl: 30s is out of range: must be between 1m and 1day",
            "recovery_defaults.retries: unknown key (known keys here: approval_ttl, dry_run, \
             max_concurrent, notify_url_env)",
        ]
    );
    assert_eq!(
        problems(&with_plans("[recovery_defaults]\napproval_ttl = \"25h\"\n")),
        ["recovery_defaults.approval_ttl: 1day 1h is out of range: must be between 1m and 1day"]
    );
    for ok in ["1m", "24h"] {
        let text = with_plans(&format!("[recovery_defaults]\napproval_ttl = \"{ok}\"\n"));
        assert_eq!(problems(&text), Vec::<String>::new(), "{ok}");
    }
}

#[test]
fn a_plan_is_checked_as_a_whole() {
    let p = problems(&with_plans(
        r#"
[recovery."bad name!"]
steps = [{ action = "docker.restart", container = "a" }]

[recovery.none]
cooldown = "soon"

[recovery.empty]
steps = []
max_attempts = 0
attempt_window = "0s"
retry = true

[recovery.flat]
steps = ["docker.restart"]
"#,
    ));
    assert_eq!(
        p,
        [
            "recovery.\"bad name!\": \"bad name!\" is not a valid name: use 1 to 63 letters, digits, '-', '_' or '.'",
            "recovery.empty.steps: is empty: a plan needs at least one step",
            "recovery.empty.max_attempts: 0 is out of range: must be between 1 and 1000",
            "recovery.empty.attempt_window: duration \"0s\" must be greater than zero",
            "recovery.empty.retry: unknown key (known keys here: attempt_window, cooldown, \
             dry_run, finally, max_attempts, steps)",
            "recovery.flat.steps[0]: expected a table, found string",
            "recovery.none.steps: missing: at least one step, like steps = [{ action = \
             \"docker.restart\", container = \"faxi-postgres\" }]",
            "recovery.none.cooldown: invalid duration \"soon\" (expected number at 0); write it like \
             \"250ms\", \"30s\" or \"2h\"",
        ]
    );
    assert_eq!(
        problems(&with_plans("[recovery]\nsteps = []\n")),
        ["recovery.steps: expected a table ([recovery.steps] with steps = [...]), found array"]
    );
}

#[test]
fn each_step_is_checked_against_its_action() {
    let step = |s: &str| problems(&with_plans(&format!("[recovery.p]\nsteps = [{s}]\n")));
    let cases: &[(&str, &[&str])] = &[
        (
            "{ action = \"docker.kill\", container = \"a\", bogus = 1 }",
            &[
                "recovery.p.steps[0].action: unknown action \"docker.kill\" (one of: docker.restart, \
                 docker.stop, docker.start, k8s.delete_pods, k8s.scale, k8s.rollout_restart, wait_healthy, \
                 exec, http, notify)",
                "recovery.p.steps[0].bogus: unknown key (known keys here: action, approval, argv, \
                 body, container, deployment, env, expect_status, idempotent, label, message, \
                 method, namespace, replicas, selector, target, then, timeout, url, url_env)",
            ],
        ),
        (
            "{ container = \"a\" }",
            &[
                "recovery.p.steps[0].action: missing: one of docker.restart, docker.stop, \
                 docker.start, k8s.delete_pods, k8s.scale, k8s.rollout_restart, wait_healthy, exec, \
                 http, notify",
            ],
        ),
        (
            "{ action = \"docker.stop\", container = \"a\", label = \"x=y\" }",
            &["recovery.p.steps[0].label: set only one of container and label"],
        ),
        (
            "{ action = \"docker.stop\" }",
            &[
                "recovery.p.steps[0].container: missing: set container (a container's name) or \
                 label (key=value, every container carrying it)",
            ],
        ),
        (
            "{ action = \"docker.stop\", container = \"-a b\" }",
            &[
                "recovery.p.steps[0].container: \"-a b\" is not a container name: a letter or \
                 digit, then letters, digits, '_', '.' or '-', at most 128 characters",
            ],
        ),
        (
            "{ action = \"docker.stop\", label = \"faxi.role\" }",
            &[
                "recovery.p.steps[0].label: \"faxi.role\" is not a label: write key=value, like \
                 \"faxi.role=worker\" (no spaces, at most 255 bytes)",
            ],
        ),
        (
            "{ action = \"docker.stop\", container = \"a\", argv = [\"x\"], approval = 1 }",
            &[
                "recovery.p.steps[0].approval: expected true or false, found integer",
                "recovery.p.steps[0].argv: unknown key (known keys here: action, approval, \
                 container, idempotent, label, timeout)",
            ],
        ),
        (
            "{ action = \"wait_healthy\", target = \"redis\", then = \"later\" }",
            &[
                "recovery.p.steps[0].target: no target is named \"redis\"",
                "recovery.p.steps[0].timeout: missing: how long to wait, like \"2m\"",
                "recovery.p.steps[0].then: \"later\" is not allowed: the only value is \"finish\" \
                 (end the plan once the target is healthy)",
            ],
        ),
        (
            "{ action = \"wait_healthy\", timeout = \"1m\" }",
            &["recovery.p.steps[0].target: missing: the target to wait for"],
        ),
        (
            "{ action = \"exec\", argv = [] }",
            &["recovery.p.steps[0].argv: is empty: give the program and its arguments"],
        ),
        (
            "{ action = \"exec\" }",
            &[
                "recovery.p.steps[0].argv: missing: the program and its arguments, like \
                 [\"/usr/local/bin/restore\", \"--latest\"]",
            ],
        ),
        (
            "{ action = \"exec\", argv = [\"\", \"a\\u0000b\", 3] }",
            &[
                "recovery.p.steps[0].argv[2]: expected a string, found integer",
                "recovery.p.steps[0].argv[0]: the program must not be empty",
                "recovery.p.steps[0].argv[1]: contains a NUL character",
            ],
        ),
        (
            "{ action = \"exec\", argv = [\"x\"], env = { FAXI_FENCE_TERM = \"1\", \"A-B\" = \"c\", \
             N = 1, OK = \"a\\u0000\" } }",
            &[
                "recovery.p.steps[0].env.A-B: \"A-B\" is not an environment variable name: use \
                 letters, digits and '_', not starting with a digit (like FAXI_WEBHOOK_URL)",
                "recovery.p.steps[0].env.FAXI_FENCE_TERM: names starting with FAXI_ are the \
                 executor's (FAXI_INCIDENT, FAXI_TARGET, FAXI_FENCE_TERM, FAXI_FENCE_INDEX): use \
                 another name",
                "recovery.p.steps[0].env.N: expected a string, found integer",
                "recovery.p.steps[0].env.OK: contains a NUL character",
            ],
        ),
        (
            "{ action = \"http\", url = \"https://ops:pw@orch/x\", method = \"post\", \
             expect_status = 600 }",
            &[
                "recovery.p.steps[0].url: must not carry credentials",
                "recovery.p.steps[0].method: \"post\" is not a method here (one of: GET, POST, PUT, \
                 PATCH, DELETE)",
                "recovery.p.steps[0].expect_status: 600 is out of range: must be between 100 and 599",
            ],
        ),
        (
            "{ action = \"http\", url = \"ftp://orch/x\" }",
            &["recovery.p.steps[0].url: must start with http:// or https://"],
        ),
        (
            "{ action = \"http\" }",
            &["recovery.p.steps[0].url: missing: like \"http://orchestrator:8080/scale\""],
        ),
        (
            "{ action = \"notify\", message = \"hi\" }",
            &[
                "recovery.p.steps[0].url_env: missing: name the environment variable holding the \
                 webhook URL here, or set notify_url_env in [recovery_defaults]",
            ],
        ),
        (
            "{ action = \"notify\", url_env = \"1HOOK\", message = \"\" }",
            &[
                "recovery.p.steps[0].message: must not be empty",
                "recovery.p.steps[0].url_env: \"1HOOK\" is not an environment variable name: use \
                 letters, digits and '_', not starting with a digit (like FAXI_WEBHOOK_URL)",
            ],
        ),
    ];
    for (s, want) in cases {
        assert_eq!(step(s), *want, "{s}");
    }
    // `then = "finish"` ends the steps; in finally it has nothing to end.
    assert_eq!(
        problems(&with_plans(
            "[recovery.p]\nsteps = [{ action = \"docker.restart\", container = \"a\" }]\n\
             finally = [{ action = \"wait_healthy\", target = \"app\", timeout = \"1m\", then = \"finish\" }]\n"
        )),
        [
            "recovery.p.finally[0].then: \"finish\" ends the plan's steps, so it has no place in finally"
        ]
    );
}

#[test]
fn a_targets_recovery_is_a_plan_of_this_config() {
    let target = |plans: &str| {
        problems(&format!(
            "{NODE}\n[[targets]]\nname = \"db\"\nkind = \"tcp\"\naddr = \"db:5432\"\n\
             recovery = \"postgres\"\n\n{plans}"
        ))
    };
    assert_eq!(
        target(""),
        ["targets[0].recovery: no plan \"postgres\" ([recovery.postgres])"]
    );
    assert_eq!(
        target(
            "[recovery.postgres]\nsteps = [{ action = \"wait_healthy\", target = \"db\", timeout = \"1m\" }]\n"
        ),
        Vec::<String>::new()
    );
    // A plan with problems of its own still exists for the target, and a
    // target with problems of its own still exists for wait_healthy.
    assert_eq!(
        target("[recovery.postgres]\nsteps = [{ action = \"reboot\" }]\n"),
        [
            "recovery.postgres.steps[0].action: unknown action \"reboot\" (one of: docker.restart, \
          docker.stop, docker.start, k8s.delete_pods, k8s.scale, k8s.rollout_restart, wait_healthy, \
          exec, http, notify)"
        ]
    );
    assert_eq!(
        problems(&format!(
            "{NODE}\n[[targets]]\nname = \"db\"\nkind = \"tcp\"\n\n\
             [recovery.p]\nsteps = [{{ action = \"wait_healthy\", target = \"db\", timeout = \"1m\" }}]\n"
        )),
        ["targets[0].addr: missing: host:port"]
    );
    let c = Config::parse(&format!(
        "{NODE}\n[[targets]]\nname = \"db\"\nkind = \"tcp\"\naddr = \"db:5432\"\n\
         recovery = \"postgres\"\n\n\
         [recovery.postgres]\nsteps = [{{ action = \"docker.restart\", container = \"pg\" }}]\n"
    ))
    .unwrap();
    let plan = c.targets[0]
        .recovery
        .as_deref()
        .and_then(|r| c.recovery.plan(r));
    assert_eq!(plan.map(|p| p.name.as_str()), Some("postgres"));
}

#[test]
fn webhook_urls_from_the_environment_are_redacted_like_secrets() {
    // A variable every test process has stands in for a webhook's.
    let path = std::env::var("PATH").unwrap();
    let c = Config::parse(&format!(
        "{NODE}\n[recovery_defaults]\nnotify_url_env = \"PATH\"\n\
         [[targets]]\nname = \"app\"\nkind = \"http\"\nurl = \"http://app:4000/health\"\nrecovery = \"app\"\n\
         [recovery.app]\nsteps = [ {{ action = \"notify\", message = \"down\" }} ]\n"
    ))
    .unwrap();
    let line = format!("posting to {path} failed");
    let shown = c.redactor().redact(&line).into_owned();
    assert!(!shown.contains(&path), "{shown}");
    assert!(shown.contains("***"), "{shown}");
}
