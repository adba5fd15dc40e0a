//! A share-link WebSocket client for synchronous tests.
//!
//! A background task on the shared runtime reads the socket and records everything it gets
//! (JSON control messages, terminal bytes, the close frame, each with the moment it arrived),
//! so a test can run blocking CLI commands meanwhile and then poll what arrived with a
//! deadline. Dropping the client (or `drop_abruptly`) tears the TCP connection down without
//! a close handshake, as a network blip or a closed laptop lid would.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::{rt, terminal_lines};
use crate::common::wait_until;

/// How long the opening handshake may take.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// User-Agent the test client sends (it shows up in the link's audit trail).
pub const USER_AGENT: &str = "cmdop-share-test/1.0";

/// The server's close frame, as received.
#[derive(Clone, Debug)]
pub struct Closed {
    /// Close code (1005 when the frame carried none).
    pub code: u16,
    /// Reason text.
    pub reason: String,
    /// When it arrived (monotonic clock).
    pub at: Instant,
    /// When it arrived (wall clock), to compare with a link's `expires_at`.
    pub wall: SystemTime,
}

#[derive(Default)]
struct Received {
    /// Every text frame, parsed (non-JSON text is kept as a JSON string).
    texts: Vec<serde_json::Value>,
    /// Terminal bytes, concatenated.
    output: Vec<u8>,
    /// The close frame, if one came.
    closed: Option<Closed>,
    /// Why the read loop stopped without a close frame.
    ended: Option<String>,
    /// Every pong's payload, in order.
    pongs: Vec<Vec<u8>>,
}

/// Why an upgrade did not happen.
#[derive(Debug)]
pub enum Refused {
    /// The server answered the upgrade request with this HTTP status.
    Status(u16),
    /// Anything else (connection refused, timeout, protocol error).
    Other(anyhow::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Status(s) => write!(f, "upgrade refused with HTTP {s}"),
            Self::Other(e) => write!(f, "{e:#}"),
        }
    }
}

/// One open share-link socket.
pub struct WsClient {
    url: String,
    received: Arc<Mutex<Received>>,
    outgoing: mpsc::UnboundedSender<Message>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(m: &Mutex<Received>) -> MutexGuard<'_, Received> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// `http://H/s/T` -> `ws://H/s/T/ws` (plus `query`, if any).
pub fn socket_url(link_url: &str, query: &str) -> String {
    let ws = link_url.replacen("http://", "ws://", 1);
    if query.is_empty() { format!("{ws}/ws") } else { format!("{ws}/ws?{query}") }
}

impl WsClient {
    /// Opens `<link>/ws` with the given `Origin` header (none when `None`).
    pub fn open(link_url: &str, origin: Option<&str>) -> Result<Self, Refused> {
        Self::open_url(&socket_url(link_url, ""), origin)
    }

    /// Opens a socket at `url` exactly.
    pub fn open_url(url: &str, origin: Option<&str>) -> Result<Self, Refused> {
        Self::open_with(url, origin, None)
    }

