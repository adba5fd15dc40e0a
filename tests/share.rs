//! Share links end to end at the protocol level (CONTRACT.md "Share links in the browser"):
//! a real server and agent, links made with the real CLI, the page over HTTP and the
//! terminal over a WebSocket, all on 127.0.0.1. Each test has its own server and agent.

mod common;
mod share_support;

use std::io::{Read, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail, ensure};
use common::{children_of, wait_until};
use share_support::ws::{Refused, USER_AGENT, WsClient, socket_url};
use share_support::{Fixture, get, receive_queue, stalled_socket, terminal_lines};

/// How long a command typed into a shell may take to show its output.
const SHELL: Duration = Duration::from_secs(10);

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Exit code of `connect exec MACHINE -- sh -c SCRIPT`.
fn remote_sh(fx: &Fixture, script: &str) -> anyhow::Result<i32> {
    Ok(fx.server.cli().exec(fx.machine(), &[], &["sh", "-c", script])?.code)
}

#[test]
fn terminal_lines_strip_escapes_and_keep_prompts_apart() {
    let out = "\u{1b}]0;root@h: ~\u{7}root@h:~# echo share-ok\r\n\u{1b}[?2004l\rshare-ok\r\n\u{1b}[?2004hroot@h:~# ";
    assert_eq!(terminal_lines(out), vec!["root@h:~# echo share-ok", "share-ok", "root@h:~#"]);
}

// ---- the page -----------------------------------------------------------------------------

