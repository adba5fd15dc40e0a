//! The HTTP/2 connection against real clients: tonic's, a raw `h2` one, and an HTTP/1.1 one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderMap, Request};
use http_body_util_free::collect;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Mutex, oneshot};
use tonic::{Response, Status};

use super::{HotRoutes, Opening};
use crate::proto;
use crate::server::listen::{self, ConnLimits};
use crate::sys::task::AbortOnDrop;

/// Bounds every wait of these tests: a hang fails instead of blocking the suite.
pub(super) const BOUND: Duration = Duration::from_secs(10);

/// No hot streams: every request goes to the router.
struct NoHotStreams;

impl HotRoutes for NoHotStreams {
    fn open(&self, req: Request<Body>) -> Result<Opening, Box<Request<Body>>> {
        Err(Box::new(req))
    }
}

/// `app` served on a port of its own until dropped.
pub(super) struct TestServer {
    pub(super) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: AbortOnDrop<()>,
}

impl TestServer {
    pub(super) async fn start(app: Router) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let task =
            AbortOnDrop::spawn(listen::serve(listener, app, Arc::new(NoHotStreams), ConnLimits::default(), shutdown));
        Ok(Self { addr, stop: Some(stop), task })
    }

    /// Starts the server's shutdown.
    pub(super) fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// A raw HTTP/2 client connection (prior knowledge), its connection driven in a task.
    async fn h2(&self) -> anyhow::Result<(h2::client::SendRequest<Bytes>, AbortOnDrop<()>, h2::PingPong)> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        let (client, mut conn) = h2::client::handshake(tcp).await?;
        let pings = conn.ping_pong().ok_or_else(|| anyhow::anyhow!("no pings"))?;
        let task = AbortOnDrop::spawn(async move {
            let _ = conn.await;
        });
        Ok((client.ready().await?, task, pings))
    }
}

/// A stub of the relay's unary call, to call with tonic's own client.
struct StubRelay;

#[tonic::async_trait]
impl proto::relay_server::Relay for StubRelay {
    async fn enroll(
        &self,
        req: tonic::Request<proto::EnrollRequest>,
    ) -> Result<Response<proto::EnrollResponse>, Status> {
        let req = req.into_inner();
        Ok(Response::new(proto::EnrollResponse {
            machine_id: format!("{}:{}", req.token, req.hostname),
            credential: "secret".into(),
            fleet: String::new(),
        }))
    }

    type LinkStream = futures_util::stream::Empty<Result<proto::RelayFrame, Status>>;

    async fn link(
        &self,
        _req: tonic::Request<tonic::Streaming<proto::AgentFrame>>,
    ) -> Result<Response<Self::LinkStream>, Status> {
        Err(Status::unimplemented("not in this stub"))
    }
}

#[tokio::test]
async fn a_stock_tonic_client_calls_a_unary_method() -> anyhow::Result<()> {
    let app = tonic::service::Routes::new(proto::relay_server::RelayServer::new(StubRelay)).into_axum_router();
    let server = TestServer::start(app).await?;
    let mut client = proto::relay_client::RelayClient::connect(format!("http://{}", server.addr)).await?;
    let req = proto::EnrollRequest { token: "tok".into(), hostname: "box".into(), display_name: String::new() };
    let resp = tokio::time::timeout(BOUND, client.enroll(req)).await??.into_inner();
    assert_eq!(resp.machine_id, "tok:box");
    let link = tokio::time::timeout(BOUND, client.link(futures_util::stream::empty())).await?;
    assert_eq!(link.err().map(|s| s.code()), Some(tonic::Code::Unimplemented));
    Ok(())
}

/// Echoes the request body back, then its trailers as the response's, plus one of its own.
async fn echo_with_trailers(req: Request<Body>) -> http::Response<Body> {
    let (data, trailers) = collect(req.into_body()).await;
    let mut trailers = trailers.unwrap_or_default();
    trailers.insert("x-echoed", http::HeaderValue::from(data.len()));
    let frames = vec![
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(data))),
        Ok(http_body::Frame::trailers(trailers)),
    ];
    http::Response::new(Body::new(http_body_util_free::Frames::new(frames)))
}

#[tokio::test]
async fn a_request_body_and_trailers_come_back_with_response_trailers() -> anyhow::Result<()> {
    let server = TestServer::start(Router::new().route("/echo", post(echo_with_trailers))).await?;
    let (mut client, _conn, _) = server.h2().await?;
    let req = Request::post(format!("http://{}/echo", server.addr)).body(())?;
    let (response, mut send) = client.send_request(req, false)?;
    send.send_data(Bytes::from_static(b"hello "), false)?;
    send.send_data(Bytes::from_static(b"world"), false)?;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client", http::HeaderValue::from_static("yes"));
    send.send_trailers(trailers)?;
    let mut body = tokio::time::timeout(BOUND, response).await??.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = tokio::time::timeout(BOUND, body.data()).await? {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got, b"hello world");
    let trailers = tokio::time::timeout(BOUND, body.trailers()).await??.unwrap_or_default();
    assert_eq!(trailers.get("x-client").map(|v| v.as_bytes()), Some(&b"yes"[..]));
    assert_eq!(trailers.get("x-echoed").map(|v| v.as_bytes()), Some(&b"11"[..]));
    Ok(())
}

