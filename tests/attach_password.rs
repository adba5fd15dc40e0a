//! Attach passwords end to end: set on the machine with the real CLI, answered at a real
//! terminal (a PTY the test holds) by `connect exec` and `connect` (attach), and through a share
//! link's `POST /unlock` and WebSocket; wrong answers exit 6 and back off.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod share_support;
#[path = "attach/term.rs"]
mod term;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, ensure};

use common::Cli;
use share_support::ws::WsClient;
use share_support::{Fixture, post_json};
use term::Term;

/// Deadline of one expected piece of terminal output.
const SOON: Duration = Duration::from_secs(20);
const PASSWORD: &str = "correct horse battery";

/// `cmdop connect exec MACHINE -- ARGV` in a terminal, answering the password prompt with
/// `answer`; returns the exit code and everything it printed.
fn exec_at_terminal(
    home: &std::path::Path,
    machine: &str,
    argv: &[&str],
    answer: &str,
) -> anyhow::Result<(u32, String)> {
    let mut args = vec!["connect", "exec", machine, "--"];
    args.extend_from_slice(argv);
    let mut t = Term::spawn(home, &args, 100, 30)?;
    t.expect("attach password for", SOON)?;
    t.line(answer)?;
    let code = t.wait(SOON)?;
    Ok((code, t.text()))
}

fn password_status(fx: &Fixture) -> anyhow::Result<serde_json::Value> {
    let state = fx.agent.state_dir();
    let args = ["connect", "password", "status", "--json", "--state-dir", &state.to_string_lossy()];
    Cli::new(fx.server.temp_dir().join("machine-cli")).run(&args)?.expect_code(0)?.json()
}

#[test]
fn the_cli_asks_once_caches_a_token_and_a_new_password_asks_again() -> anyhow::Result<()> {
    let fx = Fixture::start("locked-box")?;
    let cli = fx.server.cli();
    let machine = fx.machine().to_string();
    ensure!(password_status(&fx)?["set"] == false, "fresh agent has no password");

    // Set on the machine: too short is refused (exit 2), a good one is kept as a hash.
    let state = fx.agent.state_dir();
    let set = ["connect", "password", "set", "--password-stdin", "--state-dir", &state.to_string_lossy()];
    let short = Cli::new(fx.server.temp_dir().join("machine-cli")).run_with_stdin(&set, "short\n")?.expect_code(2)?;
    ensure!(short.stderr.contains("at least 8 characters"), "{short}");
    fx.agent.set_attach_password(PASSWORD)?;
    let status = password_status(&fx)?;
    ensure!(status["set"] == true && status["set_at"].is_string(), "status after set: {status}");
    let stored = std::fs::read_to_string(state.join("attach-password.json"))?;
    ensure!(
        stored.contains("$argon2id$") && !stored.contains(PASSWORD),
        "the password is stored only as an argon2id hash"
    );

    // No terminal to ask on: a clear refusal, exit 6, nothing ran.
    let refused = cli.exec(&machine, &[], &["echo", "should-not-run"])?.expect_code(6)?;
    ensure!(refused.stderr.contains("asks for its attach password"), "{refused}");
    ensure!(!refused.stdout_text().contains("should-not-run"), "{refused}");

    // At a terminal: a wrong answer exits 6, the right one runs the command.
    let (code, text) = exec_at_terminal(cli.home(), &machine, &["echo", "never-printed"], "wrong password")?;
    ensure!(code == 6, "wrong password: exit {code}\n{text}");
    ensure!(text.contains("wrong attach password") && !text.contains("never-printed"), "{text}");
    let (code, text) = exec_at_terminal(cli.home(), &machine, &["echo", "unlocked-ok"], PASSWORD)?;
    ensure!(code == 0 && text.contains("unlocked-ok"), "right password: exit {code}\n{text}");
    ensure!(!text.contains(PASSWORD), "the typed password was echoed:\n{text}");

    // The token is cached (0600) and used without asking, by exec and by attach.
    let cache = cli.home().join("attach-tokens.json");
    let mode = std::fs::metadata(&cache).context("no token cache")?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "token cache mode {mode:o}");
    ensure!(std::fs::read_to_string(&cache)?.contains("cmdopa_"), "no attach token cached");
    let again = cli.exec(&machine, &[], &["echo", "cached-ok"])?.expect_code(0)?;
    ensure!(again.stdout_text().trim() == "cached-ok", "{again}");
    let mut attach = Term::spawn(cli.home(), &["connect", &machine], 100, 30)?;
    attach.expect("attached", SOON)?;
    attach.line("echo attach-$((40+2))")?;
    attach.expect("attach-42", SOON)?;
    attach.send(b"\x04")?;
    ensure!(attach.wait(SOON)? == 0, "attach did not detach cleanly:\n{}", attach.text());

    // A new password ends every cached token: attach asks again, and the answer works.
    fx.agent.set_attach_password("a brand new password")?;
    cli.exec(&machine, &[], &["true"])?.expect_code(6)?;
    let mut attach = Term::spawn(cli.home(), &["connect", &machine], 100, 30)?;
    attach.expect("attach password for", SOON)?;
    attach.line("a brand new password")?;
    attach.expect("attached", SOON)?;
    attach.line("echo reattach-$((40+3))")?;
    attach.expect("reattach-43", SOON)?;
    attach.send(b"\x04")?;
    ensure!(attach.wait(SOON)? == 0, "attach did not detach cleanly:\n{}", attach.text());

    // Cleared: sessions open without one.
    let state = fx.agent.state_dir();
    let clear = ["connect", "password", "clear", "--state-dir", &state.to_string_lossy()];
    Cli::new(fx.server.temp_dir().join("machine-cli")).run(&clear)?.expect_code(0)?;
    std::fs::remove_file(&cache)?;
    cli.exec(&machine, &[], &["true"])?.expect_code(0)?;
    ensure!(password_status(&fx)?["set"] == false, "status after clear");
    Ok(())
}

