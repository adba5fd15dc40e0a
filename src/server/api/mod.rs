//! The `Api` gRPC service the CLI talks to. Thin: authenticate, check the role, call the store
//! or the router, map errors to `Status` (the one place that does).

pub(crate) mod attach;
pub(crate) mod auth;
pub(crate) mod exec;
pub(crate) mod jobs;
pub(crate) mod links;
pub(crate) mod sessions;

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::core::clock::rfc3339;
use crate::core::ids::MachineId;
use crate::core::limits::{SessionLimit, SessionSlot, SessionSlots};
use crate::core::secret::Secret;
use crate::core::secret::{self, prefix};
use crate::core::session::{Access, Denial, Ending, Exit, SessionEvent};
use crate::core::wire::{DENIAL_HEADER, ERROR_HEADER, NO_ASK_HANDLER};
use crate::proto::{self, exec_input};
use crate::server::grpc::internal;
use crate::server::http::client_ip::TrustedProxies;
use crate::server::links::Links;
use crate::server::metrics::{Limit, METRICS};
use crate::server::relay::router::{RouteError, SessionRouter};
use crate::store::{AuditQuery, Machine, Role, Store};
use auth::{Caller, authenticate};

/// Longest enrollment-token lifetime: 30 days.
const MAX_ENROLL_TTL: Duration = Duration::from_secs(30 * 86_400);
/// How far back `ListAudit` looks when not told: 7 days, in seconds.
const DEFAULT_AUDIT_SPAN: i64 = 7 * 86_400;
/// Most events one `ListAudit` answer carries (the newest): 1000.
const MAX_AUDIT_EVENTS: u32 = 1000;
/// Enrollment-token lifetime when none is asked for: 1 hour.
const DEFAULT_ENROLL_TTL: Duration = Duration::from_secs(3600);

/// The CLI API.
#[derive(Clone)]
pub(crate) struct ApiService {
    store: Store,
    router: Arc<dyn SessionRouter>,
    links: Links,
    public_url: String,
    /// Open sessions per machine and client IP, against their limits.
    slots: SessionSlots,
}

impl ApiService {
    /// An API over `store` reaching machines through `router`.
    pub(crate) fn new(store: Store, router: Arc<dyn SessionRouter>, links: Links, public_url: String) -> Self {
        Self { store, router, links, public_url, slots: SessionSlots::default() }
    }

    /// The same API counting sessions in `slots` (shared with the browser side).
    pub(crate) fn with_slots(mut self, slots: SessionSlots) -> Self {
        self.slots = slots;
        self
    }

    /// A place for one more session on `machine` from the request's client, or the limit's
    /// `RESOURCE_EXHAUSTED`.
    fn session_slot<T>(&self, req: &Request<T>, machine: &Machine) -> Result<SessionSlot, Status> {
        let peer = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
        let client = match (peer, req.extensions().get::<TrustedProxies>()) {
            (Some(peer), Some(proxies)) => Some(proxies.client(peer, &req.metadata().clone().into_headers())),
            (peer, _) => peer,
        };
        self.slots.acquire(&machine.id.to_string(), None, client).map_err(|limit| {
            METRICS.refused(match limit {
                SessionLimit::Machine(_) => Limit::SessionsPerMachine,
                SessionLimit::Link(_) => Limit::SessionsPerLink,
                SessionLimit::Ip(_) => Limit::SessionsPerIp,
            });
            Status::resource_exhausted(format!("machine {}: {limit}", machine.hostname))
        })
    }

    async fn caller<T>(&self, req: &Request<T>) -> Result<Caller, Status> {
        authenticate(&self.store, req.metadata()).await
    }

    /// Records a session event in the audit log.
    async fn audit_session(&self, caller: &Caller, machine: &Machine, action: &str, session: &str) {
        self.audit_machine(caller, machine, action, format!("session={session}")).await;
    }

