//! Generated wire types of `proto/relay.proto` (agent <-> relay, CLI <-> server).
#![allow(missing_docs, clippy::all)]
tonic::include_proto!("cmdop.relay.v1");
