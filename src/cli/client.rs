//! The authenticated API client every CLI command uses. Credentials come from one place
//! (`credentials`), which refreshes the access token about 5 minutes before it expires.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use super::error::CliError;
use super::home::{self, Credentials};
use crate::core::wire::TokenPair;
use crate::core::wire::{FLEET_HEADER, SURFACE_HEADER};
use crate::proto::api_client::ApiClient;

/// Refresh the access token when it has less than this left: 5 minutes.
const REFRESH_MARGIN_SECS: i64 = 300;

/// What every call carries: the bearer token, the active fleet and the client surface.
/// Cheap to clone, so one signed-in client serves concurrent calls (fan-out, MCP).
#[derive(Clone)]
pub(crate) struct Auth {
    bearer: MetadataValue<Ascii>,
    fleet: Option<MetadataValue<Ascii>>,
    surface: MetadataValue<Ascii>,
}

impl Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let meta = req.metadata_mut();
        meta.insert("authorization", self.bearer.clone());
        if let Some(f) = &self.fleet {
            meta.insert(FLEET_HEADER, f.clone());
        }
        meta.insert(SURFACE_HEADER, self.surface.clone());
        Ok(req)
    }
}

/// An API client carrying the bearer token and the active fleet.
pub(crate) type Client = ApiClient<InterceptedService<Channel, Auth>>;

/// The client surface a signed-in client speaks for, as the audit log names it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Surface {
    /// The `cmdop` command line.
    Cli,
    /// `cmdop mcp`: an AI agent's tool calls.
    Mcp,
}

/// The credentials to use now: loaded, refreshed when close to expiry, or `NotSignedIn`.
pub(crate) async fn credentials() -> Result<Credentials, CliError> {
    let creds =
        home::load_credentials().map_err(|e| CliError::Failed(format!("{e:#}")))?.ok_or(CliError::NotSignedIn)?;
    if creds.expires_at - crate::core::clock::now() > REFRESH_MARGIN_SECS {
        return Ok(creds);
    }
    let fresh = refresh(&creds).await?;
    home::save_credentials(&fresh).map_err(|e| CliError::Failed(format!("{e:#}")))?;
    Ok(fresh)
}

async fn refresh(creds: &Credentials) -> Result<Credentials, CliError> {
    let url = format!("{}/oauth/token", creds.server_url);
    let form = [("grant_type", "refresh_token"), ("refresh_token", creds.refresh_token.as_str())];
    let resp = crate::sys::dial::http()
        .post(&url)
        .form(&form)
        .timeout(Duration::from_secs(15))
        .send()
        .await
        .map_err(|e| CliError::Failed(format!("cannot reach the server at {}: {e}", creds.server_url)))?;
    if !resp.status().is_success() {
        return Err(CliError::NotSignedIn);
    }
    let pair: TokenPair = resp.json().await.map_err(|e| CliError::Failed(format!("bad token response: {e}")))?;
    Ok(Credentials::from_pair(&creds.server_url, &pair))
}

/// Opens a channel to the server.
pub(crate) async fn channel(server_url: &str) -> Result<Channel, CliError> {
    crate::sys::dial::connect(server_url).await.map_err(CliError::Failed)
}

/// A signed-in client for the active fleet, and the credentials it uses.
pub(crate) async fn connect() -> Result<(Client, Credentials), CliError> {
    connect_as(Surface::Cli).await
}

/// `connect`, speaking for `surface`.
pub(crate) async fn connect_as(surface: Surface) -> Result<(Client, Credentials), CliError> {
    let creds = credentials().await?;
    let settings = home::load_settings().map_err(|e| CliError::Failed(format!("{e:#}")))?;
    let channel = channel(&creds.server_url).await?;
    let bearer: MetadataValue<_> =
        format!("Bearer {}", creds.access_token).parse().map_err(|_| CliError::NotSignedIn)?;
    let fleet: Option<MetadataValue<_>> = settings.fleet.and_then(|f| f.parse().ok());
    let surface = MetadataValue::from_static(match surface {
        Surface::Cli => "cli",
        Surface::Mcp => "mcp",
    });
    let auth = Auth { bearer, fleet, surface };
    let client = ApiClient::with_interceptor(channel, auth).max_decoding_message_size(16 << 20);
    Ok((client, creds))
}
