//! The listeners: accept TCP (and TLS) connections, serve HTTP/1.1 and h2
//! on each, route requests, and shut down gracefully.
//!
//! Three listeners share one [`Gateway`]: plain HTTP and HTTPS take events;
//! the admin listener (loopback by default) answers health checks for
//! operators. On shutdown every listener stops accepting, in-flight requests
//! finish (bounded by a drain timeout), then the caller flushes the producer.

use std::convert::Infallible;
use std::future::Future as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{Method, Request, Response, StatusCode};
use hyper::body::{Body as _, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::auth::Tenants;
use crate::filter::host::FilterEngine;
use crate::geoip::GeoIp;
use crate::limit::{Admission, Unauthenticated};
use crate::metrics::Metrics;
use crate::produce::Producer;
use crate::respond::{self, Body, Reject, REQUEST_ID};
use crate::trace::RequestSampler;
use crate::{health, ingest, profile, reload};

/// Longest `X-Request-ID` taken from a client.
const MAX_REQUEST_ID: usize = 128;
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// What is left of an HTTP/1 request body its handler did not read (a
/// refusal's) is read and discarded up to this many bytes, for at most
/// [`DISCARD_TIME`] (or the body timeout), so that the connection can carry
/// the next request; a longer or slower body gets `Connection: close`.
const DISCARD_BYTES: u64 = 64 << 10;
const DISCARD_TIME: Duration = Duration::from_millis(500);

/// Everything a request needs, shared by every connection.
pub struct Gateway {
    /// Swapped whole on a config reload.
    pub tenants: ArcSwap<Tenants>,
    pub producer: Producer,
    pub geoip: Option<GeoIp>,
    pub trusted_proxies: Vec<IpNet>,
    pub body_timeout: Duration,
    pub admission: Arc<Admission>,
    pub unauthenticated: Option<Unauthenticated>,
    /// The file a reload reads.
    pub config_path: Option<PathBuf>,
    /// The config sections a reload does not apply, as at start.
    pub start_only: crate::reload::StartOnly,
    /// The Wasm engine of every tenant's filters.
    pub filters: Arc<FilterEngine>,
    pub metrics: Metrics,
    /// Samples requests before their spans are made (with
    /// `telemetry.traces = false`, none is: see `RequestSampler::decide`).
    pub sampler: RequestSampler,
}

/// The tenant a response was for, left by `ingest` for the request metrics.
#[derive(Clone)]
pub struct AnsweredFor(pub Arc<str>);

/// Connection-level limits of every listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Also the idle timeout: a connection with no request in flight for
    /// this long is closed (hyper does it on HTTP/1.1, [`idle`] on h2).
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// 0: no cap.
    pub max_connections_per_address: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub h2_max_concurrent_streams: u32,
    pub drain: Duration,
    /// `None`: connections live as long as their clients keep them.
    pub max_age: Option<Duration>,
}

impl ConnectionLimits {
    pub fn from_config(server: &crate::config::ServerConfig) -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            max_connections: server.max_connections,
            max_connections_per_address: server.max_connections_per_address,
            max_header_bytes: server.max_header_bytes,
            max_headers: server.max_headers,
            h2_max_concurrent_streams: server.h2_max_concurrent_streams,
            drain: Duration::from_millis(server.drain_timeout_ms),
            max_age: (server.max_connection_age_ms > 0)
                .then(|| Duration::from_millis(server.max_connection_age_ms)),
        }
    }
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    pub addr: SocketAddr,
    /// SHA-256 of the client certificate the TLS layer verified, if one was presented.
    pub client_cert: Option<[u8; 32]>,
}

impl Peer {
    pub fn plain(addr: SocketAddr) -> Peer {
        Peer {
            addr,
            client_cert: None,
        }
    }
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Events and health.
    Ingest,
    /// Health for operators.
    Admin,
}

/// A bound listener, ready to serve.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub role: Role,
}

