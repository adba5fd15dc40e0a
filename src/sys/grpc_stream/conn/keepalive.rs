//! HTTP/2 keepalive of the connection task: a PING every [`PING_EVERY`], the connection dead
//! when its ACK takes longer than [`PING_TIMEOUT`]; the same timer bounds the last writes once
//! the connection ends.

use std::future::Future;
use std::pin::Pin;
use std::task::Context;

use tokio::time::{Instant, Sleep};
use tonic::Status;

use super::{LINGER, Outbox};
use crate::core::http2::frame;
use crate::sys::grpc_stream::{PING_EVERY, PING_TIMEOUT};
use crate::sys::task::WakeFilter;

/// HTTP/2 keepalive: a PING every [`PING_EVERY`]; the connection is dead when its ACK takes
/// longer than [`PING_TIMEOUT`]. The timer is polled only when it fired, not at every frame.
pub(super) struct Keepalive {
    sleep: Pin<Box<Sleep>>,
    filter: WakeFilter,
    /// The PING in flight.
    waiting: Option<[u8; 8]>,
    sent: u64,
}

impl Keepalive {
    pub(super) fn new() -> Self {
        Self { sleep: Box::pin(tokio::time::sleep(PING_EVERY)), filter: WakeFilter::new(), waiting: None, sent: 0 }
    }

    /// Sends a PING when one is due; Err when the last went unanswered.
    pub(super) fn poll(&mut self, cx: &mut Context<'_>, out: &mut Outbox) -> Result<(), Status> {
        let sleep = &mut self.sleep;
        if self.filter.poll(cx, |cx| sleep.as_mut().poll(cx)).is_pending() {
            return Ok(());
        }
        if self.waiting.is_some() {
            return Err(Status::unavailable(format!(
                "the server did not answer a keepalive ping within {} s",
                PING_TIMEOUT.as_secs()
            )));
        }
        self.sent += 1;
        let data = self.sent.to_be_bytes();
        frame::write_ping(&mut out.buf, false, data);
        self.waiting = Some(data);
        self.sleep.as_mut().reset(Instant::now() + PING_TIMEOUT);
        Ok(())
    }

    /// A PING ACK came: the next PING goes [`PING_EVERY`] from now.
    pub(super) fn pong(&mut self, data: [u8; 8]) {
        if self.waiting == Some(data) {
            self.waiting = None;
            self.sleep.as_mut().reset(Instant::now() + PING_EVERY);
            self.filter.rearm();
        }
    }

    /// The connection is ending: the timer now bounds the last writes.
    pub(super) fn linger(&mut self) {
        self.waiting = Some([0; 8]);
        self.sleep.as_mut().reset(Instant::now() + LINGER);
        self.filter.rearm();
    }
}
