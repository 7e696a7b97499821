//! The lint settings that hold two layering invariants (ARCHITECTURE.md):
//! node/clippy.toml bans sled and protobuf outside the modules that own
//! them. Clippy reads one file per crate, so the node's repeats the
//! workspace's; this keeps them in step, and keeps every type generated
//! from watchdog.proto on the node's list.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

fn read(rel: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(rel)).unwrap()
}

/// The settings of a clippy.toml: its non-comment lines.
fn settings(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

#[test]
fn the_node_lints_include_the_workspace_lints() {
    let workspace = read("clippy.toml");
    let node = read("node/clippy.toml");
    let node = settings(&node);
    let missing: Vec<&str> = settings(&workspace)
        .into_iter()
        .filter(|l| !node.contains(l))
        .collect();
    assert!(
        missing.is_empty(),
        "node/clippy.toml lacks the workspace's {missing:?}"
    );
}

#[test]
fn every_generated_grpc_type_is_banned_outside_the_edge() {
    let proto = read("proto/faxi/v1/watchdog.proto");
    let node = read("node/clippy.toml");
    let mut want = Vec::new();
    for line in proto.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("message"), Some(name)) => want.push(format!("faxi_proto::v1::{name}")),
            (Some("service"), Some(name)) => {
                let snake = snake(name);
                want.push(format!("faxi_proto::v1::{snake}_server::{name}"));
                want.push(format!("faxi_proto::v1::{snake}_server::{name}Server"));
                want.push(format!("faxi_proto::v1::{snake}_client::{name}Client"));
            }
            _ => {}
        }
    }
    assert!(want.len() > 10, "{want:?}");
    let missing: Vec<&String> = want
        .iter()
        .filter(|t| !node.contains(&format!("path = \"{t}\"")))
        .collect();
    assert!(
        missing.is_empty(),
        "node/clippy.toml does not ban {missing:?}"
    );
}

fn snake(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// The modules allowed sled and protobuf (node/src/mesh/mod.rs, lib.rs).
const ALLOWED: [&str; 7] = [
    "node/src/api.rs",
    "node/src/api/incidents.rs",
    "node/src/api/incoming.rs",
    "node/src/mesh/driver.rs",
    "node/src/mesh/storage.rs",
    "node/src/mesh/storage/tests.rs",
    "node/src/mesh/transport.rs",
];

/// One allowance of `disallowed_types` / `disallowed_methods` lifts every
/// ban, so in the modules allowed sled and protobuf the clock rules
/// (tokio's Instant, no blocking sleep) are checked here instead.
#[test]
fn modules_allowed_sled_or_protobuf_still_keep_the_clock_rules() {
    let mut found = Vec::new();
    for file in ALLOWED {
        for (n, line) in read(file).lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            let std_instant = code.contains("std::time::Instant")
                || (code.contains("use std::time::") && code.contains("Instant"));
            if std_instant || code.contains("thread::sleep") {
                found.push(format!("{file}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
