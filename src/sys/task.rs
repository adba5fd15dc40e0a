//! Tasks tied to their owner: a spawned task that ends when the value holding it is dropped.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

use tokio::task::{JoinError, JoinHandle};

/// A spawned task aborted when this handle is dropped, so background work never outlives the
/// scope (or struct) that started it. Awaiting it waits for the task, as a `JoinHandle` does.
#[derive(Debug)]
pub(crate) struct AbortOnDrop<T>(JoinHandle<T>);

impl<T: Send + 'static> AbortOnDrop<T> {
    /// Spawns `task` on the current runtime.
    pub(crate) fn spawn(task: impl Future<Output = T> + Send + 'static) -> Self {
        Self(tokio::spawn(task))
    }

    /// Whether the task has ended (its result is then ready to await).
    pub(crate) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl<T> Future for AbortOnDrop<T> {
    type Output = Result<T, JoinError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

/// A future polled only at its first poll and after one of its own wakers fired since the last
/// one. `select!` polls every branch each time its task wakes; in a loop that wakes for every
/// keystroke's echo, branches that almost never resolve (a deadline, a revocation, a shutdown)
/// cost a timer or watch poll each time, about a tenth of the server's work per key
/// (docs/performance.md, issue 18). Behind this wrapper a branch that was not woken costs a
/// flag check. The inner future's wakers all go through one waker made once.
pub(crate) struct WhenWoken<'a, T> {
    inner: Pin<Box<dyn Future<Output = T> + Send + 'a>>,
    filter: WakeFilter,
}

impl<'a, T> WhenWoken<'a, T> {
    pub(crate) fn new(inner: impl Future<Output = T> + Send + 'a) -> Self {
        Self { inner: Box::pin(inner), filter: WakeFilter::new() }
    }
}

impl<T> Future for WhenWoken<'_, T> {
    type Output = T;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        let this = self.get_mut();
        let inner = &mut this.inner;
        this.filter.poll(cx, |cx| inner.as_mut().poll(cx))
    }
}

/// [`WhenWoken`] for a poll function that is called again after it was ready (a timer that
/// ticks, a stream): [`WakeFilter::poll`] runs it only at the first call, after one of the
/// wakers it was given fired, after it was ready (it may be ready again at once, and has not
/// registered a waker), or after [`WakeFilter::rearm`].
pub(crate) struct WakeFilter {
    signal: Arc<Signal>,
    waker: Waker,
}

/// Set by the inner future's waker; passes the wake-up on to the task polling the wrapper.
struct Signal {
    woken: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl Default for WakeFilter {
    fn default() -> Self {
        Self::new()
    }
}

impl WakeFilter {
    pub(crate) fn new() -> Self {
        let signal = Arc::new(Signal { woken: AtomicBool::new(true), task: AtomicWaker::new() });
        Self { waker: Waker::from(signal.clone()), signal }
    }

    /// Calls `poll` with this filter's waker if it is due (see the type), else is pending.
    pub(crate) fn poll<T>(&mut self, cx: &mut Context<'_>, poll: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        // Registered before the flag is taken: a wake-up in between is passed on, not lost.
        self.signal.task.register(cx.waker());
        if !self.signal.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let ready = poll(&mut Context::from_waker(&self.waker));
        if ready.is_ready() {
            self.signal.woken.store(true, Ordering::Release);
        }
        ready
    }

    /// Makes the next [`WakeFilter::poll`] call the poll function (what it polls was replaced).
    pub(crate) fn rearm(&self) {
        self.signal.woken.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::AbortOnDrop;

    #[tokio::test]
    async fn dropping_the_handle_ends_the_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = AbortOnDrop::spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await;
        });
        drop(task);
        assert!(rx.await.is_err(), "the task (and the sender it held) is gone");
    }

    #[tokio::test]
    async fn awaiting_the_handle_gives_the_result() {
        assert_eq!(AbortOnDrop::spawn(async { 7 }).await.unwrap(), 7);
    }

    #[tokio::test]
    async fn a_wrapped_branch_is_polled_only_when_woken_and_still_resolves() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use super::WhenWoken;

        let polls = Arc::new(AtomicUsize::new(0));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<u32>();
        let counted = {
            let polls = polls.clone();
            std::future::poll_fn(move |cx| {
                polls.fetch_add(1, Ordering::Relaxed);
                std::pin::Pin::new(&mut rx).poll(cx)
            })
        };
        let mut rare = WhenWoken::new(counted);
        let (busy_tx, mut busy) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..200 {
            busy_tx.send(i).unwrap();
        }
        let mut got = 0;
        while got < 200 {
            tokio::select! {
                Some(_) = busy.recv() => got += 1,
                _ = &mut rare => panic!("nothing was sent on the wrapped branch"),
            }
        }
        assert_eq!(polls.load(Ordering::Relaxed), 1, "polled once, at the first poll, then never woken");
        tx.send(7).unwrap();
        assert_eq!((&mut rare).await, Ok(7));
        assert_eq!(polls.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_filtered_poll_function_is_called_again_after_ready_and_when_woken_only() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        use super::WakeFilter;

        let calls = AtomicUsize::new(0);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u32>();
        let mut filter = WakeFilter::new();
        async fn next(
            filter: &mut WakeFilter,
            rx: &mut tokio::sync::mpsc::UnboundedReceiver<u32>,
            calls: &AtomicUsize,
        ) -> Option<u32> {
            std::future::poll_fn(|cx| {
                filter.poll(cx, |cx| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    rx.poll_recv(cx)
                })
            })
            .await
        }
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        assert_eq!(next(&mut filter, &mut rx, &calls).await, Some(1));
        assert_eq!(next(&mut filter, &mut rx, &calls).await, Some(2), "polled again after ready");
        let before = calls.load(Ordering::Relaxed);
        let (busy_tx, mut busy) = tokio::sync::mpsc::unbounded_channel();
        for i in 0..100 {
            busy_tx.send(i).unwrap();
        }
        let mut got = 0;
        while got < 100 {
            tokio::select! {
                Some(_) = busy.recv() => got += 1,
                _ = next(&mut filter, &mut rx, &calls) => panic!("nothing was sent"),
            }
        }
        assert_eq!(calls.load(Ordering::Relaxed), before + 1, "called once (pending), then never woken");
        tx.send(3).unwrap();
        assert_eq!(next(&mut filter, &mut rx, &calls).await, Some(3));
    }
}
