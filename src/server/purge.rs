//! The periodic purge: ended rows in the store (expired or used grants, tokens, tickets and
//! enrollment tokens; on PostgreSQL one node at a time, under an advisory lock) and expired
//! browser sessions in memory. Owned by the serving server as an `AbortOnDrop` task.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::core::clock::now;
use crate::core::limits::KEEP_ENDED_SECS;
use crate::server::http::sessions::BoundedSessions;
use crate::server::metrics::METRICS;
use crate::store::Store;

/// Purges every `interval`, the first time at once.
pub(crate) async fn run(store: Store, sessions: Vec<BoundedSessions>, interval: Duration) {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dropped: usize = sessions.iter().map(BoundedSessions::purge_expired).sum();
        match store.purge_ended(now() - KEEP_ENDED_SECS).await {
            Ok(Some(purged)) => {
                METRICS.purge_runs.fetch_add(1, Ordering::Relaxed);
                METRICS.purged_rows.fetch_add(purged.total(), Ordering::Relaxed);
                tracing::debug!(?purged, sessions = dropped, "purged ended rows");
            }
            Ok(None) => tracing::debug!(sessions = dropped, "another node is purging"),
            Err(e) => tracing::warn!(error = %e, "purge failed; trying again next time"),
        }
    }
}
