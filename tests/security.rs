//! Guessing and exhaustion, end to end against real processes: password attempts are counted
//! when they start, argon2 checks run a few at a time, a stranger's guesses never lock the
//! owner out, and sign-in timing does not tell which accounts exist.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod share_support;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};

use common::TestServer;
use share_support::{Fixture, Page, get_with, post_form, post_json};

const PASSWORD: &str = "correct horse battery";

/// `cmdop server user add EMAIL --role member`; returns its one-time password.
fn add_user(server: &TestServer, email: &str) -> anyhow::Result<String> {
    let data_dir = server.data_dir();
    let args = ["server", "user", "add", email, "--role", "member", "--data-dir", data_dir.to_str().unwrap()];
    let run = server.cli().run(&args)?.expect_code(0)?;
    let line = run.stdout_text().lines().find(|l| l.starts_with("one-time password: ")).map(str::to_string);
    Ok(line.context("no password printed")?.trim_start_matches("one-time password: ").to_string())
}

/// A fresh verification-page session: its cookie and CSRF token.
fn device_session(server: &TestServer) -> anyhow::Result<(String, String)> {
    let page = get_with(&format!("{}/device", server.url()), &[])?;
    ensure!(page.status == 200, "GET /device: {}", page.status);
    let cookie = page.header("set-cookie").split(';').next().unwrap_or_default().to_string();
    let marker = "name=\"csrf\" value=\"";
    let start = page.body.find(marker).context("no csrf field")? + marker.len();
    let csrf = page.body[start..].split('"').next().unwrap_or_default().to_string();
    Ok((cookie, csrf))
}

/// One sign-in on the verification page, as the client `ip` (through the trusted proxy).
fn sign_in(server: &TestServer, session: &(String, String), ip: &str, email: &str, pw: &str) -> anyhow::Result<Page> {
    let url = format!("{}/device/login", server.url());
    let headers = [("Cookie", session.0.as_str()), ("X-Forwarded-For", ip)];
    post_form(&url, &headers, &[("email", email), ("password", pw), ("user_code", ""), ("csrf", &session.1)])
}

/// Runs `f` on `n` threads at once; their answers in order.
fn all_at_once<T: Send>(n: usize, f: impl Fn(usize) -> anyhow::Result<T> + Sync) -> anyhow::Result<Vec<T>> {
    let barrier = std::sync::Barrier::new(n);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (f, barrier) = (&f, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    f(i)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().map_err(|_| anyhow::anyhow!("thread panicked"))?).collect()
    })
}

/// `POST <link>/unlock` as the page does, from client `ip`.
fn unlock(fx: &Fixture, link_url: &str, ip: &str, password: &str) -> anyhow::Result<Page> {
    let origin = fx.server.url().to_string();
    let headers = [("Origin", origin.as_str()), ("X-Forwarded-For", ip)];
    post_json(&format!("{link_url}/unlock"), &headers, &serde_json::json!({ "password": password }))
}

#[test]
fn guesses_sent_at_once_are_throttled_and_a_stranger_cannot_lock_the_owner_out() -> anyhow::Result<()> {
    let fx = Fixture::start_with("guarded-box", &["--trusted-proxy", "127.0.0.1"])?;
    fx.agent.set_attach_password(PASSWORD)?;
    let (a, b) = (fx.share("1h", &[])?, fx.share("1h", &[])?);

    // Twelve wrong answers at once through link A: the allowance (3 free, the 4th starts the
    // back-off) is counted as they start, so most are refused before any hashing.
    let answers = all_at_once(12, |_| unlock(&fx, &a.url, "198.51.100.9", "not the password"))?;
    let statuses: Vec<u16> = answers.iter().map(|p| p.status).collect();
    let throttled = statuses.iter().filter(|s| **s == 429).count();
    ensure!(throttled >= 6, "12 guesses at once, only {throttled} throttled: {statuses:?}");
    ensure!(statuses.iter().all(|s| *s == 429 || *s == 403), "{statuses:?}");

    // The owner, elsewhere, with the right password through another link: let in at once.
    let ok = unlock(&fx, &b.url, "203.0.113.50", PASSWORD)?;
    ensure!(ok.status == 204, "the owner was held up by a stranger's guesses: {} {}", ok.status, ok.body);
    Ok(())
}

