//! Shell sessions in a real PTY (portable-pty).
//!
//! portable-pty is blocking, so a reader thread and a writer thread own the PTY's two ends.
//! The reader hands chunks over a one-slot channel: while the async side waits for output
//! credit the reader blocks, the PTY is not read, and the kernel then blocks the program.

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use portable_pty::{CommandBuilder, PtySize, native_pty_system};
use tokio::sync::{Semaphore, mpsc};

use super::channel::{Cmd, Out, closed_frame, credit_frame, output_frame};
use crate::proto::{self, closed};
use crate::session::{CHUNK_BYTES, INPUT_WINDOW_BYTES};

fn size(cols: u32, rows: u32) -> PtySize {
    let clamp = |v: u32, default: u16| if v == 0 { default } else { u16::try_from(v).unwrap_or(u16::MAX) };
    PtySize { rows: clamp(rows, 24), cols: clamp(cols, 80), pixel_width: 0, pixel_height: 0 }
}

/// Runs the user's login shell for `open` until it exits or the relay closes the channel.
pub async fn run(open: proto::Open, out: Out, credit: Arc<Semaphore>, cmds: mpsc::UnboundedReceiver<Cmd>) {
    let channel = open.channel;
    let started = Instant::now();
    let end = match shell(&open, &out, credit, cmds).await {
        Ok(end) => end,
        Err(e) => closed::End::Error(format!("cannot start a shell: {e:#}")),
    };
    let _ = out.send(closed_frame(channel, end, false, started.elapsed())).await;
}

async fn shell(
    open: &proto::Open,
    out: &Out,
    credit: Arc<Semaphore>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) -> anyhow::Result<closed::End> {
    let channel = open.channel;
    let pair = native_pty_system().openpty(size(open.cols, open.rows))?;
    let mut command = CommandBuilder::new_default_prog();
    command.env("TERM", "xterm-256color");
    command.env("COLORTERM", "truecolor");
    for (k, v) in &open.env {
        command.env(k, v);
    }
    if let Ok(home) = std::env::var("HOME") {
        command.cwd(home);
    }
    let mut child = pair.slave.spawn_command(command)?;
    drop(pair.slave); // else the reader never sees the shell's end
    let mut killer = child.clone_killer();
    let reader = pair.master.try_clone_reader()?;
    let writer = pair.master.take_writer()?;
    let pid = child.process_id().unwrap_or(0);
    let opened = proto::Opened { channel, input_window: INPUT_WINDOW_BYTES, pid };
    out.send(proto::AgentFrame { kind: Some(proto::agent_frame::Kind::Opened(opened)) }).await?;

    let (chunks_tx, mut chunks) = mpsc::channel::<Bytes>(1);
    std::thread::spawn(move || read_pty(reader, chunks_tx));
    let input = spawn_writer(writer, channel, out.clone());
    let (exit_tx, exit_rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait());
    });

    let mut offset = 0u64;
    let mut reading = true;
    while reading {
        tokio::select! {
            chunk = chunks.recv() => match chunk {
                Some(data) => {
                    let n = data.len();
                    credit.acquire_many(n as u32).await?.forget();
                    out.send(output_frame(channel, proto::OutputStream::Stdout, offset, data)).await?;
                    offset += n as u64;
                }
                None => reading = false,
            },
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Input(data)) => { let _ = input.send(data); }
                Some(Cmd::Resize(cols, rows)) => { let _ = pair.master.resize(size(cols.into(), rows.into())); }
                Some(Cmd::Signal(_)) => {}
                Some(Cmd::Close) | None => { let _ = killer.kill(); }
            },
        }
    }
    let status = tokio::time::timeout(Duration::from_secs(5), exit_rx).await;
    Ok(match status {
        Ok(Ok(Ok(s))) => match s.signal() {
            Some(_) if !s.success() => closed::End::Signal(libc::SIGHUP),
            _ => closed::End::ExitCode(i32::try_from(s.exit_code()).unwrap_or(1)),
        },
        _ => closed::End::Error("the shell's status was lost".into()),
    })
}

/// Blocking reader: Linux ends a PTY's reads with EIO once the shell is gone.
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

/// Blocking writer thread; grants input credit back as bytes reach the PTY.
fn spawn_writer(mut writer: Box<dyn Write + Send>, channel: u64, out: Out) -> std::sync::mpsc::Sender<Bytes> {
    let (tx, rx) = std::sync::mpsc::channel::<Bytes>();
    std::thread::spawn(move || {
        for data in rx {
            if writer.write_all(&data).and_then(|_| writer.flush()).is_err() {
                return;
            }
            let n = u32::try_from(data.len()).unwrap_or(u32::MAX);
            if out.blocking_send(credit_frame(channel, n)).is_err() {
                return;
            }
        }
    });
    tx
}
