//! cmdop connect: reach any machine from anywhere.
//!
//! # Layout
//! Layers, bottom to top (`docs/architecture.txt` is the map a test enforces):
//! - `proto`: generated wire types of `proto/relay.proto`.
//! - `core`: ids, secrets, clock, durations, link tokens, sessions, resolver, limiter and the
//!   proto conversions; no I/O.
//! - `sys`: operating-system helpers every side shares: private files, dialing, the gRPC
//!   stream client on `h2` (the agent's stream, the edge node's peer streams), host facts,
//!   tasks that end with their owner.
//! - `store`: the server's storage interface and its SQLite and PostgreSQL implementations.
//! - `server`: relay (agents' streams), API (CLI), HTTP (browsers, OAuth clients, health),
//!   share links, OAuth.
//! - `agent`: the machine daemon: dials out, runs exec and PTY sessions.
//! - `cli`: the `cmdop` command line a user runs against a server.
//! - `mcp`: `cmdop mcp`, the fleet as MCP tools for AI agents, over the CLI's signed-in client.
//! - `app`: the `cmdop` binary's commands: parsing, dispatch, and `quickstart`, which composes
//!   server, agent and CLI.
//! - `fuzzing` (feature `fuzzing`, and the crate's own tests): entry points of the fuzz targets
//!   in `fuzz/`; its tests replay the committed corpora and mutate them in every `cargo test`.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub(crate) mod agent;
pub mod app;
pub(crate) mod cli;
pub(crate) mod core;
// Also in the lib's test build, so `cargo test` exercises every target without compiling the
// crate a second time with the feature on.
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub(crate) mod mcp;
pub mod proto;
pub(crate) mod server;
pub(crate) mod store;
pub(crate) mod sys;

/// What benches and tests outside the crate reach directly: the link token codec (benched on
/// its own) and the host facts the agent reports.
pub use core::{ids, link_token};
pub use sys::dial::install_crypto;
pub use sys::host::hostname;
