//! The hot gRPC streams (`Relay.Link`, `Peer.Link`) served without tonic's codec layers: a
//! reader of length-prefixed messages straight from the request body, and a response body
//! over the stream's outbound queue. Per frame tonic stacked `Streaming`, `EncodeBody`, a
//! `ReceiverStream`, a `MapErr` and the drain wrapper (docs/performance.md, issue 18); here a
//! read is a slice and a decode, a write one encode into the poll's buffer. On the wire it is
//! the same gRPC: `1 byte compressed flag + u32 BE length + protobuf`, statuses in trailers.

use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use bytes::{Bytes, BytesMut};
use http_body::{Body as _, Frame};
use tokio::sync::{mpsc, watch};
use tonic::Status;

use crate::core::grpc_frame::{self, Deframer, FrameError, Incoming, MAX_MESSAGE};
use crate::server::http2::{Pump, Served};
use crate::sys::task::WhenWoken;

/// A poll stops adding queued frames to its DATA frame past this many bytes, so one burst
/// never builds one huge buffer (tonic's encoder yields at the same size).
const YIELD_BYTES: usize = 32 * 1024;

/// One item of a stream's outbound queue: a frame, or the end of the stream with a status.
#[derive(Debug)]
pub(crate) enum Outbound<M> {
    Frame(M),
    End(Status),
}

impl<M> Outbound<M> {
    /// The frame, `None` for an end (the edge's outbound stream stops there).
    pub(crate) fn into_frame(self) -> Option<M> {
        match self {
            Self::Frame(m) => Some(m),
            Self::End(_) => None,
        }
    }
}

/// Reads a gRPC request stream of `M` messages from an HTTP/2 request body.
pub(crate) struct MessageReader<M> {
    body: Body,
    frames: Deframer,
    done: bool,
    _message: PhantomData<fn() -> M>,
}

impl<M: Incoming> MessageReader<M> {
    pub(crate) fn new(body: Body) -> Self {
        Self { body, frames: Deframer::default(), done: false, _message: PhantomData }
    }

    /// The next message; `Ok(None)` when the client ended the stream cleanly, an error status
    /// for a broken stream or a message that breaks gRPC's framing. Cancel-safe.
    pub(crate) async fn message(&mut self) -> Result<Option<M>, Status> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<M>, Status>> {
        loop {
            if let Some(bytes) = self.frames.next_message().map_err(refusal)? {
                return Poll::Ready(
                    M::decode_message(bytes)
                        .map(Some)
                        .map_err(|e| Status::internal(format!("failed to decode a protobuf message: {e}"))),
                );
            }
            if self.done {
                return Poll::Ready(Ok(None));
            }
            match std::task::ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                Some(Ok(frame)) => {
                    // Request trailers carry nothing for these streams.
                    let Ok(data) = frame.into_data() else { continue };
                    self.frames.push(data);
                }
                Some(Err(e)) => {
                    self.done = true;
                    return Poll::Ready(Err(Status::unknown(format!("the stream broke: {e}"))));
                }
                None => {
                    self.done = true;
                    if !self.frames.is_empty() {
                        return Poll::Ready(Err(Status::internal("Unexpected EOF decoding stream.")));
                    }
                    return Poll::Ready(Ok(None));
                }
            }
        }
    }
}

/// A framing error as tonic words it, so clients see what they saw before.
fn refusal(e: FrameError) -> Status {
    match e {
        FrameError::Compressed(1) => {
            Status::internal("protocol error: received message with compressed-flag but no grpc-encoding was specified")
        }
        FrameError::Compressed(f) => Status::internal(format!(
            "protocol error: received message with invalid compression flag: {f} (valid flags are 0 and 1), while sending request"
        )),
        FrameError::TooLarge(len) => Status::out_of_range(format!(
            "Error, decoded message length too large: found {len} bytes, the limit is: {MAX_MESSAGE} bytes"
        )),
    }
}

