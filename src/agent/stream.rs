//! The agent's one relay stream (`Relay.Link`): a `sys::grpc_stream` call on a connection of
//! its own, opened with the machine credential and the agent's `Hello` (the relay reads it
//! before it answers). Enrollment stays on tonic.

use http::{HeaderMap, HeaderValue};
use tonic::Status;

use crate::proto::{AgentFrame, RelayFrame};
use crate::sys::grpc_stream;

pub(crate) use crate::sys::grpc_stream::Connection;

/// The method's path: `/<package>.<service>/<method>` of proto/relay.proto.
const LINK_PATH: &str = "/cmdop.relay.v1.Relay/Link";

/// The reading half of the relay stream.
pub(crate) type Link = grpc_stream::Link<RelayFrame>;

/// Frames toward the relay (bounded: a full send buffer pauses the sessions, which stop
/// reading their PTYs, instead of growing the agent's memory).
pub(crate) type Out = grpc_stream::Out<AgentFrame>;

/// Connects to `url`, starts the connection's task, starts the `Link` call with the machine
/// credential, sends `hello` and waits for the response headers. Returns the stream's reading
/// half, its writing handle and the connection's task.
pub(crate) async fn open(url: &str, credential: &str, hello: &AgentFrame) -> Result<(Link, Out, Connection), Status> {
    let headers = link_headers(credential)?;
    let (client, connection) = grpc_stream::connect(url).await?;
    let (link, out) = client.open(LINK_PATH, headers, Some(hello), grpc_stream::SEND_BUFFER).await?;
    Ok((link, out, connection))
}

/// The agent's request headers: who it is (the credential) and what it runs.
fn link_headers(credential: &str) -> Result<HeaderMap, Status> {
    let auth = HeaderValue::from_str(&format!("Bearer {credential}"))
        .map_err(|_| Status::unauthenticated("credential is not valid metadata"))?;
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static(concat!("cmdop-agent/", env!("CARGO_PKG_VERSION"))));
    headers.insert("authorization", auth);
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_goes_as_a_bearer_token() {
        let headers = link_headers("m1.secret").unwrap();
        assert_eq!(headers["authorization"], "Bearer m1.secret");
        assert!(headers["user-agent"].to_str().unwrap().starts_with("cmdop-agent/"));
        assert_eq!(link_headers("bad\ncredential").unwrap_err().code(), tonic::Code::Unauthenticated);
    }
}
