//! Machine presence when several nodes share one database: a node that dies takes its agents'
//! streams with it but cannot mark their machines offline, so every node sweeps the store for
//! machines whose last heartbeat is older than three intervals. Any live node's sweep catches
//! a dead node's machines; a live stream's next heartbeat marks its machine online again.
//!
//! This leans on the heartbeat rows the relay writes today; the planned model (each node
//! renews a lease, a machine's route counts while its node's lease is live) replaces it.

use std::time::Duration;

use crate::core::clock::now;
use crate::store::Store;

/// Silence after which a machine counts as offline: three heartbeats, as on the stream.
const MISSED_BEATS: u32 = 3;
/// Slack for heartbeat times being whole seconds.
const CLOCK_SLACK: Duration = Duration::from_secs(1);

/// Every `heartbeat`, marks offline the machines silent for longer than three heartbeats.
/// Runs until dropped (the server holds it in an `AbortOnDrop`).
pub(crate) async fn offline_sweep(store: Store, heartbeat: Duration) {
    let silence = heartbeat * MISSED_BEATS + CLOCK_SLACK;
    let silence_secs = i64::try_from(silence.as_secs().max(1)).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(heartbeat.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        match store.mark_stale_offline(now().saturating_sub(silence_secs)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(machines = n, "marked silent machines offline"),
            Err(e) => tracing::warn!(error = %e, "could not sweep silent machines"),
        }
    }
}
