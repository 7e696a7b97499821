//! The status page: a read-only HTML page at `GET /status` on
//! `metrics_listen`, for a person with a browser (faxictl's `status`,
//! `incidents` and `rto` on one page).
//!
//! It is built from the same applied state the gRPC reads answer from
//! (`Mesh::read`, the state machine's agreed states, incidents and RTO
//! table, `RaftInfo::role_of`), and its freshness is confirmed with the
//! leader as theirs is (`api::confirm_read`), so the page and faxictl
//! never disagree. Backup ages are this node's own last measurements (the
//! log carries verdicts, not ages).
//!
//! Bounded: the state is copied under the read lock (only the rows the
//! page will show), the lock is released, and the HTML is written on a
//! blocking thread; at most [`RENDERS`] pages are made at once (others get
//! 503); the page is cut at about [`MAX_PAGE_BYTES`], saying what was left
//! out. By default it lists only the targets that are not UP (at most
//! [`MAX_ROWS`]); `?all=1` lists every one.
//!
//! Every text from the state or a peer (target names, zones, addresses,
//! probe errors, incident events, maintenance reasons) passes through this
//! node's [`Redactor`] (the configured secrets) and is HTML-escaped. No
//! script, no external asset: the style is inline and the page refreshes
//! itself with a meta refresh every [`REFRESH_SECS`] seconds.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode};

use crate::config::{Check, Config, Redactor};
use crate::mesh::driver::{Mesh, Shared};
use crate::mesh::state::{MAX_STAMP_MS, NodeId, State};
use crate::recovery::incidents::{Event, Maintenance, RtoRow, StepNow};
use crate::scheduler::LocalView;

/// Seconds between the page's own refreshes.
pub const REFRESH_SECS: u32 = 5;
/// Pages made at once; a request past them is answered 503 at once.
pub const RENDERS: usize = 2;
/// About the largest page: rows past it are left out, and counted.
pub const MAX_PAGE_BYTES: usize = 4 << 20;
/// Most target rows by default (the targets that are not UP), most
/// backup rows and RTO rows by default.
pub const MAX_ROWS: usize = 500;
/// Most open incidents listed by default (`?all=1`: every one).
pub const MAX_INCIDENTS: usize = 100;
/// Most incidents whose timeline is shown (default, `?all=1`).
pub const MAX_TIMELINES: (usize, usize) = (10, 50);
/// Most events shown of a timeline by default (the latest); `?all=1`
/// shows every event an incident keeps.
pub const MAX_EVENTS_SHOWN: usize = 40;
/// Longest probe error shown in a target's row, in characters.
pub const MAX_ERROR_SHOWN: usize = 300;

/// Serves the page; cheap to clone.
#[derive(Debug, Clone)]
pub struct StatusPage {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    mesh: Mesh,
    node: Node,
    local: Arc<LocalView>,
    redactor: Redactor,
    renders: Arc<tokio::sync::Semaphore>,
}

/// What the page knows of the node that answers, from its config.
#[derive(Debug, Clone, Default)]
pub struct Node {
    /// Its id.
    pub id: NodeId,
    /// Its zone.
    pub zone: String,
    /// Target kinds (the log carries names only).
    pub kinds: BTreeMap<String, &'static str>,
    /// Backup targets and their RPO.
    pub backups: Vec<(String, Duration)>,
}

impl Node {
    /// From a node's config.
    pub fn from_config(config: &Config) -> Self {
        Self {
            id: config.node.id,
            zone: config.node.zone.clone(),
            kinds: config
                .targets
                .iter()
                .map(|t| (t.name.clone(), t.kind().as_str()))
                .collect(),
            backups: config
                .targets
                .iter()
                .filter_map(|t| match &t.check {
                    Check::Backup(b) => Some((t.name.clone(), b.rpo)),
                    _ => None,
                })
                .collect(),
        }
    }
}

impl StatusPage {
    /// The page of the node `node` describes.
    pub fn new(mesh: Mesh, node: Node, local: Arc<LocalView>, redactor: Redactor) -> Self {
        Self {
            inner: Arc::new(Inner {
                mesh,
                node,
                local,
                redactor,
                renders: Arc::new(tokio::sync::Semaphore::new(RENDERS)),
            }),
        }
    }

    /// The answer to `GET /status?query`.
    pub async fn respond(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let all = wants_all(query);
        let Ok(permit) = self.inner.renders.clone().try_acquire_owned() else {
            return plain(
                StatusCode::SERVICE_UNAVAILABLE,
                "busy: other status pages are being made; try again in a moment\n",
            );
        };
        let confirmed = crate::api::confirm_read(&self.inner.mesh, crate::api::READ_CONFIRM).await;
        let inner = self.inner.clone();
        let made = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let backups = backup_ages(&inner.node, &inner.local);
            let generated_ms = crate::recovery::executor::now_ms();
            let snap = {
                let s = inner.mesh.read();
                Snapshot::take(&s, &inner.node, all, generated_ms, confirmed, backups)
            };
            render(&snap, &inner.redactor)
        })
        .await;
        match made {
            Ok(page) => {
                let resp = Response::builder()
                    .status(StatusCode::OK)
                    .header(hyper::header::CONTENT_TYPE, "text/html; charset=utf-8")
                    .header(hyper::header::CACHE_CONTROL, "no-store")
                    .header("x-content-type-options", "nosniff")
                    .header(
                        "content-security-policy",
                        "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; \
                         form-action 'none'; frame-ancestors 'none'",
                    )
                    .body(Full::new(Bytes::from(page)));
                resp.unwrap_or_else(|_| plain(StatusCode::INTERNAL_SERVER_ERROR, "error\n"))
            }
            Err(_) => plain(
                StatusCode::INTERNAL_SERVER_ERROR,
                "making the status page failed\n",
            ),
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static("1"),
        );
    }
    r
}

/// Whether the query asks for every row: `all=1` (or `all=true`, `all`).
pub fn wants_all(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&')
            .any(|kv| matches!(kv, "all" | "all=1" | "all=true" | "all=yes"))
    })
}

/// Each backup target's age as this node last measured it.
fn backup_ages(node: &Node, local: &LocalView) -> Vec<BackupRow> {
    if node.backups.is_empty() {
        return Vec::new();
    }
    let views: BTreeMap<String, crate::scheduler::TargetView> = local
        .snapshot()
        .into_iter()
        .map(|v| (v.name.clone(), v))
        .collect();
    node.backups
        .iter()
        .map(|(name, rpo)| {
            let v = views.get(name);
            BackupRow {
                name: name.clone(),
                state: None,
                age: v.and_then(|v| v.backup_age),
                rpo: *rpo,
                probes: v.map_or(0, |v| v.probes),
                error: v.and_then(|v| v.error.clone()),
            }
        })
        .collect()
}

