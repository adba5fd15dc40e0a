//! A fault-injecting TCP proxy on loopback, placed between two real processes (agent and
//! server, or browser and server): it can cut every live connection mid-stream, black-hole
//! them (stop moving bytes without a reset, as a dead route does), throttle them to a few
//! KiB/s, delay each piece, and point new connections at another address (a restarted
//! server). TCP does not reorder, so neither does this.
//!
//! Threads, not tasks: the tests that use it are synchronous. Every loop is bounded: pumps wake
//! at least every `TICK` and end when their connection ends, the proxy is dropped, or
//! `MAX_CONNECTION_LIFE` passes.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often a pump re-checks the proxy's mode and whether it should stop.
const TICK: Duration = Duration::from_millis(50);
/// No test connection lives longer than this; a pump past it ends its connection.
const MAX_CONNECTION_LIFE: Duration = Duration::from_secs(600);
/// Bytes moved per read when not throttled.
const CHUNK: usize = 16 * 1024;

#[derive(Clone, Copy, Debug, Default)]
struct Mode {
    /// Hold every byte (nothing read, nothing written, no reset).
    black_hole: bool,
    /// At most this many bytes per second per direction of each connection.
    throttle: Option<u64>,
    /// Added before each piece is forwarded.
    delay: Duration,
}

struct Shared {
    mode: Mutex<Mode>,
    changed: Condvar,
    target: Mutex<SocketAddr>,
    /// One clone of each live socket (both ends), so `cut` can shut them down.
    live: Mutex<Vec<TcpStream>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A loopback TCP proxy with switchable faults. Stops (and closes every connection) on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// A proxy on 127.0.0.1 port 0 forwarding to `target`.
    pub fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: Mutex::new(Mode::default()),
            changed: Condvar::new(),
            target: Mutex::new(target),
            live: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        Ok(Self { addr, shared, acceptor: Some(acceptor) })
    }

    /// `http://127.0.0.1:PORT` of the proxy.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Closes every live connection now, both ways (the peers see the stream end).
    pub fn cut(&self) {
        for s in lock(&self.shared.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Stops (or resumes) moving bytes on every connection, new ones included, without
    /// closing anything: the peers' writes pile up in kernel buffers, as on a dead route.
    pub fn black_hole(&self, on: bool) {
        self.set(|m| m.black_hole = on);
    }

    /// Limits each direction of each connection to `bytes_per_sec` (None: no limit).
    pub fn throttle(&self, bytes_per_sec: Option<u64>) {
        self.set(|m| m.throttle = bytes_per_sec);
    }

    /// Delays each forwarded piece by `delay`.
    pub fn delay(&self, delay: Duration) {
        self.set(|m| m.delay = delay);
    }

    /// Sends new connections to `target` (live ones keep theirs).
    pub fn retarget(&self, target: SocketAddr) {
        *lock(&self.shared.target) = target;
    }

    fn set(&self, change: impl FnOnce(&mut Mode)) {
        change(&mut lock(&self.shared.mode));
        self.shared.changed.notify_all();
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.shared.changed.notify_all();
        self.cut();
        // Wake the blocking accept so its thread sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        let target = *lock(&shared.target);
        let Ok(upstream) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let clones = [client.try_clone(), upstream.try_clone(), client.try_clone(), upstream.try_clone()];
        let [Ok(c1), Ok(u1), Ok(c2), Ok(u2)] = clones else { continue };
        lock(&shared.live).extend([c1, u1]);
        spawn_pump(client, u2, shared.clone());
        spawn_pump(upstream, c2, shared.clone());
    }
}

fn spawn_pump(from: TcpStream, to: TcpStream, shared: Arc<Shared>) {
    std::thread::spawn(move || {
        pump(&from, &to, &shared);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

/// Moves bytes `from` -> `to` under the proxy's current mode until either side ends.
fn pump(mut from: &TcpStream, mut to: &TcpStream, shared: &Shared) {
    let _ = from.set_read_timeout(Some(TICK));
    let born = Instant::now();
    let mut buf = vec![0u8; CHUNK];
    while !shared.stop.load(Ordering::SeqCst) && born.elapsed() < MAX_CONNECTION_LIFE {
        let mode = wait_while_black_holed(shared);
        if mode.black_hole {
            continue;
        }
        let want = mode.throttle.map_or(CHUNK, |rate| (rate / 20).clamp(1, CHUNK as u64) as usize);
        let n = match from.read(&mut buf[..want]) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                continue;
            }
            Err(_) => return,
        };
        if !mode.delay.is_zero() {
            std::thread::sleep(mode.delay);
        }
        if to.write_all(&buf[..n]).is_err() {
            return;
        }
        if let Some(rate) = mode.throttle {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / rate.max(1) as f64));
        }
    }
}

/// The current mode, after waiting at most one `TICK` for a black hole to lift.
fn wait_while_black_holed(shared: &Shared) -> Mode {
    let mode = lock(&shared.mode);
    if !mode.black_hole {
        return *mode;
    }
    let (mode, _) = shared.changed.wait_timeout(mode, TICK).unwrap_or_else(|p| p.into_inner());
    *mode
}
