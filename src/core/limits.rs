//! The service's configurable limits (`cmdop server` flags), with their defaults, in one
//! value the server hands to the parts that enforce them.

use std::time::Duration;

/// Default `POST /oauth/device` calls per client IP per minute.
pub const DEFAULT_DEVICE_STARTS_PER_MINUTE: usize = 20;
/// Default browser cookie sessions kept in memory, per kind (device page, console).
pub const DEFAULT_MAX_WEB_SESSIONS: usize = 10_000;
/// Default time between purges of ended rows.
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// How long ended rows are kept before a purge deletes them: 1 day, so "already used" and
/// "expired" answers stay precise for a while.
pub const KEEP_ENDED_SECS: i64 = 86_400;
/// Default open sessions per machine.
pub const DEFAULT_SESSIONS_PER_MACHINE: usize = 64;
/// Default open sessions per share link.
pub const DEFAULT_SESSIONS_PER_LINK: usize = 16;
/// Default open sessions per client IP.
pub const DEFAULT_SESSIONS_PER_IP: usize = 32;

/// Limits a server enforces; `0` on a count means no limit.
#[derive(Clone, Copy, Debug)]
pub struct ServiceLimits {
    /// `POST /oauth/device` calls per client IP per minute.
    pub device_starts_per_minute: usize,
    /// Browser cookie sessions kept in memory per kind; beyond it the oldest anonymous ones go.
    pub max_web_sessions: usize,
    /// Time between purges of ended rows.
    pub purge_interval: Duration,
    /// Open sessions (shells, execs) per machine.
    pub sessions_per_machine: usize,
    /// Open sessions per share link.
    pub sessions_per_link: usize,
    /// Open sessions per client IP (browsers; CLI attaches and execs by their peer address).
    pub sessions_per_ip: usize,
}

impl Default for ServiceLimits {
    fn default() -> Self {
        Self {
            device_starts_per_minute: DEFAULT_DEVICE_STARTS_PER_MINUTE,
            max_web_sessions: DEFAULT_MAX_WEB_SESSIONS,
            purge_interval: DEFAULT_PURGE_INTERVAL,
            sessions_per_machine: DEFAULT_SESSIONS_PER_MACHINE,
            sessions_per_link: DEFAULT_SESSIONS_PER_LINK,
            sessions_per_ip: DEFAULT_SESSIONS_PER_IP,
        }
    }
}
