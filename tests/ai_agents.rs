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

/// The rows of `cmdop fleet audit --json` with this action.
fn audit_rows(cli: &common::Cli, action: &str) -> anyhow::Result<Vec<Value>> {
    let rows: Vec<Value> = cli.run(&["fleet", "audit", "--json"])?.expect_code(0)?.json()?;
    Ok(rows.into_iter().filter(|r| r["action"] == action).collect())
}

#[test]
fn every_exec_ask_and_share_is_in_the_audit_log() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start_with_args(&server, "logged", &["--ask-handler", "cat"])?;
    let cli = server.cli();
    cli.exec("logged", &[], &["sh", "-c", "exit 3"])?.expect_code(3)?;
    cli.run(&["connect", "ask", "logged", "--", "who", "are", "you"])?.expect_code(0)?;
    cli.run(&["connect", "share", "logged"])?.expect_code(0)?;
    let email = owner_email(&server)?;

    let execs = audit_rows(cli, "exec")?;
    assert_eq!(execs.len(), 1, "{execs:?}");
    let exec = &execs[0];
    assert_eq!(exec["actor"], email.as_str());
    assert_eq!(exec["surface"], "cli");
    assert_eq!(exec["machine_id"], agent.machine_id());
    let detail = exec["detail"].as_str().unwrap();
    assert!(detail.starts_with("exit=3 duration_ms="), "{detail}");
    assert!(detail.ends_with("argv=sh -c exit 3"), "{detail}");
    assert!(exec["at"].as_str().unwrap().ends_with('Z'), "{exec}");

    let asks = audit_rows(cli, "ask")?;
    assert_eq!(asks.len(), 1, "{asks:?}");
    assert!(asks[0]["detail"].as_str().unwrap().ends_with("text=who are you"), "{asks:?}");
    let shares = audit_rows(cli, "link.create")?;
    assert_eq!(shares.len(), 1, "{shares:?}");
    assert_eq!(shares[0]["surface"], "cli");

    let other: Vec<Value> =
        cli.run(&["fleet", "audit", "--json", "--machine", "logged", "--since", "1h"])?.expect_code(0)?.json()?;
    assert!(other.iter().all(|r| r["machine_id"] == agent.machine_id()), "{other:?}");
    assert!(other.len() >= 3, "{other:?}");
    Ok(())
}

#[test]
fn fan_out_groups_identical_outputs_and_maps_results_by_machine() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let answers = TestAgent::start_with_args(&server, "answers", &["--ask-handler", HANDLER])?;
    let plain = TestAgent::start(&server, "plain")?;
    let cli = server.cli();

    let grouped = cli.run(&["connect", "exec", "--on", "answers,plain", "--", "echo", "same"])?.expect_code(0)?;
    let text = grouped.stdout_text();
    assert_eq!(text.matches("same\n").count(), 1, "identical output printed once: {grouped}");
    let header = text.lines().find(|l| l.starts_with("== ")).unwrap();
    assert!(header.contains("answers") && header.contains("plain") && header.contains("exit 0"), "{grouped}");

    let all: Value =
        cli.run(&["connect", "exec", "--on", "all", "--json", "--", "echo", "same"])?.expect_code(0)?.json()?;
    let map = all.as_object().unwrap();
    assert_eq!(map.len(), 2, "{all}");
    for id in [answers.machine_id(), plain.machine_id()] {
        assert_eq!(map[id]["error"], Value::Null, "{all}");
        assert_eq!(map[id]["stdout"], "same\n", "{all}");
        assert_eq!(map[id]["machine_id"], id, "{all}");
    }

    let asked = cli.run(&["connect", "ask", "--on", "all", "--json", "--", "hi"])?;
    assert_eq!(asked.code, 1, "one machine has no handler: {asked}");
    let asked: Value = asked.json()?;
    assert_eq!(asked[answers.machine_id()]["error"], Value::Null, "{asked}");
    assert!(asked[answers.machine_id()]["stdout"].as_str().unwrap().ends_with("HI\n"), "{asked}");
    assert_eq!(asked[plain.machine_id()]["error"], "no ask handler", "{asked}");

    let globbed: Value =
        cli.run(&["connect", "exec", "--on", "pla*", "--json", "--", "true"])?.expect_code(0)?.json()?;
    assert_eq!(globbed.as_object().unwrap().keys().collect::<Vec<_>>(), [plain.machine_id()], "{globbed}");
    let failing = cli.run(&["connect", "exec", "--on", "all", "--", "sh", "-c", "exit 5"])?;
    assert_eq!(failing.code, 5, "the highest failing code: {failing}");
    Ok(())
}

