//! The listeners: accept TCP (and TLS) connections, serve HTTP/1.1 and h2
//! on each, and shut down gracefully.
//!
//! Every listener's requests go to one [`Service`] (the node's routes). On
//! shutdown every listener stops accepting, in-flight requests finish
//! (bounded by a drain timeout), then the caller flushes the producer.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::connection::{closing, idle, Activity, Busy, FirstBytes};
use crate::respond::Body;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the listeners serve: the node's routes.
pub trait Service: Send + Sync + 'static {
    /// Answers one request of a connection from `peer` on a `role` listener.
    fn call(
        &self,
        request: Request<Incoming>,
        peer: Peer,
        role: Role,
    ) -> impl Future<Output = Response<Body>> + Send;

    /// A token held while a connection of a `role` listener is open (the
    /// open-connections gauge counts them).
    fn open(&self, role: Role) -> impl Send + 'static;
}

/// Connection-level limits of every listener.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Also the idle timeout: a connection with no request in flight for
    /// this long is closed (hyper does it on HTTP/1.1, [`idle`] on h2).
    pub header_timeout: Duration,
    pub max_connections: usize,
    /// 0: no cap.
    pub max_connections_per_address: usize,
    /// Addresses exempt from the per-address cap: they carry many clients.
    pub trusted_proxies: Vec<IpNet>,
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
            trusted_proxies: server.trusted_proxies.clone(),
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
    /// Health, metrics, reload and profiles, for operators.
    Admin,
}

/// A bound listener, ready to serve.
pub struct Listener {
    pub tcp: TcpListener,
    pub tls: Option<TlsAcceptor>,
    pub role: Role,
}

/// Serves every listener until `shutdown` turns true, then drains for at most `drain`.
pub async fn serve<S: Service>(
    service: Arc<S>,
    listeners: Vec<Listener>,
    mut shutdown: watch::Receiver<bool>,
    limits: ConnectionLimits,
) {
    let builder = Arc::new(http_builder(&limits));
    let limits = Arc::new(limits);
    // One permit per open connection, per listener: at the cap, accepting
    // waits; when every permit is back, every connection has ended (the drain).
    let permits = limits.max_connections.min(u32::MAX as usize);
    let listeners: Vec<(Listener, Arc<Semaphore>)> = listeners
        .into_iter()
        .map(|listener| (listener, Arc::new(Semaphore::new(permits))))
        .collect();
    let open: Vec<Arc<Semaphore>> = listeners.iter().map(|(_, open)| open.clone()).collect();

    // The accept loops run in this task; each connection is its own task.
    let accepting = listeners.into_iter().map(|(listener, connections)| {
        accept(
            service.clone(),
            listener,
            connections,
            builder.clone(),
            limits.clone(),
            shutdown.clone(),
        )
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

/// hyper's HTTP/1.1 and h2 settings from the limits.
fn http_builder(limits: &ConnectionLimits) -> Builder<TokioExecutor> {
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
    builder
}

/// One listener's accept loop, until the node stops.
async fn accept<S: Service>(
    service: Arc<S>,
    listener: Listener,
    connections: Arc<Semaphore>,
    builder: Arc<Builder<TokioExecutor>>,
    limits: Arc<ConnectionLimits>,
    mut stop: watch::Receiver<bool>,
) {
    let by_address = Arc::new(ByAddress::default());
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
        // One address may hold only so many of the listener's connections
        // (trusted proxies carry many clients' and may hold more): one host
        // cannot take them all.
        let trusted = limits
            .trusted_proxies
            .iter()
            .any(|net| net.contains(&peer.ip()));
        let held = match (limits.max_connections_per_address, trusted) {
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
        let (service, builder, limits, stop) = (
            service.clone(),
            builder.clone(),
            limits.clone(),
            stop.clone(),
        );
        let (tls, role) = (listener.tls.clone(), listener.role);
        tokio::spawn(async move {
            let _permit = permit;
            let _held = held;
            let _open = service.open(role);
            let connection = Connection {
                service,
                builder,
                limits,
                stop,
                role,
            };
            let result = match tls {
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            let client_cert = stream
                                .get_ref()
                                .1
                                .peer_certificates()
                                .and_then(|chain| chain.first())
                                .map(|leaf| Sha256::digest(leaf.as_ref()).into());
                            connection
                                .serve(
                                    stream,
                                    Peer {
                                        addr: peer,
                                        client_cert,
                                    },
                                )
                                .await
                        }
                        Ok(Err(e)) => {
                            return tracing::debug!(%peer, error = %e, "TLS handshake failed")
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
                None => connection.serve(stream, Peer::plain(peer)).await,
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
}

/// What serving one accepted connection needs.
struct Connection<S> {
    service: Arc<S>,
    builder: Arc<Builder<TokioExecutor>>,
    limits: Arc<ConnectionLimits>,
    stop: watch::Receiver<bool>,
    role: Role,
}

impl<S: Service> Connection<S> {
    /// Serves the connection until it ends; closed gracefully (after its
    /// requests in flight; HTTP/2: GOAWAY) when the node stops, it reaches
    /// its age or it has been idle for the header timeout, and dropped if it
    /// is still open `drain` later (an h2 client can keep a closing
    /// connection open by never answering the closing PING).
    async fn serve<IO>(
        self,
        io: IO,
        peer: Peer,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            service,
            builder,
            limits,
            stop,
            role,
        } = self;
        let activity = Arc::new(Activity::new());
        let requests = {
            let activity = activity.clone();
            service_fn(move |request: Request<Incoming>| {
                let version = request.version();
                let (service, busy) = (service.clone(), Busy::new(&activity, version));
                let activity = activity.clone();
                async move {
                    let mut response = service.call(request, peer, role).await;
                    // Past its age an HTTP/1 connection closes after an
                    // answer (see `closing`); hyper honours the header.
                    if version < http::Version::HTTP_2 && activity.aged() {
                        response.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                    }
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let stream = FirstBytes::new(io, limits.header_timeout);
        let connection = builder.serve_connection(TokioIo::new(stream), requests);
        let mut connection = std::pin::pin!(connection);
        let (closing, idle) = (
            closing(stop, limits.max_age, &activity),
            idle(&activity, limits.header_timeout),
        );
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
    }
}

/// The open connections of one listener per client address (see
/// [`crate::edge::limit::client_network`]).
#[derive(Default)]
struct ByAddress(std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>);

impl ByAddress {
    /// A place for one more connection from `ip`, if it holds fewer than `cap`.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr, cap: usize) -> Option<Held> {
        let network = crate::edge::limit::client_network(ip);
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
