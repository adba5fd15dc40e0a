//! A link socket's output lane: a shell's small outputs (a keystroke's echo) written to the
//! browser by the task that receives them from the agent's stream, while the socket's pump
//! waits with nothing queued. Per keystroke that saves the pump's wake-up, its channel and its
//! select (docs/performance.md, issue 18).
//!
//! The pump stays the socket's owner. It opens the lane only when it is about to wait and no
//! event is queued, and closes it whenever it wakes, for anything; a closed lane hands output
//! on as the usual events, in order behind what it wrote. What the lane wrote is kept
//! (contiguous, copied: the agent stream's buffers are not pinned) until the pump files it
//! into the session's replay ring and its credit count. A frame the socket took only part of
//! closes the lane and wakes the pump, which writes the rest before anything else.

use std::io::IoSlice;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::task::AtomicWaker;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::mpsc;

use crate::core::session::ring::Ring;
use crate::core::session::{OutputStream, SessionEvent};
use crate::core::sync::lock;
use crate::core::ws_frame::{self, Kind, MAX_HEADER_BYTES};
use crate::server::relay::router::OutputLane;

/// Largest output the lane writes: bigger ones are a burst, which the pump carries anyway.
const LARGEST: usize = 4096;

pub(crate) struct Lane {
    state: Mutex<State>,
    /// The pump, woken when a frame's rest waits for it.
    pump: AtomicWaker,
    /// Most bytes written here before the pump files them: the pump grants credit for what
    /// the browser took in batches of this (`link_socket::CREDIT_BATCH`).
    limit: usize,
}

struct State {
    /// The pump waits with no event queued: output may be written here.
    open: bool,
    /// The socket's writing half, shared with the pump's writer; gone once detached.
    io: Option<Arc<OwnedWriteHalf>>,
    /// Output written here, from offset `first`, not yet filed by the pump.
    first: u64,
    written: BytesMut,
    /// What the socket did not take of the last frame written here.
    rest: Option<Rest>,
}

/// The unwritten end of a frame: its header's last bytes and its payload's.
pub(crate) struct Rest {
    pub(crate) head: Vec<u8>,
    pub(crate) body: Bytes,
}

impl Lane {
    /// A closed lane writing to `io`.
    pub(crate) fn new(io: Arc<OwnedWriteHalf>, limit: usize) -> Arc<Self> {
        let state = State { open: false, io: Some(io), first: 0, written: BytesMut::new(), rest: None };
        Arc::new(Self { state: Mutex::new(state), pump: AtomicWaker::new(), limit })
    }

    /// The pump is about to wait: the lane opens if `idle` (no event queued) and no frame's
    /// rest waits for the pump.
    pub(crate) fn open_if(&self, idle: bool) {
        let mut state = lock(&self.state);
        state.open = idle && state.rest.is_none() && state.io.is_some();
    }

    /// The pump woke: the lane is closed until it opens it again. What was written here goes
    /// into `ring` and returns as a count of bytes, with the rest of a frame the pump must
    /// write before anything else.
    pub(crate) fn close(&self, ring: &mut Ring) -> (usize, Option<Rest>) {
        let mut state = lock(&self.state);
        state.open = false;
        let n = state.written.len();
        if n >= LARGEST {
            // A burst: its copy becomes the ring's chunk as it is (one copy per byte, as the
            // pump's own small outputs take).
            let first = state.first;
            ring.push_owned(first, state.written.split().freeze());
        } else if n > 0 {
            ring.push(state.first, &state.written);
            state.written = BytesMut::new();
        }
        (n, state.rest.take())
    }

    /// The pump ends: the lane never opens again and lets go of the socket.
    pub(crate) fn detach(&self, ring: &mut Ring) -> (usize, Option<Rest>) {
        let closed = self.close(ring);
        lock(&self.state).io = None;
        closed
    }

    /// Ready when a frame's rest waits for the pump (a poll function: the pump's idle state
    /// holds no future for it, so an idle socket costs no more).
    pub(crate) fn poll_rest(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.pump.register(cx.waker());
        match lock(&self.state).rest.is_some() {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }
}

impl OutputLane for Lane {
    fn output(&self, stream: OutputStream, offset: u64, data: Bytes, events: &mpsc::UnboundedSender<SessionEvent>) {
        let mut state = lock(&self.state);
        let next = state.first + state.written.len() as u64;
        let fits = data.len() <= LARGEST
            && state.written.len() + data.len() <= self.limit
            && (state.written.is_empty() || offset == next);
        if state.open
            && fits
            && let Some(io) = &state.io
        {
            let mut head = [0; MAX_HEADER_BYTES];
            let n = ws_frame::encode_header(Kind::Binary, data.len(), &mut head);
            // Not writable now (or broken): the pump writes it, and learns why.
            if let Ok(wrote) = io.try_write_vectored(&[IoSlice::new(&head[..n]), IoSlice::new(&data)]) {
                if wrote < n + data.len() {
                    let from_head = wrote.min(n);
                    let body = data.slice(wrote - from_head..);
                    state.rest = Some(Rest { head: head[from_head..n].to_vec(), body });
                    state.open = false;
                    self.pump.wake();
                }
                if state.written.is_empty() {
                    state.first = offset;
                }
                state.written.extend_from_slice(&data);
                return;
            }
        }
        // Queued behind what was written here, with the lane closed until the pump has
        // caught up: the two never cross.
        state.open = false;
        let _ = events.send(SessionEvent::Output { stream, offset, data });
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpSocket, TcpStream};
    use tokio::sync::oneshot;
    use tokio::task::JoinHandle;

    use super::*;
    use crate::server::http::ws::{Socket, Writer};

