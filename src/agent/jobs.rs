//! Jobs: detached runs (a command or an ask) started by `SessionQuery.job`. A job belongs to
//! no channel or stream, so it keeps running when its caller gives up or the relay restarts;
//! its output goes to two bounded rings that callers page through by absolute offset.
//!
//! Bounds: `KEPT_BYTES` per stream (oldest bytes dropped first), `MAX_JOBS` per agent (the
//! oldest finished job is evicted first; with every job running, a new one is refused), and
//! `DEFAULT_LIMIT` of run time unless the caller gives a timeout.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::exec::{DRAIN_AFTER_KILL, command_for, ending_of, feed_stdin, signal_group, spawn_refusal};
use super::password::Gate;
use crate::core::session::Ending;
use crate::core::sync::lock;
use crate::proto::{self, job_query};

/// Output kept per stream of a job: the last 2 MiB.
const KEPT_BYTES: usize = 2 << 20;
/// Jobs one agent keeps, running or finished: 64.
const MAX_JOBS: usize = 64;
/// Run time of a job whose caller set no timeout: 24 hours.
const DEFAULT_LIMIT: Duration = Duration::from_secs(24 * 3600);
/// Longest wait a query may ask for: 1 hour (the relay waits this plus its query timeout).
const MAX_WAIT: Duration = Duration::from_secs(3600);
/// Most bytes of each stream in one answer: 1 MiB (two streams stay under gRPC's 4 MiB).
const MAX_PAGE_BYTES: usize = 1 << 20;
/// Read size of the pipes.
const READ_BYTES: usize = 16 << 10;

/// The agent's jobs; cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct Jobs {
    jobs: Arc<Mutex<VecDeque<Arc<Job>>>>,
}

/// One job: what it runs, for whom, and its output so far.
struct Job {
    id: String,
    principal: String,
    command: Vec<String>,
    ask: bool,
    started: Instant,
    started_unix_ms: u64,
    group: Mutex<Option<Pid>>,
    state: Mutex<Output>,
    done: watch::Sender<bool>,
}

/// A job's output rings and, once over, how it ended.
#[derive(Default)]
struct Output {
    stdout: Ring,
    stderr: Ring,
    end: Option<End>,
    cancelled: bool,
}

struct End {
    ending: Ending,
    timed_out: bool,
    duration: Duration,
}

/// The last `KEPT_BYTES` of a stream, addressed by absolute offset.
#[derive(Default)]
struct Ring {
    bytes: VecDeque<u8>,
    /// Offset of `bytes[0]`.
    start: u64,
}

impl Ring {
    fn push(&mut self, data: &[u8]) {
        self.bytes.extend(data);
        let over = self.bytes.len().saturating_sub(KEPT_BYTES);
        self.bytes.drain(..over);
        self.start += over as u64;
    }

    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Up to `max` bytes from `from` (at least `start`).
    fn read(&self, from: u64, max: usize) -> Vec<u8> {
        let skip = usize::try_from(from.saturating_sub(self.start)).unwrap_or(usize::MAX).min(self.bytes.len());
        self.bytes.iter().skip(skip).take(max).copied().collect()
    }
}

impl Jobs {
    /// Answers one job query: starts, reads or cancels a job.
    pub(crate) async fn answer(
        &self,
        request: u64,
        q: proto::JobQuery,
        gate: &Gate,
        asks: Option<&str>,
    ) -> proto::SessionReply {
        let mut reply = proto::SessionReply { request, ..Default::default() };
        let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
        let page = (q.offset, (q.max_bytes as usize).min(MAX_PAGE_BYTES));
        let job = match q.op {
            Some(job_query::Op::Start(start)) => {
                if let Err(denial) = gate.admit(&q.principal, &start.attach_token) {
                    reply.denied = Some(crate::core::convert::denial_to_wire(denial));
                    return reply;
                }
                match self.start(&q.principal, start, asks) {
                    Ok(job) => job,
                    Err(Refusal::NoAskHandler) => {
                        reply.no_ask_handler = true;
                        return reply;
                    }
                    Err(Refusal::Other(why)) => {
                        reply.error = why;
                        return reply;
                    }
                }
            }
            Some(job_query::Op::Status(id)) => match self.find(&id, &q.principal) {
                Ok(job) => job,
                Err(why) => return refused(reply, why),
            },
            Some(job_query::Op::Output(id)) => match self.find(&id, &q.principal) {
                Ok(job) => {
                    reply.job = Some(job.report(page.0, page.1));
                    return reply;
                }
                Err(why) => return refused(reply, why),
            },
            Some(job_query::Op::Cancel(id)) => match self.find(&id, &q.principal) {
                Ok(job) => {
                    job.cancel();
                    // The kill is immediate; give the supervisor a moment to record the end.
                    job.wait(DRAIN_AFTER_KILL).await;
                    job
                }
                Err(why) => return refused(reply, why),
            },
            None => return refused(reply, "empty job query".into()),
        };
        job.wait(wait).await;
        reply.job = Some(job.report(page.0, page.1));
        reply
    }

