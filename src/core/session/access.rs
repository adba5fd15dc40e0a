//! Attach passwords as the rest of the server sees them: who opens a session, the token that
//! proves they answered the machine's password, and why a machine refused.
//!
//! The password itself is kept and checked by the agent alone (agent/password.rs); the relay
//! and the HTTP side only carry a principal and a token to it and its verdict back.

use std::fmt;
use std::time::Duration;

use crate::core::ids::{LinkId, UserId};
use crate::core::secret::Secret;

/// Who asks to open a session, and the attach token they hold for the machine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Access {
    /// `user:<uuid>` or `link:<uuid>`: attach tokens are bound to it, and wrong passwords back
    /// off per principal.
    pub(crate) principal: String,
    /// The token from an earlier unlock, if any.
    pub(crate) token: Option<Secret<String>>,
}

impl Access {
    /// A signed-in fleet member (CLI).
    pub(crate) fn user(user: UserId, token: Option<Secret<String>>) -> Self {
        Self { principal: format!("user:{user}"), token }
    }

    /// Whoever holds a share link (browser).
    pub(crate) fn link(link: LinkId, token: Option<Secret<String>>) -> Self {
        Self { principal: format!("link:{link}"), token }
    }
}

/// Why a machine's attach password refused a session or an unlock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denial {
    /// The machine has an attach password and no valid token was shown: unlock first.
    Required,
    /// The password was wrong.
    Wrong,
    /// Too many wrong answers for this principal or machine: wait this long.
    Throttled(Duration),
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Required => f.write_str("this machine asks for its attach password"),
            Denial::Wrong => f.write_str("wrong attach password"),
            Denial::Throttled(wait) => {
                write!(f, "too many wrong attach passwords: try again in {} s", wait.as_secs().max(1))
            }
        }
    }
}

impl Denial {
    /// The short word scripts match on (`cmdop-denial` metadata, the page's JSON).
    pub(crate) fn code(self) -> &'static str {
        match self {
            Denial::Required => "required",
            Denial::Wrong => "wrong",
            Denial::Throttled(_) => "throttled",
        }
    }

    /// How long to wait before trying again (zero unless throttled).
    pub(crate) fn retry_after(self) -> Duration {
        match self {
            Denial::Throttled(wait) => wait,
            _ => Duration::ZERO,
        }
    }
}

/// A correct answer: the token to show instead of the password, for 24 hours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Grant {
    /// The attach token (`cmdopa_…`).
    pub(crate) token: Secret<String>,
    /// When it stops working, seconds since the epoch.
    pub(crate) expires_unix: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn denials_say_what_to_do() {
        assert_eq!(
            Denial::Throttled(Duration::from_millis(300)).to_string(),
            "too many wrong attach passwords: try again in 1 s"
        );
        assert_eq!(Denial::Throttled(Duration::from_secs(8)).retry_after(), Duration::from_secs(8));
        assert_eq!(Denial::Wrong.retry_after(), Duration::ZERO);
        assert_eq!(Denial::Required.code(), "required");
    }
}
