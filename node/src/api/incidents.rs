//! The incidents part of the client API: answers built from the
//! replicated incidents (`Incidents`, `Incident`, `Rto`, and the open ones
//! in `Status`), and the operators' recovery requests (`Approve`,
//! `Maintenance`, `Drill`): checked where they enter, carried to the
//! leader, recorded in the audit log there, then proposed as
//! [`Command::Recovery`] stamped with the leader's clock.

use std::time::Duration;

use faxi_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::{Api, Audit, Freshness, WRITE_DEADLINE, call_deadline, leader_client, mark_forwarded};
use crate::mesh::driver::{MeshError, Shared};
use crate::mesh::state::{Command, MAX_NAME_BYTES, Shown};
use crate::recovery::executor::now_ms;
use crate::recovery::incidents::{Incident, Maintenance, Recovery, RecoveryCmd};

/// How long an operator's approval holds once given, unless the leader's
/// config says otherwise (`[recovery_defaults] approval_ttl`, which
/// defaults to it: [`Api::with_approval_ttl`]).
pub const APPROVAL_TTL: Duration = Duration::from_secs(15 * 60);
/// The shortest maintenance an operator may ask for.
pub const MIN_MAINTENANCE: Duration = Duration::from_secs(60);
/// The longest maintenance an operator may ask for.
pub const MAX_MAINTENANCE: Duration = Duration::from_secs(7 * 24 * 60 * 60);
/// The longest maintenance reason, in bytes.
pub const MAX_REASON: usize = 256;

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// An incident as the API shows it; its timeline only when asked.
fn incident_pb(rec: &Recovery, i: &Incident, finished: bool, timeline: bool) -> pb::Incident {
    let step = i.step_now().map(|s| pb::IncidentStep {
        index: s.index,
        of: s.of,
        description: s.description,
        needs_approval: s.needs_approval,
        approved_until_ms: s.approved_until_ms,
        is_finally: s.is_finally,
        plan: s.plan,
    });
    let pending = i
        .attempt
        .as_ref()
        .and_then(|a| a.pending.as_ref())
        .map(|p| pb::Fence {
            term: p.term,
            index: p.index,
            step: p.step.saturating_add(1),
            by: p.by,
            at_ms: p.at_ms,
        });
    pb::Incident {
        id: i.id,
        target: i.target.clone(),
        phase: i.phase.as_str().to_owned(),
        opened_ms: i.opened_ms,
        drill: i.drill,
        detect_ms: i.detect_ms,
        recover_ms: i.recover_ms().unwrap_or(0),
        rto_ms: rec.catalog().get(&i.target).map_or(0, |t| t.rto_ms),
        zones: i.zones.clone(),
        nodes: i.nodes.clone(),
        cause: i.cause.unwrap_or(0),
        joined: i.joined.clone(),
        attempts: i.attempts,
        resolved_ms: i.resolved_ms.unwrap_or(0),
        finished,
        timeline: if timeline {
            i.timeline
                .iter()
                .map(|e| pb::IncidentEvent {
                    at_ms: e.at_ms,
                    kind: e.kind.clone(),
                    step: e.step.unwrap_or(0),
                    text: e.text.clone(),
                })
                .collect()
        } else {
            Vec::new()
        },
        events: u32::try_from(i.timeline.len()).unwrap_or(u32::MAX),
        step,
        pending,
    }
}

/// The open incidents of the targets `wanted` takes, without timelines
/// (what a status carries).
pub(super) fn open_incidents(rec: &Recovery, wanted: impl Fn(&str) -> bool) -> Vec<pb::Incident> {
    rec.open()
        .values()
        .filter(|i| wanted(&i.target))
        .map(|i| incident_pb(rec, i, false, false))
        .collect()
}

/// Maintenance as the API shows it: on while its time has not run out by
/// `now_ms` (this node's clock).
pub(super) fn maintenance_pb(m: Option<&Maintenance>, now_ms: u64) -> pb::MaintenanceState {
    match m {
        None => pb::MaintenanceState::default(),
        Some(m) => pb::MaintenanceState {
            on: m.until_ms > now_ms,
            until_ms: m.until_ms,
            reason: m.reason.clone(),
            by: m.by.clone(),
        },
    }
}

