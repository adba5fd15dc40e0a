//! Test helpers that start real `cmdop` processes, isolated per test.
//!
//! - `TestServer`: a server on 127.0.0.1 port 0 with its own data folder, plus an owner CLI
//!   signed in through `cmdop server local-login`. Killed in `Drop`.
//! - `TestAgent`: an enrolled agent process, started and waited for until it is online.
//!   Killed (with the commands it started) in `Drop`.
//! - `Cli`: runs `cmdop` with its own `CMDOP_HOME` and `HOME`, with a deadline.
//! - `wait_until`: a bounded poll (count and time), never a bare sleep.
//! - `postgres::fresh_database`: a new database on this test binary's throwaway PostgreSQL
//!   cluster, for `TestServer::start_on_database`.
//!
//! Process logs go to files in the test's temporary folder; when a test fails, `Drop` prints
//! their tails so the failure explains itself.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

mod faults;
pub mod postgres;
mod proc_stats;
mod procfs;
mod server_line;

#[allow(unused_imports)] // each test crate uses a part of the helpers
pub use faults::FaultProxy;
#[allow(unused_imports)]
pub use proc_stats::{cpu_ticks, descendants_of, rss_kib};
#[allow(unused_imports)]
pub use procfs::{children_of, is_running};

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use tempfile::TempDir;

/// The binary under test.
pub const CMDOP: &str = env!("CARGO_BIN_EXE_cmdop");
/// Heartbeat interval given to test servers: offline after three missed, i.e. 3 s of silence.
pub const HEARTBEAT: &str = "1s";
/// How long a server may take to print its URL line.
const SERVER_START: Duration = Duration::from_secs(20);
/// How long an agent may take to enroll and come online.
const AGENT_ONLINE: Duration = Duration::from_secs(20);
/// Default deadline of one CLI run.
pub const CLI_DEADLINE: Duration = Duration::from_secs(60);
/// Pause between two polls of `wait_until` and between two `try_wait`s of a process.
const POLL_EVERY: Duration = Duration::from_millis(50);

/// Polls `cond` until it holds, at most `within` (and a bounded number of times). An error
/// from `cond` counts as "not yet"; the last one is reported on timeout.
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let max_polls = within.as_millis() / POLL_EVERY.as_millis() + 2;
    let mut last_error = None;
    for _ in 0..max_polls {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now())));
    }
    match last_error {
        Some(e) => bail!("timed out after {within:?} waiting for {what} (last error: {e:#})"),
        None => bail!("timed out after {within:?} waiting for {what}"),
    }
}

/// Waits for `child` to exit, at most `within`; kills it (and says so) past the deadline.
pub fn wait_child(child: &mut Child, within: Duration) -> anyhow::Result<ExitStatus> {
    let deadline = Instant::now() + within;
    let max_polls = within.as_millis() / POLL_EVERY.as_millis() + 2;
    for _ in 0..max_polls {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL_EVERY.min(deadline.saturating_duration_since(Instant::now())));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("process {} still running after {within:?}; killed it", child.id())
}

/// What one finished process said.
#[derive(Debug)]
pub struct Run {
    /// Exit code; 128+N when it died of signal N.
    pub code: i32,
    /// Raw stdout.
    pub stdout: Vec<u8>,
    /// Stderr as text.
    pub stderr: String,
    /// Wall time it took.
    pub took: Duration,
}

impl Run {
    /// Stdout as text.
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Stdout parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> anyhow::Result<T> {
        serde_json::from_slice(&self.stdout).with_context(|| format!("stdout is not the expected JSON: {self}"))
    }

    /// Fails unless the exit code is `code`.
    pub fn expect_code(self, code: i32) -> anyhow::Result<Self> {
        ensure!(self.code == code, "expected exit code {code}, got {self}");
        Ok(self)
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let out = String::from_utf8_lossy(&self.stdout[..self.stdout.len().min(2000)]).into_owned();
        write!(f, "exit {} after {:?}\n--- stdout ---\n{out}\n--- stderr ---\n{}", self.code, self.took, self.stderr)
    }
}

