//! `cmdop connect --list` and resolving a typed machine name.

use serde::Serialize;

use super::client::Client;
use super::error::CliError;
use crate::core::resolver::{self, Candidate};
use crate::proto;

impl Candidate for proto::MachineInfo {
    fn id(&self) -> String {
        self.id.clone()
    }
    fn hostname(&self) -> &str {
        &self.hostname
    }
    fn display_name(&self) -> Option<&str> {
        Some(self.display_name.as_str()).filter(|d| !d.is_empty())
    }
}

/// The machines of the active fleet.
pub(crate) async fn fetch(client: &mut Client) -> Result<Vec<proto::MachineInfo>, CliError> {
    Ok(client.list_machines(proto::ListMachinesRequest {}).await?.into_inner().machines)
}

/// The one machine `query` names (exit 2 with candidates otherwise).
pub(crate) async fn resolve(client: &mut Client, query: &str) -> Result<proto::MachineInfo, CliError> {
    let machines = fetch(client).await?;
    Ok(resolver::resolve(query, &machines)?.clone())
}

/// A machine as `connect --list --json` prints it (CONTRACT.md).
#[derive(Serialize)]
struct Row<'a> {
    id: &'a str,
    hostname: &'a str,
    display_name: Option<&'a str>,
    online: bool,
    last_seen: Option<&'a str>,
}

/// `cmdop connect --list [--online] [--json]`.
pub(crate) async fn list(client: &mut Client, online_only: bool, json: bool) -> Result<i32, CliError> {
    let machines: Vec<_> = fetch(client).await?.into_iter().filter(|m| m.online || !online_only).collect();
    if json {
        let rows: Vec<Row> = machines
            .iter()
            .map(|m| Row {
                id: &m.id,
                hostname: &m.hostname,
                display_name: m.display_name(),
                online: m.online,
                last_seen: Some(m.last_seen.as_str()).filter(|s| !s.is_empty()),
            })
            .collect();
        println!("{}", serde_json::to_string(&rows).map_err(|e| CliError::Failed(e.to_string()))?);
        return Ok(0);
    }
    if machines.is_empty() {
        println!("no machines{}; enroll one with `cmdop fleet token create`", if online_only { " online" } else { "" });
        return Ok(0);
    }
    println!("{:<24} {:<20} {:<10} {:<8} LAST SEEN", "HOSTNAME", "DISPLAY NAME", "ID", "STATUS");
    for m in &machines {
        println!(
            "{:<24} {:<20} {:<10} {:<8} {}",
            m.hostname,
            m.display_name().unwrap_or("-"),
            m.id.get(..8).unwrap_or(&m.id),
            if m.online { "online" } else { "offline" },
            ago(&m.last_seen),
        );
    }
    Ok(0)
}

/// "12s ago" from an RFC 3339 time.
pub(crate) fn ago(rfc3339: &str) -> String {
    use time::format_description::well_known::Rfc3339;
    let Ok(t) = time::OffsetDateTime::parse(rfc3339, &Rfc3339) else {
        return "never".into();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds().max(0);
    match secs {
        s if s < 60 => format!("{s}s ago"),
        s if s < 3600 => format!("{}m ago", s / 60),
        s if s < 86_400 => format!("{}h ago", s / 3600),
        s => format!("{}d ago", s / 86_400),
    }
}
