//! Sockets open through each link, so a revocation reaches them at once (close 4002).
//!
//! Every socket opened through a link (and a parked session, while it waits for its browser)
//! holds a [`Revocation`]: a subscription to the link's `watch` channel. The number of
//! subscribers is the link's live session count.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::watch;

use crate::core::ids::LinkId;
use crate::core::sync::lock;

/// The links' revocation channels, by link. The mutex is held briefly, never across `.await`.
#[derive(Debug, Default)]
pub(crate) struct Live {
    links: Mutex<HashMap<LinkId, watch::Sender<bool>>>,
}

impl Live {
    /// Subscribes to `link`'s revocation (dropping channels nobody listens to any more).
    pub(crate) fn subscribe(&self, link: LinkId) -> Revocation {
        let mut links = lock(&self.links);
        links.retain(|_, tx| tx.receiver_count() > 0);
        Revocation(links.entry(link).or_insert_with(|| watch::channel(false).0).subscribe())
    }

    /// Sockets and parked sessions currently holding `link`.
    pub(crate) fn count(&self, link: LinkId) -> usize {
        lock(&self.links).get(&link).map_or(0, |tx| tx.receiver_count())
    }

    /// Tells every holder of `link` that it was revoked.
    pub(crate) fn revoke(&self, link: LinkId) {
        if let Some(tx) = lock(&self.links).remove(&link) {
            let _ = tx.send(true);
        }
    }
}

/// One socket's (or parked session's) subscription to its link's revocation.
#[derive(Debug)]
pub(crate) struct Revocation(watch::Receiver<bool>);

impl Revocation {
    /// Already revoked: for a link revoked before its socket subscribed.
    pub(crate) fn revoked_already() -> Self {
        Self(watch::channel(true).1)
    }

    /// Resolves when the link is revoked (never, if it is not). Cancel-safe.
    pub(crate) async fn revoked(&mut self) {
        if self.0.wait_for(|revoked| *revoked).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_revocation_reaches_every_holder_and_only_them() {
        let live = Live::default();
        let (link, other) = (LinkId::random(), LinkId::random());
        let (mut a, mut b, mut c) = (live.subscribe(link), live.subscribe(link), live.subscribe(other));
        assert_eq!(live.count(link), 2);
        live.revoke(link);
        a.revoked().await;
        b.revoked().await;
        assert!(tokio::time::timeout(Duration::from_millis(50), c.revoked()).await.is_err());
        assert_eq!(live.count(link), 0);
        drop(c);
        assert_eq!(live.count(other), 0);
        Revocation::revoked_already().revoked().await;
    }
}
