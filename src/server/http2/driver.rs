//! The connection's task: reads the socket into one buffer and hands whole frames to the
//! connection's state, polls the stream parts that were woken, and writes what they queued
//! with one vectored write per round.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BufMut, BytesMut};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::conn::{Conn, Phase};
use super::wake::{Conn as ConnPart, Part, Ready};
use super::write::MAX_SLICES;
use super::{Apps, MAX_FRAME_BYTES, MAX_ROUNDS, MAX_SEND_BUFFER_BYTES};
use crate::core::http2::frame::{self, HEAD_LEN, Head, ProtocolError, Reason};

/// Most bytes one read takes between frames: 32 KiB (room for the largest frame beginning
/// in them is made first).
const READ_BYTES: usize = 32 * 1024;
/// Reads per round before the streams get their turn.
const READS_PER_ROUND: usize = 4;
/// Writes per flush (each one takes bytes or waits for the socket).
const WRITES_PER_FLUSH: usize = 16;

pub(super) struct Driver {
    tcp: TcpStream,
    rbuf: BytesMut,
    /// The client's preface is still to be read (it was only peeked at).
    preface: bool,
    conn: Conn,
    ready: Arc<Ready>,
    read_waker: Waker,
    write_waker: Waker,
    drain_waker: Waker,
    draining: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// The last write found the socket full: write again once it is writable.
    write_blocked: bool,
    /// Reading stopped while the writes are behind.
    read_paused: bool,
    tokens: Vec<(u32, Part)>,
}

impl Driver {
    pub(super) fn new(tcp: TcpStream, apps: Apps, mut draining: watch::Receiver<bool>) -> Self {
        let ready = Ready::new();
        let draining: Pin<Box<dyn Future<Output = ()> + Send>> = Box::pin(async move {
            // An error means the listener is gone: draining as well.
            let _ = draining.wait_for(|d| *d).await;
        });
        Self {
            tcp,
            rbuf: BytesMut::with_capacity(READ_BYTES),
            preface: true,
            conn: Conn::new(apps, ready.clone()),
            read_waker: ready.conn_waker(ConnPart::Read),
            write_waker: ready.conn_waker(ConnPart::Write),
            drain_waker: ready.conn_waker(ConnPart::Drain),
            ready,
            draining: Some(draining),
            write_blocked: false,
            read_paused: false,
            tokens: Vec::new(),
        }
    }

    fn poll_draining(&mut self) {
        let Some(draining) = self.draining.as_mut() else { return };
        if draining.as_mut().poll(&mut Context::from_waker(&self.drain_waker)).is_ready() {
            self.draining = None;
            self.conn.drain();
        }
    }

