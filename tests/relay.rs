//! `cmdop connect` end to end: a real server, real agents, the real CLI, all on 127.0.0.1.
//! Each test has its own server (port 0, own data folder), so tests run in parallel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{
    Cli, ExecReport, TestAgent, TestServer, exec_args, run_command, socket_inodes, tcp_sockets, wait_child, wait_until,
};

/// "Promptly": how fast a dead agent must be noticed (heartbeat is 1 s, so 3 s of silence at
/// worst; a killed process closes its socket at once).
const PROMPTLY: Duration = Duration::from_secs(5);

fn exec_json(cli: &Cli, machine: &str, flags: &[&str], argv: &[&str]) -> anyhow::Result<(i32, ExecReport)> {
    let mut all = vec!["--json"];
    all.extend_from_slice(flags);
    let run = cli.exec(machine, &all, argv)?;
    let text = run.stdout_text();
    ensure!(text.ends_with('\n') && text.trim_end().lines().count() == 1, "--json must print one line: {run}");
    Ok((run.code, run.json()?))
}

// ---- enrollment --------------------------------------------------------------------------

#[test]
fn enrolled_agent_is_listed_online_in_the_contract_json_shape() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "alpha")?;

    let run = server.cli().run(&["connect", "--list", "--json"])?.expect_code(0)?;
    let rows: serde_json::Value = run.json()?;
    let rows = rows.as_array().context("--list --json is an array")?;
    assert_eq!(rows.len(), 1, "{run}");
    let row = rows[0].as_object().context("each machine is an object")?;
    let keys: HashSet<&str> = row.keys().map(String::as_str).collect();
    assert_eq!(keys, HashSet::from(["id", "hostname", "display_name", "online", "last_seen"]));

    assert_eq!(row["id"], agent.machine_id());
    uuid::Uuid::parse_str(agent.machine_id())?;
    assert_eq!(row["hostname"], cmdop::hostname());
    assert_eq!(row["display_name"], "alpha");
    assert_eq!(row["online"], true);
    let last_seen = row["last_seen"].as_str().context("last_seen is a string once online")?;
    let parsed = time::OffsetDateTime::parse(last_seen, &time::format_description::well_known::Rfc3339)?;
    assert!(last_seen.ends_with('Z') && parsed.offset().is_utc(), "last_seen {last_seen} is not UTC");

    let online = server.cli().run(&["connect", "--list", "--online", "--json"])?.expect_code(0)?;
    assert!(online.stdout_text().contains(agent.machine_id()), "{online}");
    let table = server.cli().run(&["connect", "--list"])?.expect_code(0)?;
    assert!(table.stdout_text().contains("alpha") && table.stdout_text().contains("online"), "{table}");
    Ok(())
}

#[test]
fn reusing_an_enrollment_token_is_refused_as_already_used() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let token = server.cli().enrollment_token()?;
    let _first = TestAgent::start_with_token(&server, "first", &token)?;

    let state = server.temp_dir().join("second-agent");
    let mut second = server.agent_command(&state, &server.temp_dir().join("second.log"))?;
    second.args(["--token", &token]).stderr(Stdio::piped());
    let run = run_command(&mut second, Duration::from_secs(30))?;

    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("already used"), "{run}");
    assert!(!state.join("agent.json").exists(), "a refused agent saved an enrollment");
    assert_eq!(server.cli().machines()?.len(), 1);
    Ok(())
}

#[test]
fn agent_with_a_tampered_credential_exits_saying_it_was_rejected() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let mut agent = TestAgent::start(&server, "tampered")?;
    agent.kill();

    let path = agent.state_file();
    let mut saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let credential = saved["credential"].as_str().context("no credential")?.to_string();
    let last = credential.chars().last().context("empty credential")?;
    let forged =
        format!("{}{}", &credential[..credential.len() - last.len_utf8()], if last == 'A' { 'B' } else { 'A' });
    saved["credential"] = forged.into();
    std::fs::write(&path, serde_json::to_vec(&saved)?)?;

    let mut cmd = server.agent_command(&agent.state_dir(), &server.temp_dir().join("tampered.log"))?;
    cmd.stderr(Stdio::piped());
    let run = run_command(&mut cmd, Duration::from_secs(30))?;
    assert_ne!(run.code, 0, "{run}");
    assert!(run.stderr.contains("credential rejected"), "{run}");
    assert!(!server.cli().is_online(agent.machine_id())?);
    Ok(())
}

// ---- presence ----------------------------------------------------------------------------