/// Everything the page shows, copied out of the state.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The node that answers.
    pub node: NodeId,
    /// Its zone.
    pub zone: String,
    /// When the page was made (this node's clock, Unix ms).
    pub generated_ms: u64,
    /// Every row asked for (`?all=1`).
    pub all: bool,
    /// The known leader (0: none).
    pub leader: NodeId,
    /// Raft term.
    pub term: u64,
    /// Commit index known here.
    pub commit: u64,
    /// Index applied here.
    pub applied: u64,
    /// Since a leader was last heard (zero on the leader; `None`: never).
    pub leader_contact: Option<Duration>,
    /// The read index the leader confirmed (0 when it did not).
    pub read_index: u64,
    /// Why the leader did not confirm this node's view (`None`: it did).
    pub stale: Option<String>,
    /// Members: id, zone, address, role, reachable.
    pub members: Vec<MemberRow>,
    /// Targets per agreed state, every target counted.
    pub counts: BTreeMap<State, u64>,
    /// Each zone's verdicts, counted per state.
    pub zones: Vec<(String, BTreeMap<State, u64>)>,
    /// The rows shown.
    pub targets: Vec<TargetRow>,
    /// Targets not shown because they are UP (default view).
    pub targets_up_hidden: u64,
    /// Targets not shown because of [`MAX_ROWS`].
    pub targets_cut: u64,
    /// Open incidents shown.
    pub incidents: Vec<IncidentRow>,
    /// Open incidents not shown.
    pub incidents_cut: u64,
    /// Maintenance, while on.
    pub maintenance: Option<Maintenance>,
    /// The RTO table's rows shown.
    pub rto: Vec<RtoRow>,
    /// RTO rows not shown.
    pub rto_cut: u64,
    /// Backup targets: age against the RPO.
    pub backups: Vec<BackupRow>,
    /// Backup rows not shown.
    pub backups_cut: u64,
}

/// A member's row.
#[derive(Debug, Clone, Default)]
pub struct MemberRow {
    /// Its id.
    pub id: NodeId,
    /// Its zone.
    pub zone: String,
    /// Its address.
    pub addr: String,
    /// Its role as the answering node sees it.
    pub role: &'static str,
    /// Whether the answering node's last message to it got through.
    pub reachable: bool,
}

/// A target's row.
#[derive(Debug, Clone)]
pub struct TargetRow {
    /// The target.
    pub name: String,
    /// Its kind (from this node's config; empty when it has none).
    pub kind: &'static str,
    /// Its agreed state.
    pub state: State,
    /// Log time of the last change of state.
    pub since_ms: u64,
    /// Each zone's verdict.
    pub zones: Vec<(String, State)>,
    /// Who cannot reach it (SUSPECT, DOWN), as faxictl words it.
    pub note: String,
    /// A fresh probe error: the node, its zone and the text.
    pub error: Option<(NodeId, String, String)>,
}

/// An open incident's row, with its timeline when shown.
#[derive(Debug, Clone, Default)]
pub struct IncidentRow {
    /// Its id.
    pub id: u64,
    /// The target.
    pub target: String,
    /// A drill.
    pub drill: bool,
    /// Its phase, upper-case.
    pub phase: &'static str,
    /// When it opened (log time).
    pub opened_ms: u64,
    /// The mesh's share of detection.
    pub detect_ms: u64,
    /// The target's RTO (0: none).
    pub rto_ms: u64,
    /// Zones that saw it down.
    pub zones: Vec<String>,
    /// The incident it joined.
    pub cause: Option<u64>,
    /// Targets that joined it.
    pub joined: Vec<String>,
    /// Attempts begun.
    pub attempts: u32,
    /// The step its attempt is at.
    pub step: Option<StepNow>,
    /// The latest events shown, in order (empty when not shown).
    pub timeline: Vec<Event>,
    /// Events it keeps.
    pub events: usize,
    /// Whether its timeline is shown.
    pub timeline_shown: bool,
}

/// A backup target's row.
#[derive(Debug, Clone)]
pub struct BackupRow {
    /// The target.
    pub name: String,
    /// Its agreed state.
    pub state: Option<State>,
    /// The newest backup's age at this node's last probe.
    pub age: Option<Duration>,
    /// Its recovery point objective.
    pub rpo: Duration,
    /// Probes this node ran.
    pub probes: u64,
    /// This node's last probe error.
    pub error: Option<String>,
}

/// States in the order the page counts them.
const STATES: [State; 5] = [
    State::Up,
    State::Down,
    State::Suspect,
    State::Stale,
    State::Unknown,
];