    /// Records an event about a machine in the audit log; a failure is logged, never shown to
    /// the user.
    async fn audit_machine(&self, caller: &Caller, machine: &Machine, action: &str, detail: String) {
        let event = crate::store::AuditEvent {
            actor: &caller.user.email,
            action,
            surface: caller.surface,
            fleet_id: Some(caller.fleet.id.to_string()),
            machine_id: Some(machine.id.to_string()),
            link_id: None,
            detail,
        };
        if let Err(e) = self.store.audit(event).await {
            tracing::warn!(error = %e, "could not record an audit event");
        }
    }

    /// Checks that the caller may run commands and asks (member or above); a refusal is in the
    /// audit log too.
    async fn require_runner(&self, c: &Caller, machine: &Machine, start: &proto::ExecStart) -> Result<(), Status> {
        let what = if start.ask.is_some() { "asking machines" } else { "running commands" };
        if let Err(status) = c.require(Role::Member, what) {
            let detail = format!("refused=role:{} {}", c.role, exec::audit_text(start));
            self.audit_machine(c, machine, action_of(start), detail).await;
            return Err(status);
        }
        Ok(())
    }

    /// The machine with this id in the caller's fleet; other fleets' machines do not exist.
    async fn fleet_machine(&self, caller: &Caller, id: &str) -> Result<Machine, Status> {
        let not_found = || Status::not_found(format!("no machine {id:?} in fleet {:?}", caller.fleet.name));
        let id: MachineId = id.parse().map_err(|_| not_found())?;
        let machine = self.store.machine(id).await.map_err(internal)?.ok_or_else(not_found)?;
        if machine.fleet_id != caller.fleet.id {
            return Err(not_found());
        }
        Ok(machine)
    }
}

/// The one mapping from routing errors to gRPC status.
pub(crate) fn route_status(e: RouteError, machine: &Machine) -> Status {
    match e {
        RouteError::Offline => Status::unavailable(format!(
            "machine {} is offline: its agent is not connected (check `cmdop connect --list`)",
            machine.hostname
        )),
        RouteError::Gone => {
            Status::unavailable(format!("machine {} went away: its agent's connection dropped", machine.hostname))
        }
        RouteError::Stale => Status::unavailable(format!(
            "machine {} is moving to another server node; try again in a few seconds",
            machine.hostname
        )),
        RouteError::NoSuchSession(msg) => Status::not_found(format!("{msg} on machine {}", machine.hostname)),
        RouteError::Unanswered => {
            Status::deadline_exceeded(format!("machine {} did not answer in time", machine.hostname))
        }
        RouteError::Denied(d) => denial_status(d, &machine.hostname),
        RouteError::NoAskHandler => no_ask_handler_status(machine),
    }
}

/// FAILED_PRECONDITION for an ask to a machine without a handler, marked for clients with
/// `cmdop-error: no-ask-handler`.
pub(crate) fn no_ask_handler_status(machine: &Machine) -> Status {
    let mut status = Status::failed_precondition(format!(
        "machine {} has no ask handler (its agent runs without --ask-handler); run a command there with `cmdop connect exec`",
        machine.hostname
    ));
    status.metadata_mut().insert(ERROR_HEADER, tonic::metadata::MetadataValue::from_static(NO_ASK_HANDLER));
    status
}

/// PERMISSION_DENIED for an attach-password refusal, with metadata clients act on:
/// `cmdop-denial` (`required`, `wrong`, `throttled`) and, when throttled, `retry-after` seconds.
pub(crate) fn denial_status(d: Denial, hostname: &str) -> Status {
    let mut status = Status::permission_denied(format!("machine {hostname}: {d}"));
    let meta = status.metadata_mut();
    meta.insert(DENIAL_HEADER, tonic::metadata::MetadataValue::from_static(d.code()));
    if let Denial::Throttled(wait) = d {
        meta.insert("retry-after", wait.as_secs().max(1).into());
    }
    status
}

type ExecStream = Pin<Box<dyn Stream<Item = Result<proto::ExecOutput, Status>> + Send>>;

