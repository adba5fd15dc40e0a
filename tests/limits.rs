//! Limits, end to end against a real server process: each is hit, answers with its documented
//! error and shows in `/metrics`. Anonymous endpoints (`POST /oauth/device`, `GET /device`)
//! cannot grow the server without bound, and ended rows are purged periodically.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod share_support;

use std::time::Duration;

use anyhow::{Context, ensure};

use common::TestServer;
use share_support::{get_with, post_form};

/// `POST /oauth/device` as the client `ip` (through the trusted proxy).
fn start_grant(server: &TestServer, ip: &str) -> anyhow::Result<share_support::Page> {
    let url = format!("{}/oauth/device", server.url());
    post_form(&url, &[("X-Forwarded-For", ip)], &[("client_id", "cmdop-cli")])
}

#[test]
fn device_grants_are_rate_limited_per_client_ip_with_429_and_retry_after() -> anyhow::Result<()> {
    let server = TestServer::start_with(&["--trusted-proxy", "127.0.0.1", "--max-device-starts-per-minute", "3"])?;
    for i in 0..3 {
        let page = start_grant(&server, "198.51.100.7")?;
        ensure!(page.status == 200, "start {i}: {} {}", page.status, page.body);
    }
    let refused = start_grant(&server, "198.51.100.7")?;
    ensure!(refused.status == 429, "the fourth start in a minute: {} {}", refused.status, refused.body);
    let wait: u64 = refused.header("retry-after").parse().context("Retry-After in seconds")?;
    ensure!((1..=60).contains(&wait), "Retry-After {wait}");
    let body: serde_json::Value = serde_json::from_str(&refused.body)?;
    ensure!(body["error"] == "slow_down", "OAuth error code: {body}");
    let said = body["error_description"].as_str().unwrap_or_default();
    ensure!(said.contains("at most 3 a minute") && said.contains("try again in"), "description: {said}");
    let other = start_grant(&server, "198.51.100.8")?;
    ensure!(other.status == 200, "another address is not limited: {}", other.status);
    ensure!(server.metric("cmdop_limit_refusals_total{limit=\"device_start\"}")? == 1, "refusal not counted");

    // `cmdop login` says why.
    let cli = server.anonymous_cli();
    let mut cmd = cli.command(&["login", "--server", server.url()]);
    let url = format!("{}/oauth/device", server.url());
    let pages: Vec<_> = (0..3).map(|_| post_form(&url, &[], &[("client_id", "x")])).collect::<anyhow::Result<_>>()?;
    ensure!(pages.iter().all(|p| p.status == 200), "three starts from the CLI's address");
    let login = common::run_command(&mut cmd, common::CLI_DEADLINE)?;
    ensure!(login.code == 1, "login past the limit: {login}");
    ensure!(format!("{login}").contains("too many sign-in requests"), "login's message: {login}");
    Ok(())
}

#[test]
fn anonymous_device_pages_keep_a_bounded_number_of_sessions() -> anyhow::Result<()> {
    let server = TestServer::start_with(&["--max-web-sessions", "20"])?;
    for i in 0..200 {
        let page = get_with(&format!("{}/device", server.url()), &[])?;
        ensure!(page.status == 200 && !page.header("set-cookie").is_empty(), "visit {i}: {}", page.status);
    }
    let held = server.metric("cmdop_web_sessions")?;
    ensure!(held <= 20, "200 anonymous visits left {held} sessions in memory (cap 20)");
    // After the flood a visitor still gets a working form: a fresh session has room.
    let page = get_with(&format!("{}/device", server.url()), &[])?;
    let cookie = page.header("set-cookie").split(';').next().unwrap_or_default().to_string();
    let marker = "name=\"csrf\" value=\"";
    let start = page.body.find(marker).context("no csrf field")? + marker.len();
    let csrf = page.body[start..].split('"').next().unwrap_or_default().to_string();
    let url = format!("{}/device/login", server.url());
    let form = [("email", "nobody@example.com"), ("password", "wrong"), ("user_code", ""), ("csrf", csrf.as_str())];
    let answer = post_form(&url, &[("Cookie", cookie.as_str())], &form)?;
    ensure!(answer.status == 401, "the form of a fresh session is accepted (wrong password): {}", answer.status);
    Ok(())
}

