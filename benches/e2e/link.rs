//! The browser, played by a Rust WebSocket client (tokio-tungstenite) on a share link's
//! `<link>/ws` (CONTRACT.md "Share links in the browser"): binary frames are terminal bytes
//! both ways, the server's first text frame is `{"type":"ready","session","offset"}`.

use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One open share-link socket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

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

/// Opens `url` like a browser would (TCP_NODELAY, as every browser sets) and waits for the
/// server's `ready`. `small`: a small read buffer, for the thousands of idle sockets.
pub async fn open(url: &str, small: bool) -> anyhow::Result<Ws> {
    let request = url.into_client_request()?;
    let config = Some(if small {
        WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0)
    } else {
        WebSocketConfig::default().read_buffer_size(TIMED_READ_BUFFER)
    });
    let connect = tokio_tungstenite::connect_async_with_config(request, config, true);
    let (mut ws, _) = tokio::time::timeout(OPEN, connect).await.context("no WebSocket handshake in time")??;
    let deadline = tokio::time::Instant::now() + OPEN;
    for _ in 0..64 {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.context("no ready message in time")?;
        match msg {
            Some(Ok(Message::Text(text))) => {
                let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                if v["type"] == "ready" {
                    return Ok(ws);
                }
            }
            Some(Ok(Message::Close(frame))) => bail!("closed before ready: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("socket error before ready: {e}"),
            None => bail!("socket ended before ready"),
        }
    }
    bail!("no ready among the first frames")
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
            Ok(Some(Ok(Message::Binary(data)))) => seen += data.len(),
            Ok(Some(Ok(Message::Close(frame)))) => bail!("closed while settling: {frame:?}"),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => bail!("socket error: {e}"),
            Ok(None) => bail!("socket ended"),
        }
    }
    Ok(seen)
}

/// Finds `needle` in `hay` (first-byte scan: the outputs searched here rarely hold that byte).
pub fn find(hay: &[u8], needle: &[u8]) -> bool {
    let Some((&first, rest)) = needle.split_first() else { return true };
    let mut at = 0;
    while let Some(i) = hay[at..].iter().position(|&b| b == first) {
        let start = at + i;
        if hay[start + 1..].starts_with(rest) {
            return true;
        }
        at = start + 1;
    }
    false
}

/// Reads output until `marker` went by; returns the bytes received. `within` bounds it.
pub async fn read_until(ws: &mut Ws, marker: &[u8], within: Duration) -> anyhow::Result<u64> {
    Ok(read_counting(ws, marker, within).await?.0)
}

/// Reads output until `marker` went by; returns the bytes and binary frames received.
pub async fn read_counting(ws: &mut Ws, marker: &[u8], within: Duration) -> anyhow::Result<(u64, u64)> {
    read_counting_after(ws, &[], marker, within).await
}

