//! The browser, played by Rust WebSocket clients on a share link's `<link>/ws` (CONTRACT.md
//! "Share links in the browser"): binary frames are terminal bytes both ways, the server's
//! first text frame is `{"type":"ready","session","offset"}`.
//!
//! The timed socket ([`Timed`]) is a blocking client (tungstenite on a `std` socket) on the
//! bench's main thread, which reads and writes the baselines' PTYs directly too: a key's round
//! trip then holds the same client work on every side of the comparison. With a tokio client
//! every echo also paid an `epoll_wait` and a task wake-up in the bench (about 10 µs of the
//! link's figure) that the baselines' direct reads do not. The thousands of idle sockets and
//! the control phase's sockets are tokio-tungstenite ones ([`Ws`]).

use std::net::TcpStream as StdTcpStream;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::typing::{self, Terminal};

/// One open share-link socket on a tokio runtime (idle sessions, revoke and deadline).
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// One message as both clients return it: `None` once the socket has ended.
type Received = Option<Result<Message, tungstenite::Error>>;

/// How long opening a socket (upgrade + `ready`) may take.
const OPEN: Duration = Duration::from_secs(30);

/// The close frame a socket got.
#[derive(Debug, Clone)]
pub struct Closed {
    pub code: u16,
    pub at: Instant,
    pub wall: SystemTime,
}

/// Read buffer of the timed socket: one output frame of the agent (32 KiB) per read or two.
/// tungstenite zero-fills its whole read buffer before every read, including the one that
/// finds the socket empty; with its default (128 KiB) that `memset` was 12 % of this client's
/// CPU during echo, work no browser does.
const TIMED_READ_BUFFER: usize = 32 * 1024;

/// Opens `url` on the current tokio runtime like a browser would (TCP_NODELAY, as every
/// browser sets), with small buffers (thousands of these are held), and waits for `ready`.
pub async fn open(url: &str) -> anyhow::Result<Ws> {
    let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
    let connect = tokio_tungstenite::connect_async_with_config(url.into_client_request()?, Some(config), true);
    let (mut ws, _) = tokio::time::timeout(OPEN, connect).await.context("no WebSocket handshake in time")??;
    let deadline = tokio::time::Instant::now() + OPEN;
    for _ in 0..64 {
        if is_ready(tokio::time::timeout_at(deadline, ws.next()).await.context("no ready message in time")?)? {
            return Ok(ws);
        }
    }
    bail!("no ready among the first frames")
}

/// Whether `msg` is the server's `ready`; an error if the socket closed, failed or ended.
fn is_ready(msg: Received) -> anyhow::Result<bool> {
    match msg {
        Some(Ok(Message::Text(text))) => {
            let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
            Ok(v["type"] == "ready")
        }
        Some(Ok(Message::Close(frame))) => bail!("closed before ready: {frame:?}"),
        Some(Ok(_)) => Ok(false),
        Some(Err(e)) => bail!("socket error before ready: {e}"),
        None => bail!("socket ended before ready"),
    }
}

/// The terminal output `msg` carries (empty for other messages); an error if the socket
/// closed, failed or ended.
fn output(msg: Received) -> anyhow::Result<tungstenite::Bytes> {
    match msg {
        Some(Ok(Message::Binary(data))) => Ok(data),
        Some(Ok(Message::Close(frame))) => bail!("closed while waiting for output: {frame:?}"),
        Some(Ok(_)) => Ok(tungstenite::Bytes::new()),
        Some(Err(e)) => bail!("socket error: {e}"),
        None => bail!("socket ended"),
    }
}

/// Reads until some terminal output arrived and then none for `quiet` (the shell's prompt
/// is out), at most `within`.
pub async fn settle(ws: &mut Ws, quiet: Duration, within: Duration) -> anyhow::Result<usize> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = 0usize;
    for _ in 0..100_000 {
        let wait = if seen == 0 { deadline } else { (tokio::time::Instant::now() + quiet).min(deadline) };
        match tokio::time::timeout_at(wait, ws.next()).await {
            Err(_) if seen > 0 => return Ok(seen),
            Err(_) => bail!("no output within {within:?}"),
            Ok(msg) => seen += output(msg)?.len(),
        }
    }
    Ok(seen)
}

/// The timed socket: a blocking client (see the module doc).
pub struct Timed {
    ws: tungstenite::WebSocket<StdTcpStream>,
    /// The socket's read timeout now (set only when it changes: no system call per read).
    timeout: Duration,
    /// How long `Terminal::output` waits for a message.
    wait: Duration,
    /// The last output received (what `Terminal::output` lends out).
    last: tungstenite::Bytes,
}

/// How long a key waits for its echo.
const PER_KEY: Duration = Duration::from_secs(5);

