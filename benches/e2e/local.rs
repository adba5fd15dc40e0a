//! Same-run baselines: the same programs in a local PTY (portable-pty; the agent opens its PTYs
//! the same way through rustix), read and written directly by this process on one thread: no
//! network, no relay, no agent.
//!
//! Reads on a PTY block, so every run has a watchdog thread that kills the program when its
//! time is up; the PTY then hangs up and the blocked read returns.
//!
//! Also here: the *kernel floor* of the link's topology (`Echo::via_plain_tcp`,
//! `throughput_via_plain_tcp`), the same programs behind two loopback TCP hops each way that
//! only copy bytes.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

use crate::typing::{Wire, echo_script, read_until, time_keys};

/// How much one read of a local PTY or of the floor's socket takes at most.
const READ_BYTES: usize = 64 * 1024;

struct Local {
    reader: Box<dyn Read + Send>,
    writer: Box<dyn Write + Send>,
    // Kept open until the run ends (dropping the master hangs the PTY up).
    _master: Box<dyn portable_pty::MasterPty + Send>,
    child: Box<dyn portable_pty::Child + Send + Sync>,
    done: mpsc::Sender<()>,
    watchdog: Option<std::thread::JoinHandle<bool>>,
}

impl Local {
    /// `sh -c script` in a new 80x24 PTY, killed after `within`.
    fn spawn(script: &str, within: Duration) -> anyhow::Result<Self> {
        let pair = native_pty_system().openpty(PtySize { rows: 24, cols: 80, pixel_width: 0, pixel_height: 0 })?;
        let mut cmd = CommandBuilder::new("sh");
        cmd.args(["-c", script]);
        let child = pair.slave.spawn_command(cmd)?;
        drop(pair.slave);
        let reader = pair.master.try_clone_reader()?;
        let writer = pair.master.take_writer()?;
        let pid = child.process_id().context("no pid")?;
        let (done, stop) = mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || match stop.recv_timeout(within) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ =
                        nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
                true
            }
            _ => false,
        });
        Ok(Self { reader, writer, _master: pair.master, child, done, watchdog: Some(watchdog) })
    }

    /// The PTY as a terminal to type into and read, with `buf` to read into.
    fn wire<'a>(&'a mut self, buf: &'a mut [u8]) -> Wire<'a> {
        Wire { reader: &mut self.reader, writer: &mut self.writer, buf }
    }

    /// Reads to the end (EOF, or EIO once the program is gone); returns the bytes read.
    fn read_to_end(&mut self) -> u64 {
        let mut buf = vec![0u8; READ_BYTES];
        let mut total = 0u64;
        for _ in 0..100_000_000u64 {
            match self.reader.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n as u64,
            }
        }
        total
    }

    /// Stops the watchdog and reaps the program; false if the watchdog had to kill it.
    fn finish(mut self) -> bool {
        let _ = self.done.send(());
        let killed = self.watchdog.take().map(|w| w.join().unwrap_or(true)).unwrap_or(false);
        let _ = self.child.kill();
        let _ = self.child.wait();
        !killed
    }
}

/// The echo program (`total` keys) in a local PTY, typed into in blocks (`keys`) so that its
/// keys can be interleaved with the link's: the same-run baseline, or (`via_plain_tcp`) the
/// kernel floor of the link's topology.
pub struct Echo {
    pty: Local,
    /// The client's end of the plain-TCP relay, if this is the floor.
    relay: Option<(Client, PlainRelay)>,
    sent: usize,
    /// The last read (it may already hold what follows the echo).
    last: Vec<u8>,
    buf: Vec<u8>,
}

impl Echo {
    /// The echo program in a local PTY, read and written directly by this thread.
    pub fn local(total: usize) -> anyhow::Result<Self> {
        let mut pty = Local::spawn(&echo_script(total), Duration::from_secs(120))?;
        let mut buf = vec![0u8; READ_BYTES];
        read_until(&mut pty.wire(&mut buf), &[], b"BENCH_GO", Duration::from_secs(20))?;
        Ok(Self { pty, relay: None, sent: 0, last: Vec::new(), buf })
    }

    /// The kernel floor: the echo program in a local PTY, reached through a "relay" and an
    /// "agent" that only copy bytes between loopback TCP sockets (Nagle off) and the PTY, each
    /// direction on a blocking thread of its own. That is two TCP hops each way and four process
    /// wake-ups more than `local`, with no framing, protocol or event loop: what any relay of
    /// this shape pays the kernel on this machine.
    pub fn via_plain_tcp(total: usize) -> anyhow::Result<Self> {
        let mut echo = Self::local(total)?;
        echo.relay = Some(PlainRelay::start(&mut echo.pty, 4096)?);
        Ok(echo)
    }

    /// Types the next `n` keys one at a time; their round trips, in microseconds.
    pub fn keys(&mut self, n: usize) -> anyhow::Result<Vec<f64>> {
        let (sent, buf) = (self.sent, &mut self.buf);
        let (samples, last) = match &mut self.relay {
            Some((client, _)) => time_keys(&mut client.wire(buf), sent, n)?,
            None => time_keys(&mut self.pty.wire(buf), sent, n)?,
        };
        self.sent += n;
        self.last = last;
        Ok(samples)
    }

