//! `Api.ListSessions` and `Api.KillSession`: shell sessions as the agents report them.

use futures_util::future::join_all;
use tonic::Status;

use crate::core::clock::rfc3339;
use crate::core::session::{Access, Denial, Ending, Exit, OpenSpec, SessionEvent, SessionKind, SessionSummary};
use crate::proto;
use crate::server::relay::router::{RouteError, SessionRouter};
use crate::store::Machine;

/// Whether `machine`'s attach password admits `access` (always, without a password): an exec
/// with no argv, which the agent answers after its password check without running anything.
pub async fn check_grant(router: &dyn SessionRouter, machine: &Machine, access: Access) -> Result<(), RouteError> {
    let spec = OpenSpec { kind: SessionKind::Exec, argv: vec![], env: vec![], cols: 0, rows: 0, timeout: None, access };
    let mut port = router.open(machine.id, spec).await?;
    loop {
        match port.events.recv().await {
            Some(SessionEvent::Exited(Exit { ending: Ending::Denied(d), .. })) => return Err(RouteError::Denied(d)),
            Some(SessionEvent::Exited(_)) => return Ok(()),
            Some(SessionEvent::Lost) | None => return Err(RouteError::Offline),
            Some(_) => {}
        }
    }
}

/// A summary as the API returns it.
pub(crate) fn info_of(s: &SessionSummary, machine: &Machine) -> proto::SessionInfo {
    let ms_to_rfc = |ms: u64| rfc3339(i64::try_from(ms / 1000).unwrap_or(i64::MAX));
    proto::SessionInfo {
        id: s.id.to_string(),
        name: s.name.clone().unwrap_or_default(),
        machine_id: machine.id.to_string(),
        hostname: machine.hostname.clone(),
        persistent: s.persistent,
        created_at: ms_to_rfc(s.created_unix_ms),
        last_attached_at: ms_to_rfc(s.last_attached_unix_ms),
        attached: s.attached,
        pid: s.pid,
        output_bytes: s.output_bytes,
    }
}

/// Asks every machine at once (an offline one answers at once with an error); sessions of
/// the machines that answered, and the hostnames of those that did not.
/// Machines whose attach password does not admit the caller (`access` per machine) are named
/// in `locked` instead.
pub(crate) async fn gather(
    router: &dyn SessionRouter,
    machines: &[Machine],
    access: impl Fn(&Machine) -> Access,
) -> proto::ListSessionsResponse {
    let ask = |m: &Machine| {
        let access = access(m);
        let (id, m) = (m.id, m.clone());
        async move {
            check_grant(router, &m, access).await?;
            router.list_sessions(id).await
        }
    };
    let answers = join_all(machines.iter().map(ask)).await;
    let mut response = proto::ListSessionsResponse::default();
    for (machine, answer) in machines.iter().zip(answers) {
        match answer {
            Ok(sessions) => response.sessions.extend(sessions.iter().map(|s| info_of(s, machine))),
            Err(RouteError::Denied(Denial::Required | Denial::Wrong | Denial::Throttled(_))) => {
                response.locked.push(machine.hostname.clone());
            }
            Err(e) => {
                tracing::debug!(machine = %machine.id, error = %e, "machine did not list its sessions");
                response.unreachable.push(machine.hostname.clone());
            }
        }
    }
    response
}

/// A kill target must name something.
pub(crate) fn check_target(session: &str) -> Result<(), Status> {
    if session.is_empty() {
        return Err(Status::invalid_argument("name the session to kill (its name or id)"));
    }
    Ok(())
}
