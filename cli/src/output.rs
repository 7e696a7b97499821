//! What faxictl prints: human tables and the JSON scripts rely on
//! (DESIGN.md §4: `cluster.*`, `targets[].*`, `incidents[]`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faxi_proto::v1 as pb;
use serde_json::{Value, json};

fn rfc3339(unix_ms: i64) -> Value {
    if unix_ms <= 0 {
        return Value::Null;
    }
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms.unsigned_abs());
    Value::String(humantime::format_rfc3339_millis(t).to_string())
}

fn ago(unix_ms: i64) -> String {
    if unix_ms <= 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms.unsigned_abs());
    match SystemTime::now().duration_since(t) {
        Ok(d) => {
            let s = d.as_secs();
            if s < 60 {
                format!("{s}s ago")
            } else if s < 3600 {
                format!("{}m{}s ago", s / 60, s % 60)
            } else if s < 86400 {
                format!("{}h{}m ago", s / 3600, (s % 3600) / 60)
            } else {
                format!("{}d{}h ago", s / 86400, (s % 86400) / 3600)
            }
        }
        Err(_) => "just now".into(),
    }
}

fn member_json(m: &pb::Member) -> Value {
    json!({
        "id": m.id, "zone": m.zone, "addr": m.addr,
        "role": m.role, "reachable": m.reachable,
    })
}

fn status_value(s: &pb::StatusResponse) -> Value {
    let c = s.cluster.clone().unwrap_or_default();
    let targets: Vec<Value> = s
        .targets
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "kind": t.kind,
                "state": t.state,
                "since": rfc3339(t.since_unix_ms),
                "zones": t.zones,
                "down_zones": t.down_zones,
                "nodes": t.nodes.iter().map(|n| json!({
                    "id": n.id,
                    "zone": n.zone,
                    "verdict": n.verdict,
                    "latency_ms": n.latency_ms,
                    "error": if n.error.is_empty() { Value::Null } else { Value::String(n.error.clone()) },
                    "fresh": n.fresh,
                    "at": rfc3339(n.at_unix_ms),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "cluster": {
            "leader": if c.leader == 0 { Value::Null } else { json!(c.leader) },
            "term": c.term,
            "commit_index": c.commit_index,
            "answered_by": {
                "id": c.node_id,
                "zone": c.node_zone,
                "applied_index": c.applied_index,
                "leader_contact_ms": if c.leader_contact_ms < 0 { Value::Null } else { json!(c.leader_contact_ms) },
            },
            "members": c.members.iter().map(member_json).collect::<Vec<_>>(),
        },
        "targets": targets,
        "incidents": s.incidents.iter().map(|i| json!({
            "id": i.id, "target": i.target, "state": i.state, "opened": rfc3339(i.opened_unix_ms),
        })).collect::<Vec<_>>(),
    })
}

/// `status --output json`: one pretty document.
pub fn status_json(s: &pb::StatusResponse) -> String {
    let mut out = serde_json::to_string_pretty(&status_value(s)).unwrap_or_default();
    out.push('\n');
    out
}

/// `watch --output json`: one document per line.
pub fn status_json_line(s: &pb::StatusResponse) -> String {
    let mut out = status_value(s).to_string();
    out.push('\n');
    out
}

/// `members --output json`.
pub fn members_json(members: &[pb::Member]) -> String {
    let v: Vec<Value> = members.iter().map(member_json).collect();
    let mut out = serde_json::to_string_pretty(&v).unwrap_or_default();
    out.push('\n');
    out
}

/// The answer to `members add|remove`: what was done, then the members.
pub fn member_change(json: bool, id: u64, done: &str, r: &pb::MemberChangeResponse) -> String {
    if json {
        members_json(&r.members)
    } else {
        format!(
            "node {id} {done} at index {}\n{}",
            r.index,
            members_table(&r.members)
        )
    }
}

/// A boxed table, as `patronictl list` draws them.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let line = {
        let mut l = String::from("+");
        for w in &widths {
            l.push_str(&"-".repeat(w + 2));
            l.push('+');
        }
        l.push('\n');
        l
    };
    let row = |cells: Vec<&str>| {
        let mut l = String::from("|");
        for (c, w) in cells.iter().zip(&widths) {
            let pad = w - c.chars().count();
            l.push(' ');
            l.push_str(c);
            l.push_str(&" ".repeat(pad + 1));
            l.push('|');
        }
        l.push('\n');
        l
    };
    let mut out = line.clone();
    out.push_str(&row(headers.to_vec()));
    out.push_str(&line);
    for r in rows {
        out.push_str(&row(r.iter().map(String::as_str).collect()));
    }
    out.push_str(&line);
    out
}

