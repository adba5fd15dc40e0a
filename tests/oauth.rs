//! Sign-in and access: the RFC 8628 device flow through real HTTP, the verification page with
//! its CSRF and rate limits, refresh rotation, revocation, `cmdop login`, and roles.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, ensure};
use common::{Cli, TestAgent, TestServer, wait_child};
use serde_json::Value;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

fn http() -> reqwest::Client {
    cmdop::install_crypto();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `cmdop server user add EMAIL --role R`: returns the one-time password it prints.
fn add_user(server: &TestServer, email: &str, role: &str) -> anyhow::Result<String> {
    let data_dir = server.data_dir();
    let run = server.cli().run(&[
        "server",
        "user",
        "add",
        email,
        "--role",
        role,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])?;
    let run = run.expect_code(0)?;
    let line = run.stdout_text().lines().find(|l| l.starts_with("one-time password: ")).map(str::to_string);
    Ok(line.context("no password printed")?.trim_start_matches("one-time password: ").to_string())
}

async fn post_form(url: &str, form: &[(&str, &str)]) -> anyhow::Result<(u16, Value)> {
    let resp = http().post(url).form(form).send().await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await?))
}

async fn start_grant(server: &TestServer) -> anyhow::Result<Value> {
    let (status, body) =
        post_form(&format!("{}/oauth/device", server.url()), &[("client_id", "test"), ("client_host", "laptop")])
            .await?;
    ensure!(status == 200, "device start: {status} {body}");
    Ok(body)
}

async fn poll(server: &TestServer, device_code: &str) -> anyhow::Result<(u16, Value)> {
    post_form(&format!("{}/oauth/token", server.url()), &[("grant_type", DEVICE_GRANT), ("device_code", device_code)])
        .await
}

/// A browser session on the verification page: one cookie jar of one cookie.
struct Browser {
    base: String,
    cookie: Option<String>,
}

impl Browser {
    fn new(server: &TestServer) -> Self {
        Self { base: server.url().to_string(), cookie: None }
    }

    fn remember(&mut self, resp: &reqwest::Response) {
        if let Some(c) = resp.headers().get("set-cookie").and_then(|v| v.to_str().ok()) {
            self.cookie = c.split(';').next().map(str::to_string);
        }
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<(u16, String)> {
        let mut req = http().get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await?;
        self.remember(&resp);
        Ok((resp.status().as_u16(), resp.text().await?))
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> anyhow::Result<(u16, String, String)> {
        let mut req = http().post(format!("{}{path}", self.base)).form(form);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let resp = req.send().await?;
        self.remember(&resp);
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        Ok((resp.status().as_u16(), location, resp.text().await?))
    }
}

fn csrf_of(html: &str) -> anyhow::Result<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).context("no csrf field")? + marker.len();
    Ok(html[start..].split('"').next().unwrap_or_default().to_string())
}

/// Signs in on the verification page and approves (or denies) `user_code`.
async fn decide(
    server: &TestServer,
    email: &str,
    password: &str,
    user_code: &str,
    approve: bool,
) -> anyhow::Result<String> {
    let mut b = Browser::new(server);
    let (status, page) = b.get(&format!("/device?user_code={user_code}")).await?;
    ensure!(status == 200 && page.contains("Sign in"), "login page: {status}");
    let csrf = csrf_of(&page)?;
    let (status, location, _) = b
        .post("/device/login", &[("email", email), ("password", password), ("user_code", user_code), ("csrf", &csrf)])
        .await?;
    ensure!(status == 303 && location.contains(user_code), "sign-in answered {status} {location}");
    let (status, page) = b.get(&location).await?;
    ensure!(status == 200 && page.contains("Approve this sign-in?"), "confirm page: {status}");
    ensure!(page.contains("laptop") || page.contains("cmdop CLI"), "confirm page names the client");
    let csrf = csrf_of(&page)?;
    let decision = if approve { "approve" } else { "deny" };
    let (status, _, page) =
        b.post("/device/decide", &[("user_code", user_code), ("decision", decision), ("csrf", &csrf)]).await?;
    ensure!(status == 200, "decide answered {status}");
    Ok(page)
}