#[test]
fn sign_ins_at_once_are_throttled_and_bounded_in_memory() -> anyhow::Result<()> {
    let server = TestServer::start_with(&["--trusted-proxy", "127.0.0.1"])?;
    let password = add_user(&server, "carol@example.com")?;
    let rest_kib = common::status_kib(server.pid(), "VmRSS").context("server RSS")?;

    // Ten wrong passwords for one account from one client, at once: 5 free, then refused.
    let sessions: Vec<_> = (0..10).map(|_| device_session(&server)).collect::<anyhow::Result<_>>()?;
    let pages = all_at_once(10, |i| sign_in(&server, &sessions[i], "198.51.100.9", "carol@example.com", "wrong"))?;
    let throttled = pages.iter().filter(|p| p.body.contains("Too many failed attempts")).count();
    ensure!(throttled >= 3, "10 wrong sign-ins at once, {throttled} throttled");

    // Sixteen sign-ins at once from sixteen clients: argon2 runs a few at a time, so the
    // server's peak memory stays far below 16 x 19 MiB.
    let sessions: Vec<_> = (0..16).map(|_| device_session(&server)).collect::<anyhow::Result<_>>()?;
    let pages = all_at_once(16, |i| {
        let ip = format!("192.0.2.{}", i + 1);
        sign_in(&server, &sessions[i], &ip, &format!("user{i}@example.com"), "wrong")
    })?;
    ensure!(pages.iter().all(|p| p.status == 401 && p.body.contains("Wrong email")), "every sign-in is checked");
    let peak_kib = common::status_kib(server.pid(), "VmHWM").context("server peak RSS")?;
    eprintln!("server RSS at rest {rest_kib} KiB, peak after 16 sign-ins {peak_kib} KiB");
    ensure!(peak_kib < rest_kib + 100 * 1024, "peak {peak_kib} KiB from {rest_kib} KiB at rest");

    // The owner, from elsewhere, still signs in.
    let session = device_session(&server)?;
    let ok = sign_in(&server, &session, "203.0.113.50", "carol@example.com", &password)?;
    ensure!(ok.status == 303, "the owner was locked out by a stranger: {} {}", ok.status, ok.body);
    Ok(())
}

#[test]
fn sign_in_timing_does_not_reveal_which_accounts_exist() -> anyhow::Result<()> {
    let server = TestServer::start_with(&["--trusted-proxy", "127.0.0.1"])?;
    add_user(&server, "dora@example.com")?;
    let timed = |email: &str, ip: &str| -> anyhow::Result<Duration> {
        let session = device_session(&server)?;
        let started = Instant::now();
        let page = sign_in(&server, &session, ip, email, "wrong password")?;
        ensure!(page.status == 401, "{email}: {}", page.status);
        Ok(started.elapsed())
    };
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..3 {
        known.push(timed("dora@example.com", &format!("192.0.2.{i}"))?);
        unknown.push(timed(&format!("nobody{i}@example.com"), &format!("198.51.100.{i}"))?);
    }
    known.sort();
    unknown.sort();
    eprintln!("wrong password: known account {known:?}, unknown account {unknown:?}");
    ensure!(unknown[1] * 3 > known[1], "an unknown email answers much faster: {unknown:?} vs {known:?}");
    Ok(())
}

#[test]
fn a_browser_message_over_one_mebibyte_closes_the_socket() -> anyhow::Result<()> {
    let fx = Fixture::start("paste-box")?;
    let link = fx.share("1h", &[])?;
    let (ws, _, _) = share_support::ws::WsClient::open_ready(&link.url)?;
    ws.type_line("echo small-paste-$((6*7))")?;
    ws.wait_exact_line(0, "small-paste-42", Duration::from_secs(20))?;
    ws.send_bytes(&vec![b'x'; 2 << 20])?;
    // The server stops reading at the limit and ends the connection (1009, or a reset when
    // the rest of the message is still in flight).
    if let Some(closed) = ws.wait_gone(Duration::from_secs(20))? {
        ensure!(closed.code == 1009, "a 2 MiB message: closed with {} {:?}", closed.code, closed.reason);
    }
    Ok(())
}

