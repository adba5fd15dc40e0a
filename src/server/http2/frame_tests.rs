//! The connection against a raw client that writes frames byte by byte (with the core's
//! writers): each guard and each protocol error answered as RFC 9113 says.

use axum::Router;
use axum::routing::{get, post};
use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::tests::{BOUND, TestServer};
use super::{MAX_CONCURRENT_STREAMS, MAX_EMPTY_DATA_FRAMES, MAX_HEADER_LIST_BYTES, MAX_PENDING_ACCEPT_RESETS};
use crate::core::http2::frame::{self, HEAD_LEN, Head, Kind, Reason, flags};
use crate::core::http2::hpack;

/// Routes that answer at once, never, or without reading the body.
fn app() -> Router {
    Router::new()
        .route("/hello", get(|| async { "hi" }))
        .route("/never", get(std::future::pending::<&'static str>).post(std::future::pending::<&'static str>))
        .route("/ignore", post(|| async { "ignored" }))
}

/// A client speaking frames.
struct Raw {
    tcp: TcpStream,
    buf: BytesMut,
}

impl Raw {
    /// Connects, sends the preface and empty SETTINGS.
    async fn connect(server: &TestServer) -> anyhow::Result<Self> {
        let mut raw = Self { tcp: TcpStream::connect(server.addr).await?, buf: BytesMut::new() };
        let mut out = frame::PREFACE.to_vec();
        frame::write_settings(&mut out, &[]);
        raw.send(out).await?;
        Ok(raw)
    }

    async fn send(&mut self, bytes: Vec<u8>) -> anyhow::Result<()> {
        tokio::time::timeout(BOUND, self.tcp.write_all(&bytes)).await??;
        Ok(())
    }

    /// The next frame; `None` once the server closed the connection.
    async fn frame(&mut self) -> anyhow::Result<Option<(Head, Bytes)>> {
        loop {
            if let Some(head) = self.buf.first_chunk::<HEAD_LEN>().map(Head::parse) {
                let total = HEAD_LEN + head.len as usize;
                if self.buf.len() >= total {
                    let mut frame = self.buf.split_to(total);
                    frame.advance(HEAD_LEN);
                    return Ok(Some((head, frame.freeze())));
                }
            }
            if tokio::time::timeout(BOUND, self.tcp.read_buf(&mut self.buf)).await?? == 0 {
                return Ok(None);
            }
        }
    }

    /// The next frame of `kind` (others skipped); `None` if the connection closed first.
    async fn next(&mut self, kind: Kind) -> anyhow::Result<Option<(Head, Bytes)>> {
        while let Some((head, payload)) = self.frame().await? {
            if head.kind == kind {
                return Ok(Some((head, payload)));
            }
        }
        Ok(None)
    }

    /// The reason of the GOAWAY the server sends before it closes.
    async fn goaway(&mut self) -> anyhow::Result<Reason> {
        let (head, payload) = self.next(Kind::GoAway).await?.ok_or_else(|| anyhow::anyhow!("closed without GOAWAY"))?;
        let reason = frame::goaway(&head, &payload)?.reason;
        // Then the connection closes.
        while self.frame().await?.is_some() {}
        Ok(reason)
    }

    /// The reason of the next RST_STREAM.
    async fn reset(&mut self) -> anyhow::Result<(u32, Reason)> {
        let (head, payload) = self.next(Kind::RstStream).await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
        Ok((head.stream, frame::rst_reason(&head, &payload)?))
    }

    /// Whether the connection still answers: a PING comes back.
    async fn answers_ping(&mut self) -> anyhow::Result<bool> {
        let mut out = Vec::new();
        frame::write_ping(&mut out, false, *b"still-up");
        self.send(out).await?;
        while let Some((head, payload)) = self.next(Kind::Ping).await? {
            if head.has(flags::ACK) && &payload[..] == b"still-up" {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// A request's header block.
fn request(method: &str, path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    let fields: [(&[u8], &[u8]); 4] =
        [(b":method", method.as_bytes()), (b":scheme", b"http"), (b":authority", b"test"), (b":path", path.as_bytes())];
    hpack::encode(fields, &mut block);
    block
}

fn headers(out: &mut Vec<u8>, stream: u32, block: &[u8], end_stream: bool) {
    frame::write_headers(out, stream, block, end_stream, frame::DEFAULT_MAX_FRAME);
}

#[tokio::test]
async fn a_malformed_header_block_closes_the_connection_with_compression_error() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    // An indexed field of index 0 does not exist.
    headers(&mut out, 1, &[0x80], true);
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::COMPRESSION_ERROR);
    Ok(())
}

#[tokio::test]
async fn a_window_past_2_31_closes_the_connection_or_resets_the_stream_with_flow_control_error() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    headers(&mut out, 1, &request("GET", "/never"), true);
    frame::write_window_update(&mut out, 1, frame::MAX_WINDOW);
    raw.send(out).await?;
    assert_eq!(raw.reset().await?, (1, Reason::FLOW_CONTROL_ERROR));
    let mut out = Vec::new();
    frame::write_window_update(&mut out, 0, frame::MAX_WINDOW);
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::FLOW_CONTROL_ERROR);
    Ok(())
}

