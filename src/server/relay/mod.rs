//! The relay: agents' streams in, sessions out.
//!
//! `router` is the interface consumers use; `registry` is its in-process implementation;
//! `service` is the thin tonic adapter that authenticates agents and pumps their frames;
//! `queries` carries shell-session listings and kills over an agent's stream; `presence`
//! sweeps silent machines offline when nodes share a database.

pub mod presence;
pub mod queries;
pub mod registry;
pub mod router;
pub mod service;

pub use registry::LocalRouter;
pub use router::{RouteError, SessionControl, SessionPort, SessionRouter};
