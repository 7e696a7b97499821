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
    stale_line(&pb::Freshness {
        node_id: c.node_id,
        node_zone: c.node_zone,
        stale: s.stale,
        stale_reason: s.stale_reason.clone(),
        staleness_ms: s.staleness_ms,
        read_index: s.read_index,
    })
}

/// [`staleness`] for the answers that carry a [`pb::Freshness`].
pub fn stale_line(f: &pb::Freshness) -> String {
    let heard = match age_ms(f.staleness_ms) {
        Some(a) => format!("it last heard from a leader {a} ago"),
        None => "it never heard from a leader".to_owned(),
    };
    let reason = if f.stale_reason.is_empty() {
        "not confirmed with the leader"
    } else {
        f.stale_reason.as_str()
    };
    printable(&format!(
        "node {} ({}) answered from its own view: {reason}; {heard}",
        f.node_id, f.node_zone
    ))
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
        "incidents": s.incidents.iter().map(|i| incident_value(i, false)).collect::<Vec<_>>(),
        "maintenance": maintenance_value(&s.maintenance.clone().unwrap_or_default()),
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

/// A line as a terminal may show it (see [`printable`]), then a newline.
fn line(text: &str) -> String {
    let mut l = printable(text);
    l.push('\n');
    l
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
    out.push_str(&line(&format!(
        "Answered by node {} ({}): applied {}, {lag} behind its commit index, {contact}; {confirmed}",
        c.node_id, c.node_zone, c.applied_index
    )));
    out.push_str(&members_table(&c.members));
    let total: u64 = s.counts.values().fold(0, |a, n| a.saturating_add(*n));
    if total == 0 && s.targets.is_empty() {
        out.push_str("No targets observed yet.\n");
    } else {
        out.push_str(&line(counts_line(s).trim_end_matches('\n')));
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
    if let Some(m) = s.maintenance.as_ref().filter(|m| m.on) {
        out.push_str(&maintenance_line(m));
    }
    for i in &s.incidents {
        out.push_str(&line(&format!(
            "Incident {}: {}{} {}, opened {}{} (faxictl incident show {})",
            i.id,
            i.target,
            if i.drill { " (drill)" } else { "" },
            i.phase,
            ago(unix(i.opened_ms)),
            match step_cell(i).as_str() {
                "-" => String::new(),
                step => format!(", step {step}"),
            },
            i.id
        )));
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
    for i in &now.incidents {
        match prev.incidents.iter().find(|p| p.id == i.id) {
            None => out.push_str(&line(&format!(
                "{stamp} incident {} opened: {}{} {}",
                i.id,
                i.target,
                if i.drill { " (drill)" } else { "" },
                i.phase
            ))),
            Some(p) if p.phase != i.phase => out.push_str(&line(&format!(
                "{stamp} incident {} {}: {} -> {}",
                i.id, i.target, p.phase, i.phase
            ))),
            Some(_) => {}
        }
    }
    for p in &prev.incidents {
        if !now.incidents.iter().any(|i| i.id == p.id) {
            out.push_str(&line(&format!(
                "{stamp} incident {} {}: finished",
                p.id, p.target
            )));
        }
    }
    let (pm_on, nm_on) = (
        prev.maintenance.as_ref().is_some_and(|m| m.on),
        now.maintenance.as_ref().is_some_and(|m| m.on),
    );
    if pm_on != nm_on {
        match now.maintenance.as_ref().filter(|m| m.on) {
            Some(m) => out.push_str(&format!("{stamp} {}", maintenance_line(m))),
            None => out.push_str(&format!("{stamp} maintenance off\n")),
        }
    }
    for t in &now.targets {
        let before = prev.targets.iter().find(|p| p.name == t.name);
        let changed = before.is_none_or(|b| b.state != t.state || b.zones != t.zones);
        if changed {
            let from = before.map_or("-", |b| b.state.as_str());
            let n = note(t);
            out.push_str(&line(&format!(
                "{stamp} {} {from} -> {} [{}]{}",
                t.name,
                t.state,
                zones_cell(t),
                if n.is_empty() {
                    String::new()
                } else {
                    format!(" {n}")
                }
            )));
        }
    }
    out
}

/// A node's Unix milliseconds (never negative on the wire) as the
/// printers take them.
fn unix(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

/// A length of time in milliseconds: `850 ms`, `12.3 s`, `3m12s`.
fn took(ms: u64) -> String {
    age_ms(unix(ms)).unwrap_or_else(|| "-".into())
}

/// Milliseconds from `from_ms` (a node's Unix time) to now, by this
/// side's clock (0 when `from_ms` is ahead).
fn since(from_ms: u64) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    now.saturating_sub(from_ms)
}

fn null_if_zero(n: u64) -> Value {
    if n == 0 { Value::Null } else { json!(n) }
}

fn null_if_empty(s: &str) -> Value {
    if s.is_empty() {
        Value::Null
    } else {
        Value::String(s.to_owned())
    }
}

/// An incident as JSON (stable snake_case fields); the timeline when
/// asked.
fn incident_value(i: &pb::Incident, timeline: bool) -> Value {
    let resolved = i.resolved_ms != 0;
    let mut v = json!({
        "id": i.id,
        "target": i.target,
        "drill": i.drill,
        "phase": i.phase,
        "finished": i.finished,
        "opened": rfc3339(unix(i.opened_ms)),
        "opened_ms": i.opened_ms,
        "detect_ms": i.detect_ms,
        "recover_ms": if resolved { json!(i.recover_ms) } else { Value::Null },
        "resolved": if resolved { rfc3339(unix(i.resolved_ms)) } else { Value::Null },
        "resolved_ms": null_if_zero(i.resolved_ms),
        "rto_ms": null_if_zero(i.rto_ms),
        "zones": i.zones,
        "nodes": i.nodes,
        "cause": null_if_zero(i.cause),
        "joined": i.joined,
        "attempts": i.attempts,
        "events": i.events,
        "step": i.step.as_ref().map_or(Value::Null, |s| json!({
            "index": s.index,
            "of": s.of,
            "description": s.description,
            "plan": s.plan,
            "needs_approval": s.needs_approval,
            "approved_until": if s.approved_until_ms == 0 { Value::Null } else { rfc3339(unix(s.approved_until_ms)) },
            "is_finally": s.is_finally,
        })),
        "pending": i.pending.as_ref().map_or(Value::Null, |p| json!({
            "term": p.term,
            "index": p.index,
            "step": p.step,
            "by": p.by,
            "at": rfc3339(unix(p.at_ms)),
        })),
    });
    if timeline && let Value::Object(m) = &mut v {
        m.insert(
            "timeline".into(),
            i.timeline
                .iter()
                .map(|e| {
                    json!({
                        "at": rfc3339(unix(e.at_ms)),
                        "at_ms": e.at_ms,
                        "kind": e.kind,
                        "step": null_if_zero(u64::from(e.step)),
                        "text": e.text,
                    })
                })
                .collect::<Vec<_>>()
                .into(),
        );
    }
    v
}

fn maintenance_value(m: &pb::MaintenanceState) -> Value {
    json!({
        "on": m.on,
        "until": if m.until_ms == 0 { Value::Null } else { rfc3339(unix(m.until_ms)) },
        "until_ms": null_if_zero(m.until_ms),
        "reason": null_if_empty(&m.reason),
        "by": null_if_empty(&m.by),
    })
}

/// `Maintenance ON until ...` in a line.
fn maintenance_line(m: &pb::MaintenanceState) -> String {
    let until = match rfc3339(unix(m.until_ms)) {
        Value::String(t) => t,
        _ => "-".into(),
    };
    let left = i64::try_from(m.until_ms)
        .ok()
        .and_then(unix_time)
        .and_then(|t| t.duration_since(SystemTime::now()).ok())
        .map_or_else(String::new, |d| format!(" (in {})", span(d.as_secs())));
    line(&format!(
        "MAINTENANCE ON until {until}{left}: {:?}, by {}. Recovery is paused; detection goes on.",
        m.reason, m.by
    ))
}

/// Recovery so far against the RTO: `4.2 s / RTO 15m0s`, `open 3m12s / RTO
/// 15m0s`, `OVER` past it.
fn recover_cell(i: &pb::Incident) -> String {
    let (ms, text) = if i.resolved_ms != 0 {
        (i.recover_ms, took(i.recover_ms))
    } else {
        let open = since(i.opened_ms);
        (open, format!("open {}", took(open)))
    };
    if i.rto_ms == 0 {
        text
    } else {
        format!(
            "{text} / RTO {}{}",
            took(i.rto_ms),
            if ms > i.rto_ms { " OVER" } else { "" }
        )
    }
}

fn cause_cell(i: &pb::Incident) -> String {
    let mut parts = Vec::new();
    if i.cause != 0 {
        parts.push(format!("part of {}", i.cause));
    }
    if !i.joined.is_empty() {
        parts.push(format!("+ {}", i.joined.join(", ")));
    }
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join("; ")
    }
}

/// The step an attempt is at: `2/5 docker.restart faxi-postgres`, with
/// whether it waits for approval and its fencing token while it runs.
fn step_cell(i: &pb::Incident) -> String {
    let Some(s) = &i.step else {
        return "-".into();
    };
    let mut out = format!("{}/{} {}", s.index, s.of, s.description);
    if s.is_finally {
        out.push_str(" (finally)");
    }
    if i.phase == "AWAITING_APPROVAL" {
        out.push_str(" [needs approval]");
    } else if s.approved_until_ms != 0 {
        out.push_str(" [approved]");
    }
    if let Some(p) = &i.pending {
        out.push_str(&format!(" (fence {}:{})", p.term, p.index));
    }
    out
}

/// `incidents` as a table, with maintenance when it is on.
pub fn incidents_table(r: &pb::IncidentsResponse, all: bool) -> String {
    let mut out = String::new();
    if let Some(f) = r.freshness.as_ref().filter(|f| f.stale) {
        out.push_str(&format!("STALE ANSWER: {}\n", stale_line(f)));
    }
    if let Some(m) = r.maintenance.as_ref().filter(|m| m.on) {
        out.push_str(&maintenance_line(m));
    }
    if r.incidents.is_empty() {
        out.push_str(if all {
            "No incidents.\n"
        } else {
            "No open incidents (--all lists the finished ones too).\n"
        });
        return out;
    }
    let rows: Vec<Vec<String>> = r
        .incidents
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                format!("{}{}", i.target, if i.drill { " (drill)" } else { "" }),
                i.phase.clone(),
                ago(unix(i.opened_ms)),
                if i.drill {
                    "-".into()
                } else {
                    took(i.detect_ms)
                },
                recover_cell(i),
                cause_cell(i),
                step_cell(i),
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "ID",
            "Target",
            "Phase",
            "Opened",
            "Detect",
            "Recover / RTO",
            "Cause / Joined",
            "Step",
        ],
        &rows,
    ));
    out
}

