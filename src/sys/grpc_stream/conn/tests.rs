//! The connection task against a scripted server on 127.0.0.1 written with `core::http2`'s
//! writers: flow control, settings, pings, GOAWAY and the server's protocol errors, frame by
//! frame. Messages are `Bytes` (prost's `BytesValue`: field 1).

use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tonic::Code;

use crate::core::http2::frame::{self, HEAD_LEN, Head, Kind, PREFACE, Reason, flags};
use crate::core::http2::hpack::{self, Decoder};
use crate::sys::grpc_stream::{Client, Connection, Link, Out, SEND_BUFFER, connect};

/// The tests' messages are raw bytes (prost reads a `bytes` message as its bytes).
impl crate::core::grpc_frame::Incoming for Bytes {}

const PATH: &str = "/test.Echo/Link";

/// Every test's bound: a broken client fails the test instead of hanging it.
async fn within<T>(test: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), test).await.expect("the test timed out")
}

/// The scripted server's end of one connection.
struct Server {
    tcp: TcpStream,
    hpack: Decoder,
}

/// A listener, and a client connected to it.
async fn start() -> (TcpListener, Client, Connection) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (client, connection) = connect(&format!("http://{}", listener.local_addr().unwrap())).await.unwrap();
    (listener, client, connection)
}

impl Server {
    /// Accepts the client, checks its preface and sends ours with `settings`.
    async fn accept(listener: &TcpListener, settings: &[(u16, u32)]) -> Server {
        let (mut tcp, _) = listener.accept().await.unwrap();
        let mut preface = [0; 24];
        tcp.read_exact(&mut preface).await.unwrap();
        assert_eq!(&preface, PREFACE);
        let mut out = Vec::new();
        frame::write_settings(&mut out, settings);
        tcp.write_all(&out).await.unwrap();
        Server { tcp, hpack: Decoder::new() }
    }

    async fn read(&mut self) -> (Head, Vec<u8>) {
        let mut head = [0; HEAD_LEN];
        self.tcp.read_exact(&mut head).await.unwrap();
        let head = Head::parse(&head);
        let mut payload = vec![0; head.len as usize];
        self.tcp.read_exact(&mut payload).await.unwrap();
        (head, payload)
    }

    /// The next frame of `kind` (others skipped, at most 100).
    async fn next(&mut self, kind: Kind) -> (Head, Vec<u8>) {
        for _ in 0..100 {
            let (head, payload) = self.read().await;
            if head.kind == kind {
                return (head, payload);
            }
        }
        panic!("no {kind:?} frame came");
    }

    /// The next request's stream id and fields.
    async fn request(&mut self) -> (u32, Vec<(Bytes, Bytes)>) {
        let (head, payload) = self.next(Kind::Headers).await;
        assert!(head.has(flags::END_HEADERS));
        (head.stream, self.hpack.decode(&payload, 1 << 16).unwrap())
    }

    /// Sends a PING and returns the frames that came before its ACK (bounded): a client that
    /// handles frames in order has by then sent whatever it could.
    async fn sync(&mut self) -> Vec<(Head, Vec<u8>)> {
        self.send(|out| frame::write_ping(out, false, *b"syncsync")).await;
        let mut before = Vec::new();
        for _ in 0..100 {
            let (head, payload) = self.read().await;
            if head.kind == Kind::Ping && head.has(flags::ACK) && payload == b"syncsync" {
                return before;
            }
            before.push((head, payload));
        }
        panic!("the PING was not answered");
    }

    async fn send(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let mut out = Vec::new();
        write(&mut out);
        self.tcp.write_all(&out).await.unwrap();
    }

    async fn send_headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) {
        let mut block = Vec::new();
        hpack::encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())), &mut block);
        self.send(|out| frame::write_headers(out, stream, &block, end_stream, 16_384)).await;
    }

    async fn respond(&mut self, stream: u32) {
        self.send_headers(stream, &[(":status", "200"), ("content-type", "application/grpc")], false).await;
    }

    async fn send_data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
        self.send(|out| {
            frame::write_data_head(out, stream, data.len(), end_stream);
            out.extend_from_slice(data);
        })
        .await;
    }
}

/// `data` as one gRPC message of `Bytes`, framed.
fn message(data: &[u8]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    crate::core::grpc_frame::encode_into(&Bytes::copy_from_slice(data), &mut buf);
    buf.to_vec()
}

async fn open(client: &Client) -> (Link<Bytes>, Out<Bytes>) {
    client.open::<Bytes, Bytes>(PATH, HeaderMap::new(), None, SEND_BUFFER).await.unwrap()
}

