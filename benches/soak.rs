//! Soak benchmark (issue 17, "Floods and limits"): many share-link sessions typing and reading
//! on one node for a long time, to show no errors, no leak and a stable echo. Not run in CI (CI
//! only builds it).
//!
//! `cargo bench --bench soak` starts a real `cmdop server` (SQLite) with its session limits
//! raised to fit, one real `cmdop agent`, and mints several links with `cmdop connect share`.
//! Then, per round:
//! - opens `CMDOP_SOAK_SESSIONS` (default 1,000) browser-side WebSockets spread over the links,
//!   each with a real shell on the agent running the echo program (raw mode, `dd bs=1`);
//! - every session types a key every 200-500 ms (jittered) for `CMDOP_SOAK_SECONDS` (default
//!   600) and checks each echo byte-exact (one key in, that same byte back, nothing else);
//! - then nine in ten sessions end their echo program and shell (close 1000 expected) and one in
//!   ten just closes its socket, as a browser tab does (the server parks it for 30 s, then ends
//!   its shell);
//! - server and agent RSS (`/proc/PID/status` VmRSS), open files (`/proc/PID/fd`) and the
//!   agent's shells are read before the sessions open, at their peak, and after the sessions
//!   closed (polled until files and shells are back to the baseline, at most 90 s).
//!
//! A second, short round (`CMDOP_SOAK_ROUND2_SECONDS`, default 30) with the same sessions
//! separates a leak (memory that grows with every round) from memory the allocator keeps for
//! reuse after the first peak.
//!
//! Prints ONE JSON object on stdout (`CMDOP_BENCH_OUT=FILE` also writes it there); progress
//! goes to stderr.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)]
#[path = "e2e/fixture.rs"]
mod fixture;
#[allow(dead_code)]
#[path = "e2e/link.rs"]
mod link;
#[allow(dead_code)]
#[path = "../tests/common/procfs.rs"]
mod procfs;
#[allow(dead_code)]
#[path = "../tests/common/server_line.rs"]
mod server_line;
#[allow(dead_code)]
#[path = "e2e/typing.rs"]
mod typing;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use fixture::{Fixture, Link, cpu_seconds, rss_kib};
use futures_util::{SinkExt, StreamExt};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// Shortest and longest pause between two keys of one session (a person typing).
const KEY_GAP_MS: (u64, u64) = (200, 500);
/// How long one key may wait for its echo before the session counts an error.
const ECHO_WAIT: Duration = Duration::from_secs(10);
/// How long opening one session may take (upgrade, prompt, echo program running).
const OPEN_WAIT: Duration = Duration::from_secs(90);
/// How long ending one session may take (the rest of its echo program, the shell's exit).
const END_WAIT: Duration = Duration::from_secs(90);
/// How long the processes get to return to their baseline after the sessions closed: the
/// server keeps a dropped browser's session for 30 s (`RESUME_GRACE`), then ends its shell.
const SETTLE_WAIT: Duration = Duration::from_secs(90);
/// The same for the warm-up, whose first sessions leave lasting files (pooled connections).
const WARM_SETTLE_WAIT: Duration = Duration::from_secs(35);
/// Sessions opened at once.
const OPEN_CONCURRENCY: usize = 32;
/// Every `DROP_EVERY`th session closes its socket instead of ending its shell.
const DROP_EVERY: usize = 10;
/// Error messages kept in the report.
const KEEP_ERRORS: usize = 10;
/// End marker the echo program prints (written so the typed command line does not hold it).
const DONE: &[u8] = b"BENCH_42_DONE";

fn log(msg: impl AsRef<str>) {
    eprintln!("[soak {:>7.1}s] {}", started().elapsed().as_secs_f64(), msg.as_ref());
}

