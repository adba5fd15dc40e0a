//! The relay: agents' streams in, sessions out.
//!
//! `router` is the interface consumers use; `registry` is its in-process implementation;
//! `service` is the thin tonic adapter that authenticates agents and pumps their frames;
//! `queries` carries shell-session listings and kills over an agent's stream; `presence`
//! sweeps silent machines offline when nodes share a database.

pub(crate) mod presence;
pub(crate) mod queries;
pub(crate) mod registry;
pub(crate) mod router;
pub(crate) mod service;

pub(crate) use registry::LocalRouter;
