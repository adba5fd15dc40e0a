//! Operating-system helpers every side (server, agent, CLI) uses: private files, client
//! connections (tonic endpoints, and gRPC streams on `h2` directly), facts about this host, the
//! shutdown signal, bounded password checks and tasks that end with their owner.

pub(crate) mod argon;
pub mod dial;
pub(crate) mod dirs;
pub(crate) mod grpc_stream;
pub mod host;
pub(crate) mod private_file;
pub(crate) mod signal;
pub(crate) mod task;
