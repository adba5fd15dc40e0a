//! Link sessions whose browser dropped (a network blip): kept for 30 s so a reconnect with
//! `?session=<key>&offset=<n>` resumes the same shell and replays what it missed.
//!
//! While parked, output goes into the session's ring and no credit is granted back, so the
//! shell pauses once the window (which equals the ring) is full: nothing is dropped, nothing
//! grows. The credit owed is granted when the browser comes back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use uuid::Uuid;

use subtle::ConstantTimeEq;

use crate::core::ids::LinkId;
use crate::core::secret::{self, Secret};
use crate::core::session::SessionEvent;
use crate::core::session::ring::Ring;
use crate::core::sync::lock;
use crate::server::links::Revocation;
use crate::server::relay::router::SessionPort;

/// How long a dropped browser may take to come back: 30 s.
pub(crate) const RESUME_GRACE: Duration = Duration::from_secs(30);
/// How long a reconnect waits for the session's current holder to hand it over.
const HANDOFF_WAIT: Duration = Duration::from_secs(5);
/// Output kept for replay per link session: equal to the output window, so a parked session
/// never has to drop bytes.
pub(crate) const REPLAY_BYTES: usize = crate::core::session::OUTPUT_WINDOW_BYTES as usize;

/// How a session ended while nobody was watching.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum End {
    /// The shell exited with this code.
    Exit(i32),
    /// The machine's stream dropped.
    Lost,
    /// The machine's attach password changed: the grant it was opened with is void.
    Denied,
}

/// One shell opened through a share link.
pub(crate) struct LinkSession {
    /// Resume key (sent to the page in `ready`).
    pub(crate) key: Uuid,
    /// The link it was opened through; only that link may resume it.
    pub(crate) link: LinkId,
    /// The session.
    pub(crate) port: SessionPort,
    /// Recent output for replay.
    pub(crate) ring: Ring,
    /// Set when the session ended while parked.
    pub(crate) ended: Option<End>,
    /// Output credit held back while parked, granted on resume.
    pub(crate) owed: usize,
    /// Its place under the session limits, held until it ends.
    pub(crate) slot: Option<crate::core::limits::SessionSlot>,
    /// SHA-256 of the attach token it was opened with ("" without one): only a reconnect
    /// holding the same grant may resume it.
    grant: String,
}

impl LinkSession {
    /// A fresh session opened through `link` with the attach token `grant` (if any).
    pub(crate) fn new(link: LinkId, port: SessionPort, grant: Option<&Secret<String>>) -> Self {
        let grant = grant_hash(grant);
        Self { key: Uuid::new_v4(), link, port, ring: Ring::new(REPLAY_BYTES), ended: None, owed: 0, slot: None, grant }
    }

    /// Takes a parked-time event; false once the session has ended.
    fn absorb(&mut self, event: Option<SessionEvent>) {
        match event {
            Some(SessionEvent::Output { offset, data, .. }) => {
                self.ring.push_shared(offset, data.clone());
                self.owed += data.len();
            }
            Some(SessionEvent::Opened { .. }) => {}
            Some(SessionEvent::Exited(exit)) if exit.ending.is_denied() => self.ended = Some(End::Denied),
            Some(SessionEvent::Exited(exit)) => self.ended = Some(End::Exit(exit.shell_code())),
            Some(SessionEvent::Lost) | None => self.ended = Some(End::Lost),
        }
    }
}

fn grant_hash(token: Option<&Secret<String>>) -> String {
    token.filter(|t| !t.expose().is_empty()).map(|t| secret::hash_token(t.expose())).unwrap_or_default()
}

/// A held session's link, grant hash and handoff.
type Held = (LinkId, String, Handoff);

type Handoff = oneshot::Sender<oneshot::Sender<LinkSession>>;
/// Where a session's holder (a live socket or the park task) hears that a reconnect wants it.
pub(crate) type HandoffRequests = oneshot::Receiver<oneshot::Sender<LinkSession>>;

/// Parked sessions by key. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Parked {
    map: Arc<Mutex<HashMap<Uuid, Held>>>,
}

impl Parked {
    /// Keeps `session` until it is taken, the grace or the link's deadline passes, or the
    /// link is revoked; then drops it, which ends the shell.
    pub(crate) fn park(&self, mut session: LinkSession, deadline: tokio::time::Instant, mut revocation: Revocation) {
        let mut asked = self.register(&session);
        let map = self.map.clone();
        let until = deadline.min(tokio::time::Instant::now() + RESUME_GRACE);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    reply = &mut asked => {
                        if let Ok(reply) = reply {
                            let _ = reply.send(session);
                        }
                        return;
                    }
                    event = session.port.events.recv(), if session.ended.is_none() => {
                        session.absorb(event);
                        // Its grant died with the password: nobody may resume it.
                        if session.ended == Some(End::Denied) {
                            break;
                        }
                    }
                    _ = tokio::time::sleep_until(until) => break,
                    () = revocation.revoked() => break,
                }
            }
            lock(&map).remove(&session.key);
        });
    }

    /// Lists a session as held (by a live socket or by `park`): a reconnect naming its key
    /// asks the holder for it through the returned receiver. This is how a reconnect takes a
    /// session over from a socket the server still believes alive (after a network blip the
    /// old connection often never reports its end).
    pub(crate) fn register(&self, session: &LinkSession) -> HandoffRequests {
        let (handoff, asked) = oneshot::channel();
        lock(&self.map).insert(session.key, (session.link, session.grant.clone(), handoff));
        asked
    }

    /// Forgets a held session (its socket ended it without parking).
    pub(crate) fn unregister(&self, key: Uuid) {
        lock(&self.map).remove(&key);
    }

    /// The parked or live session `key`, if it exists, belongs to `link` and was opened with
    /// the attach token the reconnect holds (`grant`): a resume checks the password grant as
    /// an open does, and a session whose grant the machine revoked (password changed) is gone.
    pub(crate) async fn take(&self, key: Uuid, link: LinkId, grant: Option<&Secret<String>>) -> Option<LinkSession> {
        let grant = grant_hash(grant);
        let handoff = {
            let mut map = lock(&self.map);
            match map.get(&key) {
                Some((owner, held, _)) if *owner == link && bool::from(held.as_bytes().ct_eq(grant.as_bytes())) => {
                    map.remove(&key).map(|(_, _, h)| h)
                }
                _ => None,
            }
        }?;
        let (reply, answer) = oneshot::channel();
        handoff.send(reply).ok()?;
        // The holder answers at once; should it not, the caller opens a new shell instead.
        tokio::time::timeout(HANDOFF_WAIT, answer).await.ok()?.ok()
    }
}
