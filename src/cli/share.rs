//! `cmdop connect share | shares | unshare`.

use std::time::Duration;

use serde_json::json;

use super::client::Client;
use super::error::CliError;
use super::machines;
use crate::proto;

/// What to share.
pub(crate) struct ShareArgs {
    /// Machine as typed.
    pub(crate) machine: String,
    /// What the link allows.
    pub(crate) link: LinkOptions,
    /// Print JSON.
    pub(crate) json: bool,
}

/// What a new link allows.
pub(crate) struct LinkOptions {
    /// Lifetime.
    pub(crate) ttl: Duration,
    /// Viewer link.
    pub(crate) read_only: bool,
    /// Limit on sessions.
    pub(crate) max_opens: Option<u32>,
    /// Persistent session to join.
    pub(crate) session: Option<String>,
}

/// Mints a link to `machine` (its id, as the API lists it).
pub(crate) async fn create(
    client: &mut Client,
    machine: &proto::MachineInfo,
    link: LinkOptions,
) -> Result<proto::ShareInfo, CliError> {
    let req = proto::CreateShareRequest {
        machine_id: machine.id.clone(),
        ttl_seconds: link.ttl.as_secs(),
        read_only: link.read_only,
        max_opens: link.max_opens.unwrap_or(0),
        session: link.session.unwrap_or_default(),
    };
    Ok(client.create_share(req).await?.into_inner())
}

/// Creates a link and prints its URL (stdout) and details (stderr).
pub(crate) async fn share(client: &mut Client, args: ShareArgs) -> Result<i32, CliError> {
    let machine = machines::resolve(client, &args.machine).await?;
    let link = create(client, &machine, args.link).await?;
    if args.json {
        let out = json!({"id": link.id, "url": link.url, "machine_id": link.machine_id, "expires_at": link.expires_at, "read_only": link.read_only});
        println!("{out}");
        return Ok(0);
    }
    println!("{}", link.url);
    let mode = if link.read_only { "read-only" } else { "interactive" };
    eprintln!("{mode} link to {} until {} (id {})", machine.hostname, link.expires_at, link.id);
    eprintln!("anyone with this URL can use the terminal; revoke with `cmdop connect unshare {}`", link.id);
    if !machine.online {
        eprintln!("note: {} is offline right now; the link works once its agent connects", machine.hostname);
    }
    Ok(0)
}

/// Lists links, or one link's audit log.
pub(crate) async fn shares(
    client: &mut Client,
    machine: Option<String>,
    audit: Option<String>,
    json: bool,
) -> Result<i32, CliError> {
    if let Some(id) = audit {
        return show_audit(client, id, json).await;
    }
    let machine_id = match machine {
        Some(m) => machines::resolve(client, &m).await?.id,
        None => String::new(),
    };
    let links = client.list_shares(proto::ListSharesRequest { machine_id }).await?.into_inner().shares;
    if json {
        let rows: Vec<_> = links
            .iter()
            .map(|l| {
                json!({"id": l.id, "machine_id": l.machine_id, "created_by": l.created_by, "created_at": l.created_at,
                       "expires_at": l.expires_at, "read_only": l.read_only,
                       "revoked_at": Some(&l.revoked_at).filter(|r| !r.is_empty()),
                       "opens": l.opens, "active_sessions": l.active_sessions})
            })
            .collect();
        println!("{}", json!(rows));
        return Ok(0);
    }
    if links.is_empty() {
        println!("no share links; make one with `cmdop connect share MACHINE`");
        return Ok(0);
    }
    println!(
        "{:<36}  {:<10} {:<9} {:<20}  {:>5} {:>4}  CREATED BY",
        "ID", "MACHINE", "STATE", "EXPIRES", "OPENS", "LIVE"
    );
    for l in &links {
        let state = if !l.revoked_at.is_empty() {
            "revoked"
        } else if expired(&l.expires_at) {
            "expired"
        } else {
            "live"
        };
        println!(
            "{:<36}  {:<10} {:<9} {:<20}  {:>5} {:>4}  {}{}",
            l.id,
            l.machine_id.get(..8).unwrap_or(&l.machine_id),
            state,
            l.expires_at,
            l.opens,
            l.active_sessions,
            l.created_by,
            if l.read_only { " (read-only)" } else { "" }
        );
    }
    Ok(0)
}

fn expired(rfc3339: &str) -> bool {
    time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .is_ok_and(|t| t <= time::OffsetDateTime::now_utc())
}

async fn show_audit(client: &mut Client, link_id: String, json: bool) -> Result<i32, CliError> {
    let events = client.share_audit(proto::ShareAuditRequest { link_id }).await?.into_inner().events;
    if json {
        let rows: Vec<_> = events
            .iter()
            .map(|e| json!({"at": e.at, "actor": e.actor, "action": e.action, "detail": e.detail}))
            .collect();
        println!("{}", json!(rows));
    } else {
        for e in &events {
            println!("{}  {:<12} {:<38} {}", e.at, e.action, e.actor, e.detail);
        }
    }
    Ok(0)
}

/// Revokes one link or every link of a machine.
pub(crate) async fn unshare(client: &mut Client, id: Option<String>, machine: Option<String>) -> Result<i32, CliError> {
    let req = match (id, machine) {
        (Some(link_id), None) => proto::RevokeSharesRequest { link_id, machine_id: String::new() },
        (None, Some(m)) => {
            proto::RevokeSharesRequest { link_id: String::new(), machine_id: machines::resolve(client, &m).await?.id }
        }
        _ => return Err(CliError::Usage("name one link id, or --machine M".into())),
    };
    let revoked = client.revoke_shares(req).await?.into_inner().revoked;
    match revoked.len() {
        0 => println!("nothing to revoke: already revoked or none live"),
        n => println!("revoked {n} link{}: {}", if n == 1 { "" } else { "s" }, revoked.join(", ")),
    }
    Ok(0)
}
