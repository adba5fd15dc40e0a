//! `cmdop connect sessions [MACHINE] [--json]` and `cmdop connect kill MACHINE SESSION`.

use serde::Serialize;

use super::client::Client;
use super::error::CliError;
use super::home::AttachTokens;
use super::machines;
use super::unlock::Unlocker;
use crate::proto;

/// A session as `connect sessions --json` prints it.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    name: Option<&'a str>,
    machine_id: &'a str,
    hostname: &'a str,
    persistent: bool,
    created_at: &'a str,
    last_attached_at: &'a str,
    attached: u32,
}

fn row(s: &proto::SessionInfo) -> Row<'_> {
    Row {
        id: &s.id,
        name: Some(s.name.as_str()).filter(|n| !n.is_empty()),
        machine_id: &s.machine_id,
        hostname: &s.hostname,
        persistent: s.persistent,
        created_at: &s.created_at,
        last_attached_at: &s.last_attached_at,
        attached: s.attached,
    }
}

/// `cmdop connect sessions [MACHINE] [--json]`.
pub(crate) async fn list(client: &mut Client, machine: Option<String>, json: bool) -> Result<i32, CliError> {
    let answer = match machine {
        Some(query) => {
            let machine = machines::resolve(client, &query).await?;
            let mut unlocker = Unlocker::new(&machine);
            loop {
                let attach_tokens = [(machine.id.clone(), unlocker.token())].into();
                let request = proto::ListSessionsRequest { machine_id: machine.id.clone(), attach_tokens };
                match client.list_sessions(request).await {
                    Ok(answer) => break answer.into_inner(),
                    Err(status) if unlocker.answer(client, &status).await? => continue,
                    Err(status) => return Err(status.into()),
                }
            }
        }
        None => {
            let attach_tokens = AttachTokens::load().all();
            client
                .list_sessions(proto::ListSessionsRequest { machine_id: String::new(), attach_tokens })
                .await?
                .into_inner()
        }
    };
    for hostname in &answer.unreachable {
        eprintln!("cmdop: machine {hostname} did not answer; its sessions are not listed");
    }
    for hostname in &answer.locked {
        eprintln!(
            "cmdop: machine {hostname} has an attach password; list its sessions with `cmdop connect sessions {hostname}`"
        );
    }
    if json {
        let rows: Vec<Row> = answer.sessions.iter().map(row).collect();
        println!("{}", serde_json::to_string(&rows).map_err(|e| CliError::Failed(e.to_string()))?);
        return Ok(0);
    }
    if answer.sessions.is_empty() {
        println!("no shell sessions; start one with `cmdop connect MACHINE --session NAME`");
        return Ok(0);
    }
    println!(
        "{:<16} {:<10} {:<20} {:<10} {:<14} {:<14} ATTACHED",
        "NAME", "ID", "MACHINE", "KIND", "CREATED", "LAST ATTACHED"
    );
    for s in &answer.sessions {
        println!(
            "{:<16} {:<10} {:<20} {:<10} {:<14} {:<14} {}",
            Some(s.name.as_str()).filter(|n| !n.is_empty()).unwrap_or("-"),
            s.id.get(..8).unwrap_or(&s.id),
            s.hostname,
            if s.persistent { "persistent" } else { "one-shot" },
            machines::ago(&s.created_at),
            machines::ago(&s.last_attached_at),
            s.attached,
        );
    }
    Ok(0)
}

/// `cmdop connect kill MACHINE SESSION`.
pub(crate) async fn kill(client: &mut Client, machine: &str, session: &str) -> Result<i32, CliError> {
    let machine = machines::resolve(client, machine).await?;
    let mut unlocker = Unlocker::new(&machine);
    let killed = loop {
        let request = proto::KillSessionRequest {
            machine_id: machine.id.clone(),
            session: session.to_string(),
            attach_token: unlocker.token(),
        };
        match client.kill_session(request).await {
            Ok(answer) => break answer.into_inner().session.unwrap_or_default(),
            Err(status) if unlocker.answer(client, &status).await? => continue,
            Err(status) => return Err(status.into()),
        }
    };
    let name = Some(killed.name.as_str()).filter(|n| !n.is_empty()).unwrap_or(&killed.id);
    println!("killed session {name} on {}", machine.hostname);
    Ok(0)
}