/// What a maintenance request asks for: `None` to turn it off, else its
/// reason and how long, checked (1 minute to 7 days; a reason of 1 to
/// [`MAX_REASON`] bytes without control characters).
pub(super) fn maintenance_ask(
    r: &pb::MaintenanceRequest,
) -> Result<Option<(String, Duration)>, Status> {
    if !r.on {
        return Ok(None);
    }
    let d = Duration::from_millis(r.duration_ms);
    if !(MIN_MAINTENANCE..=MAX_MAINTENANCE).contains(&d) {
        return Err(Status::invalid_argument(format!(
            "duration_ms: {} ms is not from 1 minute to 7 days",
            r.duration_ms
        )));
    }
    if r.reason.is_empty() || r.reason.len() > MAX_REASON || r.reason.chars().any(char::is_control)
    {
        return Err(Status::invalid_argument(format!(
            "reason: {} is not 1 to {MAX_REASON} bytes without control characters",
            Shown::new(&r.reason)
        )));
    }
    Ok(Some((r.reason.clone(), d)))
}

/// The target a drill names, checked as the state takes target names.
pub(super) fn drill_target(r: &pb::DrillRequest) -> Result<String, Status> {
    let t = &r.target;
    if t.is_empty() || t.len() > MAX_NAME_BYTES || !t.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Status::invalid_argument(format!(
            "target: {} is not a target name (1 to {MAX_NAME_BYTES} printable ASCII bytes)",
            Shown::new(t)
        )));
    }
    Ok(t.clone())
}

/// The audit log's words for a maintenance request.
pub(super) fn maintenance_action(r: &pb::MaintenanceRequest) -> String {
    if r.on {
        format!(
            "maintenance on --reason {:?} --for {}",
            r.reason,
            humantime::format_duration(Duration::from_millis(r.duration_ms))
        )
    } else {
        "maintenance off".to_owned()
    }
}

/// A recovery proposal's failure: one the state machine refused is
/// FAILED_PRECONDITION with its reason as the state machine words it.
fn recovery_status(e: MeshError) -> Status {
    match e {
        MeshError::Rejected(reason) => Status::failed_precondition(
            reason
                .strip_prefix("recovery: ")
                .unwrap_or(&reason)
                .to_owned(),
        ),
        e => super::to_status(e),
    }
}

