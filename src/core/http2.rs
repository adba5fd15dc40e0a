//! HTTP/2 (RFC 9113) without I/O: frames and HPACK header blocks, shared by the server's
//! connections and the clients of the agent's and the nodes' streams, which each keep their
//! own connection state on top.
//!
//! - `fields`: a decoded block's fields checked as RFC 9113 allows them.
//! - `frame`: frame heads, payload parsers (each names the error code a violation calls for),
//!   writers that append whole frames to a write buffer.
//! - `hpack`: header blocks decoded with limits, encoded without a dynamic table.
//! - `huffman`: HPACK's Huffman code, decoded.

pub(crate) mod fields;
pub(crate) mod frame;
pub(crate) mod hpack;
mod huffman;
