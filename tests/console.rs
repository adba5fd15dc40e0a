//! The web console end to end: `cmdop console`'s one-time URL, the Machines page, a terminal,
//! share links made and revoked from the page, roles, CSRF and the cookie's reach. Browser
//! scenarios drive Debian's chromium over CDP (tests/common/chrome.rs, shared with
//! tests/browser.rs); the rest is plain HTTP with the cookie handled by hand.
//!
//! `UPDATE_SCREENSHOT=1` rewrites the console screenshots in docs/ (also written when missing).

#[path = "common/chrome.rs"]
mod chrome;
mod common;
mod share_support;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use chrome::{BUFFER_TEXT, Chrome, OVERLAY, ROWS_TEXT, STATE, chromium, click, eval, has_line, poll};
use chromiumoxide::cdp::browser_protocol::emulation::SetDeviceMetricsOverrideParams;
use chromiumoxide::cdp::browser_protocol::page::CaptureScreenshotFormat;
use chromiumoxide::page::{Page, ScreenshotParams};
use serde_json::Value;
use share_support::ws::{Refused, WsClient};
use share_support::{Fixture, rt};

/// Longest one browser step may take.
const STEP: Duration = Duration::from_secs(60);
const WIDTH: u32 = 1100;
const HEIGHT: u32 = 700;

const PATH: &str = "location.pathname";

