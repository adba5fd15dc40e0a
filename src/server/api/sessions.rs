//! `Api.ListSessions` and `Api.KillSession`: shell sessions as the agents report them.

use futures_util::future::join_all;
use tonic::Status;

use crate::core::clock::rfc3339;
use crate::core::session::SessionSummary;
use crate::proto;
use crate::server::relay::router::SessionRouter;
use crate::store::Machine;

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
pub(crate) async fn gather(router: &dyn SessionRouter, machines: &[Machine]) -> proto::ListSessionsResponse {
    let answers = join_all(machines.iter().map(|m| router.list_sessions(m.id))).await;
    let mut response = proto::ListSessionsResponse::default();
    for (machine, answer) in machines.iter().zip(answers) {
        match answer {
            Ok(sessions) => response.sessions.extend(sessions.iter().map(|s| info_of(s, machine))),
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
