//! cmdop connect: reach any machine from anywhere.
//!
//! # Layout
//! - `ids`: newtype identifiers (`MachineId`, `LinkId`, ...).
//! - `limiter`: exponential back-off after repeated failures (passwords).
//! - `links`: share-link tokens: mint, verify (constant time), keys, revocations (pure).
//! - `private_file`: owner-only (0600) files written atomically: credentials, tokens.
//! - `secret`: the redacting `Secret<T>`, random tokens and their at-rest hashes.
//! - `duration`: `90s`/`15m`/`2h`/`7d` parsing.
//! - `resolver`: typed machine name -> one machine (pure).
//! - `session`: sessions as consumers see them: events, exits, window sizes, and the shell
//!   sessions' ring fan-out with per-reader credit (pure).
//! - `proto`: generated wire types of `proto/relay.proto`.
//! - `store`: SQLite storage behind one narrow interface.
//! - `oauth`: access and refresh tokens and the device authorization grant (RFC 8628).
//! - `passwords`: argon2id hashes and generated one-time passwords.
//! - `relay`: agents' streams; the routing interface consumers use to reach sessions.
//! - `shares`: share links as the server manages them: mint, check, revoke, live sockets.
//! - `api`: the gRPC API the CLI calls.
//! - `gateway`: the browser side: share-link page, WebSocket bridge, embedded assets.
//! - `server`: one listener for relay, API and HTTP; bootstrap of the first owner.
//! - `agent`: the machine daemon: dials out, runs exec and PTY sessions.
//! - `web`: OAuth endpoints, the device-flow verification page, security headers.
//! - `dial`: client connections (agent, CLI): HTTP/2, TLS for https URLs.
//! - `cli`: the `cmdop` command line.
//! - `metrics`: Prometheus counters.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod agent;
pub mod api;
pub mod cli;
pub mod dial;
pub mod duration;
pub mod gateway;
pub mod ids;
pub mod limiter;
pub mod links;
pub mod metrics;
pub mod oauth;
pub mod passwords;
pub mod private_file;
pub mod proto;
pub mod relay;
pub mod resolver;
pub mod secret;
pub mod server;
pub mod shares;
pub mod session;
pub mod store;
pub mod web;