impl Timed {
    /// Opens `url` like a browser would (TCP_NODELAY) and waits for the server's `ready`.
    pub fn open(url: &str) -> anyhow::Result<Self> {
        let request = url.into_client_request()?;
        let host = request.uri().host().context("no host in the link")?.to_string();
        let port = request.uri().port_u16().unwrap_or(80);
        let stream = StdTcpStream::connect((host.as_str(), port))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(OPEN))?;
        stream.set_write_timeout(Some(OPEN))?;
        let config = WebSocketConfig::default().read_buffer_size(TIMED_READ_BUFFER);
        let (ws, _) = tungstenite::client::client_with_config(request, stream, Some(config))
            .map_err(|e| anyhow::anyhow!("WebSocket handshake failed: {e}"))?;
        let mut timed = Self { ws, timeout: OPEN, wait: OPEN, last: tungstenite::Bytes::new() };
        for _ in 0..64 {
            if is_ready(timed.next(OPEN))? {
                return Ok(timed);
            }
        }
        bail!("no ready among the first frames")
    }

    /// The next message, waiting at most `within` for it (an I/O error of kind `WouldBlock`
    /// when none came).
    fn next(&mut self, within: Duration) -> Received {
        if self.timeout != within {
            if let Err(e) = self.ws.get_ref().set_read_timeout(Some(within)) {
                return Some(Err(e.into()));
            }
            self.timeout = within;
        }
        match self.ws.read() {
            Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => None,
            msg => Some(msg),
        }
    }

    /// The output of the next message (empty for other messages), or `None` if nothing came
    /// within `within`.
    fn output_within(&mut self, within: Duration) -> anyhow::Result<Option<tungstenite::Bytes>> {
        match self.next(within) {
            Some(Err(tungstenite::Error::Io(e)))
                if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) =>
            {
                Ok(None)
            }
            msg => Ok(Some(output(msg)?)),
        }
    }

    /// Reads until some terminal output arrived and then none for `quiet` (the shell's prompt
    /// is out), at most about `within`.
    pub fn settle(&mut self, quiet: Duration, within: Duration) -> anyhow::Result<usize> {
        let started = Instant::now();
        let mut seen = 0usize;
        for _ in 0..100_000 {
            match self.output_within(if seen == 0 { within } else { quiet })? {
                None if seen > 0 => return Ok(seen),
                None => bail!("no output within {within:?}"),
                Some(data) => seen += data.len(),
            }
            if started.elapsed() > within {
                break;
            }
        }
        Ok(seen)
    }

    /// Types `line` and Enter.
    fn type_line(&mut self, line: &str) -> anyhow::Result<()> {
        self.send(format!("{line}\r").as_bytes())
    }

    /// Reads output continuing `before` until `marker` went by, each message waiting at most
    /// `within`, all of them about as long: (bytes, frames).
    fn read_until(&mut self, before: &[u8], marker: &[u8], within: Duration) -> anyhow::Result<(u64, u64)> {
        self.wait = within;
        typing::read_until(self, before, marker, within)
    }

    /// Runs the echo program in the link's shell and times `warmup + keys` keystrokes;
    /// returns the round trips of the last `keys`, in microseconds.
    pub fn echo(&mut self, warmup: usize, keys: usize) -> anyhow::Result<Vec<f64>> {
        self.echo_start(warmup + keys)?;
        let (mut samples, last) = self.echo_keys(0, warmup + keys)?;
        self.echo_finish(&last)?;
        Ok(samples.split_off(warmup.min(samples.len())))
    }

    /// Starts the echo program for `total` keys in the link's shell and waits until it reads.
    pub fn echo_start(&mut self, total: usize) -> anyhow::Result<()> {
        self.type_line(&typing::echo_script(total))?;
        self.read_until(&[], b"BENCH_GO", Duration::from_secs(20))?;
        Ok(())
    }

    /// Waits for the echo program's end marker; `last` is the frame that echoed its last key.
    pub fn echo_finish(&mut self, last: &[u8]) -> anyhow::Result<()> {
        // The end marker can come in the frame that echoed the last key (the agent sends what
        // the PTY holds in one frame): look for it there first.
        self.read_until(last, b"BENCH_42_DONE", Duration::from_secs(20))?;
        Ok(())
    }

    /// Times `warmup + keys` keystrokes against whatever echoes them on the other end;
    /// returns the round trips of the last `keys`, in microseconds.
    pub fn keystrokes(&mut self, warmup: usize, keys: usize) -> anyhow::Result<Vec<f64>> {
        let mut samples = self.echo_keys(0, warmup + keys)?.0;
        Ok(samples.split_off(warmup.min(samples.len())))
    }

    /// `typing::time_keys` on this socket, each key waiting at most `PER_KEY` for its echo.
    pub fn echo_keys(&mut self, first: usize, n: usize) -> anyhow::Result<(Vec<f64>, Vec<u8>)> {
        self.wait = PER_KEY;
        typing::time_keys(self, first, n)
    }

    /// Streams `bytes` of base64 through the link's shell; returns (bytes received, seconds,
    /// binary frames received).
    pub fn throughput(&mut self, bytes: u64, within: Duration) -> anyhow::Result<(u64, f64, u64)> {
        let started = Instant::now();
        self.type_line(&format!("head -c {bytes} /dev/zero | base64 | cat; echo BENCH_$((6*7))_END"))?;
        let (got, frames) = self.read_until(&[], b"BENCH_42_END", within)?;
        Ok((got, started.elapsed().as_secs_f64(), frames))
    }
}

impl Terminal for Timed {
    fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.ws.send(Message::binary(bytes.to_vec()))?;
        Ok(())
    }

    fn output(&mut self) -> anyhow::Result<&[u8]> {
        let wait = self.wait;
        self.last = self.output_within(wait)?.with_context(|| format!("nothing within {wait:?}"))?;
        Ok(&self.last)
    }
}

/// Waits for the server's close frame (other frames are read and dropped), at most `within`.
pub async fn wait_close(ws: &mut Ws, within: Duration) -> anyhow::Result<Closed> {
    let deadline = tokio::time::Instant::now() + within;
    for _ in 0..10_000_000u64 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no close within {within:?}"))?;
        match msg {
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                return Ok(Closed { code, at: Instant::now(), wall: SystemTime::now() });
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("socket error before close: {e}"),
            None => bail!("socket ended without a close frame"),
        }
    }
    bail!("no close")
}

/// Keeps an idle socket read (so the server's writes never back up) until it ends.
pub async fn drain(mut ws: Ws) {
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Close(_) = msg {
            return;
        }
    }
}
