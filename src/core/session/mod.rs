//! Sessions as the rest of the server sees them, free of any transport.
//!
//! A session is one process on a machine (an exec'd command or a shell in a PTY). Consumers
//! (the CLI API, the browser's link socket) receive `SessionEvent`s and drive it with the methods of
//! `relay::SessionControl`; whether the machine's stream is in this process or on another
//! node is the router's business, not theirs.

pub(crate) mod access;
pub(crate) mod attach;
pub(crate) mod fanout;
pub(crate) mod ring;

use std::time::Duration;

use bytes::Bytes;

pub(crate) use access::{Access, Denial, Grant};
pub(crate) use attach::{AttachSpec, Attachment, SESSION_RING_BYTES, SessionName, SessionSummary, ShellTarget};

/// Initial output credit a consumer grants per session: bytes the agent may send before the
/// consumer acknowledges any. Bounds relay memory per session; 256 KiB keeps a loopback or LAN
/// pipe full (window / RTT far above PTY speed) without letting one session hog the stream.
pub(crate) const OUTPUT_WINDOW_BYTES: u32 = 256 * 1024;
/// Input credit the agent grants per session (keystrokes, pasted text): 64 KiB.
pub(crate) const INPUT_WINDOW_BYTES: u32 = 64 * 1024;
/// Largest data frame either side sends: 32 KiB, below gRPC's 4 MiB message cap and small
/// enough to interleave sessions fairly on one stream.
pub(crate) const CHUNK_BYTES: usize = 32 * 1024;

/// What to start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SessionKind {
    /// `argv` run directly, no shell, no PTY.
    Exec,
    /// The user's login shell in a PTY.
    Shell,
    /// The machine's ask handler, with the request text on its stdin; otherwise as `Exec`.
    Ask,
}

/// Everything the agent needs to start a session.
#[derive(Clone, Debug)]
pub(crate) struct OpenSpec {
    /// Exec or shell.
    pub(crate) kind: SessionKind,
    /// Exec: program and arguments. Ask: the request text alone (the handler's stdin, never
    /// run as a command).
    pub(crate) argv: Vec<String>,
    /// Extra environment variables.
    pub(crate) env: Vec<(String, String)>,
    /// PTY size.
    pub(crate) cols: u16,
    /// PTY size.
    pub(crate) rows: u16,
    /// Exec: killed after this long.
    pub(crate) timeout: Option<Duration>,
    /// Who opens it, with their attach token.
    pub(crate) access: Access,
}

/// What the relay asks the agent to start on a channel, decoded from the wire once.
#[derive(Clone, Debug)]
pub(crate) enum Start {
    /// Run a command (its spec's kind is `Exec`, its argv non-empty).
    Exec(OpenSpec),
    /// Attach to a shell session (new, named or by id), with extra environment for a new one.
    Shell(AttachSpec, Vec<(String, String)>),
    /// Run the machine's ask handler with this text on its stdin (its spec's argv is empty).
    Ask(OpenSpec, String),
}

impl Start {
    /// Who opens it, with their attach token.
    pub(crate) fn access(&self) -> &Access {
        match self {
            Start::Exec(spec) | Start::Ask(spec, _) => &spec.access,
            Start::Shell(spec, _) => &spec.access,
        }
    }
}

/// Which output stream bytes came from (a PTY has only `Stdout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OutputStream {
    /// Standard output, or the PTY.
    Stdout,
    /// Standard error.
    Stderr,
}

/// How a session's process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
    /// Could not start or failed on the machine; a message for the user.
    Error(String),
    /// The machine's attach password refused it; nothing ran.
    Denied(Denial),
    /// An ask reached a machine whose agent has no ask handler; nothing ran.
    NoAskHandler,
}

impl Ending {
    /// Whether the machine's attach password refused it (at the start, or later because the
    /// password changed under it).
    pub(crate) fn is_denied(&self) -> bool {
        matches!(self, Ending::Denied(_))
    }
}

/// The final word on a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Exit {
    /// How it ended.
    pub(crate) ending: Ending,
    /// Killed because its timeout passed.
    pub(crate) timed_out: bool,
    /// Run time measured on the machine.
    pub(crate) duration: Duration,
}

impl Exit {
    /// The exit code a shell would report: the code, or 128+N for signal N, 124 on timeout.
    pub(crate) fn shell_code(&self) -> i32 {
        match (&self.ending, self.timed_out) {
            (_, true) => 124,
            (Ending::Code(c), false) => *c,
            (Ending::Signal(s), false) => 128 + s,
            (Ending::Error(_), false) => 1,
            (Ending::Denied(_), false) => 6,
            (Ending::NoAskHandler, false) => 1,
        }
    }
}

/// What a consumer receives from a session, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SessionEvent {
    /// The process started (or, for an attach, the session was joined).
    Opened {
        /// Its process id on the machine.
        pid: u32,
        /// For an attach to a shell session: which one, and where its output starts.
        attachment: Option<Attachment>,
    },
    /// Bytes of output; `offset` is the absolute offset of `data[0]` in `stream`. An offset
    /// beyond the previous event's end is a gap of exactly that many bytes: this consumer
    /// fell out of a shared session's ring (it read more slowly than the others).
    Output {
        /// stdout/PTY or stderr.
        stream: OutputStream,
        /// Absolute offset.
        offset: u64,
        /// The bytes.
        data: Bytes,
    },
    /// The process ended; nothing follows.
    Exited(Exit),
    /// The machine's stream dropped: the session's fate is unknown; nothing follows.
    Lost,
}

impl SessionEvent {
    /// The machine's refusal, when this event is the end of a session its attach password
    /// turned away (nothing ran).
    pub(crate) fn denial(&self) -> Option<Denial> {
        match self {
            SessionEvent::Exited(Exit { ending: Ending::Denied(d), .. }) => Some(*d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(ending: Ending, timed_out: bool) -> Exit {
        Exit { ending, timed_out, duration: Duration::ZERO }
    }

    #[test]
    fn shell_codes_follow_the_contract() {
        assert_eq!(exit(Ending::Code(3), false).shell_code(), 3);
        assert_eq!(exit(Ending::Signal(9), false).shell_code(), 137);
        assert_eq!(exit(Ending::Signal(9), true).shell_code(), 124);
        assert_eq!(exit(Ending::Error("no such file".into()), false).shell_code(), 1);
    }
}
