//! A login shell in a real PTY (portable-pty): spawning it, and the three blocking threads that
//! own its ends.
//!
//! portable-pty is blocking, so a reader thread hands output chunks over a one-slot channel:
//! while nobody takes them the reader blocks, the PTY is not read, and the kernel then blocks
//! the program. A writer thread writes input and grants input credit back per chunk; a waiter
//! thread reaps the shell with `waitpid` (exact exit code or signal number).

use std::io::{Read, Write};
use std::sync::Mutex;

use bytes::Bytes;
use nix::sys::signal::{Signal, kill, killpg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use portable_pty::{CommandBuilder, MasterPty, PtySize, native_pty_system};
use tokio::sync::{mpsc, oneshot};

use super::channel::{Out, credit_frame};
use crate::proto::closed;
use crate::session::CHUNK_BYTES;

/// A chunk of input for the shell and, when it came through a channel, whom to grant the
/// input credit back to once it is written.
pub struct WriteJob {
    /// The bytes.
    pub data: Bytes,
    /// The stream and channel the bytes came on.
    pub ack: Option<(Out, u64)>,
}

/// A running shell's handles. Output arrives on `chunks` (ends once the PTY is closed on the
/// shell's side), the exit status on `exited`.
pub struct Pty {
    master: Mutex<Box<dyn MasterPty + Send>>,
    input: std::sync::mpsc::Sender<WriteJob>,
    pid: u32,
}

/// The receiving ends a supervisor owns.
pub struct PtyOutput {
    /// Output chunks, at most `CHUNK_BYTES` each.
    pub chunks: mpsc::Receiver<Bytes>,
    /// How the shell ended.
    pub exited: oneshot::Receiver<closed::End>,
}

/// A PTY size from wire values, with 80x24 for zeros.
pub fn size(cols: u32, rows: u32) -> PtySize {
    let clamp = |v: u32, default: u16| if v == 0 { default } else { u16::try_from(v).unwrap_or(u16::MAX) };
    PtySize { rows: clamp(rows, 24), cols: clamp(cols, 80), pixel_width: 0, pixel_height: 0 }
}

/// Starts the user's login shell in a new PTY of `cols` x `rows`, in `$HOME`, with `env` added.
pub fn spawn(cols: u32, rows: u32, env: &[(String, String)]) -> anyhow::Result<(Pty, PtyOutput)> {
    let pair = native_pty_system().openpty(size(cols, rows))?;
    let mut command = CommandBuilder::new_default_prog();
    command.env("TERM", "xterm-256color");
    command.env("COLORTERM", "truecolor");
    for (k, v) in env {
        command.env(k, v);
    }
    if let Ok(home) = std::env::var("HOME") {
        command.cwd(home);
    }
    let child = pair.slave.spawn_command(command)?;
    drop(pair.slave); // else the reader never sees the shell's end
    let pid = child.process_id().unwrap_or(0);
    let reader = pair.master.try_clone_reader()?;
    let writer = pair.master.take_writer()?;
    let (chunks_tx, chunks) = mpsc::channel::<Bytes>(1);
    std::thread::spawn(move || read_pty(reader, chunks_tx));
    let (exit_tx, exited) = oneshot::channel();
    // `child` stays alive on this thread only so that its handle is not dropped early; the
    // status comes from waitpid, which reports signals exactly.
    std::thread::spawn(move || {
        let _child = child;
        let _ = exit_tx.send(wait_for(pid));
    });
    let pty = Pty { master: Mutex::new(pair.master), input: spawn_writer(writer), pid };
    Ok((pty, PtyOutput { chunks, exited }))
}

impl Pty {
    /// The shell's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Queues input; the writer thread grants the credit back once it is written.
    pub fn write(&self, job: WriteJob) {
        let _ = self.input.send(job);
    }

    /// Resizes the PTY (the shell gets SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) {
        let master = self.master.lock().unwrap_or_else(|p| p.into_inner());
        let _ = master.resize(size(cols.into(), rows.into()));
    }

    /// Sends `signo` to the PTY's foreground process group (what a keypress like Ctrl-C
    /// reaches), or to the shell when that is unknown.
    pub fn signal(&self, signo: i32) {
        let Ok(sig) = Signal::try_from(signo) else { return };
        let leader = self.master.lock().unwrap_or_else(|p| p.into_inner()).process_group_leader();
        match leader.filter(|pgrp| *pgrp > 0) {
            Some(pgrp) => {
                let _ = killpg(Pid::from_raw(pgrp), sig);
            }
            None => self.signal_shell(sig),
        }
    }

    /// Sends `sig` to the shell itself (SIGHUP to end it politely, SIGKILL when it will not).
    pub fn signal_shell(&self, sig: Signal) {
        let Some(pid) = i32::try_from(self.pid).ok().filter(|p| *p > 0) else { return };
        let _ = kill(Pid::from_raw(pid), sig);
        if sig == Signal::SIGKILL {
            let _ = killpg(Pid::from_raw(pid), sig);
        }
    }
}

/// Blocks until the shell `pid` ends; its exit code, or the signal that killed it.
fn wait_for(pid: u32) -> closed::End {
    let Ok(raw) = i32::try_from(pid) else { return closed::End::Error("the shell has no process id".into()) };
    loop {
        match waitpid(Pid::from_raw(raw), None) {
            Ok(WaitStatus::Exited(_, code)) => return closed::End::ExitCode(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return closed::End::Signal(sig as i32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return closed::End::Error(format!("the shell's status was lost: {e}")),
        }
    }
}

/// Blocking reader: Linux ends a PTY's reads with EIO once the shell side is closed.
fn read_pty(mut reader: Box<dyn Read + Send>, chunks: mpsc::Sender<Bytes>) {
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if chunks.blocking_send(Bytes::copy_from_slice(&buf[..n])).is_err() {
                    return;
                }
            }
        }
    }
}

/// Blocking writer thread; grants input credit back as bytes reach the PTY. It serves every
/// attachment of the shell, on whichever stream each came, so a dead stream only loses its
/// own credit grants.
fn spawn_writer(mut writer: Box<dyn Write + Send>) -> std::sync::mpsc::Sender<WriteJob> {
    let (tx, rx) = std::sync::mpsc::channel::<WriteJob>();
    std::thread::spawn(move || {
        for job in rx {
            if writer.write_all(&job.data).and_then(|_| writer.flush()).is_err() {
                return;
            }
            if let Some((out, channel)) = job.ack {
                let n = u32::try_from(job.data.len()).unwrap_or(u32::MAX);
                let _ = out.blocking_send(credit_frame(channel, n));
            }
        }
    });
    tx
}
