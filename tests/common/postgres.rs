//! A throwaway PostgreSQL cluster for tests: one per test binary, started on first use
//! (`initdb -A trust` into a temporary folder, about a second), and a fresh database per test.
//!
//! Shared by the library's store tests (`src/store/tests.rs` includes this file) and the
//! integration tests (`tests/common`), so it uses std and anyhow only.
//!
//! Nothing is left behind, however the test binary ends: a watchdog shell starts the cluster
//! and then reads its stdin, a pipe whose only writer is this process. When the process exits
//! (normally, by panic or by SIGKILL) the pipe reaches end of file and the watchdog stops the
//! cluster and removes its folder.
//!
//! As root (PostgreSQL refuses to run as root), the cluster runs as the `postgres` user through
//! `runuser`. The binaries come from `PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{Context, bail};

/// The watchdog: start, say "ready", wait for end of file on stdin, stop, clean up. Ignores
/// SIGINT so a Ctrl-C on the test run still ends in the stop below (the pipe closes then).
const WATCHDOG: &str = r#"
trap '' INT
set -e
dir="$1"; port="$2"; bin="$3"; as_pg="$4"
if [ -n "$as_pg" ]; then chown "$as_pg" "$dir"; run() { runuser -u "$as_pg" -- "$@"; }; else run() { "$@"; }; fi
run "$bin/initdb" -D "$dir/data" -A trust -U postgres >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
run "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
  -o "-k $dir -c listen_addresses=127.0.0.1 -p $port -c fsync=off -c max_connections=400" start >/dev/null \
  || { cat "$dir/server.log" >&2; exit 1; }
echo ready
cat >/dev/null || true
run "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
rm -rf "$dir"
"#;

/// A running cluster; its watchdog's stdin is held until the process exits.
struct Cluster {
    port: u16,
    bin: PathBuf,
    _watchdog: Mutex<ChildStdin>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

/// A fresh, empty database on this test binary's cluster: its `postgres://` URL.
pub fn fresh_database() -> anyhow::Result<String> {
    let cluster = CLUSTER.get_or_init(|| start_cluster().map_err(|e| format!("{e:#}"))).as_ref();
    let cluster = cluster.map_err(|e| anyhow::anyhow!("cannot start the test PostgreSQL cluster: {e}"))?;
    let name = format!("t_{}_{}", std::process::id(), NEXT_DB.fetch_add(1, Ordering::Relaxed));
    let out = Command::new(cluster.bin.join("createdb"))
        .args(["-h", "127.0.0.1", "-p", &cluster.port.to_string(), "-U", "postgres", &name])
        .stdin(Stdio::null())
        .output()
        .context("cannot run createdb")?;
    if !out.status.success() {
        bail!("createdb {name} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(format!("postgres://postgres@127.0.0.1:{}/{name}", cluster.port))
}

/// Runs `sql` with `psql -Atc` on the database at `url` (one `fresh_database` made): its
/// answer, unaligned. For tests that look at what the server wrote.
#[allow(dead_code)] // the store tests, which include this file too, have no use for it
pub fn psql(url: &str, sql: &str) -> anyhow::Result<String> {
    let cluster = CLUSTER.get().context("no test cluster: make a database with fresh_database first")?;
    let cluster = cluster.as_ref().map_err(|e| anyhow::anyhow!("the test cluster did not start: {e}"))?;
    let out = Command::new(cluster.bin.join("psql"))
        .args([url, "-Atc", sql])
        .stdin(Stdio::null())
        .output()
        .context("cannot run psql")?;
    if !out.status.success() {
        bail!("psql failed on {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Starts the cluster, trying a few ports in case another process took the one picked.
fn start_cluster() -> anyhow::Result<Cluster> {
    let bin = server_binaries()?;
    let mut last = None;
    for _ in 0..3 {
        match start_on_free_port(&bin) {
            Ok(cluster) => return Ok(cluster),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
}

fn start_on_free_port(bin: &std::path::Path) -> anyhow::Result<Cluster> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let dir = std::env::temp_dir().join(format!("cmdop-pg-{}-{port}", std::process::id()));
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let as_pg = if is_root() { "postgres" } else { "" };
    let mut child = Command::new("sh")
        .args(["-c", WATCHDOG, "watchdog"])
        .arg(&dir)
        .arg(port.to_string())
        .arg(bin)
        .arg(as_pg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the PostgreSQL watchdog shell")?;
    let stdin = child.stdin.take().context("no stdin pipe")?;
    let stdout = child.stdout.take().context("no stdout pipe")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "ready" {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err);
        }
        let _ = child.wait();
        let _ = std::fs::remove_dir_all(&dir);
        bail!("PostgreSQL did not start on port {port}: {err}");
    }
    Ok(Cluster { port, bin: bin.to_path_buf(), _watchdog: Mutex::new(stdin) })
}

/// `PG_BIN`, else the newest `/usr/lib/postgresql/<version>/bin` holding `initdb`.
fn server_binaries() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).context(
        "no PostgreSQL server binaries in /usr/lib/postgresql/*/bin: install them (apt-get install -y postgresql) or set PG_BIN",
    )
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}