/// Opens a stream while the server accepts it and answers 200; returns both ends.
async fn open_answered(
    listener: &TcpListener,
    client: &Client,
    settings: &[(u16, u32)],
) -> (Server, Link<Bytes>, Out<Bytes>) {
    let server = async {
        let mut server = Server::accept(listener, settings).await;
        let (id, _) = server.request().await;
        server.respond(id).await;
        server
    };
    let (server, (link, out)) = tokio::join!(server, open(client));
    (server, link, out)
}

fn data_frames(frames: &[(Head, Vec<u8>)]) -> Vec<&[u8]> {
    frames.iter().filter(|(h, _)| h.kind == Kind::Data).map(|(_, p)| &p[..]).collect()
}

#[tokio::test]
async fn a_settings_change_of_the_initial_window_applies_to_an_open_stream() {
    within(async {
        let (listener, client, _connection) = start().await;
        let (mut server, _link, out) =
            open_answered(&listener, &client, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
        out.send(Bytes::from_static(b"hello")).await.unwrap();
        assert!(data_frames(&server.sync().await).is_empty(), "no window, no DATA");
        server.send(|out| frame::write_settings(out, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 1000)])).await;
        let (head, _) = server.next(Kind::Settings).await;
        assert!(head.has(flags::ACK), "the client acknowledges the server's settings");
        let (head, payload) = server.next(Kind::Data).await;
        assert_eq!((head.stream, payload), (1, message(b"hello")));
    })
    .await;
}

#[tokio::test]
async fn sending_stops_at_the_window_and_resumes_on_window_update() {
    within(async {
        let (listener, client, _connection) = start().await;
        let (mut server, _link, out) =
            open_answered(&listener, &client, &[(frame::SETTINGS_INITIAL_WINDOW_SIZE, 64)]).await;
        let data = vec![b'x'; 200];
        out.send(Bytes::from(data.clone())).await.unwrap();
        let sent = server.sync().await;
        let first = data_frames(&sent);
        assert_eq!(first.iter().map(|d| d.len()).sum::<usize>(), 64, "exactly the window's bytes");
        server.send(|out| frame::write_window_update(out, 1, 1000)).await;
        let (_, rest) = server.next(Kind::Data).await;
        assert_eq!([first.concat(), rest].concat(), message(&data));
    })
    .await;
}

#[tokio::test]
async fn a_server_overrunning_the_stream_window_gets_flow_control_error() {
    within(async {
        let (listener, client, _connection) = start().await;
        let (mut server, mut link, _out) = open_answered(&listener, &client, &[]).await;
        // A message announced larger than everything sent: the reader holds it all unread.
        let mut chunk = vec![0u8; 60 * 1024];
        chunk[..5].copy_from_slice(&[0, 0, 0x30, 0, 0]);
        for _ in 0..(2 * 1024 * 1024 / chunk.len() + 1) {
            server.send_data(1, &chunk, false).await;
            chunk[..5].fill(b'x');
        }
        let (head, payload) = server.next(Kind::RstStream).await;
        assert_eq!(head.stream, 1);
        assert_eq!(frame::rst_reason(&head, &payload).unwrap(), Reason::FLOW_CONTROL_ERROR);
        assert_eq!(link.next().await.unwrap_err().code(), Code::Unavailable);
    })
    .await;
}

#[tokio::test]
async fn goaway_fails_later_streams_and_lets_earlier_ones_finish() {
    within(async {
        let (listener, client, connection) = start().await;
        let (mut server, mut first, _out) = open_answered(&listener, &client, &[]).await;
        let second = async {
            let (id, _) = server.request().await;
            server.respond(id).await;
            id
        };
        let (id, (mut second, _second_out)) = tokio::join!(second, open(&client));
        assert_eq!(id, 3);
        server.send(|out| frame::write_goaway(out, 1, Reason::NO_ERROR, b"")).await;
        let refused = second.next().await.unwrap_err();
        assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
        let later = client.open::<Bytes, Bytes>(PATH, HeaderMap::new(), None, SEND_BUFFER).await.err().unwrap();
        assert_eq!(later.code(), Code::Unavailable);
        server.send_data(1, &message(b"still here"), false).await;
        server.send_headers(1, &[("grpc-status", "0")], true).await;
        assert_eq!(first.next().await.unwrap(), Some(Bytes::from_static(b"still here")));
        assert_eq!(first.next().await.unwrap(), None);
        assert!(connection.await.unwrap().is_ok(), "the connection ends cleanly once its last stream did");
    })
    .await;
}

#[tokio::test]
async fn malformed_hpack_is_a_compression_error() {
    within(async {
        let (listener, client, connection) = start().await;
        let server = async {
            let mut server = Server::accept(&listener, &[]).await;
            let (id, _) = server.request().await;
            // Index 0 is no field (RFC 7541 §6.1).
            server.send(|out| frame::write_headers(out, id, &[0x80], false, 16_384)).await;
            let (head, payload) = server.next(Kind::GoAway).await;
            frame::goaway(&head, &payload).unwrap().reason
        };
        let (reason, opened) = tokio::join!(server, open_bytes(&client));
        assert_eq!(reason, Reason::COMPRESSION_ERROR);
        assert_eq!(opened.err().unwrap().code(), Code::Unavailable);
        assert!(connection.await.unwrap().is_err());
    })
    .await;
}