/// Milliseconds since this node last heard a leader (0 on the leader, -1
/// when it never heard one).
pub(super) fn contact_ms(s: &Shared) -> i64 {
    s.leader_contact()
        .map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The reads.
impl Api {
    fn freshness_pb(&self, s: &Shared, fresh: &Freshness) -> pb::Freshness {
        pb::Freshness {
            node_id: self.me,
            node_zone: self.zone.clone(),
            stale: fresh.stale,
            stale_reason: fresh.reason.clone(),
            staleness_ms: contact_ms(s),
            read_index: fresh.read_index,
        }
    }

    /// `Incidents`: the open ones, the latest finished ones when asked,
    /// and maintenance.
    pub(super) async fn incidents_read(
        &self,
        request: Request<pb::IncidentsRequest>,
    ) -> Result<Response<pb::IncidentsResponse>, Status> {
        let deadline = call_deadline(request.metadata());
        let r = request.into_inner();
        let fresh = self.confirm(r.allow_stale, deadline).await;
        let s = self.mesh.read();
        let rec = s.sm.recovery();
        let mut incidents = open_incidents(rec, |_| true);
        if r.include_finished {
            let limit = match r.finished_limit {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            };
            incidents.extend(
                rec.history()
                    .iter()
                    .rev()
                    .take(limit)
                    .map(|i| incident_pb(rec, i, true, false)),
            );
        }
        Ok(Response::new(pb::IncidentsResponse {
            incidents,
            maintenance: Some(maintenance_pb(rec.maintenance(), now_ms())),
            freshness: Some(self.freshness_pb(&s, &fresh)),
        }))
    }

    /// `Incident`: one, with its timeline. An id this node does not know
    /// is NOT_FOUND, unless its view is not confirmed (the leader may know
    /// it): then UNAVAILABLE, so that a client asks another node.
    pub(super) async fn incident_read(
        &self,
        request: Request<pb::IncidentRequest>,
    ) -> Result<Response<pb::IncidentResponse>, Status> {
        let deadline = call_deadline(request.metadata());
        let pb::IncidentRequest { id, allow_stale } = *request.get_ref();
        let fresh = self.confirm(allow_stale, deadline).await;
        let s = self.mesh.read();
        let rec = s.sm.recovery();
        let Some(i) = rec.incident(id) else {
            if fresh.stale && !allow_stale {
                return Err(Status::unavailable(format!(
                    "incident {id} is not known to node {}, whose view is not confirmed with the \
                     leader: {}",
                    self.me, fresh.reason
                )));
            }
            return Err(Status::not_found(format!(
                "incident {id} is not known (nodes keep the open incidents and the latest {} \
                 finished ones)",
                crate::recovery::incidents::MAX_HISTORY
            )));
        };
        let finished = !rec.open().contains_key(&id);
        Ok(Response::new(pb::IncidentResponse {
            incident: Some(incident_pb(rec, i, finished, true)),
            freshness: Some(self.freshness_pb(&s, &fresh)),
        }))
    }

    /// `Rto`: per target (the catalog's, those with recovery times, and
    /// those observed), its RTO against the recovery times seen.
    pub(super) async fn rto_read(
        &self,
        request: Request<pb::RtoRequest>,
    ) -> Result<Response<pb::RtoResponse>, Status> {
        let deadline = call_deadline(request.metadata());
        let fresh = self.confirm(request.get_ref().allow_stale, deadline).await;
        let s = self.mesh.read();
        let targets =
            s.sm.recovery()
                .rto_table(s.sm.agreed().keys())
                .into_iter()
                .map(|r| pb::RtoRow {
                    target: r.target,
                    rto_ms: r.rto_ms,
                    last_ms: r.last_ms,
                    p95_ms: r.p95_ms,
                    count: r.count,
                    drill_last_ms: r.drill_last_ms,
                    drill_p95_ms: r.drill_p95_ms,
                    drill_count: r.drill_count,
                    open_incident: r.open_incident,
                })
                .collect();
        Ok(Response::new(pb::RtoResponse {
            targets,
            freshness: Some(self.freshness_pb(&s, &fresh)),
        }))
    }
}

/// The recovery requests, once the caller is authorised: checked, carried
/// to the leader, recorded, proposed.
impl Api {
    /// On the leader, once recorded: proposes a recovery command and waits
    /// until it is applied here.
    async fn propose_recovery(&self, cmd: RecoveryCmd) -> Result<u64, Status> {
        self.mesh
            .propose(Command::Recovery(cmd), WRITE_DEADLINE)
            .await
            .map_err(recovery_status)
    }

    pub(super) async fn approve_inner(
        &self,
        request: Request<pb::ApproveRequest>,
        audit: &Audit,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        let pb::ApproveRequest { id, skip } = *request.get_ref();
        if id == 0 {
            return Err(Status::invalid_argument("id: incidents are counted from 1"));
        }
        if let Some((leader, addr)) = self.leader_elsewhere(&request).await? {
            return leader_client(
                self.tls.as_deref(),
                leader,
                addr,
                WRITE_DEADLINE + Duration::from_secs(1),
            )
            .await?
            .approve(mark_forwarded(
                audit,
                Request::new(pb::ApproveRequest { id, skip }),
            ))
            .await;
        }
        self.record(audit).await?;
        let at_ms = now_ms();
        let until_ms = at_ms.saturating_add(ms(self.approval_ttl));
        self.propose_recovery(RecoveryCmd::Approve {
            incident: id,
            by: audit.by.clone(),
            skip,
            at_ms,
            until_ms,
        })
        .await?;
        let s = self.mesh.read();
        let rec = s.sm.recovery();
        let incident = rec
            .incident(id)
            .map(|i| incident_pb(rec, i, !rec.open().contains_key(&id), false));
        Ok(Response::new(pb::ApproveResponse {
            incident,
            until_ms: if skip { 0 } else { until_ms },
        }))
    }

    pub(super) async fn maintenance_inner(
        &self,
        request: Request<pb::MaintenanceRequest>,
        audit: &Audit,
    ) -> Result<Response<pb::MaintenanceResponse>, Status> {
        let ask = maintenance_ask(request.get_ref())?;
        if let Some((leader, addr)) = self.leader_elsewhere(&request).await? {
            let r = request.into_inner();
            return leader_client(
                self.tls.as_deref(),
                leader,
                addr,
                WRITE_DEADLINE + Duration::from_secs(1),
            )
            .await?
            .maintenance(mark_forwarded(audit, Request::new(r)))
            .await;
        }
        self.record(audit).await?;
        let at_ms = now_ms();
        let m = ask.map(|(reason, d)| Maintenance {
            until_ms: at_ms.saturating_add(ms(d)),
            reason,
            by: audit.by.clone(),
        });
        self.propose_recovery(RecoveryCmd::Maintenance(m)).await?;
        let s = self.mesh.read();
        Ok(Response::new(pb::MaintenanceResponse {
            maintenance: Some(maintenance_pb(s.sm.recovery().maintenance(), now_ms())),
        }))
    }

    pub(super) async fn drill_inner(
        &self,
        request: Request<pb::DrillRequest>,
        audit: &Audit,
    ) -> Result<Response<pb::DrillResponse>, Status> {
        let target = drill_target(request.get_ref())?;
        if let Some((leader, addr)) = self.leader_elsewhere(&request).await? {
            return leader_client(
                self.tls.as_deref(),
                leader,
                addr,
                WRITE_DEADLINE + Duration::from_secs(1),
            )
            .await?
            .drill(mark_forwarded(
                audit,
                Request::new(pb::DrillRequest { target }),
            ))
            .await;
        }
        self.record(audit).await?;
        self.propose_recovery(RecoveryCmd::Drill {
            target: target.clone(),
            by: audit.by.clone(),
            at_ms: now_ms(),
        })
        .await?;
        let s = self.mesh.read();
        let rec = s.sm.recovery();
        // The newest drill of the target: the one just opened (it may have
        // finished already).
        let open = rec
            .open()
            .values()
            .filter(|i| i.drill && i.target == target)
            .max_by_key(|i| i.id)
            .map(|i| incident_pb(rec, i, false, false));
        let incident = open.or_else(|| {
            rec.history()
                .iter()
                .rev()
                .find(|i| i.drill && i.target == target)
                .map(|i| incident_pb(rec, i, true, false))
        });
        Ok(Response::new(pb::DrillResponse { incident }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::mesh::driver::{Input, Mesh};
    use crate::mesh::state::{Member, StateMachine};
    use crate::recovery::incidents::{EntryAt, TargetInfo};
    use crate::recovery::plan::{Action, Plan, Step};
    use crate::tls::{CertRequest, Role, Tls, Token, make_certs, token_hash};

    /// Every command the stand-in driver was asked to propose, in order.
    type Proposed = Arc<Mutex<Vec<Command>>>;

    /// Applies `cmd` to the state as a committed entry would.
    fn commit(api: &Api, cmd: RecoveryCmd) {
        let index = api.mesh.read().info.commit + 1000;
        let mut s = api.mesh.shared_for_tests().write().unwrap();
        s.sm.apply_at(&Command::Recovery(cmd), EntryAt { term: 1, index })
            .unwrap();
    }

    /// The API of node 1, which leads a one-node cluster with no raft
    /// under it: a thread stands in for the driver and applies every
    /// proposal to the state machine at once (or refuses it, as the state
    /// machine does), and confirms every read. Tokens `reader` (read) and
    /// `operator` (operate). The catalog knows `db`, whose plan has one
    /// step that needs approval, and `app`, with no plan.
    /// Incident 1's attempt begins and its first step waits for approval.
    fn step_waits_for_approval(api: &Api) {
        commit(
            api,
            RecoveryCmd::Begin {
                incident: 1,
                at_ms: now_ms(),
            },
        );
        commit(
            api,
            RecoveryCmd::AwaitApproval {
                incident: 1,
                step: 0,
                at_ms: now_ms(),
                reason: "step 1 needs approval".into(),
            },
        );
    }

    fn api() -> (Api, Proposed) {
        let dir = tempfile::tempdir().unwrap();
        make_certs(&CertRequest {
            dir: dir.path().to_owned(),
            nodes: vec![1],
            operators: Vec::new(),
            replace: false,
        })
        .unwrap();
        let f = |name: &str| dir.path().join(name);
        let tls = Tls::load(&f("ca.pem"), &f("node-1.pem"), &f("node-1.key"))
            .unwrap()
            .with_tokens(vec![
                Token {
                    name: "reader".into(),
                    role: Role::Read,
                    sha256: token_hash("readertoken"),
                },
                Token {
                    name: "operator".into(),
                    role: Role::Operate,
                    sha256: token_hash("operatortoken"),
                },
            ]);
        let sm = StateMachine::new([(
            1,
            Member {
                zone: "zone-a".into(),
                addr: "127.0.0.1:7401".into(),
                instance: 0,
            },
        )]);
        let shared = Shared::leading(sm, 1);
        let (mesh, state, inbox) = Mesh::detached(shared, 64);
        let proposed: Proposed = Arc::default();
        let log = proposed.clone();
        std::thread::spawn(move || {
            let mut index = 1;
            while let Ok(input) = inbox.recv() {
                match input {
                    Input::Propose(cmd, reply) => {
                        index += 1;
                        log.lock().unwrap().push(cmd.clone());
                        let mut s = state.write().unwrap();
                        let r =
                            s.sm.apply_at(&cmd, EntryAt { term: 1, index })
                                .map(|_| index)
                                .map_err(|e| MeshError::Rejected(e.to_string()));
                        let _ = reply.send(r);
                    }
                    Input::ReadIndex(reply) => {
                        let _ = reply.send(Ok(index));
                    }
                    _ => {}
                }
            }
        });
        let api = Api::new(mesh, 1, "zone-a".into(), Default::default(), Some(tls));
        let plan = Plan {
            name: "db".into(),
            steps: vec![Step {
                action: Action::Exec {
                    argv: vec!["restore-db".into()],
                    env: Vec::new(),
                    timeout_ms: 1000,
                },
                approval: true,
                idempotent: false,
            }],
            finally: Vec::new(),
            cooldown_ms: 0,
            max_attempts: 3,
            attempt_window_ms: 3_600_000,
            dry_run: false,
        };
        commit(
            &api,
            RecoveryCmd::Catalog(vec![
                TargetInfo {
                    name: "app".into(),
                    depends_on: vec!["db".into()],
                    rto_ms: 60_000,
                    plan: None,
                },
                TargetInfo {
                    name: "db".into(),
                    depends_on: Vec::new(),
                    rto_ms: 900_000,
                    plan: Some(plan),
                },
            ]),
        );
        (api, proposed)
    }

    fn as_<T>(token: &str, body: T) -> Request<T> {
        let mut r = Request::new(body);
        r.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        r
    }

    fn on(reason: &str, duration_ms: u64) -> pb::MaintenanceRequest {
        pb::MaintenanceRequest {
            on: true,
            reason: reason.into(),
            duration_ms,
        }
    }

    #[tokio::test]
    async fn a_read_only_caller_reads_incidents_but_cannot_approve_drill_or_maintain() {
        use faxi_proto::v1::watchdog_server::Watchdog as _;
        let (api, proposed) = api();
        let reader = "readertoken";
        let r = api
            .incidents(as_(reader, pb::IncidentsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert!(r.incidents.is_empty());
        assert!(!r.freshness.unwrap().stale, "confirmed by the read index");
        let rto = api
            .rto(as_(reader, pb::RtoRequest::default()))
            .await
            .unwrap()
            .into_inner();
        let names: Vec<&str> = rto.targets.iter().map(|t| t.target.as_str()).collect();
        assert_eq!(names, ["app", "db"]);
        assert_eq!(rto.targets[1].rto_ms, 900_000);
        let e = api
            .incident(as_(
                reader,
                pb::IncidentRequest {
                    id: 99,
                    allow_stale: false,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        assert!(e.message().contains("incident 99"), "{}", e.message());

        let denied = |e: Status| {
            assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
            assert!(
                e.message().contains("reader (read) may not")
                    && e.message().contains("needs the operate role"),
                "{}",
                e.message()
            );
        };
        denied(
            api.approve(as_(reader, pb::ApproveRequest { id: 1, skip: false }))
                .await
                .unwrap_err(),
        );
        denied(
            api.drill(as_(
                reader,
                pb::DrillRequest {
                    target: "db".into(),
                },
            ))
            .await
            .unwrap_err(),
        );
        denied(
            api.maintenance(as_(reader, on("db upgrade", 3_600_000)))
                .await
                .unwrap_err(),
        );
        denied(
            api.maintenance(as_(reader, pb::MaintenanceRequest::default()))
                .await
                .unwrap_err(),
        );
        // No token at all is nobody.
        let e = api
            .incidents(Request::new(pb::IncidentsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        // Nothing was recorded, nothing proposed.
        assert!(proposed.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn maintenance_is_1_minute_to_7_days_with_a_plain_reason_recorded_first() {
        use faxi_proto::v1::watchdog_server::Watchdog as _;
        let (api, proposed) = api();
        let op = "operatortoken";
        let week = 7 * 24 * 3_600_000;
        for (req, field) in [
            (on("db upgrade", 0), "duration_ms"),
            (on("db upgrade", 59_999), "duration_ms"),
            (on("db upgrade", week + 1), "duration_ms"),
            (on("db upgrade", u64::MAX), "duration_ms"),
            (on("", 3_600_000), "reason"),
            (on(&"x".repeat(MAX_REASON + 1), 3_600_000), "reason"),
            (on("db\nupgrade", 3_600_000), "reason"),
            (on("\u{1b}[2J", 3_600_000), "reason"),
        ] {
            let e = api.maintenance(as_(op, req.clone())).await.unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument, "{req:?}");
            assert!(e.message().starts_with(field), "{req:?}: {}", e.message());
            assert!(e.message().len() < 200, "{}", e.message());
        }
        // Refused requests are neither recorded nor proposed.
        assert!(proposed.lock().unwrap().is_empty());
        // The bounds themselves are taken.
        for ms in [60_000, week] {
            assert!(maintenance_ask(&on("x", ms)).unwrap().is_some());
        }
        assert!(maintenance_ask(&on(&"é".repeat(128), 60_000)).is_ok());

        let before = now_ms();
        let r = api
            .maintenance(as_(op, on("db upgrade", 3_600_000)))
            .await
            .unwrap()
            .into_inner()
            .maintenance
            .unwrap();
        assert!(r.on);
        assert_eq!(r.reason, "db upgrade");
        assert_eq!(r.by, "operator (operate)");
        let shown = api
            .incidents(as_("readertoken", pb::IncidentsRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .maintenance
            .unwrap();
        assert_eq!(shown, r);
        let r = api
            .maintenance(as_(op, pb::MaintenanceRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .maintenance
            .unwrap();
        assert_eq!(r, pb::MaintenanceState::default());
        // Each was recorded, then proposed: until = the leader's clock + 1 h.
        let log = proposed.lock().unwrap().clone();
        assert_eq!(log.len(), 4, "{log:?}");
        let Command::Audit(a) = &log[0] else {
            panic!("{log:?}")
        };
        assert_eq!(a.action, "maintenance on --reason \"db upgrade\" --for 1h");
        assert_eq!(a.by, "operator (operate)");
        let Command::Recovery(RecoveryCmd::Maintenance(Some(m))) = &log[1] else {
            panic!("{log:?}")
        };
        assert!(m.until_ms >= before + 3_600_000 && m.until_ms <= now_ms() + 3_600_000);
        assert!(m.until_ms >= a.at_ms + 3_600_000);
        let Command::Audit(a) = &log[2] else {
            panic!("{log:?}")
        };
        assert_eq!(a.action, "maintenance off");
        assert_eq!(log[3], Command::Recovery(RecoveryCmd::Maintenance(None)));
    }

    #[tokio::test]
    async fn approvals_and_drills_are_recorded_then_proposed_and_refusals_give_the_reason() {
        use faxi_proto::v1::watchdog_server::Watchdog as _;
        let (api, proposed) = api();
        let op = "operatortoken";
        // Bad requests: refused before anything is recorded.
        for target in ["", "a b", "\u{1b}", &"x".repeat(MAX_NAME_BYTES + 1)] {
            let e = api
                .drill(as_(
                    op,
                    pb::DrillRequest {
                        target: target.into(),
                    },
                ))
                .await
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::InvalidArgument);
            assert!(e.message().starts_with("target:"), "{}", e.message());
        }
        let e = api
            .approve(as_(op, pb::ApproveRequest { id: 0, skip: false }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(proposed.lock().unwrap().is_empty());

        // A target with no plan: recorded, tried, refused with the state
        // machine's reason.
        let e = api
            .drill(as_(
                op,
                pb::DrillRequest {
                    target: "app".into(),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(e.message(), "app has no recovery plan to drill");
        // A drill of db opens incident 1.
        let i = api
            .drill(as_(
                op,
                pb::DrillRequest {
                    target: "db".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .incident
            .unwrap();
        assert_eq!((i.id, i.target.as_str(), i.drill), (1, "db", true));
        assert_eq!((i.phase.as_str(), i.rto_ms), ("OPEN", 900_000));
        // It waits for no approval yet.
        let e = api
            .approve(as_(op, pb::ApproveRequest { id: 1, skip: false }))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(e.message(), "incident 1 waits for no approval (it is OPEN)");
        // Once its step waits, an approval holds for APPROVAL_TTL.
        step_waits_for_approval(&api);
        let waiting = api
            .incident(as_(
                "readertoken",
                pb::IncidentRequest {
                    id: 1,
                    allow_stale: true,
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .incident
            .unwrap();
        assert_eq!(waiting.phase, "AWAITING_APPROVAL");
        let step = waiting.step.unwrap();
        assert_eq!((step.index, step.of), (1, 1));
        assert_eq!(step.description, "exec restore-db");
        assert!(step.needs_approval);
        let kinds: Vec<&str> = waiting.timeline.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["drill", "attempt", "awaiting_approval"]);
        assert_eq!(waiting.events, 3);
        let r = api
            .approve(as_(op, pb::ApproveRequest { id: 1, skip: false }))
            .await
            .unwrap()
            .into_inner();
        let i = r.incident.unwrap();
        assert_eq!(i.phase, "RECOVERING");
        assert_eq!(i.step.unwrap().approved_until_ms, r.until_ms);
        let log = proposed.lock().unwrap().clone();
        let actions: Vec<String> = log
            .iter()
            .filter_map(|c| match c {
                Command::Audit(a) => Some(a.action.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(actions, ["drill app", "drill db", "approve 1", "approve 1"]);
        // Every request recorded just before it was proposed.
        for pair in log.chunks(2) {
            assert!(matches!(pair[0], Command::Audit(_)), "{log:?}");
            assert!(matches!(pair[1], Command::Recovery(_)), "{log:?}");
        }
        let Some(Command::Recovery(RecoveryCmd::Approve {
            by,
            skip,
            at_ms,
            until_ms,
            ..
        })) = log.last()
        else {
            panic!("{log:?}")
        };
        assert_eq!((by.as_str(), *skip), ("operator (operate)", false));
        assert_eq!(until_ms - at_ms, ms(APPROVAL_TTL));
        assert_eq!(*until_ms, r.until_ms);
        // The list carries it, without its timeline.
        let list = api
            .incidents(as_("readertoken", pb::IncidentsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(list.incidents.len(), 1);
        assert!(list.incidents[0].timeline.is_empty());
        assert_eq!(list.incidents[0].events, 4);
    }

    #[tokio::test]
    async fn an_approval_holds_for_the_approval_ttl_the_api_was_given() {
        use faxi_proto::v1::watchdog_server::Watchdog as _;
        let (api, proposed) = api();
        let api = api.with_approval_ttl(Duration::from_secs(60));
        let op = "operatortoken";
        api.drill(as_(
            op,
            pb::DrillRequest {
                target: "db".into(),
            },
        ))
        .await
        .unwrap();
        step_waits_for_approval(&api);
        let r = api
            .approve(as_(op, pb::ApproveRequest { id: 1, skip: false }))
            .await
            .unwrap()
            .into_inner();
        let Some(Command::Recovery(RecoveryCmd::Approve {
            at_ms, until_ms, ..
        })) = proposed.lock().unwrap().last().cloned()
        else {
            panic!("no approval proposed")
        };
        assert_eq!(until_ms - at_ms, 60_000);
        assert_eq!(until_ms, r.until_ms);
        assert_eq!(
            r.incident.unwrap().step.unwrap().approved_until_ms,
            until_ms
        );
    }
}