/// A receiving end of an outbound queue: bounded toward agents, unbounded toward edges.
pub(crate) trait Queue<M>: Send + Unpin + 'static {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound<M>>>;
    /// The next item already queued; `Err(true)` when the queue is closed and empty.
    fn next_now(&mut self) -> Result<Outbound<M>, bool>;
}

impl<M: Send + 'static> Queue<M> for mpsc::Receiver<Outbound<M>> {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound<M>>> {
        self.poll_recv(cx)
    }

    fn next_now(&mut self) -> Result<Outbound<M>, bool> {
        self.try_recv().map_err(|e| e == mpsc::error::TryRecvError::Disconnected)
    }
}

impl<M: Send + 'static> Queue<M> for mpsc::UnboundedReceiver<Outbound<M>> {
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound<M>>> {
        self.poll_recv(cx)
    }

    fn next_now(&mut self) -> Result<Outbound<M>, bool> {
        self.try_recv().map_err(|e| e == mpsc::error::TryRecvError::Disconnected)
    }
}

/// The response body of a hot stream: every frame queued when hyper polls goes out encoded in
/// one DATA frame; the stream ends with `grpc-status` trailers: OK when the queue closes, the
/// status of an `Outbound::End`, or UNAVAILABLE "server shutting down" when the server stops
/// (what `drain::end_grpc_on_stop` does for tonic's routes; these routes are not wrapped).
pub(crate) struct OutboundBody<M, Q> {
    queue: Q,
    buf: BytesMut,
    /// The end found after the frames of the last poll, sent at the next one.
    end: Option<Status>,
    /// Polled only when the stop watch woke it: the body is polled for every frame.
    stop: WhenWoken<'static, ()>,
    done: bool,
    _message: PhantomData<fn(M)>,
}

impl<M: prost::Message, Q: Queue<M>> OutboundBody<M, Q> {
    pub(crate) fn new(queue: Q, mut stopping: watch::Receiver<bool>) -> Self {
        let stop = WhenWoken::new(async move {
            // An error means the server is gone: stopped as well.
            let _ = stopping.wait_for(|s| *s).await;
        });
        Self { queue, buf: BytesMut::new(), end: None, stop, done: false, _message: PhantomData }
    }

    fn encode(&mut self, message: &M) {
        grpc_frame::encode_into(message, &mut self.buf);
    }

    fn finish(&mut self, status: &Status) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        self.done = true;
        Poll::Ready(Some(Ok(Frame::trailers(trailers(status)))))
    }
}

/// The trailers (or Trailers-Only headers) of a status: `grpc-status`, and `grpc-message`
/// percent-encoded as gRPC requires.
pub(crate) fn trailers(status: &Status) -> HeaderMap {
    let mut map = HeaderMap::with_capacity(2);
    if status.add_header(&mut map).is_err() {
        map.insert("grpc-status", HeaderValue::from(status.code() as i32));
    }
    map
}

