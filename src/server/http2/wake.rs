//! Who has work in a connection's task. The socket (readable, writable), the connection's
//! receive window and every part of every stream (its handler, its response body, its pump,
//! its reader's window) each have a waker of their own, so a wake-up polls only what was woken:
//! a keystroke's DATA frame wakes one pump, its answer one response body, nothing else. A
//! wake-up while the task polls only records the work; the task looks again before it sleeps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Wake, Waker};

use futures_util::task::AtomicWaker;

use crate::core::sync::lock;

/// A part of a stream with work to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Part {
    /// The handler (or a hot stream's opening) that gives the response.
    Task = 0,
    /// The response body: a chunk, trailers, or window to send what waits.
    Send = 1,
    /// A hot stream's pump, reading the request body.
    Pump = 2,
    /// The request body's reader took bytes: window to give back.
    Release = 3,
}

const PARTS: [Part; 4] = [Part::Task, Part::Send, Part::Pump, Part::Release];

/// The connection-wide parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Conn {
    Read = 0,
    Write = 1,
    /// Readers gave back enough bytes for a connection WINDOW_UPDATE.
    Release = 2,
    /// The server started draining.
    Drain = 3,
}

/// The task's record of woken parts.
pub(super) struct Ready {
    conn: [AtomicBool; 4],
    streams: Mutex<Vec<(u32, Part)>>,
    /// Set while the task polls: wake-ups then only record.
    polling: AtomicBool,
    task: AtomicWaker,
}

impl Ready {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self {
            // Set at first: the first poll looks at everything.
            conn: std::array::from_fn(|_| AtomicBool::new(true)),
            streams: Mutex::new(Vec::new()),
            polling: AtomicBool::new(false),
            task: AtomicWaker::new(),
        })
    }

    pub(super) fn register(&self, waker: &Waker) {
        self.task.register(waker);
    }

    /// Whether `part` was woken, clearing it.
    pub(super) fn take(&self, part: Conn) -> bool {
        self.conn[part as usize].swap(false, Ordering::SeqCst)
    }

    /// Marks `part` woken from inside the task.
    pub(super) fn set(&self, part: Conn) {
        self.conn[part as usize].store(true, Ordering::SeqCst);
    }

    /// The stream parts woken since the last call, appended to `into` (cleared first).
    pub(super) fn take_streams(&self, into: &mut Vec<(u32, Part)>) {
        into.clear();
        std::mem::swap(&mut *lock(&self.streams), into);
    }

    fn any(&self) -> bool {
        self.conn.iter().any(|c| c.load(Ordering::SeqCst)) || !lock(&self.streams).is_empty()
    }

    /// Starts a poll of the task.
    pub(super) fn start_polling(&self) {
        self.polling.store(true, Ordering::SeqCst);
    }

    /// Ends a poll: `true` if nothing was woken meanwhile (the task may sleep), `false` if
    /// it must look again.
    pub(super) fn stop_polling(&self) -> bool {
        if self.any() {
            return false;
        }
        self.polling.store(false, Ordering::SeqCst);
        // A wake-up between the check and the store went unseen: look once more.
        if self.any() {
            self.polling.store(true, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// Ends a poll that yields with work left (the task has woken itself).
    pub(super) fn yield_polling(&self) {
        self.polling.store(false, Ordering::SeqCst);
    }

    fn wake_task(&self) {
        if !self.polling.load(Ordering::SeqCst) {
            self.task.wake();
        }
    }

    /// The waker of a connection-wide part.
    pub(super) fn conn_waker(self: &Arc<Self>, part: Conn) -> Waker {
        Waker::from(Arc::new(ConnWaker { ready: self.clone(), part }))
    }

    /// The wakers of stream `id`'s parts.
    pub(super) fn stream_wakers(self: &Arc<Self>, id: u32) -> StreamWakers {
        let flags =
            PARTS.map(|part| Arc::new(PartWaker { ready: self.clone(), id, part, queued: AtomicBool::new(false) }));
        let wakers = flags.clone().map(Waker::from);
        StreamWakers { flags, wakers }
    }
}

struct ConnWaker {
    ready: Arc<Ready>,
    part: Conn,
}

impl Wake for ConnWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.set(self.part);
        self.ready.wake_task();
    }
}

struct PartWaker {
    ready: Arc<Ready>,
    id: u32,
    part: Part,
    /// Already in the queue: a second wake-up adds nothing.
    queued: AtomicBool,
}

impl Wake for PartWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::SeqCst) {
            lock(&self.ready.streams).push((self.id, self.part));
        }
        self.ready.wake_task();
    }
}

/// One stream's wakers, one per part.
pub(super) struct StreamWakers {
    flags: [Arc<PartWaker>; 4],
    wakers: [Waker; 4],
}

impl StreamWakers {
    pub(super) fn waker(&self, part: Part) -> &Waker {
        &self.wakers[part as usize]
    }

    /// Called as `part` is about to be polled: a wake-up from now on queues it again.
    pub(super) fn clear(&self, part: Part) {
        self.flags[part as usize].queued.store(false, Ordering::SeqCst);
    }
}
