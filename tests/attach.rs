//! Interactive attach and persistent sessions, end to end: a real `cmdop connect` in a real
//! terminal (a PTY the test holds), against a real server and agent on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "attach/numbered.rs"]
mod numbered;
#[path = "attach/term.rs"]
mod term;

use std::io::{Read, Write};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, ensure};
use serde::Deserialize;

use common::{Cli, TestAgent, TestServer, wait_until};
use term::Term;

/// Deadline of one expected piece of output.
const SOON: Duration = Duration::from_secs(20);
/// Deadline of a whole multi-megabyte stream.
const STREAM: Duration = Duration::from_secs(90);
/// One MiB.
const MIB: usize = 1 << 20;
/// The numbered stream: 32 steps of 15 000 numbers (480 000 lines, about 3.4 MiB through a
/// PTY), a pause between steps so it takes a few seconds, then a marker file and line.
const STEPS: u64 = 32;
const PER_STEP: u64 = 15_000;
const LAST: u64 = STEPS * PER_STEP;

fn producer(pause: &str, done: &std::path::Path) -> String {
    format!(
        "for i in $(seq 0 {}); do seq $((i*{PER_STEP}+1)) $(((i+1)*{PER_STEP})); sleep {pause}; done; touch {}; echo END-$((1+1))",
        STEPS - 1,
        done.display()
    )
}

struct Setup {
    server: TestServer,
    agent: TestAgent,
}

impl Setup {
    fn start(name: &str) -> anyhow::Result<Self> {
        let server = TestServer::start()?;
        let agent = TestAgent::start(&server, name)?;
        Ok(Self { server, agent })
    }

    fn machine(&self) -> &str {
        self.agent.machine_id()
    }

    fn home(&self) -> &std::path::Path {
        self.server.cli().home()
    }

    /// `cmdop connect MACHINE [EXTRA...]` in a terminal of `cols` x `rows`.
    fn connect(&self, extra: &[&str], cols: u16, rows: u16) -> anyhow::Result<Term> {
        let mut args = vec!["connect", self.machine()];
        args.extend_from_slice(extra);
        Term::spawn(self.home(), &args, cols, rows)
    }
}

#[test]
fn attach_shows_the_banner_runs_commands_and_exits_with_the_shell_code() -> anyhow::Result<()> {
    let s = Setup::start("attach-box")?;
    let mut t = s.connect(&[], 90, 30)?;
    t.expect("resolving... ok", SOON)?;
    t.expect("dialing relay... ok", SOON)?;
    t.expect("attached - Ctrl-D to detach", SOON)?;
    t.line("echo hi-$((6*7))")?;
    t.expect("hi-42", SOON)?;
    t.line("stty size")?;
    t.expect("30 90", SOON)?;
    t.line("exit 7")?;
    assert_eq!(t.wait(SOON)?, 7, "the shell's exit code is cmdop's");
    Ok(())
}

#[test]
fn ctrl_c_reaches_the_remote_process_resize_reaches_stty_and_ctrl_d_detaches() -> anyhow::Result<()> {
    let s = Setup::start("keys-box")?;
    let mut t = s.connect(&[], 80, 24)?;
    t.expect("attached - Ctrl-D to detach", SOON)?;
    t.line("sleep 100; echo not-interrupted")?;
    std::thread::sleep(Duration::from_millis(500)); // let the shell start it
    t.send(b"\x03")?;
    t.line("echo rc=$?")?;
    t.expect("rc=130", SOON).context("Ctrl-C should kill the remote sleep with SIGINT")?;

    t.resize(123, 41)?;
    let mut resized = false;
    for _ in 0..20 {
        t.line("stty size")?;
        if t.expect("41 123", Duration::from_millis(750)).is_ok() {
            resized = true;
            break;
        }
    }
    ensure!(resized, "the new window size never reached the remote PTY:\n{}", t.text());

    t.send(b"\x04")?;
    assert_eq!(t.wait(SOON)?, 0, "Ctrl-D detaches locally (CONTRACT.md)");
    Ok(())
}

