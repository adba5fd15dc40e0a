//! A login shell in a PTY: opening the PTY, spawning the shell on it, and the master end, which
//! is non-blocking and registered with tokio's reactor (`AsyncFd`).
//!
//! No thread serves a PTY. Whichever task wants output reads the master directly when the
//! reactor says it is readable, and the task that receives input writes it directly. A
//! keystroke and its echo therefore cross no thread or channel between the relay stream and
//! the kernel. (Reader and writer threads with channels to tokio cost several cross-thread
//! wake-ups per keystroke and per ~4 KiB of output: see docs/performance.md.) Backpressure is
//! unchanged: while nobody wants output the master is not read, the kernel's buffer fills and
//! the program blocks.
//!
//! The shell is a session leader with the PTY as its controlling terminal, so Ctrl-C reaches
//! the foreground job, job control works and a resize sends SIGWINCH. Setting that up has to
//! run in the child between fork and exec (`pre_exec`). That and registering the master with
//! the reactor (tokio's `AsyncFd::register_with_interest`) are the crate's only `unsafe`, each
//! in one small function here.

use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::task::{Context, Poll, Waker};

use nix::sys::signal::{SigHandler, Signal, kill, killpg};
use nix::unistd::{AccessFlags, Pid, User, access, getuid};
use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::Winsize;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::core::session::Ending;

/// A running shell's PTY master.
pub(crate) struct Pty {
    /// Non-blocking; registered for readability only. Write readiness is waited for on a
    /// separate registration when a write would block (rare: the program is not reading its
    /// input), so the reactor is not woken each time the shell consumes a keystroke.
    master: AsyncFd<OwnedFd>,
    pid: u32,
}

/// The shell process, to learn how it ended.
pub(crate) struct Exit(tokio::process::Child);

/// A PTY size from wire values, with 80x24 for zeros.
pub(crate) fn size(cols: u32, rows: u32) -> Winsize {
    let clamp = |v: u32, default: u16| {
        if v == 0 { default } else { u16::try_from(v).unwrap_or(u16::MAX) }
    };
    Winsize { ws_row: clamp(rows, 24), ws_col: clamp(cols, 80), ws_xpixel: 0, ws_ypixel: 0 }
}

/// Starts the user's login shell (`$SHELL`, else the password database's, else `/bin/sh`, run
/// with a `-` before its name as login does) in a new PTY of `cols` x `rows`, in the home
/// folder, with the agent's environment plus `SHELL`, `TERM`, `COLORTERM` and `env`.
pub(crate) fn spawn(cols: u32, rows: u32, env: &[(String, String)]) -> anyhow::Result<(Pty, Exit)> {
    let (master, slave) = open(size(cols, rows))?;
    let shell = login_shell();
    let mut command = tokio::process::Command::new(&shell);
    let name = shell.rsplit('/').next().unwrap_or(&shell);
    command.arg0(format!("-{name}"));
    command.env("SHELL", &shell).env("TERM", "xterm-256color").env("COLORTERM", "truecolor");
    command.envs(env.iter().map(|(k, v)| (k, v)));
    let home = std::env::var_os("HOME").map(PathBuf::from).or_else(|| passwd().map(|u| u.dir));
    if let Some(home) = home.filter(|h| h.is_dir()) {
        command.current_dir(home);
    }
    command.stdin(Stdio::from(slave.try_clone()?)).stdout(Stdio::from(slave.try_clone()?));
    command.stderr(Stdio::from(slave.try_clone()?));
    become_session_leader(&mut command, slave);
    let child = command.spawn()?;
    // The command holds our copies of the slave: drop them, else the master never reports
    // the shell's end.
    drop(command);
    let pid = child.id().unwrap_or(0);
    let master = register(master, Interest::READABLE)?;
    Ok((Pty { master, pid }, Exit(child)))
}