    /// A writer on one end of a loopback connection with small buffers (so the lane fills it
    /// soon), the lane on it, and a task that reads everything the other end gets once told to.
    async fn connected(limit: usize) -> (Writer, Arc<Lane>, oneshot::Sender<()>, JoinHandle<Vec<u8>>) {
        let listener = TcpSocket::new_v4().unwrap();
        listener.set_send_buffer_size(8192).unwrap();
        listener.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener: TcpListener = listener.listen(1).unwrap();
        let client = TcpSocket::new_v4().unwrap();
        client.set_recv_buffer_size(4096).unwrap();
        let (client, accepted) = tokio::join!(client.connect(listener.local_addr().unwrap()), listener.accept());
        let (mut client, (server, _)): (TcpStream, _) = (client.unwrap(), accepted.unwrap());
        let (_reader, writer) = Socket::from_tcp(server).split(0, 0);
        let lane = Lane::new(writer.shared(), limit);
        let (go, start) = oneshot::channel::<()>();
        let received = tokio::spawn(async move {
            let _ = start.await;
            let mut all = Vec::new();
            client.read_to_end(&mut all).await.unwrap();
            all
        });
        (writer, lane, go, received)
    }

    /// The payloads of the unmasked binary frames in `bytes`, up to a close frame.
    fn payloads(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        while let [first, second, rest @ ..] = bytes {
            if *first == 0x88 {
                break;
            }
            assert_eq!(*first, 0x82, "a final binary frame");
            let (len, rest) = match *second {
                126 => (usize::from(u16::from_be_bytes([rest[0], rest[1]])), &rest[2..]),
                n => (usize::from(n), rest),
            };
            all.push(rest[..len].to_vec());
            bytes = &rest[len..];
        }
        all
    }

    fn output(i: usize, len: usize) -> Bytes {
        Bytes::from(vec![b'a' + (i % 26) as u8; len])
    }

    #[tokio::test]
    async fn output_goes_out_in_order_through_the_lane_a_full_socket_and_the_pump() {
        let (mut writer, lane, go, received) = connected(4096).await;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut ring = Ring::new(1 << 20);
        let (mut offset, mut sent, mut rest) = (0u64, Vec::new(), None);
        // Bounded: the two buffers hold a few hundred KiB at most.
        for i in 0..10_000 {
            lane.open_if(true);
            let data = output(i, 3000);
            lane.output(OutputStream::Stdout, offset, data.clone(), &events_tx);
            offset += data.len() as u64;
            sent.push(data.to_vec());
            // The pump learns of a frame's rest by its wake-up.
            let waits = std::future::poll_fn(|cx| Poll::Ready(lane.poll_rest(cx).is_ready())).await;
            let (written, left) = lane.close(&mut ring);
            assert_eq!(written, 3000, "an open lane takes a small output");
            assert_eq!(waits, left.is_some());
            if left.is_some() {
                rest = left;
                break;
            }
        }
        assert!(events.try_recv().is_err(), "what the lane took never becomes an event");
        let rest = rest.expect("the socket filled up");
        // Closed: the next output is queued as an event, behind the frame's rest.
        let last = output(99, 100);
        lane.output(OutputStream::Stdout, offset, last.clone(), &events_tx);
        sent.push(last.to_vec());
        let Ok(SessionEvent::Output { offset: at, data, .. }) = events.try_recv() else { panic!("an output event") };
        assert_eq!((at, &data), (offset, &last));
        // The pump's turn: the rest, then the event, then the end.
        go.send(()).unwrap();
        let pump = async {
            writer.write(&rest.head, &rest.body).await.unwrap();
            writer.binary(&data).await.unwrap();
            ring.push(at, &data);
            lane.detach(&mut ring);
            writer.close(1000, "").await.unwrap();
            drop(writer);
            received.await.unwrap()
        };
        // Bounded: a lost byte would leave the reader waiting for the close.
        let got =
            tokio::time::timeout(std::time::Duration::from_secs(20), pump).await.expect("the browser's end got all");
        let got = payloads(&got);
        assert_eq!(got, sent, "every output once, whole and in order");
        let replay = ring.since(0);
        assert_eq!(replay.data, sent.concat(), "the ring holds what went out, in order");
    }

    #[tokio::test]
    async fn a_closed_lane_or_an_output_it_cannot_take_becomes_an_event() {
        let (_writer, lane, _go, _received) = connected(4096).await;
        let (events_tx, mut events) = mpsc::unbounded_channel();
        let mut ring = Ring::new(1 << 20);
        // Closed (the pump is awake), too big, past the lane's limit, not next after what it
        // wrote, and after the pump let go.
        lane.output(OutputStream::Stdout, 0, output(0, 10), &events_tx);
        lane.open_if(true);
        lane.output(OutputStream::Stdout, 10, output(1, LARGEST + 1), &events_tx);
        lane.open_if(true);
        lane.output(OutputStream::Stdout, 10, output(2, 4000), &events_tx);
        lane.output(OutputStream::Stdout, 4010, output(3, 200), &events_tx);
        lane.open_if(true);
        lane.output(OutputStream::Stdout, 9999, output(4, 10), &events_tx);
        assert_eq!(lane.close(&mut ring).0, 4000);
        lane.detach(&mut ring);
        lane.open_if(true);
        lane.output(OutputStream::Stdout, 4010, output(5, 10), &events_tx);
        let mut offsets = Vec::new();
        while let Ok(SessionEvent::Output { offset, .. }) = events.try_recv() {
            offsets.push(offset);
        }
        assert_eq!(offsets, [0, 10, 4010, 9999, 4010]);
    }
}
