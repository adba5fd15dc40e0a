//! This node among the others sharing its database: its identity and lease, and the
//! broadcast events (revocations, key rotations) it applies.
//!
//! A node renews its lease every `RENEW_EVERY`; a lease not renewed for `LEASE` is dead, and
//! with it every route to the node, so its machines show offline with no write to them. Events
//! are rows announced by `pg_notify` in the transaction that wrote them; a node applies every
//! row above the last it saw on each notification, after a listener reconnect, and every
//! `CATCH_UP_EVERY` anyway, so a missed notification delays a revocation, never loses it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::core::clock::{now, now_ms};
use crate::core::cluster_key::ClusterKey;
use crate::core::ids::LinkId;
use crate::server::links::Links;
use crate::server::metrics::METRICS;
use crate::store::{ClusterEvent, EVENT_REVOKE, EVENT_SECRET, Store, StoreError};

/// A lease lasts this long unless renewed.
pub(crate) const LEASE: Duration = Duration::from_secs(15);
/// Renewed this often: two renewals may fail before the lease lapses.
const RENEW_EVERY: Duration = Duration::from_secs(5);
/// Events are re-read this often even without a notification.
const CATCH_UP_EVERY: Duration = Duration::from_secs(30);
/// Events applied per query.
const EVENT_PAGE: i64 = 500;

/// This node: its id (new each start, so a restarted node never revives its old routes) and
/// where other nodes reach it.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    /// `node-<random>`, as `/healthz` shows it.
    pub(crate) id: String,
    /// How other nodes reach this one (`--advertise`).
    pub(crate) advertise: String,
    /// The cluster key, when several nodes share the database.
    pub(crate) key: Option<Arc<ClusterKey>>,
}

/// Renews this node's lease until dropped (the first renewal `RENEW_EVERY` after start: `bind`
/// wrote the first lease); the caller drops the lease on a clean shutdown.
pub(crate) async fn hold_lease(store: Store, node: Node) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + RENEW_EVERY, RENEW_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = renew(&store, &node).await {
            tracing::warn!(error = %e, "could not renew this node's lease");
        }
    }
}

/// Writes this node's lease, `LEASE` from now.
pub(crate) async fn renew(store: &Store, node: &Node) -> Result<(), StoreError> {
    let until = now() + i64::try_from(LEASE.as_secs()).unwrap_or(15);
    store.renew_lease(&node.id, &node.advertise, until).await
}

/// Applies broadcast events from `after` on, until dropped.
pub(crate) async fn follow_events(store: Store, links: Links, mut after: i64) {
    let mut wakeups = match store.event_wakeups().await {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for events; catching up every {}s", CATCH_UP_EVERY.as_secs());
            None
        }
    };
    let mut tick = tokio::time::interval(CATCH_UP_EVERY);
    loop {
        match wakeups.as_mut() {
            Some(w) => tokio::select! {
                heard = w.recv() => if heard.is_none() { wakeups = None },
                _ = tick.tick() => {}
            },
            None => {
                tick.tick().await;
            }
        }
        match catch_up(&store, &links, after).await {
            Ok(last) => after = last,
            Err(e) => tracing::warn!(error = %e, "could not read broadcast events; retrying"),
        }
    }
}

/// Applies every event above `after`; returns the last id applied.
async fn catch_up(store: &Store, links: &Links, mut after: i64) -> Result<i64, StoreError> {
    loop {
        let events = store.events_after(after, EVENT_PAGE).await?;
        let Some(last) = events.last().map(|e| e.id) else { return Ok(after) };
        for event in &events {
            apply(links, event).await?;
        }
        after = last;
        if (events.len() as i64) < EVENT_PAGE {
            return Ok(after);
        }
    }
}

async fn apply(links: &Links, event: &ClusterEvent) -> Result<(), StoreError> {
    match event.kind.as_str() {
        EVENT_REVOKE => match event.subject.parse::<LinkId>() {
            Ok(link) => links.apply_revocation(link).await?,
            Err(_) => tracing::warn!(subject = %event.subject, "revocation event names no link; skipped"),
        },
        EVENT_SECRET => links.maintain().await,
        other => tracing::debug!(kind = other, "unknown event kind; skipped"),
    }
    let lag = u64::try_from(now_ms().saturating_sub(event.at_ms)).unwrap_or(0);
    METRICS.notification_lag_ms.store(lag, Ordering::Relaxed);
    Ok(())
}