fn code_of(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(-1)
}

/// Runs `cmd` to completion within `within`, capturing stdout (unless the caller redirected
/// it) and stderr.
pub fn run_command(cmd: &mut Command, within: Duration) -> anyhow::Result<Run> {
    let child = cmd.stdin(Stdio::null()).spawn().with_context(|| format!("cannot start {cmd:?}"))?;
    finish_run(child, within)
}

/// Collects a started child's output and exit code, waiting at most `within`.
fn finish_run(mut child: Child, within: Duration) -> anyhow::Result<Run> {
    let started = Instant::now();
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);
    let status = wait_child(&mut child, within)?;
    let stdout = stdout.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    let stderr = stderr.map(|t| t.join().unwrap_or_default()).unwrap_or_default();
    Ok(Run {
        code: code_of(status),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        took: started.elapsed(),
    })
}

/// Reads a pipe to its end on a thread (a full pipe must never block the process).
fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// The `cmdop` command line with its own state folder.
#[derive(Clone, Debug)]
pub struct Cli {
    home: PathBuf,
}

impl Cli {
    /// A CLI whose `CMDOP_HOME` (and `HOME`) is `home`.
    pub fn new(home: impl Into<PathBuf>) -> Self {
        Self { home: home.into() }
    }

    /// The CLI's state folder.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// A `cmdop ARGS` command with stdout and stderr piped, ready to spawn.
    pub fn command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(CMDOP);
        cmd.args(args)
            .env("CMDOP_HOME", &self.home)
            .env("HOME", &self.home)
            .env_remove("CMDOP_ENROLL_TOKEN")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `cmdop ARGS` with the default deadline.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> anyhow::Result<Run> {
        run_command(&mut self.command(args), CLI_DEADLINE)
    }

    /// Runs `cmdop ARGS` with `input` on its standard input.
    pub fn run_with_stdin<S: AsRef<std::ffi::OsStr>>(&self, args: &[S], input: &str) -> anyhow::Result<Run> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped());
        let mut child = cmd.spawn().context("cannot start cmdop")?;
        let mut stdin = child.stdin.take().context("no stdin pipe")?;
        std::io::Write::write_all(&mut stdin, input.as_bytes())?;
        drop(stdin);
        finish_run(child, CLI_DEADLINE)
    }

    /// `cmdop connect exec MACHINE [FLAGS] -- ARGV`.
    pub fn exec(&self, machine: &str, flags: &[&str], argv: &[&str]) -> anyhow::Result<Run> {
        self.run(&exec_args(machine, flags, argv))
    }

    /// `cmdop connect --list --json`, parsed.
    pub fn machines(&self) -> anyhow::Result<Vec<MachineRow>> {
        self.run(&["connect", "--list", "--json"])?.expect_code(0)?.json()
    }

    /// One machine of `connect --list --json`.
    pub fn machine(&self, id: &str) -> anyhow::Result<Option<MachineRow>> {
        Ok(self.machines()?.into_iter().find(|m| m.id == id))
    }

    /// Whether the machine shows as online.
    pub fn is_online(&self, id: &str) -> anyhow::Result<bool> {
        Ok(self.machine(id)?.is_some_and(|m| m.online))
    }

    /// A fresh one-time enrollment token (`cmdop fleet token create`).
    pub fn enrollment_token(&self) -> anyhow::Result<String> {
        let run = self.run(&["fleet", "token", "create"])?.expect_code(0)?;
        let token = run.stdout_text().trim().to_string();
        ensure!(!token.is_empty() && !token.contains(char::is_whitespace), "odd token output: {run}");
        Ok(token)
    }
}

/// The argument list of `cmdop connect exec MACHINE [FLAGS] -- ARGV`.
pub fn exec_args(machine: &str, flags: &[&str], argv: &[&str]) -> Vec<String> {
    let mut args = vec!["connect".to_string(), "exec".into(), machine.into()];
    args.extend(flags.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(argv.iter().map(|s| s.to_string()));
    args
}

/// One row of `cmdop connect --list --json` (CONTRACT.md); unknown fields are refused so the
/// shape stays exactly the contract's.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineRow {
    pub id: String,
    pub hostname: String,
    pub display_name: Option<String>,
    pub online: bool,
    pub last_seen: Option<String>,
}