fn started() -> Instant {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *START.get_or_init(Instant::now)
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v.trim().parse().with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn percentile(sorted: &[u32], p: f64) -> Value {
    if sorted.is_empty() {
        return Value::Null;
    }
    let rank = (p / 100.0 * (sorted.len() - 1) as f64).round() as usize;
    json!(sorted[rank.min(sorted.len() - 1)])
}

/// The echo program for `count` keys: no echo, no line discipline, one byte in and out at a
/// time; then the end marker and the shell's exit (the server closes with 1000).
fn echo_program(count: usize) -> String {
    format!(
        "stty raw -echo; printf 'BENCH%s\\n' _GO; dd bs=1 count={count} 2>/dev/null; stty sane; echo BENCH_$((6*7))_DONE; exit\r"
    )
}

fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64)
}

/// One reading of both processes.
#[derive(Clone, Copy, Debug, Default)]
struct Reading {
    server_rss_kib: u64,
    server_fds: u64,
    agent_rss_kib: u64,
    agent_fds: u64,
    shells: u64,
}

impl Reading {
    fn take(server: u32, agent: u32) -> Self {
        Self {
            server_rss_kib: rss_kib(server).unwrap_or(0),
            server_fds: open_files(server),
            agent_rss_kib: rss_kib(agent).unwrap_or(0),
            agent_fds: open_files(agent),
            shells: procfs::children_of(agent).len() as u64,
        }
    }

    fn max(self, o: Self) -> Self {
        Self {
            server_rss_kib: self.server_rss_kib.max(o.server_rss_kib),
            server_fds: self.server_fds.max(o.server_fds),
            agent_rss_kib: self.agent_rss_kib.max(o.agent_rss_kib),
            agent_fds: self.agent_fds.max(o.agent_fds),
            shells: self.shells.max(o.shells),
        }
    }

    /// Whether open files and shells are back to `base` (memory is judged separately).
    fn files_back_to(&self, base: &Self) -> bool {
        self.server_fds <= base.server_fds && self.agent_fds <= base.agent_fds && self.shells <= base.shells
    }

    fn json(&self) -> Value {
        json!({
            "server_rss_kib": self.server_rss_kib,
            "server_fds": self.server_fds,
            "agent_rss_kib": self.agent_rss_kib,
            "agent_fds": self.agent_fds,
            "agent_shells": self.shells,
        })
    }
}

/// A reading after the processes settled: median of three, 200 ms apart, for the memory.
fn settled(server: u32, agent: u32) -> Reading {
    let mut reads: Vec<Reading> = (0..3)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(200));
            Reading::take(server, agent)
        })
        .collect();
    reads.sort_by_key(|r| r.server_rss_kib);
    let mut mid = reads[1];
    reads.sort_by_key(|r| r.agent_rss_kib);
    mid.agent_rss_kib = reads[1].agent_rss_kib;
    mid
}

/// Reads both processes every second in a thread while a round runs: the peak, and one
/// reading every 30 s for the timeline.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(Reading, Vec<Value>)>,
}

