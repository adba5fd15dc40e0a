//! Faults, on real processes: a fault-injecting proxy (tests/common/faults.rs) between agent
//! and server or between browser and server cuts, black-holes and throttles the stream; the
//! server is killed with SIGKILL mid-session. What must hold: a persistent session and a
//! link's page come back with no byte lost or doubled (offsets prove it), a one-shot command
//! through a cut stream ends with a clear error instead of hanging, and a restarted server
//! keeps sessions, live links and revocations.

mod common;
mod share_support;

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use common::{FaultProxy, TestAgent, TestServer, wait_child, wait_until};
use share_support::ws::{WsClient, socket_url};
use share_support::{Fixture, Link, get, terminal_lines};

/// How long a command typed into a shell may take to show its output.
const SHELL: Duration = Duration::from_secs(15);
/// Test servers heartbeat every second: offline after three missed, plus scheduling slack.
const OFFLINE_WITHIN: Duration = Duration::from_secs(6);
/// The agent's reconnect back-off is short at first; this bounds it with slack.
const BACK_ONLINE_WITHIN: Duration = Duration::from_secs(20);
/// Lines the counting shell prints.
const COUNT: u32 = 300;

/// A server, and an agent that reaches it only through a fault proxy.
struct Proxied {
    agent: TestAgent,
    proxy: FaultProxy,
    server: TestServer,
}

impl Proxied {
    fn start(name: &str) -> anyhow::Result<Self> {
        let server = TestServer::start()?;
        let proxy = FaultProxy::start(server.addr())?;
        let agent = TestAgent::start_via(&server, name, &proxy.url())?;
        Ok(Self { agent, proxy, server })
    }

    fn share(&self, flags: &[&str]) -> anyhow::Result<Link> {
        let mut args = vec!["connect", "share", self.agent.machine_id(), "--ttl", "1h", "--json"];
        args.extend_from_slice(flags);
        self.server.cli().run(&args)?.expect_code(0)?.json()
    }

    fn online(&self) -> anyhow::Result<bool> {
        self.server.cli().is_online(self.agent.machine_id())
    }
}

/// Starts a shell loop that prints `n1` ... `nCOUNT`, one line every 20 ms, then `counted`.
fn start_counting(ws: &WsClient) -> anyhow::Result<()> {
    let from = ws.output_len();
    ws.type_line(&format!("for i in $(seq 1 {COUNT}); do echo n$i; sleep 0.02; done; echo counted"))?;
    ws.wait_line_since(from, SHELL, "the count to start", |l| l == "n1").map(drop)
}

/// Waits until the socket has ended, with a close frame or (a killed peer) without one.
fn wait_ended(ws: &WsClient) -> anyhow::Result<()> {
    match ws.wait_closed(SHELL) {
        Ok(_) => Ok(()),
        Err(e) if format!("{e:#}").contains("without a close frame") => Ok(()),
        Err(e) => Err(e),
    }
}

/// The numbers of the `nI` lines of a terminal transcript, in order.
fn counted_lines(text: &str) -> Vec<u32> {
    terminal_lines(text).iter().filter_map(|l| l.strip_prefix('n')?.parse().ok()).collect()
}

/// Every number 1..=COUNT exactly once and in order: nothing lost, nothing doubled.
fn ensure_whole_count(numbers: &[u32]) -> anyhow::Result<()> {
    let expected: Vec<u32> = (1..=COUNT).collect();
    if numbers == expected.as_slice() {
        return Ok(());
    }
    let doubled = numbers.windows(2).filter(|w| w[1] <= w[0]).count();
    let missing = expected.iter().filter(|n| !numbers.contains(n)).count();
    bail!("{} lines, {missing} missing, {doubled} out of order or doubled: {numbers:?}", numbers.len())
}

