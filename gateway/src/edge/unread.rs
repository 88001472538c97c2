//! A request body its handler did not read to its end (a refusal's: the
//! node need not read what it refuses), and the keep-alive that depends on it.
//!
//! On HTTP/1, hyper closes a connection after the answer when the request
//! body was not read to its end: when the handler drops the body, its
//! dispatcher tries one read of what is left and otherwise closes the read
//! side. The answer's head is written before that, so whether it said
//! keep-alive depended on how the body's bytes arrived, and a client reusing
//! the connection could lose its next request ("remote end closed connection
//! without response"). So a handler only borrows the body ([`Lent`]); what it
//! left unread is discarded while it is small and quick, and otherwise the
//! answer says `Connection: close` (which hyper honours by closing after it).
//! Draining (hyper's graceful shutdown) and a connection's age (the
//! listener) already put `Connection: close` on answers, and GOAWAY on HTTP/2.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use http::request::Parts;
use http::{Response, StatusCode};
use hyper::body::{Body as _, Incoming};

/// What is left of an unread HTTP/1 body is read and discarded up to this
/// many bytes, for at most [`DISCARD_TIME`] (or the body timeout), so that
/// the connection can carry the next request.
const DISCARD_BYTES: u64 = 64 << 10;
const DISCARD_TIME: Duration = Duration::from_millis(500);

/// A request body lent to its handler: notes whether the handler read it
/// to its end, or could not read it (then hyper closes the connection).
pub struct Lent<'a> {
    body: &'a mut Incoming,
    ended: bool,
    failed: bool,
}

impl<'a> Lent<'a> {
    pub fn new(body: &'a mut Incoming) -> Lent<'a> {
        Lent {
            body,
            ended: false,
            failed: false,
        }
    }

    /// How the handler left the body.
    pub fn returned(self) -> Read {
        Read {
            ended: self.ended || self.body.is_end_stream(),
            failed: self.failed,
        }
    }
}

impl hyper::body::Body for Lent<'_> {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut *this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.ended = true,
            Poll::Ready(Some(Err(_))) => this.failed = true,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// How a handler left the body it borrowed.
#[derive(Debug, Clone, Copy)]
pub struct Read {
    /// Read to its end (or there was none).
    ended: bool,
    /// It could not be read (hyper closes the connection).
    failed: bool,
}

/// What of a request decides whether its unread body can be settled:
/// taken from its head before the handler gets the request.
#[derive(Debug, Clone, Copy)]
pub struct Unread {
    http1: bool,
    /// The client waits for `100 Continue` before it sends the body (and
    /// sends it only if asked).
    expects_continue: bool,
}

impl Unread {
    pub fn of(request: &Parts) -> Unread {
        Unread {
            http1: request.version < http::Version::HTTP_2,
            expects_continue: request
                .headers
                .get(http::header::EXPECT)
                .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue")),
        }
    }

    /// Settles what the handler left of an HTTP/1 request's body before its
    /// answer goes out: the rest is discarded when small and quick (the
    /// connection stays open), else the answer says `Connection: close`. Not
    /// discarded: a body that could not be read, one that did not come in
    /// time (a 408: it will not now), or one that waits for `100 Continue`.
    pub async fn settle(
        self,
        body: &mut Incoming,
        read: Read,
        response: &mut Response<crate::respond::Body>,
        body_timeout: Duration,
    ) {
        if !self.http1 || read.ended {
            return;
        }
        let kept = !read.failed
            && response.status() != StatusCode::REQUEST_TIMEOUT
            && !self.expects_continue
            && discard(body, DISCARD_TIME.min(body_timeout)).await;
        if !kept {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
}

/// Reads and discards what is left of a request body, if it is at most
/// [`DISCARD_BYTES`] and ends within `time`: whether it ended (then the
/// connection can carry the next request).
async fn discard(body: &mut Incoming, time: Duration) -> bool {
    use http_body_util::BodyExt as _;
    // What is left of a body of known length (a chunked one says 0).
    if body.size_hint().lower() > DISCARD_BYTES {
        return false;
    }
    let read = async {
        let mut left = DISCARD_BYTES;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                return false;
            };
            let len = frame.data_ref().map_or(0, |data| data.len() as u64);
            match left.checked_sub(len) {
                Some(still) => left = still,
                None => return false,
            }
        }
        true
    };
    tokio::time::timeout(time, read).await.unwrap_or(false)
}
