//! What faxictl prints: human tables and the JSON scripts rely on
//! (DESIGN.md §4: `cluster.*`, `targets[].*`, `incidents[]`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use faxi_proto::v1 as pb;
use serde_json::{Value, json};

/// The first instant humantime cannot print (year 10000).
const YEAR_10000_MS: i64 = 253_402_300_800_000;

/// A node's Unix-milliseconds time as a point in time, if it is one this
/// side can print: after 1970 and before year 10000 (a node may send any
/// value; none may make faxictl panic).
fn unix_time(unix_ms: i64) -> Option<SystemTime> {
    if unix_ms <= 0 || unix_ms >= YEAR_10000_MS {
        return None;
    }
    UNIX_EPOCH.checked_add(Duration::from_millis(unix_ms.unsigned_abs()))
}

fn rfc3339(unix_ms: i64) -> Value {
    match unix_time(unix_ms) {
        Some(t) => Value::String(humantime::format_rfc3339_millis(t).to_string()),
        None => Value::Null,
    }
}

/// A span of seconds, coarsely: `42s`, `3m12s`, `5h3m`, `2d4h`.
fn span(s: u64) -> String {
    if s < 60 {
        format!("{s}s")
    } else if s < 3600 {
        format!("{}m{}s", s / 60, s % 60)
    } else if s < 86400 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}d{}h", s / 86400, (s % 86400) / 3600)
    }
}

fn ago(unix_ms: i64) -> String {
    let Some(t) = unix_time(unix_ms) else {
        return "-".into();
    };
    match SystemTime::now().duration_since(t) {
        Ok(d) => format!("{} ago", span(d.as_secs())),
        Err(e) if e.duration() < Duration::from_secs(5) => "just now".into(),
        Err(e) => format!("in {} (clock ahead?)", span(e.duration().as_secs())),
    }
}

/// A node's millisecond age: `850 ms`, `12.3 s`, `3m12s`; `None` for a
/// negative value (never).
fn age_ms(ms: i64) -> Option<String> {
    let ms = u64::try_from(ms).ok()?;
    Some(if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        span(ms / 1000)
    })
}

/// Why and how stale an answer is, in a line: the answering node, the
/// reason, and when it last heard from a leader.
pub fn staleness(s: &pb::StatusResponse) -> String {
    let c = s.cluster.clone().unwrap_or_default();
    let heard = match age_ms(s.staleness_ms) {
        Some(a) => format!("it last heard from a leader {a} ago"),
        None => "it never heard from a leader".to_owned(),
    };
    let reason = if s.stale_reason.is_empty() {
        "not confirmed with the leader"
    } else {
        s.stale_reason.as_str()
    };
    format!(
        "node {} ({}) answered from its own view: {reason}; {heard}",
        c.node_id, c.node_zone
    )
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
                    "measured_at": rfc3339(n.measured_at_unix_ms),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut counts: Vec<(&String, &u64)> = s.counts.iter().collect();
    counts.sort();
    json!({
        "stale": s.stale,
        "staleness_ms": if s.staleness_ms < 0 { Value::Null } else { json!(s.staleness_ms) },
        "stale_reason": if s.stale { Value::String(s.stale_reason.clone()) } else { Value::Null },
        "counts": counts.into_iter().map(|(k, v)| (k.clone(), json!(v))).collect::<serde_json::Map<_, _>>(),
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

/// A cell as a terminal may show it: control characters (escape
/// sequences a probed server or a node could slip into an error) become
/// `\u{..}` text, never raw.
fn printable(cell: &str) -> String {
    if !cell.chars().any(char::is_control) {
        return cell.to_owned();
    }
    cell.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A boxed table, as `patronictl list` draws them.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| printable(c)).collect())
        .collect();
    let rows = rows.as_slice();
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

/// `audit` as a table, newest first.
pub fn audit_table(records: &[pb::AuditRecord]) -> String {
    if records.is_empty() {
        return "No operator request recorded yet.\n".into();
    }
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let at = i64::try_from(r.at_ms).unwrap_or(i64::MAX);
            vec![
                match rfc3339(at) {
                    Value::String(t) => t,
                    _ => "-".into(),
                },
                ago(at),
                r.by.clone(),
                r.action.clone(),
                r.recorded_by.to_string(),
            ]
        })
        .collect();
    table(&["When", "Ago", "By", "Request", "Leader"], &rows)
}

/// `audit` as JSON: `{"records": [{at, by, action, recorded_by}]}`.
pub fn audit_json(records: &[pb::AuditRecord]) -> String {
    let records: Vec<Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "at": rfc3339(i64::try_from(r.at_ms).unwrap_or(i64::MAX)),
                "by": r.by,
                "action": r.action,
                "recorded_by": r.recorded_by,
            })
        })
        .collect();
    format!("{}\n", serde_json::json!({ "records": records }))
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