    /// Opens a socket at `url` with an `Origin` and a `Cookie` header (each when given).
    pub fn open_with(url: &str, origin: Option<&str>, cookie: Option<&str>) -> Result<Self, Refused> {
        let mut request = url.into_client_request().map_err(|e| Refused::Other(e.into()))?;
        let headers = request.headers_mut();
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        for (name, value) in [(header::ORIGIN, origin), (header::COOKIE, cookie)] {
            if let Some(value) = value {
                headers.insert(name, HeaderValue::from_str(value).map_err(|e| Refused::Other(e.into()))?);
            }
        }
        let handshake =
            rt().block_on(async { tokio::time::timeout(HANDSHAKE, tokio_tungstenite::connect_async(request)).await });
        let stream = match handshake {
            Err(_) => {
                return Err(Refused::Other(anyhow::anyhow!("no WebSocket handshake within {HANDSHAKE:?} ({url})")));
            }
            Ok(Err(WsError::Http(response))) => {
                return Err(Refused::Status(response.status().as_u16()));
            }
            Ok(Err(e)) => {
                return Err(Refused::Other(anyhow::Error::new(e).context(format!("cannot open {url}"))));
            }
            Ok(Ok((stream, _response))) => stream,
        };
        let received = Arc::new(Mutex::new(Received::default()));
        let (outgoing, mut to_send) = mpsc::unbounded_channel::<Message>();
        let sink = received.clone();
        let task = rt().spawn(async move {
            let (mut write, mut read) = stream.split();
            loop {
                tokio::select! {
                    msg = read.next() => {
                        let mut r = lock(&sink);
                        match msg {
                            Some(Ok(Message::Binary(data))) => r.output.extend_from_slice(&data),
                            Some(Ok(Message::Text(text))) => {
                                let value = serde_json::from_str(text.as_str())
                                    .unwrap_or_else(|_| serde_json::Value::String(text.as_str().to_string()));
                                r.texts.push(value);
                            }
                            Some(Ok(Message::Close(frame))) => {
                                let (code, reason) = frame.map_or((1005, String::new()), |f| (u16::from(f.code), f.reason.as_str().to_string()));
                                r.closed = Some(Closed { code, reason, at: Instant::now(), wall: SystemTime::now() });
                            }
                            Some(Ok(Message::Pong(payload))) => r.pongs.push(payload.to_vec()),
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                r.ended = Some(e.to_string());
                                return;
                            }
                            None => {
                                r.ended = Some("stream ended".into());
                                return;
                            }
                        }
                    }
                    msg = to_send.recv() => match msg {
                        Some(msg) => {
                            if let Err(e) = write.send(msg).await {
                                lock(&sink).ended = Some(format!("send failed: {e}"));
                                return;
                            }
                        }
                        None => return,
                    },
                }
            }
        });
        Ok(Self { url: url.to_string(), received, outgoing, task })
    }

