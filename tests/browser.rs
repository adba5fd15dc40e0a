//! Share links in a real browser: Debian's chromium driven over CDP by chromiumoxide.
//!
//! The browser harness is tests/common/chrome.rs (`$CHROMIUM`, skipped outside CI when
//! absent). Each test has its own server, agent, browser and profile folder.
//!
//! `UPDATE_SCREENSHOT=1` rewrites `docs/share-page.png` (it is also written when missing).

#[path = "common/chrome.rs"]
mod chrome;
mod common;
mod share_support;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, ensure};
use chrome::{BUFFER_TEXT, Chrome, OVERLAY, ROWS_TEXT, STATE, chromium, eval, has_line, poll};
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::{Page, ScreenshotParams};
use share_support::Fixture;

/// Longest a whole browser scenario may take.
const SCENARIO: Duration = Duration::from_secs(60);
/// Page size: also the screenshot's.
const WIDTH: u32 = 1024;
const HEIGHT: u32 = 640;

/// Types `command` and Enter into the terminal once the shell has printed its prompt
/// (typed-ahead keys are echoed twice), then waits for a screen line equal to `line`.
async fn run_in_terminal(page: &Page, command: &str, line: &str) -> anyhow::Result<()> {
    poll(page, BUFFER_TEXT, Duration::from_secs(10), |v| v.as_str().is_some_and(|t| !t.trim().is_empty())).await?;
    let input = page.find_element("textarea.xterm-helper-textarea").await?;
    input.focus().await?;
    input.type_str(command).await?;
    input.press_key("Enter").await?;
    poll(page, ROWS_TEXT, Duration::from_secs(10), |v| has_line(v, line)).await.map(drop)
}

async fn wait_open(page: &Page) -> anyhow::Result<()> {
    poll(page, STATE, Duration::from_secs(15), |v| v == "open").await.map(drop)
}

#[test]
fn link_page_runs_a_shell_in_the_browser() -> anyhow::Result<()> {
    let Some(path) = chromium()? else {
        return Ok(());
    };
    let fx = Fixture::start("demo-box")?;
    let link = fx.share("1h", &[])?;
    let chrome = Chrome::launch(&path, WIDTH, HEIGHT)?;
    let screenshot = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/share-page.png");
    let update = std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") || !screenshot.exists();
    let url = link.url.clone();
    let shot = screenshot.clone();
    chrome.run(SCENARIO, move |page| async move {
        page.goto(url.as_str()).await?;
        wait_open(&page).await?;
        let title = eval(&page, "document.getElementById('machine-name').textContent").await;
        ensure!(title == "demo-box", "machine name on the page: {title}");

        run_in_terminal(&page, "echo share-ok", "share-ok").await?;
        let buffer = eval(&page, BUFFER_TEXT).await;
        ensure!(has_line(&buffer, "share-ok"), "terminal buffer lacks the output line: {buffer}");
        ensure!(eval(&page, "window.cmdopSocket.readyState").await == 1, "the socket is not open");

        if update {
            if let Some(dir) = shot.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let params = ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).build();
            let png = page.save_screenshot(params, &shot).await?;
            ensure!(
                png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
                "odd screenshot ({} bytes)",
                png.len()
            );
            println!("wrote {}", shot.display());
        }
        Ok(())
    })
}

#[test]
fn page_shows_the_expired_overlay_when_the_deadline_passes() -> anyhow::Result<()> {
    let Some(path) = chromium()? else {
        return Ok(());
    };
    let fx = Fixture::start("short-lived")?;
    let chrome = Chrome::launch(&path, WIDTH, HEIGHT)?;
    // Warm the browser up (renderer, cached assets) on a long link first, so the short one
    // is open well before its deadline.
    let warm = fx.share("1h", &[])?.url;
    chrome.run(SCENARIO, move |page| async move {
        page.goto(warm.as_str()).await?;
        wait_open(&page).await
    })?;
    // A busy machine may take seconds to open the page; a link whose page opened too close
    // to its deadline proves nothing, so take a new one (once).
    for attempt in 1..=2 {
        if expires_while_open(&chrome, &fx)? {
            return Ok(());
        }
        println!("attempt {attempt}: the page opened too close to the deadline");
    }
    bail!("the 5 s link's page never opened early enough to watch it expire")
}