/// `members` as a table.
pub fn members_table(members: &[pb::Member]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.zone.clone(),
                m.addr.clone(),
                m.role.clone(),
                if m.reachable { "yes" } else { "NO" }.to_owned(),
            ]
        })
        .collect();
    table(&["Member", "Zone", "Address", "Role", "Reachable"], &rows)
}

fn zones_cell(t: &pb::TargetStatus) -> String {
    let mut zones: Vec<(&String, &String)> = t.zones.iter().collect();
    zones.sort();
    zones
        .iter()
        .map(|(z, v)| format!("{z}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Who cannot reach a SUSPECT target: the zones that see it DOWN; with a
/// single zone (where the zone's own majority may still say UP), the nodes
/// whose fresh view is DOWN, in that zone.
fn suspect_note(t: &pb::TargetStatus) -> String {
    let seers: Vec<String> = t
        .nodes
        .iter()
        .filter(|n| n.fresh && n.verdict == "DOWN")
        .map(|n| n.id.to_string())
        .collect();
    if t.zones.len() == 1 && !seers.is_empty() {
        let zone = t.zones.keys().next().cloned().unwrap_or_default();
        let nodes = if seers.len() == 1 { "node" } else { "nodes" };
        format!(
            "{nodes} {} in {zone} cannot reach {}",
            seers.join(", "),
            t.name
        )
    } else if !t.down_zones.is_empty() {
        format!("{} cannot reach {}", t.down_zones.join(", "), t.name)
    } else {
        format!("a minority sees {} DOWN", t.name)
    }
}

fn note(t: &pb::TargetStatus) -> String {
    match t.state.as_str() {
        "SUSPECT" => suspect_note(t),
        "DOWN" => {
            let errors: Vec<String> = t
                .nodes
                .iter()
                .filter(|n| n.fresh && !n.error.is_empty())
                .map(|n| format!("node {}: {}", n.id, n.error))
                .take(1)
                .collect();
            errors.join("")
        }
        _ => String::new(),
    }
}

/// `status` as tables: the cluster, then the targets.
pub fn status_table(s: &pb::StatusResponse) -> String {
    let c = s.cluster.clone().unwrap_or_default();
    let mut out = String::new();
    let leader = if c.leader == 0 {
        "none (election in progress or no quorum)".to_owned()
    } else {
        c.leader.to_string()
    };
    out.push_str(&format!(
        "Cluster: {} members, leader {leader}, term {}, commit index {}\n",
        c.members.len(),
        c.term,
        c.commit_index
    ));
    let lag = c.commit_index.saturating_sub(c.applied_index);
    let contact = match c.leader_contact_ms {
        _ if c.leader != 0 && c.leader == c.node_id => "is the leader".to_owned(),
        ms if ms < 0 => "has not heard from a leader".to_owned(),
        ms => format!("heard from the leader {ms} ms ago"),
    };
    out.push_str(&format!(
        "Answered by node {} ({}): applied {}, {lag} behind its commit index, {contact}\n",
        c.node_id, c.node_zone, c.applied_index
    ));
    out.push_str(&members_table(&c.members));
    let rows: Vec<Vec<String>> = s
        .targets
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.kind.clone(),
                t.state.clone(),
                ago(t.since_unix_ms),
                zones_cell(t),
                note(t),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("No targets observed yet.\n");
    } else {
        out.push_str(&table(
            &["Target", "Kind", "State", "Since", "Zones", "Note"],
            &rows,
        ));
    }
    if !s.incidents.is_empty() {
        out.push_str(&format!("{} open incident(s)\n", s.incidents.len()));
    }
    out
}

/// `watch` lines: what changed since the previous status.
pub fn changes(prev: Option<&pb::StatusResponse>, now: &pb::StatusResponse) -> String {
    let stamp = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let Some(prev) = prev else {
        return format!("{stamp} {}", status_table(now));
    };
    let mut out = String::new();
    let (pc, nc) = (
        prev.cluster.clone().unwrap_or_default(),
        now.cluster.clone().unwrap_or_default(),
    );
    if pc.leader != nc.leader || pc.term != nc.term {
        out.push_str(&format!(
            "{stamp} leader {} -> {} (term {})\n",
            pc.leader, nc.leader, nc.term
        ));
    }
    let pm: Vec<(u64, bool)> = pc.members.iter().map(|m| (m.id, m.reachable)).collect();
    let nm: Vec<(u64, bool)> = nc.members.iter().map(|m| (m.id, m.reachable)).collect();
    if pm != nm {
        let desc: Vec<String> = nc
            .members
            .iter()
            .map(|m| format!("{}{}", m.id, if m.reachable { "" } else { "(unreachable)" }))
            .collect();
        out.push_str(&format!("{stamp} members: {}\n", desc.join(" ")));
    }
    for t in &now.targets {
        let before = prev.targets.iter().find(|p| p.name == t.name);
        let changed = before.is_none_or(|b| b.state != t.state || b.zones != t.zones);
        if changed {
            let from = before.map_or("-", |b| b.state.as_str());
            let n = note(t);
            out.push_str(&format!(
                "{stamp} {} {from} -> {} [{}]{}\n",
                t.name,
                t.state,
                zones_cell(t),
                if n.is_empty() {
                    String::new()
                } else {
                    format!(" {n}")
                }
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(id: u64, zone: &str, verdict: &str, fresh: bool) -> pb::NodeVerdict {
        pb::NodeVerdict {
            id,
            zone: zone.into(),
            verdict: verdict.into(),
            fresh,
            ..pb::NodeVerdict::default()
        }
    }

    fn target(
        zones: &[(&str, &str)],
        down_zones: &[&str],
        nodes: Vec<pb::NodeVerdict>,
    ) -> pb::TargetStatus {
        pb::TargetStatus {
            name: "app".into(),
            kind: "http".into(),
            state: "SUSPECT".into(),
            zones: zones
                .iter()
                .map(|(z, v)| (z.to_string(), v.to_string()))
                .collect(),
            down_zones: down_zones.iter().map(|z| z.to_string()).collect(),
            nodes,
            ..pb::TargetStatus::default()
        }
    }

    #[test]
    fn a_suspect_note_names_who_cannot_reach_the_target() {
        // Several zones: the zones.
        let t = target(
            &[("zone-a", "UP"), ("zone-b", "UP"), ("zone-c", "DOWN")],
            &["zone-c"],
            vec![verdict(3, "zone-c", "DOWN", true)],
        );
        assert_eq!(note(&t), "zone-c cannot reach app");
        // One zone, whose majority still says UP: the nodes that see DOWN
        // now (a stale DOWN of node 1 does not count).
        let nodes = vec![
            verdict(1, "dc", "DOWN", false),
            verdict(2, "dc", "UP", true),
            verdict(3, "dc", "DOWN", true),
        ];
        let t = target(&[("dc", "UP")], &["dc"], nodes.clone());
        assert_eq!(note(&t), "node 3 in dc cannot reach app");
        // Five nodes, two of them seeing DOWN.
        let mut five = nodes;
        five[0].fresh = true;
        five.push(verdict(4, "dc", "UP", true));
        five.push(verdict(5, "dc", "UP", true));
        let t = target(&[("dc", "UP")], &["dc"], five);
        assert_eq!(note(&t), "nodes 1, 3 in dc cannot reach app");
        // The table carries it.
        let s = pb::StatusResponse {
            targets: vec![target(
                &[("dc", "UP")],
                &["dc"],
                vec![verdict(3, "dc", "DOWN", true)],
            )],
            ..pb::StatusResponse::default()
        };
        assert!(status_table(&s).contains("node 3 in dc cannot reach app"));
        // Nobody to name: never a sentence without a subject.
        let t = target(&[("dc", "UP")], &[], vec![]);
        assert_eq!(note(&t), "a minority sees app DOWN");
    }
}