#[test]
fn password_set_refuses_a_folder_without_an_agent() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("nothing-here");
    let args = ["connect", "password", "set", "--password-stdin", "--state-dir", &state.to_string_lossy()];
    let run = Cli::new(dir.path().join("cli")).run_with_stdin(&args, "long enough password\n")?.expect_code(2)?;
    ensure!(run.stderr.contains("no enrolled agent"), "{run}");
    ensure!(!state.join("attach-password.json").exists(), "wrote a password no agent reads");
    Ok(())
}

/// `POST <link>/unlock` as the page does (same Origin).
fn unlock(fx: &Fixture, link_url: &str, password: &str) -> anyhow::Result<share_support::Page> {
    let origin = fx.server.url().to_string();
    // The client wrote the left entry itself; the trusted proxy appended the right one.
    let headers = [("Origin", origin.as_str()), ("X-Forwarded-For", "192.0.2.66, 203.0.113.7")];
    post_json(&format!("{link_url}/unlock"), &headers, &serde_json::json!({ "password": password }))
}

#[test]
fn a_share_link_asks_for_the_password_and_guessing_is_slowed() -> anyhow::Result<()> {
    // As behind a reverse proxy on this host: its X-Forwarded-For names the client.
    let fx = Fixture::start_with("locked-link-box", &["--trusted-proxy", "127.0.0.1"])?;
    fx.agent.set_attach_password(PASSWORD)?;
    let link = fx.share("1h", &["--max-opens", "1"])?;

    // The socket without a cookie: close 4010, and the link's single open is not used up.
    let ws = WsClient::open(&link.url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let closed = ws.wait_closed(SOON)?;
    ensure!(closed.code == 4010, "expected close 4010, got {} {:?}", closed.code, closed.reason);
    ensure!(fx.share_row(&link.id)?["opens"] == 0, "a password request used up an open");

    // Cross-site posts are refused before any password is tried.
    let no_origin = post_json(&format!("{}/unlock", link.url), &[], &serde_json::json!({ "password": PASSWORD }))?;
    ensure!(no_origin.status == 403, "POST without Origin: {}", no_origin.status);

    // Three wrong answers pass quickly, the fourth starts the back-off: then even the right
    // password waits, with Retry-After.
    for i in 0..4 {
        let wrong = unlock(&fx, &link.url, "not the password")?;
        ensure!(
            wrong.status == 403 && wrong.body.contains("\"wrong\""),
            "wrong answer {i}: {} {}",
            wrong.status,
            wrong.body
        );
        ensure!(wrong.header("set-cookie").is_empty(), "a wrong answer set a cookie");
    }
    let held = unlock(&fx, &link.url, PASSWORD)?;
    ensure!(
        held.status == 429 && held.body.contains("throttled"),
        "after 4 wrong answers: {} {}",
        held.status,
        held.body
    );
    let wait: u64 = held.header("retry-after").parse().context("Retry-After")?;
    ensure!((1..=2).contains(&wait), "first back-off is about 1 s, got {wait}");
    std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(200));

    // The right answer: an HttpOnly, SameSite=Strict cookie scoped to this link.
    let ok = unlock(&fx, &link.url, PASSWORD)?;
    ensure!(ok.status == 204, "right password: {} {}", ok.status, ok.body);
    let cookie = ok.header("set-cookie");
    let path = format!("Path=/s/{}", link.token());
    for part in ["cmdop_attach=cmdopa_", "HttpOnly", "SameSite=Strict", path.as_str(), "Max-Age="] {
        ensure!(cookie.contains(part), "cookie lacks {part}: {cookie}");
    }
    let pair = cookie.split(';').next().unwrap_or_default().to_string();

    // With the cookie the socket opens a shell, and that is the link's one open.
    let ws = WsClient::open_with(&share_support::ws::socket_url(&link.url, ""), None, Some(&pair))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ws.wait_ready()?;
    ws.type_line("echo link-unlocked-$((6*7))")?;
    ws.wait_exact_line(0, "link-unlocked-42", SOON)?;
    ensure!(fx.share_row(&link.id)?["opens"] == 1, "the unlocked session counts as the open");

    // The cookie of another link (or a forged one) does not open this machine.
    let other = fx.share("1h", &[])?;
    let foreign = WsClient::open_with(&share_support::ws::socket_url(&other.url, ""), None, Some(&pair))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(foreign.wait_closed(SOON)?.code == 4010, "a token of another link was accepted");

    // Every attempt is in the link's audit log.
    let audit = fx.server.cli().run(&["connect", "shares", "--audit", &link.id])?.expect_code(0)?;
    let text = audit.stdout_text();
    ensure!(
        text.matches("link.unlock").count() >= 6 && text.contains("result=wrong") && text.contains("result=ok"),
        "{audit}"
    );
    // Attributed to the client the trusted proxy named, not to the proxy or a spoofed entry.
    ensure!(text.contains("ip=203.0.113.7") && !text.contains("ip=192.0.2.66"), "{audit}");
    Ok(())
}

