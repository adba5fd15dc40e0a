//! The server side of a WebSocket (RFC 6455) on an upgraded HTTP/1.1 connection: the
//! handshake as an axum extractor, then frames straight on the socket through
//! `core::ws_frame`. The link socket carries a frame per keystroke; a general library's
//! layers (waker proxies, a frame copy into an out buffer, a locked split) cost more than the
//! framing itself (docs/performance.md, issue 18).

use std::io::{self, IoSlice};
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::{Bytes, BytesMut};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

pub(crate) use crate::core::ws_frame::Message;
use crate::core::ws_frame::{self, Decoder, FrameError, Kind, MAX_HEADER_BYTES};

/// Appended to the client's key for `Sec-WebSocket-Accept` (RFC 6455, 4.2.2).
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A valid WebSocket handshake request, not answered yet.
pub(crate) struct WsUpgrade {
    accept: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket handshake.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    #[error("a WebSocket handshake is a GET")]
    NotGet,
    #[error("missing or wrong `{0}` header")]
    Header(&'static str),
    #[error("only WebSocket version 13 is spoken")]
    Version,
    #[error("the connection cannot be upgraded")]
    NotUpgradable,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::NotGet => StatusCode::METHOD_NOT_ALLOWED,
            Self::Header(_) => StatusCode::BAD_REQUEST,
            Self::Version | Self::NotUpgradable => StatusCode::UPGRADE_REQUIRED,
        };
        let mut response = (status, format!("{self}\n")).into_response();
        if matches!(self, Self::Version) {
            response.headers_mut().insert("sec-websocket-version", HeaderValue::from_static("13"));
        }
        response
    }
}

/// True when the comma-separated header `name` lists `token` (case-insensitive).
fn lists(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

/// `Sec-WebSocket-Accept` for a client's key.
fn accept_key(key: &[u8]) -> HeaderValue {
    let digest = Sha1::new().chain_update(key).chain_update(ACCEPT_GUID).finalize();
    let value = base64::engine::general_purpose::STANDARD.encode(digest);
    HeaderValue::from_str(&value).unwrap_or(HeaderValue::from_static(""))
}

impl<S: Send + Sync> FromRequestParts<S> for WsUpgrade {
    type Rejection = HandshakeError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, HandshakeError> {
        if parts.method != Method::GET {
            return Err(HandshakeError::NotGet);
        }
        if !lists(&parts.headers, header::CONNECTION, "upgrade") {
            return Err(HandshakeError::Header("Connection"));
        }
        if !lists(&parts.headers, header::UPGRADE, "websocket") {
            return Err(HandshakeError::Header("Upgrade"));
        }
        if parts.headers.get(header::SEC_WEBSOCKET_VERSION).map(HeaderValue::as_bytes) != Some(b"13") {
            return Err(HandshakeError::Version);
        }
        let key = parts.headers.get(header::SEC_WEBSOCKET_KEY).ok_or(HandshakeError::Header("Sec-WebSocket-Key"))?;
        let accept = accept_key(key.as_bytes());
        let on_upgrade = parts.extensions.remove::<OnUpgrade>().ok_or(HandshakeError::NotUpgradable)?;
        Ok(Self { accept, on_upgrade })
    }
}

impl WsUpgrade {
    /// The 101 answer; `run` gets the socket once hyper hands the connection over.
    pub(crate) fn on_upgrade<F, Fut>(self, run: F) -> Response
    where
        F: FnOnce(Socket) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let on_upgrade = self.on_upgrade;
        tokio::spawn(async move {
            match on_upgrade.await {
                // The listener serves HTTP/1.1 on plain TCP (a proxy in front terminates TLS),
                // so hyper hands our socket back, with what it had read past the request.
                Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                    Ok(parts) => run(Socket { tcp: parts.io.into_inner(), read: parts.read_buf }).await,
                    Err(_) => tracing::warn!("a WebSocket upgrade on a connection that is not TCP: dropped"),
                },
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
        let mut response = StatusCode::SWITCHING_PROTOCOLS.into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, self.accept);
        response
    }
}

/// An open WebSocket; [`Socket::split`] gives its reading and writing halves. The TCP
/// socket itself rather than hyper's upgraded I/O: per frame that saved the boxed stream, its
/// rewind buffer and the lock of a split (docs/performance.md, issue 18).
pub(crate) struct Socket {
    tcp: TcpStream,
    /// Bytes the client sent after its handshake that hyper had read already.
    read: Bytes,
}

impl Socket {
    /// A socket whose handshake is done (tests).
    #[cfg(test)]
    pub(crate) fn from_tcp(tcp: TcpStream) -> Self {
        Self { tcp, read: Bytes::new() }
    }

    /// Closes a socket that never carried anything else (a refusal).
    pub(crate) async fn close(self, code: u16, reason: &str) -> io::Result<()> {
        let (_, mut writer) = self.split(0, 0);
        writer.close(code, reason).await
    }

    /// Halves that can be used from two tasks: the browser's input may wait for credit while
    /// output keeps flowing.
    pub(crate) fn split(self, read_buffer: usize, max_message: usize) -> (Reader, Writer) {
        let (read, write) = self.tcp.into_split();
        let mut buf = BytesMut::with_capacity(read_buffer.max(self.read.len()));
        buf.extend_from_slice(&self.read);
        let reader = Reader { io: read, buf, read_buffer, decoder: Decoder::new(max_message) };
        (reader, Writer { io: Arc::new(write) })
    }
}

/// Why a socket's reading ended other than by the client's close frame.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    #[error("socket read failed: {0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// The reading half: whole messages from the client.
pub(crate) struct Reader {
    io: OwnedReadHalf,
    buf: BytesMut,
    /// The buffer's usual size: it grows only for a frame that needs more, and shrinks back.
    read_buffer: usize,
    decoder: Decoder,
}

impl Reader {
    /// The next message; `None` when the client closed the connection without a close frame.
    pub(crate) async fn next(&mut self) -> Result<Option<Message>, ReadError> {
        loop {
            if let Some(message) = self.decoder.decode(&mut self.buf)? {
                return Ok(Some(message));
            }
            self.make_room();
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Ok(None);
            }
        }
    }

    /// Room for the rest of the frame at the front (a big paste) or for a usual read; a
    /// buffer grown for a big frame goes back to the usual size once it is empty.
    fn make_room(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > 4 * self.read_buffer {
            self.buf = BytesMut::with_capacity(self.read_buffer);
        }
        let target = self.decoder.wanted(&self.buf).max(self.read_buffer);
        self.buf.reserve(target.saturating_sub(self.buf.len()).max(1));
    }
}

