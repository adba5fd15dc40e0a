//! What both ends of the CLI API agree on outside the generated messages: gRPC metadata keys
//! and the OAuth token response.

use serde::{Deserialize, Serialize};

/// Metadata key naming the caller's active fleet (`cmdop fleet use NAME`).
pub(crate) const FLEET_HEADER: &str = "x-cmdop-fleet";

/// Metadata key of an attach-password refusal: `required`, `wrong` or `throttled`
/// (`Denial::code`); a throttled one also carries `retry-after` seconds.
pub(crate) const DENIAL_HEADER: &str = "cmdop-denial";

/// Metadata key naming the client surface a call comes from (`cli`, `mcp`), for the audit log.
pub(crate) const SURFACE_HEADER: &str = "x-cmdop-surface";

/// Metadata key classifying a failure clients act on; its one value today is `NO_ASK_HANDLER`.
pub(crate) const ERROR_HEADER: &str = "cmdop-error";

/// `ERROR_HEADER` of an ask to a machine whose agent runs without `--ask-handler`.
pub(crate) const NO_ASK_HANDLER: &str = "no-ask-handler";

/// Environment of an ask handler: who asks (their email) and the ask's id.
pub(crate) const ASK_FROM_ENV: &str = "CMDOP_ASK_FROM";
/// See `ASK_FROM_ENV`.
pub(crate) const ASK_ID_ENV: &str = "CMDOP_ASK_ID";

/// The `grpc-message` of the `UNAVAILABLE` status every open stream ends with when the server
/// shuts down: agents reconnect at once instead of backing off.
pub(crate) const SERVER_SHUTTING_DOWN: &str = "server shutting down";

/// A token response (RFC 6749 section 5.1).
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct TokenPair {
    /// `cmdop_...`, sent as `Authorization: Bearer`.
    pub(crate) access_token: String,
    /// `cmdopr_...`, traded once for a new pair.
    pub(crate) refresh_token: String,
    /// Always `Bearer`.
    pub(crate) token_type: String,
    /// Seconds until the access token expires.
    pub(crate) expires_in: i64,
}

impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair").field("expires_in", &self.expires_in).finish_non_exhaustive()
    }
}

/// Path of the console's one-time sign-in ticket endpoint (`cmdop console`): a bearer-token
/// POST answered with `ConsoleTicket`.
pub(crate) const CONSOLE_TICKET_PATH: &str = "/console/ticket";

/// A one-time URL that signs a browser in to the web console (CONTRACT.md, "Web console").
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct ConsoleTicket {
    /// Open it in a browser within the minute; it works once.
    pub(crate) url: String,
    /// RFC 3339 UTC.
    pub(crate) expires_at: String,
}
