//! Browser wire messages on the share-link WebSocket (CONTRACT.md). Binary frames carry
//! terminal bytes both ways; text frames carry these JSON control messages.

use serde::{Deserialize, Serialize};

/// Browser -> server.
#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ClientMessage {
    /// The terminal's size changed.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
}

/// Server -> browser.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum ServerMessage {
    /// The session is attached; output that follows starts at `offset`. Extends the contract:
    /// the page uses `session` and its received byte count to resume after a network blip.
    Ready {
        /// Session key for `?session=` on reconnect.
        session: String,
        /// Absolute offset of the next output byte.
        offset: u64,
    },
    /// The shell exited.
    Exit {
        /// Its exit code (128+N for signal N).
        code: i32,
    },
    /// Something the user should know.
    Notice {
        /// Plain text.
        text: String,
    },
}

/// WebSocket close codes of the contract.
pub(crate) mod close {
    /// The shell exited.
    pub(crate) const NORMAL: u16 = 1000;
    /// The session moved to a newer connection of the same page (a resume took it over).
    pub(crate) const GOING_AWAY: u16 = 1001;
    /// The link's deadline passed.
    pub(crate) const EXPIRED: u16 = 4001;
    /// The link was revoked.
    pub(crate) const REVOKED: u16 = 4002;
    /// The machine went offline.
    pub(crate) const OFFLINE: u16 = 4003;
    /// A policy refused it (max opens, ...).
    pub(crate) const POLICY: u16 = 4008;
    /// The machine asks for its attach password: the page shows the password form, posts it
    /// to `<link>/unlock`, and connects again with the cookie that answer sets.
    pub(crate) const PASSWORD: u16 = 4010;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_parses_and_garbage_does_not() {
        let m: ClientMessage = serde_json::from_str(r#"{"type":"resize","cols":120,"rows":40}"#).unwrap();
        assert_eq!(m, ClientMessage::Resize { cols: 120, rows: 40 });
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"resize","cols":-1,"rows":2}"#).is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn server_messages_are_tagged() {
        let s = serde_json::to_string(&ServerMessage::Exit { code: 3 }).unwrap();
        assert_eq!(s, r#"{"type":"exit","code":3}"#);
    }
}
