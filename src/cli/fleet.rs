//! `cmdop whoami`, `cmdop fleet list | use | token create`.

use serde_json::json;

use super::args::{FleetCommand, TokenCommand};
use super::client;
use super::error::CliError;
use super::home;
use crate::proto;

fn json_out(value: &serde_json::Value) {
    println!("{value}");
}

/// `cmdop whoami [--json]`.
pub(crate) async fn whoami(json: bool) -> Result<i32, CliError> {
    let (mut client, creds) = client::connect().await?;
    let me = client.whoami(proto::WhoamiRequest {}).await?.into_inner();
    if json {
        json_out(
            &json!({"user_id": me.user_id, "email": me.email, "fleet": me.fleet, "role": me.role, "server_url": creds.server_url}),
        );
    } else {
        println!("{} ({} of fleet {}) on {}", me.email, me.role, me.fleet, creds.server_url);
    }
    Ok(0)
}

/// `cmdop fleet audit [--since D] [--machine M] [--json]`.
async fn audit(
    client: &mut super::client::Client,
    since: Option<std::time::Duration>,
    machine: Option<String>,
    json: bool,
) -> Result<i32, CliError> {
    let machine_id = match machine {
        Some(m) => super::machines::resolve(client, &m).await?.id,
        None => String::new(),
    };
    let since_seconds = since.map_or(0, |d| d.as_secs().max(1));
    let events = client.list_audit(proto::ListAuditRequest { since_seconds, machine_id }).await?.into_inner().events;
    if json {
        let rows: Vec<_> = events
            .iter()
            .map(|e| {
                let machine = Some(e.machine_id.as_str()).filter(|m| !m.is_empty());
                json!({"at": e.at, "actor": e.actor, "surface": e.surface, "action": e.action, "machine_id": machine, "detail": e.detail})
            })
            .collect();
        json_out(&json!(rows));
        return Ok(0);
    }
    for e in &events {
        let machine = e.machine_id.get(..8).unwrap_or("-");
        println!("{}  {:<24} {:<5} {:<14} {:<8} {}", e.at, e.actor, e.surface, e.action, machine, e.detail);
    }
    Ok(0)
}

/// A one-time enrollment token for the active fleet; `None` takes the server's default lifetime.
pub(crate) async fn create_token(
    client: &mut client::Client,
    ttl: Option<std::time::Duration>,
) -> Result<proto::CreateEnrollTokenResponse, CliError> {
    let ttl_seconds = ttl.map_or(0, |t| t.as_secs());
    Ok(client.create_enroll_token(proto::CreateEnrollTokenRequest { ttl_seconds }).await?.into_inner())
}

/// `cmdop fleet ...`.
pub(crate) async fn run(cmd: FleetCommand) -> Result<i32, CliError> {
    let (mut client, _) = client::connect().await?;
    match cmd {
        FleetCommand::List { json } => {
            let fleets = client.list_fleets(proto::ListFleetsRequest {}).await?.into_inner().fleets;
            let active = home::load_settings().map_err(|e| CliError::Failed(format!("{e:#}")))?.fleet;
            let active = active.or_else(|| fleets.first().map(|f| f.name.clone()));
            if json {
                let rows: Vec<_> = fleets
                    .iter()
                    .map(|f| json!({"name": f.name, "role": f.role, "active": Some(&f.name) == active.as_ref()}))
                    .collect();
                json_out(&json!(rows));
            } else {
                for f in &fleets {
                    let mark = if Some(&f.name) == active.as_ref() { "*" } else { " " };
                    println!("{mark} {:<24} {}", f.name, f.role);
                }
            }
            Ok(0)
        }
        FleetCommand::Use { name } => {
            let fleets = client.list_fleets(proto::ListFleetsRequest {}).await?.into_inner().fleets;
            if !fleets.iter().any(|f| f.name == name) {
                let names: Vec<_> = fleets.iter().map(|f| f.name.as_str()).collect();
                return Err(CliError::Usage(format!(
                    "you are not a member of fleet {name:?}; yours: {}",
                    names.join(", ")
                )));
            }
            let mut settings = home::load_settings().map_err(|e| CliError::Failed(format!("{e:#}")))?;
            settings.fleet = Some(name.clone());
            home::save_settings(&settings).map_err(|e| CliError::Failed(format!("{e:#}")))?;
            println!("active fleet: {name}");
            Ok(0)
        }
        FleetCommand::Audit { since, machine, json } => audit(&mut client, since, machine, json).await,
        FleetCommand::Token(TokenCommand::Create { ttl, json }) => {
            let t = create_token(&mut client, ttl).await?;
            if json {
                json_out(&json!({"token": t.token, "fleet": t.fleet, "expires_at": t.expires_at}));
            } else {
                println!("{}", t.token);
                eprintln!("one-time token for fleet {}, valid until {}", t.fleet, t.expires_at);
                eprintln!("on the machine: cmdop agent --server <URL> --token {}", t.token);
            }
            Ok(0)
        }
    }
}