#[test]
fn machine_goes_offline_promptly_when_its_agent_is_killed() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let mut agent = TestAgent::start(&server, "doomed")?;
    let id = agent.machine_id().to_string();
    assert_eq!(server.metric("cmdop_machines_online")?, 1);

    agent.kill();
    let killed = Instant::now();
    wait_until(PROMPTLY, "the machine to show offline", || Ok(!server.cli().is_online(&id)?))?;
    eprintln!("offline {:?} after SIGKILL", killed.elapsed());

    assert_eq!(server.metric("cmdop_machines_online")?, 0);
    let row = server.cli().machine(&id)?.context("an offline machine is still listed")?;
    assert!(!row.online && row.last_seen.is_some(), "{row:?}");
    let online = server.cli().run(&["connect", "--list", "--online", "--json"])?.expect_code(0)?;
    assert!(!online.stdout_text().contains(&id), "{online}");

    let run = server.cli().exec(&id, &[], &["true"])?;
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("offline"), "{run}");
    Ok(())
}

#[test]
fn agent_reconnects_by_itself_after_the_server_restarts() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let agent = TestAgent::start(&server, "steadfast")?;
    let id = agent.machine_id().to_string();

    server.restart()?;
    wait_until(Duration::from_secs(20), "the agent to reconnect", || server.cli().is_online(&id))?;

    let run = server.cli().exec(&id, &[], &["echo", "back"])?.expect_code(0)?;
    assert_eq!(run.stdout_text(), "back\n");
    Ok(())
}

#[test]
fn agent_owns_no_listening_socket() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "quiet")?;

    // /proc/PID/net/tcp is per network namespace, not per process: match the agent's socket
    // inodes against this namespace's tables instead.
    let tables = tcp_sockets()?;
    let state_of = |inode: u64| tables.iter().find(|(i, _)| *i == inode).map(|(_, s)| s.as_str());
    let agent_sockets = socket_inodes(agent.pid())?;
    let listening: Vec<u64> = agent_sockets.iter().copied().filter(|i| state_of(*i) == Some("0A")).collect();
    assert!(listening.is_empty(), "agent {} listens on socket inodes {listening:?}", agent.pid());

    // The method sees what it should: the agent's outbound connection, the server's listener.
    assert!(agent_sockets.iter().any(|i| state_of(*i) == Some("01")), "no established agent socket found");
    let server_sockets = socket_inodes(server.pid())?;
    assert!(server_sockets.iter().any(|i| state_of(*i) == Some("0A")), "the server's listener was not found");
    Ok(())
}

// ---- exec --------------------------------------------------------------------------------

#[test]
fn exec_keeps_stdout_and_stderr_apart() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "streams")?;
    let argv = ["sh", "-c", "echo out; echo err >&2; echo more"];

    let run = server.cli().exec(agent.machine_id(), &[], &argv)?.expect_code(0)?;
    assert_eq!(run.stdout_text(), "out\nmore\n", "{run}");
    assert_eq!(run.stderr, "err\n", "{run}");

    let (code, report) = exec_json(server.cli(), agent.machine_id(), &[], &argv)?;
    assert_eq!(code, 0);
    assert_eq!(report.stdout, "out\nmore\n");
    assert_eq!(report.stderr, "err\n");
    assert_eq!(report.machine_id, agent.machine_id());
    assert_eq!(report.hostname, cmdop::hostname());
    assert_eq!(report.command, argv);
    assert_eq!((report.exit_code, report.signal, report.timed_out), (0, None, false));
    assert!(!report.stdout_truncated && !report.stderr_truncated);
    Ok(())
}

#[test]
fn exec_exits_with_the_remote_exit_code() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "codes")?;
    let m = agent.machine_id();

    server.cli().exec(m, &[], &["true"])?.expect_code(0)?;
    server.cli().exec(m, &[], &["sh", "-c", "exit 3"])?.expect_code(3)?;
    let (code, report) = exec_json(server.cli(), m, &[], &["sh", "-c", "exit 3"])?;
    assert_eq!((code, report.exit_code, report.signal), (3, 3, None));
    Ok(())
}

#[test]
fn exec_killed_by_a_signal_exits_128_plus_the_signal() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "signals")?;
    let argv = ["sh", "-c", "kill -TERM $$"];

    server.cli().exec(agent.machine_id(), &[], &argv)?.expect_code(143)?;
    let (code, report) = exec_json(server.cli(), agent.machine_id(), &[], &argv)?;
    assert_eq!(code, 143);
    assert_eq!(report.signal, Some(15));
    assert_eq!(report.exit_code, 143);
    Ok(())
}