#[test]
fn a_detached_job_runs_on_pages_its_output_and_outlives_a_server_restart() -> anyhow::Result<()> {
    let mut server = TestServer::start()?;
    let mut agent = TestAgent::start(&server, "worker")?;
    let cli = server.cli();

    // The job waits for a file the test writes after the server restarted, then prints.
    let dir = tempfile::tempdir()?;
    let go = dir.path().join("go");
    let script = format!("while [ ! -e {go} ]; do sleep 0.1; done; seq 1 30000", go = go.display());
    let started = cli.run(&["connect", "exec", "worker", "--detach", "--json", "--", "sh", "-c", &script])?;
    let started: Value = started.expect_code(0)?.json()?;
    let job = started["job_id"].as_str().unwrap().to_string();
    assert!(job.starts_with(&format!("{}.", agent.machine_id())), "{job}");
    let status: Value = cli.run(&["connect", "job", "status", &job, "--json"])?.expect_code(0)?.json()?;
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["exit_code"], Value::Null, "{status}");

    server.restart()?;
    agent.wait_online(&server)?;
    std::fs::write(&go, "")?;
    let cli = server.cli();
    let done = cli.run(&["connect", "job", "status", &job, "--wait", "60s", "--json"])?.expect_code(0)?;
    let done: Value = done.json()?;
    assert_eq!(done["state"], "exited", "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");
    let expected: String = (1..=30000).map(|n| format!("{n}\n")).collect();
    assert_eq!(done["stdout_bytes"], expected.len(), "{done}");

    // Pages of 50 000 bytes by offset, as a script would read them.
    let (mut text, mut offset) = (String::new(), 0u64);
    for _ in 0..100 {
        let args =
            ["connect", "job", "output", &job, "--offset", &offset.to_string(), "--max-bytes", "50000", "--json"];
        let page: Value = cli.run(&args)?.expect_code(0)?.json()?;
        text.push_str(page["stdout"].as_str().unwrap());
        if page["has_more"] == false {
            break;
        }
        offset = page["next_offset"].as_u64().unwrap();
    }
    assert!(text == expected, "the pages differ from the output ({} of {} bytes)", text.len(), expected.len());
    let plain = cli.run(&["connect", "job", "output", &job, "--offset", "0", "--max-bytes", "10"])?.expect_code(0)?;
    assert_eq!(plain.stdout_text(), "1\n2\n3\n4\n5\n");
    assert!(plain.stderr.contains(&format!("cmdop connect job output {job} --offset 10")), "{plain}");

    let long = cli.run(&["connect", "exec", "worker", "--detach", "--json", "--", "sleep", "600"])?.expect_code(0)?;
    let long: Value = long.json()?;
    let long_job = long["job_id"].as_str().unwrap();
    let cancelled: Value = cli.run(&["connect", "job", "cancel", long_job, "--json"])?.expect_code(0)?.json()?;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");

    let unknown = cli.run(&["connect", "job", "status", &format!("{}.nope", agent.machine_id())])?;
    assert_eq!(unknown.code, 2, "an unknown job is a bad argument: {unknown}");
    assert!(unknown.stderr.contains("no job"), "{unknown}");

    let rows: Vec<Value> = cli.run(&["fleet", "audit", "--json"])?.expect_code(0)?.json()?;
    let has = |action: &str, needle: &str| {
        rows.iter().any(|r| {
            r["surface"] == "cli" && r["action"] == action && r["detail"].as_str().unwrap_or("").contains(needle)
        })
    };
    assert!(has("exec", &format!("job={job} state=running")), "{rows:?}");
    assert!(has("job.status", &format!("job={job} state=exited exit=0")), "{rows:?}");
    assert!(has("job.output", &format!("job={job}")), "{rows:?}");
    assert!(has("job.cancel", &format!("job={long_job} state=cancelled")), "{rows:?}");
    Ok(())
}