/// `incidents --output json`: `{"incidents": [...], "maintenance": {...},
/// "stale": bool}`.
pub fn incidents_json(r: &pb::IncidentsResponse) -> String {
    let v = json!({
        "incidents": r.incidents.iter().map(|i| incident_value(i, false)).collect::<Vec<_>>(),
        "maintenance": maintenance_value(&r.maintenance.clone().unwrap_or_default()),
        "stale": r.freshness.as_ref().is_some_and(|f| f.stale),
    });
    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// `incident show`: the incident, then its timeline.
pub fn incident_show(r: &pb::IncidentResponse) -> String {
    let mut out = String::new();
    if let Some(f) = r.freshness.as_ref().filter(|f| f.stale) {
        out.push_str(&format!("STALE ANSWER: {}\n", stale_line(f)));
    }
    let Some(i) = &r.incident else {
        out.push_str("No incident in the answer.\n");
        return out;
    };
    let time = |ms: u64| match rfc3339(unix(ms)) {
        Value::String(t) => t,
        _ => "-".into(),
    };
    let mut lines = vec![format!(
        "Incident {}: {}{}{}",
        i.id,
        i.target,
        if i.drill { " (drill)" } else { "" },
        if i.finished { ", finished" } else { "" }
    )];
    lines.push(format!("  Phase:      {}", i.phase));
    lines.push(format!(
        "  Opened:     {} ({})",
        time(i.opened_ms),
        ago(unix(i.opened_ms))
    ));
    if !i.drill {
        let nodes: Vec<String> = i.nodes.iter().map(u64::to_string).collect();
        lines.push(format!(
            "  Detected:   in {}, DOWN in {} (nodes {})",
            took(i.detect_ms),
            if i.zones.is_empty() {
                "-".into()
            } else {
                i.zones.join(", ")
            },
            if nodes.is_empty() {
                "-".into()
            } else {
                nodes.join(", ")
            }
        ));
    }
    lines.push(format!(
        "  Recovered:  {}",
        if i.resolved_ms != 0 {
            format!("at {}, {}", time(i.resolved_ms), recover_cell(i))
        } else {
            format!("not yet: {}", recover_cell(i))
        }
    ));
    if i.rto_ms == 0 {
        lines.push("  RTO:        none known".into());
    }
    if i.cause != 0 {
        lines.push(format!(
            "  Cause:      incident {} (this target depends on it)",
            i.cause
        ));
    }
    if !i.joined.is_empty() {
        lines.push(format!("  Joined:     {}", i.joined.join(", ")));
    }
    lines.push(format!("  Attempts:   {}", i.attempts));
    if let Some(s) = &i.step {
        lines.push(format!("  Step:       {} (plan {})", step_cell(i), s.plan));
        if s.approved_until_ms != 0 {
            lines.push(format!("  Approved:   until {}", time(s.approved_until_ms)));
        }
    }
    if let Some(p) = &i.pending {
        lines.push(format!(
            "  Fence:      step {}: term {}, index {}, by node {} at {} (outcome not recorded yet)",
            p.step,
            p.term,
            p.index,
            p.by,
            time(p.at_ms)
        ));
    }
    for l in lines {
        out.push_str(&printable(&l));
        out.push('\n');
    }
    let rows: Vec<Vec<String>> = i
        .timeline
        .iter()
        .map(|e| {
            vec![
                time(e.at_ms),
                if e.step == 0 {
                    "-".into()
                } else {
                    e.step.to_string()
                },
                e.kind.clone(),
                e.text.clone(),
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("No events.\n");
    } else {
        out.push_str(&table(&["Time", "Step", "Kind", "Text"], &rows));
    }
    out
}

/// `incident show --output json`: the incident with its timeline.
pub fn incident_json(r: &pb::IncidentResponse) -> String {
    let v = match &r.incident {
        Some(i) => incident_value(i, true),
        None => Value::Null,
    };
    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// `rto`: the runbook's Recovery Time Tracking table, drills apart.
pub fn rto_table(r: &pb::RtoResponse) -> String {
    let mut out = String::new();
    if let Some(f) = r.freshness.as_ref().filter(|f| f.stale) {
        out.push_str(&format!("STALE ANSWER: {}\n", stale_line(f)));
    }
    if r.targets.is_empty() {
        out.push_str("No targets observed yet.\n");
        return out;
    }
    let actual = |ms: u64, n: u64, rto: u64| {
        if n == 0 {
            "-".to_owned()
        } else if rto != 0 && ms > rto {
            format!("{} OVER", took(ms))
        } else {
            took(ms)
        }
    };
    let rows: Vec<Vec<String>> = r
        .targets
        .iter()
        .map(|t| {
            vec![
                t.target.clone(),
                if t.rto_ms == 0 {
                    "-".into()
                } else {
                    took(t.rto_ms)
                },
                actual(t.last_ms, t.count, t.rto_ms),
                actual(t.p95_ms, t.count, t.rto_ms),
                t.count.to_string(),
                actual(t.drill_last_ms, t.drill_count, t.rto_ms),
                actual(t.drill_p95_ms, t.drill_count, t.rto_ms),
                t.drill_count.to_string(),
                if t.open_incident == 0 {
                    "-".into()
                } else {
                    t.open_incident.to_string()
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "Component",
            "Target RTO",
            "Last actual",
            "p95 actual",
            "Incidents",
            "Drill last",
            "Drill p95",
            "Drills",
            "Open incident",
        ],
        &rows,
    ));
    out
}

/// `rto --output json`: `{"targets": [{target, rto_ms, last_ms, p95_ms,
/// count, drill_last_ms, drill_p95_ms, drill_count, open_incident,
/// over_rto}]}`, times null where nothing was measured.
pub fn rto_json(r: &pb::RtoResponse) -> String {
    let targets: Vec<Value> = r
        .targets
        .iter()
        .map(|t| {
            let measured = |ms: u64, n: u64| if n == 0 { Value::Null } else { json!(ms) };
            json!({
                "target": t.target,
                "rto_ms": null_if_zero(t.rto_ms),
                "last_ms": measured(t.last_ms, t.count),
                "p95_ms": measured(t.p95_ms, t.count),
                "count": t.count,
                "drill_last_ms": measured(t.drill_last_ms, t.drill_count),
                "drill_p95_ms": measured(t.drill_p95_ms, t.drill_count),
                "drill_count": t.drill_count,
                "open_incident": null_if_zero(t.open_incident),
                "over_rto": t.rto_ms != 0 && t.count != 0 && t.p95_ms > t.rto_ms,
            })
        })
        .collect();
    let v = json!({
        "targets": targets,
        "stale": r.freshness.as_ref().is_some_and(|f| f.stale),
    });
    format!("{}\n", serde_json::to_string_pretty(&v).unwrap_or_default())
}

/// The answer to `approve`.
pub fn approved(json: bool, id: u64, skip: bool, r: &pb::ApproveResponse) -> String {
    if json {
        let v = json!({
            "id": id,
            "skipped": skip,
            "until": if r.until_ms == 0 { Value::Null } else { rfc3339(unix(r.until_ms)) },
            "incident": r.incident.as_ref().map_or(Value::Null, |i| incident_value(i, false)),
        });
        return format!("{v}\n");
    }
    let what = if skip {
        format!("incident {id}: step skipped")
    } else {
        let until = match rfc3339(unix(r.until_ms)) {
            Value::String(t) => t,
            _ => "-".into(),
        };
        format!("incident {id}: approved until {until}")
    };
    let now = r.incident.as_ref().map_or_else(String::new, |i| {
        format!(
            "; now {}{}",
            i.phase,
            match step_cell(i).as_str() {
                "-" => String::new(),
                s => format!(", step {s}"),
            }
        )
    });
    line(&format!("{what}{now}"))
}

/// The answer to `maintenance` (shown, on or off).
pub fn maintenance(json: bool, m: &pb::MaintenanceState) -> String {
    if json {
        return format!("{}\n", maintenance_value(m));
    }
    if m.on {
        return maintenance_line(m);
    }
    if m.until_ms == 0 {
        return "Maintenance is off.\n".into();
    }
    line(&format!(
        "Maintenance is off (the last one, {:?} by {}, ended {}).",
        m.reason,
        m.by,
        ago(unix(m.until_ms))
    ))
}

/// The answer to `drill`.
pub fn drilled(json: bool, r: &pb::DrillResponse) -> String {
    if json {
        let v = json!({
            "incident": r.incident.as_ref().map_or(Value::Null, |i| incident_value(i, false)),
        });
        return format!("{v}\n");
    }
    match &r.incident {
        Some(i) => line(&format!(
            "drill of {} opened as incident {} ({}; faxictl incident show {})",
            i.target, i.id, i.phase, i.id
        )),
        None => "drill asked; its incident is not in the answer (faxictl incidents)\n".into(),
    }
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
            incidents: vec![hostile_incident(time)],
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
            maintenance: Some(pb::MaintenanceState {
                on: true,
                until_ms: time.unsigned_abs(),
                reason: "\u{1b}[2J".into(),
                by: String::new(),
            }),
        }
    }

    /// An incident holding the most hostile values a node could send.
    fn hostile_incident(time: i64) -> pb::Incident {
        let t = time.unsigned_abs();
        pb::Incident {
            id: u64::MAX,
            target: "\u{1b}]0;x\u{7}".into(),
            phase: "SIDEWAYS".into(),
            opened_ms: t,
            drill: true,
            detect_ms: u64::MAX,
            recover_ms: u64::MAX,
            rto_ms: 1,
            zones: vec!["z\n".into()],
            nodes: vec![u64::MAX],
            cause: u64::MAX,
            joined: vec![String::new()],
            attempts: u32::MAX,
            resolved_ms: t,
            finished: true,
            timeline: vec![pb::IncidentEvent {
                at_ms: t,
                kind: "\r".into(),
                step: u32::MAX,
                text: "é".repeat(2000),
            }],
            events: u32::MAX,
            step: Some(pb::IncidentStep {
                index: u32::MAX,
                of: 0,
                description: "\u{1b}[31m".into(),
                needs_approval: true,
                approved_until_ms: t,
                is_finally: true,
                plan: String::new(),
            }),
            pending: Some(pb::Fence {
                term: u64::MAX,
                index: u64::MAX,
                step: u32::MAX,
                by: 0,
                at_ms: t,
            }),
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
    fn incident_printers_take_any_value_and_never_print_a_control_character() {
        let raw = |text: &str| {
            let bad: Vec<char> = text
                .chars()
                .filter(|c| c.is_control() && *c != '\n')
                .collect();
            assert!(bad.is_empty(), "{bad:?} in {text}");
        };
        let parses = |text: &str| {
            let _: Value = serde_json::from_str(text).unwrap();
        };
        for time in TIMES {
            let i = hostile_incident(time);
            let fresh = pb::Freshness {
                node_id: u64::MAX,
                node_zone: "\u{1b}[1m".into(),
                stale: true,
                stale_reason: "\u{7}".into(),
                staleness_ms: time,
                read_index: 0,
            };
            let m = hostile(time, 0, false).maintenance.unwrap();
            let list = pb::IncidentsResponse {
                incidents: vec![i.clone()],
                maintenance: Some(m.clone()),
                freshness: Some(fresh.clone()),
            };
            let one = pb::IncidentResponse {
                incident: Some(i.clone()),
                freshness: Some(fresh.clone()),
            };
            let rto = pb::RtoResponse {
                targets: vec![pb::RtoRow {
                    target: "\u{1b}x".into(),
                    rto_ms: 1,
                    last_ms: u64::MAX,
                    p95_ms: u64::MAX,
                    count: u64::MAX,
                    drill_last_ms: u64::MAX,
                    drill_p95_ms: 0,
                    drill_count: 1,
                    open_incident: u64::MAX,
                }],
                freshness: Some(fresh),
            };
            let approve = pb::ApproveResponse {
                incident: Some(i.clone()),
                until_ms: time.unsigned_abs(),
            };
            let drill = pb::DrillResponse {
                incident: Some(i.clone()),
            };
            for all in [false, true] {
                raw(&incidents_table(&list, all));
            }
            raw(&incident_show(&one));
            raw(&rto_table(&rto));
            for skip in [false, true] {
                raw(&approved(false, u64::MAX, skip, &approve));
                parses(&approved(true, 0, skip, &approve));
            }
            let mut off = m.clone();
            off.on = false;
            for m in [&m, &off, &pb::MaintenanceState::default()] {
                raw(&maintenance(false, m));
                parses(&maintenance(true, m));
            }
            raw(&drilled(false, &drill));
            parses(&drilled(true, &drill));
            parses(&incidents_json(&list));
            let j: Value = serde_json::from_str(&incident_json(&one)).unwrap();
            assert_eq!(j["timeline"].as_array().unwrap().len(), 1);
            parses(&rto_json(&rto));
            let s = hostile(time, 0, false);
            raw(&status_table(&s, Shown::All));
            let mut before = s.clone();
            before.incidents[0].phase = "OPEN".into();
            raw(&changes(Some(&before), &s));
            raw(&changes(Some(&s), &pb::StatusResponse::default()));
        }
        // Empty answers say so.
        assert!(
            incidents_table(&pb::IncidentsResponse::default(), false)
                .starts_with("No open incidents")
        );
        assert_eq!(
            incident_show(&pb::IncidentResponse::default()),
            "No incident in the answer.\n"
        );
        parses(&incident_json(&pb::IncidentResponse::default()));
        assert_eq!(
            rto_table(&pb::RtoResponse::default()),
            "No targets observed yet.\n"
        );
        parses(&rto_json(&pb::RtoResponse::default()));
        let _ = drilled(false, &pb::DrillResponse::default());
    }

    #[test]
    fn an_incident_row_compares_recovery_with_the_rto() {
        let mut i = pb::Incident {
            id: 7,
            target: "redis".into(),
            phase: "RESOLVED".into(),
            opened_ms: 1_700_000_000_000,
            resolved_ms: 1_700_000_004_200,
            recover_ms: 4_200,
            rto_ms: 900_000,
            ..pb::Incident::default()
        };
        assert_eq!(recover_cell(&i), "4.2 s / RTO 15m0s");
        i.recover_ms = 1_000_000;
        assert_eq!(recover_cell(&i), "16m40s / RTO 15m0s OVER");
        i.rto_ms = 0;
        assert_eq!(recover_cell(&i), "16m40s");
        // Open since long ago: over.
        i.resolved_ms = 0;
        i.rto_ms = 1_000;
        assert!(
            recover_cell(&i).starts_with("open "),
            "{}",
            recover_cell(&i)
        );
        assert!(recover_cell(&i).ends_with(" OVER"), "{}", recover_cell(&i));
        i.cause = 3;
        i.joined = vec!["app".into(), "worker".into()];
        assert_eq!(cause_cell(&i), "part of 3; + app, worker");
        i.phase = "AWAITING_APPROVAL".into();
        i.step = Some(pb::IncidentStep {
            index: 4,
            of: 6,
            description: "exec restore.sh".into(),
            needs_approval: true,
            ..pb::IncidentStep::default()
        });
        assert_eq!(step_cell(&i), "4/6 exec restore.sh [needs approval]");
        i.phase = "RECOVERING".into();
        i.pending = Some(pb::Fence {
            term: 3,
            index: 120,
            ..pb::Fence::default()
        });
        assert_eq!(step_cell(&i), "4/6 exec restore.sh (fence 3:120)");
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