/// The JSON object of `cmdop connect exec --json` (CONTRACT.md).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecReport {
    pub machine_id: String,
    pub hostname: String,
    pub command: Vec<String>,
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: u64,
    pub timed_out: bool,
}

/// A `cmdop server` process with its own data folder and a signed-in owner CLI.
pub struct TestServer {
    dir: TempDir,
    port: u16,
    url: String,
    child: Child,
    owner: Cli,
    starts: u32,
    /// Extra `cmdop server` flags, kept for restarts.
    extra: Vec<String>,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 port 0 and signs an owner CLI in to it.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(&[])
    }

    /// `start` with extra `cmdop server` flags.
    pub fn start_with(extra: &[&str]) -> anyhow::Result<Self> {
        Self::start_full(extra, &[])
    }

    /// `start` on a PostgreSQL database (`--database URL`, given to local-login too).
    pub fn start_on_database(url: &str) -> anyhow::Result<Self> {
        let key = cluster_key_for(url)?;
        let key = key.to_str().context("key path")?;
        Self::start_full(&["--database", url, "--cluster-key-file", key], &["--database", url])
    }

    /// Starts with `extra` server flags and signs the owner in with `login_extra` added to
    /// `cmdop server local-login`.
    fn start_full(extra: &[&str], login_extra: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cmdop-test-").tempdir()?;
        let owner = Cli::new(dir.path().join("owner"));
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let (child, url) = spawn_server(dir.path(), "127.0.0.1:0", 1, &extra)?;
        let port = url.rsplit(':').next().and_then(|p| p.parse().ok()).context("no port in the URL")?;
        let server = Self { dir, port, url, child, owner, starts: 1, extra };
        let data_dir = server.data_dir();
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "server".as_ref(),
            "local-login".as_ref(),
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "--server".as_ref(),
            server.url.as_ref(),
        ];
        args.extend(login_extra.iter().map(|a| std::ffi::OsStr::new(*a)));
        let login = server.owner.run(&args)?;
        if login.code != 0 {
            server.dump_logs();
            bail!("local-login failed: {login}");
        }
        Ok(server)
    }

    /// Kills the server (as a crash would) and starts it again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.starts += 1;
        let listen = format!("127.0.0.1:{}", self.port);
        // The port was ours a moment ago; if something else grabbed it, retry briefly.
        let mut last = None;
        for _ in 0..20 {
            match spawn_server(self.dir.path(), &listen, self.starts, &self.extra) {
                Ok((child, url)) => {
                    ensure!(url == self.url, "restarted server reports {url}, expected {}", self.url);
                    self.child = child;
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("server did not restart")))
    }

    /// Kills the server process now (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits at most `within` for the server to exit; its exit status.
    pub fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
        wait_child(&mut self.child, within)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's data folder.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The test's temporary folder (removed with the server).
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CLI signed in as the fleet's owner.
    pub fn cli(&self) -> &Cli {
        &self.owner
    }

    /// A CLI with an empty state folder: signed in nowhere.
    pub fn anonymous_cli(&self) -> Cli {
        Cli::new(self.dir.path().join("anonymous"))
    }

    /// A `cmdop agent` command toward this server (no token; add `--token` to enroll).
    pub fn agent_command(&self, state_dir: &Path, log: &Path) -> anyhow::Result<Command> {
        self.agent_command_to(&self.url, state_dir, log)
    }

    /// `agent_command` dialing `url` instead (a proxy in front of this server).
    pub fn agent_command_to(&self, url: &str, state_dir: &Path, log: &Path) -> anyhow::Result<Command> {
        let mut cmd = Command::new(CMDOP);
        cmd.args(["agent", "--server", url, "--state-dir"])
            .arg(state_dir)
            .env("HOME", self.dir.path())
            .env_remove("CMDOP_ENROLL_TOKEN")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(log)?);
        Ok(cmd)
    }

    /// A plain HTTP/1.1 GET over a TcpStream: status code and body.
    pub fn http_get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut stream = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(5))?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_write_timeout(Some(Duration::from_secs(10)))?;
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.addr())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
        let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
        let chunked = head.lines().any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
        Ok((status, if chunked { dechunk(body) } else { body.to_string() }))
    }

    /// The value of an unlabelled metric on `/metrics`.
    pub fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let (status, body) = self.http_get("/metrics")?;
        ensure!(status == 200, "/metrics answered {status}");
        let value = body
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .with_context(|| format!("no {name} in /metrics:\n{body}"))?;
        Ok(value.trim().parse()?)
    }

    fn log_path(dir: &Path, start: u32) -> PathBuf {
        dir.join(format!("server-{start}.log"))
    }

    fn dump_logs(&self) {
        for start in 1..=self.starts {
            print_tail(&Self::log_path(self.dir.path(), start));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Spawns `cmdop server` and reads its URL line within `SERVER_START`.
fn spawn_server(dir: &Path, listen: &str, start: u32, extra: &[String]) -> anyhow::Result<(Child, String)> {
    let log = TestServer::log_path(dir, start);
    let mut child = Command::new(CMDOP)
        .args(["server", "--listen", listen, "--heartbeat-interval", HEARTBEAT, "--data-dir"])
        .arg(dir.join("data"))
        .args(extra)
        .env("HOME", dir)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(File::create(&log)?)
        .spawn()
        .context("cannot start the server")?;
    match server_line::server_url(&mut child, SERVER_START) {
        Ok(url) => Ok((child, url)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            print_tail(&log);
            Err(e.context(format!("server listening on {listen}")))
        }
    }
}

fn dechunk(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    for _ in 0..10_000 {
        let Some((size, tail)) = rest.split_once("\r\n") else {
            break;
        };
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

fn print_tail(path: &Path) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = &lines[lines.len().saturating_sub(60)..];
    eprintln!("===== {} (last {} lines) =====\n{}", path.display(), tail.len(), tail.join("\n"));
}

/// An enrolled `cmdop agent` process that was seen online.
pub struct TestAgent {
    dir: TempDir,
    child: Option<Child>,
    machine_id: String,
    display_name: String,
    runs: u32,
    /// Where the agent dials, in turn, when not the server's own URL (a proxy, other nodes).
    via: Vec<String>,
    /// Extra `cmdop agent` flags, kept for restarts.
    extra: Vec<String>,
}

impl TestAgent {
    /// Creates an enrollment token, starts an agent with it and waits until it is online.
    pub fn start(server: &TestServer, display_name: &str) -> anyhow::Result<Self> {
        let token = server.cli().enrollment_token()?;
        Self::start_with_token(server, display_name, &token)
    }

    /// `start` with extra `cmdop agent` flags (e.g. `--ask-handler CMD`).
    pub fn start_with_args(server: &TestServer, display_name: &str, extra: &[&str]) -> anyhow::Result<Self> {
        let token = server.cli().enrollment_token()?;
        Self::enroll(server, display_name, &token, vec![], extra)
    }

    /// Starts an agent enrolling with `token` and waits until it is online.
    pub fn start_with_token(server: &TestServer, display_name: &str, token: &str) -> anyhow::Result<Self> {
        Self::enroll(server, display_name, token, vec![], &[])
    }

    /// `start`, with the agent dialing `url` (a proxy in front of the server).
    pub fn start_via(server: &TestServer, display_name: &str, url: &str) -> anyhow::Result<Self> {
        let token = server.cli().enrollment_token()?;
        Self::enroll(server, display_name, &token, vec![url.to_string()], &[])
    }

    /// `start`, with the agent given several server URLs (`--server` repeated), tried in turn.
    pub fn start_via_all(server: &TestServer, display_name: &str, urls: &[&str]) -> anyhow::Result<Self> {
        let token = server.cli().enrollment_token()?;
        Self::enroll(server, display_name, &token, urls.iter().map(|u| u.to_string()).collect(), &[])
    }

    fn enroll(
        server: &TestServer,
        display_name: &str,
        token: &str,
        via: Vec<String>,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cmdop-agent-").tempdir()?;
        let name = display_name.to_string();
        let extra = extra.iter().map(|s| s.to_string()).collect();
        let mut agent = Self { dir, child: None, machine_id: String::new(), display_name: name, runs: 0, via, extra };
        agent.spawn(server, Some(token))?;
        let state = agent.state_file();
        let enrolled = wait_until(AGENT_ONLINE, "the agent to enroll", || {
            if let Some(status) = agent.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("agent exited with {status}");
            }
            Ok(state.exists())
        });
        if let Err(e) = enrolled {
            agent.dump_logs();
            return Err(e);
        }
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&state)?)?;
        agent.machine_id = saved["machine_id"].as_str().context("no machine_id in agent.json")?.to_string();
        agent.wait_online(server)?;
        Ok(agent)
    }

    /// Starts the (already enrolled) agent again after `kill`, and waits until it is online.
    pub fn restart(&mut self, server: &TestServer) -> anyhow::Result<()> {
        self.kill();
        self.spawn(server, None)?;
        self.wait_online(server)
    }

    fn spawn(&mut self, server: &TestServer, token: Option<&str>) -> anyhow::Result<()> {
        self.runs += 1;
        let urls = if self.via.is_empty() { vec![server.url().to_string()] } else { self.via.clone() };
        let mut cmd = server.agent_command_to(&urls[0], &self.state_dir(), &self.log_path(self.runs))?;
        for url in &urls[1..] {
            cmd.args(["--server", url]);
        }
        cmd.args(["--display-name", &self.display_name]).args(&self.extra);
        if let Some(token) = token {
            cmd.args(["--token", token]);
        }
        self.child = Some(cmd.spawn().context("cannot start the agent")?);
        Ok(())
    }

    /// Waits until `connect --list --json` shows the machine online.
    pub fn wait_online(&mut self, server: &TestServer) -> anyhow::Result<()> {
        let id = self.machine_id.clone();
        let result = wait_until(AGENT_ONLINE, "the machine to be online", || {
            if let Some(status) = self.child.as_mut().map(Child::try_wait).transpose()?.flatten() {
                bail!("agent exited with {status}");
            }
            server.cli().is_online(&id)
        });
        if result.is_err() {
            self.dump_logs();
        }
        result
    }

    /// The machine id enrollment gave.
    pub fn machine_id(&self) -> &str {
        &self.machine_id
    }

    /// The display name it reports.
    pub fn display_name(&self) -> &str {
        &self.display_name
    }

    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The agent's state folder (holds `agent.json`).
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `agent.json`: machine id and credential.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("agent.json")
    }

    /// `cmdop connect password set --password-stdin --state-dir <its state>`, as run on the
    /// machine; fails unless the CLI accepts it.
    pub fn set_attach_password(&self, password: &str) -> anyhow::Result<()> {
        let state = self.state_dir();
        let args = ["connect", "password", "set", "--password-stdin", "--state-dir", &state.to_string_lossy()];
        let run = Cli::new(self.dir.path().join("cli")).run_with_stdin(&args, &format!("{password}\n"))?;
        run.expect_code(0).map(drop)
    }

    /// Kills the agent with SIGKILL (no goodbye on the stream), then the process groups of the
    /// commands it was running (they outlive it otherwise).
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let commands = children_of(child.id());
        let _ = child.kill();
        let _ = child.wait();
        for pid in commands {
            if let Ok(pid) = i32::try_from(pid) {
                let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }

    fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("agent-{run}.log"))
    }

    /// Everything the agent logged, over all its runs.
    pub fn log_text(&self) -> String {
        (1..=self.runs).map(|run| std::fs::read_to_string(self.log_path(run)).unwrap_or_default()).collect()
    }

    fn dump_logs(&self) {
        for run in 1..=self.runs {
            print_tail(&self.log_path(run));
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

/// Socket inodes a process holds (`/proc/PID/fd/* -> socket:[INODE]`).
pub fn socket_inodes(pid: u32) -> anyhow::Result<Vec<u64>> {
    let mut inodes = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let Ok(target) = std::fs::read_link(entry?.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.push(inode.parse()?);
        }
    }
    Ok(inodes)
}

/// TCP sockets of this network namespace: (inode, state) from /proc/net/tcp and tcp6, where
/// state `0A` is LISTEN and `01` ESTABLISHED.
pub fn tcp_sockets() -> anyhow::Result<Vec<(u64, String)>> {
    let mut sockets = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if let (Some(state), Some(inode)) = (cols.get(3), cols.get(9)) {
                sockets.push((inode.parse()?, state.to_string()));
            }
        }
    }
    Ok(sockets)
}