#[test]
fn the_server_purges_ended_rows_periodically() -> anyhow::Result<()> {
    let server = TestServer::start_with(&["--purge-interval", "1s"])?;
    common::wait_until(Duration::from_secs(20), "two purges", || Ok(server.metric("cmdop_purge_runs_total")? >= 2))?;
    Ok(())
}

/// A refused socket: its close code and reason.
fn refused_socket(link_url: &str) -> anyhow::Result<(u16, String)> {
    let ws = share_support::ws::WsClient::open(link_url, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let closed = ws.wait_closed(Duration::from_secs(20))?;
    Ok((closed.code, format!("{:?}", closed.reason)))
}

#[test]
fn sessions_per_machine_are_limited_with_a_clear_error() -> anyhow::Result<()> {
    let fx = share_support::Fixture::start_with("busy-machine", &["--max-sessions-per-machine", "2"])?;
    let (a, b) = (fx.share("1h", &[])?, fx.share("1h", &[])?);
    let (first, _, _) = share_support::ws::WsClient::open_ready(&a.url)?;
    let (_second, _, _) = share_support::ws::WsClient::open_ready(&b.url)?;
    let (code, reason) = refused_socket(&fx.share("1h", &[])?.url)?;
    ensure!(code == 4008 && reason.contains("Too many open sessions on this machine (limit 2)"), "{code} {reason}");
    let exec = fx.server.cli().exec(fx.machine(), &[], &["true"])?;
    ensure!(exec.code == 1 && exec.stderr.contains("--max-sessions-per-machine"), "{exec}");
    ensure!(fx.server.metric("cmdop_limit_refusals_total{limit=\"sessions_per_machine\"}")? == 2, "not counted");
    // A session that ends gives its place back (a dropped browser's shell keeps it for the
    // 30 s resume grace, so end the shell).
    first.type_line("exit")?;
    common::wait_until(Duration::from_secs(20), "a freed place", || {
        Ok(fx.server.cli().exec(fx.machine(), &[], &["true"])?.code == 0)
    })?;
    Ok(())
}

#[test]
fn sessions_per_link_are_limited_with_a_clear_error() -> anyhow::Result<()> {
    let fx = share_support::Fixture::start_with("shared-once", &["--max-sessions-per-link", "1"])?;
    let link = fx.share("1h", &[])?;
    let (_first, _, _) = share_support::ws::WsClient::open_ready(&link.url)?;
    let (code, reason) = refused_socket(&link.url)?;
    ensure!(code == 4008 && reason.contains("through this link (limit 1)"), "{code} {reason}");
    let (_other, _, _) = share_support::ws::WsClient::open_ready(&fx.share("1h", &[])?.url)?;
    ensure!(fx.server.metric("cmdop_limit_refusals_total{limit=\"sessions_per_link\"}")? == 1, "not counted");
    Ok(())
}

#[test]
fn sessions_per_client_ip_are_limited_with_a_clear_error() -> anyhow::Result<()> {
    let fx = share_support::Fixture::start_with("one-address", &["--max-sessions-per-ip", "2"])?;
    let (_a, _, _) = share_support::ws::WsClient::open_ready(&fx.share("1h", &[])?.url)?;
    let (_b, _, _) = share_support::ws::WsClient::open_ready(&fx.share("1h", &[])?.url)?;
    let (code, reason) = refused_socket(&fx.share("1h", &[])?.url)?;
    ensure!(code == 4008 && reason.contains("from your address (limit 2)"), "{code} {reason}");
    // The CLI from the same address counts too.
    let exec = fx.server.cli().exec(fx.machine(), &[], &["true"])?;
    ensure!(exec.code == 1 && exec.stderr.contains("--max-sessions-per-ip"), "{exec}");
    ensure!(fx.server.metric("cmdop_limit_refusals_total{limit=\"sessions_per_ip\"}")? == 2, "not counted");
    Ok(())
}
