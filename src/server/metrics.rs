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
}

/// The one instance.
pub(crate) static METRICS: Metrics = Metrics {
    machines_online: AtomicU64::new(0),
    sessions_open: AtomicU64::new(0),
    bytes_from_agents: AtomicU64::new(0),
    bytes_to_agents: AtomicU64::new(0),
    execs_total: AtomicU64::new(0),
};

impl Metrics {
    /// Renders every metric with HELP and TYPE lines.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        let rows: [(&str, &str, &str, &AtomicU64); 5] = [
            ("cmdop_machines_online", "gauge", "Agent streams connected to this node.", &self.machines_online),
            ("cmdop_sessions_open", "gauge", "Sessions open through this node.", &self.sessions_open),
            (
                "cmdop_relayed_bytes_total{direction=\"from_agent\"}",
                "counter",
                "Bytes relayed.",
                &self.bytes_from_agents,
            ),
            ("cmdop_relayed_bytes_total{direction=\"to_agent\"}", "counter", "", &self.bytes_to_agents),
            ("cmdop_execs_total", "counter", "Exec commands started.", &self.execs_total),
        ];
        for (name, kind, help, value) in rows {
            let base = name.split('{').next().unwrap_or(name);
            if !help.is_empty() {
                let _ = writeln!(out, "# HELP {base} {help}\n# TYPE {base} {kind}");
            }
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        out
    }
}
