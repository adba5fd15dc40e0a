//! Share-link RPCs: create, list, revoke, audit. Authorization lives here; the link logic in
//! `crate::server::links`.

use std::time::Duration;

use tonic::Status;

use super::auth::Caller;
use crate::core::clock::rfc3339;
use crate::core::ids::{LinkId, MachineId};
use crate::proto;
use crate::server::grpc::internal;
use crate::server::links::{LinkRequestError, LinkSpec, Links};
use crate::store::{LinkRow, Machine, Role};

/// Default link lifetime: 24 hours.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(86_400);

/// The one mapping from link errors to gRPC status.
pub(crate) fn link_status(e: LinkRequestError) -> Status {
    match e {
        e @ LinkRequestError::BadTtl { .. } => Status::invalid_argument(e.to_string()),
        e @ LinkRequestError::UnknownLink(_) => Status::not_found(e.to_string()),
        LinkRequestError::Store(e) => internal(e),
    }
}

/// Mints a link for `machine`.
pub(crate) async fn create(
    links: &Links,
    c: &Caller,
    machine: &Machine,
    req: &proto::CreateShareRequest,
    public_url: &str,
) -> Result<proto::ShareInfo, Status> {
    c.require(Role::Member, "sharing a machine")?;
    let ttl = match req.ttl_seconds {
        0 => DEFAULT_TTL,
        s => Duration::from_secs(s),
    };
    let spec = LinkSpec {
        user: c.user.id,
        fleet: c.fleet.id,
        machine: machine.id,
        ttl,
        read_only: req.read_only,
        max_opens: (req.max_opens > 0).then_some(i64::from(req.max_opens)),
        session: Some(req.session.clone()).filter(|s| !s.is_empty()),
    };
    let minted = links.create(spec).await.map_err(link_status)?;
    tracing::info!(link = %minted.id, machine = %machine.id, user = %c.user.email, "share link created");
    Ok(proto::ShareInfo {
        id: minted.id.to_string(),
        url: format!("{public_url}/s/{}", minted.token.expose()),
        machine_id: machine.id.to_string(),
        expires_at: rfc3339(minted.expires_at),
        read_only: req.read_only,
        created_by: c.user.email.clone(),
        created_at: rfc3339(crate::core::clock::now()),
        max_opens: req.max_opens,
        ..Default::default()
    })
}

/// A stored link as the API shows it (no URL: the token is not stored).
pub(crate) fn info(links: &Links, l: &LinkRow) -> proto::ShareInfo {
    proto::ShareInfo {
        id: l.id.to_string(),
        url: String::new(),
        machine_id: l.machine_id.to_string(),
        expires_at: rfc3339(l.expires_at),
        read_only: l.read_only,
        created_by: l.created_by_email.clone(),
        created_at: rfc3339(l.created_at),
        revoked_at: l.revoked_at.map(rfc3339).unwrap_or_default(),
        opens: u64::try_from(l.opens).unwrap_or(0),
        active_sessions: links.active_sessions(l.id) as u64,
        max_opens: l.max_opens.and_then(|m| u32::try_from(m).ok()).unwrap_or(0),
    }
}

/// The fleet's links, optionally of one machine.
pub(crate) async fn list(
    links: &Links,
    c: &Caller,
    machine: Option<MachineId>,
) -> Result<Vec<proto::ShareInfo>, Status> {
    let rows = links.list(c.fleet.id, machine).await.map_err(internal)?;
    Ok(rows.iter().map(|l| info(links, l)).collect())
}

/// One link of the caller's fleet.
pub(crate) async fn fleet_link(links: &Links, c: &Caller, id: &str) -> Result<LinkRow, Status> {
    let unknown = || link_status(LinkRequestError::UnknownLink(id.to_string()));
    let id: LinkId = id.parse().map_err(|_| unknown())?;
    let link = links.get(id).await.map_err(internal)?.ok_or_else(unknown)?;
    if link.fleet_id != c.fleet.id {
        return Err(unknown());
    }
    Ok(link)
}

/// The links of one machine of the caller's fleet that are not revoked yet.
pub(crate) async fn unrevoked_of(links: &Links, c: &Caller, machine: MachineId) -> Result<Vec<LinkRow>, Status> {
    let all = links.list(c.fleet.id, Some(machine)).await.map_err(internal)?;
    Ok(all.into_iter().filter(|l| l.revoked_at.is_none()).collect())
}

/// Revokes links; others' links need admin.
pub(crate) async fn revoke(links: &Links, c: &Caller, rows: Vec<LinkRow>) -> Result<Vec<String>, Status> {
    c.require(Role::Member, "revoking links")?;
    if rows.iter().any(|l| l.created_by != c.user.id) {
        c.require(Role::Admin, "revoking other people's links")?;
    }
    let revoked = links.revoke(c.user.id, &rows).await.map_err(link_status)?;
    Ok(revoked.iter().map(ToString::to_string).collect())
}

/// The audit trail of a link: its creator or an admin.
pub(crate) async fn audit(links: &Links, c: &Caller, link: &LinkRow) -> Result<Vec<proto::AuditEntry>, Status> {
    if link.created_by != c.user.id {
        c.require(Role::Admin, "reading the audit log of other people's links")?;
    }
    let events = links.audit_trail(link.id).await.map_err(internal)?;
    Ok(events
        .into_iter()
        .map(|(at, actor, action, detail)| proto::AuditEntry { at: rfc3339(at), actor, action, detail })
        .collect())
}
