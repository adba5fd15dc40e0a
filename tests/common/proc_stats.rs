//! Resource use of processes, from /proc: memory, CPU time, process trees.

use super::children_of;

/// Resident memory of process `pid`, KiB (`VmRSS` of /proc/PID/status).
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

/// CPU time process `pid` has used so far (user + system), in clock ticks.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(tick(11) + tick(12))
}

/// Every process below `pid` (children, their children, ...), at most `limit` of them.
pub fn descendants_of(pid: u32, limit: usize) -> Vec<u32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(next) = queue.pop() {
        for child in children_of(next) {
            if found.len() >= limit {
                return found;
            }
            found.push(child);
            queue.push(child);
        }
    }
    found
}
