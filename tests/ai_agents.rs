//! Machines for AI agents: ask handlers, fan-out over several machines and the audit log of
//! every run, through the real `cmdop` binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{ExecReport, TestAgent, TestServer};
use serde_json::Value;

/// An ask handler that shows what it was given: who asks, the ask id, then the text upper-cased.
const HANDLER: &str = r#"echo "from=$CMDOP_ASK_FROM id=$CMDOP_ASK_ID"; tr a-z A-Z"#;

fn owner_email(server: &TestServer) -> anyhow::Result<String> {
    let me: Value = server.cli().run(&["whoami", "--json"])?.expect_code(0)?.json()?;
    Ok(me["email"].as_str().unwrap().to_string())
}

#[test]
fn ask_runs_the_handler_with_the_text_on_stdin_and_the_asker_in_its_environment() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start_with_args(&server, "answers", &["--ask-handler", HANDLER])?;
    let email = owner_email(&server)?;

    let run = server.cli().run(&["connect", "ask", "answers", "--", "what", "is", "up"])?.expect_code(0)?;
    let out = run.stdout_text();
    assert!(out.contains(&format!("from={email} id=")), "{run}");
    assert!(out.contains("WHAT IS UP"), "{run}");
    let id = out.split("id=").nth(1).unwrap().lines().next().unwrap().trim();
    assert_eq!(id.len(), 36, "the ask id is a UUID: {run}");

    let json = server.cli().run(&["connect", "ask", agent.machine_id(), "--json", "--", "hello"])?.expect_code(0)?;
    let report: ExecReport = json.json()?;
    assert_eq!(report.machine_id, agent.machine_id());
    assert_eq!(report.command, vec!["hello"]);
    assert_eq!(report.exit_code, 0);
    assert!(report.stdout.ends_with("HELLO\n"), "{json}");
    Ok(())
}

#[test]
fn ask_to_a_machine_without_a_handler_fails_and_points_to_exec() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let _agent = TestAgent::start(&server, "plain")?;
    let run = server.cli().run(&["connect", "ask", "plain", "--", "hello"])?;
    assert_eq!(run.code, 1, "{run}");
    assert!(run.stderr.contains("has no ask handler"), "{run}");
    assert!(run.stderr.contains("cmdop connect exec"), "{run}");
    Ok(())
}