/// Reopens the link's socket at `session`/`offset` once the machine answers again; the
/// replay must start exactly there. (The socket's session id may be new: the shell is the
/// link's named persistent session, which the counted lines prove is the same.)
fn resume(link_url: &str, session: &str, offset: u64) -> anyhow::Result<WsClient> {
    let url = socket_url(link_url, &format!("session={session}&offset={offset}"));
    let mut last = String::new();
    let deadline = Instant::now() + BACK_ONLINE_WITHIN;
    while Instant::now() < deadline {
        match WsClient::open_url(&url, None) {
            Ok(ws) => match ws.wait_ready() {
                Ok((_, at)) => {
                    ensure!(at == offset, "replay starts at {at}, asked for {offset}");
                    return Ok(ws);
                }
                Err(e) => last = format!("{e:#}"),
            },
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!("the link's session did not resume within {BACK_ONLINE_WITHIN:?}: {last}")
}

/// What a socket received before it closed, and the offset right after it.
fn take_output(ws: WsClient, start: u64) -> (String, u64) {
    let had = ws.drop_abruptly();
    let next = start + had.len() as u64;
    (String::from_utf8_lossy(&had).into_owned(), next)
}

#[test]
fn exec_through_a_cut_agent_stream_ends_with_a_clear_error_instead_of_hanging() -> anyhow::Result<()> {
    let p = Proxied::start("cut-exec")?;
    let mut cmd = p.server.cli().command(&common::exec_args(
        p.agent.machine_id(),
        &[],
        &["sh", "-c", "echo started; sleep 60; echo never"],
    ));
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let mut stdout = child.stdout.take().context("no stdout")?;
    let mut first = [0u8; 8];
    stdout.read_exact(&mut first)?;
    ensure!(&first == b"started\n", "unexpected first output {first:?}");

    let cut_at = Instant::now();
    p.proxy.cut();
    let status = wait_child(&mut child, Duration::from_secs(20)).context("exec hung after its stream was cut")?;
    let mut stderr = String::new();
    child.stderr.take().context("no stderr")?.read_to_string(&mut stderr)?;
    ensure!(status.code() == Some(1), "exit {status} after a cut, stderr {stderr:?}");
    ensure!(
        stderr.contains("went away") || stderr.contains("offline"),
        "the error does not say what happened: {stderr:?}"
    );
    ensure!(cut_at.elapsed() < Duration::from_secs(15), "took {:?} to notice", cut_at.elapsed());
    Ok(())
}

#[test]
fn persistent_session_survives_a_cut_agent_stream_with_nothing_lost_or_doubled() -> anyhow::Result<()> {
    let p = Proxied::start("cut-session")?;
    let link = p.share(&["--session", "through-a-cut"])?;
    let (ws, session, start) = WsClient::open_ready(&link.url)?;
    start_counting(&ws)?;

    p.proxy.cut();
    ws.wait_closed(SHELL).context("the page's socket should close when the machine goes away")?;
    let (before, offset) = take_output(ws, start);
    wait_until(BACK_ONLINE_WITHIN, "the agent to reconnect", || p.online())?;

    let back = resume(&link.url, &session, offset)?;
    back.wait_exact_line(0, "counted", SHELL)?;
    ensure_whole_count(&counted_lines(&(before + &back.output_text())))
}

#[test]
fn black_holed_agent_is_offline_within_three_heartbeats_and_its_session_resumes_intact() -> anyhow::Result<()> {
    let p = Proxied::start("black-hole")?;
    let link = p.share(&["--session", "through-a-black-hole"])?;
    let (ws, session, start) = WsClient::open_ready(&link.url)?;
    start_counting(&ws)?;

    let holed_at = Instant::now();
    p.proxy.black_hole(true);
    wait_until(OFFLINE_WITHIN, "the machine to be seen offline", || Ok(!p.online()?))?;
    let seen_offline = holed_at.elapsed();
    ws.wait_closed(SHELL).context("the page's socket should close when the machine goes offline")?;
    let (before, offset) = take_output(ws, start);
    let hold = Duration::from_secs(20).saturating_sub(holed_at.elapsed());
    std::thread::sleep(hold); // the fault itself: 20 s without a byte either way

    p.proxy.black_hole(false);
    let lifted = Instant::now();
    wait_until(BACK_ONLINE_WITHIN, "the agent to come back", || p.online())?;
    let back = resume(&link.url, &session, offset)?;
    back.wait_exact_line(0, "counted", SHELL)?;
    ensure_whole_count(&counted_lines(&(before + &back.output_text())))?;
    eprintln!("offline seen after {seen_offline:?}; back online {:?} after the hole lifted", lifted.elapsed());
    Ok(())
}

#[test]
fn browser_socket_cut_mid_stream_resumes_with_nothing_lost_or_doubled() -> anyhow::Result<()> {
    let fx = Fixture::start("browser-cut")?;
    let link = fx.share("1h", &["--session", "browser-cut"])?;
    let proxy = FaultProxy::start(fx.server.addr())?;
    let via_proxy = link.url.replace(fx.server.url(), &proxy.url());
    let (ws, session, start) = WsClient::open_ready(&via_proxy)?;
    start_counting(&ws)?;

    proxy.throttle(Some(4 * 1024)); // a slow phone line first...
    ws.wait_line_since(0, SHELL, "some output through the slow line", |l| l == "n20")?;
    proxy.cut(); // ...then it drops
    wait_ended(&ws)?;
    let (before, offset) = take_output(ws, start);
    proxy.throttle(None);

    let back = resume(&via_proxy, &session, offset)?;
    back.wait_exact_line(0, "counted", SHELL)?;
    ensure_whole_count(&counted_lines(&(before + &back.output_text())))
}

#[test]
fn server_killed_mid_session_comes_back_with_sessions_links_and_revocations_intact() -> anyhow::Result<()> {
    let mut fx = Fixture::start("kill-9")?;
    let live = fx.share("1h", &["--session", "survivor"])?;
    let revoked = fx.share("1h", &[])?;
    fx.server.cli().run(&["connect", "unshare", &revoked.id])?.expect_code(0)?;
    let (ws, _session, _start) = WsClient::open_ready(&live.url)?;
    ws.type_line("echo before-the-crash-$((6*7))")?;
    ws.wait_exact_line(0, "before-the-crash-42", SHELL)?;

    fx.server.restart()?; // SIGKILL, then the same data folder and port
    wait_ended(&ws).context("the socket of a killed server must end")?;
    wait_until(BACK_ONLINE_WITHIN, "the agent to reconnect to the restarted server", || {
        fx.server.cli().is_online(fx.machine())
    })?;

    ensure!(get(&live.url)?.status == 200, "a live link must still verify after a crash");
    ensure!(get(&revoked.url)?.status == 410, "a revoked link must stay revoked after a crash");
    let (again, _, _) = WsClient::open_ready(&live.url)?;
    again.wait_exact_line(0, "before-the-crash-42", SHELL).context("the persistent session's ring is intact")?;
    let rows = fx.server.cli().run(&["connect", "shares", "--json"])?.expect_code(0)?;
    let rows: Vec<serde_json::Value> = rows.json()?;
    let row = |id: &str| rows.iter().find(|r| r["id"] == id).cloned().unwrap_or_default();
    ensure!(row(&revoked.id)["revoked_at"].is_string(), "the revocation is on record: {rows:?}");
    ensure!(row(&live.id)["revoked_at"].is_null(), "the live link is not revoked: {rows:?}");
    Ok(())
}