impl<M: prost::Message, Q: Queue<M>> http_body::Body for OutboundBody<M, Q> {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        // Every field is `Unpin`.
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if Pin::new(&mut this.stop).poll(cx).is_ready() {
            return this.finish(&Status::unavailable(crate::core::wire::SERVER_SHUTTING_DOWN));
        }
        if let Some(status) = this.end.take() {
            return this.finish(&status);
        }
        match std::task::ready!(this.queue.poll_next(cx)) {
            None => return this.finish(&Status::ok("")),
            Some(Outbound::End(status)) => return this.finish(&status),
            Some(Outbound::Frame(m)) => this.encode(&m),
        }
        while this.buf.len() < YIELD_BYTES {
            match this.queue.next_now() {
                Ok(Outbound::Frame(m)) => this.encode(&m),
                Ok(Outbound::End(status)) => {
                    this.end = Some(status);
                    break;
                }
                Err(true) => {
                    this.end = Some(Status::ok(""));
                    break;
                }
                Err(false) => break,
            }
        }
        Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// Serves one hot streaming call where hyper serves it: as [`open`], the pump in a task of
/// its own.
pub(crate) async fn serve<I, M, Q, Open>(
    req: axum::http::Request<Body>,
    stopping: watch::Receiver<bool>,
    open_stream: impl FnOnce(tonic::metadata::MetadataMap, MessageReader<I>) -> Open,
) -> Response<Body>
where
    I: Incoming,
    M: prost::Message + Send + 'static,
    Q: Queue<M>,
    Open: Future<Output = Result<(Q, Pump), Status>>,
{
    let Served { response, pump } = open(req, stopping, open_stream).await;
    if let Some(pump) = pump {
        tokio::spawn(pump);
    }
    response
}

/// Opens one hot streaming call: a request that is not gRPC gets 415; otherwise `open_stream`
/// gets the request's metadata and a reader of its messages and returns the stream's outbound
/// queue (the response body) and its pump (what reads the messages), or the status that
/// refuses the call (Trailers-Only). The body ends UNAVAILABLE when `stopping` turns true.
pub(crate) async fn open<I, M, Q, Open>(
    req: axum::http::Request<Body>,
    stopping: watch::Receiver<bool>,
    open_stream: impl FnOnce(tonic::metadata::MetadataMap, MessageReader<I>) -> Open,
) -> Served
where
    I: Incoming,
    M: prost::Message + Send + 'static,
    Q: Queue<M>,
    Open: Future<Output = Result<(Q, Pump), Status>>,
{
    if let Some(refusal) = refuse_non_grpc(req.headers()) {
        return Served { response: refusal, pump: None };
    }
    let (parts, body) = req.into_parts();
    match open_stream(tonic::metadata::MetadataMap::from_headers(parts.headers), MessageReader::new(body)).await {
        Ok((queue, pump)) => {
            Served { response: streaming_response(Body::new(OutboundBody::new(queue, stopping))), pump: Some(pump) }
        }
        Err(status) => Served { response: refused(status), pump: None },
    }
}

/// The first answer of a stream: HTTP 200, `application/grpc`, then `body`.
pub(crate) fn streaming_response(body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    resp
}

/// A call refused before its stream starts, as gRPC "Trailers-Only": HTTP 200 with the
/// status in the headers.
pub(crate) fn refused(status: Status) -> Response<Body> {
    status.into_http()
}

/// The answer to a request that is not gRPC at all (HTTP 415, as the gRPC spec asks); `None`
/// for a gRPC one.
pub(crate) fn refuse_non_grpc(headers: &HeaderMap) -> Option<Response<Body>> {
    let grpc = headers.get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        return None;
    }
    let mut resp = Response::new(Body::from("this path serves gRPC: send content-type application/grpc"));
    *resp.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
    Some(resp)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use bytes::{BufMut, Bytes, BytesMut};
    use http_body::Frame;
    use prost::Message;
    use tokio::sync::{mpsc, watch};
    use tonic::{Code, Status};

    use super::{MessageReader, Outbound, OutboundBody};
    use crate::proto::{self, agent_frame};

    fn beat(ms: u64) -> proto::AgentFrame {
        proto::AgentFrame { kind: Some(agent_frame::Kind::Heartbeat(proto::Heartbeat { unix_ms: ms })) }
    }

    fn framed(m: &proto::AgentFrame) -> Vec<u8> {
        let mut buf = vec![0];
        buf.put_u32(m.encoded_len() as u32);
        m.encode(&mut buf).unwrap();
        buf
    }

    /// A request body yielding `chunks` as DATA frames, then an error if `broken`.
    fn body(chunks: Vec<Vec<u8>>, broken: bool) -> axum::body::Body {
        let mut frames: Vec<Result<Bytes, std::io::Error>> = chunks.into_iter().map(|c| Ok(Bytes::from(c))).collect();
        if broken {
            frames.push(Err(std::io::Error::other("reset")));
        }
        axum::body::Body::from_stream(futures_util::stream::iter(frames))
    }

    async fn read_all(mut reader: MessageReader<proto::AgentFrame>) -> (Vec<proto::AgentFrame>, Result<(), Status>) {
        let mut got = Vec::new();
        for _ in 0..100 {
            match reader.message().await {
                Ok(Some(m)) => got.push(m),
                Ok(None) => return (got, Ok(())),
                Err(e) => return (got, Err(e)),
            }
        }
        panic!("the reader never ended");
    }