/// Runs one browser step, bounded by `STEP`.
fn step<T: Send + 'static>(body: impl Future<Output = anyhow::Result<T>> + Send + 'static) -> anyhow::Result<T> {
    chrome::step(STEP, body)
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
    // The machine page is long: all of it.
    let full = name.starts_with("console-machine.") || name.starts_with("console-machine-");
    let params = ScreenshotParams::builder().format(CaptureScreenshotFormat::Png).full_page(full).build();
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
    let admin = Chrome::launch(&path, WIDTH, HEIGHT)?;
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
    let visitor = Chrome::launch(&path, WIDTH, HEIGHT)?;
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
    if !["console-machines.png", "console-machine.png"].iter().any(|n| wants_screenshot(n)) {
        return Ok(());
    }
    let (p, m) = (page.clone(), machine.to_string());
    step(async move {
        let base = base_of(&p).await?;
        // A persistent session for the machine page's list.
        p.goto(format!("{base}/console/m/{m}/terminal?attach=build")).await?;
        poll(&p, STATE, Duration::from_secs(15), |v| v == "open").await?;
        run_in_terminal(&p, "echo building", "building").await?;
        for (is_phone, suffix) in [(false, ""), (true, "-phone")] {
            phone(&p, is_phone).await?;
            p.goto(format!("{base}/console/m/{m}")).await?;
            run_from_page(&p, "uname -sm; echo 'disk check' >&2; df -h / | tail -1", 30).await?;
            screenshot(&p, &format!("console-machine{suffix}.png")).await?;
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
    let chrome = Chrome::launch(&path, WIDTH, HEIGHT)?;
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
        // Type on only once the next prompt is up: keys typed between two commands race
        // bash's switch back to its line editor (some were dropped or reordered).
        poll(&page, ROWS_TEXT, Duration::from_secs(15), |v| {
            let lines = v.as_str().map(share_support::terminal_lines).unwrap_or_default();
            lines
                .iter()
                .position(|l| l == "KEYBAR")
                .is_some_and(|at| lines[at + 1..].iter().any(|l| !l.trim().is_empty()))
        })
        .await?;
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
    let chrome = Chrome::launch(&path, WIDTH, HEIGHT)?;
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
    let kill = format!("/console/m/{machine}/sessions/{UNKNOWN_SESSION}/kill");
    let (status, _, _) = web.post(&kill, &[("csrf", &csrf)])?;
    ensure!(status == 403, "viewer's forged kill answered {status}");
    let run_url = format!("{}/console/m/{machine}/run/ws", fx.server.url().replacen("http://", "ws://", 1));
    match WsClient::open_with(&run_url, None, Some(&web.cookie)) {
        Err(Refused::Status(403)) => {}
        Err(e) => bail!("viewer's command socket: {e}"),
        Ok(_) => bail!("viewer's command socket was upgraded"),
    }

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

// ---- shell sessions, one-shot commands, resuming ---------------------------------------

/// A browser test's parts: a server with one agent, a fresh one-time sign-in URL, and a
/// browser page (none when there is no browser outside CI).
struct Scene {
    page: Page,
    _chrome: Chrome,
    url: String,
    machine: String,
    fx: Fixture,
}

fn scene(name: &str) -> anyhow::Result<Option<Scene>> {
    let Some(path) = chromium()? else {
        return Ok(None);
    };
    let fx = Fixture::start(name)?;
    let machine = fx.machine().to_string();
    let url = console_url(&fx)?;
    let chrome = Chrome::launch(&path, WIDTH, HEIGHT)?;
    let page = chrome.page()?;
    Ok(Some(Scene { page, _chrome: chrome, url, machine, fx }))
}

/// Signs `page` in with a fresh one-time URL and opens the machine's page.
async fn sign_in_to_machine(page: &Page, url: &str, machine: &str) -> anyhow::Result<String> {
    page.goto(url).await?;
    poll(page, PATH, Duration::from_secs(10), |v| v == "/console").await?;
    let base = base_of(page).await?;
    page.goto(format!("{base}/console/m/{machine}")).await?;
    poll(page, PATH, Duration::from_secs(10), |v| v.as_str().is_some_and(|p| p.starts_with("/console/m/"))).await?;
    Ok(base)
}

/// The session rows of the machine page: `[{id, name, attached}]`.
const SESSION_ROWS: &str = "[...document.querySelectorAll('#sessions tr[data-session]')].map(r => \
     ({ id: r.dataset.session, name: r.dataset.name, attached: r.querySelector('.attached').textContent }))";

#[test]
fn the_machine_page_lists_attaches_and_kills_persistent_sessions() -> anyhow::Result<()> {
    let Some(Scene { page, _chrome, url, machine, fx }) = scene("sessions-box")? else {
        return Ok(());
    };
    let (p, m) = (page.clone(), machine.clone());
    let session = step(async move {
        sign_in_to_machine(&p, &url, &m).await?;
        ensure!(
            eval(&p, "!!document.getElementById('sessions-empty')").await == true,
            "sessions listed on a new agent"
        );
        // A new persistent session by name, from the page.
        let name = p.find_element("#new-session-name").await?;
        name.click().await?;
        name.type_str("work").await?;
        click(&p, "#new-session").await?;
        poll(&p, STATE, Duration::from_secs(15), |v| v == "open").await?;
        ensure!(
            eval(&p, "location.search").await == "?attach=work",
            "terminal URL: {}",
            eval(&p, "location.href").await
        );
        run_in_terminal(&p, "echo in-work-$((40+2))", "in-work-42").await?;
        let session = eval(&p, "window.cmdopShare.session").await.as_str().unwrap_or_default().to_string();

        // Listed on the machine page with its name and id.
        p.goto(format!("{}/console/m/{m}", base_of(&p).await?)).await?;
        let rows =
            poll(&p, SESSION_ROWS, Duration::from_secs(5), |v| v.as_array().is_some_and(|a| a.len() == 1)).await?;
        ensure!(rows[0]["name"] == "work" && rows[0]["id"] == session.as_str(), "session rows: {rows}");
        Ok(session)
    })?;
    // The CLI sees the same session.
    let listed = fx.server.cli().run(&["connect", "sessions", &machine, "--json"])?.expect_code(0)?;
    ensure!(listed.stdout_text().contains(&session), "the CLI does not list {session}: {listed}");

    // Attach by id from the list: the session's output is replayed, and it is the same shell.
    let (p, m, s) = (page.clone(), machine.clone(), session.clone());
    step(async move {
        click(&p, &format!("tr[data-session=\"{s}\"] a.attach")).await?;
        poll(&p, STATE, Duration::from_secs(15), |v| v == "open").await?;
        // `ready` (which names the session) follows the socket's opening.
        let attached = poll(&p, "window.cmdopShare.session", Duration::from_secs(10), |v| !v.is_null()).await?;
        ensure!(attached == s.as_str(), "attached to another session: {attached}");
        poll(&p, BUFFER_TEXT, Duration::from_secs(10), |v| has_line(v, "in-work-42")).await?;
        run_in_terminal(&p, "echo again-$((2*21))", "again-42").await?;

        // Kill it from the machine page (after the confirmation).
        p.goto(format!("{}/console/m/{m}", base_of(&p).await?)).await?;
        poll(&p, SESSION_ROWS, Duration::from_secs(5), |v| v.as_array().is_some_and(|a| a.len() == 1)).await?;
        eval(&p, "window.confirm = () => true").await;
        click(&p, &format!("tr[data-session=\"{s}\"] button.kill")).await?;
        // The shell takes a moment to exit; the page waits for it a little, a loaded machine
        // may need a reload or two.
        let empty = "!!document.getElementById('sessions-empty')";
        for _ in 0..20 {
            if poll(&p, empty, Duration::from_secs(2), |v| v == true).await.is_ok() {
                break;
            }
            p.reload().await?;
        }
        ensure!(eval(&p, empty).await == true, "the killed session is still listed");
        p.goto(format!("{}/console/links", base_of(&p).await?)).await?;
        let audit = eval(&p, "[...document.querySelectorAll('#audit tr')].map(e => e.textContent).join('\\n')").await;
        let text = audit.as_str().unwrap_or_default();
        ensure!(text.contains("console.session.attach") && text.contains("console.session.kill"), "audit: {text}");
        ensure!(text.contains(&format!("session={s}")), "the audit does not name the session: {text}");
        Ok(())
    })?;
    let listed = fx.server.cli().run(&["connect", "sessions", &machine, "--json"])?.expect_code(0)?;
    ensure!(!listed.stdout_text().contains(&session), "the killed session is still listed: {listed}");
    Ok(())
}

/// Runs `command` (with `timeout` seconds) from the machine page's form and waits for its end.
async fn run_from_page(page: &Page, command: &str, timeout: u32) -> anyhow::Result<Value> {
    let set = format!(
        "document.getElementById('run-command').value = {}; document.getElementById('run-timeout').value = '{timeout}'",
        serde_json::to_string(command)?
    );
    eval(page, &set).await;
    eval(page, "delete document.body.dataset.run").await;
    click(page, "#run-submit").await?;
    poll(page, "document.body.dataset.run || ''", Duration::from_secs(30), |v| {
        v == "done" || v == "failed" || v == "locked"
    })
    .await?;
    Ok(eval(
        page,
        "({ state: document.body.dataset.run, code: document.getElementById('run-status').dataset.code, \
           status: document.getElementById('run-status').textContent, \
           output: document.getElementById('run-output').textContent, \
           stderr: [...document.querySelectorAll('#run-output .stderr')].map(s => s.textContent).join(''), \
           truncated: !document.getElementById('run-truncated').hidden, \
           note: document.getElementById('run-truncated').textContent })",
    )
    .await)
}

#[test]
fn a_one_shot_command_streams_its_output_exit_code_cap_and_timeout() -> anyhow::Result<()> {
    let Some(Scene { page, _chrome, url, machine, fx: _fx }) = scene("run-box")? else {
        return Ok(());
    };
    step(async move {
        sign_in_to_machine(&page, &url, &machine).await?;
        let r = run_from_page(&page, "echo out-1; echo err-1 >&2; echo out-2; exit 3", 60).await?;
        ensure!(r["state"] == "done" && r["code"] == "3", "run: {r}");
        let output = r["output"].as_str().unwrap_or_default();
        ensure!(output.contains("out-1\n") && output.contains("out-2\n"), "stdout: {r}");
        ensure!(r["stderr"] == "err-1\n", "stderr: {r}");
        ensure!(r["truncated"] == false, "truncated: {r}");

        // More than the cap: the page shows the first 256 KiB and says the rest was cut.
        let r = run_from_page(&page, "head -c 400000 /dev/zero | tr '\\0' x", 60).await?;
        ensure!(r["state"] == "done" && r["code"] == "0", "big run: {}", r["status"]);
        ensure!(
            r["truncated"] == true && r["note"].as_str().is_some_and(|n| n.contains("truncated")),
            "note: {}",
            r["note"]
        );
        let shown = r["output"].as_str().unwrap_or_default().len();
        ensure!(shown == 256 * 1024, "shown {shown} bytes of output");
        ensure!(r["status"].as_str().is_some_and(|s| s.contains("400000 bytes")), "status: {}", r["status"]);

        // A timeout kills it: exit 124.
        let r = run_from_page(&page, "echo before-sleep; sleep 30", 1).await?;
        ensure!(r["code"] == "124" && r["status"].as_str().is_some_and(|s| s.contains("timed out")), "timeout: {r}");
        ensure!(r["output"].as_str().is_some_and(|o| o.contains("before-sleep")), "output before the timeout: {r}");

        // Audited, with the command.
        page.goto(format!("{}/console/links", base_of(&page).await?)).await?;
        let audit =
            eval(&page, "[...document.querySelectorAll('#audit tr')].map(e => e.textContent).join('\\n')").await;
        let text = audit.as_str().unwrap_or_default();
        ensure!(text.contains("console.run") && text.contains("echo out-1"), "audit: {text}");
        ensure!(text.contains("console.run.exit") && text.contains("code=124"), "audit: {text}");
        Ok(())
    })
}

#[test]
fn the_console_terminal_resumes_a_dropped_socket_by_offset_without_loss_or_doubling() -> anyhow::Result<()> {
    let Some(Scene { page, _chrome, url, machine, fx: _fx }) = scene("resume-box")? else {
        return Ok(());
    };
    const LINES: usize = 300;
    step(async move {
        page.goto(url.as_str()).await?;
        poll(&page, PATH, Duration::from_secs(10), |v| v == "/console").await?;
        page.goto(format!("{}/console/m/{machine}/terminal", base_of(&page).await?)).await?;
        poll(&page, STATE, Duration::from_secs(15), |v| v == "open").await?;
        poll(&page, ROWS_TEXT, Duration::from_secs(15), |v| v.as_str().is_some_and(|t| !t.trim().is_empty())).await?;
        let input = page.find_element("textarea.xterm-helper-textarea").await?;
        input.focus().await?;
        input
            .type_str(&format!("for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.01; done; echo all-$((1+1))-done"))
            .await?;
        input.press_key("Enter").await?;
        // Mid-stream, the page's socket drops.
        poll(&page, BUFFER_TEXT, Duration::from_secs(15), |v| has_line(v, "line-40")).await?;
        eval(&page, "window.firstSocket = window.cmdopSocket; window.firstSession = window.cmdopShare.session; window.droppedAt = performance.now(); window.cmdopSocket.close()").await;
        poll(
            &page,
            "window.cmdopSocket !== window.firstSocket && document.body.dataset.state",
            Duration::from_secs(15),
            |v| v == "open",
        )
        .await?;
        let took = eval(&page, "Math.round(performance.now() - window.droppedAt)").await;
        println!("the page was back on its session {took} ms after its socket dropped");
        ensure!(
            eval(&page, "window.cmdopShare.session === window.firstSession").await == true,
            "a new session after the reconnect"
        );
        let buffer = poll(&page, BUFFER_TEXT, Duration::from_secs(30), |v| has_line(v, "all-2-done")).await?;
        let seen: Vec<&str> = buffer
            .as_str()
            .unwrap_or_default()
            .lines()
            .map(str::trim_end)
            .filter(|l| l.strip_prefix("line-").is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())))
            .collect();
        let want: Vec<String> = (1..=LINES).map(|i| format!("line-{i}")).collect();
        ensure!(seen == want, "after the reconnect the lines are not 1..={LINES} once each: {seen:?}");
        let note = eval(&page, "document.getElementById('toast').hidden").await;
        ensure!(note == true, "the page reported lost output");
        Ok(())
    })
}

#[test]
fn an_attach_password_guards_sessions_and_kill_needs_the_csrf_token() -> anyhow::Result<()> {
    let fx = Fixture::start("locked-box")?;
    let machine = fx.machine().to_string();
    let url = console_url(&fx)?;
    let mut web = Browserless::new(fx.server.url());
    let (status, _, _) = web.get(&url)?;
    ensure!(status == 303, "sign-in answered {status}");
    fx.agent.set_attach_password("console pass phrase")?;
    let page = format!("/console/m/{machine}");
    let (status, _, body) = web.get(&page)?;
    ensure!(status == 200 && body.contains("id=\"sessions-locked\""), "locked machine page: {status}");
    ensure!(
        !body.contains("id=\"sessions\"") && !body.contains("id=\"machine-unlock\" hidden"),
        "locked page lists or hides the form"
    );
    let csrf = web.csrf(&page)?;
    let kill = format!("/console/m/{machine}/sessions/{UNKNOWN_SESSION}/kill");
    let (status, _, body) = web.post(&kill, &[("csrf", &csrf)])?;
    ensure!(status == 403 && body.contains("attach password"), "kill on a locked machine answered {status}");
    let (status, _, _) = web.post(&kill, &[])?;
    ensure!(status == 403, "kill without a CSRF token answered {status}");
    // A command: a forged token is refused (4008), the right one meets the password (4010).
    let run_url = format!("{}/console/m/{machine}/run/ws", fx.server.url().replacen("http://", "ws://", 1));
    let cookie = web.cookie.clone();
    let run = |token: &str, command: &str| -> anyhow::Result<WsClient> {
        let ws = WsClient::open_with(&run_url, None, Some(&cookie)).map_err(|e| anyhow::anyhow!("{e}"))?;
        ws.send_json(&serde_json::json!({ "command": command, "timeout_secs": 20, "csrf": token }))?;
        Ok(ws)
    };
    let closed_with = |ws: &WsClient, code: u16| {
        common::wait_until(Duration::from_secs(20), "the run socket to close", || {
            Ok(ws.closed().is_some_and(|c| c.code == code))
        })
    };
    closed_with(&run("forged", "echo no")?, 4008).context("a forged CSRF token")?;
    closed_with(&run(&csrf, "echo no")?, 4010).context("a locked machine")?;

    // Unlock through the terminal's endpoint (the page's form posts there): now listed.
    let unlock = format!("{}/console/m/{machine}/terminal/unlock", fx.server.url());
    let answer = rt().block_on(async {
        web.http
            .post(&unlock)
            .header("cookie", &web.cookie)
            .header("x-csrf-token", &csrf)
            .json(&serde_json::json!({ "password": "console pass phrase" }))
            .send()
            .await
    })?;
    ensure!(answer.status().as_u16() == 204, "unlock answered {}", answer.status());
    let (status, _, body) = web.get(&page)?;
    ensure!(status == 200 && !body.contains("id=\"sessions-locked\""), "still locked after unlocking");
    ensure!(body.contains("id=\"sessions-empty\"") || body.contains("id=\"sessions\""), "no session list: {body}");
    // A kill of a session that is not there says so.
    let (status, _, _) = web.post(&kill, &[("csrf", &csrf)])?;
    ensure!(status == 404, "kill of an unknown session answered {status}");
    // Unlocked, the command runs: tagged output, then its exit.
    let ws = run(&csrf, "echo run-ok; exit 5")?;
    closed_with(&ws, 1000).context("an unlocked run")?;
    ensure!(ws.output_text() == "\u{1}run-ok\n", "output frames: {:?}", ws.output_text());
    let exit = ws.texts().into_iter().find(|t| t["type"] == "exit").context("no exit message")?;
    ensure!(exit["code"] == 5 && exit["truncated"] == false && exit["bytes"] == 7, "exit: {exit}");
    Ok(())
}

/// A session id no machine has.
const UNKNOWN_SESSION: &str = "0b7e7a52-1d3c-4e5f-8a9b-0c1d2e3f4a5b";

#[test]
fn the_machine_page_takes_the_attach_password_then_lists_and_runs() -> anyhow::Result<()> {
    let Some(Scene { page, _chrome, url, machine, fx }) = scene("guarded-page-box")? else {
        return Ok(());
    };
    fx.agent.set_attach_password("machine page phrase")?;
    const FORM: &str = "(() => { const b = document.getElementById('machine-unlock'); \
         const e = document.getElementById('machine-unlock-error'); \
         return { visible: !!b && !b.hidden, error: e && !e.hidden ? e.textContent : '' }; })()";
    step(async move {
        sign_in_to_machine(&page, &url, &machine).await?;
        ensure!(
            eval(&page, "!!document.getElementById('sessions-locked')").await == true,
            "sessions listed while locked"
        );
        ensure!(eval(&page, FORM).await["visible"] == true, "no password form on a locked machine");
        let r = run_from_page(&page, "echo never", 10).await?;
        ensure!(r["state"] == "locked", "a command ran on a locked machine: {r}");

        let typed = |text: &'static str| {
            let page = page.clone();
            async move {
                let input = page.find_element("#machine-unlock-password").await?;
                input.click().await?;
                input.type_str(text).await?;
                click(&page, "#machine-unlock-submit").await
            }
        };
        typed("a wrong guess").await?;
        let form = poll(&page, FORM, Duration::from_secs(10), |v| v["error"] != "").await?;
        ensure!(form["error"] == "Wrong password", "after a wrong answer: {form}");
        eval(&page, "window.beforeUnlock = true").await;
        typed("machine page phrase").await?;
        // The page reloads: listed now, and the command runs.
        poll(
            &page,
            "window.beforeUnlock === undefined && !!document.getElementById('sessions-section')",
            Duration::from_secs(10),
            |v| v == true,
        )
        .await?;
        ensure!(
            eval(&page, "!document.getElementById('sessions-locked')").await == true,
            "still locked after unlocking"
        );
        ensure!(eval(&page, FORM).await["visible"] == false, "the password form stayed up");
        let r = run_from_page(&page, "echo unlocked-$((1+1))", 10).await?;
        ensure!(r["state"] == "done" && r["code"] == "0" && r["output"] == "unlocked-2\n", "run after unlocking: {r}");
        Ok(())
    })
}
