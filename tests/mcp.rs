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
    for name in ["list_machines", "exec", "job_output", "ask_machine", "ask_machines", "share_machine", "list_sessions"]
    {
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
