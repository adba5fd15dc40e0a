//! Headless Chromium for the browser tests (tests/browser.rs, tests/console.rs), driven over
//! CDP by chromiumoxide. Included by those crates with `#[path]` (it needs
//! `share_support::rt`), not by every test crate through `common`.
//!
//! The browser is `$CHROMIUM` (default `/usr/bin/chromium`). Without it a test prints why and
//! passes, unless `CI` is set: then a missing browser fails it. Each `Chrome` has its own
//! profile folder (so its own cookies) and is always closed and waited for on drop, also when
//! the test body fails or panics.

#![allow(dead_code)] // each browser test crate uses a part of it

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::Page;
use futures_util::StreamExt;
use serde_json::Value;

use crate::share_support::{rt, terminal_lines};

/// `document.body.dataset.state` of a terminal page: connecting, open, closed or locked.
pub const STATE: &str = "document.body.dataset.state";
/// The terminal's visible rows as text.
pub const ROWS_TEXT: &str = "(document.querySelector('.xterm-rows') || {}).innerText || ''";
/// The terminal's whole buffer (scrollback included), one line per row.
pub const BUFFER_TEXT: &str = "(() => { const b = window.term.buffer.active; const out = []; \
     for (let i = 0; i < b.length; i++) { const l = b.getLine(i); if (l) out.push(l.translateToString(true)); } \
     return out.join('\\n'); })()";
/// The terminal page's closing overlay: whether it shows, and its text.
pub const OVERLAY: &str = "(() => { const o = document.getElementById('overlay'); \
     return { visible: !o.hidden && o.checkVisibility(), text: o.innerText.trim() }; })()";

/// The browser to drive, or `None` (after saying so) when it is absent outside CI.
pub fn chromium() -> anyhow::Result<Option<PathBuf>> {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if path.is_file() {
        return Ok(Some(path));
    }
    let ci = std::env::var("CI").is_ok_and(|v| !matches!(v.trim().to_ascii_lowercase().as_str(), "" | "0" | "false"));
    if ci {
        bail!(
            "no browser at {} (set CHROMIUM, or `apt-get install chromium`); CI is set, so this fails",
            path.display()
        );
    }
    println!(
        "SKIPPED: no browser at {}; set CHROMIUM or `apt-get install chromium` to run the browser tests",
        path.display()
    );
    Ok(None)
}

/// A headless chromium with its own profile; closed and waited for on drop.
pub struct Chrome {
    browser: Option<Browser>,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chrome {
    /// Starts the browser with a `width` x `height` window and viewport.
    pub fn launch(path: &Path, width: u32, height: u32) -> anyhow::Result<Self> {
        let profile = tempfile::Builder::new().prefix("cmdop-chromium-").tempdir()?;
        let config = BrowserConfig::builder()
            .chrome_executable(path)
            .no_sandbox()
            .user_data_dir(profile.path())
            .args([
                "disable-gpu",
                "disable-background-networking",
                "disable-component-update",
                "disable-sync",
                "no-first-run",
                "disable-dev-shm-usage",
            ])
            .window_size(width, height)
            .viewport(Viewport { width, height, ..Viewport::default() })
            .launch_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(20))
            .build()
            .map_err(anyhow::Error::msg)?;
        let (browser, mut handler) =
            rt().block_on(Browser::launch(config)).with_context(|| format!("cannot launch {}", path.display()))?;
        let handler = rt().spawn(async move { while handler.next().await.is_some() {} });
        Ok(Self { browser: Some(browser), handler, _profile: profile })
    }

    /// A new blank page (tab) of this browser.
    pub fn page(&self) -> anyhow::Result<Page> {
        let browser = self.browser.as_ref().context("browser already closed")?;
        Ok(rt().block_on(browser.new_page("about:blank"))?)
    }

    /// Runs `body` on a new page, bounded by `within` (see `step`).
    pub fn run<T, F, Fut>(&self, within: Duration, body: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(Page) -> Fut,
        Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    {
        let page = self.page()?;
        step(within, body(page))
    }
}

impl Drop for Chrome {
    fn drop(&mut self) {
        if let Some(mut browser) = self.browser.take() {
            rt().block_on(async {
                let closed = tokio::time::timeout(Duration::from_secs(10), browser.close()).await;
                if !matches!(closed, Ok(Ok(_))) {
                    let _ = browser.kill().await;
                }
                if tokio::time::timeout(Duration::from_secs(10), browser.wait()).await.is_err() {
                    let _ = browser.kill().await;
                    let _ = browser.wait().await;
                }
            });
        }
        self.handler.abort();
    }
}

/// Runs one browser step in a task of its own, bounded by `within`; a panic in it is raised
/// again here (after which `Drop` still closes the browser).
pub fn step<T: Send + 'static>(
    within: Duration,
    body: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    let task = rt().spawn(async move { tokio::time::timeout(within, body).await });
    match rt().block_on(task) {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => bail!("the browser step did not finish within {within:?}"),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => bail!("the browser step was cancelled: {e}"),
    }
}

/// Evaluates `expr` in the page as JSON (`null` when it throws or yields nothing).
pub async fn eval(page: &Page, expr: &str) -> Value {
    match page.evaluate(expr).await {
        Ok(result) => result.into_value().unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Polls `expr` until `done` accepts its value, at most `within`; returns that value.
pub async fn poll(page: &Page, expr: &str, within: Duration, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let every = Duration::from_millis(50);
    let mut last = Value::Null;
    for _ in 0..=within.as_millis() / every.as_millis() {
        last = eval(page, expr).await;
        if done(&last) {
            return Ok(last);
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(every).await;
    }
    bail!("timed out after {within:?} waiting on `{expr}`; last value {last}")
}

/// Whether the screen text `text` has a line equal to `line`.
pub fn has_line(text: &Value, line: &str) -> bool {
    text.as_str().is_some_and(|t| terminal_lines(t).iter().any(|l| l == line))
}

/// Clicks the first element matching `selector`.
pub async fn click(page: &Page, selector: &str) -> anyhow::Result<()> {
    page.find_element(selector).await.with_context(|| format!("no {selector} on the page"))?.click().await?;
    Ok(())
}
