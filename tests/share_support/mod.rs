//! Shared by the share-link tests (`tests/share.rs`, `tests/browser.rs`): a server with one
//! agent, link creation through the real CLI, plain HTTP and a WebSocket client.

#![allow(dead_code)]

pub mod ws;

use std::io::{Read as _, Write as _};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;

use crate::common::{TestAgent, TestServer};

/// One runtime for every async piece of the tests (sockets, HTTP, the browser).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("cannot build the test runtime: {e}"))
    })
}

/// A server with one online agent.
pub struct Fixture {
    // Field order is drop order: the agent goes before its server.
    pub agent: TestAgent,
    pub server: TestServer,
}

/// `cmdop connect share --json` (CONTRACT.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub id: String,
    pub url: String,
    pub machine_id: String,
    pub expires_at: String,
    pub read_only: bool,
}

impl Link {
    /// The token: the URL's last path segment.
    pub fn token(&self) -> &str {
        self.url.rsplit('/').next().unwrap_or_default()
    }

    /// `expires_at` as a wall-clock time.
    pub fn deadline(&self) -> anyhow::Result<SystemTime> {
        rfc3339(&self.expires_at)
    }
}

/// Parses an RFC 3339 time.
pub fn rfc3339(text: &str) -> anyhow::Result<SystemTime> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("{text:?} is not RFC 3339"))?;
    Ok(SystemTime::from(t))
}

impl Fixture {
    /// A server and an agent showing `display_name`.
    pub fn start(display_name: &str) -> anyhow::Result<Self> {
        Self::start_with(display_name, &[])
    }

    /// `start` with extra `cmdop server` flags.
    pub fn start_with(display_name: &str, server_flags: &[&str]) -> anyhow::Result<Self> {
        let server = TestServer::start_with(server_flags)?;
        let agent = TestAgent::start(&server, display_name)?;
        Ok(Self { agent, server })
    }

    /// The machine id.
    pub fn machine(&self) -> &str {
        self.agent.machine_id()
    }

    /// `cmdop connect share MACHINE --ttl TTL [FLAGS] --json`.
    pub fn share(&self, ttl: &str, flags: &[&str]) -> anyhow::Result<Link> {
        let mut args = vec!["connect", "share", self.machine(), "--ttl", ttl, "--json"];
        args.extend_from_slice(flags);
        let run = self.server.cli().run(&args)?.expect_code(0)?;
        let link: Link = run.json()?;
        ensure!(
            link.url.starts_with(&format!("{}/s/", self.server.url())),
            "link {} is not under the server URL",
            link.url
        );
        ensure!(link.machine_id == self.machine(), "link for {} instead of {}", link.machine_id, self.machine());
        Ok(link)
    }

    /// `cmdop connect shares --json`, the row of `id`.
    pub fn share_row(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        let run = self.server.cli().run(&["connect", "shares", "--json"])?.expect_code(0)?;
        let rows: Vec<serde_json::Value> = run.json()?;
        rows.into_iter().find(|r| r["id"] == id).with_context(|| format!("link {id} not listed: {run}"))
    }
}

/// What a GET answered.
pub struct Page {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Page {
    /// A header's value ("" when absent; the first one when repeated).
    pub fn header(&self, name: &str) -> String {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).unwrap_or_default()
    }
}

/// GET `url` (`http://127.0.0.1:PORT/...`) over plain HTTP/1.1, no redirects followed.
pub fn get(url: &str) -> anyhow::Result<Page> {
    request("GET", url, &[], "")
}

/// GET `url` with extra `headers` (`Cookie`, `X-Forwarded-For`, ...).
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Page> {
    request("GET", url, headers, "")
}

/// POST `form` (form-encoded) to `url` with extra `headers`.
pub fn post_form(url: &str, headers: &[(&str, &str)], form: &[(&str, &str)]) -> anyhow::Result<Page> {
    let encode = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    let body: Vec<String> = form.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    let mut all = vec![("Content-Type", "application/x-www-form-urlencoded")];
    all.extend_from_slice(headers);
    request("POST", url, &all, &body.join("&"))
}