#[test]
fn exec_past_its_timeout_is_killed_and_exits_124() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "slow")?;

    let run = server.cli().exec(agent.machine_id(), &["--timeout", "1s"], &["sleep", "30"])?.expect_code(124)?;
    assert!(run.took < Duration::from_secs(10), "{run}");
    assert!(run.stderr.contains("timed out"), "{run}");

    let (code, report) = exec_json(server.cli(), agent.machine_id(), &["--timeout", "1s"], &["sleep", "30"])?;
    assert_eq!(code, 124);
    assert!(report.timed_out, "{report:?}");
    assert!(report.duration_ms >= 900 && report.duration_ms < 10_000, "{report:?}");
    Ok(())
}

#[test]
fn exec_env_flags_reach_the_process() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "env")?;

    let flags = ["--env", "GREETING=hello world", "--env", "EMPTY=", "--env", "EQ=a=b"];
    let run =
        server.cli().exec(agent.machine_id(), &flags, &["printenv", "GREETING", "EMPTY", "EQ"])?.expect_code(0)?;
    assert_eq!(run.stdout_text(), "hello world\n\na=b\n");
    Ok(())
}

#[test]
fn exec_passes_argv_verbatim_without_a_shell() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "verbatim")?;
    let m = agent.machine_id();

    let run = server.cli().exec(m, &[], &["printf", "%s", "$HOME; echo x"])?.expect_code(0)?;
    assert_eq!(run.stdout_text(), "$HOME; echo x");

    let tricky = ["printf", "%s|", "a b", "", "*", "$(id)", "`id`", "'q'", "\"dq\"", "x\\y", "-n", "--"];
    let run = server.cli().exec(m, &[], &tricky)?.expect_code(0)?;
    assert_eq!(run.stdout_text(), "a b||*|$(id)|`id`|'q'|\"dq\"|x\\y|-n|--|");
    Ok(())
}

#[test]
fn exec_of_a_missing_command_exits_127() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "missing")?;

    let run = server.cli().exec(agent.machine_id(), &[], &["cmdop-no-such-command", "x"])?.expect_code(127)?;
    assert!(run.stderr.contains("command not found"), "{run}");
    Ok(())
}

#[test]
fn exec_relays_64_mib_byte_exact() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "bulk")?;
    let took = common::exec_copies_byte_exact(&server, agent.machine_id(), 64 << 20, 0x5eed_cafe_f00d)?;
    eprintln!("64 MiB relayed in {took:?}");
    Ok(())
}

#[test]
fn exec_ends_promptly_with_exit_1_when_the_agent_dies_mid_command() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let mut agent = TestAgent::start(&server, "fragile")?;
    let args = exec_args(agent.machine_id(), &[], &["sh", "-c", "echo started; exec sleep 30"]);
    let mut cli = server.cli().command(&args).spawn()?;
    let stdout = cli.stdout.take().context("stdout")?;
    let stderr = cli.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let stderr = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let first = rx.recv_timeout(Duration::from_secs(20));
    if first.as_deref() != Ok("started") {
        let _ = cli.kill();
        anyhow::bail!("the remote command did not start: {first:?}");
    }

    agent.kill();
    let killed = Instant::now();
    let status = wait_child(&mut cli, Duration::from_secs(20))?;
    let took = killed.elapsed();
    let stderr = stderr.join().unwrap_or_default();
    assert_eq!(status.code(), Some(1), "stderr: {stderr}");
    assert!(took < PROMPTLY, "the CLI took {took:?} to notice");
    assert!(stderr.contains("went away"), "stderr: {stderr}");
    assert_eq!(server.metric("cmdop_sessions_open")?, 0, "the lost session is still counted");
    Ok(())
}

#[test]
fn frozen_agent_goes_offline_after_three_missed_heartbeats_and_returns_when_thawed() -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    let server = TestServer::start()?;
    let mut agent = TestAgent::start(&server, "frozen")?;
    let id = agent.machine_id().to_string();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(agent.pid())?);

    kill(pid, Signal::SIGSTOP)?;
    let stopped = Instant::now();
    let offline = wait_until(Duration::from_secs(15), "the frozen machine to show offline", || {
        Ok(!server.cli().is_online(&id)?)
    });
    let took = stopped.elapsed();
    kill(pid, Signal::SIGCONT)?;
    offline?;
    // Heartbeats every 1 s, offline after 3 s of silence: the last beat was at most 1 s old.
    assert!(took >= Duration::from_secs(2), "offline after {took:?}, before three heartbeats were missed");

    agent.wait_online(&server)?;
    server.cli().exec(&id, &[], &["echo", "thawed"])?.expect_code(0)?;
    Ok(())
}