/// The agent stops reading the PTY after a small read that emptied it and waits for the next
/// arrival (src/agent/pty.rs). No piece of output may wait for a later one: each of these
/// pieces is followed by silence, a small one after a burst included.
#[test]
fn output_in_small_pieces_and_after_a_burst_arrives_without_waiting_for_more() -> anyhow::Result<()> {
    let s = Setup::start("pieces-box")?;
    let mut t = s.connect(&[], 100, 30)?;
    t.expect("attached - Ctrl-D to detach", SOON)?;
    t.line("for i in $(seq 1 20); do printf 'piece-%d.' $i; sleep 0.05; done; sleep 3; printf 'alone-%d' $((6*7)); sleep 60")?;
    for i in 1..=20 {
        t.expect(&format!("piece-{i}."), SOON)?;
    }
    // Printed 3 s after the last piece, then nothing for a minute: it arrives on its own.
    t.expect("alone-42", Duration::from_secs(10))?;
    t.send(b"\x03")?;
    t.line("seq 1 $((300*1000)); sleep 3; printf 'after-burst-%d' $((6*7)); sleep 60")?;
    t.expect("300000", STREAM)?;
    t.expect("after-burst-42", Duration::from_secs(10))?;
    t.send(b"\x03")?;
    Ok(())
}

#[test]
fn a_persistent_session_replays_its_last_mib_after_a_detach_with_no_gap() -> anyhow::Result<()> {
    let s = Setup::start("persist-box")?;
    let done = s.server.temp_dir().join("stream-done");
    let mut t = s.connect(&["--session", "stream"], 100, 30)?;
    t.expect("attached to new session \"stream\"", SOON)?;
    t.line(&producer("0.1", &done))?;
    t.expect("\n60000\r", STREAM)?; // mid-stream
    t.send(b"~.")?; // the last key typed was Enter, so this is the escape
    t.expect("detached from session \"stream\"", SOON)?;
    assert_eq!(t.wait(SOON)?, 0);

    wait_until(STREAM, "the detached session to finish the stream", || Ok(done.exists()))?;
    let mut again = s.connect(&["--session", "stream"], 100, 30)?;
    again.expect("attached to session \"stream\"", SOON)?;
    let start = again.expect("(the session lives on)\r\n", SOON)?;
    again.expect("END-2", STREAM)?;
    let replay = again.output()[start..].to_vec();
    let seen = numbered::check(&replay, &[], None, LAST, "END-2")?;
    ensure!(seen.bytes >= MIB - 8 * 1024, "only {} bytes of the last MiB were replayed ({seen:?})", seen.bytes);
    ensure!(seen.bytes <= MIB, "more than the ring was replayed ({seen:?})");
    again.send(b"~.")?;
    assert_eq!(again.wait(SOON)?, 0);
    Ok(())
}

#[test]
fn a_persistent_session_survives_a_server_restart_mid_stream() -> anyhow::Result<()> {
    let mut s = Setup::start("restart-box")?;
    let done = s.server.temp_dir().join("restart-done");
    let mut t = s.connect(&["--session", "survivor"], 100, 30)?;
    let start = t.expect("attached to new session \"survivor\"", SOON)?;
    t.line(&producer("0.2", &done))?;
    t.expect("\n30000\r", STREAM)?;
    s.server.restart()?;
    t.expect("[cmdop: reconnected]", Duration::from_secs(40))?;
    t.expect("END-2", STREAM)?;
    let (text, gaps) = numbered::strip_notices(&t.output()[start..]);
    let seen = numbered::check(&text, &gaps, Some("1"), LAST, "END-2")?;
    ensure!(seen.first == 1, "the stream did not start at 1: {seen:?}");
    // Either nothing was lost, or the loss was reported and the last MiB still arrived whole.
    ensure!(gaps.len() <= 1, "more than one gap across one restart: {seen:?}");
    ensure!(seen.tail_bytes >= MIB, "less than the last MiB arrived after the gap: {seen:?}");
    t.send(b"~.")?;
    assert_eq!(t.wait(SOON)?, 0);
    let sessions = sessions(&s, None)?;
    ensure!(sessions.iter().any(|x| x.name.as_deref() == Some("survivor")), "the session is gone: {sessions:?}");
    Ok(())
}

/// A `cmdop connect` whose stdout is a pipe nobody reads.
fn stalled_client(s: &Setup, extra: &[&str]) -> anyhow::Result<Child> {
    let mut args = vec!["connect", s.machine()];
    args.extend_from_slice(extra);
    let mut cmd = s.server.cli().command(&args);
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    Ok(cmd.spawn()?)
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    Ok(line.split_whitespace().nth(1).context("no number")?.parse()?)
}