/// A handler that says it started, then waits forever; its guard reports when it is dropped.
fn never_answering() -> (Router, oneshot::Receiver<()>, oneshot::Receiver<()>) {
    let (started_tx, started) = oneshot::channel::<()>();
    let (dropped_tx, dropped) = oneshot::channel::<()>();
    let slots = Arc::new(Mutex::new(Some((started_tx, dropped_tx))));
    let handler = move || {
        let slots = slots.clone();
        async move {
            let Some((started, guard)) = slots.lock().await.take() else { return "again" };
            let _ = started.send(());
            std::future::pending::<()>().await;
            drop(guard);
            "never"
        }
    };
    (Router::new().route("/wait", get(handler)), started, dropped)
}

#[tokio::test]
async fn a_client_reset_cancels_the_request_handler() -> anyhow::Result<()> {
    let (app, started, dropped) = never_answering();
    let server = TestServer::start(app).await?;
    let (mut client, _conn, _) = server.h2().await?;
    let req = Request::get(format!("http://{}/wait", server.addr)).body(())?;
    let (_response, mut send) = client.send_request(req, true)?;
    tokio::time::timeout(BOUND, started).await??;
    send.send_reset(h2::Reason::CANCEL);
    // The guard's sender is dropped with the handler: the receiver sees the channel closed.
    assert!(tokio::time::timeout(BOUND, dropped).await?.is_err());
    Ok(())
}

#[tokio::test]
async fn a_dropped_connection_cancels_the_request_handler() -> anyhow::Result<()> {
    let (app, started, dropped) = never_answering();
    let server = TestServer::start(app).await?;
    let (mut client, conn, _) = server.h2().await?;
    let req = Request::get(format!("http://{}/wait", server.addr)).body(())?;
    let (_response, _send) = client.send_request(req, true)?;
    tokio::time::timeout(BOUND, started).await??;
    drop((client, conn));
    assert!(tokio::time::timeout(BOUND, dropped).await?.is_err());
    Ok(())
}

#[tokio::test]
async fn a_shutdown_sends_goaway_and_lets_open_requests_finish() -> anyhow::Result<()> {
    let (gate_tx, gate) = oneshot::channel::<()>();
    let (started_tx, started) = oneshot::channel::<()>();
    let slots = Arc::new(Mutex::new(Some((started_tx, gate))));
    let wait = move || {
        let slots = slots.clone();
        async move {
            let Some((started, gate)) = slots.lock().await.take() else { return "again" };
            let _ = started.send(());
            let _ = gate.await;
            "done"
        }
    };
    let app = Router::new().route("/wait", get(wait)).route("/hello", get(|| async { "hi" }));
    let mut server = TestServer::start(app).await?;
    let (mut client, conn, _) = server.h2().await?;
    let (open, _) = client.send_request(Request::get(format!("http://{}/wait", server.addr)).body(())?, true)?;
    tokio::time::timeout(BOUND, started).await??;
    server.stop();
    // New requests are refused once the GOAWAY arrived (before it, they are still served).
    let mut refused = false;
    for _ in 0..100 {
        let req = Request::get(format!("http://{}/hello", server.addr)).body(())?;
        match client.send_request(req, true) {
            Err(e) if e.is_go_away() => {
                refused = true;
                break;
            }
            Err(e) => anyhow::bail!("unexpected error: {e}"),
            Ok((resp, _)) => drop(tokio::time::timeout(BOUND, resp).await?),
        }
    }
    assert!(refused, "no GOAWAY after the shutdown started");
    // The request open before the shutdown still gets its answer, then the server ends.
    let _ = gate_tx.send(());
    let mut body = tokio::time::timeout(BOUND, open).await??.into_body();
    let text = tokio::time::timeout(BOUND, body.data()).await?.ok_or_else(|| anyhow::anyhow!("no body"))??;
    assert_eq!(&text[..], b"done");
    tokio::time::timeout(BOUND, conn).await??;
    tokio::time::timeout(BOUND, &mut server.task).await??;
    Ok(())
}

