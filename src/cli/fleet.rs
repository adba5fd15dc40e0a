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