/// Opens a 5 s link and watches it expire: false when the page opened too late to tell.
fn expires_while_open(chrome: &Chrome, fx: &Fixture) -> anyhow::Result<bool> {
    // Deadlines are whole seconds: made just after a second starts, the link lives ~5 s.
    let into_second = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH)?.subsec_nanos();
    std::thread::sleep(Duration::from_nanos(u64::from(1_000_000_000 - into_second)));
    let link = fx.share("5s", &[])?;
    let deadline = link.deadline()?;
    let url = link.url.clone();
    chrome.run(SCENARIO, move |page| async move {
        let started = Instant::now();
        page.goto(url.as_str()).await?;
        wait_open(&page).await?;
        let opened_in = started.elapsed();
        let before = eval(&page, OVERLAY).await;
        let left = deadline.duration_since(SystemTime::now()).unwrap_or_default();
        if left < Duration::from_millis(500) {
            println!("the page took {opened_in:?} to open, {left:?} before the deadline");
            return Ok(false);
        }
        ensure!(before["visible"] == false, "overlay shown while the link is valid: {before}");

        let overlay = poll(&page, OVERLAY, left + Duration::from_secs(3), |v| v["visible"] == true).await?;
        let shown = SystemTime::now();
        ensure!(overlay["text"] == "This link has expired", "overlay says {overlay}");
        match shown.duration_since(deadline) {
            Ok(late) => ensure!(late <= Duration::from_secs(2), "overlay shown {late:?} after the deadline"),
            Err(early) => bail!("overlay shown {:?} before the deadline", early.duration()),
        }
        ensure!(eval(&page, STATE).await == "closed", "page state after expiry");
        println!(
            "page open in {opened_in:?}; expired overlay {:?} after the deadline",
            shown.duration_since(deadline).unwrap_or_default()
        );
        Ok(true)
    })
}

const UNLOCK: &str = "(() => { const u = document.getElementById('unlock'); const e = document.getElementById('unlock-error'); \
     return { visible: !u.hidden && u.checkVisibility(), error: e.hidden ? '' : e.innerText.trim() }; })()";

/// Types `password` into the page's unlock form and submits it with Enter.
async fn submit_password(page: &Page, password: &str) -> anyhow::Result<()> {
    let input = page.find_element("#unlock-password").await?;
    input.click().await?;
    input.type_str(password).await?;
    input.press_key("Enter").await?;
    Ok(())
}

#[test]
fn page_asks_for_the_attach_password_and_remembers_the_answer() -> anyhow::Result<()> {
    let Some(path) = chromium()? else {
        return Ok(());
    };
    let fx = Fixture::start("guarded-box")?;
    fx.agent.set_attach_password("browser pass phrase")?;
    let link = fx.share("1h", &[])?;
    let chrome = Chrome::launch(&path, WIDTH, HEIGHT)?;
    let url = link.url.clone();
    chrome.run(SCENARIO, move |page| async move {
        page.goto(url.as_str()).await?;
        poll(&page, STATE, Duration::from_secs(15), |v| v == "locked").await?;
        let form = poll(&page, UNLOCK, Duration::from_secs(5), |v| v["visible"] == true).await?;
        ensure!(form["error"] == "", "an error before any answer: {form}");

        submit_password(&page, "a wrong guess").await?;
        let wrong = poll(&page, UNLOCK, Duration::from_secs(10), |v| v["error"] != "").await?;
        ensure!(wrong["error"] == "Wrong password" && wrong["visible"] == true, "after a wrong answer: {wrong}");
        ensure!(eval(&page, STATE).await == "locked", "the terminal opened on a wrong password");

        submit_password(&page, "browser pass phrase").await?;
        wait_open(&page).await?;
        ensure!(eval(&page, UNLOCK).await["visible"] == false, "the form stayed up after unlocking");
        // The token lives in an HttpOnly cookie: the page's script cannot read it.
        let cookies = eval(&page, "document.cookie").await;
        ensure!(
            !cookies.as_str().unwrap_or_default().contains("cmdopa_"),
            "the attach token is readable by script: {cookies}"
        );

        run_in_terminal(&page, "echo guarded-$((20+1))", "guarded-21").await?;

        // A reload (a new session) goes straight in: the browser sends the cookie.
        page.goto(url.as_str()).await?;
        wait_open(&page).await?;
        ensure!(eval(&page, UNLOCK).await["visible"] == false, "asked again after a reload");
        Ok(())
    })
}