impl Sampler {
    fn start(server: u32, agent: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let began = Instant::now();
            let mut peak = Reading::default();
            let mut timeline = Vec::new();
            // Bounded: a round lasts at most a few hours.
            for tick in 0..100_000u64 {
                if flag.load(Ordering::Relaxed) {
                    break;
                }
                let now = Reading::take(server, agent);
                peak = peak.max(now);
                if tick % 30 == 0 {
                    let mut v = now.json();
                    v["t_s"] = json!(began.elapsed().as_secs());
                    timeline.push(v);
                }
                std::thread::sleep(Duration::from_secs(1));
            }
            (peak, timeline)
        });
        Self { stop, thread }
    }

    fn finish(self) -> (Reading, Vec<Value>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// What one session did.
#[derive(Default)]
struct Outcome {
    typed: u64,
    echoed: u64,
    /// (minute of the run, echo round trip in µs) per key.
    samples: Vec<(u16, u32)>,
    error: Option<String>,
    /// Ended by its shell's exit (close 1000) rather than by closing the socket.
    exited: bool,
    /// It closed its socket and the server answered with a close frame (RFC 6455 5.5.1)
    /// rather than just dropping the connection.
    close_answered: bool,
}

/// One session's plan.
#[derive(Clone, Copy)]
struct Plan {
    /// Its index (seeds its jitter, picks its keys).
    index: usize,
    /// Keys the echo program reads (an upper bound on the keys typed).
    count: usize,
    /// Close the socket at the end instead of ending the shell.
    drop: bool,
}

/// Opens a session on `url` and starts the echo program; returns once it reads keys.
async fn open_session(url: &str, count: usize) -> anyhow::Result<link::Ws> {
    let mut ws = link::open(url).await?;
    link::settle(&mut ws, Duration::from_millis(50), OPEN_WAIT).await.context("no shell prompt")?;
    ws.send(Message::binary(echo_program(count).into_bytes())).await?;
    let deadline = tokio::time::Instant::now() + OPEN_WAIT;
    let mut seen = Vec::new();
    for _ in 0..100_000 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("the echo program did not start within {OPEN_WAIT:?}"))?;
        match msg {
            Some(Ok(Message::Binary(data))) => seen.extend_from_slice(&data),
            Some(Ok(Message::Close(frame))) => bail!("closed while starting the echo program: {frame:?}"),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("socket error while starting the echo program: {e}"),
            None => bail!("socket ended while starting the echo program"),
        }
        if let Some(at) = seen.windows(8).position(|w| w == b"BENCH_GO") {
            let rest = &seen[at + 8..];
            ensure!(
                rest.iter().all(|b| b.is_ascii_whitespace()),
                "unexpected output after the echo program started: {:?}",
                String::from_utf8_lossy(rest)
            );
            return Ok(ws);
        }
    }
    bail!("the echo program never started")
}

/// Waits for exactly `key` to come back (nothing else may arrive as output meanwhile).
async fn echo_of(ws: &mut link::Ws, key: u8, n: u64) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + ECHO_WAIT;
    for _ in 0..1_000 {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("key {n} ({:?}) not echoed within {ECHO_WAIT:?}", key as char))?;
        match msg {
            Some(Ok(Message::Binary(data))) if data.is_empty() => {}
            Some(Ok(Message::Binary(data))) => {
                ensure!(
                    data[..] == [key],
                    "key {n}: typed {:?}, the echo was {:?}",
                    key as char,
                    String::from_utf8_lossy(&data)
                );
                return Ok(());
            }
            Some(Ok(Message::Close(frame))) => bail!("closed while waiting for key {n}'s echo: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("socket error while waiting for key {n}'s echo: {e}"),
            None => bail!("socket ended while waiting for key {n}'s echo"),
        }
    }
    bail!("key {n}: too many frames without its echo")
}

/// Types until `deadline` at a person's pace, checking every echo; then ends the session.
async fn run_session(
    mut ws: link::Ws,
    plan: Plan,
    t0: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> Outcome {
    let mut out = Outcome::default();
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.index as u64);
    let typed = async {
        for n in 0..plan.count as u64 {
            let gap = Duration::from_millis(rng.random_range(KEY_GAP_MS.0..=KEY_GAP_MS.1));
            let at = tokio::time::Instant::now() + gap;
            if at >= deadline {
                break;
            }
            tokio::time::sleep_until(at).await;
            let key = typing::key(plan.index + n as usize);
            let sent = tokio::time::Instant::now();
            ws.send(Message::binary(vec![key])).await.with_context(|| format!("cannot send key {n}"))?;
            out.typed += 1;
            echo_of(&mut ws, key, n).await?;
            out.echoed += 1;
            let minute = ((sent - t0).as_secs() / 60).min(u64::from(u16::MAX)) as u16;
            out.samples.push((minute, sent.elapsed().as_micros().min(u128::from(u32::MAX)) as u32));
        }
        anyhow::Ok(())
    }
    .await;
    let ended = match typed {
        Err(e) => Err(e),
        Ok(()) if plan.drop => close_socket(&mut ws).await.map(|answered| out.close_answered = answered),
        Ok(()) => {
            out.exited = true;
            end_shell(&mut ws, plan.count - out.typed as usize).await
        }
    };
    if let Err(e) = ended {
        out.error = Some(format!("session {}: {e:#}", plan.index));
    }
    out
}