    #[tokio::test]
    async fn a_message_split_across_frames_is_gathered() {
        let whole = framed(&beat(123_456_789));
        let chunks = vec![whole[..2].to_vec(), whole[2..6].to_vec(), whole[6..].to_vec()];
        let (got, end) = read_all(MessageReader::new(body(chunks, false))).await;
        assert_eq!(got, vec![beat(123_456_789)]);
        assert!(end.is_ok());
    }

    #[tokio::test]
    async fn several_messages_in_one_frame_are_sliced_and_a_split_tail_joins_the_next() {
        let mut one = Vec::new();
        for i in 1..=3 {
            one.extend(framed(&beat(i)));
        }
        let fourth = framed(&beat(4));
        one.extend(&fourth[..3]);
        let chunks = vec![one, fourth[3..].to_vec(), framed(&beat(5))];
        let (got, end) = read_all(MessageReader::new(body(chunks, false))).await;
        assert_eq!(got, (1..=5).map(beat).collect::<Vec<_>>());
        assert!(end.is_ok());
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_as_tonic_does() {
        let mut header = vec![0];
        header.put_u32(super::MAX_MESSAGE as u32 + 1);
        let (got, end) = read_all(MessageReader::new(body(vec![header], false))).await;
        assert!(got.is_empty());
        let e = end.unwrap_err();
        assert_eq!(e.code(), Code::OutOfRange, "{e:?}");
        assert!(e.message().contains("too large"), "{e:?}");
    }

    #[tokio::test]
    async fn a_compressed_message_is_refused() {
        let mut m = framed(&beat(1));
        m[0] = 1;
        let (_, end) = read_all(MessageReader::new(body(vec![m], false))).await;
        let e = end.unwrap_err();
        assert_eq!(e.code(), Code::Internal, "{e:?}");
        assert!(e.message().contains("compressed-flag"), "{e:?}");
    }

    #[tokio::test]
    async fn a_truncated_end_and_a_broken_stream_are_errors_a_clean_end_is_not() {
        let whole = framed(&beat(7));
        let (got, end) = read_all(MessageReader::new(body(vec![whole[..4].to_vec()], false))).await;
        assert!(got.is_empty());
        assert_eq!(end.unwrap_err().code(), Code::Internal);

        let (got, end) = read_all(MessageReader::new(body(vec![whole.clone()], true))).await;
        assert_eq!(got, vec![beat(7)]);
        assert!(end.unwrap_err().message().contains("broke"));

        let (got, end) = read_all(MessageReader::new(body(vec![whole], false))).await;
        assert_eq!(got, vec![beat(7)]);
        assert!(end.is_ok());
    }

    fn decode_all(mut data: Bytes) -> Vec<proto::AgentFrame> {
        let mut out = Vec::new();
        while !data.is_empty() {
            let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
            out.push(proto::AgentFrame::decode(data.slice(5..5 + len)).unwrap());
            data = data.slice(5 + len..);
        }
        out
    }

    async fn next(
        body: &mut OutboundBody<proto::AgentFrame, mpsc::UnboundedReceiver<Outbound<proto::AgentFrame>>>,
    ) -> Option<Frame<Bytes>> {
        let frame = std::future::poll_fn(|cx| http_body::Body::poll_frame(std::pin::Pin::new(&mut *body), cx)).await;
        frame.map(|f: Result<Frame<Bytes>, Infallible>| f.unwrap())
    }

    #[tokio::test]
    async fn every_queued_frame_goes_out_in_one_data_frame_then_ok_trailers() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop) = watch::channel(false);
        let mut body = OutboundBody::new(rx, stop);
        for i in 1..=3 {
            tx.send(Outbound::Frame(beat(i))).unwrap();
        }
        let data = next(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(decode_all(data), (1..=3).map(beat).collect::<Vec<_>>());
        tx.send(Outbound::Frame(beat(4))).unwrap();
        drop(tx);
        let data = next(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(decode_all(data), vec![beat(4)]);
        let trailers = next(&mut body).await.unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "0");
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn an_end_sends_its_status_percent_encoded_after_the_frames_before_it() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop) = watch::channel(false);
        let mut body = OutboundBody::new(rx, stop);
        tx.send(Outbound::Frame(beat(1))).unwrap();
        tx.send(Outbound::End(Status::invalid_argument("malformed frame: 100% wrong\n"))).unwrap();
        tx.send(Outbound::Frame(beat(2))).unwrap();
        let data = next(&mut body).await.unwrap().into_data().unwrap();
        assert_eq!(decode_all(data), vec![beat(1)]);
        let trailers = next(&mut body).await.unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "3");
        // Percent-encoded as tonic encodes it (gRPC clients decode it back).
        assert_eq!(trailers["grpc-message"], "malformed%20frame:%20100%25%20wrong%0A");
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.message(), "malformed frame: 100% wrong\n");
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test]
    async fn the_server_stopping_ends_the_stream_unavailable() {
        let (tx, rx) = mpsc::unbounded_channel::<Outbound<proto::AgentFrame>>();
        let (stop_tx, stop) = watch::channel(false);
        let mut body = OutboundBody::new(rx, stop);
        tx.send(Outbound::Frame(beat(1))).unwrap();
        assert!(next(&mut body).await.unwrap().is_data());
        stop_tx.send(true).unwrap();
        let trailers = next(&mut body).await.unwrap().into_trailers().unwrap();
        assert_eq!(trailers["grpc-status"], "14");
        let status = Status::from_header_map(&trailers).unwrap();
        assert_eq!(status.message(), crate::core::wire::SERVER_SHUTTING_DOWN);
        assert!(next(&mut body).await.is_none());
        drop(tx);
    }

    #[test]
    fn a_big_burst_is_cut_into_data_frames_of_about_32_kib() {
        let (tx, rx) = mpsc::unbounded_channel();
        let (_stop_tx, stop) = watch::channel(false);
        let mut body = OutboundBody::new(rx, stop);
        let data = Bytes::from(vec![b'x'; 1000]);
        let output = |channel| proto::AgentFrame {
            kind: Some(agent_frame::Kind::Output(proto::Output { channel, data: data.clone(), ..Default::default() })),
        };
        for i in 0..100 {
            tx.send(Outbound::Frame(output(i))).unwrap();
        }
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut frames = 0;
        let mut total = BytesMut::new();
        while let std::task::Poll::Ready(Some(Ok(f))) =
            http_body::Body::poll_frame(std::pin::Pin::new(&mut body), &mut cx)
        {
            let Ok(d) = f.into_data() else { break };
            assert!(d.len() < 40 * 1024, "{}", d.len());
            total.extend_from_slice(&d);
            frames += 1;
            if frames > 10 {
                break;
            }
        }
        assert_eq!(decode_all(total.freeze()).len(), 100);
        assert!((3..=5).contains(&frames), "{frames}");
    }

    #[test]
    fn the_routed_paths_are_the_generated_services_link_methods() {
        assert_eq!(super::super::service::LINK_PATH, format!("/{}/Link", proto::relay_server::SERVICE_NAME));
        assert_eq!(super::super::peer::LINK_PATH, format!("/{}/Link", proto::peer_server::SERVICE_NAME));
    }

    #[test]
    fn a_non_grpc_request_is_refused_415_and_a_refused_call_is_trailers_only() {
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        let refusal = super::refuse_non_grpc(&headers).expect("refused");
        assert_eq!(refusal.status(), axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE);
        headers.insert("content-type", "application/grpc+proto".parse().unwrap());
        assert!(super::refuse_non_grpc(&headers).is_none());

        let resp = super::refused(Status::unauthenticated("missing machine credential"));
        assert_eq!(resp.status(), axum::http::StatusCode::OK);
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        let status = Status::from_header_map(resp.headers()).unwrap();
        assert_eq!((status.code(), status.message()), (Code::Unauthenticated, "missing machine credential"));
    }
}