/// Which targets a status answer holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Every target.
    All,
    /// Those not UP (the default table).
    NotUp,
    /// Those matching `--state` / `--name`.
    Filtered,
}

/// `Targets: 12 (UP 9, DOWN 1, SUSPECT 2)`, states in a fixed order.
fn counts_line(s: &pb::StatusResponse) -> String {
    let total: u64 = s.counts.values().fold(0, |a, n| a.saturating_add(*n));
    let mut parts = Vec::new();
    for st in ["UP", "DOWN", "SUSPECT", "STALE", "UNKNOWN"] {
        if let Some(n) = s.counts.get(st).filter(|n| **n > 0) {
            parts.push(format!("{st} {n}"));
        }
    }
    let mut other: Vec<(&String, &u64)> = s
        .counts
        .iter()
        .filter(|(k, n)| {
            **n > 0 && !["UP", "DOWN", "SUSPECT", "STALE", "UNKNOWN"].contains(&k.as_str())
        })
        .collect();
    other.sort();
    parts.extend(other.into_iter().map(|(k, n)| format!("{k} {n}")));
    if parts.is_empty() {
        format!("Targets: {total}\n")
    } else {
        format!("Targets: {total} ({})\n", parts.join(", "))
    }
}

/// `status` as tables: the cluster, counts per state, then the targets.
pub fn status_table(s: &pb::StatusResponse, shown: Shown) -> String {
    let c = s.cluster.clone().unwrap_or_default();
    let mut out = String::new();
    if s.stale {
        out.push_str(&format!("STALE ANSWER: {}\n", staleness(s)));
    }
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
    let contact = if c.leader != 0 && c.leader == c.node_id {
        "is the leader".to_owned()
    } else {
        match age_ms(c.leader_contact_ms) {
            Some(a) => format!("heard from a leader {a} ago"),
            None => "has not heard from a leader".to_owned(),
        }
    };
    let confirmed = if s.stale {
        "NOT confirmed with the leader"
    } else {
        "confirmed with the leader"
    };
    out.push_str(&format!(
        "Answered by node {} ({}): applied {}, {lag} behind its commit index, {contact}; {confirmed}\n",
        c.node_id, c.node_zone, c.applied_index
    ));
    out.push_str(&members_table(&c.members));
    let total: u64 = s.counts.values().fold(0, |a, n| a.saturating_add(*n));
    if total == 0 && s.targets.is_empty() {
        out.push_str("No targets observed yet.\n");
    } else {
        out.push_str(&counts_line(s));
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
        if !rows.is_empty() {
            out.push_str(&table(
                &["Target", "Kind", "State", "Since", "Zones", "Note"],
                &rows,
            ));
        }
        match shown {
            Shown::NotUp if rows.is_empty() => {
                out.push_str("Every target is UP (--all lists them).\n");
            }
            Shown::NotUp => out.push_str("Targets not UP only (--all lists every target).\n"),
            Shown::Filtered if rows.is_empty() => out.push_str("No target matches.\n"),
            Shown::Filtered | Shown::All => {}
        }
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
        return format!("{stamp} {}", status_table(now, Shown::All));
    };
    let mut out = String::new();
    if now.stale && !prev.stale {
        out.push_str(&format!("{stamp} STALE: {}\n", staleness(now)));
    } else if !now.stale && prev.stale {
        out.push_str(&format!("{stamp} confirmed with the leader again\n"));
    }
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
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    /// A status holding the most hostile values a node could send.
    fn hostile(time: i64, ms: i64, stale: bool) -> pb::StatusResponse {
        pb::StatusResponse {
            cluster: Some(pb::ClusterStatus {
                leader: u64::MAX,
                term: u64::MAX,
                commit_index: 0,
                node_id: u64::MAX,
                node_zone: "zone-\u{1b}[31m".into(),
                applied_index: u64::MAX,
                leader_contact_ms: ms,
                members: vec![pb::Member {
                    id: u64::MAX,
                    zone: String::new(),
                    addr: "é".repeat(300),
                    role: "?".into(),
                    reachable: false,
                }],
                cluster_id: "\u{0}x".into(),
            }),
            targets: vec![pb::TargetStatus {
                name: "t".into(),
                kind: String::new(),
                state: "DOWN".into(),
                since_unix_ms: time,
                zones: [("z".to_owned(), "SIDEWAYS".to_owned())].into(),
                down_zones: vec!["z".into()],
                nodes: vec![pb::NodeVerdict {
                    id: 0,
                    zone: String::new(),
                    verdict: String::new(),
                    latency_ms: f64::NAN,
                    error: "x".into(),
                    fresh: true,
                    at_unix_ms: time,
                    measured_at_unix_ms: time,
                }],
            }],
            incidents: vec![pb::Incident {
                id: String::new(),
                target: String::new(),
                state: String::new(),
                opened_unix_ms: time,
            }],
            counts: [
                ("UP".to_owned(), u64::MAX),
                ("DOWN".to_owned(), u64::MAX),
                ("WEIRD".to_owned(), 1),
            ]
            .into(),
            stale,
            staleness_ms: ms,
            stale_reason: String::new(),
            read_index: u64::MAX,
        }
    }

    const TIMES: [i64; 9] = [
        i64::MIN,
        -1,
        0,
        1,
        1_700_000_000_000,
        YEAR_10000_MS - 1,
        YEAR_10000_MS,
        i64::MAX - 1,
        i64::MAX,
    ];

    #[test]
    fn no_value_a_node_may_send_makes_the_printers_panic() {
        for time in TIMES {
            for ms in [i64::MIN, -1, 0, 999, 1_000, 59_999, 86_400_000, i64::MAX] {
                for stale in [false, true] {
                    let s = hostile(time, ms, stale);
                    for shown in [Shown::All, Shown::NotUp, Shown::Filtered] {
                        let _ = status_table(&s, shown);
                    }
                    let j: Value = serde_json::from_str(&status_json(&s)).unwrap();
                    assert!(
                        j["targets"][0]["since"].is_string() || j["targets"][0]["since"].is_null()
                    );
                    let _ = status_json_line(&s);
                    let _ = staleness(&s);
                    let prev = hostile(time, ms, !stale);
                    let _ = changes(Some(&prev), &s);
                    let _ = changes(None, &s);
                    let _ = changes(Some(&pb::StatusResponse::default()), &s);
                }
            }
        }
        let empty = pb::StatusResponse::default();
        let _ = status_table(&empty, Shown::NotUp);
        let _ = status_json(&empty);
        let _ = changes(Some(&empty), &empty);
        let r = pb::MemberChangeResponse {
            index: u64::MAX,
            members: hostile(0, 0, false).cluster.unwrap().members,
        };
        let _ = member_change(false, u64::MAX, "added", &r);
        let _ = member_change(true, 0, "removed", &r);
    }

    #[test]
    fn times_print_only_when_they_are_real() {
        assert_eq!(rfc3339(0), Value::Null);
        assert_eq!(rfc3339(-5), Value::Null);
        assert_eq!(rfc3339(i64::MAX), Value::Null);
        assert_eq!(rfc3339(YEAR_10000_MS), Value::Null);
        assert_eq!(
            rfc3339(1_700_000_000_123),
            Value::String("2023-11-14T22:13:20.123Z".into())
        );
        assert_eq!(ago(-1), "-");
        assert_eq!(ago(i64::MAX), "-");
        assert!(
            ago(YEAR_10000_MS - 1).starts_with("in "),
            "{}",
            ago(YEAR_10000_MS - 1)
        );
        assert_eq!(age_ms(-1), None);
        assert_eq!(age_ms(850).as_deref(), Some("850 ms"));
        assert_eq!(age_ms(12_345).as_deref(), Some("12.3 s"));
        assert_eq!(age_ms(192_000).as_deref(), Some("3m12s"));
        assert!(age_ms(i64::MAX).is_some());
    }

    #[test]
    fn a_stale_answer_says_whose_view_it_is_and_how_old() {
        let mut s = hostile(1_700_000_000_000, 12_345, true);
        s.stale_reason = "no leader".into();
        let c = s.cluster.as_mut().unwrap();
        c.node_id = 3;
        c.node_zone = "zone-c".into();
        let line = staleness(&s);
        assert_eq!(
            line,
            "node 3 (zone-c) answered from its own view: no leader; it last heard from a leader 12.3 s ago"
        );
        let t = status_table(&s, Shown::All);
        assert!(t.starts_with("STALE ANSWER: node 3 (zone-c)"), "{t}");
        assert!(t.contains("NOT confirmed"), "{t}");
        s.staleness_ms = -1;
        assert!(staleness(&s).ends_with("it never heard from a leader"));
        let j: Value = serde_json::from_str(&status_json(&s)).unwrap();
        assert_eq!(j["stale"], true);
        assert_eq!(j["staleness_ms"], Value::Null);
        assert_eq!(j["stale_reason"], "no leader");
        assert_eq!(j["counts"]["WEIRD"], 1);
    }

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
        assert!(status_table(&s, Shown::All).contains("node 3 in dc cannot reach app"));
        // Nobody to name: never a sentence without a subject.
        let t = target(&[("dc", "UP")], &[], vec![]);
        assert_eq!(note(&t), "a minority sees app DOWN");
    }
}