/// Serves every listener until `shutdown` turns true, then drains for at most `drain`.
pub async fn serve(
    gateway: Arc<Gateway>,
    listeners: Vec<Listener>,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    // Slowloris and idle keep-alive: the header timeout covers both on HTTP/1.1.
    // Headers beyond max_header_bytes or max_headers get 431.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(limits.max_header_bytes as u32)
        .keep_alive_interval(Some(limits.header_timeout))
        .keep_alive_timeout(limits.header_timeout);
    let builder = Arc::new(builder);

    // One permit per open connection, per listener: at the cap, accepting
    // waits; when every permit is back, every connection has ended (the drain).
    let permits = limits.max_connections.min(u32::MAX as usize);
    let listeners: Vec<(Listener, Arc<Semaphore>)> = listeners
        .into_iter()
        .map(|listener| (listener, Arc::new(Semaphore::new(permits))))
        .collect();
    let open: Vec<Arc<Semaphore>> = listeners.iter().map(|(_, open)| open.clone()).collect();
    let per_address = limits.max_connections_per_address;

    // The accept loops run in this task; each connection is its own task,
    // which closes it gracefully when the node stops or it reaches its age.
    let accepting = listeners.into_iter().map(|(listener, connections)| {
        let (gateway, builder, mut stop) = (gateway.clone(), builder.clone(), shutdown.clone());
        let by_address = Arc::new(ByAddress::default());
        async move {
            loop {
                // At the connection cap, stop accepting: new clients wait in the kernel's queue.
                let permit = tokio::select! {
                    permit = connections.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    _ = stop.changed() => break,
                };
                let (stream, peer) = tokio::select! {
                    accepted = listener.tcp.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // Out of file descriptors and the like: back off, keep serving.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                    _ = stop.changed() => break,
                };
                // One address may hold only so many of the listener's
                // connections (trusted proxies carry many clients' and may
                // hold more): one host cannot take them all.
                let trusted = gateway.trusted_proxies.iter().any(|net| net.contains(&peer.ip()));
                let held = match (per_address, trusted) {
                    (0, _) | (_, true) => None,
                    (cap, false) => match by_address.take(peer.ip(), cap) {
                        Some(held) => Some(held),
                        None => {
                            tracing::debug!(%peer, cap, "connection refused: too many from this address");
                            continue;
                        }
                    },
                };
                let _ = stream.set_nodelay(true);
                let (gateway, builder, stop, tls, role) =
                    (gateway.clone(), builder.clone(), stop.clone(), listener.tls.clone(), listener.role);
                tokio::spawn(async move {
                    let _permit = permit;
                    let _held = held;
                    let _open = gateway.metrics.connection(role == Role::Admin);
                    let activity = Arc::new(Activity::new());
                    let service = |peer: Peer| {
                        let activity = activity.clone();
                        service_fn(move |request| {
                            let (gateway, busy) = (gateway.clone(), Busy::new(&activity));
                            async move {
                                let response = route(&gateway, request, peer, role).await;
                                drop(busy);
                                Ok::<_, Infallible>(response)
                            }
                        })
                    };
                    // Serves the connection until it ends; closed gracefully
                    // (after its requests in flight; HTTP/2: GOAWAY) when
                    // `closing` returns or it has been idle for the header
                    // timeout, and dropped if it is still open `drain` later
                    // (an h2 client can keep a closing connection open by
                    // never answering the closing PING).
                    macro_rules! serve {
                        ($stream:expr, $service:expr) => {{
                            let stream = FirstBytes::new($stream, limits.header_timeout);
                            let connection = builder.serve_connection(TokioIo::new(stream), $service);
                            let mut connection = std::pin::pin!(connection);
                            let (closing, idle) = (closing(stop, limits.max_age), idle(&activity, limits.header_timeout));
                            let mut close = std::pin::pin!(async {
                                tokio::select! { () = closing => {}, () = idle => {} }
                            });
                            let mut gone = std::pin::pin!(tokio::time::sleep(Duration::ZERO));
                            let mut closed = false;
                            loop {
                                tokio::select! {
                                    result = connection.as_mut() => break result,
                                    () = &mut close, if !closed => {
                                        connection.as_mut().graceful_shutdown();
                                        gone.as_mut().reset(tokio::time::Instant::now() + limits.drain);
                                        closed = true;
                                    }
                                    () = &mut gone, if closed => break Ok(()),
                                }
                            }
                        }};
                    }
                    let result = match tls {
                        Some(acceptor) => match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => {
                                let client_cert = stream
                                    .get_ref()
                                    .1
                                    .peer_certificates()
                                    .and_then(|chain| chain.first())
                                    .map(|leaf| Sha256::digest(leaf.as_ref()).into());
                                serve!(stream, service(Peer { addr: peer, client_cert }))
                            }
                            Ok(Err(e)) => return tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                            Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                        },
                        None => serve!(stream, service(Peer::plain(peer))),
                    };
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
        }
    });
    futures::future::join_all(accepting).await;
    let _ = shutdown.wait_for(|stop| *stop).await;
    tracing::info!(
        drain_ms = limits.drain.as_millis() as u64,
        "stopped accepting; draining in-flight requests"
    );
    let drained = async {
        for open in &open {
            let _ = open.acquire_many(permits as u32).await;
        }
    };
    if tokio::time::timeout(limits.drain, drained).await.is_err() {
        tracing::warn!("drain timeout passed with requests still in flight");
    }
}

/// The open connections of one listener per client address (see
/// [`crate::limit::client_network`]).
#[derive(Default)]
struct ByAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl ByAddress {
    /// A place for one more connection from `ip`, if it holds fewer than `cap`.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize) -> Option<Held> {
        let network = crate::limit::client_network(ip);
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(network).or_default();
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(Held(self.clone(), network))
    }
}

/// One connection's place in [`ByAddress`], given back when dropped.
struct Held(Arc<ByAddress>, std::net::IpAddr);

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self.0 .0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.1) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// One connection's requests in flight, and when the latest one ended.
struct Activity {
    in_flight: std::sync::atomic::AtomicUsize,
    since: std::sync::Mutex<tokio::time::Instant>,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            in_flight: Default::default(),
            since: std::sync::Mutex::new(tokio::time::Instant::now()),
        }
    }

    fn since(&self) -> tokio::time::Instant {
        *self.since.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A request in flight on its connection, until dropped (answered or
/// cancelled).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Busy {
        activity
            .in_flight
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Busy(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.since.lock().unwrap_or_else(|e| e.into_inner()) = tokio::time::Instant::now();
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Returns once the connection has had no request in flight for `timeout`.
/// hyper closes an idle HTTP/1.1 connection itself (its header timeout); an
/// h2 connection it keeps open as long as the client answers its pings, so
/// a client could hold a connection slot without ever sending a request.
async fn idle(activity: &Activity, timeout: Duration) {
    loop {
        tokio::time::sleep_until(activity.since() + timeout).await;
        if activity
            .in_flight
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            // Busy: look again a timeout after the request ends.
            tokio::time::sleep(timeout).await;
            continue;
        }
        if activity.since().elapsed() >= timeout {
            return;
        }
    }
}

/// Returns when a connection is to be closed: when the node stops, or when
/// it reaches its age (±10%, so that the clients of a node started at once
/// do not all reconnect at once).
async fn closing(mut stop: watch::Receiver<bool>, max_age: Option<Duration>) {
    let age = async {
        let Some(age) = max_age else {
            return std::future::pending().await;
        };
        use std::hash::{BuildHasher as _, Hasher as _};
        // A random u64 from the standard library's per-process keys.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        tokio::time::sleep(age.mul_f64(0.9 + 0.2 * (random as f64 / u64::MAX as f64))).await
    };
    tokio::select! {
        _ = stop.wait_for(|stop| *stop) => {}
        () = age => {}
    }
}

/// A new connection's stream, with a deadline for its first bytes.
///
/// hyper reads a connection's first bytes to tell HTTP/1.1 from HTTP/2 (up
/// to the 24 bytes of the HTTP/2 preface) with no timeout of its own, and its
/// header timeout starts only after: a client that connects and sends
/// nothing, or only part of the preface, would hold a connection slot
/// forever. Once those bytes are in, hyper's own timeouts take over.
struct FirstBytes<T> {
    inner: T,
    /// Bytes still to come before the deadline is off.
    wanted: usize,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> FirstBytes<T> {
    /// The length of the HTTP/2 connection preface.
    const PREFACE: usize = 24;

    fn new(inner: T, timeout: Duration) -> FirstBytes<T> {
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

/// Routes one request and records its metrics.
///
/// On HTTP/1, hyper closes a connection after the answer when the request
/// body was not read to its end (a refusal's body, which the node need not
/// read), and whether the answer said so depends on how the body's bytes
/// arrived: a client reusing the connection would lose its next request. So
/// the handler only borrows the body, and what it left unread is discarded
/// here while it is small and quick ([`discard`]); otherwise the answer says
/// `Connection: close` (and hyper closes the connection after it).
async fn route(
    gateway: &Gateway,
    request: Request<Incoming>,
    peer: Peer,
    role: Role,
) -> Response<Body> {
    let started = std::time::Instant::now();
    let label = match (role, request.uri().path()) {
        (Role::Ingest, "/v1/batch") => "/v1/batch",
        (_, "/healthz") => "/healthz",
        (_, "/readyz") => "/readyz",
        (Role::Admin, "/metrics") => "/metrics",
        (Role::Admin, "/admin/reload") => "/admin/reload",
        (Role::Admin, "/debug/pprof/profile") => "/debug/pprof/profile",
        _ => "other",
    };
    let (parts, mut body) = request.into_parts();
    let http1 = parts.version < http::Version::HTTP_2;
    let expects_continue = parts
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut lent = Lent {
        body: &mut body,
        ended: false,
        failed: false,
    };
    let mut response =
        route_inner(gateway, Request::from_parts(parts, &mut lent), peer, role).await;
    let (read_to_end, failed) = (lent.ended, lent.failed);
    let ended = read_to_end || body.is_end_stream();
    if http1 && !ended {
        // Not when the body could not be read (hyper closes the connection),
        // did not come in time (it will not now), or waits for `100
        // Continue` (the client sends it only if asked).
        let kept = !failed
            && response.status() != StatusCode::REQUEST_TIMEOUT
            && !expects_continue
            && discard(&mut body, DISCARD_TIME.min(gateway.body_timeout)).await;
        if !kept {
            response.headers_mut().insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("close"),
            );
        }
    }
    let tenant = response
        .extensions()
        .get::<AnsweredFor>()
        .map(|t| t.0.clone());
    gateway.metrics.request(
        label,
        response.status().as_u16(),
        tenant,
        started.elapsed().as_secs_f64(),
    );
    response
}

/// A request body lent to its handler: notes whether the handler read it
/// to its end, or could not read it (then hyper closes the connection).
struct Lent<'a> {
    body: &'a mut Incoming,
    ended: bool,
    failed: bool,
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

async fn route_inner<B>(
    gateway: &Gateway,
    request: Request<B>,
    peer: Peer,
    role: Role,
) -> Response<Body>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let request_id = request_id(&request);
    let path = request.uri().path();
    match (role, path, request.method()) {
        (Role::Ingest, "/v1/batch", &Method::POST) => {
            ingest::ingest(gateway, request, peer, &request_id).await
        }
        (_, "/healthz", &Method::GET) => health::healthz(gateway, &request_id, role == Role::Admin),
        (_, "/readyz", &Method::GET) => {
            health::readyz(gateway, &request_id, role == Role::Admin).await
        }
        (Role::Admin, "/admin/reload", &Method::POST) => admin_reload(gateway, &request_id),
        (Role::Admin, "/metrics", &Method::GET) => {
            let mut response = Response::new(Body::from(gateway.metrics.render()));
            response.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        (Role::Admin, "/debug/pprof/profile", &Method::GET) => {
            profile::profile(request.uri().query(), &request_id).await
        }
        (Role::Admin, "/admin/reload", _) => not_allowed("POST", &request, &request_id),
        (Role::Admin, "/debug/pprof/profile", _) => not_allowed("GET", &request, &request_id),
        (Role::Ingest, "/v1/batch", _) => not_allowed("POST", &request, &request_id),
        (_, "/healthz" | "/readyz", _) => not_allowed("GET", &request, &request_id),
        _ => respond::reject(
            &Reject::new(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {} {path}", request.method()),
            ),
            &request_id,
        ),
    }
}

fn admin_reload(gateway: &Gateway, request_id: &str) -> Response<Body> {
    #[derive(serde::Serialize)]
    struct Answer {
        status: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        tenants: Option<usize>,
        #[serde(skip_serializing_if = "Option::is_none")]
        restart_needed: Option<Vec<&'static str>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    }
    match tokio::task::block_in_place(|| reload::reload_logged(gateway)) {
        Ok(reloaded) => respond::json(
            StatusCode::OK,
            &Answer {
                status: "reloaded",
                tenants: Some(reloaded.tenants),
                restart_needed: Some(reloaded.restart_needed),
                error: None,
            },
            request_id,
        ),
        Err(e) => respond::json(
            StatusCode::BAD_REQUEST,
            &Answer {
                status: "rejected",
                tenants: None,
                restart_needed: None,
                error: Some(e),
            },
            request_id,
        ),
    }
}

fn not_allowed<B>(allow: &'static str, request: &Request<B>, request_id: &str) -> Response<Body> {
    let reject = Reject::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} {} is not allowed; use {allow}",
            request.method(),
            request.uri().path()
        ),
    )
    .with_header("allow", allow);
    respond::reject(&reject, request_id)
}

/// The client's `X-Request-ID` when it is usable (1 to 128 visible ASCII
/// characters), else a new UUIDv7.
pub fn request_id<B>(request: &Request<B>) -> String {
    request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            (1..=MAX_REQUEST_ID).contains(&v.len()) && v.bytes().all(|b| b.is_ascii_graphic())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().simple().to_string())
}

/// Resolves when the process is asked to stop (SIGTERM or Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_taken_only_when_usable() {
        let with = |v: &str| Request::builder().header(REQUEST_ID, v).body(()).unwrap();
        assert_eq!(request_id(&with("abc-123")), "abc-123");
        assert_ne!(request_id(&with("has space")), "has space");
        assert_eq!(request_id(&with(&"x".repeat(129))).len(), 32);
        assert_eq!(request_id(&Request::new(())).len(), 32);
    }
}