/// SHA-256 of a file and its length, read in 1 MiB pieces.
pub fn sha256_file(path: &Path) -> anyhow::Result<([u8; 32], u64)> {
    use sha2::{Digest, Sha256};
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    for _ in 0..u32::MAX {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok((hasher.finalize().into(), len));
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    bail!("{} never ended", path.display())
}

/// Writes `len` deterministic pseudo-random bytes (xorshift64*) to `path`.
pub fn write_pseudo_random(path: &Path, len: usize, seed: u64) -> anyhow::Result<()> {
    let mut state = seed | 1;
    let mut file = File::create(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let piece = &mut buf[..left.min(1 << 20)];
        for word in piece.chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let bytes = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            word.copy_from_slice(&bytes[..word.len()]);
        }
        file.write_all(piece)?;
        left -= piece.len();
    }
    Ok(())
}

/// A `/proc/PID/status` figure in KiB (`VmRSS`; `VmHWM`, the peak), if the process exists.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|rest| rest.starts_with(':')))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The cluster key file of the nodes sharing the database at `url`: one per database, made
/// by `cmdop server cluster-key new` the first time it is asked for.
pub fn cluster_key_for(url: &str) -> anyhow::Result<PathBuf> {
    let name = url.rsplit('/').next().unwrap_or("db");
    let dir = std::env::temp_dir().join("cmdop-test-cluster-keys");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{name}.key"));
    if !path.exists() {
        let out = Command::new(CMDOP).args(["server", "cluster-key", "new"]).output()?;
        ensure!(out.status.success(), "cluster-key new failed: {}", String::from_utf8_lossy(&out.stderr));
        let partial = dir.join(format!("{name}.key.{}", std::process::id()));
        std::fs::write(&partial, &out.stdout)?;
        std::fs::rename(&partial, &path)?;
    }
    Ok(path)
}

