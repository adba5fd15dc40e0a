//! The client against a small in-process HTTP/2 server that answers as a gRPC server does.

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::FutureExt;
use h2::RecvStream;
use h2::server::SendResponse;
use http::{HeaderMap, HeaderValue, Response};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tonic::Code;

use super::*;
use crate::core::grpc_frame::HEADER;

/// A message of the test's own (`sys` knows no protocol of ours).
#[derive(Clone, PartialEq, prost::Message)]
struct Note {
    #[prost(uint64, tag = "1")]
    n: u64,
    #[prost(bytes = "bytes", tag = "2")]
    data: Bytes,
}

impl Incoming for Note {}

const PATH: &str = "/test.Echo/Link";

/// How the test server answers the one call it serves.
#[derive(Clone, Copy)]
enum Answer {
    /// Trailers-only, with this gRPC code.
    Refuse(Code),
    /// Sends back the first message, then ends with status OK.
    EchoOnce,
    /// Answers 200 and never reads (its receive window is 0).
    Stall,
    /// Answers 200, then drops the whole connection once a second message came.
    HangUp,
}

/// A one-connection HTTP/2 server on 127.0.0.1; returns its URL.
async fn serve(answer: Answer) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let window = if matches!(answer, Answer::Stall) { 0 } else { 1 << 20 };
        let mut conn = h2::server::Builder::new().initial_window_size(window).handshake::<_, Bytes>(tcp).await.unwrap();
        let hang_up = Arc::new(Notify::new());
        loop {
            tokio::select! {
                accepted = conn.accept() => match accepted {
                    Some(Ok((request, respond))) => {
                        tokio::spawn(answer_call(answer, request.into_body(), respond, hang_up.clone()));
                    }
                    _ => return,
                },
                _ = hang_up.notified() => return,
            }
        }
    });
    url
}

fn ok_headers(mut respond: SendResponse<Bytes>) -> h2::SendStream<Bytes> {
    let response = Response::builder().header("content-type", "application/grpc").body(()).unwrap();
    respond.send_response(response, false).unwrap()
}

/// The whole messages of `body` until `count` arrived.
async fn read_messages(body: &mut RecvStream, count: usize) -> Vec<Bytes> {
    let mut frames = Deframer::default();
    let mut messages = Vec::new();
    while messages.len() < count {
        let chunk = body.data().await.unwrap().unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        frames.push(chunk);
        while let Some(message) = frames.next_message().unwrap() {
            messages.push(message);
        }
    }
    messages
}

