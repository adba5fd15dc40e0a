//! One shell session: a PTY, its output ring and the cursors of its attachments.
//!
//! Flow control is `session::fanout`'s: every attachment ("reader") has a cursor into the ring
//! and the output credit its consumer granted; the PTY is read while some reader has credit
//! beyond what it has not been sent yet (or nobody is attached) and paused only when every
//! reader is out of credit. A stalled reader falls behind (and later gets a gap) instead of
//! holding the others back, and memory stays at one ring per session whatever readers do.
//!
//! Who reads the PTY: the attachments themselves, each in its own task, so output goes from
//! the kernel to the relay stream without a hand-off. The supervisor reads only when nobody
//! attached would: no reader is attached, the shell was killed, or it exited and the rest of
//! its output is being drained. Reads happen under the state lock (a non-blocking read, never
//! an `.await`), so output enters the ring in order whichever task read it.

use std::cell::RefCell;
use std::io;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nix::sys::signal::Signal;
use tokio::sync::watch;

use super::pty::{LDISC_BUF_BYTES, Pty};
use crate::core::ids::SessionId;
use crate::core::session::fanout::{Fanout, ReaderId};
use crate::core::session::{Attachment, CHUNK_BYTES, Ending, SESSION_RING_BYTES, SessionSummary};

/// How long a one-shot shell waits for a reattach once its last attachment detached: 30 s.
const ONE_SHOT_GRACE: Duration = Duration::from_secs(30);
/// How long after a fill that read a line discipline's bufferful (4 KiB) or more the output
/// counts as streaming, so that a burst's pieces go out in full frames (`Pty::read`): 20 ms.
/// A burst's fills come much closer together, and only an echo within this long after a burst
/// takes the slower path (one more read, which waits for the tty's flush work).
const STREAMING_FOR: Duration = Duration::from_millis(20);
/// How long a killed shell may take to honour SIGHUP before it gets SIGKILL: 2 s.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// What a reader may be sent next.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// Output starting at this offset (beyond the reader's cursor: a gap).
    Data(u64, Bytes),
    /// The shell ended and the reader has had all of its output.
    Ended(Ending),
    /// Nothing for now.
    Nothing,
}

#[derive(Debug)]
struct State {
    output: Fanout,
    /// Set once the shell exited and its output is all in the ring.
    ended: Option<Ending>,
    last_attached_ms: u64,
    /// When the last reader left (starts the idle or grace timer); `None` while attached.
    alone_since: Option<Instant>,
    /// SIGHUP was sent; when.
    killed_at: Option<Instant>,
    /// The PTY was closed on the shell's side: it has no more output.
    eof: bool,
    /// When a fill last read a line discipline's bufferful or more (`STREAMING_FOR`).
    streamed_at: Option<Instant>,
}

thread_local! {
    /// One read buffer per runtime thread (a chunk), rather than one per session. A read that
    /// fills at least half of it becomes the ring's chunk as it is (no copy) and the thread
    /// takes a new buffer; a smaller one is copied into the ring and the buffer reused.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(CHUNK_BYTES));
}

/// A shell session. Shared (`Arc`) by the registry, its supervisor and its attachments.
pub(crate) struct Shell {
    id: SessionId,
    name: Option<String>,
    persistent: bool,
    created_ms: u64,
    started: Instant,
    pty: Pty,
    state: Mutex<State>,
    /// Bumped when attachments may have something to do (output, readers, end).
    changed: watch::Sender<()>,
    /// Bumped on the changes the supervisor cares about (readers join or leave, kill, the
    /// PTY closes): not on output, so the supervisor is not woken for every chunk.
    control: watch::Sender<()>,
}

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

impl Shell {
    /// Wraps a freshly spawned PTY.
    pub(crate) fn new(id: SessionId, name: Option<String>, persistent: bool, pty: Pty) -> Self {
        let state = State {
            output: Fanout::new(SESSION_RING_BYTES),
            ended: None,
            last_attached_ms: unix_ms(),
            alone_since: Some(Instant::now()),
            killed_at: None,
            eof: false,
            streamed_at: None,
        };
        Self {
            id,
            name,
            persistent,
            created_ms: unix_ms(),
            started: Instant::now(),
            pty,
            state: Mutex::new(state),
            changed: watch::channel(()).0,
            control: watch::channel(()).0,
        }
    }