impl Snapshot {
    /// Copies what the page shows out of the applied state. Called under
    /// the read lock: it copies only the rows the page will show.
    pub fn take(
        s: &Shared,
        node: &Node,
        all: bool,
        generated_ms: u64,
        confirmed: Result<u64, String>,
        mut backups: Vec<BackupRow>,
    ) -> Snapshot {
        let info = &s.info;
        let sm = &s.sm;
        let members: Vec<MemberRow> = sm
            .members()
            .iter()
            .map(|(id, m)| MemberRow {
                id: *id,
                zone: m.zone.clone(),
                addr: m.addr.clone(),
                role: info.role_of(*id),
                reachable: info.reaches(*id),
            })
            .collect();
        let mut zone_names: Vec<String> = members.iter().map(|m| m.zone.clone()).collect();
        zone_names.sort();
        zone_names.dedup();
        let mut zones: Vec<(String, BTreeMap<State, u64>)> = zone_names
            .into_iter()
            .map(|z| (z, BTreeMap::new()))
            .collect();
        let now = sm.log_now_ms();
        let mut counts: BTreeMap<State, u64> = BTreeMap::new();
        let mut targets = Vec::new();
        let (mut up_hidden, mut cut) = (0u64, 0u64);
        // Not-UP rows first, then (all) the UP ones.
        let mut rows_up = Vec::new();
        for (name, a) in sm.agreed() {
            *counts.entry(a.state).or_default() += 1;
            for (z, c) in &mut zones {
                if let Some(v) = a.zones.get(z.as_str()) {
                    *c.entry(*v).or_default() += 1;
                }
            }
            if a.state == State::Up && !all {
                up_hidden += 1;
                continue;
            }
            if !all && targets.len() >= MAX_ROWS {
                cut += 1;
                continue;
            }
            let views = sm.views(name);
            let down_nodes: Vec<NodeId> = views
                .map(|vs| {
                    vs.iter()
                        .filter(|(_, v)| v.expires_at_ms >= now && v.verdict == State::Down)
                        .map(|(id, _)| *id)
                        .collect()
                })
                .unwrap_or_default();
            let note = match a.state {
                State::Suspect | State::Down if a.zones.len() == 1 && !down_nodes.is_empty() => {
                    let ids: Vec<String> = down_nodes.iter().map(u64::to_string).collect();
                    let zone = a
                        .zones
                        .iter()
                        .next()
                        .map(|(z, _)| z.clone())
                        .unwrap_or_default();
                    format!(
                        "{} {} in {zone} cannot reach {name}",
                        if ids.len() == 1 { "node" } else { "nodes" },
                        ids.join(", ")
                    )
                }
                State::Suspect | State::Down if !a.down_zones.is_empty() => {
                    format!("{} cannot reach {name}", a.down_zones.join(", "))
                }
                State::Suspect => format!("a minority sees {name} DOWN"),
                _ => String::new(),
            };
            let error = views.and_then(|vs| {
                vs.iter()
                    .filter(|(_, v)| v.expires_at_ms >= now)
                    .find_map(|(id, v)| {
                        let e = v.error.as_deref().filter(|e| !e.is_empty())?;
                        let zone = sm.members().get(id).map(|m| m.zone.clone());
                        Some((
                            *id,
                            zone.unwrap_or_default(),
                            clip_chars(e, MAX_ERROR_SHOWN),
                        ))
                    })
            });
            let row = TargetRow {
                name: name.clone(),
                kind: node.kinds.get(name).copied().unwrap_or(""),
                state: a.state,
                since_ms: a.since_ms,
                zones: a.zones.iter().map(|(z, v)| (z.clone(), *v)).collect(),
                note,
                error,
            };
            if a.state == State::Up {
                rows_up.push(row);
            } else {
                targets.push(row);
            }
        }
        targets.append(&mut rows_up);

        let rec = sm.recovery();
        let (max_incidents, max_timelines, max_events) = if all {
            (usize::MAX, MAX_TIMELINES.1, usize::MAX)
        } else {
            (MAX_INCIDENTS, MAX_TIMELINES.0, MAX_EVENTS_SHOWN)
        };
        let incidents: Vec<IncidentRow> = rec
            .open()
            .values()
            .take(max_incidents)
            .enumerate()
            .map(|(n, i)| {
                let shown = n < max_timelines;
                let skip = i.timeline.len().saturating_sub(max_events);
                IncidentRow {
                    id: i.id,
                    target: i.target.clone(),
                    drill: i.drill,
                    phase: i.phase.as_str(),
                    opened_ms: i.opened_ms,
                    detect_ms: i.detect_ms,
                    rto_ms: rec.catalog().get(&i.target).map_or(0, |t| t.rto_ms),
                    zones: i.zones.clone(),
                    cause: i.cause,
                    joined: i.joined.clone(),
                    attempts: i.attempts,
                    step: i.step_now(),
                    timeline: if shown {
                        i.timeline[skip..].to_vec()
                    } else {
                        Vec::new()
                    },
                    events: i.timeline.len(),
                    timeline_shown: shown,
                }
            })
            .collect();
        let incidents_cut = (rec.open().len() - incidents.len()) as u64;

        // The RTO table: faxictl's rows (every observed target) with
        // `?all=1`; by default the targets with an RTO, a plan or recovery
        // times, those with an open incident or times first.
        let mut rto = if all {
            rec.rto_table(sm.agreed().keys())
        } else {
            rec.rto_table(std::iter::empty::<&String>())
        };
        let mut rto_cut = 0;
        if !all {
            rto.sort_by_key(|r| {
                (
                    r.open_incident == 0 && r.count == 0 && r.drill_count == 0,
                    r.target.clone(),
                )
            });
            if rto.len() > MAX_ROWS {
                rto_cut = (rto.len() - MAX_ROWS) as u64;
                rto.truncate(MAX_ROWS);
            }
            rto.sort_by(|a, b| a.target.cmp(&b.target));
        }

        for b in &mut backups {
            b.state = sm.agreed().get(&b.name).map(|a| a.state);
        }
        let mut backups_cut = 0;
        if !all && backups.len() > MAX_ROWS {
            // The ones past their RPO (or unmeasured) first.
            backups.sort_by_key(|b| (b.age.is_some_and(|a| a <= b.rpo), b.name.clone()));
            backups_cut = (backups.len() - MAX_ROWS) as u64;
            backups.truncate(MAX_ROWS);
            backups.sort_by(|a, b| a.name.cmp(&b.name));
        }

        let maintenance = rec
            .maintenance()
            .filter(|m| m.until_ms > generated_ms)
            .cloned();
        Snapshot {
            node: node.id,
            zone: node.zone.clone(),
            generated_ms,
            all,
            leader: info.leader,
            term: info.term,
            commit: info.commit,
            applied: info.applied,
            leader_contact: s.leader_contact(),
            read_index: *confirmed.as_ref().unwrap_or(&0),
            stale: confirmed.err(),
            members,
            counts,
            zones,
            targets,
            targets_up_hidden: up_hidden,
            targets_cut: cut,
            incidents,
            incidents_cut,
            maintenance,
            rto,
            rto_cut,
            backups,
            backups_cut,
        }
    }
}

/// `text` with `&`, `<`, `>`, `"` and `'` as entities, and control
/// characters (but tab and newline) as U+FFFD: safe in element text and in
/// quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    escape_into(&mut out, text);
    out
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

/// The first `max` characters of `text`, with `…` when cut.
fn clip_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text.to_owned(),
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}

/// A span of seconds, coarsely: `42s`, `3m12s`, `5h3m`, `2d4h` (as faxictl).
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

/// A duration in ms: `850 ms`, `12.3 s`, `3m12s`.
fn took(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        span(ms / 1000)
    }
}

/// A Unix time in ms as RFC 3339 UTC (seconds), `-` when not a real time.
fn time(ms: u64) -> String {
    if ms == 0 || ms > MAX_STAMP_MS {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// How long before `now` the time `then` was.
fn ago(now: u64, then: u64) -> String {
    if then == 0 || then > MAX_STAMP_MS {
        return "-".into();
    }
    match now.checked_sub(then) {
        Some(d) => format!("{} ago", span(d / 1000)),
        None if then - now < 5000 => "just now".into(),
        None => format!("in {} (clock ahead?)", span((then - now) / 1000)),
    }
}

fn state_class(s: State) -> &'static str {
    match s {
        State::Up => "up",
        State::Down => "down",
        State::Suspect => "suspect",
        State::Stale => "stale",
        State::Unknown => "unknown",
    }
}

/// A state as a coloured badge that says its name.
fn badge(out: &mut String, s: State) {
    let _ = write!(
        out,
        "<span class=\"b {}\">{}</span>",
        state_class(s),
        s.as_str()
    );
}

fn phase_class(phase: &str) -> &'static str {
    match phase {
        "RESOLVED" => "up",
        "RECOVERING" | "JOINED" | "OPEN" => "suspect",
        _ => "down",
    }
}

