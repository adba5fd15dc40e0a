//! The agent's one relay stream (`Relay.Link`), spoken over HTTP/2 driven directly with `h2`.
//!
//! Why not tonic's client: per keystroke it costs hyper's body "pipe" task between the
//! sessions' queue and h2, a decoder, and a copy each way. Here the HTTP/2 connection runs in a
//! task of its own (as hyper runs it: it reads the socket, answers pings, writes what streams
//! queued); the tasks that make frames encode them into the stream's send queue through
//! [`Out`] (no task in between), which the connection task hands to h2 as one DATA frame per
//! wake-up; and the link's pump reads the response body with [`Link::next`], slicing messages
//! out of h2's buffers. A first try owned the connection, the queue and the reads in
//! one task and counted more per key: every outbound frame woke that task, which then polled the
//! whole connection again (docs/performance.md, issue 18).
//!
//! The wire stays plain gRPC (`application/grpc`, length-prefixed protobuf), so the server sees
//! what any gRPC client sends; enrollment stays on tonic. Errors are `tonic::Status`es as a
//! tonic client would report them, so callers map them alike.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use h2::client::SendRequest;
use h2::{Ping, PingPong, RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tonic::{Code, Status};

use crate::core::grpc_frame::{Deframer, FrameError, MAX_MESSAGE, encode_into};
use crate::core::sync::lock;
use crate::proto::{AgentFrame, RelayFrame};
use crate::sys::task::{AbortOnDrop, WhenWoken};

/// The method's path: `/<package>.<service>/<method>` of proto/relay.proto.
const LINK_PATH: &str = "/cmdop.relay.v1.Relay/Link";
/// As `sys::dial` for tonic's endpoints: a server that does not accept within this is down.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/2 keepalive: a ping this often, and the connection is dead if its pong takes longer
/// than the timeout (as `sys::dial` sets for tonic's endpoints).
const PING_EVERY: Duration = Duration::from_secs(20);
const PING_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the server may take to answer the request (it reads `Hello` and claims the route
/// first); past it the server is as dead as one missing a keepalive pong.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(40);
/// Receive windows: hyper's client defaults, which tonic used here before.
const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
const CONNECTION_WINDOW: u32 = 5 * 1024 * 1024;
/// Most bytes queued for the stream that h2 could not take yet ([`Out::send`] waits while the
/// queue is this full), and most bytes h2 holds beyond the server's flow-control window. See
/// [`Out`] for why this bound matters.
const SEND_BUFFER: usize = 1024 * 1024;

/// The connection task: ends with the connection (`Ok`: closed cleanly) or with why it broke.
/// Aborted when dropped, so the connection never outlives its link.
pub(crate) type Connection = AbortOnDrop<Result<(), Status>>;

/// The reading half of one open `Relay.Link` stream.
pub(crate) struct Link {
    recv: RecvStream,
    /// Kept so that h2 does not treat the connection as finished with its users.
    _client: SendRequest<Bytes>,
    frames: Deframer,
}

/// Connects to `url`, starts the connection's task, starts the `Link` call with the machine
/// credential, sends `hello` (the server reads it before answering) and waits for the response
/// headers. Returns the stream's reading half, its writing handle and the connection's task.
pub(crate) async fn open(url: &str, credential: &str, hello: &AgentFrame) -> Result<(Link, Out, Connection), Status> {
    let auth = HeaderValue::from_str(&format!("Bearer {credential}"))
        .map_err(|_| Status::unauthenticated("credential is not valid metadata"))?;
    let target = Target::parse(url)?;
    let io = target.connect(url).await?;
    let (client, mut conn) = h2::client::Builder::new()
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_send_buffer_size(SEND_BUFFER)
        .enable_push(false)
        .handshake::<_, Bytes>(io)
        .await
        .map_err(|e| unreachable_at(url, e))?;
    let pings = conn.ping_pong().ok_or_else(|| Status::internal("HTTP/2 pings are unavailable"))?;
    let out = Out::new();
    let connection = AbortOnDrop::spawn(Driver::new(conn, pings, out.0.clone()));
    let mut client = client.ready().await.map_err(broken)?;
    let request = Request::builder()
        .method(Method::POST)
        .uri(target.uri)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("user-agent", concat!("cmdop-agent/", env!("CARGO_PKG_VERSION")))
        .header("authorization", auth)
        .body(())
        .map_err(|e| Status::internal(format!("cannot build the request: {e}")))?;
    let (response, mut send) = client.send_request(request, false).map_err(broken)?;
    send.send_data(encode(hello), false).map_err(broken)?;
    lock(&out.0.queue).send = Some(send);
    let response = match tokio::time::timeout(RESPONSE_TIMEOUT, response).await {
        Ok(response) => response.map_err(broken)?,
        Err(_) => return Err(Status::unavailable(format!("the server at {url} did not answer the stream in time"))),
    };
    // A trailers-only answer (refused before the stream started) carries the status here.
    if let Some(status) = status_of(response.headers())
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    if response.status() != StatusCode::OK {
        return Err(status_of_http(response.status()));
    }
    let link = Link { recv: response.into_body(), _client: client, frames: Deframer::default() };
    Ok((link, out, connection))
}

/// The connection's task: hands the frames the sessions queued to h2, all that are queued at
/// that moment as one DATA frame, then drives the connection (socket reads and writes, the
/// server's pings, window updates); pings the server every [`PING_EVERY`]. The keepalive is
/// polled only when its timer or pong woke it, not for every frame the connection moves.
struct Driver {
    conn: h2::client::Connection<Io, Bytes>,
    keepalive: WhenWoken<'static, Status>,
    shared: Arc<Shared>,
    /// The waker h2 gets: the task's, except while this task queues data itself (it polls the
    /// connection right after, so h2's wake-up would only run the task once more for nothing).
    muted: Arc<Muted>,
    waker: Waker,
}

struct Muted {
    on: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Muted {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.on.load(Ordering::Acquire) {
            self.task.wake();
        }
    }
}

impl Driver {
    fn new(conn: h2::client::Connection<Io, Bytes>, pings: PingPong, shared: Arc<Shared>) -> Self {
        let muted = Arc::new(Muted { on: AtomicBool::new(false), task: AtomicWaker::new() });
        let waker = Waker::from(muted.clone());
        Self { conn, keepalive: WhenWoken::new(keepalive(pings)), shared, muted, waker }
    }

    /// Moves the queued frames into h2 when the server's window covers what h2 already holds
    /// (as hyper's body pipe does); otherwise h2 wakes this task when capacity comes.
    fn flush(&mut self) {
        let mut guard = lock(&self.shared.queue);
        let queue = &mut *guard;
        if queue.buf.is_empty() {
            return;
        }
        let Some(send) = queue.send.as_mut() else { return };
        send.reserve_capacity(1);
        if send.capacity() == 0 {
            match send.poll_capacity(&mut Context::from_waker(&self.waker)) {
                Poll::Ready(Some(Ok(_))) if send.capacity() > 0 => {}
                Poll::Ready(Some(Ok(_))) | Poll::Pending => return,
                Poll::Ready(Some(Err(_)) | None) => return queue.close(),
            }
        }
        let data = queue.buf.split().freeze();
        self.muted.on.store(true, Ordering::Release);
        let sent = send.send_data(data, false);
        self.muted.on.store(false, Ordering::Release);
        if sent.is_err() {
            return queue.close();
        }
        let waiting = std::mem::take(&mut queue.waiting);
        drop(guard);
        waiting.into_iter().for_each(Waker::wake);
    }
}

impl Future for Driver {
    type Output = Result<(), Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.muted.task.register(cx.waker());
        this.shared.driver.register(cx.waker());
        this.flush();
        if let Poll::Ready(ended) = Pin::new(&mut this.conn).poll(&mut Context::from_waker(&this.waker)) {
            return Poll::Ready(ended.map_err(broken));
        }
        Pin::new(&mut this.keepalive).poll(cx).map(Err)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        lock(&self.shared.queue).close();
    }
}

/// Pings the server every [`PING_EVERY`]; returns why the connection is dead when a ping fails
/// or goes unanswered for [`PING_TIMEOUT`].
async fn keepalive(mut pings: PingPong) -> Status {
    loop {
        tokio::time::sleep(PING_EVERY).await;
        match tokio::time::timeout(PING_TIMEOUT, pings.ping(Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return broken(e),
            Err(_) => {
                return Status::unavailable(format!(
                    "the server did not answer a keepalive ping within {} s",
                    PING_TIMEOUT.as_secs()
                ));
            }
        }
    }
}

impl Link {
    /// The next frame from the relay; `None` when it ended the stream with status OK.
    /// Cancel-safe: all progress lives in `self`.
    pub(crate) async fn next(&mut self) -> Result<Option<RelayFrame>, Status> {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<RelayFrame>, Status>> {
        if let Some(frame) = self.take_message()? {
            return Poll::Ready(Ok(Some(frame)));
        }
        // Bounded by what h2 has received: each turn takes one chunk, and the receive window
        // caps how much can be waiting.
        loop {
            match ready!(self.recv.poll_data(cx)) {
                Some(Ok(chunk)) => {
                    let _ = self.recv.flow_control().release_capacity(chunk.len());
                    self.frames.push(chunk);
                    if let Some(frame) = self.take_message()? {
                        return Poll::Ready(Ok(Some(frame)));
                    }
                }
                Some(Err(e)) => return Poll::Ready(Err(broken(e))),
                None => return self.poll_end(cx),
            }
        }
    }

    /// A whole message from what was received, if there is one.
    fn take_message(&mut self) -> Result<Option<RelayFrame>, Status> {
        match self.frames.next_message() {
            Ok(Some(message)) => decode(message).map(Some),
            Ok(None) => Ok(None),
            Err(FrameError::Compressed(_)) => {
                Err(Status::internal("the relay sent a compressed message, which this agent never asked for"))
            }
            Err(FrameError::TooLarge(len)) => {
                Err(Status::out_of_range(format!("the relay sent a {len}-byte message; the limit is {MAX_MESSAGE}")))
            }
        }
    }

    /// The response body ended: its trailers say how.
    fn poll_end(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<RelayFrame>, Status>> {
        if !self.frames.is_empty() {
            return Poll::Ready(Err(Status::internal("the relay's stream ended inside a message")));
        }
        let trailers = ready!(self.recv.poll_trailers(cx)).map_err(broken)?;
        let status = trailers
            .as_ref()
            .and_then(status_of)
            .unwrap_or_else(|| Status::unknown("the relay ended the stream without a gRPC status"));
        Poll::Ready(if status.code() == Code::Ok { Ok(None) } else { Err(status) })
    }
}

/// Frames toward the relay: a cheap clonable handle with which the task that makes a frame
/// encodes it into the stream's send queue, and wakes the connection's task if the queue was
/// empty; that task hands everything queued to h2 as one DATA frame (an echo's output and its
/// credit grant go out together, and the server reads them as one). No task between the
/// session and the connection. Bounded: sessions' output is already bounded by their credit
/// windows, but heartbeats, query replies and many sessions together are not, so a sender waits
/// while [`SEND_BUFFER`] bytes are queued that h2 could not take (the server's window is full):
/// a stalled server pauses the sessions, which stop reading their PTYs, instead of growing the
/// agent's memory. h2 itself holds at most its `max_send_buffer_size`, the same figure.
#[derive(Clone)]
pub(crate) struct Out(Arc<Shared>);

/// The link ended: the frame was not sent.
#[derive(Debug)]
pub(crate) struct Closed;

struct Shared {
    /// Never locked across an await.
    queue: Mutex<Queue>,
    /// The connection's task, woken when the queue gets its first bytes.
    driver: AtomicWaker,
}

#[derive(Default)]
struct Queue {
    /// Encoded frames not yet handed to h2.
    buf: BytesMut,
    /// The stream's sending half, once the request went out.
    send: Option<SendStream<Bytes>>,
    /// The link ended: sends fail.
    closed: bool,
    /// Senders waiting for room in `buf`.
    waiting: Vec<Waker>,
}

impl Queue {
    fn close(&mut self) {
        self.closed = true;
        self.send = None;
        self.buf = BytesMut::new();
        std::mem::take(&mut self.waiting).into_iter().for_each(Waker::wake);
    }
}

impl Out {
    fn new() -> Self {
        Self(Arc::new(Shared { queue: Mutex::new(Queue::default()), driver: AtomicWaker::new() }))
    }

    /// Queues `frame` as the stream's next message; waits only while the queue is full.
    pub(crate) async fn send(&self, frame: AgentFrame) -> Result<(), Closed> {
        poll_fn(|cx| self.poll_send(cx, &frame)).await
    }

    fn poll_send(&self, cx: &mut Context<'_>, frame: &AgentFrame) -> Poll<Result<(), Closed>> {
        let mut queue = lock(&self.0.queue);
        if queue.closed {
            return Poll::Ready(Err(Closed));
        }
        if queue.buf.len() >= SEND_BUFFER {
            if !queue.waiting.iter().any(|w| w.will_wake(cx.waker())) {
                queue.waiting.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        let first = queue.buf.is_empty();
        encode_into(frame, &mut queue.buf);
        drop(queue);
        if first {
            self.0.driver.wake();
        }
        Poll::Ready(Ok(()))
    }

    /// Ends sending: later sends fail, and waiting senders are woken to find out.
    pub(crate) fn close(&self) {
        lock(&self.0.queue).close();
    }
}

/// `grpc-status` and `grpc-message` (percent-decoded) of a header or trailer block.
fn status_of(headers: &HeaderMap) -> Option<Status> {
    let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
    let message = headers.get("grpc-message").map(|m| percent_decode(m.as_bytes())).unwrap_or_default();
    Some(Status::new(code, message))
}

/// The gRPC code a non-200 HTTP answer stands for (as gRPC clients infer it: a proxy's
/// error page, say).
fn status_of_http(status: StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("the server answered HTTP {status} instead of a gRPC stream"))
}

fn percent_decode(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (raw[i], raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn decode(message: Bytes) -> Result<RelayFrame, Status> {
    RelayFrame::decode(message).map_err(|e| Status::internal(format!("the relay sent a malformed frame: {e}")))
}

/// `frame` as one gRPC message (uncompressed).
fn encode(frame: &AgentFrame) -> Bytes {
    let mut buf = BytesMut::new();
    encode_into(frame, &mut buf);
    buf.freeze()
}

/// A broken stream or connection: retried like any network failure.
fn broken(e: h2::Error) -> Status {
    if e.is_io() {
        return Status::unavailable(format!("the connection to the server broke: {e}"));
    }
    Status::unavailable(format!("the HTTP/2 stream to the server failed: {e}"))
}

fn unreachable_at(url: &str, e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("cannot reach the server at {url}: {e}"))
}

/// Where a server URL points: what to dial and the request's URI.
struct Target {
    tls: bool,
    host: String,
    port: u16,
    uri: Uri,
}

impl Target {
    fn parse(url: &str) -> Result<Self, Status> {
        let invalid = || {
            Status::invalid_argument(format!("invalid server URL {url:?}: expected http://HOST:PORT or https://HOST"))
        };
        let parsed: Uri = url.parse().map_err(|_| invalid())?;
        let tls = match parsed.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid()),
        };
        let authority = parsed.authority().ok_or_else(invalid)?;
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let scheme = if tls { "https" } else { "http" };
        let uri = format!("{scheme}://{authority}{LINK_PATH}").parse().map_err(|_| invalid())?;
        Ok(Self { tls, host, port, uri })
    }

    /// TCP (Nagle off: keystrokes go out at once), then TLS with ALPN `h2` for `https`.
    async fn connect(&self, url: &str) -> Result<Io, Status> {
        let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((self.host.as_str(), self.port))).await
        {
            Ok(tcp) => tcp.map_err(|e| unreachable_at(url, e))?,
            Err(_) => return Err(unreachable_at(url, "timed out")),
        };
        tcp.set_nodelay(true).map_err(|e| unreachable_at(url, e))?;
        if !self.tls {
            return Ok(Io::Plain(tcp));
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.clone())
            .map_err(|_| Status::invalid_argument(format!("invalid server name in {url:?}")))?;
        let connector = tokio_rustls::TlsConnector::from(tls_config().map_err(|e| unreachable_at(url, e))?);
        let tls = match tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp)).await {
            Ok(tls) => tls.map_err(|e| unreachable_at(url, e))?,
            Err(_) => return Err(unreachable_at(url, "the TLS handshake timed out")),
        };
        Ok(Io::Tls(Box::new(tls)))
    }
}

/// rustls with the system's roots (`SSL_CERT_FILE`/`SSL_CERT_DIR` override them, as for
/// tonic's endpoints) and ALPN `h2`, built once.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err("no trusted root certificate found on this machine: install the ca-certificates package (or set SSL_CERT_FILE)".to_string());
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("cannot set up TLS: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"h2".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

/// The connection's byte stream: plain TCP or TLS over it.
enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::grpc_frame::HEADER;
    use crate::proto::{agent_frame, relay_frame};

    fn framed(frame: &RelayFrame) -> Vec<u8> {
        let mut buf = vec![0];
        buf.extend_from_slice(&(frame.encoded_len() as u32).to_be_bytes());
        buf.extend_from_slice(&frame.encode_to_vec());
        buf
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(percent_decode(b"server%20shutting down%"), "server shutting down%");
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("16"));
        headers.insert("grpc-message", HeaderValue::from_static("machine%20credential%20revoked"));
        let status = status_of(&headers).unwrap();
        assert_eq!(status.code(), Code::Unauthenticated);
        assert_eq!(status.message(), "machine credential revoked");
    }

    #[test]
    fn encoded_agent_frames_are_length_prefixed_messages() {
        let frame = AgentFrame { kind: Some(agent_frame::Kind::Heartbeat(crate::proto::Heartbeat { unix_ms: 7 })) };
        let buf = encode(&frame);
        let one = frame.encode_to_vec();
        assert_eq!(buf.len(), HEADER + one.len());
        assert_eq!(buf[0], 0);
        assert_eq!(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize, one.len());
        assert_eq!(&buf[HEADER..], &one[..]);
    }

    #[test]
    fn relay_frames_wait_for_the_whole_message_and_decode() {
        let input = RelayFrame {
            kind: Some(relay_frame::Kind::Input(crate::proto::Input { channel: 3, data: Bytes::from_static(b"ls\r") })),
        };
        let bytes = framed(&input);
        let mut frames = Deframer::default();
        frames.push(Bytes::copy_from_slice(&bytes[..bytes.len() - 1]));
        assert_eq!(frames.next_message().unwrap(), None);
        frames.push(Bytes::copy_from_slice(&bytes[bytes.len() - 1..]));
        let message = frames.next_message().unwrap().unwrap();
        assert_eq!(decode(message).unwrap(), input);
    }

    #[test]
    fn urls_become_targets_with_the_link_path() {
        let t = Target::parse("https://relay.example.com").unwrap();
        assert!(t.tls);
        assert_eq!((t.host.as_str(), t.port), ("relay.example.com", 443));
        assert_eq!(t.uri.to_string(), "https://relay.example.com/cmdop.relay.v1.Relay/Link");
        let t = Target::parse("http://[::1]:8080/").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("::1", 8080, false));
        assert_eq!(t.uri.to_string(), "http://[::1]:8080/cmdop.relay.v1.Relay/Link");
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("relay:443").is_err());
    }
}
