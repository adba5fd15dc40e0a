//! Draining on shutdown, for the streams that never end by themselves: every gRPC response
//! body of the tonic services (CLI attaches and execs) ends with `UNAVAILABLE` "server
//! shutting down" trailers the moment the server starts stopping, so CLIs resume (and agents,
//! whose streams end the same way from `relay::wire`, reconnect at once, to another node behind
//! the balancer) instead of finding out when the connection is cut. Browser sockets get their
//! notice and close 1001 from their own handlers.

use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Response};
use bytes::Bytes;
use http_body::Frame;
use tokio::sync::watch;

use crate::sys::task::WhenWoken;

/// The `grpc-message` of the trailers, which agents recognise.
pub(crate) const SHUTTING_DOWN: &str = crate::core::wire::SERVER_SHUTTING_DOWN;

/// Wraps gRPC responses so they end when `stopping` turns true.
pub(crate) fn end_grpc_on_stop(stopping: watch::Receiver<bool>, resp: Response<Body>) -> Response<Body> {
    let grpc = resp.headers().get("content-type").is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    if !grpc {
        return resp;
    }
    resp.map(|inner| Body::new(UntilStopping { inner, stop: WhenWoken::new(stopped(stopping)), done: false }))
}

async fn stopped(mut stopping: watch::Receiver<bool>) {
    // An error means the server is gone: stopped as well.
    let _ = stopping.wait_for(|s| *s).await;
}

struct UntilStopping {
    inner: Body,
    /// Polled only when the watch woke it: the body is polled for every frame of an agent's
    /// stream (every keystroke), and the server stops once.
    stop: WhenWoken<'static, ()>,
    done: bool,
}

impl http_body::Body for UntilStopping {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        if self.done {
            return Poll::Ready(None);
        }
        if Pin::new(&mut self.stop).poll(cx).is_ready() {
            self.done = true;
            let mut trailers = HeaderMap::new();
            trailers.insert("grpc-status", HeaderValue::from_static("14")); // UNAVAILABLE
            trailers.insert("grpc-message", HeaderValue::from_static(SHUTTING_DOWN));
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.done = true;
        }
        polled
    }
}