// ---- resolving machine names ---------------------------------------------------------------

fn resolved_id(cli: &Cli, name: &str) -> anyhow::Result<String> {
    let (code, report) = exec_json(cli, name, &[], &["true"])?;
    ensure!(code == 0, "exec on {name:?} exited {code}");
    Ok(report.machine_id)
}

#[test]
fn machine_names_resolve_by_hostname_display_name_id_prefix_and_uuid() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let cli = server.cli();
    let alpha = TestAgent::start(&server, "alpha")?;
    let hostname = cmdop::hostname();
    assert_eq!(resolved_id(cli, &hostname)?, alpha.machine_id(), "by hostname");

    let beta = TestAgent::start(&server, "beta")?;
    assert_eq!(resolved_id(cli, "alpha")?, alpha.machine_id(), "by display name");
    assert_eq!(resolved_id(cli, "BETA")?, beta.machine_id(), "by display name, any case");
    assert_eq!(resolved_id(cli, beta.machine_id())?, beta.machine_id(), "by full UUID");
    let upper = beta.machine_id().to_uppercase();
    assert_eq!(resolved_id(cli, &upper)?, beta.machine_id(), "by full UUID, any case");
    let prefix_len = (2..=alpha.machine_id().len())
        .find(|n| alpha.machine_id()[..*n] != beta.machine_id()[..*n])
        .context("ids share every prefix")?;
    let prefix = alpha.machine_id()[..prefix_len].to_uppercase();
    assert_eq!(resolved_id(cli, &prefix)?, alpha.machine_id(), "by unique prefix {prefix}");
    Ok(())
}

#[test]
fn unresolved_or_ambiguous_machine_names_exit_2_naming_the_problem() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let cli = server.cli();
    let alpha = TestAgent::start(&server, "alpha")?;
    let beta = TestAgent::start(&server, "beta")?;

    let run = cli.exec("no-such-machine", &[], &["true"])?.expect_code(2)?;
    assert!(run.stderr.contains("no machine matches \"no-such-machine\""), "{run}");

    // Both agents run here, so they share this machine's hostname.
    let run = cli.exec(&cmdop::hostname(), &[], &["true"])?.expect_code(2)?;
    assert!(run.stderr.contains("several machines"), "{run}");
    assert!(run.stderr.contains(alpha.machine_id()) && run.stderr.contains(beta.machine_id()), "{run}");

    let twin = TestAgent::start(&server, "alpha")?;
    let run = cli.exec("alpha", &[], &["true"])?.expect_code(2)?;
    assert!(run.stderr.contains(alpha.machine_id()) && run.stderr.contains(twin.machine_id()), "{run}");
    assert!(!run.stderr.contains(beta.machine_id()), "{run}");
    Ok(())
}

// ---- the CLI without credentials -----------------------------------------------------------

#[test]
fn cli_without_credentials_exits_3_saying_not_signed_in() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let cli = server.anonymous_cli();
    std::fs::create_dir_all(cli.home())?;
    let message = "not signed in: run `cmdop login`";

    let run = cli.run(&["connect", "--list", "--json"])?.expect_code(3)?;
    assert!(run.stderr.contains(message), "{run}");
    let run = cli.exec("anything", &[], &["true"])?.expect_code(3)?;
    assert!(run.stderr.contains(message), "{run}");
    Ok(())
}

// ---- plain HTTP ------------------------------------------------------------------------------

#[test]
fn healthz_metrics_and_unknown_paths_answer_over_plain_http() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let _agent = TestAgent::start(&server, "metered")?;

    let (status, _) = server.http_get("/healthz")?;
    assert_eq!(status, 200);
    let (status, body) = server.http_get("/metrics")?;
    assert_eq!(status, 200);
    assert!(body.contains("# TYPE cmdop_machines_online gauge"), "{body}");
    assert!(body.lines().any(|l| l == "cmdop_machines_online 1"), "{body}");
    let (status, _) = server.http_get("/no/such/page")?;
    assert_eq!(status, 404);
    Ok(())
}

