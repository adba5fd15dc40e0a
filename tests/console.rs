//! The web console end to end: `cmdop console`'s one-time URL, the Machines page, a terminal,
//! share links made and revoked from the page, roles, CSRF and the cookie's reach. Browser
//! scenarios drive Debian's chromium over CDP (as tests/browser.rs does); the rest is plain
//! HTTP with the cookie handled by hand.
//!
//! `UPDATE_SCREENSHOT=1` rewrites the console screenshots in docs/ (also written when missing).

mod common;
mod share_support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::handler::viewport::Viewport;
use chromiumoxide::page::{Page, ScreenshotParams};
use futures_util::StreamExt;
use serde_json::Value;
use share_support::{Fixture, rt, terminal_lines};

/// Longest one browser step may take.
const STEP: Duration = Duration::from_secs(60);
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 700;

fn chromium() -> anyhow::Result<Option<PathBuf>> {
    let path = PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into()));
    if path.is_file() {
        return Ok(Some(path));
    }
    if std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false")) {
        bail!(
            "no browser at {} (set CHROMIUM, or `apt-get install chromium`); CI is set, so this fails",
            path.display()
        );
    }
    println!("SKIPPED: no browser at {}; set CHROMIUM to run the console's browser tests", path.display());
    Ok(None)
}

/// A headless chromium with its own profile (so its own cookies); closed on drop.
struct Chrome {
    browser: Option<Browser>,
    handler: tokio::task::JoinHandle<()>,
    _profile: tempfile::TempDir,
}

impl Chrome {
    fn launch(path: &Path) -> anyhow::Result<Self> {
        let profile = tempfile::Builder::new().prefix("cmdop-console-chromium-").tempdir()?;
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
            .window_size(WIDTH, HEIGHT)
            .viewport(Viewport { width: WIDTH, height: HEIGHT, ..Viewport::default() })
            .launch_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(20))
            .build()
            .map_err(anyhow::Error::msg)?;
        let (browser, mut handler) =
            rt().block_on(Browser::launch(config)).with_context(|| format!("cannot launch {}", path.display()))?;
        let handler = rt().spawn(async move { while handler.next().await.is_some() {} });
        Ok(Self { browser: Some(browser), handler, _profile: profile })
    }

    fn page(&self) -> anyhow::Result<Page> {
        let browser = self.browser.as_ref().context("browser already closed")?;
        Ok(rt().block_on(browser.new_page("about:blank"))?)
    }
}