/// Closes the socket as a browser tab does (1001), and waits for the server's answer: whether
/// it was a close frame (a connection dropped without one still ends the session).
async fn close_socket(ws: &mut link::Ws) -> anyhow::Result<bool> {
    let frame = CloseFrame { code: CloseCode::Away, reason: "".into() };
    ws.close(Some(frame)).await.context("cannot close the socket")?;
    let deadline = tokio::time::Instant::now() + END_WAIT;
    for _ in 0..100_000 {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => bail!("the server did not answer a close within {END_WAIT:?}"),
            Ok(Some(Ok(Message::Close(_)))) => return Ok(true),
            Ok(None) => return Ok(false),
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(tungstenite::Error::Protocol(
                tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
            )))) => return Ok(false),
            Ok(Some(Err(e))) => bail!("socket error while closing: {e}"),
        }
    }
    bail!("the socket never closed")
}

/// Feeds the echo program the keys it still reads (as one paste), checks their echo byte-exact
/// and the end marker, and waits for the close (1000) that follows the shell's exit.
async fn end_shell(ws: &mut link::Ws, rest: usize) -> anyhow::Result<()> {
    let filler = vec![b'.'; rest];
    for chunk in filler.chunks(1024) {
        ws.send(Message::binary(chunk.to_vec())).await.context("cannot send the rest of the keys")?;
    }
    let deadline = tokio::time::Instant::now() + END_WAIT;
    let mut got = Vec::with_capacity(rest + 64);
    for _ in 0..1_000_000 {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.with_context(|| {
            format!("no close within {END_WAIT:?} after the last keys ({} of {rest} bytes back)", got.len())
        })?;
        match msg {
            Some(Ok(Message::Binary(data))) => got.extend_from_slice(&data),
            Some(Ok(Message::Close(frame))) => {
                let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                ensure!(got.starts_with(&filler), "the last {rest} keys did not come back byte-exact");
                ensure!(typing::find(&got[rest..], DONE), "the echo program's end marker never came");
                ensure!(code == 1000, "the shell's exit closed the socket with {code}, not 1000: {frame:?}");
                return Ok(());
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => bail!("socket error at the end: {e}"),
            None => bail!("socket ended without a close frame"),
        }
    }
    bail!("too many frames at the end")
}

/// One round: open `n` sessions, type for `seconds`, close them, wait for the baseline.
fn round(
    rt: &tokio::runtime::Runtime,
    fx: &Fixture,
    links: &[Link],
    n: usize,
    seconds: u64,
    settle_wait: Duration,
) -> anyhow::Result<Value> {
    let (server, agent) = (fx.server_pid(), fx.agent_pid());
    let base = settled(server, agent);
    log(format!("baseline: {:?}", base));
    let sampler = Sampler::start(server, agent);
    let cpu0 = (cpu_seconds(server), cpu_seconds(agent));
    let count = (seconds * 1000 / KEY_GAP_MS.0) as usize + 2;

    log(format!("opening {n} sessions over {} links", links.len()));
    let opening = Instant::now();
    let urls: Vec<String> = links.iter().map(Link::socket_url).collect();
    let opened: Vec<(usize, anyhow::Result<link::Ws>)> = rt.block_on(async {
        futures_util::stream::iter(0..n)
            .map(|i| {
                let url = urls[i % urls.len()].clone();
                async move { (i, open_session(&url, count).await) }
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect()
            .await
    });
    let open_seconds = opening.elapsed().as_secs_f64();
    let mut errors: Vec<String> = Vec::new();
    let mut error_count = 0u64;
    let mut sockets = Vec::new();
    for (i, ws) in opened {
        match ws {
            Ok(ws) => sockets.push((i, ws)),
            Err(e) => {
                error_count += 1;
                if errors.len() < KEEP_ERRORS {
                    errors.push(format!("session {i} did not open: {e:#}"));
                }
            }
        }
    }
    let at_open = Reading::take(server, agent);
    log(format!("{} sessions open in {open_seconds:.1} s ({error_count} failed): {at_open:?}", sockets.len()));

    log(format!("typing for {seconds} s"));
    let typing_started = Instant::now();
    let cpu_typing0 = (cpu_seconds(server), cpu_seconds(agent));
    let outcomes: Vec<Outcome> = rt.block_on(async {
        let t0 = tokio::time::Instant::now();
        let deadline = t0 + Duration::from_secs(seconds);
        let tasks: Vec<_> = sockets
            .into_iter()
            .map(|(i, ws)| {
                let plan = Plan { index: i, count, drop: i % DROP_EVERY == DROP_EVERY - 1 };
                tokio::spawn(run_session(ws, plan, t0, deadline))
            })
            .collect();
        let mut outcomes = Vec::with_capacity(tasks.len());
        for t in tasks {
            outcomes
                .push(t.await.unwrap_or_else(|e| Outcome { error: Some(format!("task: {e}")), ..Default::default() }));
        }
        outcomes
    });
    let typing_seconds = typing_started.elapsed().as_secs_f64();
    let cpu_typing = (cpu_seconds(server) - cpu_typing0.0, cpu_seconds(agent) - cpu_typing0.1);
    log(format!("typing and closing done in {typing_seconds:.1} s"));

    let (mut typed, mut echoed, mut exited, mut dropped, mut answered) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let minutes = (seconds.div_ceil(60)).max(1) as usize;
    let mut per_minute: Vec<Vec<u32>> = vec![Vec::new(); minutes];
    for o in &outcomes {
        typed += o.typed;
        echoed += o.echoed;
        if o.exited {
            exited += 1;
        } else {
            dropped += 1;
        }
        answered += u64::from(o.close_answered);
        for &(m, us) in &o.samples {
            per_minute[(m as usize).min(minutes - 1)].push(us);
        }
        if let Some(e) = &o.error {
            error_count += 1;
            if errors.len() < KEEP_ERRORS {
                errors.push(e.clone());
            }
        }
    }
    drop(outcomes);
    let echo: Vec<Value> = per_minute
        .iter_mut()
        .enumerate()
        .map(|(m, s)| {
            s.sort_unstable();
            json!({"minute": m + 1, "keys": s.len(), "p50_us": percentile(s, 50.0), "p99_us": percentile(s, 99.0),
                   "max_us": s.last()})
        })
        .collect();
    let mut all: Vec<u32> = per_minute.concat();
    all.sort_unstable();

    log("waiting for open files and shells to return to the baseline");
    let closed = Instant::now();
    let back = fixture::wait_until(settle_wait, "open files and shells back to the baseline", || {
        Ok(Reading::take(server, agent).files_back_to(&base))
    });
    let back_seconds = closed.elapsed().as_secs_f64();
    let (peak, timeline) = sampler.finish();
    let after = settled(server, agent);
    log(format!("after: {after:?} ({})", if back.is_ok() { "back" } else { "NOT back" }));
    let p99 = |v: &Value| v["p99_us"].as_f64().unwrap_or(f64::NAN);
    let (first, last) = (&echo[0], &echo[echo.len() - 1]);
    let stable = p99(last) <= 2.0 * p99(first).max(1_000.0);
    Ok(json!({
        "sessions": n,
        "links": links.len(),
        "seconds": seconds,
        "open_seconds": (open_seconds * 10.0).round() / 10.0,
        "typing_and_closing_seconds": (typing_seconds * 10.0).round() / 10.0,
        "errors": {"count": error_count, "first": errors},
        "keys_typed": typed,
        "keys_echoed": echoed,
        "keys_per_second": (typed as f64 / seconds as f64 * 10.0).round() / 10.0,
        "ended": {"shell_exit_1000": exited, "socket_closed_1001": dropped, "close_answered_by_server": answered},
        "echo_all": {"keys": all.len(), "p50_us": percentile(&all, 50.0), "p99_us": percentile(&all, 99.0), "max_us": all.last()},
        "echo_per_minute": echo,
        "echo_first_minute": echo[0].clone(),
        "echo_last_minute": echo[echo.len() - 1].clone(),
        "echo_p99_stable": stable,
        "cpu_seconds_round": {"server": cpu_seconds(server) - cpu0.0, "agent": cpu_seconds(agent) - cpu0.1},
        "cpu_us_per_key": {
            "server": (cpu_typing.0 * 1e6 / typed.max(1) as f64).round(),
            "agent": (cpu_typing.1 * 1e6 / typed.max(1) as f64).round(),
        },
        "baseline": base.json(),
        "at_open": at_open.json(),
        "peak": peak.json(),
        "after": after.json(),
        "files_and_shells_back": back.is_ok(),
        "back_within_seconds": (back_seconds * 10.0).round() / 10.0,
        "timeline": timeline,
    }))
}

fn main() -> anyhow::Result<()> {
    started();
    let seconds = env_usize("CMDOP_SOAK_SECONDS", 600)? as u64;
    let sessions = env_usize("CMDOP_SOAK_SESSIONS", 1_000)?;
    let round2 = env_usize("CMDOP_SOAK_ROUND2_SECONDS", 30)? as u64;
    let link_count = env_usize("CMDOP_SOAK_LINKS", 10)?.clamp(1, sessions.max(1));
    ensure!(sessions > 0 && seconds > 0, "CMDOP_SOAK_SESSIONS and CMDOP_SOAK_SECONDS must be above 0");
    let nofile = fixture::raise_nofile();
    // Each session holds a socket in this process and in the server, a PTY in the agent.
    ensure!(
        nofile >= sessions as u64 + 256,
        "RLIMIT_NOFILE is {nofile}: too low for {sessions} sessions; raise the hard limit (ulimit -Hn)"
    );
    log(format!("{sessions} sessions, {seconds} s (second round {round2} s), RLIMIT_NOFILE {nofile}"));
    let flags = fixture::session_limits(sessions, link_count);
    let fx = Fixture::with_agent_and(&flags)?;
    log(format!("server pid {}, agent pid {}", fx.server_pid(), fx.agent_pid()));
    let links: Vec<Link> = (0..link_count).map(|_| fx.share(&fx.machine_id, "24h")).collect::<Result<_, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;

    // A few sessions first, so that lazily built state is in the baseline, not in the "leak".
    log("warm-up round");
    let warm = round(&rt, &fx, &links, link_count.min(sessions), 5, WARM_SETTLE_WAIT)?;
    let first = round(&rt, &fx, &links, sessions, seconds, SETTLE_WAIT)?;
    let second = if round2 > 0 { round(&rt, &fx, &links, sessions, round2, SETTLE_WAIT)? } else { Value::Null };
    let errors = |r: &Value| r["errors"]["count"].as_u64().unwrap_or(0);
    // The warm-up's own files are not judged: the first sessions open lasting ones (pooled
    // database connections); the rounds after it must each return to their baseline.
    let ok = errors(&warm) == 0
        && [&first, &second]
            .iter()
            .filter(|r| !r.is_null())
            .all(|r| errors(r) == 0 && r["files_and_shells_back"] == true && r["keys_typed"] == r["keys_echoed"])
        && first["echo_p99_stable"] == true;
    let nice = std::process::id();
    let report = json!({
        "bench": "soak",
        "binary": fixture::cmdop(),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "nice": std::fs::read_to_string(format!("/proc/{nice}/stat")).ok()
            .and_then(|s| s.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().nth(16).map(str::to_string))),
        "load_average_end": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "rlimit_nofile": nofile,
        "key_gap_ms": [KEY_GAP_MS.0, KEY_GAP_MS.1],
        "sessions_closing_socket": format!("1 in {DROP_EVERY}"),
        "stable_means": "last minute's echo p99 at most twice the first minute's (or 2 ms)",
        "warmup": warm,
        "round1": first,
        "round2": second,
        "ok": ok,
    });
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Ok(path) = std::env::var("CMDOP_BENCH_OUT") {
        std::fs::write(&path, &text).with_context(|| format!("cannot write {path}"))?;
    }
    if !ok {
        log(format!("NOT OK: see errors and the baseline figures above\n{}", fx.log_tail()));
    }
    rt.shutdown_background();
    Ok(())
}
