//! One-shot commands: argv run directly (no shell), stdin /dev/null, stdout and stderr pipes,
//! in their own process group so signals and the timeout reach every child. An ask runs the
//! same way: the agent's ask handler under `sh -c`, the request text on its stdin.

use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{Semaphore, mpsc};

use super::channel::{Cmd, Out, closed_at_once_frame, closed_frame, opened_frame, output_frame, send_output};
use crate::core::session::{CHUNK_BYTES, Ending, Exit, OpenSpec, OutputStream};

/// After the group is killed (timeout, consumer gone), how long output may still drain before
/// the pipes are abandoned: 2 s. A process that left the group can hold them open for ever.
pub(super) const DRAIN_AFTER_KILL: Duration = Duration::from_secs(2);

/// Runs `spec` on `channel` to completion, streaming its output under `credit` (the first
/// `window` bytes of it granted up front). With `ask`, it is an ask: the handler runs under
/// `sh -c` with the text on its stdin.
pub(crate) async fn run(
    channel: u64,
    window: u32,
    spec: OpenSpec,
    ask: Option<(&str, String)>,
    out: Out,
    credit: Arc<Semaphore>,
    mut cmds: mpsc::UnboundedReceiver<Cmd>,
) {
    let started = Instant::now();
    let argv = if ask.is_some() { &[][..] } else { &spec.argv[..] };
    let handler = ask.as_ref().map(|(handler, _)| *handler);
    let (mut command, program) = command_for(argv, handler, spec.env.iter().map(|(k, v)| (k, v)));
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return spawn_failed(channel, &program, e, &out).await,
    };
    if let Some((_, text)) = &ask {
        feed_stdin(&mut child, text);
    }
    let pid = child.id().unwrap_or(0);
    let _ = out.send(opened_frame(channel, pid, 0, None)).await;
    let chunk = CHUNK_BYTES.min(window as usize).max(1);
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|r| tokio::spawn(pump(r, channel, OutputStream::Stdout, chunk, out.clone(), credit.clone()))),
        child
            .stderr
            .take()
            .map(|r| tokio::spawn(pump(r, channel, OutputStream::Stderr, chunk, out.clone(), credit.clone()))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let group = Pid::from_raw(i32::try_from(pid).unwrap_or(0));
    let deadline = spec.timeout.map(|t| tokio::time::Instant::now() + t);
    let status = supervise(&mut child, readers, group, deadline, &credit, &mut cmds).await;
    let ending = match status.exit {
        Ok(s) => ending_of(s),
        Err(e) => Ending::Error(format!("waiting for the command failed: {e}")),
    };
    let exit = Exit { ending, timed_out: status.timed_out, duration: started.elapsed() };
    let _ = out.send(closed_frame(channel, &exit)).await;
}

/// The command for `argv`, or for the ask handler under `sh -c` (stdin piped for the text),
/// with pipes for its output, in its own process group; and the program's name for messages.
pub(super) fn command_for(
    argv: &[String],
    ask_handler: Option<&str>,
    env: impl IntoIterator<Item = (impl AsRef<std::ffi::OsStr>, impl AsRef<std::ffi::OsStr>)>,
) -> (Command, String) {
    let (mut command, program) = match (ask_handler, argv.split_first()) {
        (Some(handler), _) => {
            let mut command = Command::new("sh");
            command.arg("-c").arg(handler).stdin(std::process::Stdio::piped());
            (command, "sh".to_string())
        }
        (None, Some((program, args))) => {
            let mut command = Command::new(program);
            command.args(args).stdin(std::process::Stdio::null());
            (command, program.clone())
        }
        (None, None) => (Command::new(""), String::new()),
    };
    command
        .envs(env)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    (command, program)
}

/// Writes an ask's text to the handler's stdin in its own task: a handler that never reads
/// its stdin must not hold up its output; the write ends (broken pipe) once the handler exits.
/// A line-reading handler gets a whole line: the text ends with a newline.
pub(super) fn feed_stdin(child: &mut tokio::process::Child, ask: &str) {
    let Some(mut stdin) = child.stdin.take() else {
        return;
    };
    let mut text = ask.as_bytes().to_vec();
    if text.last() != Some(&b'\n') {
        text.push(b'\n');
    }
    tokio::spawn(async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, &text).await;
    });
}

