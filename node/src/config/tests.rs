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
