//! Password checks (argon2id: 19 MiB and tens of milliseconds each) on a few dedicated
//! threads, each with its working memory allocated once, so a burst of sign-ins or unlocks
//! queues here instead of taking 19 MiB per request (16 at once took a fresh server from
//! 13 MB to 306 MB).

use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, oneshot};

use crate::core::secret::Secret;

/// Password checks running at once per process (each on its own thread): 2, about 38 MiB.
pub(crate) const CONCURRENT_CHECKS: usize = 2;
/// Checks waiting for a thread before callers wait to enqueue: 256.
const QUEUE: usize = 256;

struct Job {
    password: Secret<String>,
    phc: Option<String>,
    answer: oneshot::Sender<bool>,
}

type Queue = mpsc::Sender<Job>;

/// The queue to the checking threads, started on first use.
fn queue() -> Option<&'static Queue> {
    static QUEUE_TX: OnceLock<Option<Queue>> = OnceLock::new();
    QUEUE_TX.get_or_init(start).as_ref()
}

fn start() -> Option<Queue> {
    let (tx, rx) = mpsc::channel::<Job>(QUEUE);
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..CONCURRENT_CHECKS {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || work(&rx));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a password-checking thread");
            return None;
        }
    }
    Some(tx)
}

fn work(rx: &Mutex<mpsc::Receiver<Job>>) {
    let mut memory = Vec::new();
    loop {
        // The lock is held only while waiting for the next job, never while checking.
        let Some(job) = crate::core::sync::lock(rx).blocking_recv() else {
            return;
        };
        let right = crate::core::passwords::verify_or_dummy(job.password.expose(), job.phc.as_deref(), &mut memory);
        let _ = job.answer.send(right);
    }
}

/// Whether `password` matches `phc` (see `core::passwords::verify_or_dummy`: no hash means an
/// unknown account, checked against a dummy at the same cost and refused). Fails closed.
pub(crate) async fn verify(password: Secret<String>, phc: Option<String>) -> bool {
    let Some(queue) = queue() else {
        return false;
    };
    let (answer, answered) = oneshot::channel();
    if queue.send(Job { password, phc, answer }).await.is_err() {
        return false;
    }
    answered.await.unwrap_or(false)
}