/// The unlock cookie (`cmdop_attach=...`) for `link_url`, answering `password`.
fn unlock_cookie(fx: &Fixture, link_url: &str, password: &str) -> anyhow::Result<String> {
    let ok = unlock(fx, link_url, password)?;
    ensure!(ok.status == 204, "unlock: {} {}", ok.status, ok.body);
    Ok(ok.header("set-cookie").split(';').next().unwrap_or_default().to_string())
}

#[test]
fn the_password_guards_listing_and_killing_sessions() -> anyhow::Result<()> {
    let fx = Fixture::start("guarded-sessions")?;
    let cli = fx.server.cli();
    let machine = fx.machine().to_string();
    fx.agent.set_attach_password(PASSWORD)?;

    // Without the password: no listing, no killing (exit 6, nothing ends), and the fleet-wide
    // list names the machine instead of showing its sessions.
    let listed = cli.run(&["connect", "sessions", &machine])?.expect_code(6)?;
    ensure!(listed.stderr.contains("asks for its attach password"), "{listed}");
    let killed = cli.run(&["connect", "kill", &machine, "work"])?.expect_code(6)?;
    ensure!(killed.stderr.contains("asks for its attach password"), "{killed}");
    let all = cli.run(&["connect", "sessions", "--json"])?.expect_code(0)?;
    ensure!(all.stderr.contains("has an attach password"), "{all}");

    // Unlocked once at a terminal: a persistent session is listed, then killed.
    let (code, text) = exec_at_terminal(cli.home(), &machine, &["true"], PASSWORD)?;
    ensure!(code == 0, "unlock: exit {code}\n{text}");
    let mut attach = Term::spawn(cli.home(), &["connect", &machine, "--session", "work"], 100, 30)?;
    attach.expect("attached", SOON)?;
    attach.send(b"\x04")?;
    ensure!(attach.wait(SOON)? == 0, "detach:\n{}", attach.text());
    let listed = cli.run(&["connect", "sessions", &machine, "--json"])?.expect_code(0)?;
    ensure!(listed.stdout_text().contains("\"work\""), "{listed}");
    let all = cli.run(&["connect", "sessions", "--json"])?.expect_code(0)?;
    ensure!(all.stdout_text().contains("\"work\""), "fleet-wide with the cached token: {all}");
    cli.run(&["connect", "kill", &machine, "work"])?.expect_code(0)?;
    Ok(())
}