const STYLE: &str = "body{font:14px/1.4 'DejaVu Sans',Verdana,sans-serif;margin:16px;color:#111;background:#fff}\
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:20px 0 6px;border-bottom:1px solid #ccc}\
h3{font-size:14px;margin:12px 0 4px}\
table{border-collapse:collapse;margin:4px 0}th,td{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}\
td{white-space:nowrap}td.w{white-space:normal;min-width:16em}\
th{background:#f0f0f0}td.n{text-align:right}\
.b{display:inline-block;padding:0 6px;border-radius:3px;font-weight:bold;font-size:12px;color:#fff}\
.up{background:#1a7f37}.down{background:#c62828}.suspect{background:#b35c00}.stale{background:#6a3fa0}.unknown{background:#666}\
.warn{background:#fff4e5;border:1px solid #b35c00;padding:4px 8px}.bad{background:#fdecea;border:1px solid #c62828;padding:4px 8px}\
.meta{color:#333}.err{font-family:'DejaVu Sans Mono',monospace;font-size:12px;color:#7a1010;overflow-wrap:anywhere}\
.muted{color:#666}";

/// The page, from a snapshot. Every text from the state goes through
/// `redactor` and is escaped.
pub fn render(s: &Snapshot, redactor: &Redactor) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let text = |out: &mut String, t: &str| escape_into(out, &redactor.redact(t));

    // Title: what is wrong, at a glance (browser tabs).
    let mut worst: Vec<String> = Vec::new();
    for st in [State::Down, State::Suspect, State::Stale, State::Unknown] {
        if let Some(n) = s.counts.get(&st).filter(|n| **n > 0) {
            worst.push(format!("{n} {}", st.as_str()));
        }
    }
    let summary = if worst.is_empty() {
        "all UP".to_owned()
    } else {
        worst.join(", ")
    };
    out.push_str("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">");
    let _ = write!(
        out,
        "<meta http-equiv=\"refresh\" content=\"{REFRESH_SECS}\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>faxi-watchdog: {summary} (node {})</title><style>{STYLE}</style></head><body>",
        s.node
    );

    // Who answered, and how fresh.
    out.push_str("<h1>faxi-watchdog status</h1><p class=\"meta\" id=\"answered\">");
    let _ = write!(out, "Answered by <b>node {} (", s.node);
    text(&mut out, &s.zone);
    let _ = write!(
        out,
        ")</b> at {} · applied index {}",
        time(s.generated_ms),
        s.applied
    );
    let behind = s.commit.saturating_sub(s.applied);
    let _ = write!(out, ", {behind} behind its commit index {}", s.commit);
    let contact = if s.leader != 0 && s.leader == s.node {
        "it is the leader".to_owned()
    } else {
        match s.leader_contact {
            Some(d) => format!(
                "heard from a leader {} ago",
                took(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            ),
            None => "it has not heard from a leader".to_owned(),
        }
    };
    let _ = write!(out, " · {contact} · ");
    match &s.stale {
        None => {
            let _ = write!(
                out,
                "confirmed with the leader (read index {})</p>",
                s.read_index
            );
        }
        Some(reason) => {
            out.push_str("<b>NOT confirmed with the leader</b></p><p class=\"bad\">STALE: node ");
            let _ = write!(out, "{} answered from its own view: ", s.node);
            text(&mut out, reason);
            out.push_str("</p>");
        }
    }
    out.push_str("<p class=\"meta\" id=\"leader\">");
    if s.leader == 0 {
        out.push_str(
            "<span class=\"b down\">NO LEADER</span> (an election is in progress or no quorum)",
        );
    } else {
        let _ = write!(out, "Leader: <b>node {}</b>", s.leader);
        if let Some(m) = s.members.iter().find(|m| m.id == s.leader) {
            out.push_str(" (");
            text(&mut out, &m.zone);
            out.push(')');
        }
    }
    let _ = write!(
        out,
        " · term {} · {} members · refreshes every {REFRESH_SECS} s</p>",
        s.term,
        s.members.len()
    );
    if let Some(m) = &s.maintenance {
        out.push_str("<p class=\"warn\"><b>MAINTENANCE</b> until ");
        out.push_str(&time(m.until_ms));
        out.push_str(" (recovery paused, detection goes on), by ");
        text(&mut out, &m.by);
        out.push_str(": ");
        text(&mut out, &m.reason);
        out.push_str("</p>");
    }

    targets_section(&mut out, s, redactor);
    incidents_section(&mut out, s, redactor);
    rto_section(&mut out, s, redactor);
    backups_section(&mut out, s, redactor);
    members_section(&mut out, s, redactor);

    out.push_str(
        "<p class=\"muted\">Read-only. The same state as <code>faxictl status</code>, \
         <code>faxictl incidents</code> and <code>faxictl rto</code>.</p></body></html>\n",
    );
    out
}

/// Whether the page is full: rows past this are counted, not shown.
fn full(out: &str) -> bool {
    out.len() >= MAX_PAGE_BYTES
}

fn left_out(out: &mut String, n: u64, what: &str, how: &str) {
    if n > 0 {
        let _ = write!(out, "<p class=\"muted\">{n} {what} not shown: {how}.</p>");
    }
}

fn targets_section(out: &mut String, s: &Snapshot, redactor: &Redactor) {
    let text = |out: &mut String, t: &str| escape_into(out, &redactor.redact(t));
    out.push_str("<h2 id=\"targets\">Targets</h2><p id=\"counts\">");
    let total: u64 = s.counts.values().sum();
    let _ = write!(out, "<b>{total} targets</b>");
    for st in STATES {
        if let Some(n) = s.counts.get(&st).filter(|n| **n > 0) {
            out.push_str(" · ");
            badge(out, st);
            let _ = write!(out, " {n}");
        }
    }
    out.push_str("</p>");
    if !s.zones.is_empty() {
        out.push_str("<table id=\"zones\"><tr><th>Zone</th>");
        for st in STATES {
            let _ = write!(out, "<th>{}</th>", st.as_str());
        }
        out.push_str("</tr>");
        for (zone, counts) in &s.zones {
            out.push_str("<tr><td>");
            text(out, zone);
            out.push_str("</td>");
            for st in STATES {
                let n = counts.get(&st).copied().unwrap_or(0);
                let _ = write!(out, "<td class=\"n\">{n}</td>");
            }
            out.push_str("</tr>");
        }
        out.push_str(
            "</table><p class=\"muted\">Each zone's verdict, counted over the targets.</p>",
        );
    }
    if s.targets.is_empty() {
        if total == 0 {
            out.push_str("<p>No targets observed yet.</p>");
        } else {
            out.push_str("<p>Every target is UP.</p>");
        }
    } else {
        out.push_str(
            "<table id=\"target-rows\"><tr><th>Target</th><th>Kind</th><th>State</th>\
             <th>Since</th><th>Zones</th><th>Why</th></tr>",
        );
        let mut cut = s.targets_cut;
        for (n, t) in s.targets.iter().enumerate() {
            if full(out) {
                cut += (s.targets.len() - n) as u64;
                break;
            }
            out.push_str("<tr><td>");
            text(out, &t.name);
            out.push_str("</td><td>");
            out.push_str(t.kind);
            out.push_str("</td><td>");
            badge(out, t.state);
            let _ = write!(out, "</td><td>{}</td><td>", ago(s.generated_ms, t.since_ms));
            for (i, (zone, v)) in t.zones.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                text(out, zone);
                out.push('=');
                badge(out, *v);
            }
            out.push_str("</td><td class=\"w\">");
            text(out, &t.note);
            if let Some((id, zone, e)) = &t.error {
                let _ = write!(out, "<div class=\"err\">node {id} (");
                text(out, zone);
                out.push_str("): ");
                text(out, e);
                out.push_str("</div>");
            }
            out.push_str("</td></tr>");
        }
        out.push_str("</table>");
        left_out(
            out,
            cut,
            "more targets",
            "<code>faxictl status</code> lists them (the page stays small)",
        );
    }
    if s.all {
        out.push_str("<p>Every target is listed. <a href=\"status\">Only those not UP</a>.</p>");
    } else if s.targets_up_hidden > 0 {
        let _ = write!(
            out,
            "<p>{} UP targets not listed. <a href=\"?all=1\">Show every target</a> (?all=1).</p>",
            s.targets_up_hidden
        );
    }
}