#[tokio::test]
async fn data_beyond_the_windows_closes_the_connection_with_flow_control_error() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    headers(&mut out, 1, &request("POST", "/never"), false);
    // The stream and connection windows are 1 MiB (no one reads): one byte more, in frames
    // of the largest allowed size.
    let frame_len = super::MAX_FRAME_BYTES as usize;
    let mut left = super::STREAM_WINDOW as usize + 1;
    while left > 0 {
        let n = left.min(frame_len);
        frame::write_data_head(&mut out, 1, n, false);
        out.resize(out.len() + n, 7);
        left -= n;
    }
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::FLOW_CONTROL_ERROR);
    Ok(())
}

#[tokio::test]
async fn even_and_backward_stream_ids_close_the_connection_with_protocol_error() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    headers(&mut out, 2, &request("GET", "/hello"), true);
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::PROTOCOL_ERROR);

    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    headers(&mut out, 5, &request("GET", "/hello"), true);
    headers(&mut out, 3, &request("GET", "/hello"), true);
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::PROTOCOL_ERROR);
    Ok(())
}

#[tokio::test]
async fn data_on_a_stream_never_opened_closes_the_connection_with_protocol_error() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    frame::write_data_head(&mut out, 7, 2, false);
    out.extend_from_slice(b"hi");
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::PROTOCOL_ERROR);
    Ok(())
}

#[tokio::test]
async fn an_oversize_header_list_is_answered_431_and_the_connection_goes_on() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut block = request("GET", "/hello");
    let big = vec![b'a'; MAX_HEADER_LIST_BYTES as usize];
    hpack::encode([(&b"x-big"[..], &big[..])], &mut block);
    let mut out = Vec::new();
    headers(&mut out, 1, &block, true);
    headers(&mut out, 3, &request("GET", "/hello"), true);
    raw.send(out).await?;
    let mut decoder = hpack::Decoder::new();
    let mut statuses = Vec::new();
    while statuses.len() < 2 {
        let (head, payload) = raw.next(Kind::Headers).await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
        let block = frame::header_block(&head, &payload)?;
        let fields = decoder.decode(&payload[block], 1 << 16)?;
        statuses.push((head.stream, fields[0].1.clone()));
    }
    assert_eq!(statuses, [(1, Bytes::from_static(b"431")), (3, Bytes::from_static(b"200"))]);
    Ok(())
}

#[tokio::test]
async fn a_malformed_request_resets_its_stream_only() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut block = Vec::new();
    hpack::encode([(&b":method"[..], &b"GET"[..]), (b":scheme", b"http")], &mut block);
    let mut out = Vec::new();
    headers(&mut out, 1, &block, true);
    raw.send(out).await?;
    assert_eq!(raw.reset().await?, (1, Reason::PROTOCOL_ERROR));
    assert!(raw.answers_ping().await?);
    Ok(())
}

#[tokio::test]
async fn streams_beyond_the_concurrency_limit_are_refused() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    let block = request("GET", "/never");
    for i in 0..=MAX_CONCURRENT_STREAMS {
        headers(&mut out, 2 * i + 1, &block, true);
    }
    raw.send(out).await?;
    assert_eq!(raw.reset().await?, (2 * MAX_CONCURRENT_STREAMS + 1, Reason::REFUSED_STREAM));
    assert!(raw.answers_ping().await?);
    Ok(())
}

#[tokio::test]
async fn rapid_resets_close_the_connection_with_enhance_your_calm() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let block = request("GET", "/never");
    let mut out = Vec::new();
    for i in 0..MAX_PENDING_ACCEPT_RESETS as u32 + 1 {
        headers(&mut out, 2 * i + 1, &block, true);
        frame::write_rst(&mut out, 2 * i + 1, Reason::CANCEL);
    }
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::ENHANCE_YOUR_CALM);
    Ok(())
}

#[tokio::test]
async fn resets_answered_by_responses_in_between_are_not_a_flood() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let (never, hello) = (request("GET", "/never"), request("GET", "/hello"));
    for i in 0..2 * MAX_PENDING_ACCEPT_RESETS as u32 {
        let mut out = Vec::new();
        headers(&mut out, 4 * i + 1, &never, true);
        frame::write_rst(&mut out, 4 * i + 1, Reason::CANCEL);
        headers(&mut out, 4 * i + 3, &hello, true);
        raw.send(out).await?;
        let (head, _) = raw.next(Kind::Headers).await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
        assert_eq!(head.stream, 4 * i + 3);
    }
    assert!(raw.answers_ping().await?);
    Ok(())
}

