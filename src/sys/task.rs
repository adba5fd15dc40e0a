//! Tasks tied to their owner: a spawned task that ends when the value holding it is dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
}
