//! The CLI's state folder (`CMDOP_HOME`, default `~/.config/cmdop`): credentials (0600) and
//! the active fleet.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde::de::DeserializeOwned;

use crate::oauth::TokenPair;

/// The CLI's folder.
pub fn dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CMDOP_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(home);
    }
    home_dir().join(".config/cmdop")
}

/// The user's home folder.
pub fn home_dir() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// What `cmdop login` stores.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// The server signed in to.
    pub server_url: String,
    /// Bearer for API calls.
    pub access_token: String,
    /// Trades for a new pair.
    pub refresh_token: String,
    /// When the access token expires (unix seconds).
    pub expires_at: i64,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("server_url", &self.server_url).finish_non_exhaustive()
    }
}

impl Credentials {
    /// Credentials from a token response received now.
    pub fn from_pair(server_url: &str, pair: &TokenPair) -> Self {
        Self {
            server_url: server_url.trim_end_matches('/').to_string(),
            access_token: pair.access_token.clone(),
            refresh_token: pair.refresh_token.clone(),
            expires_at: crate::store::now() + pair.expires_in,
        }
    }
}

/// CLI settings that are not secret.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Settings {
    /// The active fleet (`cmdop fleet use`); none means the first one.
    #[serde(default)]
    pub fleet: Option<String>,
}

fn read<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("{} is corrupt; remove it", path.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a file with mode 0600 atomically (temp file, then rename).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(parent) = path.parent() {
        crate::server::ensure_private_dir(parent)?;
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// The stored credentials, if signed in.
pub fn load_credentials() -> anyhow::Result<Option<Credentials>> {
    read(&dir().join("credentials.json"))
}

/// Stores credentials (0600).
pub fn save_credentials(creds: &Credentials) -> anyhow::Result<()> {
    write_private(&dir().join("credentials.json"), &serde_json::to_vec_pretty(creds)?)
}

/// Forgets the credentials.
pub fn delete_credentials() -> anyhow::Result<()> {
    match std::fs::remove_file(dir().join("credentials.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

/// The settings (defaults when none were saved).
pub fn load_settings() -> anyhow::Result<Settings> {
    Ok(read(&dir().join("config.json"))?.unwrap_or_default())
}

/// Saves the settings.
pub fn save_settings(settings: &Settings) -> anyhow::Result<()> {
    write_private(&dir().join("config.json"), &serde_json::to_vec_pretty(settings)?)
}