#[tonic::async_trait]
impl proto::api_server::Api for ApiService {
    async fn whoami(&self, req: Request<proto::WhoamiRequest>) -> Result<Response<proto::WhoamiResponse>, Status> {
        let c = self.caller(&req).await?;
        Ok(Response::new(proto::WhoamiResponse {
            user_id: c.user.id.to_string(),
            email: c.user.email,
            fleet: c.fleet.name,
            role: c.role.to_string(),
            server_url: self.public_url.clone(),
        }))
    }

    async fn list_fleets(
        &self,
        req: Request<proto::ListFleetsRequest>,
    ) -> Result<Response<proto::ListFleetsResponse>, Status> {
        let c = self.caller(&req).await?;
        let fleets = self.store.memberships(c.user.id).await.map_err(internal)?;
        let fleets =
            fleets.into_iter().map(|m| proto::FleetInfo { name: m.fleet.name, role: m.role.to_string() }).collect();
        Ok(Response::new(proto::ListFleetsResponse { fleets }))
    }

    async fn create_enroll_token(
        &self,
        req: Request<proto::CreateEnrollTokenRequest>,
    ) -> Result<Response<proto::CreateEnrollTokenResponse>, Status> {
        let c = self.caller(&req).await?;
        c.require(Role::Admin, "creating enrollment tokens")?;
        let ttl = match req.get_ref().ttl_seconds {
            0 => DEFAULT_ENROLL_TTL,
            s => Duration::from_secs(s),
        };
        if ttl > MAX_ENROLL_TTL {
            return Err(Status::invalid_argument("--ttl may be at most 30d"));
        }
        let token = secret::new_token(prefix::ENROLL);
        let expires_at = crate::core::clock::now() + i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        self.store
            .create_enroll_token(&secret::hash_token(token.expose()), c.fleet.id, c.user.id, expires_at)
            .await
            .map_err(internal)?;
        Ok(Response::new(proto::CreateEnrollTokenResponse {
            token: token.expose().clone(),
            fleet: c.fleet.name,
            expires_at: rfc3339(expires_at),
        }))
    }

    async fn list_machines(
        &self,
        req: Request<proto::ListMachinesRequest>,
    ) -> Result<Response<proto::ListMachinesResponse>, Status> {
        let c = self.caller(&req).await?;
        let machines = self.store.list_machines(c.fleet.id).await.map_err(internal)?;
        let machines = machines
            .into_iter()
            .map(|m| proto::MachineInfo {
                id: m.id.to_string(),
                hostname: m.hostname,
                display_name: m.display_name.unwrap_or_default(),
                online: m.online,
                last_seen: m.last_seen.map(rfc3339).unwrap_or_default(),
                os: m.os,
                arch: m.arch,
            })
            .collect();
        Ok(Response::new(proto::ListMachinesResponse { machines }))
    }

    type ExecStream = ExecStream;