/// An agent played by tonic's generated `RelayClient`: enrolled, linked, hello sent and the
/// relay's welcome read.
struct StockStream {
    enrolled: cmdop::proto::EnrollResponse,
    tx: tokio::sync::mpsc::Sender<cmdop::proto::AgentFrame>,
    inbound: tonic::Streaming<cmdop::proto::RelayFrame>,
}

impl StockStream {
    async fn link(server: &TestServer, hostname: &str) -> anyhow::Result<Self> {
        use cmdop::proto::{self, agent_frame, relay_client::RelayClient, relay_frame};

        let token = server.cli().enrollment_token()?;
        let mut client = RelayClient::connect(server.url().to_string()).await?;
        let enroll = proto::EnrollRequest { token, hostname: hostname.into(), display_name: hostname.into() };
        let enrolled = client.enroll(enroll).await?.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let hello = proto::Hello { hostname: hostname.into(), agent_version: "test".into(), ..Default::default() };
        tx.send(proto::AgentFrame { kind: Some(agent_frame::Kind::Hello(hello)) }).await?;
        let mut req = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        req.metadata_mut().insert("authorization", format!("Bearer {}", enrolled.credential).parse()?);
        let mut inbound = client.link(req).await?.into_inner();
        let welcome = tokio::time::timeout(Duration::from_secs(10), inbound.message()).await??;
        let welcomed = matches!(welcome, Some(proto::RelayFrame { kind: Some(relay_frame::Kind::Welcome(_)) }));
        anyhow::ensure!(welcomed, "expected the relay's welcome, got {welcome:?}");
        Ok(Self { enrolled, tx, inbound })
    }
}

// ---- protocol violations ---------------------------------------------------------------------

#[tokio::test]
async fn malformed_agent_frame_ends_that_stream_and_the_server_stays_healthy() -> anyhow::Result<()> {
    use cmdop::proto;

    let server = TestServer::start()?;
    let StockStream { enrolled, tx, mut inbound } = StockStream::link(&server, "raw-client").await?;
    let bound = Duration::from_secs(10);
    let id = enrolled.machine_id.clone();
    let cli = server.cli().clone();
    let online = tokio::task::spawn_blocking(move || cli.is_online(&id)).await??;
    assert!(online, "the raw client's machine should be online after hello");

    tx.send(proto::AgentFrame { kind: None }).await?;
    let end = tokio::time::timeout(bound, inbound.message()).await?;
    let status = end.expect_err("the relay must end the stream with an error status");
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("malformed"), "{status:?}");

    let (cli, id) = (server.cli().clone(), enrolled.machine_id.clone());
    tokio::task::spawn_blocking(move || {
        wait_until(PROMPTLY, "the raw machine to go offline", || Ok(!cli.is_online(&id)?))
    })
    .await??;
    assert_eq!(server.http_get("/healthz")?.0, 200);
    let agent = TestAgent::start(&server, "after")?;
    server.cli().exec(agent.machine_id(), &[], &["true"])?.expect_code(0)?;
    Ok(())
}

// ---- interoperability and transports ---------------------------------------------------------

