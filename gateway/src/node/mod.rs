//! A node: its composition from the config, the state its requests share
//! ([`Gateway`]), its routes and their handlers, its background tasks, and
//! the order in which it stops. The `weir` binary only parses arguments and
//! calls [`serve`]; tests start a [`Node`] the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::Config;
use crate::edge::limit::region::{Region, RegionError};
use crate::edge::listener::{self, ConnectionLimits, Listener, Role};
use crate::edge::tls;
use crate::ops::trace;
use crate::pipeline::geoip::GeoIpError;
use crate::pipeline::kafka::broker::EmbeddedBroker;
use crate::pipeline::kafka::{Origin, Producer, ProducerError, Spooler};
use crate::pipeline::spool::SpoolError;

mod gateway;
pub mod health;
pub mod ingest;
pub mod reload;
pub mod routes;
mod tasks;

pub use gateway::Gateway;

/// How long queued records may take to reach Kafka on shutdown. (The
/// grace periods in deploy/ count on it: see `FLUSH_S` in tests/tests/deploy.rs.)
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a node did not start, or did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("binding {address}: {source}")]
    Bind {
        address: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    GeoIp(#[from] GeoIpError),
    #[error(transparent)]
    Producer(#[from] ProducerError),
    #[error("opening the spool (spool.path): {0}")]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    Region(#[from] RegionError),
    #[error("starting the embedded broker: {0}")]
    EmbeddedBroker(rdkafka::error::KafkaError),
    #[error("creating topic {topic} on the embedded broker: {source}")]
    EmbeddedTopic {
        topic: String,
        source: rdkafka::error::KafkaError,
    },
    #[error("{0}")]
    Tenants(String),
    #[error("telemetry: {0}")]
    Telemetry(String),
    #[error("signals: {0}")]
    Signals(std::io::Error),
}

/// The tenant a response was for, left by `ingest` for the request metrics.
#[derive(Clone)]
pub struct AnsweredFor(pub Arc<str>);

/// The addresses a node listens on (a port 0 in the config is a real port here).
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
}

/// A node, bound and ready to serve.
pub struct Node {
    gateway: Arc<Gateway>,
    listeners: Vec<Listener>,
    addresses: Addresses,
    limits: ConnectionLimits,
    /// In front of which the node runs when no brokers are configured;
    /// stopped after the producer.
    embedded: Option<EmbeddedBroker>,
    tasks: Vec<JoinHandle<()>>,
}

/// `weir serve`: logs and tracing as configured, a node until SIGTERM or
/// Ctrl-C, then a clean stop (the last spans exported).
pub async fn serve(config: Config, config_path: Option<PathBuf>) -> Result<(), NodeError> {
    let telemetry = &config.telemetry;
    let provider = match telemetry.traces {
        true => Some(trace::tracer_provider(telemetry).map_err(NodeError::Telemetry)?),
        false => None,
    };
    trace::init(&config.log, provider.as_ref()).map_err(NodeError::Telemetry)?;
    if !telemetry.otlp_endpoint.is_empty() {
        tracing::info!(endpoint = %telemetry.otlp_endpoint, protocol = %telemetry.otlp_protocol, sample_ratio = telemetry.sample_ratio, "exporting traces and metrics over OTLP");
    }
    let node = Node::start(&config, config_path).await?;
    node.run(async {
        shutdown_signal().await;
        tracing::info!("shutdown requested");
    })
    .await;
    // The last spans go out (blocking: the exporters' I/O runs on the other workers).
    if let Some(provider) = provider {
        tokio::task::block_in_place(|| {
            let _ = provider.shutdown();
        });
    }
    Ok(())
}

impl Node {
    /// Builds a node from a validated config: the producer (in front of an
    /// embedded broker when no brokers are configured), the gateway, the
    /// listeners (bound) and the background tasks.
    pub async fn start(config: &Config, config_path: Option<PathBuf>) -> Result<Node, NodeError> {
        let (embedded, brokers) = if config.kafka.brokers.is_empty() {
            let broker = EmbeddedBroker::start().map_err(NodeError::EmbeddedBroker)?;
            let address = broker.bootstrap_servers();
            tracing::warn!(
                bootstrap = %address,
                "NO KAFKA CONFIGURED: using an embedded in-memory broker. Nothing is durable and every event is lost on exit. Set WEIR_KAFKA_BROKERS for real use."
            );
            (Some(broker), address)
        } else {
            (None, config.kafka.brokers.clone())
        };
        let producer = Producer::new(&config.kafka, &brokers, embedded.is_some())?;
        let node_name: Arc<str> = crate::ops::otlp::hostname().into();
        let region = Region::new(&config.quotas, &config.telemetry.region, &node_name)?;
        if let Some(region) = &region {
            // Region-wide from the first request when Redis answers; on the
            // node's share (and trying again) when it does not.
            region.sync().await;
            if !region.synced() {
                tracing::warn!(quotas = %region.detail(), "Redis does not answer yet: each tenant gets this node's share of its limits until it does");
            }
        }
        let region_name = &config.telemetry.region;
        let producer = producer.with_origin(Origin {
            region: (!region_name.is_empty()).then(|| region_name.as_str().into()),
            node: node_name.clone(),
        });
        let producer = match Spooler::open(&config.spool, node_name)? {
            Some(spooler) => producer.with_spool(spooler),
            None => producer,
        };
        if let Some(broker) = &embedded {
            // Topics of literal categories now; patterns are created on first use.
            for tenant in &config.tenants {
                for category in tenant.categories.iter().filter(|c| !c.contains('*')) {
                    let topic = producer.topic(&tenant.name, category);
                    broker
                        .create_topic(&topic)
                        .map_err(|source| NodeError::EmbeddedTopic { topic, source })?;
                }
            }
        }
        if config.tenants.is_empty() {
            tracing::warn!("no tenants configured: every upload will be refused with 401");
        }
        let (listeners, addresses, tls_watch) = bind(config).await?;
        let gateway = Arc::new(Gateway::new(config, config_path, producer, region)?);
        let mut tasks = tasks::spawn(&gateway).map_err(NodeError::Signals)?;
        tasks.extend(tls_watch);
        tracing::info!(
            http = %shown(addresses.http),
            https = %shown(addresses.https),
            admin = %shown(addresses.admin),
            kafka = %brokers,
            embedded_kafka = embedded.is_some(),
            tenants = config.tenants.len(),
            version = env!("CARGO_PKG_VERSION"),
            "weir listening"
        );
        Ok(Node {
            gateway,
            listeners,
            addresses,
            limits: ConnectionLimits::from_config(&config.server),
            embedded,
            tasks,
        })
    }

    /// Where the node listens.
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    /// The node's shared state.
    pub fn gateway(&self) -> &Arc<Gateway> {
        &self.gateway
    }

    /// Serves until `shutdown` resolves, then stops in order: stop
    /// accepting and drain the requests in flight, flush the producer, push
    /// the last metrics, stop the background tasks, close the producer, and
    /// only then the embedded broker it writes to (a broker gone first
    /// would leave the producer logging connection errors).
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send + 'static) {
        let Node {
            gateway,
            listeners,
            limits,
            embedded,
            tasks,
            ..
        } = self;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        listener::serve(gateway.clone(), listeners, stopped, limits).await;
        match tokio::task::block_in_place(|| gateway.producer.flush(FLUSH_TIMEOUT)) {
            Ok(()) => tracing::info!("producer flushed; bye"),
            Err(e) => tracing::error!(error = %e, "producer flush incomplete at exit"),
        }
        if let Some(spooler) = gateway.producer.spooler() {
            spooler.log_stop();
        }
        tokio::task::block_in_place(|| gateway.metrics.shutdown());
        if let Some(region) = &gateway.region {
            // Budget this node holds goes back to the region, and the
            // others count one node fewer at once, not after a timeout.
            if region.synced() {
                for quotas in gateway.tenants.load().quotas() {
                    quotas.give_back_idle(Duration::ZERO).await;
                }
            }
            region.leave().await;
        }
        for task in &tasks {
            task.abort();
        }
        for task in tasks {
            let _ = task.await;
        }
        match Arc::try_unwrap(gateway) {
            Ok(gateway) => gateway.producer.close().await,
            Err(_) => {
                // A connection outlived the drain and still holds the
                // producer: the broker stays up until the process ends.
                tracing::debug!(
                    "requests outlived the drain; the embedded broker stays up until exit"
                );
                std::mem::forget(embedded);
                return;
            }
        }
        drop(embedded);
    }
}