/// The writing half: unmasked server frames, each header and payload in one vectored write.
/// The socket is shared with the link socket's output lane (`lane.rs`), which writes while
/// the writer's owner waits and lets it be otherwise.
pub(crate) struct Writer {
    io: Arc<OwnedWriteHalf>,
}

impl Writer {
    pub(crate) async fn binary(&mut self, data: &[u8]) -> io::Result<()> {
        self.frame(Kind::Binary, data).await
    }

    pub(crate) async fn text(&mut self, text: &str) -> io::Result<()> {
        self.frame(Kind::Text, text.as_bytes()).await
    }

    pub(crate) async fn pong(&mut self, payload: &Bytes) -> io::Result<()> {
        self.frame(Kind::Pong, payload).await
    }

    /// A close frame, then the end of the server's sending (TCP FIN; when an output lane
    /// still shares the socket, once it lets go).
    pub(crate) async fn close(&mut self, code: u16, reason: &str) -> io::Result<()> {
        self.frame(Kind::Close, &ws_frame::close_payload(code, reason)).await?;
        match Arc::get_mut(&mut self.io) {
            Some(io) => io.shutdown().await,
            None => Ok(()),
        }
    }

    /// The socket, for an output lane.
    pub(crate) fn shared(&self) -> Arc<OwnedWriteHalf> {
        self.io.clone()
    }

    async fn frame(&mut self, kind: Kind, payload: &[u8]) -> io::Result<()> {
        let mut head = [0; MAX_HEADER_BYTES];
        let n = ws_frame::encode_header(kind, payload.len(), &mut head);
        self.write(&head[..n], payload).await
    }

    /// Writes `head` then `body` (a frame, or what is left of one).
    pub(crate) async fn write(&mut self, mut head: &[u8], mut body: &[u8]) -> io::Result<()> {
        while !head.is_empty() || !body.is_empty() {
            let written = match self.io.try_write_vectored(&[IoSlice::new(head), IoSlice::new(body)]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    // A poll function, not `writable()`'s future: every link socket's task holds
                    // room for this wait, so its size is every session's.
                    let tcp: &TcpStream = self.io.as_ref().as_ref();
                    std::future::poll_fn(|cx| tcp.poll_write_ready(cx)).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let from_head = written.min(head.len());
            head = &head[from_head..];
            body = &body[written - from_head..];
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455, 1.3.
        assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
