//! The core: the product's concepts with no I/O, no network framework and no database.
//! Everything above (store, server, agent, CLI) builds on these types.
//!
//! - `agent_frame`: decoding the agent's frames (`Output` on a short path).
//! - `ids`: newtype identifiers (`MachineId`, `LinkId`, ...).
//! - `secret`: the redacting `Secret<T>`, random tokens and their at-rest hashes.
//! - `clock`: unix seconds and RFC 3339.
//! - `duration`: `90s`/`15m`/`2h`/`7d` parsing and formatting.
//! - `link_token`: share-link tokens: the codec, the signing-key ring (in memory and as bytes),
//!   verification, revocation set.
//! - `session`: sessions as consumers see them: events, exits, access, ring buffer, fan-out.
//! - `resolver`: typed machine name -> one machine.
//! - `limiter`: exponential back-off after repeated failures; request rates.
//! - `limits`: the service's configurable limits and their defaults.
//! - `passwords`: argon2id hashes and generated one-time passwords.
//! - `convert`: the one place wire (proto) values become domain values and back.
//! - `wire`: gRPC metadata names both ends of the CLI API agree on.
//! - `sync`: the poison-tolerant mutex lock.
//! - `http2`: HTTP/2 frames and HPACK header blocks (no connection state).
//! - `ws_frame`: RFC 6455 framing of the server side (client frames in, server headers out).

pub(crate) mod agent_frame;
pub(crate) mod clock;
pub(crate) mod cluster_key;
pub(crate) mod convert;
pub(crate) mod duration;
pub(crate) mod grpc_frame;
pub(crate) mod http2;
pub mod ids;
pub(crate) mod limiter;
pub(crate) mod limits;
pub mod link_token;
pub(crate) mod passwords;
pub(crate) mod resolver;
pub(crate) mod secret;
pub(crate) mod selector;
pub(crate) mod session;
pub(crate) mod sync;
pub(crate) mod wire;
pub(crate) mod ws_frame;