#[test]
fn page_of_a_valid_link_escapes_the_machine_name_and_sends_strict_headers() -> anyhow::Result<()> {
    let name = "<script>alert(1)</script>";
    let fx = Fixture::start(name)?;
    let link = fx.share("1h", &[])?;
    let page = get(&link.url)?;

    ensure!(page.status == 200, "GET {} answered {}: {}", link.url, page.status, page.body);
    ensure!(page.header("content-type").starts_with("text/html"), "content-type {}", page.header("content-type"));
    ensure!(!page.body.contains(name), "the display name reached the page unescaped:\n{}", page.body);
    ensure!(
        page.body.contains("&#60;script") || page.body.contains("&lt;script"),
        "the escaped display name is not on the page:\n{}",
        page.body
    );
    // Every script is an external file: the CSP below could not run an inline one.
    let scripts = page.body.matches("<script").count();
    ensure!(
        scripts > 0 && scripts == page.body.matches("<script src=").count(),
        "inline script on the page:\n{}",
        page.body
    );

    let csp = page.header("content-security-policy");
    ensure!(!csp.is_empty(), "no Content-Security-Policy");
    ensure!(!csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"), "weak CSP: {csp}");
    ensure!(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'"), "CSP {csp}");
    ensure!(page.header("referrer-policy") == "no-referrer", "Referrer-Policy {:?}", page.header("referrer-policy"));
    ensure!(page.header("x-frame-options") == "DENY", "X-Frame-Options {:?}", page.header("x-frame-options"));
    ensure!(page.header("cache-control").contains("no-store"), "Cache-Control {:?}", page.header("cache-control"));
    ensure!(page.header("set-cookie").is_empty(), "the link page sets a cookie");
    Ok(())
}

#[test]
fn tampered_or_truncated_tokens_are_404_at_every_position() -> anyhow::Result<()> {
    const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let fx = Fixture::start("tamper")?;
    let link = fx.share("1h", &[])?;
    let token = link.token().as_bytes().to_vec();
    ensure!(
        token.len() == 126 && token.iter().all(|b| B64URL.contains(b)),
        "unexpected token shape {:?}",
        link.token()
    );
    let base = link.url.strip_suffix(link.token()).context("token not at the end of the URL")?.to_string();

    let started = Instant::now();
    // Flip the lowest bit of each character's 6-bit value (the subtlest change: in the last
    // character it only touches the padding bits), then the highest.
    for flip in [1usize, 32] {
        for i in 0..token.len() {
            let mut t = token.clone();
            let value = B64URL.iter().position(|b| *b == t[i]).context("not base64url")?;
            t[i] = B64URL[value ^ flip];
            let url = format!("{base}{}", String::from_utf8(t)?);
            let page = get(&url)?;
            ensure!(page.status == 404, "position {i} (flip {flip}): {url} answered {}", page.status);
            if i == 0 {
                ensure!(page.body.contains("not valid"), "404 page says: {}", page.body);
                ensure!(
                    page.header("x-frame-options") == "DENY" && !page.header("content-security-policy").is_empty(),
                    "error page headers"
                );
            }
        }
    }
    let short = String::from_utf8(token[..token.len() - 1].to_vec())?;
    let long = format!("{}A", link.token());
    for t in [short.as_str(), long.as_str(), "", "x"] {
        let page = get(&format!("{base}{t}"))?;
        ensure!(page.status == 404, "token {t:?} answered {}", page.status);
    }
    let mut tampered = token.clone();
    tampered[40] = if tampered[40] == b'A' { b'B' } else { b'A' };
    let tampered_url = format!("{base}{}", String::from_utf8(tampered)?);
    match WsClient::open(&tampered_url, None) {
        Err(Refused::Status(404)) => {}
        Err(e) => bail!("socket of a tampered link: {e}"),
        Ok(_) => bail!("socket of a tampered link was accepted"),
    }
    ensure!(get(&link.url)?.status == 200, "the genuine link stopped working");
    println!("{} tampered tokens refused in {:?}", 2 * token.len() + 4, started.elapsed());
    Ok(())
}

// ---- the terminal -------------------------------------------------------------------------

#[test]
fn shell_over_the_socket_runs_commands_follows_resize_and_reports_exit() -> anyhow::Result<()> {
    let fx = Fixture::start("shell")?;
    let link = fx.share("1h", &[])?;
    let (ws, _session, offset) = WsClient::open_ready(&link.url)?;
    ensure!(offset == 0, "a new session starts at offset 0, not {offset}");

    ws.type_line("echo share-ok")?;
    ws.wait_exact_line(0, "share-ok", SHELL)?;

    ws.send_json(&serde_json::json!({"type": "resize", "cols": 123, "rows": 45}))?;
    let from = ws.output_len();
    ws.type_line("stty size")?;
    ws.wait_exact_line(from, "45 123", SHELL)?;

    // Garbage control messages are ignored, not fatal.
    ws.send_json(&serde_json::json!({"type": "resize", "cols": -1, "rows": 2}))?;
    ws.send_json(&serde_json::json!({"type": "nope"}))?;
    let from = ws.output_len();
    ws.type_line("echo still-$((40+2))")?;
    ws.wait_exact_line(from, "still-42", SHELL)?;

    ws.type_line("exit 3")?;
    let closed = ws.wait_closed(SHELL)?;
    ensure!(closed.code == 1000, "shell exit closed the socket with {} {:?}", closed.code, closed.reason);
    let exit = ws.texts().into_iter().find(|t| t["type"] == "exit").context("no exit message before the close")?;
    ensure!(exit["code"] == 3, "exit message {exit}");
    Ok(())
}

/// The one shell the agent runs (its child whose stdin is a pts): pid and terminal.
fn agent_shell(fx: &Fixture) -> anyhow::Result<(u32, String)> {
    let mut found = None;
    wait_until(Duration::from_secs(5), "the shell under the agent", || {
        found = children_of(fx.agent.pid()).into_iter().find_map(|pid| {
            let tty = std::fs::read_link(format!("/proc/{pid}/fd/0")).ok()?;
            let tty = tty.to_string_lossy().into_owned();
            tty.starts_with("/dev/pts/").then_some((pid, tty))
        });
        Ok(found.is_some())
    })?;
    found.context("no shell")
}

#[test]
fn read_only_link_drops_every_input_byte_but_shows_output() -> anyhow::Result<()> {
    let fx = Fixture::start("viewer")?;
    let link = fx.share("1h", &["--read-only"])?;
    ensure!(link.read_only, "share --read-only --json says read_only false");
    let (ws, _session, _offset) = WsClient::open_ready(&link.url)?;

    let file = format!("/tmp/{}", unique("cmdop-ro"));
    ws.type_line(&format!("touch {file}"))?;
    ws.type_line("echo typed-by-viewer")?;

    // Output still flows: whatever the shell's terminal prints reaches the viewer.
    let (_, tty) = agent_shell(&fx)?;
    let marker = unique("shown-to-viewer");
    std::fs::OpenOptions::new().write(true).open(&tty)?.write_all(format!("\n{marker}\n").as_bytes())?;
    ws.wait_exact_line(0, &marker, SHELL)?;

    // Give dropped input every chance to have arrived, then look at the machine.
    std::thread::sleep(Duration::from_millis(500));
    let exists = remote_sh(&fx, &format!("test -e {file}"))?;
    ensure!(exists == 1, "`test -e {file}` on the machine exited {exists}: the viewer's keystrokes reached the shell");
    let out = ws.output_text();
    ensure!(!out.contains("touch") && !out.contains("typed-by-viewer"), "viewer input was echoed: {out:?}");

    // Nor can a viewer end the shell.
    ws.send_bytes(b"\x04exit\r")?;
    std::thread::sleep(Duration::from_millis(500));
    ensure!(ws.closed().is_none(), "a viewer ended the shell: {:?}", ws.closed());
    ensure!(remote_sh(&fx, &format!("test -e {file}"))? == 1, "{file} appeared");
    Ok(())
}

#[test]
fn foreign_origin_is_refused_with_403_and_same_origin_works() -> anyhow::Result<()> {
    let fx = Fixture::start("origin")?;
    let link = fx.share("1h", &[])?;
    let port = fx.server.addr().port();
    let (other_host, other_scheme) = (format!("http://localhost:{port}"), format!("https://127.0.0.1:{port}"));
    for origin in ["http://evil.example", other_host.as_str(), other_scheme.as_str(), "null"] {
        match WsClient::open(&link.url, Some(origin)) {
            Err(Refused::Status(403)) => {}
            Err(e) => bail!("Origin {origin}: {e}, expected 403"),
            Ok(_) => bail!("Origin {origin} was accepted"),
        }
    }
    let ws = WsClient::open(&link.url, Some(fx.server.url())).map_err(|e| anyhow::anyhow!("same origin: {e}"))?;
    ws.wait_ready()?;
    ws.type_line("echo same-origin-ok")?;
    ws.wait_exact_line(0, "same-origin-ok", SHELL)?;
    let row = fx.share_row(&link.id)?;
    ensure!(row["opens"] == 1 && row["active_sessions"] == 1, "refused upgrades must not count: {row}");
    Ok(())
}

// ---- the end of a link ---------------------------------------------------------------------

#[test]
fn expired_link_closes_the_socket_with_4001_at_the_deadline_then_answers_410() -> anyhow::Result<()> {
    let fx = Fixture::start("expiry")?;
    let link = fx.share("5s", &[])?;
    let deadline = link.deadline()?;
    let (ws, _session, _offset) = WsClient::open_ready(&link.url)?;
    ensure!(SystemTime::now() < deadline, "the 5 s link expired before its socket was open");
    ws.type_line("echo before-expiry")?;
    ws.wait_exact_line(0, "before-expiry", SHELL)?;

    let closed = ws.wait_closed(Duration::from_secs(8))?;
    ensure!(closed.code == 4001, "closed with {} {:?}, expected 4001", closed.code, closed.reason);
    match closed.wall.duration_since(deadline) {
        Ok(late) => ensure!(late <= Duration::from_secs(1), "closed {late:?} after the deadline"),
        Err(early) => {
            ensure!(early.duration() <= Duration::from_millis(20), "closed {:?} before the deadline", early.duration())
        }
    }

    let page = get(&link.url)?;
    ensure!(page.status == 410 && page.body.contains("expired"), "after expiry: {} {}", page.status, page.body);
    let late = WsClient::open(&link.url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let closed = late.wait_closed(Duration::from_secs(5))?;
    ensure!(closed.code == 4001, "a socket opened after expiry closed with {}", closed.code);
    Ok(())
}

/// Runs `cmdop ARGS` and returns the moment its process exited (waited for directly, not
/// polled) with its exit code and output.
fn run_timed(cli: &common::Cli, args: &[&str]) -> anyhow::Result<(Instant, i32, String)> {
    let mut child = cli.command(args).stdin(Stdio::null()).spawn()?;
    let pid = child.id();
    let mut stdout = child.stdout.take().context("stdout")?;
    let mut stderr = child.stderr.take().context("stderr")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let status = child.wait();
        let _ = tx.send((status, Instant::now()));
    });
    let Ok((status, exited)) = rx.recv_timeout(Duration::from_secs(30)) else {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        bail!("cmdop {args:?} still running after 30 s; killed it");
    };
    let (mut out, mut err) = (String::new(), String::new());
    stdout.read_to_string(&mut out)?;
    stderr.read_to_string(&mut err)?;
    Ok((exited, status?.code().unwrap_or(-1), format!("{out}{err}")))
}

#[test]
fn revoked_link_closes_the_socket_with_4002_at_once_and_ends_the_shell() -> anyhow::Result<()> {
    let fx = Fixture::start("revoke")?;
    let link = fx.share("1h", &[])?;
    let (ws, _session, _offset) = WsClient::open_ready(&link.url)?;
    let pid = ws.shell_pid()?;
    ensure!(remote_sh(&fx, &format!("kill -0 {pid}"))? == 0, "the shell {pid} is not visible to exec");

    let (exited, code, out) = run_timed(fx.server.cli(), &["connect", "unshare", &link.id])?;
    ensure!(code == 0 && out.contains(&link.id), "unshare exited {code}: {out}");
    let closed = ws.wait_closed(Duration::from_secs(5))?;
    ensure!(closed.code == 4002, "closed with {} {:?}, expected 4002", closed.code, closed.reason);
    let after_cli = closed.at.saturating_duration_since(exited);
    ensure!(after_cli <= Duration::from_millis(100), "socket closed {after_cli:?} after unshare returned");
    match exited.checked_duration_since(closed.at) {
        Some(before) => println!("4002 arrived {before:?} before unshare exited"),
        None => println!("4002 arrived {after_cli:?} after unshare exited"),
    }

    let page = get(&link.url)?;
    ensure!(page.status == 410 && page.body.contains("revoked"), "after revoke: {} {}", page.status, page.body);
    let row = fx.share_row(&link.id)?;
    let revoked_at = row["revoked_at"].as_str().with_context(|| format!("revoked_at not set: {row}"))?;
    share_support::rfc3339(revoked_at)?;

    wait_until(
        Duration::from_secs(5),
        "the shell to be ended",
        || Ok(remote_sh(&fx, &format!("kill -0 {pid}"))? != 0),
    )?;
    let again = WsClient::open(&link.url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let closed = again.wait_closed(Duration::from_secs(5))?;
    ensure!(closed.code == 4002, "a socket opened after revoke closed with {}", closed.code);
    Ok(())
}

#[test]
fn max_opens_refuses_the_second_session_with_4008() -> anyhow::Result<()> {
    let fx = Fixture::start("once")?;
    let link = fx.share("1h", &["--max-opens", "1"])?;
    let (first, _session, _offset) = WsClient::open_ready(&link.url)?;
    let second = WsClient::open(&link.url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let closed = second.wait_closed(Duration::from_secs(5))?;
    ensure!(closed.code == 4008, "second session closed with {} {:?}, expected 4008", closed.code, closed.reason);
    ensure!(!second.texts().iter().any(|t| t["type"] == "ready"), "the refused socket got a session");

    first.type_line("echo first-still-works")?;
    first.wait_exact_line(0, "first-still-works", SHELL)?;
    let row = fx.share_row(&link.id)?;
    ensure!(row["opens"] == 1, "opens after a refused second session: {row}");
    Ok(())
}

// ---- resume and audit ----------------------------------------------------------------------

#[test]
fn dropped_socket_resumes_the_same_shell_and_replays_what_it_missed() -> anyhow::Result<()> {
    let fx = Fixture::start("resume")?;
    let link = fx.share("1h", &[])?;
    let (ws, session, offset) = WsClient::open_ready(&link.url)?;
    let pid = ws.shell_pid()?;

    let typed = "sleep 1; echo later-output";
    let from = ws.output_len();
    ws.type_line(typed)?;
    // The shell echoes the line once it has read it; then drop before the sleep ends.
    wait_until(SHELL, "the typed line to be echoed", || Ok(ws.output_since(from).contains(typed)))?;
    let had = ws.drop_abruptly();
    let had_text = String::from_utf8_lossy(&had).into_owned();
    ensure!(!terminal_lines(&had_text).iter().any(|l| l == "later-output"), "the output came before the drop");

    std::thread::sleep(Duration::from_millis(1500)); // the shell prints while nobody watches
    let resume_at = offset + had.len() as u64;
    let url = socket_url(&link.url, &format!("session={session}&offset={resume_at}"));
    let back = WsClient::open_url(&url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (session2, offset2) = back.wait_ready()?;
    ensure!(session2 == session, "resumed into session {session2}, not {session}");
    ensure!(offset2 == resume_at, "replay starts at {offset2}, asked for {resume_at}");
    back.wait_exact_line(0, "later-output", SHELL)?;
    ensure!(
        !back.output_text().contains(typed),
        "bytes the client already had were replayed: {:?}",
        back.output_text()
    );
    let pid2 = back.shell_pid()?;
    ensure!(pid2 == pid, "resumed a different shell: pid {pid2}, was {pid}");

    let row = fx.share_row(&link.id)?;
    ensure!(row["opens"] == 1 && row["active_sessions"] == 1, "a resume is not a new open: {row}");
    Ok(())
}

#[test]
fn a_browser_closing_its_socket_gets_its_close_answered_and_can_resume() -> anyhow::Result<()> {
    let fx = Fixture::start("closer")?;
    let link = fx.share("1h", &[])?;
    let (ws, session, offset) = WsClient::open_ready(&link.url)?;
    let pid = ws.shell_pid()?;
    // A tab going away sends 1001; the server answers the close (RFC 6455 section 5.5.1)
    // rather than dropping the connection, and keeps the session for a resume.
    ws.close(1001, "going away")?;
    let closed = ws.wait_closed(SHELL)?;
    ensure!(closed.code == 1001, "the close was answered with {} {:?}", closed.code, closed.reason);

    let url = socket_url(&link.url, &format!("session={session}&offset={}", offset + ws.output_len() as u64));
    let back = WsClient::open_url(&url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (again, _) = back.wait_ready()?;
    ensure!(again == session, "resumed into session {again}, not {session}");
    ensure!(back.shell_pid()? == pid, "resumed a different shell");
    Ok(())
}

#[test]
fn a_ping_on_the_link_socket_is_answered_with_its_payload_while_the_shell_runs() -> anyhow::Result<()> {
    let fx = Fixture::start("pinger")?;
    let link = fx.share("1h", &[])?;
    let (ws, _, _) = WsClient::open_ready(&link.url)?;
    ws.ping(b"are you there")?;
    ws.type_line("echo after-ping-$((6*7))")?;
    ws.wait_exact_line(0, "after-ping-42", SHELL)?;
    wait_until(SHELL, "the server's pong", || Ok(!ws.pongs().is_empty()))?;
    ensure!(ws.pongs() == [b"are you there".to_vec()], "pongs: {:?}", ws.pongs());
    ensure!(ws.closed().is_none(), "the socket closed: {:?}", ws.closed());
    Ok(())
}

#[test]
fn input_a_program_does_not_echo_keeps_flowing_past_the_input_window() -> anyhow::Result<()> {
    let fx = Fixture::start("quiet-input")?;
    let link = fx.share("1h", &[])?;
    let (ws, _, _) = WsClient::open_ready(&link.url)?;
    // Raw and silent: every byte reaches `head` and nothing comes back until it has them all,
    // so the agent's input grants have no output to travel with. 300 kB is several input
    // windows (64 KiB): the input stalls for good unless grants leave on their own.
    let from = ws.output_len();
    ws.type_line("stty raw -echo; echo quiet-ready; head -c 300000 | wc -c; stty sane")?;
    ws.wait_line_since(from, SHELL, "the terminal to go quiet", |l| l == "quiet-ready")?;
    let from = ws.output_len();
    for _ in 0..300 {
        ws.send_bytes(&[b'q'; 1000])?;
    }
    let counted = Duration::from_secs(30);
    ws.wait_line_since(from, counted, "head to count 300000 bytes", |l| l.trim() == "300000")?;
    Ok(())
}

#[test]
fn audit_lists_create_and_open_with_the_client_address_and_agent() -> anyhow::Result<()> {
    let fx = Fixture::start("audit")?;
    let link = fx.share("1h", &[])?;
    let (_ws, _session, _offset) = WsClient::open_ready(&link.url)?;

    let run = fx.server.cli().run(&["connect", "shares", "--audit", &link.id, "--json"])?.expect_code(0)?;
    let events: Vec<serde_json::Value> = run.json()?;
    let create =
        events.iter().position(|e| e["action"] == "link.create").with_context(|| format!("no link.create: {run}"))?;
    let open =
        events.iter().position(|e| e["action"] == "link.open").with_context(|| format!("no link.open: {run}"))?;
    ensure!(create < open, "link.open listed before link.create: {run}");
    let detail = events[open]["detail"].as_str().unwrap_or_default();
    ensure!(
        detail.contains("ip=127.0.0.1") && detail.contains(&format!("ua={USER_AGENT}")),
        "link.open detail {detail:?}"
    );
    for e in &events {
        share_support::rfc3339(e["at"].as_str().unwrap_or_default())?;
    }
    Ok(())
}

#[test]
fn resume_while_the_old_socket_still_looks_alive_takes_the_session_over() -> anyhow::Result<()> {
    // After a real network blip the server often never hears the old connection die: the
    // page's reconnect must still get its shell back, not a new one.
    let fx = Fixture::start("takeover")?;
    let link = fx.share("1h", &["--max-opens", "1"])?;
    let (old, session, offset) = WsClient::open_ready(&link.url)?;
    let pid = old.shell_pid()?;
    let had = offset + old.output_len() as u64;

    let url = socket_url(&link.url, &format!("session={session}&offset={had}"));
    let new = WsClient::open_url(&url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (session2, offset2) = new.wait_ready()?;
    ensure!(session2 == session && offset2 == had, "resumed {session2}@{offset2}, expected {session}@{had}");
    ensure!(new.shell_pid()? == pid, "the reconnect got a different shell");
    let row = fx.share_row(&link.id)?;
    ensure!(row["opens"] == 1, "a resume is not a new open: {row}");
    let closed = old.wait_closed(Duration::from_secs(5))?;
    ensure!(closed.code == 1001, "the superseded socket closed with {} {:?}", closed.code, closed.reason);
    let from = new.output_len();
    new.type_line("echo after-takeover")?;
    new.wait_exact_line(from, "after-takeover", SHELL)?;
    Ok(())
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

#[test]
fn revoking_a_link_whose_viewer_stopped_reading_still_ends_the_shell() -> anyhow::Result<()> {
    let fx = Fixture::start("stalled")?;
    let link = fx.share("1h", &[])?;
    let stream = stalled_socket(&link.url, b"yes share-flood\r")?;
    // Wait until the connection is full: our receive queue is large and stops growing.
    let mut last = (0u64, Instant::now());
    wait_until(Duration::from_secs(30), "the viewer's connection to fill up", || {
        let queued = receive_queue(&stream)?;
        if queued != last.0 {
            last = (queued, Instant::now());
        }
        Ok(queued > 64 * 1024 && last.1.elapsed() > Duration::from_millis(500))
    })?;
    let (shell, _) = agent_shell(&fx)?;
    ensure!(alive(shell), "the shell is not running");

    let run = fx.server.cli().run(&["connect", "unshare", &link.id])?.expect_code(0)?;
    wait_until(Duration::from_secs(5), "the shell to be ended", || Ok(!alive(shell))).with_context(|| {
        format!("after `unshare` ({run}), {} bytes still queued", receive_queue(&stream).unwrap_or(0))
    })?;
    drop(stream);
    Ok(())
}

#[test]
fn links_with_a_session_join_the_same_persistent_shell() -> anyhow::Result<()> {
    let fx = Fixture::start("pair")?;
    let first = fx.share("1h", &["--session", "pair-work"])?;
    let (a, _, offset) = WsClient::open_ready(&first.url)?;
    ensure!(offset == 0, "a new persistent session starts at 0, not {offset}");
    a.type_line("export MARK=joined-$((20+22))")?;
    a.type_line("echo set-$MARK")?;
    a.wait_exact_line(0, "set-joined-42", SHELL)?;

    let second = fx.share("1h", &["--session", "pair-work", "--read-only"])?;
    let (b, _, start) = WsClient::open_ready(&second.url)?;
    // The joiner gets the session's buffered output first (the first viewer's work)...
    b.wait_exact_line(0, "set-joined-42", SHELL)?;
    ensure!(!b.texts().iter().any(|t| t["type"] == "notice"), "joining must not report lost bytes (start {start})");
    // ...then live output of the same shell.
    let from = b.output_len();
    a.type_line("echo live-$MARK")?;
    b.wait_exact_line(from, "live-joined-42", SHELL)?;

    // The viewer leaving does not end the persistent shell for the others.
    drop(b);
    let from = a.output_len();
    a.type_line("echo still-$MARK")?;
    a.wait_exact_line(from, "still-joined-42", SHELL)?;
    let sessions = fx.server.cli().run(&["connect", "sessions", fx.machine(), "--json"])?.expect_code(0)?;
    ensure!(sessions.stdout_text().contains("pair-work"), "the named session is listed: {sessions}");
    Ok(())
}
