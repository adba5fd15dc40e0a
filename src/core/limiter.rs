//! Slows password guessing: after a few free failures per key (an account, an IP), each
//! further failure doubles the wait before the next attempt, up to a cap (`Limiter`); and caps
//! the rate of anonymous requests per key (`Rate`).
//!
//! An attempt is counted when it *starts* (`begin`), before the slow password check, and
//! forgotten only on success: guesses sent all at once are counted one by one instead of all
//! passing the check while the first is still hashing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked; beyond it, keys no longer blocked are forgotten first.
const MAX_KEYS: usize = 100_000;

/// A failure counter per key with exponential back-off.
#[derive(Debug)]
pub(crate) struct Limiter {
    free: u32,
    cap: Duration,
    keys: Mutex<HashMap<String, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    blocked_until: Instant,
}

impl Limiter {
    /// `free` failures pass without delay; then 1 s, 2 s, 4 s ... up to `cap`.
    pub(crate) fn new(free: u32, cap: Duration) -> Self {
        Self { free, cap, keys: Mutex::default() }
    }

    /// `Err(wait)` while `key` must wait before trying again.
    pub(crate) fn check(&self, key: &str) -> Result<(), Duration> {
        let keys = super::sync::lock(&self.keys);
        match keys.get(key) {
            Some(e) if e.blocked_until > Instant::now() => Err(e.blocked_until - Instant::now()),
            _ => Ok(()),
        }
    }

    /// Starts an attempt of `key`: `Err(wait)` while it must wait, else the attempt is
    /// counted as a failure at once (check and count under one lock); `succeeded` forgets it.
    pub(crate) fn begin(&self, key: &str) -> Result<(), Duration> {
        let mut keys = super::sync::lock(&self.keys);
        let now = Instant::now();
        if let Some(e) = keys.get(key)
            && e.blocked_until > now
        {
            return Err(e.blocked_until - now);
        }
        self.count(&mut keys, key, now);
        Ok(())
    }

    /// Counts a failure of `key`.
    pub(crate) fn failed(&self, key: &str) {
        let mut keys = super::sync::lock(&self.keys);
        self.count(&mut keys, key, Instant::now());
    }

    fn count(&self, keys: &mut HashMap<String, Entry>, key: &str, now: Instant) {
        if keys.len() >= MAX_KEYS {
            keys.retain(|_, e| e.blocked_until > now);
        }
        let e = keys.entry(key.to_string()).or_insert(Entry { failures: 0, blocked_until: now });
        e.failures += 1;
        if e.failures > self.free {
            let doublings = (e.failures - self.free - 1).min(20);
            let wait = Duration::from_secs(1u64 << doublings).min(self.cap);
            e.blocked_until = now + wait;
        }
    }

    /// A success un-counts the attempt `begin` counted, keeping earlier failures (a source's
    /// count must not be reset by signing in to the attacker's own account).
    pub(crate) fn release(&self, key: &str) {
        let mut keys = super::sync::lock(&self.keys);
        if let Some(e) = keys.get_mut(key) {
            e.failures = e.failures.saturating_sub(1);
        }
    }

    /// A success forgets the key's failures.
    pub(crate) fn succeeded(&self, key: &str) {
        super::sync::lock(&self.keys).remove(key);
    }
}

/// At most `max` events per key within a sliding `window` (a request rate, not a failure
/// count): for endpoints anyone may call without signing in.
#[derive(Debug)]
pub(crate) struct Rate {
    max: usize,
    window: Duration,
    keys: Mutex<HashMap<String, Vec<Instant>>>,
}

impl Rate {
    /// `max` events per `window` per key; `max` 0 refuses nothing (no limit).
    pub(crate) fn new(max: usize, window: Duration) -> Self {
        Self { max, window, keys: Mutex::default() }
    }

    /// Counts an event of `key`, or `Err(wait)` until the oldest counted one leaves the window.
    pub(crate) fn hit(&self, key: &str) -> Result<(), Duration> {
        if self.max == 0 {
            return Ok(());
        }
        let mut keys = super::sync::lock(&self.keys);
        let now = Instant::now();
        if keys.len() >= MAX_KEYS {
            keys.retain(|_, times| times.last().is_some_and(|t| now.duration_since(*t) < self.window));
        }
        let times = keys.entry(key.to_string()).or_default();
        times.retain(|t| now.duration_since(*t) < self.window);
        if times.len() >= self.max {
            let oldest = times.first().copied().unwrap_or(now);
            return Err(self.window.saturating_sub(now.duration_since(oldest)));
        }
        times.push(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_refuses_beyond_its_window_and_says_how_long() {
        let r = Rate::new(3, Duration::from_secs(60));
        assert!((0..3).all(|_| r.hit("ip:a").is_ok()));
        let wait = r.hit("ip:a").unwrap_err();
        assert!(wait > Duration::from_secs(59) && wait <= Duration::from_secs(60), "{wait:?}");
        assert!(r.hit("ip:b").is_ok(), "keys are apart");
        let unlimited = Rate::new(0, Duration::from_secs(60));
        assert!((0..100).all(|_| unlimited.hit("x").is_ok()));
    }

    #[test]
    fn free_attempts_then_doubling_waits() {
        let l = Limiter::new(2, Duration::from_secs(60));
        l.failed("a");
        l.failed("a");
        assert!(l.check("a").is_ok());
        l.failed("a");
        let wait = l.check("a").unwrap_err();
        assert!(wait > Duration::from_millis(900) && wait <= Duration::from_secs(1));
        l.failed("a");
        assert!(l.check("a").unwrap_err() > Duration::from_millis(1900));
        assert!(l.check("b").is_ok());
        l.succeeded("a");
        assert!(l.check("a").is_ok());
    }

    #[test]
    fn attempts_count_when_they_start() {
        let l = Limiter::new(3, Duration::from_secs(60));
        // Twelve guesses in flight at once: the fourth starts the back-off, the rest wait.
        let started = (0..12).filter(|_| l.begin("link").is_ok()).count();
        assert_eq!(started, 4);
        assert!(l.check("link").is_err());
        l.succeeded("link");
        assert!(l.begin("link").is_ok(), "a success forgets the attempts");
        l.begin("ip").unwrap();
        l.begin("ip").unwrap();
        l.release("ip");
        l.begin("ip").unwrap();
        l.begin("ip").unwrap();
        assert!(l.begin("ip").is_ok(), "a released attempt is not counted: 3 free, this is the 4th");
        assert!(l.begin("ip").is_err());
    }
}
