//! Operating-system helpers every side (server, agent, CLI) uses: private files, client
//! connections, facts about this host, the shutdown signal, bounded password checks and tasks
//! that end with their owner.

pub mod argon;
pub mod dial;
pub mod dirs;
pub mod host;
pub mod private_file;
pub mod signal;
pub mod task;