/// A new PTY pair, both ends close-on-exec and not this process's controlling terminal; the
/// master non-blocking.
fn open(size: Winsize) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)?;
    rustix::pty::grantpt(&master)?;
    rustix::pty::unlockpt(&master)?;
    let name = rustix::pty::ptsname(&master, Vec::new())?;
    let slave = rustix::fs::open(name.as_c_str(), OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC, Mode::empty())?;
    rustix::termios::tcsetwinsize(&master, size)?;
    let flags = rustix::fs::fcntl_getfl(&master)?;
    rustix::fs::fcntl_setfl(&master, flags | OFlags::NONBLOCK)?;
    Ok((master, slave))
}

/// `$SHELL` if it can be run, else the user's shell from the password database if it can,
/// else `/bin/sh`.
fn login_shell() -> String {
    let runnable = |path: &str| !path.is_empty() && access(path, AccessFlags::X_OK).is_ok();
    if let Some(shell) = std::env::var("SHELL").ok().filter(|s| runnable(s)) {
        return shell;
    }
    match passwd().and_then(|u| u.shell.to_str().map(str::to_string)).filter(|s| runnable(s)) {
        Some(shell) => shell,
        None => "/bin/sh".to_string(),
    }
}

/// The agent's user in the password database. Only asked when the environment does not say
/// (the lookup may go to a directory service, and the agent's runtime has one thread).
fn passwd() -> Option<User> {
    User::from_uid(getuid()).ok().flatten()
}

/// Makes the child a session leader whose controlling terminal is `tty` (the PTY's slave), and
/// gives it default dispositions for the signals a terminal program expects to be default
/// (the agent may have been started with some ignored, e.g. under `nohup`).
#[allow(unsafe_code)]
fn become_session_leader(command: &mut tokio::process::Command, tty: OwnedFd) {
    const DEFAULT: [Signal; 6] =
        [Signal::SIGCHLD, Signal::SIGHUP, Signal::SIGINT, Signal::SIGQUIT, Signal::SIGTERM, Signal::SIGALRM];
    // SAFETY: `pre_exec` runs the closure in the forked child before exec, where only
    // async-signal-safe work is allowed. The closure allocates nothing and takes no lock: it
    // makes system calls only (sigaction through `signal`, setsid, ioctl(TIOCSCTTY)). `signal`
    // is unsafe because a handler could break invariants; `SigDfl` installs no handler. `tty`
    // was opened before the fork and stays open in the child until exec (close-on-exec).
    unsafe {
        command.pre_exec(move || {
            for sig in DEFAULT {
                nix::sys::signal::signal(sig, SigHandler::SigDfl)?;
            }
            rustix::process::setsid()?;
            rustix::process::ioctl_tiocsctty(&tty)?;
            Ok(())
        });
    }
}

/// A read of the master smaller than this is taken to have found the end of what the program
/// wrote, unless output is streaming (see `Pty::read`): 1 KiB, well above a keystroke's echo
/// or a prompt.
const DRAINED_BELOW: usize = 1024;

/// What Linux's n_tty line discipline buffers for a reader (`N_TTY_BUF_SIZE`). A read that
/// brought at least this much found the program writing faster than we read: output streams.
pub(crate) const LDISC_BUF_BYTES: usize = 4096;

/// Registers `fd` with the runtime's reactor for `interest`.
#[allow(unsafe_code)]
fn register(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: `register_with_interest` needs the fd to stay open, and to be the same one, for
    // as long as the `AsyncFd` lives. An `OwnedFd` owns its fd, closes it only when dropped
    // (with the `AsyncFd`, after deregistering), and `as_raw_fd` always returns that fd.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into())
}

impl Pty {
    /// The shell's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the master may have output, or has been closed on the shell's side.
    pub(crate) async fn readable(&self) {
        let _ = self.master.readable().await;
    }

