//! Several server nodes on one PostgreSQL (`cmdop server --database postgres://...
//! --cluster-key-file F`): any link, exec or API call through any node, revocation reaching
//! every node, agents failing over, routes racing. Each test gets a fresh database on this
//! binary's throwaway cluster (tests/common/postgres.rs) and real node processes on 127.0.0.1.

mod common;
mod share_support;

use std::time::{Duration, Instant};

use anyhow::Context;
use common::{ExecReport, TestAgent, TestServer, wait_until};
use serde::Deserialize;
use share_support::Link;
use share_support::ws::WsClient;

/// Three nodes on one fresh database.
fn three_nodes() -> anyhow::Result<[TestServer; 3]> {
    let url = common::postgres::fresh_database()?;
    Ok([
        TestServer::start_on_database(&url)?,
        TestServer::start_on_database(&url)?,
        TestServer::start_on_database(&url)?,
    ])
}

/// `cmdop connect share MACHINE --ttl 10m --json` through `node`.
fn share_on(node: &TestServer, machine: &str, flags: &[&str]) -> anyhow::Result<Link> {
    let mut args = vec!["connect", "share", machine, "--ttl", "10m", "--json"];
    args.extend_from_slice(flags);
    node.cli().run(&args)?.expect_code(0)?.json()
}

/// The same link, opened through another node.
fn via(link: &Link, minted_on: &TestServer, node: &TestServer) -> String {
    link.url.replacen(minted_on.url(), node.url(), 1)
}

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