    /// Starts a job and registers it, evicting the oldest finished job when full.
    fn start(&self, principal: &str, start: proto::JobStart, asks: Option<&str>) -> Result<Arc<Job>, Refusal> {
        let ask = start.kind() == proto::SessionKind::Ask;
        let handler = match (ask, asks) {
            (true, None) => return Err(Refusal::NoAskHandler),
            (true, Some(h)) => Some(h),
            (false, _) if start.argv.first().is_none_or(|a| a.is_empty()) => {
                return Err(Refusal::Other("no command given".into()));
            }
            (false, _) => None,
        };
        self.make_room()?;
        let (done, _) = watch::channel(false);
        let job = Arc::new(Job {
            id: uuid::Uuid::new_v4().simple().to_string()[..12].to_string(),
            principal: principal.to_string(),
            command: if ask { vec![start.ask.clone()] } else { start.argv.clone() },
            ask,
            started: Instant::now(),
            started_unix_ms: u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                .unwrap_or(0),
            group: Mutex::new(None),
            state: Mutex::new(Output::default()),
            done,
        });
        lock(&self.jobs).push_back(job.clone());
        tokio::spawn(supervise(job.clone(), start, handler.map(str::to_string)));
        Ok(job)
    }

    /// Evicts the oldest finished job when the registry is full; refuses when all run.
    fn make_room(&self) -> Result<(), Refusal> {
        let mut jobs = lock(&self.jobs);
        if jobs.len() < MAX_JOBS {
            return Ok(());
        }
        match jobs.iter().position(|j| lock(&j.state).end.is_some()) {
            Some(i) => {
                jobs.remove(i);
                Ok(())
            }
            None => Err(Refusal::Other(format!(
                "this machine already runs {MAX_JOBS} jobs: cancel one (`cmdop connect job cancel ID`) or wait for one to end"
            ))),
        }
    }

    fn find(&self, id: &str, principal: &str) -> Result<Arc<Job>, String> {
        lock(&self.jobs).iter().find(|j| j.id == id && j.principal == principal).cloned().ok_or_else(|| {
            format!(
                "no job {id:?}: it was started by someone else, never existed, or was evicted (a machine keeps its {MAX_JOBS} newest jobs)"
            )
        })
    }
}

enum Refusal {
    NoAskHandler,
    Other(String),
}

/// `reply` carrying the agent's refusal.
fn refused(mut reply: proto::SessionReply, why: String) -> proto::SessionReply {
    reply.error = why;
    reply
}

impl Job {
    /// Waits until the job ends or `limit` passes.
    async fn wait(&self, limit: Duration) {
        let mut rx = self.done.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|d| *d)).await;
    }

    fn cancel(&self) {
        let mut state = lock(&self.state);
        if state.end.is_some() {
            return;
        }
        state.cancelled = true;
        if let Some(group) = *lock(&self.group) {
            signal_group(group, libc::SIGKILL);
        }
    }

    /// The job's state and a page of each stream from `offset`.
    fn report(&self, offset: u64, max: usize) -> proto::JobReport {
        let state = lock(&self.state);
        let from = offset.max(state.stdout.start).max(state.stderr.start);
        let (stdout, stderr) = (state.stdout.read(from, max), state.stderr.read(from, max));
        let next_offset = from + stdout.len().max(stderr.len()) as u64;
        let running = state.end.is_none();
        let has_more = running || state.stdout.end() > next_offset || state.stderr.end() > next_offset;
        let (job_state, exit_code, signal, timed_out, duration) = match &state.end {
            None => (proto::JobState::Running, -1, 0, false, self.started.elapsed()),
            Some(end) => {
                let (code, signal) = match end.ending {
                    Ending::Code(c) => (c, 0),
                    Ending::Signal(s) => (-1, s),
                    _ => (-1, 0),
                };
                let job_state = if state.cancelled { proto::JobState::Cancelled } else { proto::JobState::Exited };
                (job_state, code, signal, end.timed_out, end.duration)
            }
        };
        proto::JobReport {
            job_id: self.id.clone(),
            state: job_state as i32,
            exit_code,
            signal,
            timed_out,
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            started_unix_ms: self.started_unix_ms,
            command: self.command.clone(),
            ask: self.ask,
            offset: from,
            stdout: stdout.into(),
            stderr: stderr.into(),
            next_offset,
            has_more,
            stdout_bytes: state.stdout.end(),
            stderr_bytes: state.stderr.end(),
            dropped: from - offset.min(from),
            ..Default::default()
        }
    }

    fn finish(&self, ending: Ending, timed_out: bool) {
        lock(&self.state).end = Some(End { ending, timed_out, duration: self.started.elapsed() });
        self.done.send_replace(true);
    }
}

