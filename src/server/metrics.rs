//! Process-wide counters, exported at `/metrics` in the Prometheus text format.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The counters. Process-wide like Prometheus's default registry: one server per process.
#[derive(Default)]
pub(crate) struct Metrics {
    /// Agent streams connected to this node.
    pub(crate) machines_online: AtomicU64,
    /// Sessions open through this node.
    pub(crate) sessions_open: AtomicU64,
    /// Output bytes received from agents.
    pub(crate) bytes_from_agents: AtomicU64,
    /// Input bytes sent to agents.
    pub(crate) bytes_to_agents: AtomicU64,
    /// Exec commands started.
    pub(crate) execs_total: AtomicU64,
    /// Browser cookie sessions held in memory (device page and console).
    pub(crate) web_sessions: AtomicU64,
    /// Purges of ended rows run by this node.
    pub(crate) purge_runs: AtomicU64,
    /// Rows those purges deleted.
    pub(crate) purged_rows: AtomicU64,
    /// Requests refused by a limit, one counter per `Limit`.
    pub(crate) refusals: [AtomicU64; Limit::ALL.len()],
    /// Sessions this node drove on another node's agent stream.
    pub(crate) forwarded_sessions: AtomicU64,
    /// Node-to-node streams open on this node, either way.
    pub(crate) peer_streams: AtomicU64,
    /// Milliseconds from the last applied broadcast event's write to its application here.
    pub(crate) notification_lag_ms: AtomicU64,
    /// Agent heartbeats received: they stay in memory (no database statement per beat), and
    /// this lets a test see that beats arrived while the database stayed still.
    pub(crate) heartbeats: AtomicU64,
}

/// The limits whose refusals are counted (`cmdop_limit_refusals_total{limit=...}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Limit {
    /// `POST /oauth/device` per client IP.
    DeviceStart,
    /// Open sessions per machine.
    SessionsPerMachine,
    /// Open sessions per share link.
    SessionsPerLink,
    /// Open sessions per client IP.
    SessionsPerIp,
}

impl Limit {
    /// Every limit, in the order of `Metrics::refusals`.
    pub(crate) const ALL: [Limit; 4] =
        [Limit::DeviceStart, Limit::SessionsPerMachine, Limit::SessionsPerLink, Limit::SessionsPerIp];

    /// The `limit` label.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Limit::DeviceStart => "device_start",
            Limit::SessionsPerMachine => "sessions_per_machine",
            Limit::SessionsPerLink => "sessions_per_link",
            Limit::SessionsPerIp => "sessions_per_ip",
        }
    }
}

/// The one instance.
pub(crate) static METRICS: Metrics = Metrics {
    machines_online: AtomicU64::new(0),
    sessions_open: AtomicU64::new(0),
    bytes_from_agents: AtomicU64::new(0),
    bytes_to_agents: AtomicU64::new(0),
    execs_total: AtomicU64::new(0),
    web_sessions: AtomicU64::new(0),
    purge_runs: AtomicU64::new(0),
    purged_rows: AtomicU64::new(0),
    refusals: [const { AtomicU64::new(0) }; Limit::ALL.len()],
    forwarded_sessions: AtomicU64::new(0),
    peer_streams: AtomicU64::new(0),
    notification_lag_ms: AtomicU64::new(0),
    heartbeats: AtomicU64::new(0),
};

impl Metrics {
    /// Counts one refusal by `limit`.
    pub(crate) fn refused(&self, limit: Limit) {
        let i = Limit::ALL.iter().position(|l| *l == limit).unwrap_or(0);
        self.refusals[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric with HELP and TYPE lines.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, &AtomicU64); 13] = [
            ("cmdop_machines_online", "gauge", "Agent streams connected to this node.", &self.machines_online),
            (
                "cmdop_routes_held",
                "gauge",
                "Machine routes this node holds (its agent streams).",
                &self.machines_online,
            ),
            ("cmdop_sessions_open", "gauge", "Sessions open through this node.", &self.sessions_open),
            (
                "cmdop_relayed_bytes_total{direction=\"from_agent\"}",
                "counter",
                "Bytes relayed.",
                &self.bytes_from_agents,
            ),
            ("cmdop_relayed_bytes_total{direction=\"to_agent\"}", "counter", "", &self.bytes_to_agents),
            ("cmdop_execs_total", "counter", "Exec commands started.", &self.execs_total),
            ("cmdop_web_sessions", "gauge", "Browser cookie sessions held in memory.", &self.web_sessions),
            ("cmdop_purge_runs_total", "counter", "Purges of ended rows run by this node.", &self.purge_runs),
            ("cmdop_purged_rows_total", "counter", "Ended rows deleted by purges.", &self.purged_rows),
            (
                "cmdop_forwarded_sessions_total",
                "counter",
                "Sessions forwarded to the node holding the agent.",
                &self.forwarded_sessions,
            ),
            ("cmdop_peer_streams", "gauge", "Node-to-node streams open, either way.", &self.peer_streams),
            (
                "cmdop_notification_lag_ms",
                "gauge",
                "Write-to-apply delay of the last broadcast event.",
                &self.notification_lag_ms,
            ),
            (
                "cmdop_heartbeats_total",
                "counter",
                "Agent heartbeats received (never written to the database).",
                &self.heartbeats,
            ),
        ];
        for (name, kind, help, value) in rows {
            let base = name.split('{').next().unwrap_or(name);
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} {kind}");
            }
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP cmdop_limit_refusals_total Requests refused by a limit.\n# TYPE cmdop_limit_refusals_total counter"
        );
        for (limit, value) in Limit::ALL.iter().zip(&self.refusals) {
            let _ = writeln!(
                out,
                "cmdop_limit_refusals_total{{limit=\"{}\"}} {}",
                limit.label(),
                value.load(Ordering::Relaxed)
            );
        }
        out
    }
}