/// A stock gRPC client (tonic's generated `RelayClient` over tonic's `Channel`) plays the
/// agent: enrolls, links, and serves an exec the CLI runs through the server. The server must
/// keep speaking plain gRPC, whatever the agent's own transport does.
#[tokio::test]
async fn a_stock_tonic_client_enrolls_links_and_serves_a_session() -> anyhow::Result<()> {
    use cmdop::proto::{self, agent_frame, closed, relay_frame};

    let server = TestServer::start()?;
    let StockStream { enrolled, tx, mut inbound } = StockStream::link(&server, "stock-client").await?;
    let bound = Duration::from_secs(10);
    // Heartbeats as an agent sends them, so the machine stays online however long this takes.
    let beats = tx.clone();
    let heartbeat = tokio::spawn(async move {
        let beat = || proto::AgentFrame { kind: Some(agent_frame::Kind::Heartbeat(proto::Heartbeat { unix_ms: 1 })) };
        for _ in 0..240 {
            if beats.send(beat()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });

    let (cli, id) = (server.cli().clone(), enrolled.machine_id.clone());
    let exec = tokio::task::spawn_blocking(move || cli.exec(&id, &[], &["echo", "through a stock client"]));
    let mut served = false;
    for _ in 0..100 {
        let Some(frame) = tokio::time::timeout(bound, inbound.message()).await?? else { break };
        let Some(relay_frame::Kind::Open(open)) = frame.kind else { continue };
        let channel = open.channel;
        let send = |kind| tx.send(proto::AgentFrame { kind: Some(kind) });
        if open.argv.is_empty() {
            // The relay's "does the attach password admit this principal?" probe: yes.
            let closed = proto::Closed { channel, end: Some(closed::End::ExitCode(0)), ..Default::default() };
            send(agent_frame::Kind::Closed(closed)).await?;
            continue;
        }
        assert_eq!(open.argv, ["echo", "through a stock client"]);
        let data = bytes::Bytes::from_static(b"through a stock client\n");
        assert!(open.output_window as usize >= data.len(), "{open:?}");
        send(agent_frame::Kind::Opened(proto::Opened { channel, input_window: 0, pid: 4242, ..Default::default() }))
            .await?;
        send(agent_frame::Kind::Output(proto::Output { channel, stream: 0, offset: 0, data })).await?;
        let closed = proto::Closed { channel, end: Some(closed::End::ExitCode(0)), timed_out: false, duration_ms: 3 };
        send(agent_frame::Kind::Closed(closed)).await?;
        served = true;
        break;
    }
    assert!(served, "the relay never opened the exec on the stock client");
    let run = exec.await??.expect_code(0)?;
    assert_eq!(run.stdout_text(), "through a stock client\n");
    heartbeat.abort();
    Ok(())
}

/// A TLS-terminating proxy (the deployment README.md describes): TLS with ALPN `h2` on
/// 127.0.0.1, plain bytes to the server. Serves the test certificate in tests/tls/, issued
/// for `localhost` by the test CA `tests/tls/ca.pem`.
struct TlsProxy {
    port: u16,
    /// TLS handshakes that agreed on `h2`.
    h2_sessions: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TlsProxy {
    fn start(target: std::net::SocketAddr) -> anyhow::Result<Self> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};

        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
        let certs = vec![CertificateDer::from_pem_file(dir.join("server.pem"))?];
        let key = PrivateKeyDer::from_pem_file(dir.join("server.key"))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let h2_sessions = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let sessions = h2_sessions.clone();
        let thread = std::thread::spawn(move || {
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
                loop {
                    let accepted = tokio::select! {
                        accepted = listener.accept() => accepted,
                        _ = &mut stopped => return,
                    };
                    let Ok((tcp, _)) = accepted else { continue };
                    let (acceptor, sessions) = (acceptor.clone(), sessions.clone());
                    tokio::spawn(async move {
                        let Ok(mut tls) = acceptor.accept(tcp).await else { return };
                        if tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                            sessions.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                        let Ok(mut upstream) = tokio::net::TcpStream::connect(target).await else { return };
                        let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                    });
                }
            })
        });
        Ok(Self { port, h2_sessions, stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An agent given an `https://` URL enrolls and links over TLS (the system's roots, here
/// overridden with `SSL_CERT_FILE`, and ALPN `h2`), and sessions run through that stream.
#[test]
fn agent_links_over_https_and_runs_sessions_through_tls() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let proxy = TlsProxy::start(server.addr())?;
    let url = format!("https://localhost:{}", proxy.port);
    let dir = tempfile::tempdir()?;
    let state_dir = dir.path().join("state");
    let log = dir.path().join("agent.log");
    let token = server.cli().enrollment_token()?;
    let mut cmd = server.agent_command_to(&url, &state_dir, &log)?;
    cmd.args(["--token", &token, "--display-name", "over-tls"])
        .env("SSL_CERT_FILE", concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tls/ca.pem"));
    let mut agent = cmd.spawn()?;
    let result = (|| {
        let state = state_dir.join("agent.json");
        wait_until(Duration::from_secs(20), "the agent to enroll over TLS", || Ok(state.exists()))?;
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state)?)?;
        let id = saved["machine_id"].as_str().context("no machine_id in agent.json")?.to_string();
        wait_until(Duration::from_secs(20), "the agent to be online over TLS", || server.cli().is_online(&id))?;
        let run = server.cli().exec(&id, &[], &["echo", "over tls"])?.expect_code(0)?;
        assert_eq!(run.stdout_text(), "over tls\n");
        // Enrollment (tonic) and the link (the agent's own HTTP/2) each came through TLS with h2.
        let sessions = proxy.h2_sessions.load(std::sync::atomic::Ordering::SeqCst);
        ensure!(sessions >= 2, "expected the enrollment and the link over TLS with h2, saw {sessions} sessions");
        anyhow::Ok(())
    })();
    let _ = agent.kill();
    let _ = agent.wait();
    if result.is_err() {
        eprintln!("agent log:\n{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    result
}