#[test]
fn one_enrollment_token_enrolls_one_machine_even_when_raced() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let token = server.cli().enrollment_token()?;
    let mut agents = Vec::new();
    for i in 0..6 {
        let state = server.temp_dir().join(format!("racer-{i}"));
        let mut cmd = server.agent_command(&state, &server.temp_dir().join(format!("racer-{i}.log")))?;
        agents.push(cmd.args(["--token", &token, "--display-name", &format!("racer-{i}")]).spawn()?);
    }
    // An agent whose enrollment is refused exits; the winner keeps running.
    let mut exited = 0;
    common::wait_until(Duration::from_secs(30), "five racers to be refused", || {
        exited = agents.iter_mut().map(|a| a.try_wait()).filter(|w| matches!(w, Ok(Some(_)))).count();
        Ok(exited >= 5)
    })?;
    let machines = server.cli().machines()?;
    for agent in &mut agents {
        let _ = agent.kill();
        let _ = agent.wait();
    }
    ensure!(exited == 5, "{exited} of 6 racers were refused, expected 5");
    ensure!(machines.len() == 1, "one token enrolled several machines");
    Ok(())
}

#[test]
fn the_one_time_password_signs_in_once() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let password = add_user(&server, "erin@example.com")?;
    let first = sign_in(&server, &device_session(&server)?, "192.0.2.1", "erin@example.com", &password)?;
    ensure!(first.status == 303, "first sign-in: {} {}", first.status, first.body);
    let again = sign_in(&server, &device_session(&server)?, "192.0.2.1", "erin@example.com", &password)?;
    ensure!(again.status == 401 && again.body.contains("Wrong email"), "used twice: {}", again.status);
    // `user add` again gives a fresh one.
    let fresh = add_user(&server, "erin@example.com")?;
    let third = sign_in(&server, &device_session(&server)?, "192.0.2.1", "erin@example.com", &fresh)?;
    ensure!(third.status == 303, "a fresh one-time password: {}", third.status);
    Ok(())
}

