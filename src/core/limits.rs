//! The service's configurable limits (`cmdop server` flags), with their defaults, in one
//! value the server hands to the parts that enforce them.

use std::time::Duration;

/// Default `POST /oauth/device` calls per client IP per minute.
pub(crate) const DEFAULT_DEVICE_STARTS_PER_MINUTE: usize = 20;
/// Default browser cookie sessions kept in memory, per kind (device page, console).
pub(crate) const DEFAULT_MAX_WEB_SESSIONS: usize = 10_000;
/// Default time between purges of ended rows.
pub(crate) const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(600);
/// How long ended rows are kept before a purge deletes them: 1 day, so "already used" and
/// "expired" answers stay precise for a while.
pub(crate) const KEEP_ENDED_SECS: i64 = 86_400;
/// Default open sessions per machine.
pub(crate) const DEFAULT_SESSIONS_PER_MACHINE: usize = 64;
/// Default open sessions per share link.
pub(crate) const DEFAULT_SESSIONS_PER_LINK: usize = 16;
/// Default open sessions per client IP.
pub(crate) const DEFAULT_SESSIONS_PER_IP: usize = 32;

/// Limits a server enforces; `0` on a count means no limit.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ServiceLimits {
    /// `POST /oauth/device` calls per client IP per minute.
    pub(crate) device_starts_per_minute: usize,
    /// Browser cookie sessions kept in memory per kind; beyond it the oldest anonymous ones go.
    pub(crate) max_web_sessions: usize,
    /// Time between purges of ended rows.
    pub(crate) purge_interval: Duration,
    /// Open sessions (shells, execs) per machine.
    pub(crate) sessions_per_machine: usize,
    /// Open sessions per share link.
    pub(crate) sessions_per_link: usize,
    /// Open sessions per client IP (browsers; CLI attaches and execs by their peer address).
    pub(crate) sessions_per_ip: usize,
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

/// Which session limit refused an open.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionLimit {
    /// `--max-sessions-per-machine`.
    #[error(
        "the machine already has {0} open sessions, the server's limit (--max-sessions-per-machine); end one or try again later"
    )]
    Machine(usize),
    /// `--max-sessions-per-link`.
    #[error(
        "this link already has {0} open sessions, the server's limit (--max-sessions-per-link); close one or try again later"
    )]
    Link(usize),
    /// `--max-sessions-per-ip`.
    #[error(
        "your address already has {0} open sessions, the server's limit (--max-sessions-per-ip); close one or try again later"
    )]
    Ip(usize),
}

impl SessionLimit {
    /// A short form for a WebSocket close reason (at most 123 bytes).
    pub(crate) fn short(&self) -> String {
        match self {
            SessionLimit::Machine(n) => format!("Too many open sessions on this machine (limit {n})"),
            SessionLimit::Link(n) => format!("Too many open sessions through this link (limit {n})"),
            SessionLimit::Ip(n) => format!("Too many open sessions from your address (limit {n})"),
        }
    }
}

/// Open sessions counted per machine, per link and per client IP, each against its limit.
/// Cheap to clone; a `SessionSlot` holds one session's place until dropped.
#[derive(Clone, Debug, Default)]
pub(crate) struct SessionSlots {
    inner: std::sync::Arc<SlotsInner>,
}

#[derive(Debug, Default)]
struct SlotsInner {
    limits: (usize, usize, usize),
    counts: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

impl SessionSlots {
    /// Counting against `limits` (0: no limit).
    pub(crate) fn new(limits: &ServiceLimits) -> Self {
        let limits = (limits.sessions_per_machine, limits.sessions_per_link, limits.sessions_per_ip);
        Self { inner: std::sync::Arc::new(SlotsInner { limits, counts: Default::default() }) }
    }

    /// A place for one more session on `machine`, through `link` (if any), from `ip` (if
    /// known); the first limit it would pass refuses it, and nothing is counted then.
    pub(crate) fn acquire(
        &self,
        machine: &str,
        link: Option<&str>,
        ip: Option<std::net::IpAddr>,
    ) -> Result<SessionSlot, SessionLimit> {
        let (per_machine, per_link, per_ip) = self.inner.limits;
        let mut keys = vec![(format!("machine:{machine}"), per_machine, SessionLimit::Machine(per_machine))];
        if let Some(link) = link {
            keys.push((format!("link:{link}"), per_link, SessionLimit::Link(per_link)));
        }
        if let Some(ip) = ip {
            keys.push((format!("ip:{ip}"), per_ip, SessionLimit::Ip(per_ip)));
        }
        let mut counts = super::sync::lock(&self.inner.counts);
        for (key, max, refusal) in &keys {
            if *max > 0 && counts.get(key).copied().unwrap_or(0) >= *max {
                return Err(*refusal);
            }
        }
        let keys: Vec<String> = keys.into_iter().map(|(k, _, _)| k).collect();
        for key in &keys {
            *counts.entry(key.clone()).or_default() += 1;
        }
        Ok(SessionSlot { slots: self.clone(), keys })
    }
}

/// One session's place; given back when dropped.
#[derive(Debug)]
pub(crate) struct SessionSlot {
    slots: SessionSlots,
    keys: Vec<String>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let mut counts = super::sync::lock(&self.slots.inner.counts);
        for key in &self.keys {
            if let Some(n) = counts.get_mut(key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_refuse_at_each_limit_and_come_back_when_dropped() {
        let limits =
            ServiceLimits { sessions_per_machine: 3, sessions_per_link: 2, sessions_per_ip: 1, ..Default::default() };
        let slots = SessionSlots::new(&limits);
        let ip = |n: u8| Some(std::net::IpAddr::from([192, 0, 2, n]));
        let a = slots.acquire("m", Some("l"), ip(1)).unwrap();
        assert_eq!(slots.acquire("m", None, ip(1)).unwrap_err(), SessionLimit::Ip(1));
        let _b = slots.acquire("m", Some("l"), ip(2)).unwrap();
        assert_eq!(slots.acquire("m", Some("l"), ip(3)).unwrap_err(), SessionLimit::Link(2));
        let _c = slots.acquire("m", None, ip(3)).unwrap();
        assert_eq!(slots.acquire("m", None, ip(4)).unwrap_err(), SessionLimit::Machine(3));
        assert!(slots.acquire("other", None, ip(4)).is_ok(), "machines are apart");
        drop(a);
        assert!(slots.acquire("m", Some("l"), ip(1)).is_ok(), "a dropped slot frees its places");
    }
}