    async fn exec(&self, req: Request<Streaming<proto::ExecInput>>) -> Result<Response<ExecStream>, Status> {
        let c = self.caller(&req).await?;
        let meta = (req.extensions().clone(), req.metadata().clone());
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(proto::ExecInput { kind: Some(exec_input::Kind::Start(s)) }) => s,
            _ => {
                return Err(Status::invalid_argument("the first exec message must be start"));
            }
        };
        let machine = self.fleet_machine(&c, &start.machine_id).await?;
        let slot = self.session_slot(&Request::from_parts(meta.1, meta.0, ()), &machine)?;
        self.require_runner(&c, &machine, &start).await?;
        let ask_id = uuid::Uuid::new_v4().to_string();
        let asker = exec::Asker { from: &c.user.email, id: &ask_id };
        let spec = exec::spec_of(&start, access_of(&c, &start.attach_token), asker)?;
        tracing::info!(machine = %machine.id, user = %c.user.email, kind = ?spec.kind, "exec");
        let mut port = self.router.open(machine.id, spec).await.map_err(|e| route_status(e, &machine))?;
        // Wait for the start, so a refusal is the call's status rather than a stream trailer.
        let first = port.events.recv().await;
        let refusal = match &first {
            Some(SessionEvent::Exited(Exit { ending: Ending::Denied(d), .. })) => {
                Some(denial_status(*d, &machine.hostname))
            }
            Some(SessionEvent::Exited(Exit { ending: Ending::NoAskHandler, .. })) => {
                Some(no_ask_handler_status(&machine))
            }
            _ => None,
        };
        if let Some(status) = refusal {
            let exit = match &first {
                Some(SessionEvent::Exited(exit)) => Some(exit),
                _ => None,
            };
            self.audit_machine(&c, &machine, action_of(&start), exec::audit_detail(&start, exit)).await;
            return Err(status);
        }
        METRICS.execs_total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(exec::CLIENT_QUEUE_CHUNKS);
        let api = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let exit = exec::pump(port, first, input, tx).await;
            api.audit_machine(&c, &machine, action_of(&start), exec::audit_detail(&start, exit.as_ref())).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn create_share(
        &self,
        req: Request<proto::CreateShareRequest>,
    ) -> Result<Response<proto::ShareInfo>, Status> {
        let c = self.caller(&req).await?;
        let machine = self.fleet_machine(&c, &req.get_ref().machine_id).await?;
        let info = links::create(&self.links, &c, &machine, req.get_ref(), &self.public_url).await?;
        Ok(Response::new(info))
    }

    async fn list_shares(
        &self,
        req: Request<proto::ListSharesRequest>,
    ) -> Result<Response<proto::ListSharesResponse>, Status> {
        let c = self.caller(&req).await?;
        let machine = match req.get_ref().machine_id.as_str() {
            "" => None,
            id => Some(self.fleet_machine(&c, id).await?.id),
        };
        let shares = links::list(&self.links, &c, machine).await?;
        Ok(Response::new(proto::ListSharesResponse { shares }))
    }

