//! Default folders, from the user's home: where each daemon keeps its state unless told.

use std::path::PathBuf;

/// The user's home folder (`/` when `HOME` is unset).
pub(crate) fn home() -> PathBuf {
    std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/"))
}

/// Default server data folder: `~/.local/share/cmdop/server`.
pub(crate) fn server_data() -> PathBuf {
    home().join(".local/share/cmdop/server")
}

/// Default agent state folder: `~/.local/share/cmdop/agent`.
pub(crate) fn agent_state() -> PathBuf {
    home().join(".local/share/cmdop/agent")
}