#[tokio::test]
async fn too_many_stream_errors_close_the_connection_with_enhance_your_calm() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut block = Vec::new();
    hpack::encode([(&b":method"[..], &b"GET"[..])], &mut block);
    let mut out = Vec::new();
    for i in 0..super::MAX_LOCAL_ERROR_RESETS as u32 + 1 {
        headers(&mut out, 2 * i + 1, &block, true);
    }
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::ENHANCE_YOUR_CALM);
    Ok(())
}

#[tokio::test]
async fn a_continuation_flood_closes_the_connection_with_enhance_your_calm() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    // Empty CONTINUATION frames: work without bytes.
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    frame::write_head(&mut out, Kind::Headers, 0, 1, 0);
    for _ in 0..super::MAX_CONTINUATION_FRAMES {
        frame::write_head(&mut out, Kind::Continuation, 0, 1, 0);
    }
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::ENHANCE_YOUR_CALM);
    // A block that keeps growing.
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    frame::write_head(&mut out, Kind::Headers, 0, 1, 0);
    let piece = vec![0u8; frame::DEFAULT_MAX_FRAME as usize];
    for _ in 0..super::MAX_HEADER_BLOCK_BYTES / piece.len() + 1 {
        frame::write_head(&mut out, Kind::Continuation, 0, 1, piece.len());
        out.extend_from_slice(&piece);
    }
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::ENHANCE_YOUR_CALM);
    Ok(())
}

#[tokio::test]
async fn an_empty_data_flood_closes_the_connection_with_enhance_your_calm() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    headers(&mut out, 1, &request("POST", "/never"), false);
    for _ in 0..=MAX_EMPTY_DATA_FRAMES {
        frame::write_data_head(&mut out, 1, 0, false);
    }
    raw.send(out).await?;
    assert_eq!(raw.goaway().await?, Reason::ENHANCE_YOUR_CALM);
    Ok(())
}

#[tokio::test]
async fn a_ping_flood_from_a_client_that_does_not_read_stops_being_read() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut pings = Vec::new();
    for _ in 0..4096 {
        frame::write_ping(&mut pings, false, *b"floodfld");
    }
    // 64 KiB of PINGs a write: at most 64 MiB, far beyond the socket buffers and the server's
    // 400 KiB of queued answers, so the server must stop reading before the end.
    let mut written = 0usize;
    let blocked = loop {
        if written >= 64 << 20 {
            break false;
        }
        match tokio::time::timeout(std::time::Duration::from_secs(1), raw.tcp.write_all(&pings)).await {
            Ok(result) => {
                result?;
                written += pings.len();
            }
            Err(_) => break true,
        }
    };
    assert!(blocked, "the server read {written} bytes of PINGs without their answers being read");
    Ok(())
}

#[tokio::test]
async fn a_request_body_no_one_reads_is_reset_no_error_after_the_response() -> anyhow::Result<()> {
    let server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    headers(&mut out, 1, &request("POST", "/ignore"), false);
    raw.send(out).await?;
    let (head, _) = raw.next(Kind::Data).await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    assert!(head.has(flags::END_STREAM));
    assert_eq!(raw.reset().await?, (1, Reason::NO_ERROR));
    // Data already in flight is ignored.
    let mut out = Vec::new();
    frame::write_data_head(&mut out, 1, 1, true);
    out.push(0);
    raw.send(out).await?;
    assert!(raw.answers_ping().await?);
    Ok(())
}

#[tokio::test]
async fn streams_opened_after_the_servers_goaway_are_ignored_not_errors() -> anyhow::Result<()> {
    let mut server = TestServer::start(app()).await?;
    let mut raw = Raw::connect(&server).await?;
    let mut out = Vec::new();
    headers(&mut out, 1, &request("GET", "/never"), true);
    raw.send(out).await?;
    // Answered after the server read the request before it.
    assert!(raw.answers_ping().await?);
    server.stop();
    let (head, payload) = raw.next(Kind::GoAway).await?.ok_or_else(|| anyhow::anyhow!("closed"))?;
    let goaway = frame::goaway(&head, &payload)?;
    assert_eq!((goaway.last_stream, goaway.reason), (1, Reason::NO_ERROR));
    // Sent before the client saw the GOAWAY: a request and its body, both ignored.
    let mut out = Vec::new();
    headers(&mut out, 3, &request("POST", "/hello"), false);
    frame::write_data_head(&mut out, 3, 2, true);
    out.extend_from_slice(b"hi");
    raw.send(out).await?;
    assert!(raw.answers_ping().await?);
    Ok(())
}