    /// Reads what the socket has and handles its frames; `Ok(false)` at the client's end.
    fn read(&mut self) -> io::Result<bool> {
        for _ in 0..READS_PER_ROUND {
            if self.conn.out.len() >= MAX_SEND_BUFFER_BYTES || self.conn.phase == Phase::Closing {
                // The client reads too slowly for what it asks (pings, say): wait for it.
                self.read_paused = true;
                return Ok(true);
            }
            let (want, room) = self.next_read();
            self.rbuf.reserve(room);
            match self.tcp.try_read_buf(&mut (&mut self.rbuf).limit(want)) {
                Ok(0) => return Ok(false),
                Ok(_) => self.frames(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.tcp.poll_read_ready(&mut Context::from_waker(&self.read_waker)) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Err(e),
                        Poll::Pending => return Ok(true),
                    }
                }
                Err(e) => return Err(e),
            }
        }
        // More may be waiting: read again next round.
        self.ready.set(ConnPart::Read);
        Ok(true)
    }

    /// How much to read next, and the room to make first. A frame whose head arrived is read
    /// to its end exactly, into room made for it when its first bytes came: the read buffer
    /// never grows with a frame's first part in it (the payloads before it still share the
    /// buffer, so growing would copy that part), and the frame's payload leaves whole.
    fn next_read(&self) -> (usize, usize) {
        let rest = match self.rbuf.first_chunk::<HEAD_LEN>() {
            Some(head) if !self.preface => (HEAD_LEN + Head::parse(head).len as usize).saturating_sub(self.rbuf.len()),
            _ => 0,
        };
        match rest {
            0 => (READ_BYTES, READ_BYTES + 2 * HEAD_LEN + MAX_FRAME_BYTES as usize),
            rest => (rest, rest),
        }
    }

    /// Hands every whole frame in the read buffer to the connection.
    fn frames(&mut self) {
        if self.preface {
            if self.rbuf.len() < frame::PREFACE.len() {
                return;
            }
            if self.rbuf[..frame::PREFACE.len()] != frame::PREFACE[..] {
                return self.conn.close(ProtocolError { reason: Reason::PROTOCOL_ERROR, what: "no preface" });
            }
            self.rbuf.advance(frame::PREFACE.len());
            self.preface = false;
        }
        while self.conn.phase != Phase::Closing {
            let Some(head) = self.rbuf.first_chunk::<HEAD_LEN>().map(Head::parse) else { return };
            if head.len > MAX_FRAME_BYTES {
                return self.conn.close(ProtocolError { reason: Reason::FRAME_SIZE_ERROR, what: "a frame too long" });
            }
            let total = HEAD_LEN + head.len as usize;
            if self.rbuf.len() < total {
                return;
            }
            let payload = self.rbuf.split_to(total).freeze().slice(HEAD_LEN..);
            self.conn.on_frame(head, payload);
        }
    }

    /// Writes what is queued until done or the socket is full.
    fn flush(&mut self) -> io::Result<()> {
        for _ in 0..WRITES_PER_FLUSH {
            if self.conn.out.is_empty() {
                break;
            }
            let mut slices = [IoSlice::new(&[]); MAX_SLICES];
            let n = self.conn.out.slices(&mut slices);
            match self.tcp.try_write_vectored(&slices[..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(written) => self.conn.out.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.tcp.poll_write_ready(&mut Context::from_waker(&self.write_waker)) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Err(e),
                        Poll::Pending => {
                            self.write_blocked = true;
                            break;
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        if !self.conn.out.is_empty() && !self.write_blocked {
            // The socket still takes bytes: go on next round.
            self.ready.set(ConnPart::Write);
        }
        if self.conn.out.len() < MAX_SEND_BUFFER_BYTES {
            self.conn.unblock();
            if std::mem::take(&mut self.read_paused) {
                self.ready.set(ConnPart::Read);
            }
        }
        Ok(())
    }

    /// One round of work; `Some` when the connection is over.
    fn round(&mut self) -> Option<()> {
        if self.ready.take(ConnPart::Drain) {
            self.poll_draining();
        }
        if self.ready.take(ConnPart::Read) {
            match self.read() {
                Ok(true) => {}
                Ok(false) => return Some(()),
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/2 connection read failed");
                    return Some(());
                }
            }
        }
        let mut tokens = std::mem::take(&mut self.tokens);
        self.ready.take_streams(&mut tokens);
        for (id, part) in tokens.drain(..) {
            self.conn.poll_stream(id, part);
        }
        self.tokens = tokens;
        self.ready.take(ConnPart::Release);
        self.conn.release();
        if self.ready.take(ConnPart::Write) {
            self.write_blocked = false;
        }
        if !self.conn.out.is_empty()
            && !self.write_blocked
            && let Err(e) = self.flush()
        {
            tracing::debug!(error = %e, "HTTP/2 connection write failed");
            return Some(());
        }
        (self.conn.done() && self.conn.out.is_empty()).then_some(())
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        this.ready.register(cx.waker());
        this.ready.start_polling();
        for _ in 0..MAX_ROUNDS {
            if this.round().is_some() {
                this.ready.yield_polling();
                return Poll::Ready(());
            }
            if this.ready.stop_polling() {
                return Poll::Pending;
            }
        }
        // Work is left: let the runtime's other tasks run first.
        this.ready.yield_polling();
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The hot streams' pumps still owe their ends (a route released, a session told):
        // they see the stream broken and finish in tasks of their own.
        let pumps = self.conn.take_pumps();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            for pump in pumps {
                runtime.spawn(pump);
            }
        }
    }
}
