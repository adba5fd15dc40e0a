//! SIGTERM drains, against a real server process on a real socket: it stops accepting, tells
//! each browser (a notice, then close 1001) and each agent (an `UNAVAILABLE` "server shutting
//! down" that makes it reconnect at once), and exits well within its 3 s grace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod share_support;

use std::time::{Duration, Instant};

use anyhow::ensure;

use share_support::Fixture;
use share_support::ws::WsClient;

#[test]
fn sigterm_tells_browsers_and_agents_and_exits_promptly() -> anyhow::Result<()> {
    let mut fx = Fixture::start("draining-box")?;
    let link = fx.share("1h", &[])?;
    let (browser, _, _) = WsClient::open_ready(&link.url)?;
    let addr = fx.server.addr();

    let started = Instant::now();
    let status = fx.server.terminate(Duration::from_secs(10))?;
    let took = started.elapsed();
    eprintln!("server exited {status} {took:?} after SIGTERM");
    ensure!(status.success(), "exit status after SIGTERM: {status}");
    ensure!(took < Duration::from_millis(2500), "SIGTERM took {took:?}: the drain did not end the streams");

    let closed = browser.wait_closed(Duration::from_secs(5))?;
    ensure!(closed.code == 1001, "browser close {} {:?}", closed.code, closed.reason);
    let told = browser
        .texts()
        .iter()
        .any(|t| t["type"] == "notice" && t["text"].as_str().unwrap_or("").contains("restarting"));
    ensure!(told, "no notice before the close: {:?}", browser.texts());
    common::wait_until(Duration::from_secs(5), "the agent to hear the server is shutting down", || {
        Ok(fx.agent.log_text().contains("the server is shutting down; reconnecting at once"))
    })?;
    ensure!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "the listener still accepts after the drain"
    );
    Ok(())
}
