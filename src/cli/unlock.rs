//! The CLI side of attach passwords: send the cached attach token with `exec` and `attach`;
//! when the machine asks for its password, prompt for it (no echo), unlock, cache the token
//! in `CMDOP_HOME` (0600, per machine, 24 h) and try once more. Wrong answers exit 6.

use std::io::IsTerminal;

use tonic::{Code, Status};

use super::client::Client;
use super::error::CliError;
use super::home::AttachTokens;
use crate::proto;

/// The attach password state of one command against one machine.
pub(crate) struct Unlocker {
    machine_id: String,
    hostname: String,
    tokens: AttachTokens,
    /// The password was asked (and accepted) once already.
    asked: bool,
}

/// Whether a failed start is the machine asking for its attach password.
pub(crate) fn asks(status: &Status) -> bool {
    status.code() == Code::PermissionDenied
        && status.metadata().get(crate::core::wire::DENIAL_HEADER).is_some_and(|v| v.as_bytes() == b"required")
}

impl Unlocker {
    /// For `machine`, with the token cached for it (if any).
    pub(crate) fn new(machine: &proto::MachineInfo) -> Self {
        Self {
            machine_id: machine.id.clone(),
            hostname: machine.hostname.clone(),
            tokens: AttachTokens::load(),
            asked: false,
        }
    }

    /// The attach token to send ("" = none).
    pub(crate) fn token(&self) -> String {
        self.tokens.get(&self.machine_id).map(|t| t.expose().clone()).unwrap_or_default()
    }

    /// After a failed start: `Ok(true)` when the machine asked for its password and it was
    /// answered (start again with `token()`), `Ok(false)` when the failure is about something
    /// else (report it as it is).
    pub(crate) async fn answer(&mut self, client: &mut Client, status: &Status) -> Result<bool, CliError> {
        if !asks(status) {
            return Ok(false);
        }
        // The cached token (if one was sent) is no good any more: expired, or the password changed.
        let _ = self.tokens.put(&self.machine_id, None);
        if self.asked {
            return Err(CliError::Denied(format!(
                "machine {} refused the attach token it just issued (was its password changed meanwhile?): try again",
                self.hostname
            )));
        }
        self.asked = true;
        let no_terminal = || {
            CliError::Denied(format!(
                "machine {} asks for its attach password, and there is no terminal to ask it on: \
                 run the command once in a terminal (the answer is remembered for 24 h)",
                self.hostname
            ))
        };
        // Ask only a person at a terminal: a script's stdin is not theirs to prompt on.
        if !std::io::stdin().is_terminal() {
            return Err(no_terminal());
        }
        let prompt = format!("attach password for {}: ", self.hostname);
        let password = rpassword::prompt_password(prompt).map_err(|_| no_terminal())?;
        let req = proto::UnlockRequest { machine_id: self.machine_id.clone(), password };
        let resp = client.unlock(req).await.map_err(CliError::from)?.into_inner();
        let expires = time::OffsetDateTime::parse(&resp.expires_at, &time::format_description::well_known::Rfc3339)
            .map(|t| t.unix_timestamp())
            .unwrap_or_else(|_| crate::core::clock::now() + 3600);
        // No token: the password was cleared meanwhile and the machine lets anyone in.
        let grant = Some((resp.attach_token.as_str(), expires)).filter(|(t, _)| !t.is_empty());
        if let Err(e) = self.tokens.put(&self.machine_id, grant) {
            eprintln!("cmdop: cannot remember the attach token ({e:#}); the password will be asked again next time");
        }
        Ok(true)
    }
}