/// Runs the job's process to its end: output into the rings, killed at its deadline.
async fn supervise(job: Arc<Job>, start: proto::JobStart, handler: Option<String>) {
    let (mut command, program) = command_for(&start.argv, handler.as_deref(), &start.env);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let (code, message) = spawn_refusal(&program, &e);
            lock(&job.state).stderr.push(message.as_bytes());
            return job.finish(Ending::Code(code), false);
        }
    };
    if handler.is_some() {
        feed_stdin(&mut child, &start.ask);
    }
    let group = Pid::from_raw(child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0));
    *lock(&job.group) = Some(group);
    let readers: Vec<_> = [
        child.stdout.take().map(|r| tokio::spawn(collect(r, job.clone(), false))),
        child.stderr.take().map(|r| tokio::spawn(collect(r, job.clone(), true))),
    ]
    .into_iter()
    .flatten()
    .collect();
    let limit = match start.timeout_ms {
        0 => DEFAULT_LIMIT,
        ms => Duration::from_millis(ms),
    };
    let (status, timed_out) = tokio::select! {
        status = child.wait() => (status, false),
        _ = tokio::time::sleep(limit) => {
            signal_group(group, libc::SIGKILL);
            (child.wait().await, true)
        }
    };
    // Background children may hold the pipes: read on briefly, then give up on them.
    let aborts: Vec<_> = readers.iter().map(|r| r.abort_handle()).collect();
    let drained = async {
        for r in readers {
            let _ = r.await;
        }
    };
    if tokio::time::timeout(DRAIN_AFTER_KILL, drained).await.is_err() {
        aborts.iter().for_each(|a| a.abort());
    }
    let ending = match status {
        Ok(s) => ending_of(s),
        Err(e) => Ending::Error(format!("waiting for the command failed: {e}")),
    };
    job.finish(ending, timed_out);
}

/// Reads a pipe to its end into the job's ring; a full ring drops its oldest bytes.
async fn collect(mut pipe: impl AsyncRead + Unpin, job: Arc<Job>, stderr: bool) {
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut state = lock(&job.state);
        let ring = if stderr { &mut state.stderr } else { &mut state.stdout };
        ring.push(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, finished: bool) -> Arc<Job> {
        let job = Job {
            id: id.into(),
            principal: "user:x".into(),
            command: vec!["true".into()],
            ask: false,
            started: Instant::now(),
            started_unix_ms: 0,
            group: Mutex::new(None),
            state: Mutex::new(Output::default()),
            done: watch::channel(false).0,
        };
        if finished {
            job.finish(Ending::Code(0), false);
        }
        Arc::new(job)
    }

    #[test]
    fn a_full_registry_evicts_the_oldest_finished_job_and_refuses_when_all_run() {
        let jobs = Jobs::default();
        lock(&jobs.jobs).extend((0..MAX_JOBS).map(|i| job(&i.to_string(), i == 3 || i == 7)));
        assert!(jobs.make_room().is_ok());
        let ids: Vec<String> = lock(&jobs.jobs).iter().map(|j| j.id.clone()).collect();
        assert!(!ids.contains(&"3".to_string()) && ids.contains(&"7".to_string()), "the oldest finished goes first");
        lock(&jobs.jobs).push_back(job("new", false));
        assert!(jobs.make_room().is_ok(), "job 7 goes next");
        lock(&jobs.jobs).push_back(job("newer", false));
        assert!(matches!(jobs.make_room(), Err(Refusal::Other(why)) if why.contains("cancel one")));
        assert!(jobs.find("new", "user:x").is_ok());
        assert!(jobs.find("new", "user:y").is_err(), "a job answers only its starter");
    }

    #[test]
    fn a_ring_keeps_the_newest_bytes_at_their_offsets() {
        let mut ring = Ring::default();
        ring.push(&vec![b'a'; KEPT_BYTES]);
        ring.push(b"xyz");
        assert_eq!(ring.start, 3);
        assert_eq!(ring.end(), KEPT_BYTES as u64 + 3);
        assert_eq!(ring.read(KEPT_BYTES as u64, 10), b"xyz");
        assert_eq!(ring.read(0, 2), b"aa", "reads below the start begin at the start");
    }
}