/// POST `body` as JSON to `url` with extra `headers` (`Origin`, ...).
pub fn post_json(url: &str, headers: &[(&str, &str)], body: &serde_json::Value) -> anyhow::Result<Page> {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    request("POST", url, &all, &body.to_string())
}

/// One plain HTTP/1.1 request (the connection closes after it).
fn request(method: &str, url: &str, headers: &[(&str, &str)], body: &str) -> anyhow::Result<Page> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").with_context(|| format!("not an http URL: {url}"))?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr: std::net::SocketAddr = authority.parse().with_context(|| format!("not an IP:port authority: {url}"))?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: cmdop-share-test\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if method != "GET" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    write!(stream, "{head}\r\n{body}")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).with_context(|| format!("{method} {url}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").with_context(|| format!("GET {url}: no end of headers"))?;
    let mut lines = head.lines();
    let status =
        lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|s| s.parse().ok()).context("no status")?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(n, v)| n == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    let body = if chunked { dechunk(body)? } else { body.to_string() };
    Ok(Page { status, headers, body })
}

fn dechunk(mut rest: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    for _ in 0..100_000 {
        let (size, tail) = rest.split_once("\r\n").context("truncated chunked body")?;
        let n = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)?;
        if n == 0 {
            return Ok(out);
        }
        out.push_str(tail.get(..n).context("short chunk")?);
        rest = tail.get(n..).unwrap_or_default().strip_prefix("\r\n").context("chunk without CRLF")?;
    }
    anyhow::bail!("too many chunks")
}

/// Terminal output as lines: escape sequences removed, split at `\r` and `\n`, trimmed, empty
/// lines dropped. A command's output line then reads exactly as printed, apart from the
/// prompt and the echoed command line.
pub fn terminal_lines(output: &str) -> Vec<String> {
    let mut clean = String::with_capacity(output.len());
    let mut chars = output.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => match chars.next() {
                // CSI: parameters and intermediates up to a final byte in @..~.
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                }
                // OSC: up to BEL or ST (ESC \).
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\u{7}' {
                            break;
                        }
                        if c == '\u{1b}' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                // Two-byte sequences (charset selection takes one more byte).
                Some('(' | ')') => {
                    chars.next();
                }
                _ => {}
            },
            '\r' | '\n' => clean.push('\n'),
            c if c.is_control() => {}
            c => clean.push(c),
        }
    }
    clean.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect()
}

/// A WebSocket that completes the handshake, types `input`, then never reads again: a
/// viewer whose laptop lid closed while output kept coming.
pub fn stalled_socket(link_url: &str, input: &[u8]) -> anyhow::Result<std::net::TcpStream> {
    let rest = link_url.strip_prefix("http://").context("http link")?;
    let (authority, path) = rest.split_once('/').context("link path")?;
    let mut stream = std::net::TcpStream::connect(authority)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /{path}/ws HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 4096 {
        stream.read_exact(&mut byte)?;
        head.push(byte[0]);
    }
    ensure!(head.starts_with(b"HTTP/1.1 101"), "no upgrade: {}", String::from_utf8_lossy(&head));
    ensure!(input.len() < 126, "short input only");
    // One masked binary frame (a zero mask leaves the payload as it is).
    let mut frame = vec![0x82, 0x80 | input.len() as u8, 0, 0, 0, 0];
    frame.extend_from_slice(input);
    stream.write_all(&frame)?;
    Ok(stream)
}

/// Bytes waiting in the receive queue of our end of a loopback connection (/proc/net/tcp).
pub fn receive_queue(stream: &std::net::TcpStream) -> anyhow::Result<u64> {
    let local = format!(":{:04X}", stream.local_addr()?.port());
    let peer = format!(":{:04X}", stream.peer_addr()?.port());
    let table = std::fs::read_to_string("/proc/net/tcp")?;
    for line in table.lines().skip(1) {
        let cols: Vec<&str> = line.split_whitespace().collect();
        if let (Some(l), Some(r), Some(queues)) = (cols.get(1), cols.get(2), cols.get(4))
            && l.ends_with(&local)
            && r.ends_with(&peer)
        {
            let rx = queues.split(':').nth(1).context("rx_queue")?;
            return Ok(u64::from_str_radix(rx, 16)?);
        }
    }
    bail!("our connection is not in /proc/net/tcp")
}
