//! `cmdop connect exec` beyond the happy path: who ends a command, and when; many commands at
//! once; capture limits of `--json`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use common::{
    ExecReport, TestAgent, TestServer, children_of, exec_args, is_running, run_command, wait_child, wait_until,
};

/// Spawns `cmdop connect exec MACHINE -- sh -c SCRIPT` and returns once the remote shell has
/// printed the line `started` (so the session is up end to end); later lines come on the
/// receiver.
fn spawn_started(server: &TestServer, machine: &str, script: &str) -> anyhow::Result<(Child, mpsc::Receiver<String>)> {
    let mut cli = server.cli().command(&exec_args(machine, &[], &["sh", "-c", script])).spawn()?;
    let stdout = cli.stdout.take().context("stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) if line == "started" => Ok((cli, rx)),
        other => {
            let _ = cli.kill();
            let _ = cli.wait();
            bail!("the remote command did not start: {other:?}")
        }
    }
}

#[test]
fn remote_command_is_killed_when_the_cli_goes_away() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "abandoned")?;
    let (mut cli, _out) = spawn_started(&server, agent.machine_id(), "echo started; exec sleep 30")?;
    let remote = children_of(agent.pid());
    assert_eq!(remote.len(), 1, "the remote command should be the agent's one child: {remote:?}");

    cli.kill()?;
    cli.wait()?;
    wait_until(Duration::from_secs(5), "the remote command to be killed", || Ok(!is_running(remote[0])))?;
    wait_until(Duration::from_secs(5), "the session to be closed", || Ok(server.metric("cmdop_sessions_open")? == 0))?;
    Ok(())
}

#[test]
fn ctrl_c_in_the_cli_is_sent_to_the_remote_command_as_sigint() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "interrupted")?;
    let script = "trap 'echo got INT; exit 7' INT; echo started; while :; do sleep 0.1; done";
    let (mut cli, out) = spawn_started(&server, agent.machine_id(), script)?;

    let pid = nix::unistd::Pid::from_raw(i32::try_from(cli.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT)?;
    let status = wait_child(&mut cli, Duration::from_secs(10))?;
    assert_eq!(status.code(), Some(7));
    assert_eq!(out.recv_timeout(Duration::from_secs(5)).ok().as_deref(), Some("got INT"));
    Ok(())
}

#[test]
fn timeout_also_ends_background_children_that_hold_the_output_open() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "lingering")?;

    // The shell exits at once; its background child keeps stdout open for 30 s.
    let argv = ["sh", "-c", "sleep 30 & echo $!"];
    let run = server.cli().exec(agent.machine_id(), &["--timeout", "2s"], &argv)?;
    assert!(run.took < Duration::from_secs(10), "the 2s timeout was not enforced: {run}");
    assert_eq!(run.code, 124, "{run}");
    let background: u32 = run.stdout_text().trim().parse().with_context(|| format!("no pid printed: {run}"))?;
    wait_until(Duration::from_secs(5), "the background child to be killed", || Ok(!is_running(background)))?;
    Ok(())
}

#[test]
fn concurrent_execs_on_one_machine_keep_their_outputs_apart() -> anyhow::Result<()> {
    const EXECS: usize = 6;
    const LINES: usize = 40_000; // ~400 KB each: more than one output window
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "busy")?;

    let started = Instant::now();
    let runs: Vec<_> = (0..EXECS)
        .map(|n| {
            let format = format!("{n}-%g");
            let args = exec_args(agent.machine_id(), &[], &["seq", "-f", &format, "1", &LINES.to_string()]);
            let mut cmd = server.cli().command(&args);
            std::thread::spawn(move || run_command(&mut cmd, Duration::from_secs(60)))
        })
        .collect();
    for (n, run) in runs.into_iter().enumerate() {
        let run = run.join().map_err(|_| anyhow::anyhow!("thread panicked"))??.expect_code(0)?;
        let want: String = (1..=LINES).map(|i| format!("{n}-{i}\n")).collect();
        assert!(run.stdout_text() == want, "exec {n}: output differs (len {} vs {})", run.stdout.len(), want.len());
    }
    eprintln!("{EXECS} concurrent execs in {:?}", started.elapsed());
    Ok(())
}

#[test]
fn json_capture_is_capped_at_16_mib_and_says_truncated() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "chatty")?;

    let argv = ["sh", "-c", "head -c 17000000 /dev/zero | tr '\\0' a; echo small >&2"];
    let run = server.cli().exec(agent.machine_id(), &["--json"], &argv)?.expect_code(0)?;
    let report: ExecReport = run.json()?;
    assert!(report.stdout_truncated, "stdout_truncated should be set");
    assert_eq!(report.stdout.len(), 16 << 20);
    assert!(report.stdout.bytes().all(|b| b == b'a'));
    assert!(!report.stderr_truncated);
    assert_eq!(report.stderr, "small\n");
    Ok(())
}