/// Runs one browser step in a task of its own, bounded by `STEP`; a panic is raised again.
fn step<T: Send + 'static>(body: impl Future<Output = anyhow::Result<T>> + Send + 'static) -> anyhow::Result<T> {
    let task = rt().spawn(async move { tokio::time::timeout(STEP, body).await });
    match rt().block_on(task) {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => bail!("the browser step did not finish within {STEP:?}"),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => bail!("the browser step was cancelled: {e}"),
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

async fn eval(page: &Page, expr: &str) -> Value {
    match page.evaluate(expr).await {
        Ok(result) => result.into_value().unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Polls `expr` until `done` accepts its value, at most `within`.
async fn poll(page: &Page, expr: &str, within: Duration, done: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
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

const PATH: &str = "location.pathname";
const STATE: &str = "document.body.dataset.state";
const ROWS_TEXT: &str = "(document.querySelector('.xterm-rows') || {}).innerText || ''";
const OVERLAY: &str = "(() => { const o = document.getElementById('overlay'); \
     return { visible: !o.hidden && o.checkVisibility(), text: o.innerText.trim() }; })()";

fn has_line(text: &Value, line: &str) -> bool {
    text.as_str().is_some_and(|t| terminal_lines(t).iter().any(|l| l == line))
}

/// Types `command` and Enter once the shell has printed something, then waits for `line`.
async fn run_in_terminal(page: &Page, command: &str, line: &str) -> anyhow::Result<()> {
    poll(page, ROWS_TEXT, Duration::from_secs(15), |v| v.as_str().is_some_and(|t| !t.trim().is_empty())).await?;
    let input = page.find_element("textarea.xterm-helper-textarea").await?;
    input.focus().await?;
    input.type_str(command).await?;
    input.press_key("Enter").await?;
    poll(page, ROWS_TEXT, Duration::from_secs(15), |v| has_line(v, line)).await.map(drop)
}

async fn click(page: &Page, selector: &str) -> anyhow::Result<()> {
    page.find_element(selector).await.with_context(|| format!("no {selector} on the page"))?.click().await?;
    Ok(())
}

/// `cmdop console --json --no-open`: the one-time URL.
fn console_url(fx: &Fixture) -> anyhow::Result<String> {
    let run = fx.server.cli().run(&["console", "--json", "--no-open"])?.expect_code(0)?;
    let answer: Value = run.json()?;
    let keys: Vec<&String> = answer.as_object().context("not an object")?.keys().collect();
    ensure!(keys == ["expires_at", "url"], "unexpected keys {keys:?} in {answer}");
    let url = answer["url"].as_str().context("no url")?.to_string();
    ensure!(url.starts_with(&format!("{}/console/signin/", fx.server.url())), "odd console URL {url}");
    Ok(url)
}

fn docs(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs").join(name)
}

fn wants_screenshot(name: &str) -> bool {
    std::env::var("UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") || !docs(name).exists()
}

async fn screenshot(page: &Page, name: &str) -> anyhow::Result<()> {
    let params = ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).build();
    let png = page.save_screenshot(params, docs(name)).await?;
    ensure!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "odd screenshot {name} ({} bytes)", png.len());
    println!("wrote docs/{name}");
    Ok(())
}

async fn phone(page: &Page, phone: bool) -> anyhow::Result<()> {
    let (w, h, scale, mobile) = if phone { (390, 844, 2.0, true) } else { (WIDTH, HEIGHT, 1.0, false) };
    page.execute(SetDeviceMetricsOverrideParams::new(i64::from(w), i64::from(h), scale, mobile)).await?;
    Ok(())
}

#[test]
fn console_signs_in_opens_a_terminal_and_revokes_a_link_it_made() -> anyhow::Result<()> {
    let Some(path) = chromium()? else {
        return Ok(());
    };
    let fx = Fixture::start("console-box")?;
    let machine = fx.machine().to_string();
    let url = console_url(&fx)?;
    let admin = Chrome::launch(&path)?;
    let page = admin.page()?;

    // Sign in with the one-time URL and see the machine online.
    let p = page.clone();
    let m = machine.clone();
    step(async move {
        p.goto(url.as_str()).await?;
        poll(&p, PATH, Duration::from_secs(10), |v| v == "/console").await?;
        let row = format!("document.querySelector('tr[data-id=\"{m}\"] .state').textContent");
        poll(&p, &row, Duration::from_secs(10), |v| v == "online").await?;
        let name = eval(&p, &format!("document.querySelector('tr[data-id=\"{m}\"] .machine-link').textContent")).await;
        ensure!(name == "console-box", "machine name on the page: {name}");
        Ok(())
    })?;

    // A terminal in the page.
    let p = page.clone();
    let m = machine.clone();
    step(async move {
        p.goto(format!("{}/console/m/{m}", base_of(&p).await?)).await?;
        click(&p, "#open-terminal").await?;
        poll(&p, STATE, Duration::from_secs(15), |v| v == "open").await?;
        run_in_terminal(&p, "echo console-$((40+2))", "console-42").await
    })?;

    // A read-only link from the machine page.
    let p = page.clone();
    let m = machine.clone();
    let link = step(async move {
        p.goto(format!("{}/console/m/{m}", base_of(&p).await?)).await?;
        click(&p, "#share-ro").await?;
        click(&p, "#share-submit").await?;
        let url = poll(&p, "(document.getElementById('minted-url') || {}).value", Duration::from_secs(10), |v| {
            v.as_str().is_some_and(|s| s.contains("/s/"))
        })
        .await?;
        poll(&p, "!!document.querySelector('#qr img')", Duration::from_secs(5), |v| v == true).await?;
        Ok(url.as_str().unwrap_or_default().to_string())
    })?;

    // A second browser (its own cookies) opens it: output arrives, input is dropped.
    let visitor = Chrome::launch(&path)?;
    let vpage = visitor.page()?;
    let marker = fx.server.temp_dir().join("typed-through-read-only-link");
    let (v, l, mk) = (vpage.clone(), link.clone(), marker.display().to_string());
    step(async move {
        v.goto(l.as_str()).await?;
        poll(&v, STATE, Duration::from_secs(15), |s| s == "open").await?;
        poll(&v, ROWS_TEXT, Duration::from_secs(15), |t| t.as_str().is_some_and(|t| !t.trim().is_empty())).await?;
        let input = v.find_element("textarea.xterm-helper-textarea").await?;
        input.focus().await?;
        input.type_str(&format!("touch {mk}")).await?;
        input.press_key("Enter").await?;
        Ok(())
    })?;
    // Let a keystroke's round trip pass through the same machine, then look for the file.
    let echo = fx.server.cli().exec(&machine, &["--json"], &["sh", "-c", "echo ok"])?;
    ensure!(echo.code == 0, "exec after typing: {echo}");
    ensure!(!marker.exists(), "a read-only link's keystrokes reached the shell");

    // Revoke it on the Links page: the visitor's terminal says so at once.
    let p = page.clone();
    let id = link_id(&fx, &link)?;
    step(async move {
        p.goto(format!("{}/console/links", base_of(&p).await?)).await?;
        let viewers = format!("document.querySelector('tr[data-link=\"{id}\"] .viewers').textContent");
        ensure!(eval(&p, &viewers).await == "1", "live viewers of the link: {}", eval(&p, &viewers).await);
        click(&p, &format!("tr[data-link=\"{id}\"] button.revoke")).await?;
        let status = format!("(document.querySelector('tr[data-link=\"{id}\"] .status') || {{}}).textContent");
        poll(&p, &status, Duration::from_secs(10), |v| v == "revoked").await?;
        let audit = eval(&p, "[...document.querySelectorAll('#audit .action')].map(e => e.textContent)").await;
        ensure!(audit.to_string().contains("console.link.revoke"), "audit log: {audit}");
        let revoke_row = "[...document.querySelectorAll('#audit tr')].find(r => r.querySelector('.action')?.textContent == 'console.link.revoke')";
        let via = eval(&p, &format!("{revoke_row}.querySelector('.surface').textContent")).await;
        ensure!(via == "web", "the console's rows name their surface in its own column: {via}");
        Ok(())
    })?;
    let v = vpage.clone();
    step(async move {
        let overlay = poll(&v, OVERLAY, Duration::from_secs(5), |o| o["visible"] == true).await?;
        ensure!(overlay["text"] == "This link was revoked", "visitor overlay: {overlay}");
        Ok(())
    })?;
    // The visitor's cookies never reach the console.
    let v = vpage.clone();
    step(async move {
        v.goto(format!("{}/console", base_of(&v).await?)).await?;
        poll(&v, PATH, Duration::from_secs(10), |p| p == "/login").await.map(drop)
    })?;

    take_screenshots(&page, &machine)
}

/// `http://127.0.0.1:PORT` of the page's current URL.
async fn base_of(page: &Page) -> anyhow::Result<String> {
    let url = page.url().await?.context("page has no URL")?;
    let rest = url.strip_prefix("http://").context("not http")?;
    Ok(format!("http://{}", rest.split('/').next().unwrap_or_default()))
}

fn link_id(fx: &Fixture, url: &str) -> anyhow::Result<String> {
    let run = fx.server.cli().run(&["connect", "shares", "--json"])?.expect_code(0)?;
    let rows: Vec<Value> = run.json()?;
    ensure!(rows.len() == 1, "expected one link: {rows:?}");
    ensure!(url.contains("/s/"), "not a link URL: {url}");
    Ok(rows[0]["id"].as_str().unwrap_or_default().to_string())
}

/// The Machines page, a terminal and the Links page, desktop and a 390 px phone.
fn take_screenshots(page: &Page, machine: &str) -> anyhow::Result<()> {
    if !wants_screenshot("console-machines.png") {
        return Ok(());
    }
    let (p, m) = (page.clone(), machine.to_string());
    step(async move {
        let base = base_of(&p).await?;
        for (is_phone, suffix) in [(false, ""), (true, "-phone")] {
            phone(&p, is_phone).await?;
            p.goto(format!("{base}/console")).await?;
            poll(&p, PATH, Duration::from_secs(10), |v| v == "/console").await?;
            screenshot(&p, &format!("console-machines{suffix}.png")).await?;
            // The phone shows the key bar a touch screen would get.
            let keys = if is_phone { "?keys=1" } else { "" };
            p.goto(format!("{base}/console/m/{m}/terminal{keys}")).await?;
            poll(&p, STATE, Duration::from_secs(15), |v| v == "open").await?;
            run_in_terminal(&p, "echo hello from the console", "hello from the console").await?;
            screenshot(&p, &format!("console-terminal{suffix}.png")).await?;
            p.goto(format!("{base}/console/links")).await?;
            screenshot(&p, &format!("console-links{suffix}.png")).await?;
        }
        Ok(())
    })
}

#[test]
fn the_key_bar_sends_keys_a_phone_keyboard_lacks() -> anyhow::Result<()> {
    let Some(path) = chromium()? else {
        return Ok(());
    };
    let fx = Fixture::start("phone-box")?;
    let url = console_url(&fx)?;
    let machine = fx.machine().to_string();
    let chrome = Chrome::launch(&path)?;
    let page = chrome.page()?;
    step(async move {
        phone(&page, true).await?;
        page.goto(url.as_str()).await?;
        poll(&page, PATH, Duration::from_secs(10), |v| v == "/console").await?;
        page.goto(format!("{}/console/m/{machine}/terminal?keys=1", base_of(&page).await?)).await?;
        poll(&page, STATE, Duration::from_secs(15), |v| v == "open").await?;
        poll(&page, "!document.getElementById('keybar').hidden", Duration::from_secs(5), |v| v == true).await?;
        poll(&page, ROWS_TEXT, Duration::from_secs(15), |v| v.as_str().is_some_and(|t| !t.trim().is_empty())).await?;
        // `echo keybar` `|` ` tr a-z A-Z`: the pipe comes from the bar.
        let input = page.find_element("textarea.xterm-helper-textarea").await?;
        input.focus().await?;
        input.type_str("echo keybar ").await?;
        click(&page, "#keybar [data-key=pipe]").await?;
        let input = page.find_element("textarea.xterm-helper-textarea").await?;
        input.type_str(" tr a-z A-Z").await?;
        input.press_key("Enter").await?;
        poll(&page, ROWS_TEXT, Duration::from_secs(15), |v| has_line(v, "KEYBAR")).await?;
        // A sticky Ctrl turns the next typed `c` into Ctrl-C.
        input.type_str("sleep 30").await?;
        input.press_key("Enter").await?;
        click(&page, "#keybar [data-key=ctrl]").await?;
        let pressed =
            eval(&page, "document.querySelector('#keybar [data-key=ctrl]').getAttribute('aria-pressed')").await;
        ensure!(pressed == "true", "Ctrl is not shown as held: {pressed}");
        let input = page.find_element("textarea.xterm-helper-textarea").await?;
        input.type_str("c").await?;
        input.type_str("echo after-$((1+1))").await?;
        input.press_key("Enter").await?;
        poll(&page, ROWS_TEXT, Duration::from_secs(10), |v| has_line(v, "after-2")).await.map(drop)
    })
}

#[test]
fn the_machines_page_follows_a_machine_going_offline_without_a_reload() -> anyhow::Result<()> {
    let Some(path) = chromium()? else {
        return Ok(());
    };
    let mut fx = Fixture::start("going-box")?;
    let url = console_url(&fx)?;
    let machine = fx.machine().to_string();
    let chrome = Chrome::launch(&path)?;
    let page = chrome.page()?;
    let row = format!("document.querySelector('tr[data-id=\"{machine}\"] .state').textContent");
    let (p, r) = (page.clone(), row.clone());
    step(async move {
        p.goto(url.as_str()).await?;
        poll(&p, &r, Duration::from_secs(10), |v| v == "online").await?;
        // The event stream's first message marks the page as live.
        poll(&p, "document.body.dataset.updates || '0'", Duration::from_secs(10), |v| v != "0").await?;
        eval(&p, "window.notReloaded = true").await;
        Ok(())
    })?;
    fx.agent.kill();
    step(async move {
        poll(&page, &row, Duration::from_secs(15), |v| v == "offline").await?;
        ensure!(eval(&page, "window.notReloaded === true").await == true, "the page reloaded instead of updating");
        Ok(())
    })
}

// ---- plain HTTP: redirects, CSRF, roles -------------------------------------------------

/// An HTTP client that follows no redirects and carries one console cookie by hand.
struct Browserless {
    http: reqwest::Client,
    base: String,
    cookie: String,
}

impl Browserless {
    fn new(base: &str) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let _runtime = rt().enter();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap_or_default();
        Self { http, base: base.to_string(), cookie: String::new() }
    }

    fn keep_cookie(&mut self, resp: &reqwest::Response) {
        if let Some(c) = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()) {
            self.cookie = c.split(';').next().unwrap_or_default().to_string();
        }
    }

    /// GET `path` (or a full URL): status, Location and body.
    fn get(&mut self, path: &str) -> anyhow::Result<(u16, String, String)> {
        let url = if path.starts_with("http") { path.to_string() } else { format!("{}{path}", self.base) };
        let resp = rt().block_on(async { self.http.get(&url).header("cookie", &self.cookie).send().await })?;
        self.keep_cookie(&resp);
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let status = resp.status().as_u16();
        Ok((status, location, rt().block_on(async { resp.text().await })?))
    }

    /// POST a form to `path`.
    fn post(&mut self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<(u16, String, String)> {
        let url = format!("{}{path}", self.base);
        let resp =
            rt().block_on(async { self.http.post(&url).header("cookie", &self.cookie).form(form).send().await })?;
        self.keep_cookie(&resp);
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let status = resp.status().as_u16();
        Ok((status, location, rt().block_on(async { resp.text().await })?))
    }

    /// The CSRF token of the page at `path`.
    fn csrf(&mut self, path: &str) -> anyhow::Result<String> {
        let (status, _, body) = self.get(path)?;
        ensure!(status == 200, "GET {path}: {status}");
        let at = body.find("name=\"csrf\" value=\"").context("no CSRF field on the page")?;
        let rest = &body[at + "name=\"csrf\" value=\"".len()..];
        Ok(rest.split('"').next().unwrap_or_default().to_string())
    }

    /// Signs in with email and password on `/login`.
    fn sign_in(&mut self, email: &str, password: &str) -> anyhow::Result<()> {
        let csrf = self.csrf("/login")?;
        ensure!(self.cookie.starts_with("cmdop_console="), "no console cookie from /login: {:?}", self.cookie);
        let (status, location, body) =
            self.post("/console/login", &[("email", email), ("password", password), ("csrf", &csrf)])?;
        ensure!(status == 303 && location == "/console", "sign-in answered {status} {location}: {body}");
        Ok(())
    }
}

/// `cmdop server user add EMAIL --role R`: the one-time password it prints.
fn add_user(fx: &Fixture, email: &str, role: &str) -> anyhow::Result<String> {
    let data_dir = fx.server.data_dir();
    let args = ["server", "user", "add", email, "--role", role, "--data-dir", data_dir.to_str().unwrap_or_default()];
    let run = fx.server.cli().run(&args)?.expect_code(0)?;
    let line = run.stdout_text().lines().find(|l| l.starts_with("one-time password: ")).map(str::to_string);
    Ok(line.context("no password printed")?.trim_start_matches("one-time password: ").to_string())
}

#[test]
fn console_without_a_session_sends_the_browser_to_login() -> anyhow::Result<()> {
    let fx = Fixture::start("anon-box")?;
    let mut web = Browserless::new(fx.server.url());
    let (status, location, _) = web.get("/console")?;
    ensure!(status == 303 && location == "/login", "GET /console answered {status} {location}");
    let (status, _, body) = web.get("/login")?;
    ensure!(status == 200 && body.contains("name=\"password\""), "login page: {status}");
    ensure!(web.cookie.starts_with("cmdop_console="), "no console cookie from /login");
    let machine = fx.machine().to_string();
    let (status, location, _) = web.get(&format!("/console/m/{machine}/terminal"))?;
    ensure!(status == 303 && location == "/login", "terminal without a session: {status} {location}");
    // Not signed in: `cmdop console` says so with exit 3.
    let run = fx.server.anonymous_cli().run(&["console", "--no-open"])?;
    ensure!(run.code == 3, "cmdop console signed out: {run}");
    Ok(())
}

#[test]
fn the_one_time_url_works_once_and_forms_need_the_csrf_token() -> anyhow::Result<()> {
    let fx = Fixture::start("csrf-box")?;
    let machine = fx.machine().to_string();
    let url = console_url(&fx)?;
    let mut web = Browserless::new(fx.server.url());
    let (status, location, _) = web.get(&url)?;
    ensure!(status == 303 && location == "/console", "ticket answered {status} {location}");
    let cookie = web.cookie.clone();
    let (status, _, _) = Browserless::new(fx.server.url()).get(&url)?;
    ensure!(status == 410, "a used ticket answered {status}");

    let share = format!("/console/m/{machine}/share");
    let (status, _, _) = web.post(&share, &[("ttl", "1h")])?;
    ensure!(status == 403, "share without a CSRF token answered {status}");
    let (status, _, _) = web.post(&share, &[("ttl", "1h"), ("csrf", "forged")])?;
    ensure!(status == 403, "share with a wrong CSRF token answered {status}");
    let csrf = web.csrf("/console")?;
    let (status, _, body) = web.post(&share, &[("ttl", "1h"), ("csrf", &csrf)])?;
    ensure!(status == 200 && body.contains("id=\"minted-url\""), "share with the token answered {status}");
    // Sign out: the same cookie no longer opens the console.
    let (status, location, _) = web.post("/console/logout", &[("csrf", &csrf)])?;
    ensure!(status == 303 && location == "/login", "sign-out answered {status} {location}");
    let mut stale = Browserless::new(fx.server.url());
    stale.cookie = cookie;
    let (status, location, _) = stale.get("/console")?;
    ensure!(status == 303 && location == "/login", "the old cookie after sign-out: {status} {location}");
    Ok(())
}

#[test]
fn viewers_get_no_terminal_or_share_and_a_role_change_applies_at_once() -> anyhow::Result<()> {
    let fx = Fixture::start("role-box")?;
    let machine = fx.machine().to_string();
    let password = add_user(&fx, "viewer@example.com", "viewer")?;
    let mut web = Browserless::new(fx.server.url());
    web.sign_in("viewer@example.com", &password)?;
    let (status, _, body) = web.get("/console")?;
    ensure!(status == 200 && body.contains("role-box"), "viewer's machines page: {status}");
    let (_, _, body) = web.get("/console?q=ROLE")?;
    ensure!(body.contains("role-box"), "the filter lost the machine");
    let (_, _, body) = web.get("/console?q=nothing-like-it")?;
    ensure!(!body.contains("role-box") && body.contains("No machine matches"), "the filter kept the machine");
    let (status, _, body) = web.get(&format!("/console/m/{machine}"))?;
    ensure!(status == 200, "viewer's machine page: {status}");
    ensure!(!body.contains("open-terminal") && !body.contains("share-form"), "viewer sees terminal or share buttons");
    // Forged requests are refused by the server, not only hidden.
    let csrf = web.csrf("/console")?;
    let (status, _, _) = web.get(&format!("/console/m/{machine}/terminal"))?;
    ensure!(status == 403, "viewer's terminal page answered {status}");
    let (status, _, _) = web.post(&format!("/console/m/{machine}/share"), &[("ttl", "1h"), ("csrf", &csrf)])?;
    ensure!(status == 403, "viewer's forged share answered {status}");
    let links = fx.server.cli().run(&["connect", "shares", "--json"])?.expect_code(0)?;
    ensure!(links.stdout_text().trim() == "[]", "a link was made: {links}");

    // Promoted to member: the next request shows the terminal button; demoted: gone again.
    add_user(&fx, "viewer@example.com", "member")?;
    let (_, _, body) = web.get(&format!("/console/m/{machine}"))?;
    ensure!(body.contains("open-terminal"), "member has no terminal button");
    add_user(&fx, "viewer@example.com", "viewer")?;
    let (status, _, _) = web.get(&format!("/console/m/{machine}/terminal"))?;
    ensure!(status == 403, "demoted viewer's terminal page answered {status}");
    Ok(())
}

#[test]
fn share_link_pages_set_no_console_cookie() -> anyhow::Result<()> {
    let fx = Fixture::start("link-box")?;
    let link = fx.share("1h", &[])?;
    let page = share_support::get(&link.url)?;
    ensure!(page.status == 200, "link page: {}", page.status);
    ensure!(page.header("set-cookie").is_empty(), "the link page set a cookie: {}", page.header("set-cookie"));
    // The console's cookie is scoped to /console, so a browser never sends it to /s/.
    let mut web = Browserless::new(fx.server.url());
    let url = console_url(&fx)?;
    let resp = rt().block_on(async { web.http.get(&url).send().await })?;
    let set = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    ensure!(
        set.contains("Path=/console") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "cookie: {set}"
    );
    web.keep_cookie(&resp);
    Ok(())
}
