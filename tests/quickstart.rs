//! `cmdop quickstart`: one process that serves, signs its CLI in, enrolls its agent and shares
//! this machine, all through the server's public surface; and the loopback-only approval it
//! signs in with, which refuses callers without the bootstrap secret.

mod common;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use common::{Cli, TestServer, wait_child};
use serde::Deserialize;
use tempfile::TempDir;

/// How long quickstart may take to print its ready line (server, sign-in, enrollment, link).
const READY_WITHIN: Duration = Duration::from_secs(60);
/// How soon after SIGTERM quickstart must have exited.
const EXIT_WITHIN: Duration = Duration::from_secs(10);

/// The `--json` ready line (CONTRACT.md); unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Ready {
    server_url: String,
    share_url: String,
    share_id: String,
    machine_id: String,
    expires_at: String,
    /// The web console's one-time sign-in URL (docs/reference.md).
    console_url: String,
}

/// A running `cmdop quickstart --json` with its own data and CLI folders; killed in `Drop`.
struct Quickstart {
    dir: TempDir,
    child: Child,
    ready: Ready,
}

impl Quickstart {
    fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cmdop-quickstart-").tempdir()?;
        let cli = Cli::new(dir.path().join("home"));
        let mut cmd = cli.command(&["quickstart", "--listen", "127.0.0.1:0", "--json", "--data-dir"]);
        cmd.arg(dir.path().join("data")).stderr(File::create(dir.path().join("quickstart.log"))?);
        let mut child = cmd.spawn().context("cannot start cmdop quickstart")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let ready = rx
            .recv_timeout(READY_WITHIN)
            .context("quickstart printed no ready line in time")
            .and_then(|line| serde_json::from_str(&line).with_context(|| format!("odd ready line {line:?}")));
        match ready {
            Ok(ready) => Ok(Self { dir, child, ready }),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                print_log(&dir);
                Err(e)
            }
        }
    }

    fn cli(&self) -> Cli {
        Cli::new(self.dir.path().join("home"))
    }
}

fn print_log(dir: &TempDir) {
    let log = std::fs::read_to_string(dir.path().join("quickstart.log")).unwrap_or_default();
    eprintln!("===== quickstart log =====\n{log}");
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            print_log(&self.dir);
        }
    }
}

/// One HTTP/1.1 request over a TcpStream: status code and body.
fn http(addr: SocketAddr, request_head: &str, body: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{request_head}\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no status")?;
    Ok((status, body.to_string()))
}

fn addr_of(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("http://").context("not an http URL")?;
    Ok(rest.split('/').next().unwrap_or(rest).parse()?)
}

#[test]
fn quickstart_signs_in_enrolls_and_shares_this_machine_through_the_server() -> anyhow::Result<()> {
    let quickstart = Quickstart::start()?;
    let ready = &quickstart.ready;
    ensure!(ready.server_url.starts_with("http://127.0.0.1:"), "server_url {}", ready.server_url);
    ensure!(ready.share_url.starts_with(&format!("{}/s/", ready.server_url)), "share_url {}", ready.share_url);
    let console = format!("{}/console/signin/", ready.server_url);
    ensure!(ready.console_url.starts_with(&console), "console_url {}", ready.console_url);
    ensure!(!ready.share_id.is_empty() && ready.expires_at.ends_with('Z'), "{ready:?}");

    let machine = quickstart.cli().machine(&ready.machine_id)?.context("the CLI does not list quickstart's machine")?;
    ensure!(machine.online, "quickstart's machine is listed offline: {machine:?}");
    let shares = quickstart.cli().run(&["connect", "shares", "--json"])?.expect_code(0)?;
    ensure!(shares.stdout_text().contains(&ready.share_id), "the link is not listed: {shares}");

    let path = ready.share_url.strip_prefix(&ready.server_url).context("link off the server")?;
    let (status, _) = http(addr_of(&ready.server_url)?, &format!("GET {path} HTTP/1.1"), "")?;
    ensure!(status == 200, "the share link answered {status}");
    Ok(())
}

/// Even with a command streaming through it: graceful shutdown must not wait on open streams.
#[test]
fn quickstart_exits_within_seconds_of_sigterm() -> anyhow::Result<()> {
    use nix::sys::signal::{Signal, kill};
    let mut quickstart = Quickstart::start()?;
    let exec = common::exec_args(&quickstart.ready.machine_id, &[], &["sh", "-c", "echo started; exec sleep 60"]);
    let mut streaming = quickstart.cli().command(&exec).spawn()?;
    let stdout = streaming.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first = rx.recv_timeout(READY_WITHIN);
    ensure!(first.as_deref() == Ok("started"), "the remote command did not start: {first:?}");

    let pid = nix::unistd::Pid::from_raw(i32::try_from(quickstart.child.id())?);
    kill(pid, Signal::SIGTERM)?;
    let asked = Instant::now();
    let status = wait_child(&mut quickstart.child, EXIT_WITHIN);
    let _ = streaming.kill();
    let _ = streaming.wait();
    let status = status?;
    ensure!(status.success(), "quickstart exited with {status} after {:?}", asked.elapsed());
    Ok(())
}

#[test]
fn local_approval_refuses_a_caller_without_the_bootstrap_secret() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let addr = server.addr();
    let form = "client_id=cmdop-cli&client_name=test&client_host=test";
    let (status, body) =
        http(addr, "POST /oauth/device HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded", form)?;
    ensure!(status == 200, "POST /oauth/device answered {status}: {body}");
    let start: serde_json::Value = serde_json::from_str(body.trim()).context("device start is not JSON")?;
    let user_code = start["user_code"].as_str().context("no user_code")?;

    let head = "POST /oauth/device/approve-local HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded";
    let secret_file: PathBuf = server.data_dir().join("bootstrap-secret.json");
    ensure!(secret_file.exists(), "the server keeps no bootstrap secret in its data folder");
    for form in [format!("user_code={user_code}"), format!("user_code={user_code}&secret=cmdopb_guess")] {
        let (status, body) = http(addr, head, &form)?;
        ensure!(status == 403, "approve-local with {form:?} answered {status}: {body}");
        ensure!(body.contains("cmdop login"), "the refusal does not say what to do instead: {body}");
    }
    Ok(())
}
