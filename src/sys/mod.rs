//! Operating-system helpers every side (server, agent, CLI) uses: private files, client
//! connections, facts about this host and the shutdown signal.

pub mod dial;
pub mod dirs;
pub mod host;
pub mod private_file;
pub mod signal;
