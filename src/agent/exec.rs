//! One-shot commands: argv run directly (no shell), stdin /dev/null, stdout and stderr pipes,
//! in their own process group so signals and the timeout reach every child.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{Semaphore, mpsc};

use super::channel::{Cmd, Out, closed_frame, output_frame};
use crate::proto::{self, closed};
use crate::session::CHUNK_BYTES;

/// Runs `open` to completion, streaming its output under `credit`.
pub async fn run(open: proto::Open, out: Out, credit: Arc<Semaphore>, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
    let channel = open.channel;
    let started = Instant::now();
    let mut command = Command::new(&open.argv[0]);
    command
        .args(&open.argv[1..])
        .envs(&open.env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return spawn_failed(channel, &open.argv[0], e, &out).await,
    };
    let pid = child.id().unwrap_or(0);
    let opened = proto::Opened { channel, input_window: 0, pid };
    let _ = out.send(frame(proto::agent_frame::Kind::Opened(opened))).await;
    let chunk = CHUNK_BYTES.min(open.output_window as usize).max(1);
    let readers = [
        child.stdout.take().map(|r| tokio::spawn(pump(r, channel, proto::OutputStream::Stdout, chunk, out.clone(), credit.clone()))),
        child.stderr.take().map(|r| tokio::spawn(pump(r, channel, proto::OutputStream::Stderr, chunk, out.clone(), credit.clone()))),
    ];
    let group = Pid::from_raw(i32::try_from(pid).unwrap_or(0));
    let deadline = (open.timeout_ms > 0).then(|| tokio::time::Instant::now() + Duration::from_millis(open.timeout_ms));
    let mut timed_out = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            cmd = cmds.recv() => match cmd {
                Some(Cmd::Signal(signo)) => signal_group(group, signo),
                Some(Cmd::Close) | None => signal_group(group, libc::SIGKILL),
                Some(_) => {}
            },
            _ = sleep_until(deadline), if !timed_out => {
                timed_out = true;
                signal_group(group, libc::SIGKILL);
            }
        }
    };
    for reader in readers.into_iter().flatten() {
        let _ = reader.await;
    }
    let end = match status {
        Ok(s) => ending_of(s),
        Err(e) => closed::End::Error(format!("waiting for the command failed: {e}")),
    };
    let _ = out.send(closed_frame(channel, end, timed_out, started.elapsed())).await;
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn signal_group(group: Pid, signo: i32) {
    if group.as_raw() <= 0 {
        return;
    }
    if let Ok(sig) = Signal::try_from(signo) {
        let _ = killpg(group, sig);
    }
}

fn ending_of(status: std::process::ExitStatus) -> closed::End {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => closed::End::ExitCode(code),
        (None, Some(sig)) => closed::End::Signal(sig),
        (None, None) => closed::End::Error("the command ended without a status".into()),
    }
}

/// Like a shell: 127 when the program does not exist, 126 when it cannot be run.
async fn spawn_failed(channel: u64, program: &str, e: std::io::Error, out: &Out) {
    let (code, why) = match e.kind() {
        std::io::ErrorKind::NotFound => (127, "command not found"),
        std::io::ErrorKind::PermissionDenied => (126, "permission denied"),
        _ => (126, "cannot run"),
    };
    let opened = proto::Opened { channel, input_window: 0, pid: 0 };
    let _ = out.send(frame(proto::agent_frame::Kind::Opened(opened))).await;
    let msg = format!("cmdop: {program}: {why} ({e})\n");
    let _ = out.send(output_frame(channel, proto::OutputStream::Stderr, 0, msg.into_bytes().into())).await;
    let _ = out.send(closed_frame(channel, closed::End::ExitCode(code), false, Duration::ZERO)).await;
}

fn frame(kind: proto::agent_frame::Kind) -> proto::AgentFrame {
    proto::AgentFrame { kind: Some(kind) }
}

/// Reads a pipe to its end, sending each chunk only once it holds credit for it; while it
/// waits the pipe is not read, so the program blocks on a full pipe.
async fn pump(mut pipe: impl AsyncRead + Unpin, channel: u64, stream: proto::OutputStream, chunk: usize, out: Out, credit: Arc<Semaphore>) {
    let mut offset = 0u64;
    let mut buf = vec![0u8; chunk];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(permit) = credit.acquire_many(n as u32).await else { return };
        permit.forget();
        let data = bytes::Bytes::copy_from_slice(&buf[..n]);
        if out.send(output_frame(channel, stream, offset, data)).await.is_err() {
            return;
        }
        offset += n as u64;
    }
}