async fn answer_call(answer: Answer, mut body: RecvStream, mut respond: SendResponse<Bytes>, hang_up: Arc<Notify>) {
    match answer {
        Answer::Refuse(code) => {
            let response = Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", (code as i32).to_string())
                .header("grpc-message", "stale%20route")
                .body(())
                .unwrap();
            respond.send_response(response, true).unwrap();
        }
        Answer::EchoOnce => {
            let mut send = ok_headers(respond);
            let message = read_messages(&mut body, 1).await.remove(0);
            let mut framed = BytesMut::new();
            framed.put_u8(0);
            framed.put_u32(message.len() as u32);
            framed.extend_from_slice(&message);
            send.send_data(framed.freeze(), false).unwrap();
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("0"));
            send.send_trailers(trailers).unwrap();
        }
        Answer::Stall => {
            let _send = ok_headers(respond);
            let _body = body;
            std::future::pending::<()>().await;
        }
        Answer::HangUp => {
            let _send = ok_headers(respond);
            read_messages(&mut body, 2).await;
            hang_up.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

fn beat(n: u64) -> Note {
    Note { n, data: Bytes::new() }
}

async fn open(url: &str) -> Result<(Link<Note>, Out<Note>, Connection), Status> {
    let (client, connection) = connect(url).await?;
    let (link, out) = client.open(PATH, HeaderMap::new(), Some(&beat(1)), SEND_BUFFER).await?;
    Ok((link, out, connection))
}

#[test]
fn encoded_messages_are_length_prefixed() {
    let frame = beat(7);
    let mut buf = BytesMut::new();
    encode_into(&frame, &mut buf);
    let one = frame.encode_to_vec();
    assert_eq!(buf.len(), HEADER + one.len());
    assert_eq!(buf[0], 0);
    assert_eq!(u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize, one.len());
    assert_eq!(&buf[HEADER..], &one[..]);
}

#[test]
fn messages_wait_for_all_their_bytes_and_decode() {
    let input = Note { n: 3, data: Bytes::from_static(b"ls\r") };
    let mut bytes = BytesMut::new();
    encode_into(&input, &mut bytes);
    let mut frames = Deframer::default();
    frames.push(Bytes::copy_from_slice(&bytes[..bytes.len() - 1]));
    assert_eq!(frames.next_message().unwrap(), None);
    frames.push(Bytes::copy_from_slice(&bytes[bytes.len() - 1..]));
    let message = frames.next_message().unwrap().unwrap();
    assert_eq!(Note::decode(message).unwrap(), input);
}

#[tokio::test]
async fn a_refused_call_reports_the_servers_status() {
    let url = serve(Answer::Refuse(Code::FailedPrecondition)).await;
    let status = open(&url).await.err().unwrap();
    assert_eq!(status.code(), Code::FailedPrecondition);
    assert_eq!(status.message(), "stale route");
}

#[tokio::test]
async fn the_first_message_goes_with_the_call_and_the_end_is_the_trailers_status() {
    let url = serve(Answer::EchoOnce).await;
    let (mut link, _out, _connection) = open(&url).await.unwrap();
    assert_eq!(link.next().await.unwrap(), Some(beat(1)));
    assert_eq!(link.next().await.unwrap(), None);
}

#[tokio::test]
async fn a_stalled_server_pauses_senders_at_the_send_buffer() {
    let url = serve(Answer::Stall).await;
    let (_link, out, _connection) = open(&url).await.unwrap();
    let output = |n| Note { n, data: vec![b'x'; 16 * 1024].into() };
    let size = output(0).encoded_len() + HEADER;
    let mut queued = 0;
    // The connection's task runs between sends; with no window it cannot move the queue.
    for i in 0..(SEND_BUFFER / size + 2) as u64 {
        match out.try_send(&output(i)) {
            Ok(()) => queued += size,
            Err(e) => {
                assert_eq!(e, TrySendError::Full);
                break;
            }
        }
        tokio::task::yield_now().await;
    }
    assert!((SEND_BUFFER..SEND_BUFFER + size).contains(&queued), "queued {queued} bytes");
    assert!(out.send(output(99)).now_or_never().is_none(), "a full queue makes senders wait");
    out.close();
    assert_eq!(out.send(output(100)).await, Err(Closed));
}

#[tokio::test]
async fn the_connection_ending_closes_its_streams_queues() {
    let url = serve(Answer::HangUp).await;
    let (mut link, out, connection) = open(&url).await.unwrap();
    out.send(beat(2)).await.unwrap();
    assert!(link.next().await.is_err());
    let _ = connection.await;
    assert!(out.is_closed());
    assert_eq!(out.try_send(&beat(2)), Err(TrySendError::Closed));
}

#[tokio::test]
async fn every_stream_of_a_shared_connection_sends_and_receives() {
    let url = serve(Answer::EchoOnce).await;
    let (client, _connection) = connect(&url).await.unwrap();
    let (mut first, _first_out) =
        client.open::<Note, Note>(PATH, HeaderMap::new(), Some(&beat(1)), SEND_BUFFER).await.unwrap();
    let (mut second, second_out) = client.open::<Note, Note>(PATH, HeaderMap::new(), None, SEND_BUFFER).await.unwrap();
    second_out.send(beat(2)).await.unwrap();
    assert_eq!(second.next().await.unwrap(), Some(beat(2)));
    assert_eq!(first.next().await.unwrap(), Some(beat(1)));
    assert_eq!(second.next().await.unwrap(), None);
}

/// A receiver that reports what it was given, and refuses the message numbered `refuse`.
struct Recorder {
    seen: tokio::sync::mpsc::UnboundedSender<Result<Note, Status>>,
    refuse: Option<u64>,
}

/// What a [`Recorder`] reported: messages as `Ok`, then its end, as `Err` (OK as `Code::Ok`).
/// Bounded: a receiver that is never ended fails the test instead of hanging it.
async fn recorded(mut seen: tokio::sync::mpsc::UnboundedReceiver<Result<Note, Status>>) -> Vec<Result<Note, Code>> {
    let all = async {
        let mut all = Vec::new();
        while let Some(item) = seen.recv().await {
            all.push(item.map_err(|s| s.code()));
        }
        all
    };
    tokio::time::timeout(Duration::from_secs(20), all).await.expect("the receiver was ended")
}

impl Receiver<Note> for Recorder {
    fn message(&mut self, message: Note) -> Result<(), Status> {
        if Some(message.n) == self.refuse {
            return Err(Status::invalid_argument("refused"));
        }
        let _ = self.seen.send(Ok(message));
        Ok(())
    }

    fn ended(self, end: Result<(), Status>) {
        let _ = self.seen.send(Err(end.err().unwrap_or_else(|| Status::ok(""))));
    }
}

#[tokio::test]
async fn a_receiver_gets_the_messages_and_then_the_end_in_the_connections_task() {
    let url = serve(Answer::EchoOnce).await;
    let (link, _out, _connection) = open(&url).await.unwrap();
    let (seen, reports) = tokio::sync::mpsc::unbounded_channel();
    link.deliver_to(Recorder { seen, refuse: None });
    assert_eq!(recorded(reports).await, vec![Ok(beat(1)), Err(Code::Ok)]);
}

#[tokio::test]
async fn a_receiver_that_refuses_a_message_is_ended_with_its_error_once() {
    let url = serve(Answer::EchoOnce).await;
    let (link, _out, _connection) = open(&url).await.unwrap();
    let (seen, reports) = tokio::sync::mpsc::unbounded_channel();
    link.deliver_to(Recorder { seen, refuse: Some(1) });
    assert_eq!(recorded(reports).await, vec![Err(Code::InvalidArgument)]);
}

#[tokio::test]
async fn a_receiver_learns_that_the_connection_dropped() {
    let url = serve(Answer::HangUp).await;
    let (link, out, _connection) = open(&url).await.unwrap();
    let (seen, reports) = tokio::sync::mpsc::unbounded_channel();
    link.deliver_to(Recorder { seen, refuse: None });
    out.send(beat(2)).await.unwrap();
    assert_eq!(recorded(reports).await, vec![Err(Code::Unavailable)]);
}
