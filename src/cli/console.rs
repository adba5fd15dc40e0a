//! `cmdop console`: a one-time URL that signs a browser in to the web console as this CLI's
//! user (60 s, single use), minted by the server with the CLI's bearer token.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::client;
use super::error::CliError;
use super::home;
use crate::core::wire::{CONSOLE_TICKET_PATH, ConsoleTicket, FLEET_HEADER};

/// Asks the server for a one-time sign-in URL in the active fleet.
pub(crate) async fn ticket() -> Result<ConsoleTicket, CliError> {
    let creds = client::credentials().await?;
    let settings = home::load_settings().map_err(|e| CliError::Failed(format!("{e:#}")))?;
    let url = format!("{}{CONSOLE_TICKET_PATH}", creds.server_url.trim_end_matches('/'));
    let mut request =
        crate::sys::dial::http().post(&url).bearer_auth(&creds.access_token).timeout(Duration::from_secs(15));
    if let Some(fleet) = settings.fleet {
        request = request.header(FLEET_HEADER, fleet);
    }
    let resp = request
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("cannot reach the server at {}: {e}", creds.server_url)))?;
    let status = resp.status();
    if status.is_success() {
        return resp.json().await.map_err(|e| CliError::Failed(format!("bad answer from the server: {e}")));
    }
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    let message = body["error"].as_str().unwrap_or("the server refused").to_string();
    Err(match status.as_u16() {
        401 => CliError::Unauthenticated(message),
        403 => CliError::Denied(message),
        404 => CliError::Failed(format!("this server has no web console ({url} answered 404): upgrade it")),
        _ => CliError::Failed(format!("{message} (HTTP {status})")),
    })
}

/// `cmdop console [--json] [--no-open]`.
pub(crate) async fn run(json: bool, no_open: bool) -> Result<i32, CliError> {
    let ticket = ticket().await?;
    if json {
        let line = serde_json::json!({ "url": ticket.url, "expires_at": ticket.expires_at });
        println!("{line}");
    } else {
        println!("Open this URL within a minute to sign in to the web console (it works once):\n\n  {}\n", ticket.url);
    }
    if !no_open && has_display() {
        open_browser(&ticket.url);
    }
    Ok(0)
}

/// Whether a graphical session is there to open a browser in.
fn has_display() -> bool {
    ["DISPLAY", "WAYLAND_DISPLAY"].iter().any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()))
}

/// Hands the URL to the desktop's browser; a failure only means the user opens it by hand.
fn open_browser(url: &str) {
    let started =
        Command::new("xdg-open").arg(url).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    if let Err(e) = started {
        tracing::debug!(error = %e, "could not run xdg-open");
    }
}