async fn open_bytes(client: &Client) -> Result<(Link<Bytes>, Out<Bytes>), tonic::Status> {
    client.open::<Bytes, Bytes>(PATH, HeaderMap::new(), None, SEND_BUFFER).await
}

#[tokio::test]
async fn the_servers_ping_is_answered_with_its_data() {
    within(async {
        let (listener, _client, _connection) = start().await;
        let mut server = Server::accept(&listener, &[]).await;
        server.send(|out| frame::write_ping(out, false, *b"12345678")).await;
        let (head, payload) = server.next(Kind::Ping).await;
        assert!(head.has(flags::ACK));
        assert_eq!(payload, b"12345678");
    })
    .await;
}

#[tokio::test]
async fn trailers_with_a_non_zero_grpc_status_end_the_stream_with_it() {
    within(async {
        let (listener, client, _connection) = start().await;
        let (mut server, mut link, _out) = open_answered(&listener, &client, &[]).await;
        server.send_data(1, &message(b"last words"), false).await;
        server.send_headers(1, &[("grpc-status", "7"), ("grpc-message", "not%20yours")], true).await;
        assert_eq!(link.next().await.unwrap(), Some(Bytes::from_static(b"last words")));
        let status = link.next().await.unwrap_err();
        assert_eq!((status.code(), status.message()), (Code::PermissionDenied, "not yours"));
        let (head, _) = server.next(Kind::Data).await;
        assert!(head.has(flags::END_STREAM) && head.len == 0, "the client ends its side too");
    })
    .await;
}

#[tokio::test]
async fn the_receive_window_is_given_back_as_the_reader_reads() {
    within(async {
        let (listener, client, _connection) = start().await;
        let (mut server, mut link, _out) = open_answered(&listener, &client, &[]).await;
        let body = message(&vec![7u8; 1024 * 1024 + 100]);
        for chunk in body.chunks(60 * 1024) {
            server.send_data(1, chunk, false).await;
        }
        assert!(
            server.sync().await.iter().all(|(h, _)| h.kind != Kind::WindowUpdate || h.stream == 0),
            "nothing read, no stream window back"
        );
        assert_eq!(link.next().await.unwrap().map(|m| m.len()), Some(1024 * 1024 + 100));
        let (head, payload) = server.next(Kind::WindowUpdate).await;
        assert_eq!(head.stream, 1);
        assert!(frame::window_increment(&head, &payload).unwrap() as usize >= body.len());
    })
    .await;
}

#[tokio::test]
async fn opening_waits_for_a_free_stream_under_the_servers_limit() {
    within(async {
        let (listener, client, _connection) = start().await;
        let (mut server, first, first_out) =
            open_answered(&listener, &client, &[(frame::SETTINGS_MAX_CONCURRENT_STREAMS, 1)]).await;
        let mut second = Box::pin(open_bytes(&client));
        assert!(futures_util::poll!(second.as_mut()).is_pending());
        assert!(server.sync().await.iter().all(|(h, _)| h.kind != Kind::Headers), "no second stream while one is open");
        drop((first, first_out));
        let (head, payload) = server.next(Kind::RstStream).await;
        assert_eq!((head.stream, frame::rst_reason(&head, &payload).unwrap()), (1, Reason::CANCEL));
        let answer = async {
            let (id, _) = server.request().await;
            server.respond(id).await;
            id
        };
        let (id, opened) = tokio::join!(answer, second);
        assert_eq!(id, 3);
        assert!(opened.is_ok());
    })
    .await;
}

#[tokio::test]
async fn a_split_message_arrives_as_its_whole_encoding_in_order() {
    within(async {
        let (listener, client, _connection) = start().await;
        let (mut server, _link, out) = open_answered(&listener, &client, &[]).await;
        let payload = Bytes::from(vec![b'p'; 40_000]);
        let whole = message(&payload);
        out.send(Bytes::from_static(b"before")).await.unwrap();
        out.send_split(&whole[..whole.len() - payload.len()], payload.clone()).await.unwrap();
        out.send(Bytes::from_static(b"after")).await.unwrap();
        let want = [message(b"before"), whole, message(b"after")].concat();
        let mut got = Vec::new();
        for _ in 0..100 {
            if got.len() >= want.len() {
                break;
            }
            got.extend(server.next(Kind::Data).await.1);
        }
        assert_eq!(got, want);
    })
    .await;
}
