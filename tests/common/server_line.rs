//! The `cmdop server` URL line, shared by the tests (`tests/common`) and the end-to-end bench
//! (`benches/e2e/fixture.rs`, through `#[path]`): both start the real server and must learn its
//! port the way a person would, from the one line it prints.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};

/// Reads the server's first stdout line (`cmdop server listening on URL`) within `within` and
/// returns the URL; stdout keeps being drained so the server never blocks on it. On failure the
/// caller still owns (and should kill) the child.
pub fn server_url(child: &mut Child, within: Duration) -> anyhow::Result<String> {
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        for _ in lines {}
    });
    let Ok(line) = rx.recv_timeout(within) else {
        bail!("the server printed no URL line within {within:?}");
    };
    let url = line
        .strip_prefix("cmdop server listening on ")
        .with_context(|| format!("unexpected first line {line:?}"))?
        .trim()
        .to_string();
    ensure!(url.starts_with("http://127.0.0.1:"), "server URL {url} is not on 127.0.0.1");
    Ok(url)
}
