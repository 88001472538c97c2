//! One connection's life: when it is idle, when it must close (the node
//! stops, or it reaches its age), and a deadline for its first bytes. The
//! accept loop in [`super::listener`] serves each connection with these.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

/// One connection's requests in flight, when the latest one ended, and
/// whether it has reached its age.
pub(super) struct Activity {
    in_flight: AtomicUsize,
    since: std::sync::Mutex<tokio::time::Instant>,
    /// Past its age: its next HTTP/1 answer closes it.
    aged: AtomicBool,
    /// It has carried an HTTP/2 request.
    http2: AtomicBool,
    /// Told when an HTTP/2 request starts (a permit is kept if no one waits).
    http2_started: tokio::sync::Notify,
}

impl Activity {
    pub(super) fn new() -> Activity {
        Activity {
            in_flight: Default::default(),
            since: std::sync::Mutex::new(tokio::time::Instant::now()),
            aged: AtomicBool::new(false),
            http2: AtomicBool::new(false),
            http2_started: tokio::sync::Notify::new(),
        }
    }

    fn since(&self) -> tokio::time::Instant {
        *self.since.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection has reached its age.
    pub(super) fn aged(&self) -> bool {
        self.aged.load(Ordering::Relaxed)
    }

    /// Returns once the connection has carried an HTTP/2 request.
    async fn http2(&self) {
        while !self.http2.load(Ordering::Relaxed) {
            self.http2_started.notified().await;
        }
    }
}

/// A request in flight on its connection, until dropped (answered or
/// cancelled).
pub(super) struct Busy(Arc<Activity>);

impl Busy {
    pub(super) fn new(activity: &Arc<Activity>, version: http::Version) -> Busy {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        if version == http::Version::HTTP_2 && !activity.http2.swap(true, Ordering::Relaxed) {
            activity.http2_started.notify_one();
        }
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.since.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Returns once the connection has had no request in flight for `timeout`.
/// hyper closes an idle HTTP/1.1 connection itself (its header timeout); an
/// h2 connection it keeps open as long as the client answers its pings, so
/// a client could hold a connection slot without ever sending a request.
pub(super) async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        tokio::time::sleep_until(activity.since() + timeout).await;
        if activity.in_flight.load(Ordering::Relaxed) > 0 {
            // Busy: look again a timeout after the request ends.
            tokio::time::sleep(timeout).await;
            continue;
        }
        if activity.since().elapsed() >= timeout {
            return;
        }
    }
}

/// Returns when a connection is to be closed gracefully: when the node
/// stops, or when it has reached its age (±10%, so that the clients of a
/// node started at once do not all reconnect at once) if it speaks HTTP/2.
///
/// Past its age an HTTP/1 connection is closed by the `Connection: close`
/// of its next answer (the listener adds it when [`Activity::aged`]), never
/// while idle: an idle HTTP/1 connection closed by the server races the
/// client's next request, which is then lost on the wire (and a POST is not
/// retried). HTTP/2 has no such race (GOAWAY names the last stream taken).
/// A connection that stays idle closes by the idle timeout.
pub(super) async fn closing(
    mut stop: watch::Receiver<bool>,
    max_age: Option<Duration>,
    activity: &Activity,
) {
    let aged = async {
        let Some(age) = max_age else {
            return std::future::pending().await;
        };
        use std::hash::{BuildHasher as _, Hasher as _};
        // A random u64 from the standard library's per-process keys.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        tokio::time::sleep(age.mul_f64(0.9 + 0.2 * (random as f64 / u64::MAX as f64))).await;
        activity.aged.store(true, Ordering::Relaxed);
        activity.http2().await
    };
    tokio::select! {
        _ = stop.wait_for(|stop| *stop) => {}
        () = aged => {}
    }
}

/// A new connection's stream, with a deadline for its first bytes.
///
/// hyper reads a connection's first bytes to tell HTTP/1.1 from HTTP/2 (up
/// to the 24 bytes of the HTTP/2 preface) with no timeout of its own, and its
/// header timeout starts only after: a client that connects and sends
/// nothing, or only part of the preface, would hold a connection slot
/// forever. Once those bytes are in, hyper's own timeouts take over.
pub(super) struct FirstBytes<T> {
    inner: T,
    /// Bytes still to come before the deadline is off.
    wanted: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> FirstBytes<T> {
    /// The length of the HTTP/2 connection preface.
    const PREFACE: usize = 24;

    pub(super) fn new(inner: T, timeout: Duration) -> FirstBytes<T> {
        FirstBytes {
            inner,
            wanted: Self::PREFACE,
            deadline: Some(Box::pin(tokio::time::sleep(timeout))),
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FirstBytes<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let read = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.deadline.is_none() {
            return read;
        }
        match read {
            Poll::Ready(Ok(())) => {
                this.wanted = this.wanted.saturating_sub(buf.filled().len() - before);
                if this.wanted == 0 {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no request within the header timeout",
                ))),
                _ => Poll::Pending,
            },
            failed => failed,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FirstBytes<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