/// Binds every configured listener; the TLS one's certificate watcher
/// comes with it.
async fn bind(
    config: &Config,
) -> Result<(Vec<Listener>, Addresses, Option<JoinHandle<()>>), NodeError> {
    let server = &config.server;
    let mut listeners = Vec::new();
    let mut addresses = Addresses::default();
    let mut watch = None;
    addresses.http = listen(&server.listen, None, Role::Ingest, &mut listeners).await?;
    if !server.tls_listen.is_empty() {
        let tls = tls::server_config(&config.tls)?;
        if tls.self_signed {
            tracing::warn!("no tls.cert_path/tls.key_path: serving HTTPS with a self-signed certificate for localhost (clients must skip verification)");
        } else {
            watch = Some(tokio::spawn(tls::watch(
                tls.cert.clone(),
                config.tls.clone(),
            )));
        }
        let acceptor = Some(TlsAcceptor::from(tls.config));
        addresses.https =
            listen(&server.tls_listen, acceptor, Role::Ingest, &mut listeners).await?;
    }
    addresses.admin = listen(&server.admin_listen, None, Role::Admin, &mut listeners).await?;
    Ok((listeners, addresses, watch))
}

/// Binds one listener when its address is configured (not empty): the
/// address it got.
async fn listen(
    address: &str,
    tls: Option<TlsAcceptor>,
    role: Role,
    listeners: &mut Vec<Listener>,
) -> Result<Option<SocketAddr>, NodeError> {
    if address.is_empty() {
        return Ok(None);
    }
    let tcp = bind_tcp(address).await?;
    let bound = tcp.local_addr().ok();
    listeners.push(Listener { tcp, tls, role });
    Ok(bound)
}

async fn bind_tcp(address: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(address)
        .await
        .map_err(|source| NodeError::Bind {
            address: address.to_owned(),
            source,
        })
}

/// An address for a log line; empty when there is none.
fn shown(address: Option<SocketAddr>) -> String {
    address.map(|a| a.to_string()).unwrap_or_default()
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