#[test]
fn a_client_that_stops_reading_keeps_relay_memory_bounded() -> anyhow::Result<()> {
    let s = Setup::start("stall-box")?;
    let mut client = stalled_client(&s, &[])?;
    let mut stdin = client.stdin.take().context("no stdin")?;
    // A producer far faster than any terminal: unbounded buffering would show in seconds.
    stdin.write_all(b"yes 0123456789abcdefghijklmnopqrstuvwxyz | head -c 2000000000\n")?;
    stdin.flush()?;
    std::thread::sleep(Duration::from_secs(2));
    let before = rss_kib(s.server.pid())?;
    let mut peak = before;
    for _ in 0..12 {
        std::thread::sleep(Duration::from_millis(500));
        peak = peak.max(rss_kib(s.server.pid())?);
    }
    let _ = client.kill();
    let _ = client.wait();
    let growth_kib = peak.saturating_sub(before);
    ensure!(growth_kib < 4 * 1024, "relay memory grew by {growth_kib} KiB while a client stalled (from {before} KiB)");
    Ok(())
}

/// Reads a child's pipe on a thread into a shared buffer.
fn drain_into(mut pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    std::thread::spawn(move || {
        let mut chunk = vec![0u8; 64 * 1024];
        while let Ok(n) = pipe.read(&mut chunk) {
            if n == 0 {
                return;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn contains(buf: &Arc<Mutex<Vec<u8>>>, needle: &str) -> bool {
    buf.lock().unwrap().windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn clients_share_a_session_and_a_stalled_one_holds_nobody_back() -> anyhow::Result<()> {
    let s = Setup::start("pair-box")?;
    let mut a = s.connect(&["--session", "pair"], 100, 30)?;
    a.expect("attached to new session \"pair\"", SOON)?;
    let mut b = stalled_client(&s, &["--session", "pair"])?;
    let b_err = drain_into(b.stderr.take().context("no stderr")?);
    wait_until(SOON, "the second client to attach", || Ok(contains(&b_err, "attached to session \"pair\"")))?;

    a.line("seq 1 600000; echo PAIR-$((2+2))")?;
    a.expect("PAIR-4", STREAM).context("the reading client must not wait for the stalled one")?;

    let b_out = drain_into(b.stdout.take().context("no stdout")?);
    wait_until(STREAM, "the stalled client to catch up", || Ok(contains(&b_out, "PAIR-4")))?;
    ensure!(contains(&b_err, "bytes of output were dropped"), "the stalled client was not told about its gap");
    let _ = b.kill();
    let _ = b.wait();
    a.send(b"~.")?;
    assert_eq!(a.wait(SOON)?, 0);
    Ok(())
}

/// A row of `cmdop connect sessions --json`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct SessionRow {
    id: String,
    name: Option<String>,
    machine_id: String,
    hostname: String,
    persistent: bool,
    created_at: String,
    last_attached_at: String,
    attached: u32,
}

fn sessions(s: &Setup, machine: Option<&str>) -> anyhow::Result<Vec<SessionRow>> {
    sessions_of(s.server.cli(), machine)
}

fn sessions_of(cli: &Cli, machine: Option<&str>) -> anyhow::Result<Vec<SessionRow>> {
    let mut args = vec!["connect", "sessions"];
    args.extend(machine);
    args.push("--json");
    cli.run(&args)?.expect_code(0)?.json()
}

#[test]
fn sessions_are_listed_and_kill_ends_one() -> anyhow::Result<()> {
    let s = Setup::start("list-box")?;
    let mut t = s.connect(&["--session", "alpha"], 80, 24)?;
    t.expect("attached to new session \"alpha\"", SOON)?;
    let listed = sessions(&s, Some(s.machine()))?;
    let alpha = listed.iter().find(|x| x.name.as_deref() == Some("alpha")).context("alpha not listed")?;
    ensure!(alpha.persistent && alpha.attached == 1 && alpha.machine_id == s.machine(), "{alpha:?}");
    t.send(b"~.")?;
    assert_eq!(t.wait(SOON)?, 0);
    wait_until(SOON, "alpha to show no attached client", || {
        Ok(sessions(&s, None)?.iter().any(|x| x.name.as_deref() == Some("alpha") && x.attached == 0))
    })?;

    s.server.cli().run(&["connect", "kill", s.machine(), "alpha"])?.expect_code(0)?;
    wait_until(SOON, "alpha to end", || Ok(sessions(&s, None)?.iter().all(|x| x.name.as_deref() != Some("alpha"))))?;
    let again = s.server.cli().run(&["connect", "kill", s.machine(), "alpha"])?;
    assert_eq!(again.code, 2, "no such session: {again}");
    Ok(())
}

#[test]
fn a_one_shot_shell_ends_when_its_client_disconnects() -> anyhow::Result<()> {
    let s = Setup::start("oneshot-box")?;
    let mut t = s.connect(&[], 80, 24)?;
    t.expect("attached - Ctrl-D to detach", SOON)?;
    ensure!(sessions(&s, None)?.len() == 1, "the one-shot shell is listed while attached");
    t.send(b"~.")?;
    t.expect("disconnected; the shell was ended", SOON)?;
    assert_eq!(t.wait(SOON)?, 0);
    wait_until(SOON, "the one-shot shell to end", || Ok(sessions(&s, None)?.is_empty()))?;
    Ok(())
}

#[test]
fn a_one_shot_shell_survives_a_server_restart_and_the_cli_reattaches() -> anyhow::Result<()> {
    let mut s = Setup::start("blip-box")?;
    let mut t = s.connect(&[], 80, 24)?;
    t.expect("attached - Ctrl-D to detach", SOON)?;
    t.line("export MARK=kept-$((40+2)); echo set-$((1+1))")?;
    t.expect("set-2", SOON)?; // keys in flight when a connection drops may be lost, output never
    s.server.restart()?;
    t.expect("[cmdop: reconnected]", Duration::from_secs(40))?;
    t.line("echo $MARK")?;
    t.expect("kept-42", SOON).context("the same shell, with its variable, is reattached")?;
    t.line("exit 5")?;
    assert_eq!(t.wait(SOON)?, 5);
    Ok(())
}

#[test]
fn without_a_machine_and_a_terminal_connect_asks_for_a_name() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let run = server.cli().run(&["connect"])?;
    assert_eq!(run.code, 2, "{run}");
    ensure!(run.stderr.contains("name a machine"), "{run}");
    Ok(())
}

#[test]
fn the_picker_finds_a_machine_by_display_name_and_attaches() -> anyhow::Result<()> {
    let s = Setup::start("picker target")?;
    let mut t = Term::spawn(s.home(), &["connect"], 100, 30)?;
    t.expect("pick a machine", SOON)?;
    t.send(b"pickr targ")?;
    std::thread::sleep(Duration::from_millis(300));
    t.send(b"\r")?;
    t.expect("attached - Ctrl-D to detach", SOON)?;
    t.line("exit 3")?;
    assert_eq!(t.wait(SOON)?, 3);
    Ok(())
}

/// A process killed (SIGKILL) when the test ends, however it ends.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn an_idle_persistent_session_ends_after_the_agents_session_idle() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let token = server.cli().enrollment_token()?;
    let dir = tempfile::Builder::new().prefix("cmdop-idle-agent-").tempdir()?;
    let mut cmd = server.agent_command(&dir.path().join("state"), &dir.path().join("agent.log"))?;
    cmd.args(["--token", &token, "--display-name", "idle-box", "--session-idle", "5s"]);
    let _agent = KillOnDrop(cmd.spawn()?);
    let mut machine = None;
    wait_until(SOON, "the agent to be online", || {
        machine = server.cli().machines()?.into_iter().find(|m| m.online).map(|m| m.id);
        Ok(machine.is_some())
    })?;
    let machine = machine.context("no machine")?;
    let mut t = Term::spawn(server.cli().home(), &["connect", &machine, "--session", "sleepy"], 80, 24)?;
    t.expect("attached to new session \"sleepy\"", SOON)?;
    t.send(b"~.")?;
    assert_eq!(t.wait(SOON)?, 0);
    ensure!(sessions_of(server.cli(), None)?.len() == 1, "the detached session lives on at first");
    wait_until(SOON, "the idle session to end", || Ok(sessions_of(server.cli(), None)?.is_empty()))?;
    Ok(())
}
