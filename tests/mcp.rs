//! `cmdop mcp` driven by a real MCP client over stdio: the tools an AI agent sees and what
//! they do against a real server and two agents (one with an ask handler, one without).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{TestAgent, TestServer};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::transport::TokioChildProcess;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

async fn mcp_client(server: &TestServer, extra: &[&str]) -> anyhow::Result<RunningService<RoleClient, ()>> {
    let mut cmd = server.cli().command(&["mcp"]);
    cmd.args(extra);
    let transport = TokioChildProcess::new(tokio::process::Command::from(cmd))?;
    Ok(().serve(transport).await?)
}

async fn call(client: &RunningService<RoleClient, ()>, tool: &str, args: Value) -> anyhow::Result<CallToolResult> {
    let params = CallToolRequestParams::new(tool.to_string()).with_arguments(args.as_object().unwrap().clone());
    Ok(client.call_tool(params).await?)
}

fn structured(result: &CallToolResult) -> &Value {
    assert_ne!(result.is_error, Some(true), "tool failed: {result:?}");
    result.structured_content.as_ref().expect("structured content")
}

fn error_text(result: &CallToolResult) -> String {
    assert_eq!(result.is_error, Some(true), "expected a tool error: {result:?}");
    serde_json::to_string(&result.content).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_mcp_client_lists_runs_asks_and_pages_through_the_fleet() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let answers = TestAgent::start_with_args(&server, "answers", &["--ask-handler", "tr a-z A-Z"])?;
    let plain = TestAgent::start(&server, "plain")?;
    let client = mcp_client(&server, &[]).await?;

    let tools: Vec<String> = client.list_all_tools().await?.into_iter().map(|t| t.name.to_string()).collect();
    let names = [
        "list_machines",
        "exec",
        "ask_machine",
        "ask_machines",
        "job_status",
        "job_output",
        "job_cancel",
        "share_machine",
        "list_sessions",
    ];
    for name in names {
        assert!(tools.iter().any(|t| t == name), "{name} missing from {tools:?}");
    }

    let listed = call(&client, "list_machines", json!({})).await?;
    assert_eq!(structured(&listed)["machines"].as_array().unwrap().len(), 2);

    let ran = call(&client, "exec", json!({"machine": "plain", "command": "echo hi; exit 3"})).await?;
    let ran = structured(&ran);
    assert_eq!(ran["exit_code"], 3);
    assert_eq!(ran["stdout"], "hi\n");
    assert_eq!(ran["has_more"], false);
    assert_eq!(ran["machine_id"], plain.machine_id());

    let asked = call(&client, "ask_machines", json!({"machines": "all", "prompt": "hello"})).await?;
    let results = structured(&asked)["results"].as_array().unwrap().clone();
    assert_eq!(results.len(), 2, "{results:?}");
    let of = |id: &str| results.iter().find(|r| r["machine_id"] == id).unwrap().clone();
    assert_eq!(of(answers.machine_id())["answer"], "HELLO\n");
    assert_eq!(of(answers.machine_id())["error"], Value::Null);
    assert_eq!(of(plain.machine_id())["error"], "no ask handler");

    let big =
        call(&client, "exec", json!({"machine": "plain", "argv": ["sh", "-c", "printf %3000s x"], "max_bytes": 1000}))
            .await?;
    let big = structured(&big);
    assert_eq!(big["has_more"], true, "{big}");
    assert_eq!(big["stdout"].as_str().unwrap().len(), 1000);
    let job = big["job_id"].as_str().unwrap();
    let rest = call(&client, "job_output", json!({"job_id": job, "offset": 1000, "max_bytes": 5000})).await?;
    let rest = structured(&rest);
    assert_eq!(rest["stdout"].as_str().unwrap().len(), 2000);
    assert_eq!(rest["has_more"], false);

    let unknown = call(&client, "exec", json!({"machine": "nowhere", "command": "true"})).await?;
    let text = error_text(&unknown);
    assert!(text.contains("no machine matches") && text.contains("list_machines"), "{text}");
    let no_handler = call(&client, "ask_machine", json!({"machine": "plain", "prompt": "hi"})).await?;
    assert!(error_text(&no_handler).contains("no ask handler"));
    client.cancel().await?;

    let rows: Vec<Value> = server.cli().run(&["fleet", "audit", "--json"])?.expect_code(0)?.json()?;
    let mcp_execs = rows.iter().filter(|r| r["surface"] == "mcp" && r["action"] == "exec").count();
    assert_eq!(mcp_execs, 2, "{rows:?}");
    assert!(rows.iter().any(|r| r["surface"] == "mcp" && r["action"] == "ask"), "{rows:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_scoped_mcp_server_refuses_other_machines() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let _one = TestAgent::start(&server, "one")?;
    let _two = TestAgent::start(&server, "two")?;
    let client = mcp_client(&server, &["--machine", "one"]).await?;
    let listed = call(&client, "list_machines", json!({})).await?;
    assert_eq!(structured(&listed)["machines"].as_array().unwrap().len(), 1);
    let other = call(&client, "exec", json!({"machine": "two", "command": "true"})).await?;
    assert!(error_text(&other).contains("limited to machine"));
    client.cancel().await?;
    Ok(())
}

/// Pages through a job's stdout with `job_output` until `has_more` is false; returns the text
/// and how many pages it took.
async fn read_all(client: &RunningService<RoleClient, ()>, job: &str, max_bytes: u64) -> anyhow::Result<(String, u32)> {
    let (mut text, mut offset) = (String::new(), 0u64);
    for pages in 1..=1000 {
        let page = call(client, "job_output", json!({"job_id": job, "offset": offset, "max_bytes": max_bytes})).await?;
        let page = structured(&page);
        assert_eq!(page["dropped"], 0, "{page}");
        text.push_str(page["stdout"].as_str().unwrap());
        if page["has_more"] == false {
            return Ok((text, pages));
        }
        offset = page["next_offset"].as_u64().unwrap();
    }
    anyhow::bail!("job_output never said has_more=false")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_that_outlives_the_tool_timeout_becomes_a_job_that_completes_with_all_its_output() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let agent = TestAgent::start(&server, "slow")?;
    let client = mcp_client(&server, &[]).await?;

    // The tool waits 1 s; the command prints, sleeps 3 s, then prints about 109 KB.
    let command = "echo started; sleep 3; seq 1 20000";
    let ran = call(&client, "exec", json!({"machine": "slow", "command": command, "timeout_s": 1})).await?;
    let ran = structured(&ran).clone();
    assert_eq!(ran["running"], true, "{ran}");
    assert_eq!(ran["exit_code"], Value::Null, "{ran}");
    assert_eq!(ran["machine_id"], agent.machine_id());
    let job = ran["job_id"].as_str().expect("a job id while it runs").to_string();
    assert!(job.starts_with(&format!("{}.", agent.machine_id())), "{job}");

    let done = call(&client, "job_status", json!({"job_id": job, "wait_s": 60})).await?;
    let done = structured(&done);
    assert_eq!(done["state"], "exited", "{done}");
    assert_eq!(done["exit_code"], 0, "{done}");

    // Output over the cap pages with has_more, and the pages add up to all of it.
    let expected: String =
        std::iter::once("started\n".to_string()).chain((1..=20000).map(|n| format!("{n}\n"))).collect();
    let (text, pages) = read_all(&client, &job, 65536).await?;
    assert_eq!(text.len(), expected.len());
    assert!(text == expected, "the pages differ from the command's output");
    assert!(pages >= 2, "{pages} page(s) for {} bytes", text.len());

    // A job keeps running until it is cancelled.
    let long = call(&client, "exec", json!({"machine": "slow", "command": "sleep 600", "timeout_s": 1})).await?;
    let long_job = structured(&long)["job_id"].as_str().unwrap().to_string();
    let cancelled = call(&client, "job_cancel", json!({"job_id": long_job})).await?;
    let cancelled = structured(&cancelled);
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["exit_code"], 137, "killed by SIGKILL: {cancelled}");

    let unknown = call(&client, "job_status", json!({"job_id": format!("{}.nope", agent.machine_id())})).await?;
    assert!(error_text(&unknown).contains("no job"));
    client.cancel().await?;

    let rows: Vec<Value> = server.cli().run(&["fleet", "audit", "--json"])?.expect_code(0)?.json()?;
    let has = |action: &str, needle: &str| {
        rows.iter().any(|r| {
            r["surface"] == "mcp" && r["action"] == action && r["detail"].as_str().unwrap_or("").contains(needle)
        })
    };
    assert!(has("exec", &format!("job={job} state=running")), "{rows:?}");
    assert!(has("job.status", &format!("job={job} state=exited exit=0")), "{rows:?}");
    assert!(has("job.output", &format!("job={job}")), "{rows:?}");
    assert!(has("job.cancel", &format!("job={long_job} state=cancelled")), "{rows:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_lists_machines_but_cannot_run_commands_or_start_jobs() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let _agent = TestAgent::start(&server, "box")?;
    let data_dir = server.data_dir();
    let demote =
        ["server", "user", "add", "owner@localhost", "--role", "viewer", "--data-dir", data_dir.to_str().unwrap()];
    server.cli().run(&demote)?.expect_code(0)?;

    let client = mcp_client(&server, &[]).await?;
    let listed = call(&client, "list_machines", json!({})).await?;
    assert_eq!(structured(&listed)["machines"].as_array().unwrap().len(), 1);
    let refused = call(&client, "exec", json!({"machine": "box", "command": "true"})).await?;
    let text = error_text(&refused);
    assert!(text.contains("permission denied"), "{text}");
    client.cancel().await?;

    let cli = server.cli();
    let run = cli.run(&["connect", "exec", "box", "--", "true"])?;
    assert_eq!(run.code, 6, "{run}");
    let run = cli.run(&["connect", "exec", "box", "--detach", "--", "true"])?;
    assert_eq!(run.code, 6, "{run}");

    let rows: Vec<Value> = cli.run(&["fleet", "audit", "--json"])?.expect_code(0)?.json()?;
    let refusals = |surface: &str| {
        rows.iter()
            .filter(|r| {
                r["surface"] == surface
                    && r["action"] == "exec"
                    && r["detail"].as_str().unwrap_or("").contains("refused=role:viewer")
            })
            .count()
    };
    assert_eq!(refusals("mcp"), 1, "{rows:?}");
    assert_eq!(refusals("cli"), 2, "{rows:?}");
    Ok(())
}