/// Like `read_counting`, for output that continues `before` (bytes already received, which
/// may hold the marker or its start).
async fn read_counting_after(ws: &mut Ws, before: &[u8], marker: &[u8], within: Duration) -> anyhow::Result<(u64, u64)> {
    if find(before, marker) {
        return Ok((0, 0));
    }
    let mut frames = 0u64;
    let deadline = tokio::time::Instant::now() + within;
    let mut tail: Vec<u8> = Vec::with_capacity(2 * marker.len());
    tail.extend_from_slice(&before[before.len().saturating_sub(marker.len())..]);
    let mut total = 0u64;
    for _ in 0..100_000_000u64 {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.with_context(|| {
            format!("{} not seen within {within:?} ({total} bytes read)", String::from_utf8_lossy(marker))
        })?;
        match msg {
            Some(Ok(Message::Binary(data))) => {
                total += data.len() as u64;
                frames += 1;
                // A marker may straddle two frames.
                let head = &data[..data.len().min(marker.len())];
                tail.extend_from_slice(head);
                if find(&tail, marker) || find(&data, marker) {
                    return Ok((total, frames));
                }
                tail.clear();
                tail.extend_from_slice(&data[data.len().saturating_sub(marker.len())..]);
            }
            Some(Ok(Message::Close(frame))) => bail!("closed while waiting for output: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("socket error: {e}"),
            None => bail!("socket ended"),
        }
    }
    bail!("output never ended")
}

/// Types `line` and Enter.
pub async fn type_line(ws: &mut Ws, line: &str) -> anyhow::Result<()> {
    ws.send(Message::binary(format!("{line}\r").into_bytes())).await?;
    Ok(())
}

/// The echo program of the issue: no echo, no line discipline, one byte in and out at a time.
pub fn echo_script(count: usize) -> String {
    format!("stty raw -echo; printf 'BENCH%s\\n' _GO; dd bs=1 count={count} 2>/dev/null; stty sane; echo BENCH_$((6*7))_DONE")
}

/// The byte the `i`th key sends.
pub fn key(i: usize) -> u8 {
    b'a' + (i % 26) as u8
}

/// Runs the echo program in the link's shell and times `warmup + keys` keystrokes; returns the
/// round trips of the last `keys`, in microseconds.
pub async fn echo(ws: &mut Ws, warmup: usize, keys: usize) -> anyhow::Result<Vec<f64>> {
    echo_start(ws, warmup + keys).await?;
    let (mut samples, last) = echo_keys(ws, 0, warmup + keys).await?;
    echo_finish(ws, &last).await?;
    Ok(samples.split_off(warmup.min(samples.len())))
}

/// Starts the echo program for `total` keys in the link's shell and waits until it reads.
pub async fn echo_start(ws: &mut Ws, total: usize) -> anyhow::Result<()> {
    type_line(ws, &echo_script(total)).await?;
    read_until(ws, b"BENCH_GO", Duration::from_secs(20)).await?;
    Ok(())
}

/// Waits for the echo program's end marker; `last` is the frame that echoed its last key.
pub async fn echo_finish(ws: &mut Ws, last: &[u8]) -> anyhow::Result<()> {
    // The end marker can come in the frame that echoed the last key (the agent sends what the
    // PTY holds in one frame): look for it there first.
    read_counting_after(ws, last, b"BENCH_42_DONE", Duration::from_secs(20)).await?;
    Ok(())
}

/// Times `warmup + keys` keystrokes against whatever echoes them on the other end; returns the
/// round trips of the last `keys`, in microseconds.
pub async fn keystrokes(ws: &mut Ws, warmup: usize, keys: usize) -> anyhow::Result<Vec<f64>> {
    let mut samples = echo_keys(ws, 0, warmup + keys).await?.0;
    Ok(samples.split_off(warmup.min(samples.len())))
}

/// Types keys `first..first + n` one at a time into whatever echoes them (the echo program
/// once `echo_start` ran): their round trips in microseconds, and the frame that echoed the
/// last one.
pub async fn echo_keys(ws: &mut Ws, first: usize, n: usize) -> anyhow::Result<(Vec<f64>, Vec<u8>)> {
    let mut samples = Vec::with_capacity(n);
    let mut last = Vec::new();
    for i in first..first + n {
        let k = key(i);
        let started = Instant::now();
        ws.send(Message::binary(vec![k])).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut got = false;
        for _ in 0..1_000 {
            let msg = tokio::time::timeout_at(deadline, ws.next()).await.with_context(|| format!("key {i} not echoed within 5 s"))?;
            match msg {
                Some(Ok(Message::Binary(data))) => {
                    if data.contains(&k) {
                        got = true;
                        last = data.to_vec();
                        break;
                    }
                }
                Some(Ok(Message::Close(frame))) => bail!("closed during echo: {frame:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => bail!("socket error during echo: {e}"),
                None => bail!("socket ended during echo"),
            }
        }
        let rtt = started.elapsed();
        if !got {
            bail!("key {i} not echoed");
        }
        samples.push(rtt.as_secs_f64() * 1e6);
    }
    Ok((samples, last))
}

/// Streams `bytes` of base64 through the link's shell; returns (bytes received, seconds,
/// binary frames received).
pub async fn throughput(ws: &mut Ws, bytes: u64, within: Duration) -> anyhow::Result<(u64, f64, u64)> {
    let started = Instant::now();
    type_line(ws, &format!("head -c {bytes} /dev/zero | base64 | cat; echo BENCH_$((6*7))_END")).await?;
    let (got, frames) = read_counting(ws, b"BENCH_42_END", within).await?;
    Ok((got, started.elapsed().as_secs_f64(), frames))
}

/// Waits for the server's close frame (other frames are read and dropped), at most `within`.
pub async fn wait_close(ws: &mut Ws, within: Duration) -> anyhow::Result<Closed> {
    let deadline = tokio::time::Instant::now() + within;
    for _ in 0..10_000_000u64 {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.with_context(|| format!("no close within {within:?}"))?;
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