    // The std Mutex is never held across an `.await`: every critical section is a few field
    // updates or one copy out of the ring.
    fn lock(&self) -> MutexGuard<'_, State> {
        crate::core::sync::lock(&self.state)
    }

    fn bump(&self) {
        self.changed.send_replace(());
    }

    fn bump_control(&self) {
        self.changed.send_replace(());
        self.control.send_replace(());
    }

    /// The session's id.
    pub(crate) fn id(&self) -> SessionId {
        self.id
    }

    /// Its name, if it has one.
    pub(crate) fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The shell's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pty.pid()
    }

    /// How long it has run.
    pub(crate) fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Whether the shell has ended.
    pub(crate) fn ended(&self) -> bool {
        self.lock().ended.is_some()
    }

    /// A receiver that wakes when an attachment may have something to do.
    pub(crate) fn subscribe(&self) -> watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// A receiver that wakes on the changes the supervisor cares about.
    pub(crate) fn subscribe_control(&self) -> watch::Receiver<()> {
        self.control.subscribe()
    }

    /// Adds a reader starting at `resume_from` (`None`: the whole ring).
    pub(crate) fn join(&self, resume_from: Option<u64>, created: bool) -> (ReaderId, Attachment) {
        let mut st = self.lock();
        let joined = st.output.join(resume_from);
        st.last_attached_ms = unix_ms();
        st.alone_since = None;
        drop(st);
        self.bump_control();
        let attachment = Attachment {
            id: self.id,
            name: self.name.clone(),
            persistent: self.persistent,
            created,
            replay_from: joined.replay_from,
            dropped: joined.dropped,
        };
        (joined.reader, attachment)
    }

    /// Adds output credit to a reader. Wakes nobody: the reader's own task reads the PTY
    /// when that credit makes more output wanted.
    pub(crate) fn grant(&self, reader: ReaderId, bytes: u64) {
        self.lock().output.grant(reader, bytes);
    }

    /// The next piece a reader may be sent (at most its credit and one chunk), advancing it.
    /// Wakes nobody, like `grant`.
    pub(crate) fn take(&self, reader: ReaderId) -> Take {
        let mut st = self.lock();
        if let Some(piece) = st.output.take(reader, CHUNK_BYTES) {
            return Take::Data(piece.offset, piece.data);
        }
        match &st.ended {
            Some(end) if st.output.caught_up(reader) => Take::Ended(end.clone()),
            _ => Take::Nothing,
        }
    }

    /// Removes a reader. `end_one_shot`: the consumer left for good, so a one-shot shell left
    /// without readers ends now rather than after the grace.
    pub(crate) fn leave(&self, reader: ReaderId, end_one_shot: bool) {
        let mut st = self.lock();
        let alone = st.output.leave(reader);
        if alone {
            st.alone_since = Some(Instant::now());
        }
        drop(st);
        if alone && end_one_shot && !self.persistent {
            self.kill();
        }
        self.bump_control();
    }

    fn reads(st: &State) -> bool {
        !st.eof && st.ended.is_none() && (st.killed_at.is_some() || st.output.wants_output())
    }

    /// Whether the PTY should be read now: it is open and output is wanted (a killed shell's
    /// output is read regardless of credit, so that it can end).
    pub(crate) fn wants_read(&self) -> bool {
        Self::reads(&self.lock())
    }

    /// Whether the supervisor has to read the PTY because no attachment would: nobody is
    /// attached, or the shell was killed.
    pub(crate) fn unattended(&self) -> bool {
        let st = self.lock();
        st.output.readers() == 0 || st.killed_at.is_some()
    }

    /// Whether the PTY was closed on the shell's side.
    pub(crate) fn eof(&self) -> bool {
        self.lock().eof
    }

    /// Offset one past the last byte of output read so far.
    pub(crate) fn output_end(&self) -> u64 {
        self.lock().output.end()
    }

    /// Waits until the PTY may have output (then call `fill`).
    pub(crate) async fn readable(&self) {
        self.pty.readable().await;
    }

    /// If output is wanted, moves what the PTY has into the ring: read until the kernel has
    /// no more (or a small read found the end of what the program wrote: `Pty::read`) or one
    /// chunk is full, so a burst becomes one frame rather than one per kernel buffer (4 KiB).
    /// Returns the bytes read. `by`: the reader whose task is filling, which takes what it
    /// read next without being woken for it.
    pub(crate) fn fill(&self, by: Option<ReaderId>) -> usize {
        let mut st = self.lock();
        if !Self::reads(&st) {
            return 0;
        }
        let streaming = st.streamed_at.is_some_and(|at| at.elapsed() < STREAMING_FOR);
        let (n, closed) = READ_BUF.with_borrow_mut(|buf| {
            let mut closed = false;
            while buf.len() < CHUNK_BYTES {
                match self.pty.read(buf, streaming) {
                    Ok(0) => closed = true,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(_) => closed = true,
                }
                if closed {
                    break;
                }
            }
            let n = buf.len();
            if n >= CHUNK_BYTES / 2 {
                let chunk = std::mem::replace(buf, Vec::with_capacity(CHUNK_BYTES));
                st.output.push_owned(Bytes::from(chunk));
            } else if n > 0 {
                st.output.push(buf);
                buf.clear();
            }
            if n >= LDISC_BUF_BYTES {
                st.streamed_at = Some(Instant::now());
            }
            (n, closed)
        });
        st.eof |= closed;
        let others = by.is_none() || st.output.readers() > 1;
        drop(st);
        if closed {
            self.bump_control();
        } else if n > 0 && others {
            self.bump();
        }
        n
    }

    /// Records the shell's end (all of its output is in the ring by now).
    pub(crate) fn finish(&self, end: Ending) {
        self.lock().ended = Some(end);
        self.bump();
    }

    /// When the session should be ended for lack of attachments, if it is alone: `idle`
    /// after the last detach for a persistent session, `ONE_SHOT_GRACE` for a one-shot one.
    pub(crate) fn expiry(&self, idle: Duration) -> Option<Instant> {
        let st = self.lock();
        if st.killed_at.is_some() || st.ended.is_some() {
            return None;
        }
        let wait = if self.persistent { idle } else { ONE_SHOT_GRACE };
        st.alone_since.map(|since| since + wait)
    }

    /// When a killed shell that ignored SIGHUP gets SIGKILL.
    pub(crate) fn kill_deadline(&self) -> Option<Instant> {
        let st = self.lock();
        if st.ended.is_some() {
            return None;
        }
        st.killed_at.map(|at| at + KILL_GRACE)
    }

    /// Ends the shell: SIGHUP now, SIGKILL after `KILL_GRACE` (the supervisor's job).
    pub(crate) fn kill(&self) {
        let mut st = self.lock();
        if st.killed_at.is_some() || st.ended.is_some() {
            return;
        }
        st.killed_at = Some(Instant::now());
        drop(st);
        self.pty.signal_shell(Signal::SIGHUP);
        self.bump_control();
    }

    /// Kills for good a shell that ignored SIGHUP.
    pub(crate) fn kill_hard(&self) {
        self.pty.signal_shell(Signal::SIGKILL);
    }

    /// Writes as much input as the PTY takes now, without blocking (`WouldBlock`: none).
    pub(crate) fn write(&self, data: &[u8]) -> io::Result<usize> {
        self.pty.write(data)
    }

    /// Waits until the PTY takes input again.
    pub(crate) async fn writable(&self) {
        self.pty.writable().await;
    }

    /// Resizes the PTY.
    pub(crate) fn resize(&self, cols: u16, rows: u16) {
        if cols > 0 && rows > 0 {
            self.pty.resize(cols, rows);
        }
    }

    /// Signals the foreground process group.
    pub(crate) fn signal(&self, signo: i32) {
        self.pty.signal(signo);
    }

    /// The session as listings show it.
    pub(crate) fn summary(&self) -> SessionSummary {
        let st = self.lock();
        SessionSummary {
            id: self.id,
            name: self.name.clone(),
            persistent: self.persistent,
            created_unix_ms: self.created_ms,
            last_attached_unix_ms: st.last_attached_ms,
            attached: u32::try_from(st.output.readers()).unwrap_or(u32::MAX),
            pid: self.pty.pid(),
            output_bytes: st.output.end(),
        }
    }
}