/// Whether the server has closed `conn` (a read sees the end, or an error).
fn closed_by_server(mut conn: &std::net::TcpStream) -> bool {
    use std::io::Read;
    let _ = conn.set_read_timeout(Some(Duration::from_millis(20)));
    let mut buf = [0u8; 256];
    match conn.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

#[test]
fn clients_that_never_finish_their_headers_are_cut_off() -> anyhow::Result<()> {
    use std::io::Write;
    let server = TestServer::start_with(&["--header-timeout", "1s"])?;
    let mut conns = Vec::new();
    for i in 0..60 {
        let mut c = std::net::TcpStream::connect(server.addr())?;
        if i % 2 == 0 {
            c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")?; // and never the rest
        }
        conns.push(c);
    }
    let mut open = conns.len();
    common::wait_until(Duration::from_secs(15), "the server to close every half-sent request", || {
        open = conns.iter().filter(|c| !closed_by_server(c)).count();
        Ok(open == 0)
    })
    .with_context(|| format!("{open} of 60 still open"))?;
    ensure!(server.http_get("/healthz")?.0 == 200, "the server still serves");
    Ok(())
}

#[test]
fn connections_beyond_the_cap_wait_for_a_free_slot() -> anyhow::Result<()> {
    let server = TestServer::start_with(&["--max-connections", "4", "--header-timeout", "60s"])?;
    let idle: Vec<_> = (0..4).map(|_| std::net::TcpStream::connect(server.addr())).collect::<Result<_, _>>()?;
    // Give the server time to take all four: a fifth request then waits, unanswered.
    common::wait_until(Duration::from_secs(5), "four connections accepted", || {
        Ok(common::socket_inodes(server.pid())?.len() >= 5)
    })?;
    let addr = server.addr();
    let fifth = std::thread::spawn(move || {
        let started = Instant::now();
        let page = get_with(&format!("http://{addr}/healthz"), &[]);
        (started.elapsed(), page.map(|p| p.status).unwrap_or(0))
    });
    std::thread::sleep(Duration::from_millis(700)); // the fifth must still be waiting after this
    drop(idle);
    let (waited, status) = fifth.join().map_err(|_| anyhow::anyhow!("thread panicked"))?;
    ensure!(status == 200, "the fifth request was not served once a slot freed: {status}");
    ensure!(waited >= Duration::from_millis(600), "the fifth request was served at once ({waited:?}): no cap");
    Ok(())
}

#[test]
fn quickstart_stops_promptly_on_sigterm_with_a_browser_attached() -> anyhow::Result<()> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let mut child = std::process::Command::new(common::CMDOP)
        .args(["quickstart", "--listen", "127.0.0.1:0", "--json", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("HOME", dir.path())
        .env("CMDOP_HOME", dir.path().join("cli"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(dir.path().join("quickstart.log"))?)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(60)).context("quickstart never said it was ready")?;
    let ready: serde_json::Value = serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))?;
    let share_url = ready["share_url"].as_str().context("share_url")?;
    // A browser on the share link: a connection that never ends on its own.
    let (ws, _, _) = share_support::ws::WsClient::open_ready(share_url)?;
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id())?);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)?;
    let started = Instant::now();
    let status = common::wait_child(&mut child, Duration::from_secs(10))?;
    eprintln!("quickstart exited {status} {:?} after SIGTERM", started.elapsed());
    drop(ws);
    Ok(())
}

/// `POST /oauth/token` with the refresh grant; status and JSON body.
fn refresh_grant(server: &TestServer, refresh: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let url = format!("{}/oauth/token", server.url());
    let page = post_form(&url, &[], &[("grant_type", "refresh_token"), ("refresh_token", refresh)])?;
    Ok((page.status, serde_json::from_str(&page.body).with_context(|| format!("not JSON: {}", page.body))?))
}

#[test]
fn replaying_a_used_refresh_token_revokes_the_whole_chain() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let creds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(server.cli().home().join("credentials.json"))?)?;
    let first = creds["refresh_token"].as_str().context("no refresh token")?.to_string();
    let (status, second) = refresh_grant(&server, &first)?;
    ensure!(status == 200, "first rotation: {status} {second}");
    let (status, third) = refresh_grant(&server, second["refresh_token"].as_str().context("refresh_token")?)?;
    ensure!(status == 200, "second rotation: {status} {third}");

    // A thief (or the victim) replays the first, already used refresh token.
    let (status, replay) = refresh_grant(&server, &first)?;
    ensure!(status == 400 && replay["error"] == "invalid_grant", "replay: {status} {replay}");
    let said = replay["error_description"].as_str().unwrap_or_default();
    ensure!(said.contains("already used") && said.contains("cmdop login"), "description: {said}");

    // Every token descended from that sign-in is dead: the newest refresh token and the
    // access tokens of every generation.
    let (status, latest) = refresh_grant(&server, third["refresh_token"].as_str().context("refresh_token")?)?;
    ensure!(status == 400 && latest["error"] == "invalid_grant", "the newest refresh token still works: {latest}");
    let whoami = server.cli().run(&["whoami"])?;
    ensure!(whoami.code == 3, "the first access token still works: {whoami}");
    let cli = common::Cli::new(server.temp_dir().join("thief"));
    std::fs::create_dir_all(cli.home())?;
    let stolen = serde_json::json!({
        "server_url": server.url(), "access_token": third["access_token"],
        "refresh_token": third["refresh_token"], "expires_at": 4_000_000_000i64,
    });
    std::fs::write(cli.home().join("credentials.json"), stolen.to_string())?;
    let whoami = cli.run(&["whoami"])?;
    ensure!(whoami.code == 3, "the newest access token still works: {whoami}");
    Ok(())
}