/// `cmdop connect exec MACHINE -- cat FILE` through `server` for a pseudo-random file of `size`
/// bytes made in its temp folder; the copy on stdout must hash the same. Returns how long the
/// command took.
pub fn exec_copies_byte_exact(server: &TestServer, machine: &str, size: usize, seed: u64) -> anyhow::Result<Duration> {
    let source = server.temp_dir().join("random.bin");
    let copy = server.temp_dir().join("copy.bin");
    write_pseudo_random(&source, size, seed)?;
    let args = exec_args(machine, &["--timeout", "5m"], &["cat", source.to_str().context("path")?]);
    let mut cmd = server.cli().command(&args);
    cmd.stdout(File::create(&copy)?);
    let run = run_command(&mut cmd, Duration::from_secs(240))?.expect_code(0)?;
    // Two hashes at once: sha2 is slow in a debug build.
    let source_hash = std::thread::spawn(move || sha256_file(&source));
    let (got, got_len) = sha256_file(&copy)?;
    let (want, want_len) = source_hash.join().map_err(|_| anyhow::anyhow!("hash thread panicked"))??;
    ensure!(want_len == size as u64, "source has {want_len} bytes");
    ensure!(got_len == want_len, "length differs: {got_len} of {want_len}");
    ensure!(got == want, "sha256 differs");
    Ok(run.took)
}
