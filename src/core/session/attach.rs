//! Shell sessions that outlive their attachments: which session to attach to, what an
//! attachment learns when it starts, and how a session is described in listings. Pure data;
//! the agent (agent/registry.rs) runs them, the relay carries these across the wire.

use std::fmt;

use thiserror::Error;

use crate::core::ids::SessionId;

/// Output a shell session keeps for replay: 1 MiB. Larger than the output window plus one
/// chunk, so a lone attachment never falls out of it.
pub(crate) const SESSION_RING_BYTES: usize = 1 << 20;
/// Longest session name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 64;

/// Why a session name was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub(crate) enum NameError {
    /// Empty.
    #[error("a session name cannot be empty")]
    Empty,
    /// Longer than `MAX_NAME_BYTES`.
    #[error("a session name is at most {MAX_NAME_BYTES} characters")]
    TooLong,
    /// A character outside `A-Z a-z 0-9 . _ -`.
    #[error("a session name may hold only letters, digits, '.', '_' and '-' (got {0:?})")]
    BadChar(char),
    /// Looks like a session id, which would make `kill NAME` ambiguous.
    #[error("a session name cannot be a UUID")]
    LooksLikeId,
}

/// A persistent session's name: short, shell- and URL-safe, never a UUID (ids and names share
/// the `kill MACHINE SESSION` argument).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct SessionName(String);

impl SessionName {
    /// Checks `text` and wraps it.
    pub(crate) fn parse(text: &str) -> Result<Self, NameError> {
        if text.is_empty() {
            return Err(NameError::Empty);
        }
        if text.len() > MAX_NAME_BYTES {
            return Err(NameError::TooLong);
        }
        if let Some(c) = text.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
            return Err(NameError::BadChar(c));
        }
        if text.parse::<SessionId>().is_ok() {
            return Err(NameError::LooksLikeId);
        }
        Ok(Self(text.to_string()))
    }

    /// The name as text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which shell session an attachment joins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ShellTarget {
    /// A fresh shell; a persistent one outlives its attachments.
    New {
        /// Outlives its attachments (reattach by id).
        persistent: bool,
    },
    /// The running persistent session of this name, created if there is none.
    Named(SessionName),
    /// This session (a reattach after a dropped connection).
    Id(SessionId),
}

/// Everything the agent needs to attach a consumer to a shell session.
#[derive(Clone, Debug)]
pub(crate) struct AttachSpec {
    /// Which session.
    pub(crate) target: ShellTarget,
    /// Terminal size of this consumer (0 = leave the PTY's size alone).
    pub(crate) cols: u16,
    /// Terminal size of this consumer.
    pub(crate) rows: u16,
    /// First output offset wanted; `None` replays the session's whole ring.
    pub(crate) resume_from: Option<u64>,
    /// Who attaches, with their attach token.
    pub(crate) access: super::Access,
}

/// What an attachment learns when it starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Attachment {
    /// The session attached to.
    pub(crate) id: SessionId,
    /// Its name, if it has one.
    pub(crate) name: Option<String>,
    /// Whether it outlives its attachments.
    pub(crate) persistent: bool,
    /// Whether this attach started it.
    pub(crate) created: bool,
    /// Offset of the first output byte this attachment receives.
    pub(crate) replay_from: u64,
    /// Bytes from the asked-for offset on that were no longer buffered.
    pub(crate) dropped: u64,
}

/// A running shell session as listings show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SessionSummary {
    /// Its id.
    pub(crate) id: SessionId,
    /// Its name, if it has one.
    pub(crate) name: Option<String>,
    /// Whether it outlives its attachments.
    pub(crate) persistent: bool,
    /// When it started, unix milliseconds.
    pub(crate) created_unix_ms: u64,
    /// When a consumer last attached, unix milliseconds.
    pub(crate) last_attached_unix_ms: u64,
    /// Attachments right now.
    pub(crate) attached: u32,
    /// The shell's process id on the machine.
    pub(crate) pid: u32,
    /// Output offset reached so far.
    pub(crate) output_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_short_safe_and_never_ids() {
        assert!(SessionName::parse("work-1.a_b").is_ok());
        assert_eq!(SessionName::parse(""), Err(NameError::Empty));
        assert_eq!(SessionName::parse("a b"), Err(NameError::BadChar(' ')));
        assert_eq!(SessionName::parse(&"x".repeat(65)), Err(NameError::TooLong));
        let id = SessionId::random().to_string();
        assert_eq!(SessionName::parse(&id), Err(NameError::LooksLikeId));
    }
}
