//! The CLI's state folder (`CMDOP_HOME`, default `~/.config/cmdop`): credentials (0600) and
//! the active fleet.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::core::wire::TokenPair;

/// The CLI's folder.
pub(crate) fn dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CMDOP_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    crate::sys::dirs::home().join(".config/cmdop")
}

/// What `cmdop login` stores.
#[derive(Clone, Serialize, Deserialize)]
pub(crate) struct Credentials {
    /// The server signed in to.
    pub(crate) server_url: String,
    /// Bearer for API calls.
    pub(crate) access_token: String,
    /// Trades for a new pair.
    pub(crate) refresh_token: String,
    /// When the access token expires (unix seconds).
    pub(crate) expires_at: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("server_url", &self.server_url).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from a token response received now.
    pub(crate) fn from_pair(server_url: &str, pair: &TokenPair) -> Self {
        Self {
            server_url: server_url.trim_end_matches('/').to_string(),
            access_token: pair.access_token.clone(),
            refresh_token: pair.refresh_token.clone(),
            expires_at: crate::core::clock::now() + pair.expires_in,
        }
    }
}

/// CLI settings that are not secret.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Settings {
    /// The active fleet (`cmdop fleet use`); none means the first one.
    #[serde(default)]
    pub(crate) fleet: Option<String>,
}

fn read<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    crate::sys::private_file::read_json(path, "remove it")
}

/// The stored credentials, if signed in.
pub(crate) fn load_credentials() -> anyhow::Result<Option<Credentials>> {
    read(&dir().join("credentials.json"))
}

/// Stores credentials (0600).
pub(crate) fn save_credentials(creds: &Credentials) -> anyhow::Result<()> {
    crate::sys::private_file::write(&dir().join("credentials.json"), &serde_json::to_vec_pretty(creds)?)
}

/// Forgets the credentials, and the attach tokens that were issued to the signed-in user.
pub(crate) fn delete_credentials() -> anyhow::Result<()> {
    crate::sys::private_file::remove(&AttachTokens::path())?;
    crate::sys::private_file::remove(&dir().join("credentials.json")).map(drop)
}

/// The settings (defaults when none were saved).
pub(crate) fn load_settings() -> anyhow::Result<Settings> {
    Ok(read(&dir().join("config.json"))?.unwrap_or_default())
}

/// Saves the settings.
pub(crate) fn save_settings(settings: &Settings) -> anyhow::Result<()> {
    crate::sys::private_file::write(&dir().join("config.json"), &serde_json::to_vec_pretty(settings)?)
}

/// Attach tokens this CLI holds, by machine id (`attach-tokens.json`, 0600): the answer to a
/// machine's attach password, valid 24 h, so the password is asked once a day, not per command.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct AttachTokens {
    #[serde(default)]
    machines: std::collections::BTreeMap<String, AttachToken>,
}

#[derive(Clone, Serialize, Deserialize)]
struct AttachToken {
    token: String,
    expires_unix: i64,
}

impl AttachTokens {
    fn path() -> PathBuf {
        dir().join("attach-tokens.json")
    }

    /// The saved tokens (none when the file is missing or unreadable: the password is asked).
    pub(crate) fn load() -> Self {
        read(&Self::path()).ok().flatten().unwrap_or_default()
    }

    /// The unexpired token for `machine`.
    pub(crate) fn get(&self, machine: &str) -> Option<crate::core::secret::Secret<String>> {
        let t = self.machines.get(machine).filter(|t| t.expires_unix > crate::core::clock::now())?;
        Some(crate::core::secret::Secret::new(t.token.clone()))
    }

    /// Every unexpired token, by machine id.
    pub(crate) fn all(&self) -> std::collections::HashMap<String, String> {
        let now = crate::core::clock::now();
        self.machines.iter().filter(|(_, t)| t.expires_unix > now).map(|(m, t)| (m.clone(), t.token.clone())).collect()
    }

    /// Remembers (`Some`) or forgets (`None`) the token for `machine`; drops expired ones.
    pub(crate) fn put(&mut self, machine: &str, grant: Option<(&str, i64)>) -> anyhow::Result<()> {
        let now = crate::core::clock::now();
        self.machines.retain(|_, t| t.expires_unix > now);
        match grant {
            Some((token, expires_unix)) => {
                self.machines.insert(machine.to_string(), AttachToken { token: token.to_string(), expires_unix });
            }
            None => {
                self.machines.remove(machine);
            }
        }
        crate::sys::private_file::write(&Self::path(), &serde_json::to_vec_pretty(self)?)
    }
}