#[test]
fn a_new_password_ends_live_and_parked_sessions_and_a_resume_needs_the_grant() -> anyhow::Result<()> {
    let fx = Fixture::start_with("rekeyed-box", &["--trusted-proxy", "127.0.0.1"])?;
    let cli = fx.server.cli();
    let machine = fx.machine().to_string();
    fx.agent.set_attach_password(PASSWORD)?;
    let link = fx.share("1h", &[])?;

    // A CLI attach and a browser, both unlocked with the first password.
    let (code, text) = exec_at_terminal(cli.home(), &machine, &["true"], PASSWORD)?;
    ensure!(code == 0, "unlock: exit {code}\n{text}");
    let mut attach = Term::spawn(cli.home(), &["connect", &machine, "--session", "live"], 100, 30)?;
    attach.expect("attached", SOON)?;
    let cookie = unlock_cookie(&fx, &link.url, PASSWORD)?;
    let open = |query: &str, cookie: Option<&str>| {
        WsClient::open_with(&share_support::ws::socket_url(&link.url, query), None, cookie)
            .map_err(|e| anyhow::anyhow!("{e}"))
    };
    let live = open("", Some(&cookie))?;
    live.wait_ready()?;
    // A second browser that drops: its shell is parked for a resume.
    let dropped = open("", Some(&cookie))?;
    let (key, offset) = dropped.wait_ready()?;
    drop(dropped);

    // A resume must hold the grant the session was opened with: without the cookie it gets
    // no shell (the parked one is not handed over), only the password request.
    let resume = format!("session={key}&offset={offset}");
    let stranger = open(&resume, None)?;
    ensure!(stranger.wait_closed(SOON)?.code == 4010, "a resume without the grant");

    // A new password: every session opened under the old one ends at once.
    fx.agent.set_attach_password("a brand new password")?;
    let closed = live.wait_closed(SOON)?;
    ensure!(closed.code == 4010, "the live browser: close {} {:?}", closed.code, closed.reason);
    ensure!(
        live.texts()
            .iter()
            .any(|t| t["type"] == "notice" && t["text"].as_str().unwrap_or("").contains("password changed")),
        "no notice: {:?}",
        live.texts()
    );
    let code = attach.wait(SOON)?;
    ensure!(code == 6, "the live CLI attach: exit {code}\n{}", attach.text());
    ensure!(attach.text().contains("attach password"), "{}", attach.text());
    // The parked one is gone too: resuming with the old cookie finds nothing to resume.
    let late = open(&resume, Some(&cookie))?;
    ensure!(late.wait_closed(SOON)?.code == 4010, "the parked session outlived the old password");
    Ok(())
}