#[tokio::test]
async fn device_flow_issues_rotating_tokens_once_approved() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let password = add_user(&server, "alice@example.com", "member")?;
    let grant = start_grant(&server).await?;
    let user_code = grant["user_code"].as_str().unwrap().to_string();
    let device_code = grant["device_code"].as_str().unwrap().to_string();
    assert_eq!(grant["expires_in"], 900);
    assert_eq!(grant["interval"], 5);
    assert!(grant["verification_uri"].as_str().unwrap().ends_with("/device"));
    assert!(grant["verification_uri_complete"].as_str().unwrap().contains(&user_code));
    assert!(user_code.len() == 9 && user_code.as_bytes()[4] == b'-', "{user_code}");

    let (status, body) = poll(&server, &device_code).await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("authorization_pending")));
    let (_, body) = poll(&server, &device_code).await?;
    assert_eq!(body["error"], "slow_down", "an immediate second poll must be told to slow down");

    let page = decide(&server, "alice@example.com", &password, &user_code, true).await?;
    assert!(page.contains("Device signed in"));
    let (status, tokens) = poll(&server, &device_code).await?;
    assert_eq!(status, 200, "{tokens}");
    assert!(tokens["access_token"].as_str().unwrap().starts_with("cmdop_"));
    assert!(tokens["refresh_token"].as_str().unwrap().starts_with("cmdopr_"));
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3600);
    let (_, again) = poll(&server, &device_code).await?;
    assert_eq!(again["error"], "invalid_grant", "a device code yields tokens once");

    let refresh = tokens["refresh_token"].as_str().unwrap();
    let url = format!("{}/oauth/token", server.url());
    let (status, rotated) = post_form(&url, &[("grant_type", "refresh_token"), ("refresh_token", refresh)]).await?;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["refresh_token"], tokens["refresh_token"]);
    // The access token works with the CLI until revoked.
    let cli = Cli::new(server.temp_dir().join("alice"));
    write_credentials(&cli, &server, &rotated)?;
    let me = cli.run(&["whoami", "--json"])?.expect_code(0)?.json::<Value>()?;
    assert_eq!((me["email"].as_str(), me["role"].as_str()), (Some("alice@example.com"), Some("member")));
    let access = rotated["access_token"].as_str().unwrap();
    let (status, _) = post_form(&format!("{}/oauth/revoke", server.url()), &[("token", access)]).await?;
    assert_eq!(status, 200);
    let after = cli.run(&["whoami"])?;
    assert_eq!(after.code, 3, "revoked token: {after}");
    Ok(())
}

fn write_credentials(cli: &Cli, server: &TestServer, tokens: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(cli.home())?;
    let creds = serde_json::json!({
        "server_url": server.url(),
        "access_token": tokens["access_token"],
        "refresh_token": tokens["refresh_token"],
        "expires_at": 4_000_000_000i64,
    });
    std::fs::write(cli.home().join("credentials.json"), creds.to_string())?;
    Ok(())
}

#[tokio::test]
async fn denied_unknown_and_expired_codes_get_rfc_errors() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let password = add_user(&server, "bob@example.com", "viewer")?;
    let grant = start_grant(&server).await?;
    let page = decide(&server, "bob@example.com", &password, grant["user_code"].as_str().unwrap(), false).await?;
    assert!(page.contains("denied"));
    let (_, body) = poll(&server, grant["device_code"].as_str().unwrap()).await?;
    assert_eq!(body["error"], "access_denied");
    let (_, body) = poll(&server, "cmdopd_not-a-real-code").await?;
    assert_eq!(body["error"], "invalid_grant");
    let (status, body) = post_form(&format!("{}/oauth/token", server.url()), &[("grant_type", "password")]).await?;
    assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_grant_type")));
    Ok(())
}

#[tokio::test]
async fn verification_page_checks_csrf_and_slows_password_guessing() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    add_user(&server, "carol@example.com", "member")?;
    let grant = start_grant(&server).await?;
    let code = grant["user_code"].as_str().unwrap();
    let mut b = Browser::new(&server);
    let (_, page) = b.get(&format!("/device?user_code={code}")).await?;
    let csrf = csrf_of(&page)?;
    let (status, _, _) = b
        .post(
            "/device/login",
            &[("email", "carol@example.com"), ("password", "x"), ("user_code", code), ("csrf", "forged")],
        )
        .await?;
    assert_eq!(status, 403, "a forged CSRF token is refused");
    let mut last = String::new();
    for _ in 0..7 {
        let form =
            [("email", "carol@example.com"), ("password", "wrong"), ("user_code", code), ("csrf", csrf.as_str())];
        let (status, _, page) = b.post("/device/login", &form).await?;
        assert_eq!(status, 401);
        last = page;
    }
    assert!(last.contains("Too many failed attempts"), "the 7th wrong password must be slowed down");
    Ok(())
}