/// `Peer.Link` is for nodes only: a stock gRPC caller without the cluster key's credential,
/// or with a forged one, is refused UNAUTHENTICATED before any stream starts.
#[test]
fn peer_link_refuses_callers_without_a_node_credential() -> anyhow::Result<()> {
    use cmdop::proto::{self, peer_client::PeerClient};

    let url = common::postgres::fresh_database()?;
    let server = TestServer::start_on_database(&url)?;
    tokio::runtime::Runtime::new()?.block_on(async {
        let mut client = PeerClient::connect(server.url().to_string()).await?;
        for forged in [None, Some(("intruder", "1764547200.00ff"))] {
            let mut req = tonic::Request::new(tokio_stream::iter(Vec::<proto::RelayFrame>::new()));
            if let Some((node, auth)) = forged {
                req.metadata_mut().insert("x-cmdop-node", node.parse()?);
                req.metadata_mut().insert("x-cmdop-node-auth", auth.parse()?);
            }
            let call = tokio::time::timeout(Duration::from_secs(10), client.link(req)).await?;
            let Err(status) = call else { anyhow::bail!("a caller without the node credential must be refused") };
            assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
            assert!(status.message().contains("node credential"), "{status:?}");
        }
        anyhow::Ok(())
    })
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

#[test]
fn a_link_minted_on_one_node_works_through_another_and_revoking_on_a_third_closes_it() -> anyhow::Result<()> {
    let [n1, n2, n3] = three_nodes()?;
    let agent = TestAgent::start(&n1, "held-by-1")?;
    let link = share_on(&n2, agent.machine_id(), &[])?;
    let (ws, _session, _offset) = WsClient::open_ready(&via(&link, &n2, &n3))?;
    ws.type_line("echo hop-$((6*7))")?;
    ws.wait_line_since(0, Duration::from_secs(10), "the echo through node 3", |l| l == "hop-42")?;
    assert!(n3.metric("cmdop_forwarded_sessions_total")? >= 1, "node 3 forwarded the session");
    assert_eq!(n1.metric("cmdop_routes_held")?, 1, "node 1 holds the agent");

    let revoking = Instant::now();
    n1.cli().run(&["connect", "unshare", &link.id])?.expect_code(0)?;
    let closed = ws.wait_closed(Duration::from_secs(5))?;
    let took = closed.at.duration_since(revoking);
    eprintln!("revoke on node 1 -> close on node 3: {took:?}");
    assert_eq!(closed.code, 4002, "{closed:?}");
    assert!(took <= Duration::from_secs(1), "closed {took:?} after the revocation");
    let refused = WsClient::open(&via(&link, &n2, &n2), None);
    assert!(
        refused.is_err() || refused.is_ok_and(|c| c.wait_closed(Duration::from_secs(5)).is_ok_and(|c| c.code == 4002))
    );
    Ok(())
}

#[test]
fn exec_through_a_node_without_the_agent_streams_64_mib_byte_exact() -> anyhow::Result<()> {
    let [n1, _n2, n3] = three_nodes()?;
    let agent = TestAgent::start(&n1, "bulk-on-1")?;
    let took = common::exec_copies_byte_exact(&n3, agent.machine_id(), 64 << 20, 0x0005_eed0_0f0d)?;
    eprintln!("64 MiB through node 3 from node 1's agent in {took:?}");
    Ok(())
}

#[test]
fn when_a_node_dies_its_agent_is_back_through_another_within_5s_with_its_sessions() -> anyhow::Result<()> {
    let [mut n1, n2, n3] = three_nodes()?;
    let agent = TestAgent::start_via_all(&n1, "mobile", &[n1.url(), n2.url(), n3.url()])?;
    let link = share_on(&n3, agent.machine_id(), &["--session", "keep"])?;
    let (ws, key, start) = WsClient::open_ready(&link.url)?;
    ws.type_line("echo before-$((20+1))")?;
    ws.wait_line_since(0, Duration::from_secs(10), "the echo before the death", |l| l == "before-21")?;
    // Let the prompt after the echo arrive too: the page knows how far it read.
    common::wait_until(Duration::from_secs(5), "the output to settle", || {
        let seen = ws.output_len();
        std::thread::sleep(Duration::from_millis(300));
        Ok(ws.output_len() == seen)
    })?;
    let offset = start + ws.output_len() as u64;
    drop(ws);

    let killed = Instant::now();
    n1.kill();
    wait_until(Duration::from_secs(10), "the machine online through another node", || {
        Ok(n3.cli().exec(agent.machine_id(), &[], &["true"])?.code == 0)
    })?;
    let back = killed.elapsed();
    eprintln!("node 1 killed -> agent running commands through another node after {back:?}");
    assert!(back <= Duration::from_secs(5), "back after {back:?}");

    // The page resumes through another node from the offset it had read: the persistent
    // session lived in the agent, so nothing is lost and nothing comes twice.
    let resume = share_support::ws::socket_url(&via(&link, &n3, &n2), &format!("session={key}&offset={offset}"));
    let ws = WsClient::open_url(&resume, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_key, from) = ws.wait_ready()?;
    assert_eq!(from, offset, "resumed where the page stopped reading");
    ws.type_line("echo after-$((20+2))")?;
    ws.wait_line_since(0, Duration::from_secs(10), "an echo after the move", |l| l == "after-22")?;
    let lines = share_support::terminal_lines(&ws.output_text());
    assert!(!lines.iter().any(|l| l == "before-21"), "bytes before the offset came again: {lines:?}");
    Ok(())
}

/// `attached` of the machine's shell session `name`, from `cmdop connect sessions --json`.
fn attached(node: &TestServer, machine: &str, name: &str) -> anyhow::Result<u32> {
    let rows: Vec<serde_json::Value> =
        node.cli().run(&["connect", "sessions", machine, "--json"])?.expect_code(0)?.json()?;
    let row = rows.iter().find(|r| r["name"] == name).with_context(|| format!("no session {name:?}: {rows:?}"))?;
    row["attached"].as_u64().map(|n| n as u32).context("no attached count")
}

#[test]
fn when_the_forwarding_node_dies_the_holder_releases_its_attachments() -> anyhow::Result<()> {
    let [n1, mut n2, n3] = three_nodes()?;
    let agent = TestAgent::start(&n1, "held-on-1")?;
    let link = share_on(&n1, agent.machine_id(), &["--session", "kept"])?;
    // The browser reaches node 2, which forwards the session to node 1, holding the agent.
    let (ws, key, start) = WsClient::open_ready(&via(&link, &n1, &n2))?;
    ws.type_line("echo through-$((40+2))")?;
    ws.wait_line_since(0, Duration::from_secs(10), "the echo through node 2", |l| l == "through-42")?;
    assert_eq!(attached(&n3, agent.machine_id(), "kept")?, 1);

    // Node 2 dies with the page open: node 1 sees its peer stream end and detaches what it
    // forwarded; the shell lives on in the agent.
    n2.kill();
    wait_until(Duration::from_secs(10), "node 1 to release node 2's attachment", || {
        Ok(attached(&n3, agent.machine_id(), "kept")? == 0)
    })?;

    // The page resumes through node 3 where it had read.
    let offset = start + ws.output_len() as u64;
    let resume = share_support::ws::socket_url(&via(&link, &n1, &n3), &format!("session={key}&offset={offset}"));
    let ws = WsClient::open_url(&resume, None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_key, from) = ws.wait_ready()?;
    assert_eq!(from, offset, "resumed where the page stopped reading");
    ws.type_line("echo still-$((40+3))")?;
    ws.wait_line_since(0, Duration::from_secs(10), "an echo through node 3", |l| l == "still-43")?;
    Ok(())
}

#[test]
fn the_newest_stream_of_a_machine_wins_the_route_and_no_session_reaches_the_stale_one() -> anyhow::Result<()> {
    let [n1, n2, n3] = three_nodes()?;
    let first = TestAgent::start(&n1, "raced")?;
    let machine = first.machine_id().to_string();
    let mark = |node: &TestServer| -> anyhow::Result<String> {
        let run = node.cli().exec(&machine, &["--json"], &["sh", "-c", "echo ${CMDOP_TEST_MARK:-first}"])?;
        let report: ExecReport = run.expect_code(0)?.json()?;
        Ok(report.stdout.trim().to_string())
    };
    assert_eq!(mark(&n3)?, "first");

    // The same machine's credential dials node 2 while node 1 still holds the first stream
    // (as when an agent reconnects elsewhere before its old node noticed it left).
    let state = tempfile::tempdir()?;
    std::fs::copy(first.state_file(), state.path().join("agent.json"))?;
    let log = state.path().join("second.log");
    let mut second = n2.agent_command(state.path(), &log)?.env("CMDOP_TEST_MARK", "second").spawn()?;
    let moved = wait_until(Duration::from_secs(15), "the route to move to the second stream", || {
        Ok(n3.cli().exec(&machine, &[], &["sh", "-c", "test \"$CMDOP_TEST_MARK\" = second"])?.code == 0)
    });
    if moved.is_err() {
        eprintln!("{}", std::fs::read_to_string(&log).unwrap_or_default());
    }
    moved?;
    for node in [&n1, &n2, &n3] {
        assert_eq!(mark(node)?, "second", "through {}", node.url());
    }
    assert_eq!(n1.metric("cmdop_routes_held")?, 1, "node 1 still holds the stale stream");

    // The newest stream ends: its node releases its own epoch only, and nothing falls back
    // to the stale stream on node 1.
    second.kill()?;
    second.wait()?;
    wait_until(Duration::from_secs(15), "the machine offline", || Ok(!n3.cli().is_online(&machine)?))?;
    let run = n1.cli().exec(&machine, &[], &["true"])?;
    assert_ne!(run.code, 0, "routed to the stale stream: {run}");
    Ok(())
}

/// Every row the nodes keep except their leases, as `table=count:xmins` per table: any insert,
/// update or delete changes it (a row's `xmin` is the transaction that wrote it), with no
/// wait for PostgreSQL's statistics, which arrive up to 10 s late.
const ROWS_BUT_LEASES: &str = "SELECT string_agg(c.relname || '=' || (xpath('/row/s/text()', query_to_xml(\
     format('SELECT count(*) || '':'' || coalesce(string_agg(xmin::text, '','' ORDER BY xmin::text), '''') AS s \
     FROM %I', c.relname), false, true, '')))[1]::text, ' ' ORDER BY c.relname) \
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE n.nspname = 'public' AND c.relkind = 'r' AND c.relname <> 'nodes'";

#[test]
fn heartbeats_of_agents_on_three_nodes_write_no_row() -> anyhow::Result<()> {
    let url = common::postgres::fresh_database()?;
    let nodes = [
        TestServer::start_on_database(&url)?,
        TestServer::start_on_database(&url)?,
        TestServer::start_on_database(&url)?,
    ];
    let _agents = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| TestAgent::start(node, &format!("beating-{i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;

    let rows = common::postgres::psql(&url, ROWS_BUT_LEASES)?;
    assert!(rows.contains("routes=3:"), "every agent holds a route: {rows}");
    let beats = |node: &TestServer| node.metric("cmdop_heartbeats_total");
    let before = nodes.iter().map(beats).collect::<anyhow::Result<Vec<_>>>()?;
    // Agents beat every second in tests (`--heartbeat-interval 1s`).
    wait_until(Duration::from_secs(30), "three more heartbeats on every node", || {
        Ok(nodes
            .iter()
            .zip(&before)
            .map(|(n, b)| Ok(beats(n)? >= b + 3))
            .collect::<anyhow::Result<Vec<_>>>()?
            .iter()
            .all(|ok| *ok))
    })?;
    assert_eq!(common::postgres::psql(&url, ROWS_BUT_LEASES)?, rows, "a heartbeat wrote to the database");
    Ok(())
}
