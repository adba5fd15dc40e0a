//! Servers on PostgreSQL (`cmdop server --database postgres://...`): the first pieces of
//! several nodes on one database. Each test gets a fresh database on this binary's throwaway
//! cluster (tests/common/postgres.rs).

mod common;

use anyhow::Context;
use common::{ExecReport, TestAgent, TestServer};
use serde::Deserialize;

/// `GET /healthz` (docs/reference.md); unknown fields refused so the shape stays exact.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Health {
    status: String,
    node: String,
    database: String,
}

fn health(server: &TestServer) -> anyhow::Result<Health> {
    let (status, body) = server.http_get("/healthz")?;
    anyhow::ensure!(status == 200, "/healthz answered {status}: {body}");
    Ok(serde_json::from_str(&body)?)
}

#[test]
fn healthz_names_the_node_and_sqlite_by_default() -> anyhow::Result<()> {
    let server = TestServer::start()?;
    let health = health(&server)?;
    assert_eq!((health.status.as_str(), health.database.as_str()), ("ok", "sqlite"));
    assert!(health.node.parse::<uuid::Uuid>().is_ok(), "node id: {}", health.node);
    Ok(())
}

#[test]
fn server_on_postgres_enrolls_an_agent_and_runs_exec() -> anyhow::Result<()> {
    let url = common::postgres::fresh_database()?;
    let server = TestServer::start_on_database(&url)?;
    let health = health(&server)?;
    assert_eq!((health.status.as_str(), health.database.as_str()), ("ok", "postgres"));

    let agent = TestAgent::start(&server, "pg-machine")?;
    let run = server.cli().exec(agent.machine_id(), &["--json"], &["sh", "-c", "echo hello; exit 3"])?;
    let report: ExecReport = run.expect_code(3)?.json()?;
    assert_eq!((report.stdout.as_str(), report.exit_code), ("hello\n", 3));
    let listed = server.cli().machine(agent.machine_id())?.context("the machine is not listed")?;
    assert!(listed.online, "{listed:?}");
    assert!(!server.data_dir().join("cmdop.db").exists(), "no SQLite database beside PostgreSQL");
    Ok(())
}

#[test]
fn a_server_restarted_on_postgres_keeps_its_machines_and_owner() -> anyhow::Result<()> {
    let url = common::postgres::fresh_database()?;
    let mut server = TestServer::start_on_database(&url)?;
    let agent = TestAgent::start(&server, "survivor")?;
    let before = health(&server)?.node;
    server.restart()?;
    assert_ne!(health(&server)?.node, before, "a new process is a new node");
    // The row may still say online from the killed process (other nodes' machines are not
    // reset at start on a shared database): what counts is that the agent answers again.
    common::wait_until(std::time::Duration::from_secs(30), "the agent to come back and run a command", || {
        Ok(server.cli().exec(agent.machine_id(), &[], &["true"])?.code == 0)
    })?;
    Ok(())
}

#[test]
fn a_machine_on_one_node_is_listed_through_another_and_goes_offline_when_its_node_dies() -> anyhow::Result<()> {
    let url = common::postgres::fresh_database()?;
    let mut holder = TestServer::start_on_database(&url)?;
    let other = TestServer::start_on_database(&url)?;
    assert_ne!(health(&holder)?.node, health(&other)?.node);
    let agent = TestAgent::start(&holder, "held")?;
    assert!(other.cli().is_online(agent.machine_id())?, "listed online through the node that does not hold it");

    let started = std::time::Instant::now();
    holder.kill();
    common::wait_until(std::time::Duration::from_secs(20), "the machine to go offline via the live node", || {
        Ok(!other.cli().is_online(agent.machine_id())?)
    })?;
    eprintln!("offline through the live node {:?} after the holder died", started.elapsed());
    Ok(())
}