    /// Waits for the program's end marker (after its last key) and stops everything.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let (last, buf, within) = (&self.last, &mut self.buf, Duration::from_secs(20));
        let run = match &mut self.relay {
            Some((client, _)) => read_until(&mut client.wire(buf), last, b"BENCH_42_DONE", within),
            None => read_until(&mut self.pty.wire(buf), last, b"BENCH_42_DONE", within),
        };
        let finished = match self.relay {
            Some((_, relay)) => relay.stop(self.pty),
            None => self.pty.finish(),
        };
        run?;
        if !finished {
            bail!("the local echo run overran its time");
        }
        Ok(())
    }
}

/// The kernel floor of the link's topology for throughput: `throughput`'s command in a local
/// PTY, its output copied by an "agent" thread into loopback TCP, by a "relay" thread into a
/// second connection, and read by this thread: (bytes, seconds).
pub fn throughput_via_plain_tcp(bytes: u64, within: Duration) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut pty = Local::spawn(&format!("head -c {bytes} /dev/zero | base64 | cat; echo BENCH_$((6*7))_END"), within)?;
    let (mut client, relay) = PlainRelay::start(&mut pty, 64 * 1024)?;
    let mut buf = vec![0u8; READ_BYTES];
    let run = read_until(&mut client.wire(&mut buf), &[], b"BENCH_42_END", within);
    let took = started.elapsed().as_secs_f64();
    let finished = relay.stop(pty);
    let (got, _) = run?;
    if !finished {
        bail!("the plain-TCP throughput run overran {within:?}");
    }
    Ok((got, took))
}

/// A "relay" and an "agent" that only copy bytes: the PTY's master and the client are joined
/// by two loopback TCP connections (Nagle off), each direction of each hop copied by a
/// blocking thread of its own.
struct PlainRelay {
    sockets: Vec<TcpStream>,
    copiers: Vec<std::thread::JoinHandle<()>>,
}

impl PlainRelay {
    /// Takes the PTY's reader and writer; returns the client's end. `buf`: each copier's
    /// read size.
    fn start(pty: &mut Local, buf: usize) -> anyhow::Result<(Client, Self)> {
        let hop = |listener: &TcpListener| -> io::Result<(TcpStream, TcpStream)> {
            let near = TcpStream::connect(listener.local_addr()?)?;
            let (far, _) = listener.accept()?;
            near.set_nodelay(true)?;
            far.set_nodelay(true)?;
            Ok((near, far))
        };
        let (agent, relay_to_agent) = hop(&TcpListener::bind("127.0.0.1:0")?)?;
        let (client, relay_to_client) = hop(&TcpListener::bind("127.0.0.1:0")?)?;
        let sockets =
            vec![agent.try_clone()?, relay_to_agent.try_clone()?, client.try_clone()?, relay_to_client.try_clone()?];
        let pty_reader = std::mem::replace(&mut pty.reader, Box::new(io::empty()));
        let pty_writer = std::mem::replace(&mut pty.writer, Box::new(io::sink()));
        let copiers = vec![
            copier(Box::new(agent.try_clone()?), pty_writer, buf),
            copier(pty_reader, Box::new(agent), buf),
            copier(Box::new(relay_to_client.try_clone()?), Box::new(relay_to_agent.try_clone()?), buf),
            copier(Box::new(relay_to_agent), Box::new(relay_to_client), buf),
        ];
        Ok((Client { reader: client.try_clone()?, writer: client }, Self { sockets, copiers }))
    }

    /// Unblocks and joins every copier (the sockets' reads return 0, the PTY's returns EIO
    /// once the program is gone) and reaps the program; false if its watchdog had to kill it.
    fn stop(self, pty: Local) -> bool {
        for s in &self.sockets {
            let _ = s.shutdown(Shutdown::Both);
        }
        let finished = pty.finish();
        for c in self.copiers {
            let _ = c.join();
        }
        finished
    }
}

/// A thread copying `from` to `to`, `buf` bytes a read at most, until either ends.
fn copier(mut from: Box<dyn Read + Send>, mut to: Box<dyn Write + Send>, buf: usize) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; buf];
        for _ in 0..100_000_000u64 {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) if to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() => return,
                Ok(_) => {}
            }
        }
    })
}

/// `head -c BYTES /dev/zero | base64 | cat` in a local PTY, read to the end: (bytes, seconds).
pub fn throughput(bytes: u64, within: Duration) -> anyhow::Result<(u64, f64)> {
    let started = Instant::now();
    let mut pty = Local::spawn(&format!("head -c {bytes} /dev/zero | base64 | cat"), within)?;
    let got = pty.read_to_end();
    let took = started.elapsed().as_secs_f64();
    if !pty.finish() {
        bail!("the local throughput run overran {within:?}");
    }
    Ok((got, took))
}

/// The client's end of the plain-TCP relay: the socket, and a clone of it to read with.
struct Client {
    reader: TcpStream,
    writer: TcpStream,
}

impl Client {
    /// The socket as a terminal to type into and read, with `buf` to read into.
    fn wire<'a>(&'a mut self, buf: &'a mut [u8]) -> Wire<'a> {
        Wire { reader: &mut self.reader, writer: &mut self.writer, buf }
    }
}