    async fn revoke_shares(
        &self,
        req: Request<proto::RevokeSharesRequest>,
    ) -> Result<Response<proto::RevokeSharesResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let rows = match (r.link_id.as_str(), r.machine_id.as_str()) {
            (id, "") if !id.is_empty() => vec![links::fleet_link(&self.links, &c, id).await?],
            ("", m) if !m.is_empty() => {
                let machine = self.fleet_machine(&c, m).await?;
                links::unrevoked_of(&self.links, &c, machine.id).await?
            }
            _ => return Err(Status::invalid_argument("name one link id or --machine")),
        };
        let revoked = links::revoke(&self.links, &c, rows).await?;
        Ok(Response::new(proto::RevokeSharesResponse { revoked }))
    }

    type AttachStream = Pin<Box<dyn Stream<Item = Result<proto::AttachOutput, Status>> + Send>>;

    async fn attach(
        &self,
        req: Request<Streaming<proto::AttachInput>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let c = self.caller(&req).await?;
        c.require(Role::Member, "attaching to a shell")?;
        let meta = (req.extensions().clone(), req.metadata().clone());
        let mut input = req.into_inner();
        let start = match input.message().await? {
            Some(proto::AttachInput { kind: Some(proto::attach_input::Kind::Start(s)) }) => s,
            _ => {
                return Err(Status::invalid_argument("the first attach message must be start"));
            }
        };
        let machine = self.fleet_machine(&c, &start.machine_id).await?;
        let slot = self.session_slot(&Request::from_parts(meta.1, meta.0, ()), &machine)?;
        let spec = attach::spec_of(&start, access_of(&c, &start.attach_token))?;
        let mut port = self.router.attach(machine.id, spec).await.map_err(|e| route_status(e, &machine))?;
        let (attachment, pid) = attach::first_event(&mut port, &machine.hostname).await?;
        tracing::info!(machine = %machine.id, user = %c.user.email, session = %attachment.id, created = attachment.created, "attach");
        self.audit_session(&c, &machine, "session.attach", &attachment.id.to_string()).await;
        let (tx, rx) = attach::client_queue();
        let _ = tx.send(Ok(attach::attached_message(&attachment, pid))).await;
        tokio::spawn(async move {
            let _slot = slot;
            attach::pump(port, attachment, input, tx).await;
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_sessions(
        &self,
        req: Request<proto::ListSessionsRequest>,
    ) -> Result<Response<proto::ListSessionsResponse>, Status> {
        let c = self.caller(&req).await?;
        let machines = match req.get_ref().machine_id.as_str() {
            "" => {
                self.store.list_machines(c.fleet.id).await.map_err(internal)?.into_iter().filter(|m| m.online).collect()
            }
            id => vec![self.fleet_machine(&c, id).await?],
        };
        let single = machines.len() == 1 && !req.get_ref().machine_id.is_empty();
        let tokens = &req.get_ref().attach_tokens;
        let access = |m: &Machine| access_of(&c, tokens.get(&m.id.to_string()).map_or("", String::as_str));
        if single {
            if !self.router.is_connected(machines[0].id).await {
                return Err(route_status(RouteError::Offline, &machines[0]));
            }
            sessions::check_grant(self.router.as_ref(), &machines[0], access(&machines[0]))
                .await
                .map_err(|e| route_status(e, &machines[0]))?;
        }
        Ok(Response::new(sessions::gather(self.router.as_ref(), &machines, access).await))
    }

    async fn kill_session(
        &self,
        req: Request<proto::KillSessionRequest>,
    ) -> Result<Response<proto::KillSessionResponse>, Status> {
        let c = self.caller(&req).await?;
        c.require(Role::Member, "killing a shell session")?;
        let r = req.get_ref();
        sessions::check_target(&r.session)?;
        let machine = self.fleet_machine(&c, &r.machine_id).await?;
        sessions::check_grant(self.router.as_ref(), &machine, access_of(&c, &r.attach_token))
            .await
            .map_err(|e| route_status(e, &machine))?;
        let killed = self.router.kill_session(machine.id, &r.session).await.map_err(|e| route_status(e, &machine))?;
        tracing::info!(machine = %machine.id, user = %c.user.email, session = %killed.id, "session killed");
        self.audit_session(&c, &machine, "session.kill", &killed.id.to_string()).await;
        Ok(Response::new(proto::KillSessionResponse { session: Some(sessions::info_of(&killed, &machine)) }))
    }

    async fn unlock(&self, req: Request<proto::UnlockRequest>) -> Result<Response<proto::UnlockResponse>, Status> {
        let c = self.caller(&req).await?;
        c.require(Role::Member, "unlocking a machine")?;
        let r = req.into_inner();
        let machine = self.fleet_machine(&c, &r.machine_id).await?;
        if r.password.is_empty() {
            return Err(Status::invalid_argument("no attach password given"));
        }
        let principal = Access::user(c.user.id, None).principal;
        let result = self.router.unlock(machine.id, &principal, &principal, Secret::new(r.password)).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(RouteError::Denied(d)) => d.code(),
            Err(_) => "error",
        };
        self.audit_machine(&c, &machine, "machine.unlock", format!("result={outcome}")).await;
        let grant = result.map_err(|e| route_status(e, &machine))?;
        tracing::info!(machine = %machine.id, user = %c.user.email, "machine unlocked");
        Ok(Response::new(proto::UnlockResponse {
            attach_token: grant.token.expose().clone(),
            expires_at: rfc3339(grant.expires_unix),
        }))
    }

    async fn list_audit(
        &self,
        req: Request<proto::ListAuditRequest>,
    ) -> Result<Response<proto::ListAuditResponse>, Status> {
        let c = self.caller(&req).await?;
        let r = req.get_ref();
        let machine = match r.machine_id.as_str() {
            "" => None,
            id => Some(self.fleet_machine(&c, id).await?.id),
        };
        let since = match r.since_seconds {
            0 => DEFAULT_AUDIT_SPAN,
            s => i64::try_from(s).unwrap_or(i64::MAX),
        };
        // Links record their creator by id, runs by email: a member's own events are both.
        let own = [c.user.email.clone(), c.user.id.to_string()];
        let query = AuditQuery {
            fleet: c.fleet.id,
            since: crate::core::clock::now().saturating_sub(since),
            machine,
            actors: if c.role >= Role::Admin { &[] } else { &own },
            limit: MAX_AUDIT_EVENTS,
        };
        let rows = self.store.list_audit(&query).await.map_err(internal)?;
        let events = rows
            .into_iter()
            .map(|e| proto::AuditEntry {
                at: rfc3339(e.at),
                actor: e.actor,
                action: e.action,
                detail: e.detail,
                surface: e.surface,
                machine_id: e.machine_id.unwrap_or_default(),
            })
            .collect();
        Ok(Response::new(proto::ListAuditResponse { events }))
    }

    async fn start_job(&self, req: Request<proto::StartJobRequest>) -> Result<Response<proto::JobReport>, Status> {
        let c = self.caller(&req).await?;
        let r = req.into_inner();
        let start = r.start.ok_or_else(|| Status::invalid_argument("StartJob needs `start`"))?;
        let machine = self.fleet_machine(&c, &start.machine_id).await?;
        self.require_runner(&c, &machine, &start).await?;
        let ask_id = uuid::Uuid::new_v4().to_string();
        let asker = exec::Asker { from: &c.user.email, id: &ask_id };
        let spec = exec::spec_of(&start, access_of(&c, &start.attach_token), asker)?;
        let query = jobs::start_query(&start, spec, r.wait_ms, r.max_bytes);
        let result = self.router.job(machine.id, query).await.map(|j| jobs::for_client(j, &machine));
        let job = result.as_ref().map_or("-", |j| j.job_id.as_str());
        let detail = jobs::audit_detail(job, result.as_ref().ok(), Some(&start));
        self.audit_machine(&c, &machine, action_of(&start), detail).await;
        Ok(Response::new(result.map_err(|e| route_status(e, &machine))?))
    }

    async fn query_job(&self, req: Request<proto::QueryJobRequest>) -> Result<Response<proto::JobReport>, Status> {
        let c = self.caller(&req).await?;
        c.require(Role::Member, "reading jobs")?;
        let r = req.get_ref();
        let (machine_id, local) = jobs::split_id(&r.job_id)?;
        let machine = self.fleet_machine(&c, machine_id).await?;
        let principal = Access::user(c.user.id, None).principal;
        let query = jobs::action_query(r, local, principal);
        let result = self.router.job(machine.id, query).await.map(|j| jobs::for_client(j, &machine));
        let detail = jobs::audit_detail(r.job_id.trim(), result.as_ref().ok(), None);
        self.audit_machine(&c, &machine, jobs::action_name(r), detail).await;
        Ok(Response::new(result.map_err(|e| route_status(e, &machine))?))
    }

    async fn share_audit(
        &self,
        req: Request<proto::ShareAuditRequest>,
    ) -> Result<Response<proto::ShareAuditResponse>, Status> {
        let c = self.caller(&req).await?;
        let link = links::fleet_link(&self.links, &c, &req.get_ref().link_id).await?;
        let events = links::audit(&self.links, &c, &link).await?;
        Ok(Response::new(proto::ShareAuditResponse { events }))
    }
}

/// The audit action of a run: `ask` or `exec`.
fn action_of(start: &proto::ExecStart) -> &'static str {
    if start.ask.is_some() { "ask" } else { "exec" }
}

/// A fleet member's access, with the attach token the client sent ("" = none).
fn access_of(c: &Caller, token: &str) -> Access {
    Access::user(c.user.id, Some(token).filter(|t| !t.is_empty()).map(|t| Secret::new(t.to_string())))
}
