//! A real terminal for a `cmdop` process: the test holds the PTY's master end, types into it,
//! reads everything the process writes (a thread drains it into a buffer), resizes it, and
//! waits for the exit code. Every wait is bounded.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use portable_pty::{Child, CommandBuilder, MasterPty, PtySize, native_pty_system};

/// Pause between two looks at the output.
const POLL: Duration = Duration::from_millis(20);

/// A process running in a PTY of its own.
pub struct Term {
    master: Box<dyn MasterPty + Send>,
    writer: Box<dyn Write + Send>,
    child: Box<dyn Child + Send + Sync>,
    output: Arc<Mutex<Vec<u8>>>,
    /// Output before this index was matched by an earlier `expect`.
    seen: usize,
}

impl Term {
    /// Starts `cmdop ARGS` with `CMDOP_HOME`/`HOME` = `home` in a `cols` x `rows` terminal.
    pub fn spawn(home: &Path, args: &[&str], cols: u16, rows: u16) -> anyhow::Result<Self> {
        let pair = native_pty_system().openpty(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 })?;
        let mut cmd = CommandBuilder::new(crate::common::CMDOP);
        cmd.args(args);
        cmd.env("CMDOP_HOME", home);
        cmd.env("HOME", home);
        cmd.env("RUST_LOG", "warn");
        cmd.env("TERM", "xterm-256color");
        cmd.env_remove("CMDOP_ENROLL_TOKEN");
        cmd.cwd(home);
        let child = pair.slave.spawn_command(cmd).context("cannot start cmdop in a PTY")?;
        drop(pair.slave);
        let mut reader = pair.master.try_clone_reader()?;
        let writer = pair.master.take_writer()?;
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = output.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                }
            }
        });
        Ok(Self { master: pair.master, writer, child, output, seen: 0 })
    }

    /// Types bytes.
    pub fn send(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.writer.write_all(bytes)?;
        self.writer.flush()?;
        Ok(())
    }

    /// Types a line and Enter.
    pub fn line(&mut self, text: &str) -> anyhow::Result<()> {
        self.send(format!("{text}\r").as_bytes())
    }

    /// Everything written so far.
    pub fn output(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Everything written so far, as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.output()).into_owned()
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.output.lock().unwrap().len()
    }

    /// Waits until `needle` appears after the previous match; returns the offset just past it.
    pub fn expect(&mut self, needle: &str, within: Duration) -> anyhow::Result<usize> {
        let deadline = Instant::now() + within;
        let max_polls = within.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(end) = self.find_from(self.seen, needle) {
                self.seen = end;
                return Ok(end);
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        let text = self.text();
        let tail: String = text.chars().rev().take(1500).collect::<Vec<_>>().into_iter().rev().collect();
        bail!("timed out after {within:?} waiting for {needle:?}; the terminal's last output:\n{tail}")
    }

    fn find_from(&self, from: usize, needle: &str) -> Option<usize> {
        let out = self.output.lock().unwrap();
        let hay = out.get(from..)?;
        let at = hay.windows(needle.len()).position(|w| w == needle.as_bytes())?;
        Some(from + at + needle.len())
    }

    /// Resizes the terminal (the process gets SIGWINCH).
    pub fn resize(&self, cols: u16, rows: u16) -> anyhow::Result<()> {
        self.master.resize(PtySize { rows, cols, pixel_width: 0, pixel_height: 0 })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.process_id().unwrap_or(0)
    }

    /// Waits for the exit code, at most `within`; kills the process past it.
    pub fn wait(&mut self, within: Duration) -> anyhow::Result<u32> {
        let deadline = Instant::now() + within;
        let max_polls = within.as_millis() / POLL.as_millis() + 2;
        for _ in 0..max_polls {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.exit_code());
            }
            if Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(POLL);
        }
        let _ = self.child.kill();
        bail!("cmdop still running after {within:?}; killed it. Output:\n{}", self.text())
    }

    /// Kills the process at once (as a lost laptop would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}
