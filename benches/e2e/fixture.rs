//! The real processes: a `cmdop server` on 127.0.0.1 port 0 in a temporary folder, an owner
//! CLI signed in with `cmdop server local-login`, and an enrolled `cmdop agent`. Everything
//! started here is killed (by its own PID, never by name) when dropped; every wait is bounded.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use serde::Deserialize;
use tempfile::TempDir;

use crate::procfs::{children_of, is_running};

/// The binary under test: the one cargo built in the bench profile (release), unless
/// `CMDOP_BENCH_BIN` names another (to compare two builds on the same noisy machine).
pub fn cmdop() -> String {
    std::env::var("CMDOP_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_cmdop").to_string())
}
const SERVER_START: Duration = Duration::from_secs(30);
const AGENT_ONLINE: Duration = Duration::from_secs(30);
const CLI_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(25);

/// What one CLI run said.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` at most `within`; kills it past the deadline.
pub fn wait_child(child: &mut Child, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    for _ in 0..(within.as_millis() / 2 + 2) {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("process {} still running after {within:?}; killed it", child.id())
}

/// Polls `cond` (bounded in count and time).
pub fn wait_until(within: Duration, what: &str, mut cond: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let deadline = Instant::now() + within;
    let mut last = None;
    for _ in 0..(within.as_millis() / POLL.as_millis() + 2) {
        match cond() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(POLL);
    }
    match last {
        Some(e) => bail!("timed out after {within:?} waiting for {what}: {e:#}"),
        None => bail!("timed out after {within:?} waiting for {what}"),
    }
}

/// `cmdop connect share --json`.
#[derive(Clone, Debug, Deserialize)]
pub struct Link {
    pub id: String,
    pub url: String,
    pub expires_at: String,
}

impl Link {
    /// `expires_at` as a wall-clock time.
    pub fn deadline(&self) -> anyhow::Result<SystemTime> {
        let t = time::OffsetDateTime::parse(&self.expires_at, &time::format_description::well_known::Rfc3339)
            .with_context(|| format!("{:?} is not RFC 3339", self.expires_at))?;
        Ok(SystemTime::from(t))
    }

    /// `ws://.../s/TOKEN/ws`.
    pub fn socket_url(&self) -> String {
        format!("{}/ws", self.url.replacen("http://", "ws://", 1))
    }
}

/// A server, its signed-in owner CLI, and (optionally) one real agent.
pub struct Fixture {
    dir: TempDir,
    pub url: String,
    server: Child,
    agent: Option<Child>,
    pub machine_id: String,
}

/// `cmdop server` flags that let `sessions` link sessions open through `links` links, all from
/// one address: the benches measure the load itself, not the limits that would refuse it
/// (16 sessions per link by default).
#[allow(dead_code)] // not every bench that includes this file opens many sessions
pub fn session_limits(sessions: usize, links: usize) -> Vec<String> {
    let per_link = sessions.div_ceil(links.max(1)) + 8;
    [
        ("--max-sessions-per-link", per_link),
        ("--max-sessions-per-ip", sessions + 64),
        ("--max-sessions-per-machine", sessions + 64),
    ]
    .iter()
    .flat_map(|(flag, n)| [flag.to_string(), n.to_string()])
    .collect()
}

impl Fixture {
    /// Starts a server and signs the owner CLI in.
    pub fn server() -> anyhow::Result<Self> {
        Self::server_with(&[])
    }

    /// Starts a server with extra `cmdop server` flags (limits) and signs the owner CLI in.
    pub fn server_with(flags: &[String]) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cmdop-bench-").tempdir()?;
        let log = File::create(dir.path().join("server.log"))?;
        let mut server = Command::new(cmdop())
            .args(["server", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(flags)
            .env("HOME", dir.path())
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .context("cannot start the server")?;
        let url = match crate::server_line::server_url(&mut server, SERVER_START) {
            Ok(url) => url,
            Err(e) => {
                let _ = server.kill();
                let _ = server.wait();
                return Err(e);
            }
        };
        let fx = Self { dir, url, server, agent: None, machine_id: String::new() };
        let data = fx.dir.path().join("data");
        let login = fx.cli(&[
            "server".as_ref(),
            "local-login".as_ref(),
            "--data-dir".as_ref(),
            data.as_os_str(),
            "--server".as_ref(),
            fx.url.as_ref(),
        ])?;
        ensure!(login.code == 0, "local-login failed: {}", login.stderr);
        Ok(fx)
    }

    /// Starts a server and one enrolled agent, waits until the machine is online.
    pub fn with_agent() -> anyhow::Result<Self> {
        Self::with_agent_and(&[])
    }

    /// [`Fixture::with_agent`] with extra `cmdop server` flags.
    pub fn with_agent_and(server_flags: &[String]) -> anyhow::Result<Self> {
        let mut fx = Self::server_with(server_flags)?;
        let token = fx.enrollment_token()?;
        let state = fx.dir.path().join("agent-state");
        let log = File::create(fx.dir.path().join("agent.log"))?;
        let agent = Command::new(cmdop())
            .args(["agent", "--server", &fx.url, "--display-name", "bench", "--token", &token, "--state-dir"])
            .arg(&state)
            .env("HOME", fx.dir.path())
            .env_remove("RUST_LOG")
            .env_remove("CMDOP_ENROLL_TOKEN")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("cannot start the agent")?;
        fx.agent = Some(agent);
        let file = state.join("agent.json");
        wait_until(AGENT_ONLINE, "the agent to enroll", || Ok(file.exists()))?;
        let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file)?)?;
        fx.machine_id = saved["machine_id"].as_str().context("no machine_id in agent.json")?.to_string();
        let id = fx.machine_id.clone();
        wait_until(AGENT_ONLINE, "the machine to be online", || {
            let run = fx.cli(&["connect", "--list", "--json"])?;
            let rows: Vec<serde_json::Value> = serde_json::from_str(&run.stdout)?;
            Ok(rows.iter().any(|r| r["id"] == id.as_str() && r["online"] == true))
        })?;
        Ok(fx)
    }

    /// The owner's `CMDOP_HOME`.
    fn home(&self) -> PathBuf {
        self.dir.path().join("owner")
    }

    /// A `cmdop ARGS` command as the owner, ready to spawn.
    pub fn cli_command<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = Command::new(cmdop());
        cmd.args(args)
            .env("CMDOP_HOME", self.home())
            .env("HOME", self.home())
            .env("RUST_LOG", "warn")
            .env_remove("CMDOP_ENROLL_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `cmdop ARGS` as the owner (bounded).
    pub fn cli<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> anyhow::Result<Run> {
        use std::io::Read;
        let mut child = self.cli_command(args).spawn().context("cannot run cmdop")?;
        let mut out = child.stdout.take().context("no stdout")?;
        let mut err = child.stderr.take().context("no stderr")?;
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        });
        let err = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        });
        let status = wait_child(&mut child, CLI_DEADLINE)?;
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        Ok(Run { code: status.code().unwrap_or(-1), stdout, stderr })
    }

    /// `cmdop fleet token create`.
    pub fn enrollment_token(&self) -> anyhow::Result<String> {
        let run = self.cli(&["fleet", "token", "create"])?;
        ensure!(run.code == 0, "token create failed: {}", run.stderr);
        Ok(run.stdout.trim().to_string())
    }

    /// `cmdop connect share MACHINE --ttl TTL --json`.
    pub fn share(&self, machine: &str, ttl: &str) -> anyhow::Result<Link> {
        let run = self.cli(&["connect", "share", machine, "--ttl", ttl, "--json"])?;
        ensure!(run.code == 0, "share failed: {}", run.stderr);
        serde_json::from_str(&run.stdout).with_context(|| format!("share printed {:?}", run.stdout))
    }

    /// The server's PID.
    pub fn server_pid(&self) -> u32 {
        self.server.id()
    }

    /// The agent's PID (0 without one).
    pub fn agent_pid(&self) -> u32 {
        self.agent.as_ref().map_or(0, Child::id)
    }

    /// Tails of the process logs, for an error report.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for name in ["server.log", "agent.log"] {
            let text = std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out += &format!("--- {name} ---\n{}\n", lines[lines.len().saturating_sub(20)..].join("\n"));
        }
        out
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            // The shells the agent started lead their own sessions: end their groups too.
            let shells = children_of(agent.id());
            let _ = agent.kill();
            let _ = agent.wait();
            for pid in &shells {
                if let Ok(pid) = i32::try_from(*pid) {
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
            // A thousand dying shells are a burst of work: let it pass before the next phase.
            let _ = wait_until(Duration::from_secs(30), "the shells to exit", || {
                Ok(shells.iter().all(|p| !is_running(*p)))
            });
        }
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// `VmRSS` of a process, KiB.
pub fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
    line.split_whitespace().nth(1).context("odd VmRSS")?.parse().context("odd VmRSS")
}

/// Threads of a process.
pub fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in clock ticks -> seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After "pid (comm)": state is field 0, utime 11, stime 12.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Raises this process's open-file limit to its hard limit (children inherit it).
pub fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft)
        }
        Err(_) => 0,
    }
}