fn incidents_section(out: &mut String, s: &Snapshot, redactor: &Redactor) {
    let text = |out: &mut String, t: &str| escape_into(out, &redactor.redact(t));
    out.push_str("<h2 id=\"incidents\">Open incidents</h2>");
    if s.incidents.is_empty() {
        out.push_str("<p>None.</p>");
        return;
    }
    out.push_str(
        "<table id=\"incident-rows\"><tr><th>Id</th><th>Target</th><th>Phase</th><th>Opened</th>\
         <th>Detection</th><th>Open for / RTO</th><th>Zones</th><th>Step</th></tr>",
    );
    let mut cut = s.incidents_cut;
    for (n, i) in s.incidents.iter().enumerate() {
        if full(out) {
            cut += (s.incidents.len() - n) as u64;
            break;
        }
        let _ = write!(out, "<tr><td class=\"n\">{}</td><td>", i.id);
        text(out, &i.target);
        if i.drill {
            out.push_str(" (drill)");
        }
        let _ = write!(
            out,
            "</td><td><span class=\"b {}\">{}</span></td><td>{} ({})</td><td>{}</td><td>",
            phase_class(i.phase),
            i.phase,
            time(i.opened_ms),
            ago(s.generated_ms, i.opened_ms),
            took(i.detect_ms)
        );
        let open_for = s.generated_ms.saturating_sub(i.opened_ms);
        out.push_str(&took(open_for));
        if i.rto_ms > 0 {
            let over = open_for > i.rto_ms;
            let _ = write!(
                out,
                " / {}{}",
                took(i.rto_ms),
                if over { " <b>(over the RTO)</b>" } else { "" }
            );
        } else {
            out.push_str(" / no RTO");
        }
        out.push_str("</td><td>");
        text(out, &i.zones.join(", "));
        out.push_str("</td><td class=\"w\">");
        match (&i.step, i.cause) {
            (_, Some(cause)) => {
                let _ = write!(out, "joined incident {cause}");
            }
            (Some(st), None) => {
                let _ = write!(out, "{}/{} ", st.index, st.of);
                text(out, &st.description);
                if st.needs_approval && st.approved_until_ms == 0 {
                    out.push_str(" <b>(needs approval)</b>");
                }
            }
            (None, None) => out.push_str(if i.attempts == 0 {
                "no attempt"
            } else {
                "between attempts"
            }),
        }
        if !i.joined.is_empty() {
            out.push_str("; joined by ");
            text(out, &i.joined.join(", "));
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</table>");
    left_out(
        out,
        cut,
        "more open incidents",
        "<code>faxictl incidents</code> lists them",
    );
    for i in s.incidents.iter().filter(|i| i.timeline_shown) {
        if full(out) {
            out.push_str("<p class=\"muted\">More timelines not shown: <code>faxictl incident show ID</code>.</p>");
            break;
        }
        let _ = write!(out, "<h3 id=\"incident-{}\">Incident {}: ", i.id, i.id);
        text(out, &i.target);
        out.push_str("</h3>");
        if i.events > i.timeline.len() {
            let _ = write!(
                out,
                "<p class=\"muted\">The latest {} of {} events (<code>faxictl incident show {}</code> has them all).</p>",
                i.timeline.len(),
                i.events,
                i.id
            );
        }
        out.push_str("<table class=\"timeline\"><tr><th>Time</th><th>Step</th><th>Event</th><th>What happened</th></tr>");
        for e in &i.timeline {
            let _ = write!(out, "<tr><td>{}</td><td>", time(e.at_ms));
            match e.step {
                Some(st) => {
                    let _ = write!(out, "{st}");
                }
                None => out.push('-'),
            }
            out.push_str("</td><td>");
            text(out, &e.kind);
            out.push_str("</td><td class=\"w\">");
            text(out, &e.text);
            out.push_str("</td></tr>");
        }
        out.push_str("</table>");
    }
}

fn rto_section(out: &mut String, s: &Snapshot, redactor: &Redactor) {
    let text = |out: &mut String, t: &str| escape_into(out, &redactor.redact(t));
    out.push_str("<h2 id=\"rto\">Recovery time tracking (RTO)</h2>");
    if s.rto.is_empty() {
        out.push_str("<p>No target has an RTO, a recovery plan or recovery times yet.</p>");
        return;
    }
    out.push_str(
        "<table id=\"rto-rows\"><tr><th>Target</th><th>Target RTO</th><th>Last actual</th>\
         <th>p95 actual</th><th>Incidents</th><th>Drill last</th><th>Drill p95</th>\
         <th>Drills</th><th>Open incident</th></tr>",
    );
    let actual = |ms: u64, n: u64, rto: u64| -> String {
        if n == 0 {
            "-".into()
        } else if rto != 0 && ms > rto {
            format!("<b>{} (over)</b>", took(ms))
        } else {
            took(ms)
        }
    };
    let mut cut = s.rto_cut;
    for (n, r) in s.rto.iter().enumerate() {
        if full(out) {
            cut += (s.rto.len() - n) as u64;
            break;
        }
        out.push_str("<tr><td>");
        text(out, &r.target);
        let _ = write!(
            out,
            "</td><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            if r.rto_ms == 0 {
                "-".into()
            } else {
                took(r.rto_ms)
            },
            actual(r.last_ms, r.count, r.rto_ms),
            actual(r.p95_ms, r.count, r.rto_ms),
            r.count,
            actual(r.drill_last_ms, r.drill_count, r.rto_ms),
            actual(r.drill_p95_ms, r.drill_count, r.rto_ms),
            r.drill_count,
            if r.open_incident == 0 {
                "-".into()
            } else {
                r.open_incident.to_string()
            }
        );
    }
    out.push_str("</table>");
    left_out(out, cut, "more rows", "<code>faxictl rto</code> lists them");
}

fn backups_section(out: &mut String, s: &Snapshot, redactor: &Redactor) {
    let text = |out: &mut String, t: &str| escape_into(out, &redactor.redact(t));
    out.push_str("<h2 id=\"backups\">Backups against their RPO</h2>");
    if s.backups.is_empty() {
        out.push_str("<p>This node has no backup targets.</p>");
        return;
    }
    out.push_str(
        "<table id=\"backup-rows\"><tr><th>Target</th><th>State</th><th>Newest backup's age</th>\
         <th>RPO</th><th>Within the RPO</th><th>Last error</th></tr>",
    );
    let mut cut = s.backups_cut;
    for (n, b) in s.backups.iter().enumerate() {
        if full(out) {
            cut += (s.backups.len() - n) as u64;
            break;
        }
        out.push_str("<tr><td>");
        text(out, &b.name);
        out.push_str("</td><td>");
        match b.state {
            Some(st) => badge(out, st),
            None => out.push('-'),
        }
        let rpo_ms = u64::try_from(b.rpo.as_millis()).unwrap_or(u64::MAX);
        let _ = write!(out, "</td><td>");
        match b.age {
            Some(a) => out.push_str(&took(u64::try_from(a.as_millis()).unwrap_or(u64::MAX))),
            None if b.probes == 0 => out.push_str("not measured yet"),
            None => out.push_str("none found"),
        }
        let _ = write!(out, "</td><td>{}</td><td>", took(rpo_ms));
        match b.age {
            Some(a) if a <= b.rpo => out.push_str("<span class=\"b up\">YES</span>"),
            Some(_) => out.push_str("<span class=\"b stale\">NO: STALE</span>"),
            None if b.probes == 0 => out.push('-'),
            None => out.push_str("<span class=\"b stale\">NO BACKUP</span>"),
        }
        out.push_str("</td><td class=\"err w\">");
        if let Some(e) = &b.error {
            text(out, &clip_chars(e, MAX_ERROR_SHOWN));
        }
        out.push_str("</td></tr>");
    }
    out.push_str("</table><p class=\"muted\">Ages as this node last measured them.</p>");
    left_out(
        out,
        cut,
        "more backup targets",
        "<code>/metrics</code> has faxi_backup_age_seconds for each",
    );
}

fn members_section(out: &mut String, s: &Snapshot, redactor: &Redactor) {
    let text = |out: &mut String, t: &str| escape_into(out, &redactor.redact(t));
    out.push_str(
        "<h2 id=\"members\">Members</h2><table id=\"member-rows\"><tr><th>Member</th><th>Zone</th>\
         <th>Address</th><th>Role</th><th>Reachable</th></tr>",
    );
    for m in &s.members {
        let _ = write!(out, "<tr><td class=\"n\">{}</td><td>", m.id);
        text(out, &m.zone);
        out.push_str("</td><td>");
        text(out, &m.addr);
        out.push_str("</td><td>");
        if m.role == "leader" {
            out.push_str("<b>leader</b>");
        } else {
            out.push_str(m.role);
        }
        if m.id == s.node {
            out.push_str(" (answered)");
        }
        out.push_str("</td><td>");
        out.push_str(if m.reachable {
            "<span class=\"b up\">YES</span>"
        } else {
            "<span class=\"b down\">NO</span>"
        });
        out.push_str("</td></tr>");
    }
    out.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    const HOSTILE: &str = "<script>alert('x')</script>\"&";

    fn snapshot() -> Snapshot {
        let t = crate::recovery::executor::now_ms();
        let mut counts = BTreeMap::new();
        counts.insert(State::Up, 9998);
        counts.insert(State::Down, 1);
        counts.insert(State::Suspect, 1);
        Snapshot {
            node: 2,
            zone: "zone-b".into(),
            generated_ms: t,
            leader: 3,
            term: 7,
            commit: 120,
            applied: 118,
            leader_contact: Some(Duration::from_millis(40)),
            read_index: 120,
            members: vec![
                MemberRow {
                    id: 2,
                    zone: "zone-b".into(),
                    addr: "127.0.0.1:7402".into(),
                    role: "follower",
                    reachable: true,
                },
                MemberRow {
                    id: 3,
                    zone: "zone-c".into(),
                    addr: "127.0.0.1:7403".into(),
                    role: "leader",
                    reachable: false,
                },
            ],
            counts,
            zones: vec![("zone-b".into(), BTreeMap::from([(State::Up, 9999)]))],
            targets: vec![
                TargetRow {
                    name: HOSTILE.into(),
                    kind: "tcp",
                    state: State::Suspect,
                    since_ms: t - 4000,
                    zones: vec![("zone-b".into(), State::Up), ("zone-c".into(), State::Down)],
                    note: format!("zone-c cannot reach {HOSTILE}"),
                    error: Some((3, "zone-c".into(), format!("refused {HOSTILE} hunter2"))),
                },
                TargetRow {
                    name: "legacy-db".into(),
                    kind: "tcp",
                    state: State::Down,
                    since_ms: t - 60_000,
                    zones: vec![("zone-b".into(), State::Down)],
                    note: "zone-b cannot reach legacy-db".into(),
                    error: None,
                },
            ],
            targets_up_hidden: 9998,
            incidents: vec![IncidentRow {
                id: 1,
                target: "legacy-db".into(),
                phase: "OPEN",
                opened_ms: t - 60_000,
                detect_ms: 120,
                rto_ms: 300_000,
                zones: vec!["zone-b".into(), "zone-c".into()],
                timeline: vec![Event {
                    at_ms: t - 60_000,
                    kind: "detected".into(),
                    step: None,
                    text: format!("DOWN in zone-b, zone-c: {HOSTILE}"),
                }],
                events: 1,
                timeline_shown: true,
                ..IncidentRow::default()
            }],
            rto: vec![RtoRow {
                target: "app".into(),
                rto_ms: 300_000,
                last_ms: 2_000,
                p95_ms: 400_000,
                count: 3,
                ..RtoRow::default()
            }],
            backups: vec![BackupRow {
                name: "pg-backups".into(),
                state: Some(State::Stale),
                age: Some(Duration::from_secs(3 * 3600)),
                rpo: Duration::from_secs(2 * 3600),
                probes: 4,
                error: None,
            }],
            maintenance: Some(Maintenance {
                until_ms: t + 3_600_000,
                reason: HOSTILE.into(),
                by: "alice".into(),
            }),
            ..Snapshot::default()
        }
    }

    #[test]
    fn escape_replaces_every_markup_character_and_control() {
        assert_eq!(
            escape("<a href=\"x\" onclick='y'>&amp;</a>"),
            "&lt;a href=&quot;x&quot; onclick=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(
            escape("a\u{0}b\u{1b}[31mc\td\n"),
            "a\u{FFFD}b\u{FFFD}[31mc\td\n"
        );
        assert_eq!(escape("école ✓"), "école ✓");
        assert_eq!(escape(""), "");
    }

    #[test]
    fn hostile_names_errors_and_notes_come_out_escaped_and_secrets_hidden() {
        let secret = Secret::new("hunter2".to_owned());
        let page = render(&snapshot(), &Redactor::new([&secret]));
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("alert('x')"), "{page}");
        assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&quot;&amp;"));
        assert!(!page.contains("hunter2"), "a secret on the page");
        assert!(page.contains("refused"));
        assert!(page.contains("***"));
        // The only markup is the page's own: no script, no external asset.
        assert!(!page.to_lowercase().contains("<script"));
        assert!(!page.contains("http://") && !page.contains("https://"));
    }

    #[test]
    fn the_page_says_who_answered_how_fresh_and_what_is_wrong_in_words() {
        let page = render(&snapshot(), &Redactor::default());
        assert!(page.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(page.contains("<title>faxi-watchdog: 1 DOWN, 1 SUSPECT (node 2)</title>"));
        assert!(page.contains("Answered by <b>node 2 (zone-b)</b>"));
        assert!(page.contains("applied index 118, 2 behind its commit index 120"));
        assert!(page.contains("heard from a leader 40 ms ago"));
        assert!(page.contains("confirmed with the leader (read index 120)"));
        assert!(page.contains("Leader: <b>node 3</b> (zone-c) · term 7"));
        // States are words in coloured badges, never colour alone.
        assert!(page.contains("<span class=\"b suspect\">SUSPECT</span>"));
        assert!(page.contains("<span class=\"b down\">DOWN</span>"));
        assert!(page.contains("zone-b cannot reach legacy-db"));
        assert!(page.contains("9998 UP targets not listed"));
        assert!(page.contains("href=\"?all=1\""));
        assert!(page.contains("Incident 1: legacy-db"));
        assert!(page.contains("detected"));
        assert!(page.contains("MAINTENANCE"));
        // p95 over the RTO is marked; the backup past its RPO says so.
        assert!(page.contains("<b>6m40s (over)</b>"));
        assert!(page.contains("NO: STALE"));
        // An unreachable member says NO in words.
        assert!(page.contains("<span class=\"b down\">NO</span>"));
    }

    /// From the replicated state to the page: a hostile target name and
    /// probe error, applied as observations, come out escaped (and the
    /// secret hidden), with zone-c named as the zone that cannot reach it.
    #[test]
    fn a_hostile_target_in_the_state_comes_out_escaped() {
        use crate::mesh::state::{Command, Member, Seen, StateMachine};
        let mut sm = StateMachine::new([1u64, 2, 3].map(|id| {
            (
                id,
                Member {
                    zone: format!("zone-{}", ["a", "b", "c"][id as usize - 1]),
                    addr: format!("127.0.0.1:740{id}"),
                    instance: 0,
                },
            )
        }));
        let name = "<script>alert('x')</script>";
        let t = crate::recovery::executor::now_ms();
        for (node, verdict, error) in [
            (1, State::Up, None),
            (2, State::Up, None),
            (
                3,
                State::Down,
                Some(format!("<b>refused</b> {HOSTILE} pw=hunter2")),
            ),
        ] {
            sm.apply(&Command::Observe {
                node,
                at_ms: t,
                valid_for_ms: 60_000,
                seen: vec![Seen {
                    target: name.into(),
                    verdict,
                    latency_us: 100,
                    error,
                }],
                whole: false,
            })
            .unwrap();
        }
        let mut shared = Shared::leading(sm, 2);
        shared.info.voters = vec![1, 2, 3];
        let node = Node {
            id: 1,
            zone: "zone-a".into(),
            ..Node::default()
        };
        let snap = Snapshot::take(&shared, &node, false, t, Ok(9), Vec::new());
        assert_eq!(snap.targets.len(), 1);
        assert_eq!(snap.targets[0].state, State::Suspect);
        let secret = Secret::new("hunter2".to_owned());
        let page = render(&snap, &Redactor::new([&secret]));
        assert!(!page.contains("<script"), "{page}");
        assert!(!page.contains("<b>refused"), "{page}");
        assert!(!page.contains("hunter2"), "{page}");
        let shown = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;";
        assert!(page.contains(&format!("<tr><td>{shown}</td>")), "{page}");
        assert!(
            page.contains(&format!("zone-c cannot reach {shown}")),
            "{page}"
        );
        assert!(
            page.contains("node 3 (zone-c): &lt;b&gt;refused&lt;/b&gt;"),
            "{page}"
        );
        assert!(page.contains("pw=***"), "{page}");
        assert!(page.contains("<span class=\"b suspect\">SUSPECT</span>"));
        assert!(page.contains("Leader: <b>node 1</b> (zone-a)"));
    }

    /// At most [`RENDERS`] pages at once: a request past them is told to
    /// come back (503, at once), never queued; a page whose read the
    /// leader does not confirm comes within the confirmation's deadline,
    /// marked stale; the page forbids scripts and outside assets.
    #[tokio::test(start_paused = true)]
    async fn at_most_two_pages_at_once_and_an_unconfirmed_one_says_stale() {
        use http_body_util::BodyExt as _;

        use crate::mesh::state::{Member, StateMachine};
        let shared = Shared::leading(
            StateMachine::new([(
                1,
                Member {
                    zone: "zone-a".into(),
                    addr: "127.0.0.1:7401".into(),
                    instance: 0,
                },
            )]),
            1,
        );
        // Nobody answers the read index requests the inbox receives.
        let (mesh, _state, _inbox) = Mesh::detached(shared, 64);
        let scheduler =
            crate::scheduler::Scheduler::start(&[], &crate::probe::ProbeContext::new(1)).unwrap();
        let node = Node {
            id: 1,
            zone: "zone-a".into(),
            ..Node::default()
        };
        let page = StatusPage::new(mesh, node, scheduler.view(), Redactor::default());
        let waiting: Vec<_> = (0..RENDERS)
            .map(|_| {
                let p = page.clone();
                tokio::spawn(async move { p.respond(None).await })
            })
            .collect();
        while page.inner.renders.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let busy = page.respond(Some("all=1")).await;
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(waiting.iter().all(|w| !w.is_finished()));
        for w in waiting {
            let r = w.await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let h = r.headers();
            assert_eq!(h["content-type"], "text/html; charset=utf-8");
            assert!(
                h["content-security-policy"]
                    .to_str()
                    .unwrap()
                    .starts_with("default-src 'none'")
            );
            let body = r.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8(body.to_vec()).unwrap();
            assert!(body.contains("NOT confirmed with the leader"), "{body}");
            assert!(
                body.contains("the leader did not confirm this node&#39;s view within 1s"),
                "{body}"
            );
        }
        // The permits are back.
        assert_eq!(page.respond(None).await.status(), StatusCode::OK);
    }

    /// 10,000 targets, two of them not UP: the default page lists those
    /// two and counts the rest, and stays small; `?all=1` lists all.
    #[test]
    fn at_10000_targets_the_default_page_stays_small() {
        use crate::mesh::state::{Command, Member, Seen, StateMachine};
        let mut sm = StateMachine::new([1u64, 2, 3].map(|id| {
            (
                id,
                Member {
                    zone: format!("zone-{id}"),
                    addr: format!("127.0.0.1:740{id}"),
                    instance: 0,
                },
            )
        }));
        let t = crate::recovery::executor::now_ms();
        for node in 1..=3 {
            let seen = (0..10_000)
                .map(|i| Seen {
                    target: format!("target-{i:05}"),
                    verdict: match (i, node) {
                        (17, _) => State::Down,
                        (4242, 3) => State::Down,
                        _ => State::Up,
                    },
                    latency_us: 100,
                    error: None,
                })
                .collect();
            sm.apply(&Command::Observe {
                node,
                at_ms: t,
                valid_for_ms: 60_000,
                seen,
                whole: true,
            })
            .unwrap();
        }
        let shared = Shared::leading(sm, 2);
        let node = Node::default();
        let snap = Snapshot::take(&shared, &node, false, t, Ok(1), Vec::new());
        let names: Vec<&str> = snap.targets.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["target-00017", "target-04242"]);
        assert_eq!(snap.targets_up_hidden, 9998);
        let page = render(&snap, &Redactor::default());
        assert!(page.len() < 32 * 1024, "{} bytes", page.len());
        assert!(page.contains("<b>10000 targets</b>"));
        assert!(page.contains("9998 UP targets not listed"));
        assert!(page.contains("zone-3 cannot reach target-04242"));

        let all = Snapshot::take(&shared, &node, true, t, Ok(1), Vec::new());
        assert_eq!(all.targets.len(), 10_000);
        // Not UP first, then the UP ones.
        assert_eq!(all.targets[1].name, "target-04242");
        assert!(render(&all, &Redactor::default()).contains("<tr><td>target-09999</td>"));
    }

    #[test]
    fn a_stale_answer_says_so_with_its_reason() {
        let mut s = snapshot();
        s.stale = Some("no leader: <b>election</b>".into());
        s.leader = 0;
        let page = render(&s, &Redactor::default());
        assert!(page.contains("NOT confirmed with the leader"));
        assert!(page.contains(
            "STALE: node 2 answered from its own view: no leader: &lt;b&gt;election&lt;/b&gt;"
        ));
        assert!(page.contains("NO LEADER"));
    }

    #[test]
    fn the_page_is_cut_at_its_size_limit_and_says_how_much_was_left_out() {
        let mut s = snapshot();
        s.all = true;
        let row = s.targets[0].clone();
        // Rows of a 128-byte name of `<`, each escaped to 512 bytes.
        let big = TargetRow {
            name: "<".repeat(128),
            ..row
        };
        let n = MAX_PAGE_BYTES / 512 + 2000;
        s.targets = vec![big; n];
        let page = render(&s, &Redactor::default());
        assert!(page.len() < MAX_PAGE_BYTES + 64 * 1024, "{}", page.len());
        assert!(page.contains("more targets not shown"));
        assert!(page.ends_with("</html>\n"));
    }

    #[test]
    fn times_past_the_year_9999_or_unset_are_a_dash_never_a_panic() {
        assert_eq!(time(0), "-");
        assert_eq!(time(u64::MAX), "-");
        assert_eq!(time(MAX_STAMP_MS), "9999-12-31T23:59:59Z");
        assert_eq!(ago(1000, u64::MAX), "-");
        assert_eq!(ago(10_000, 20_000), "in 10s (clock ahead?)");
        assert_eq!(ago(10_000, 12_000), "just now");
        assert_eq!(ago(70_000, 10_000), "1m0s ago");
        assert_eq!(took(850), "850 ms");
        assert_eq!(took(12_300), "12.3 s");
        assert_eq!(clip_chars("ééé", 2), "éé…");
        assert_eq!(clip_chars("ab", 2), "ab");
    }

    #[test]
    fn all_is_asked_by_all_1_only() {
        assert!(wants_all(Some("all=1")));
        assert!(wants_all(Some("x=2&all=true")));
        assert!(!wants_all(Some("all=0")));
        assert!(!wants_all(Some("tall=1")));
        assert!(!wants_all(None));
    }
}