#[tokio::test]
async fn http1_requests_are_still_served() -> anyhow::Result<()> {
    let server = TestServer::start(Router::new().route("/hello", get(|| async { "hi over HTTP/1.1" }))).await?;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await?;
    tcp.write_all(b"GET /hello HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n").await?;
    let mut answer = String::new();
    tokio::time::timeout(BOUND, tcp.read_to_string(&mut answer)).await??;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hi over HTTP/1.1"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_handler_that_does_not_read_holds_the_client_to_one_stream_window() -> anyhow::Result<()> {
    let (gate_tx, gate) = oneshot::channel::<()>();
    let gate = Arc::new(Mutex::new(Some(gate)));
    let app = Router::new().route(
        "/slow",
        post(move |req: Request<Body>| {
            let gate = gate.clone();
            async move {
                if let Some(gate) = gate.lock().await.take() {
                    let _ = gate.await;
                }
                collect(req.into_body()).await.0.len().to_string()
            }
        }),
    );
    let server = TestServer::start(app).await?;
    let (mut client, _conn, mut pings) = server.h2().await?;
    let req = Request::post(format!("http://{}/slow", server.addr)).body(())?;
    let (response, mut send) = client.send_request(req, false)?;
    // Send until the server's stream window is used up.
    let mut sent = 0usize;
    send.reserve_capacity(4 * super::STREAM_WINDOW as usize);
    while sent < super::STREAM_WINDOW as usize {
        let granted = tokio::time::timeout(BOUND, std::future::poll_fn(|cx| send.poll_capacity(cx))).await?;
        let n = granted.ok_or_else(|| anyhow::anyhow!("stream closed"))??;
        send.send_data(Bytes::from(vec![7u8; n]), false)?;
        sent += n;
    }
    assert_eq!(sent, super::STREAM_WINDOW as usize);
    // A ping's answer comes after the server read every frame sent before it: had the server
    // released any window, its WINDOW_UPDATE would have come first.
    tokio::time::timeout(BOUND, pings.ping(h2::Ping::opaque())).await??;
    assert_eq!(send.capacity(), 0, "the server gave window for bytes nobody read");
    // Once the handler reads, the window comes back.
    let _ = gate_tx.send(());
    let granted = tokio::time::timeout(BOUND, std::future::poll_fn(|cx| send.poll_capacity(cx))).await?;
    assert!(matches!(granted, Some(Ok(n)) if n > 0));
    send.send_data(Bytes::from_static(b"!"), true)?;
    let mut body = tokio::time::timeout(BOUND, response).await??.into_body();
    let text = tokio::time::timeout(BOUND, body.data()).await?.ok_or_else(|| anyhow::anyhow!("no body"))??;
    assert_eq!(&text[..], (sent + 1).to_string().as_bytes());
    Ok(())
}

/// Small body helpers, as `http-body-util` would give them.
mod http_body_util_free {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::body::Body;
    use bytes::Bytes;
    use http::HeaderMap;
    use http_body::{Body as _, Frame};

    /// The body's data and trailers.
    pub(super) async fn collect(mut body: Body) -> (Vec<u8>, Option<HeaderMap>) {
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            match frame.into_data() {
                Ok(chunk) => data.extend_from_slice(&chunk),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        (data, trailers)
    }

    /// A body of the given frames.
    pub(super) struct Frames(VecDeque<Result<Frame<Bytes>, std::convert::Infallible>>);

    impl Frames {
        pub(super) fn new(frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>>) -> Self {
            Self(frames.into())
        }
    }

    impl http_body::Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.get_mut().0.pop_front())
        }
    }
}

/// A body of `n` chunks of 32 KiB, each of its index's byte.
fn chunks(n: usize) -> Body {
    let frames = (0..n).map(|i| Ok::<_, std::convert::Infallible>(Bytes::from(vec![i as u8; 32 * 1024])));
    Body::from_stream(futures_util::stream::iter(frames))
}

#[tokio::test]
async fn bodies_larger_than_every_window_go_both_ways_byte_exact() -> anyhow::Result<()> {
    const CHUNKS: usize = 256; // 8 MiB: eight stream windows
    let app = Router::new()
        .route("/down", get(|| async { chunks(CHUNKS) }))
        .route("/up", post(|req: Request<Body>| async move { collect(req.into_body()).await.0.len().to_string() }));
    let server = TestServer::start(app).await?;
    let (mut client, _conn, _) = server.h2().await?;
    let (response, _) = client.send_request(Request::get(format!("http://{}/down", server.addr)).body(())?, true)?;
    let mut body = tokio::time::timeout(BOUND, response).await??.into_body();
    let mut got = Vec::new();
    while let Some(chunk) = tokio::time::timeout(BOUND, body.data()).await? {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        got.extend_from_slice(&chunk);
    }
    assert_eq!(got.len(), CHUNKS * 32 * 1024);
    assert!(got.chunks(32 * 1024).enumerate().all(|(i, c)| c.iter().all(|&b| b == i as u8)));

    let (response, mut send) =
        client.send_request(Request::post(format!("http://{}/up", server.addr)).body(())?, false)?;
    let mut sent = 0usize;
    while sent < CHUNKS * 32 * 1024 {
        send.reserve_capacity(64 * 1024);
        let granted = tokio::time::timeout(BOUND, std::future::poll_fn(|cx| send.poll_capacity(cx))).await?;
        let n = granted.ok_or_else(|| anyhow::anyhow!("stream closed"))??.min(CHUNKS * 32 * 1024 - sent);
        send.send_data(Bytes::from(vec![1u8; n]), false)?;
        sent += n;
    }
    send.send_data(Bytes::new(), true)?;
    let mut body = tokio::time::timeout(BOUND, response).await??.into_body();
    let text = tokio::time::timeout(BOUND, body.data()).await?.ok_or_else(|| anyhow::anyhow!("no body"))??;
    assert_eq!(&text[..], sent.to_string().as_bytes());
    Ok(())
}