/// How a supervised command ended.
struct Supervised {
    exit: std::io::Result<std::process::ExitStatus>,
    timed_out: bool,
}

/// Waits for the command AND its output: both the process's exit and the end of its pipes,
/// which background children may hold open after it exits. The timeout, signals and the
/// consumer leaving apply to the whole process group until both are over.
async fn supervise(
    child: &mut tokio::process::Child,
    readers: Vec<tokio::task::JoinHandle<()>>,
    group: Pid,
    deadline: Option<tokio::time::Instant>,
    credit: &Semaphore,
    cmds: &mut mpsc::UnboundedReceiver<Cmd>,
) -> Supervised {
    let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    let drained = async move {
        for reader in readers {
            let _ = reader.await;
        }
    };
    tokio::pin!(drained);
    let (mut exit, mut is_drained, mut timed_out, mut cmds_open) = (None, false, false, true);
    let mut give_up = None;
    while exit.is_none() || !is_drained {
        tokio::select! {
            status = child.wait(), if exit.is_none() => exit = Some(status),
            _ = &mut drained, if !is_drained => is_drained = true,
            cmd = cmds.recv(), if cmds_open => match cmd {
                Some(Cmd::Signal(signo)) => signal_group(group, signo),
                Some(Cmd::Close | Cmd::Revoke) | None => {
                    // The consumer left (or its grant ended): nobody will grant credit or read output any more.
                    cmds_open = false;
                    signal_group(group, libc::SIGKILL);
                    credit.close();
                    give_up.get_or_insert(tokio::time::Instant::now() + DRAIN_AFTER_KILL);
                }
                Some(_) => {}
            },
            _ = sleep_until(deadline), if !timed_out => {
                timed_out = true;
                signal_group(group, libc::SIGKILL);
                give_up.get_or_insert(tokio::time::Instant::now() + DRAIN_AFTER_KILL);
            }
            _ = sleep_until(give_up), if give_up.is_some() => {
                // Something outside the group still holds the pipes: stop reading them.
                give_up = None;
                aborts.iter().for_each(|a| a.abort());
            }
        }
    }
    let exit = exit.unwrap_or_else(|| Err(std::io::Error::other("the command was not waited for")));
    Supervised { exit, timed_out }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

pub(super) fn signal_group(group: Pid, signo: i32) {
    if group.as_raw() <= 0 {
        return;
    }
    if let Ok(sig) = Signal::try_from(signo) {
        let _ = killpg(group, sig);
    }
}

pub(super) fn ending_of(status: std::process::ExitStatus) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ending::Code(code),
        (None, Some(sig)) => Ending::Signal(sig),
        (None, None) => Ending::Error("the command ended without a status".into()),
    }
}

/// Like a shell: 127 when the program does not exist, 126 when it cannot be run; and the
/// message for stderr.
pub(super) fn spawn_refusal(program: &str, e: &std::io::Error) -> (i32, String) {
    let (code, why) = match e.kind() {
        std::io::ErrorKind::NotFound => (127, "command not found"),
        std::io::ErrorKind::PermissionDenied => (126, "permission denied"),
        _ => (126, "cannot run"),
    };
    (code, format!("cmdop: {program}: {why} ({e})\n"))
}

async fn spawn_failed(channel: u64, program: &str, e: std::io::Error, out: &Out) {
    let (code, msg) = spawn_refusal(program, &e);
    let _ = out.send(opened_frame(channel, 0, 0, None)).await;
    let _ = out.send(output_frame(channel, OutputStream::Stderr, 0, msg.into_bytes().into())).await;
    let _ = out.send(closed_at_once_frame(channel, Ending::Code(code))).await;
}

/// Reads a pipe to its end, sending each chunk only once it holds credit for it; while it
/// waits the pipe is not read, so the program blocks on a full pipe.
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    channel: u64,
    stream: OutputStream,
    chunk: usize,
    out: Out,
    credit: Arc<Semaphore>,
) {
    let mut offset = 0u64;
    let mut buf = vec![0u8; chunk];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let Ok(permit) = credit.acquire_many(n as u32).await else {
            return;
        };
        permit.forget();
        let data = bytes::Bytes::copy_from_slice(&buf[..n]);
        if send_output(&out, channel, stream, offset, data).await.is_err() {
            return;
        }
        offset += n as u64;
    }
}