    /// Opens `<link>/ws` and waits for the server's `ready`; returns the client and the
    /// ready message's session key and offset.
    pub fn open_ready(link_url: &str) -> anyhow::Result<(Self, String, u64)> {
        let client = Self::open(link_url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        let (session, offset) = client.wait_ready()?;
        Ok((client, session, offset))
    }

    /// The URL this client opened.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Waits for `{"type":"ready","session","offset"}`.
    pub fn wait_ready(&self) -> anyhow::Result<(String, u64)> {
        let mut found = None;
        wait_until(Duration::from_secs(10), "the server's ready message", || {
            let r = lock(&self.received);
            found = r.texts.iter().find(|t| t["type"] == "ready").cloned();
            Ok(found.is_some() || r.closed.is_some())
        })?;
        if let (None, Some(c)) = (&found, self.closed()) {
            bail!("socket closed with {} {:?} before ready", c.code, c.reason);
        }
        let ready = found.context("no ready message")?;
        let session = ready["session"].as_str().with_context(|| format!("ready without a session: {ready}"))?;
        let offset = ready["offset"].as_u64().with_context(|| format!("ready without an offset: {ready}"))?;
        Ok((session.to_string(), offset))
    }

    /// Sends terminal bytes (a binary frame).
    pub fn send_bytes(&self, data: &[u8]) -> anyhow::Result<()> {
        self.outgoing.send(Message::Binary(data.to_vec().into())).context("the socket task has ended")
    }

    /// Types `line` followed by Enter (`\r`, as a terminal sends it).
    pub fn type_line(&self, line: &str) -> anyhow::Result<()> {
        self.send_bytes(format!("{line}\r").as_bytes())
    }

    /// Sends a close frame, as a browser closing its tab does; the server's answer shows in
    /// `wait_closed`.
    pub fn close(&self, code: u16, reason: &str) -> anyhow::Result<()> {
        let frame = CloseFrame { code: code.into(), reason: reason.into() };
        self.outgoing.send(Message::Close(Some(frame))).context("the socket task has ended")
    }

    /// Sends a ping; the server's pong shows in `pongs`.
    pub fn ping(&self, payload: &[u8]) -> anyhow::Result<()> {
        self.outgoing.send(Message::Ping(payload.to_vec().into())).context("the socket task has ended")
    }

    /// Every pong's payload received so far.
    pub fn pongs(&self) -> Vec<Vec<u8>> {
        lock(&self.received).pongs.clone()
    }

    /// Sends a JSON control message (a text frame).
    pub fn send_json(&self, value: &serde_json::Value) -> anyhow::Result<()> {
        self.outgoing.send(Message::Text(value.to_string().into())).context("the socket task has ended")
    }

    /// Terminal bytes received so far.
    pub fn output_len(&self) -> usize {
        lock(&self.received).output.len()
    }

    /// Terminal output so far, as text (lossy).
    pub fn output_text(&self) -> String {
        String::from_utf8_lossy(&lock(&self.received).output).into_owned()
    }

    /// Terminal output from byte `from` on, as text (lossy).
    pub fn output_since(&self, from: usize) -> String {
        let r = lock(&self.received);
        String::from_utf8_lossy(r.output.get(from..).unwrap_or_default()).into_owned()
    }

    /// Every control message received so far.
    pub fn texts(&self) -> Vec<serde_json::Value> {
        lock(&self.received).texts.clone()
    }

    /// The close frame, if the server sent one.
    pub fn closed(&self) -> Option<Closed> {
        lock(&self.received).closed.clone()
    }

    /// Waits until some output line after byte `from` (escape sequences removed) satisfies
    /// `pred`; returns that line.
    pub fn wait_line_since(
        &self,
        from: usize,
        within: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let mut found = None;
        let waited = wait_until(within, what, || {
            found = terminal_lines(&self.output_since(from)).into_iter().find(|l| pred(l));
            Ok(found.is_some() || self.closed().is_some())
        });
        let closed = if found.is_none() { self.closed() } else { None };
        if let Some(c) = closed {
            bail!(
                "socket closed with {} {:?} while waiting for {what}\n--- output since byte {from} ---\n{:?}",
                c.code,
                c.reason,
                self.output_since(from)
            );
        }
        if let Err(e) = waited {
            bail!("{e:#}\n--- output since byte {from} ---\n{:?}", self.output_since(from));
        }
        found.context("no line")
    }

    /// Waits until a line of output after byte `from` is exactly `line`.
    pub fn wait_exact_line(&self, from: usize, line: &str, within: Duration) -> anyhow::Result<()> {
        self.wait_line_since(from, within, &format!("an output line {line:?}"), |l| l == line).map(drop)
    }

    /// Types `echo pid=$$` and returns the shell's process id.
    pub fn shell_pid(&self) -> anyhow::Result<u32> {
        let from = self.output_len();
        self.type_line("echo pid=$$")?;
        let line = self.wait_line_since(from, Duration::from_secs(10), "the shell's pid", |l| {
            l.strip_prefix("pid=").is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })?;
        Ok(line.trim_start_matches("pid=").parse()?)
    }

    /// Waits for the server's close frame.
    pub fn wait_closed(&self, within: Duration) -> anyhow::Result<Closed> {
        let mut closed = None;
        let mut ended = None;
        wait_until(within, "the server to close the socket", || {
            closed = self.closed();
            ended = lock(&self.received).ended.clone();
            Ok(closed.is_some() || ended.is_some())
        })?;
        match (closed, ended) {
            (Some(closed), _) => Ok(closed),
            (None, why) => bail!("the socket ended without a close frame: {}", why.unwrap_or_default()),
        }
    }

    /// Waits for the socket to end, with a close frame (returned) or without one.
    pub fn wait_gone(&self, within: Duration) -> anyhow::Result<Option<Closed>> {
        wait_until(
            within,
            "the socket to end",
            || Ok(self.closed().is_some() || lock(&self.received).ended.is_some()),
        )?;
        Ok(self.closed())
    }

    /// Tears the TCP connection down with no close handshake; returns every terminal byte
    /// received before it.
    pub fn drop_abruptly(mut self) -> Vec<u8> {
        self.task.abort();
        // Wait until the task is gone, so its socket is really closed and nothing more arrives.
        let task = std::mem::replace(&mut self.task, rt().spawn(async {}));
        let _ = rt().block_on(async { tokio::time::timeout(Duration::from_secs(5), task).await });
        std::mem::take(&mut lock(&self.received).output)
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}
