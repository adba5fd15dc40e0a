//! The relay: agents' streams in, sessions out.
//!
//! `router` is the interface consumers use; `registry` is its in-process implementation;
//! `service` is the thin tonic adapter that authenticates agents and pumps their frames;
//! `queries` carries shell-session listings and kills over an agent's stream; `cluster` is the
//! router of a node among several (route in the store, hop to the holding node) and `peer` the
//! holding node's end of that hop; `outlet` is where a stream's frames go (an agent's queue or
//! a peer stream's HTTP/2 queue); `wire` serves both hot streams' gRPC framing without tonic's
//! codec layers, and `hot` names them to our HTTP/2 connections, which run them in the
//! connection's task.

pub(crate) mod cluster;
pub(crate) mod hot;
pub(crate) mod outlet;
pub(crate) mod peer;
pub(crate) mod queries;
pub(crate) mod registry;
pub(crate) mod router;
pub(crate) mod service;
#[cfg(test)]
pub(crate) mod testing;
pub(crate) mod wire;

pub(crate) use registry::LocalRouter;
