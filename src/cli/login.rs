//! `cmdop login` (RFC 8628 device authorization grant against our server) and `cmdop logout`.

use std::time::Duration;

use serde::Deserialize;

use super::error::CliError;
use super::home::{self, Credentials};
use crate::core::wire::TokenPair;

/// What `POST /oauth/device` answers.
#[derive(Debug, Deserialize)]
pub(crate) struct DeviceCode {
    /// Secret polled with.
    pub(crate) device_code: String,
    /// What the person types.
    pub(crate) user_code: String,
    /// Where to type it.
    pub(crate) verification_uri: String,
    /// The same with the code filled in.
    pub(crate) verification_uri_complete: String,
    /// Seconds until the codes expire.
    pub(crate) expires_in: u64,
    /// Seconds between polls.
    pub(crate) interval: u64,
}

#[derive(Debug, Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: String,
}

fn unreachable(server: &str, e: impl std::fmt::Display) -> CliError {
    CliError::Failed(format!("cannot reach the server at {server}: {e}"))
}

/// Starts a device grant on `server`.
async fn request_device_code(server: &str) -> Result<DeviceCode, CliError> {
    let host = crate::sys::host::hostname();
    let form = [("client_id", "cmdop-cli"), ("client_name", "cmdop CLI"), ("client_host", host.as_str())];
    let resp = crate::sys::dial::http()
        .post(format!("{server}/oauth/device"))
        .form(&form)
        .send()
        .await
        .map_err(|e| unreachable(server, e))?;
    if !resp.status().is_success() {
        let status = resp.status();
        let why = resp.json::<OAuthError>().await.map(|e| e.error_description).unwrap_or_default();
        return Err(CliError::Failed(format!("the server refused to start a sign-in ({status}): {why}")));
    }
    resp.json().await.map_err(|e| CliError::Failed(format!("{server} did not answer like a cmdop server: {e}")))
}

/// Polls until the grant is approved (tokens), denied or expired. Bounded by `expires_in`.
async fn poll_tokens(server: &str, code: &DeviceCode) -> Result<TokenPair, CliError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(code.expires_in);
    let mut interval = Duration::from_secs(code.interval.max(1));
    let form =
        [("grant_type", "urn:ietf:params:oauth:grant-type:device_code"), ("device_code", code.device_code.as_str())];
    let mut first = true;
    while tokio::time::Instant::now() < deadline {
        if !first {
            tokio::time::sleep(interval).await;
        }
        first = false;
        let resp = crate::sys::dial::http()
            .post(format!("{server}/oauth/token"))
            .form(&form)
            .send()
            .await
            .map_err(|e| unreachable(server, e))?;
        if resp.status().is_success() {
            return resp.json().await.map_err(|e| CliError::Failed(format!("bad token answer: {e}")));
        }
        let err: OAuthError = resp.json().await.map_err(|e| CliError::Failed(format!("bad token answer: {e}")))?;
        match err.error.as_str() {
            "authorization_pending" => {}
            "slow_down" => interval += Duration::from_secs(5),
            "access_denied" => {
                return Err(CliError::Denied("sign-in denied in the browser".into()));
            }
            "expired_token" => {
                return Err(CliError::Failed(
                    "the code expired before it was approved: run `cmdop login` again".into(),
                ));
            }
            _ => {
                return Err(CliError::Failed(format!("sign-in failed: {} {}", err.error, err.error_description)));
            }
        }
    }
    Err(CliError::Failed("the code expired before it was approved: run `cmdop login` again".into()))
}

fn open_browser(url: &str) {
    let has_display = std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some();
    if has_display {
        let _ = std::process::Command::new("xdg-open")
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// The server to sign in to: the flag, `CMDOP_SERVER`, or the one signed in to before.
fn pick_server(flag: Option<String>) -> Result<String, CliError> {
    let previous = home::load_credentials().ok().flatten().map(|c| c.server_url);
    flag.or_else(|| std::env::var("CMDOP_SERVER").ok().filter(|s| !s.is_empty()))
        .or(previous)
        .map(|s| s.trim_end_matches('/').to_string())
        .ok_or_else(|| CliError::Usage("which server? run `cmdop login --server URL`".into()))
}

/// The whole device flow against `server`, ending with saved credentials: start a grant, let
/// `approve` present it to whoever approves it (a person in a browser, or quickstart's local
/// shortcut), and poll until tokens come.
pub(crate) async fn sign_in<F, Fut>(server: &str, approve: F) -> Result<(), CliError>
where
    F: FnOnce(&DeviceCode) -> Fut,
    Fut: Future<Output = Result<(), CliError>>,
{
    let code = request_device_code(server).await?;
    approve(&code).await?;
    let pair = poll_tokens(server, &code).await?;
    home::save_credentials(&Credentials::from_pair(server, &pair)).map_err(|e| CliError::Failed(format!("{e:#}")))
}

/// Shows the code to the person and opens their browser where there is a display.
fn ask_person(code: &DeviceCode) -> std::future::Ready<Result<(), CliError>> {
    eprintln!("To sign in, open {}", code.verification_uri);
    eprintln!("and enter the code {}", code.user_code);
    eprintln!("(or open {})", code.verification_uri_complete);
    open_browser(&code.verification_uri_complete);
    eprintln!("waiting for approval...");
    std::future::ready(Ok(()))
}

/// `cmdop login [--server URL]`.
pub(crate) async fn login(server: Option<String>) -> Result<i32, CliError> {
    let server = pick_server(server)?;
    sign_in(&server, ask_person).await?;
    eprintln!("signed in to {server}");
    Ok(0)
}

/// `cmdop logout`: revokes both tokens on the server (best effort) and forgets them.
pub(crate) async fn logout() -> Result<i32, CliError> {
    let Some(creds) = home::load_credentials().map_err(|e| CliError::Failed(format!("{e:#}")))? else {
        eprintln!("not signed in");
        return Ok(0);
    };
    for token in [&creds.refresh_token, &creds.access_token] {
        let form = [("token", token.as_str())];
        if let Err(e) =
            crate::sys::dial::http().post(format!("{}/oauth/revoke", creds.server_url)).form(&form).send().await
        {
            eprintln!("warning: could not revoke on the server ({e}); forgetting the tokens anyway");
            break;
        }
    }
    home::delete_credentials().map_err(|e| CliError::Failed(format!("{e:#}")))?;
    eprintln!("signed out of {}", creds.server_url);
    Ok(0)
}