#[tokio::test]
async fn cmdop_login_signs_in_through_the_browser_page() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let password = add_user(&server, "dave@example.com", "admin")?;
    let cli = Cli::new(server.temp_dir().join("dave"));
    let mut child = cli.command(&["login", "--server", server.url()]).stderr(Stdio::piped()).spawn()?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // Keep draining: the CLI still prints after the code.
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(c) = line.strip_prefix("and enter the code ") {
                let _ = tx.send(c.trim().to_string());
            }
        }
    });
    let code = rx.recv_timeout(Duration::from_secs(20)).context("login printed no code")?;
    decide(&server, "dave@example.com", &password, &code, true).await?;
    let status = wait_child(&mut child, Duration::from_secs(30))?;
    assert!(status.success(), "cmdop login exited with {status}");
    let me = cli.run(&["whoami", "--json"])?.expect_code(0)?.json::<Value>()?;
    assert_eq!(me["email"], "dave@example.com");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(cli.home().join("credentials.json"))?.permissions());
    assert_eq!(mode & 0o777, 0o600);
    cli.run(&["logout"])?.expect_code(0)?;
    let after = cli.run(&["connect", "--list"])?;
    assert_eq!(after.code, 3);
    assert!(after.stderr.contains("not signed in: run `cmdop login`"), "{after}");
    Ok(())
}

/// Signs `email` in with `role` and returns their CLI.
async fn signed_in(server: &TestServer, email: &str, role: &str) -> anyhow::Result<Cli> {
    let password = add_user(server, email, role)?;
    let grant = start_grant(server).await?;
    decide(server, email, &password, grant["user_code"].as_str().unwrap(), true).await?;
    let (_, tokens) = poll(server, grant["device_code"].as_str().unwrap()).await?;
    let cli = Cli::new(server.temp_dir().join(email));
    write_credentials(&cli, server, &tokens)?;
    Ok(cli)
}

#[tokio::test]
async fn roles_decide_what_each_user_may_do() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "role-box")?;
    let viewer = signed_in(&server, "viewer@example.com", "viewer").await?;
    let member = signed_in(&server, "member@example.com", "member").await?;
    let admin = signed_in(&server, "admin@example.com", "admin").await?;
    let m = agent.machine_id();

    assert_eq!(viewer.run(&["connect", "--list", "--json"])?.code, 0, "viewers list machines");
    assert_eq!(viewer.exec(m, &[], &["true"])?.code, 6, "viewers may not exec");
    assert_eq!(viewer.run(&["connect", "share", m])?.code, 6, "viewers may not share");
    assert_eq!(viewer.run(&["fleet", "token", "create"])?.code, 6);
    assert_eq!(viewer.run(&["connect", m])?.code, 6, "viewers may not attach");
    assert_eq!(viewer.run(&["connect", "kill", m, "work"])?.code, 6, "viewers may not kill sessions");

    assert_eq!(member.exec(m, &[], &["true"])?.code, 0, "members exec");
    assert_eq!(member.run(&["fleet", "token", "create"])?.code, 6, "members may not enroll machines");
    let admins_link: Value = admin.run(&["connect", "share", m, "--json"])?.expect_code(0)?.json()?;
    let id = admins_link["id"].as_str().unwrap();
    assert_eq!(member.run(&["connect", "unshare", id])?.code, 6, "members may not revoke others' links");
    let own: Value = member.run(&["connect", "share", m, "--json"])?.expect_code(0)?.json()?;
    assert_eq!(member.run(&["connect", "unshare", own["id"].as_str().unwrap()])?.code, 0, "members revoke their own");
    assert_eq!(admin.run(&["connect", "unshare", id])?.code, 0);
    assert_eq!(admin.run(&["fleet", "token", "create"])?.code, 0, "admins enroll machines");
    Ok(())
}