    /// Reads what the master holds into `buf`'s spare capacity (appended, nothing zeroed
    /// first), without blocking. `WouldBlock`: nothing now (wait with
    /// `readable`). `Ok(0)`: the shell's side is closed (Linux answers EIO once the last
    /// process holding the slave has closed it).
    ///
    /// Unless output is `streaming`, a small read (under [`DRAINED_BELOW`] bytes, and less
    /// than was asked for) emptied the line discipline's buffer and the program is not writing
    /// faster than we read: the reactor's readiness is cleared then, so the next call says
    /// `WouldBlock` without a system call and the next wait is for new output (the master
    /// signals every arrival). The read that would otherwise follow to find `EAGAIN` is not
    /// free: n_tty waits in it for the tty's pending flush work, which put the keystroke-echo
    /// path to sleep and back (a switch to the kworker) in half the keys. While output
    /// streams, readiness stays: the kernel hands a burst over in pieces, a wake-up often
    /// finds only the start of one, and the next read's wait for the flush work is what brings
    /// the rest into the same frame.
    pub(crate) fn read(&self, buf: &mut Vec<u8>, streaming: bool) -> io::Result<usize> {
        // A look at the reactor's readiness, not a wait: no waiter joins its list. (The
        // no-op waker lands in the single-waiter slot, which no task here waits on.)
        let mut look = Context::from_waker(Waker::noop());
        let Poll::Ready(Ok(mut ready)) = self.master.poll_read_ready(&mut look) else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let asked = buf.capacity() - buf.len();
        match ready.try_io(|fd| Ok(rustix::io::read(fd.get_ref(), rustix::buffer::spare_capacity(&mut *buf))?)) {
            Err(_would_block) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(Ok(n)) => {
                if !streaming && n > 0 && n < asked && n < DRAINED_BELOW {
                    ready.clear_ready();
                }
                Ok(n)
            }
            Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => Ok(0),
            Ok(Err(e)) => Err(e),
        }
    }

    /// Writes as much of `data` as the PTY's input buffer takes now, without blocking
    /// (`WouldBlock`: none; wait with `writable`).
    pub(crate) fn write(&self, data: &[u8]) -> io::Result<usize> {
        Ok(rustix::io::write(self.master.get_ref(), data)?)
    }

    /// Waits until the PTY's input buffer has room. Registers a duplicate of the master for
    /// writability only for the wait: the program was not reading, so this is rare.
    pub(crate) async fn writable(&self) {
        let registered = self.master.get_ref().try_clone().and_then(|fd| register(fd, Interest::WRITABLE));
        match registered {
            Ok(fd) => drop(fd.writable().await),
            // Cannot register: retry the write a little later rather than spin.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
        }
    }

    /// Resizes the PTY (the shell gets SIGWINCH).
    pub(crate) fn resize(&self, cols: u16, rows: u16) {
        let _ = rustix::termios::tcsetwinsize(self.master.get_ref(), size(cols.into(), rows.into()));
    }

    /// Sends `signo` to the PTY's foreground process group (what a keypress like Ctrl-C
    /// reaches), or to the shell when that is unknown.
    pub(crate) fn signal(&self, signo: i32) {
        let Ok(sig) = Signal::try_from(signo) else {
            return;
        };
        let leader = rustix::termios::tcgetpgrp(self.master.get_ref()).ok().map(|p| p.as_raw_nonzero().get());
        match leader.filter(|pgrp| *pgrp > 0) {
            Some(pgrp) => {
                let _ = killpg(Pid::from_raw(pgrp), sig);
            }
            None => self.signal_shell(sig),
        }
    }

    /// Sends `sig` to the shell itself (SIGHUP to end it politely, SIGKILL when it will not).
    pub(crate) fn signal_shell(&self, sig: Signal) {
        let Some(pid) = i32::try_from(self.pid).ok().filter(|p| *p > 0) else {
            return;
        };
        let _ = kill(Pid::from_raw(pid), sig);
        if sig == Signal::SIGKILL {
            let _ = killpg(Pid::from_raw(pid), sig);
        }
    }
}

impl Exit {
    /// Waits for the shell to end: its exit code, or the signal that killed it.
    pub(crate) async fn wait(mut self) -> Ending {
        match self.0.wait().await {
            Ok(status) => super::exec::ending_of(status),
            Err(e) => Ending::Error(format!("the shell's status was lost: {e}")),
        }
    }
}
