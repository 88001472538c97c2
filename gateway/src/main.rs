//! The `weir` command: serve, check a config, tail a topic, hash a key.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use arc_swap::ArcSwap;
use clap::{Parser, Subcommand};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use weir::auth::Tenants;
use weir::broker::EmbeddedBroker;
use weir::config::Config;
use weir::filter::host::{Caps, FilterEngine};
use weir::geoip::GeoIp;
use weir::limit::{Admission, Rate, Unauthenticated};
use weir::metrics::{Metrics, Saturation};
use weir::produce::Producer;
use weir::server::{self, ConnectionLimits, Gateway, Listener, Role};
use weir::{tail, tls, trace};

// The request path allocates many small short-lived buffers; mimalloc keeps
// that off glibc's locks (about 15% of a core under load with glibc malloc).
// With the `override` feature (Cargo.toml) it also serves C's malloc, so
// librdkafka's per-record allocations (the message, each header) use it:
// measured 327 → 294 µs of node CPU per 50-event request (perf, no telemetry).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How long queued records may take to reach Kafka on shutdown. (The
/// grace periods in deploy/ count on it: see `FLUSH_S` in tests/tests/deploy.rs.)
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Parser)]
#[command(
    name = "weir",
    version,
    about = "Weir: an edge gateway for event ingestion into Kafka"
)]
struct Cli {
    /// The TOML configuration file (before the command: `weir --config weir.toml serve`).
    #[arg(long, env = "WEIR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node. With no brokers configured, an embedded in-memory broker is used.
    Serve,
    /// Check a configuration file (and the environment) without serving.
    CheckConfig,
    /// Print the records of a topic as JSON lines, with key, partition, offset and headers.
    Tail {
        /// The topic, e.g. events.PERF_CRASH.
        #[arg(long)]
        topic: String,
        /// Bootstrap servers; default: kafka.brokers of the config.
        #[arg(long)]
        brokers: Option<String>,
        #[arg(long, value_enum, default_value = "beginning")]
        from: tail::From,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
        /// Stop when no record arrives for this many milliseconds.
        #[arg(long)]
        idle_ms: Option<u64>,
    },
    /// Print the SHA-256 of an API key (for `keys_sha256`); reads stdin without an argument.
    HashKey { key: Option<String> },
    /// Work with Wasm filters.
    #[command(subcommand)]
    Filter(FilterCommand),
}

#[derive(Subcommand)]
enum FilterCommand {
    /// Run a filter over sample events with a node's caps and print each verdict.
    Test {
        /// The filter component (.wasm).
        filter: PathBuf,
        /// A JSON file: an array of events, or a batch with meta and data,
        /// read as a node reads an upload (events it would refuse are
        /// reported, not filtered).
        #[arg(long)]
        events: PathBuf,
        /// The config string handed to the filter's init.
        #[arg(long, default_value = "")]
        config: String,
        #[arg(long, default_value_t = 64)]
        memory_mb: usize,
        #[arg(long, default_value_t = 100)]
        timeout_ms: u64,
        #[arg(long, default_value_t = 16 * 1024 * 1024)]
        max_output_bytes: usize,
        /// Wasm fuel of the call (exact CPU cap); none by default.
        #[arg(long)]
        fuel: Option<u64>,
        /// An event or a replacement larger than this is refused, as on a
        /// node (its `max_event_bytes`).
        #[arg(long, default_value_t = weir::config::Limits::default().max_event_bytes)]
        max_event_bytes: usize,
        /// Bodies nested deeper than this are refused, as on a node (its
        /// `max_depth`, at most 128).
        #[arg(long, default_value_t = weir::config::Limits::default().max_depth)]
        max_depth: usize,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {
            let config = Config::load(cli.config.as_deref())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let served = runtime.block_on(serve(config, cli.config));
            // Records are flushed by now; a CPU profile still sampling (a
            // blocking task) does not hold up the exit.
            runtime.shutdown_timeout(Duration::from_secs(1));
            served
        }
        Command::CheckConfig => {
            let config = Config::load(cli.config.as_deref())?;
            // Filters are compiled and their init run, as a node would at start.
            let engine = FilterEngine::new();
            Tenants::from_config(&config, None, Some(&engine), None).map_err(anyhow::Error::msg)?;
            println!(
                "config OK: {} tenant(s), kafka {}",
                config.tenants.len(),
                if config.kafka.brokers.is_empty() {
                    "embedded (not durable)"
                } else {
                    &config.kafka.brokers
                }
            );
            Ok(())
        }
        Command::Tail {
            topic,
            brokers,
            from,
            max,
            idle_ms,
        } => {
            let brokers = match brokers {
                Some(b) => b,
                None => Config::load(cli.config.as_deref())?.kafka.brokers,
            };
            if brokers.is_empty() {
                bail!("no brokers: pass --brokers (a node on the embedded broker logs its address at start)");
            }
            let options = tail::TailOptions {
                brokers,
                topic,
                from,
                max,
                idle: idle_ms.map(Duration::from_millis),
            };
            tail::tail(&options, &mut std::io::stdout().lock())?;
            Ok(())
        }
        Command::Filter(FilterCommand::Test {
            filter,
            events,
            config,
            memory_mb,
            timeout_ms,
            max_output_bytes,
            fuel,
            max_event_bytes,
            max_depth,
        }) => {
            if max_depth == 0 || max_depth > 128 {
                anyhow::bail!("--max-depth: must be from 1 to 128, as a node's max_depth");
            }
            let events = std::fs::read_to_string(&events)
                .with_context(|| format!("reading {}", events.display()))?;
            let caps = Caps {
                memory_bytes: memory_mb * 1024 * 1024,
                timeout: Duration::from_millis(timeout_ms),
                max_output_bytes,
                fuel,
            };
            let limits = weir::config::Limits {
                max_event_bytes,
                max_depth,
                ..Default::default()
            };
            let report = weir::filter::local::run(&filter, &config, &events, caps, &limits)
                .map_err(anyhow::Error::msg)?;
            print!("{report}");
            Ok(())
        }
        Command::HashKey { key } => {
            let key = match key {
                Some(k) => k,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_to_string(&mut s)?;
                    s.trim_end_matches(['\n', '\r']).to_owned()
                }
            };
            println!("{}", hex::encode(Sha256::digest(key.as_bytes())));
            Ok(())
        }
    }
}

async fn serve(config: Config, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let telemetry = &config.telemetry;
    let provider = match telemetry.traces {
        true => Some(trace::tracer_provider(telemetry).map_err(anyhow::Error::msg)?),
        false => None,
    };
    trace::init(&config.log, provider.as_ref()).map_err(anyhow::Error::msg)?;
    if !telemetry.otlp_endpoint.is_empty() {
        tracing::info!(endpoint = %telemetry.otlp_endpoint, protocol = %telemetry.otlp_protocol, sample_ratio = telemetry.sample_ratio, "exporting traces and metrics over OTLP");
    }

    let geoip = match &config.geoip.path {
        Some(path) => {
            let db = GeoIp::open(path, config.geoip.in_memory)?;
            tracing::info!(path = %path.display(), database = %db.description, "GeoIP database loaded");
            Some(db)
        }
        None => {
            tracing::warn!("no GeoIP database configured (geoip.path / WEIR_GEOIP_PATH): events get geo = null");
            None
        }
    };

    // The embedded broker lives as long as this function: drop it last.
    let (embedded, brokers) = if config.kafka.brokers.is_empty() {
        let broker = EmbeddedBroker::start().context("starting the embedded broker")?;
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
    if let Some(broker) = &embedded {
        // Topics of literal categories now; patterns are created on first use.
        for tenant in &config.tenants {
            for category in tenant.categories.iter().filter(|c| !c.contains('*')) {
                let topic = producer.topic(&tenant.name, category);
                broker
                    .create_topic(&topic)
                    .with_context(|| format!("creating topic {topic}"))?;
            }
        }
    }
    if config.tenants.is_empty() {
        tracing::warn!("no tenants configured: every upload will be refused with 401");
    }

    let mut listeners = Vec::new();
    // The addresses actually bound: a port 0 in the config becomes a real port.
    let (mut http, mut https, mut admin) = (None, None, None);
    if !config.server.listen.is_empty() {
        let tcp = bind(&config.server.listen).await?;
        http = Some(tcp.local_addr()?.to_string());
        listeners.push(Listener {
            tcp,
            tls: None,
            role: Role::Ingest,
        });
    }
    if !config.server.tls_listen.is_empty() {
        let tls = tls::server_config(&config.tls)?;
        if tls.self_signed {
            tracing::warn!("no tls.cert_path/tls.key_path: serving HTTPS with a self-signed certificate for localhost (clients must skip verification)");
        } else {
            tokio::spawn(tls::watch(tls.cert.clone(), config.tls.clone()));
        }
        let tcp = bind(&config.server.tls_listen).await?;
        https = Some(tcp.local_addr()?.to_string());
        listeners.push(Listener {
            tcp,
            tls: Some(TlsAcceptor::from(tls.config)),
            role: Role::Ingest,
        });
    }
    if !config.server.admin_listen.is_empty() {
        let tcp = bind(&config.server.admin_listen).await?;
        admin = Some(tcp.local_addr()?.to_string());
        listeners.push(Listener {
            tcp,
            tls: None,
            role: Role::Admin,
        });
    }

    let filters = FilterEngine::new();
    let admission = Admission::new(config.server.max_inflight);
    let metrics = {
        let admission = admission.clone();
        Metrics::new(
            telemetry,
            Saturation {
                inflight: Arc::new(move || admission.inflight() as u64),
                inflight_max: config.server.max_inflight as u64,
                kafka_queue: Arc::new(producer.queued()),
                kafka: producer.stats(),
                filter_instances: Arc::new(filters.instances()),
                filter_instances_max: u64::from(weir::filter::host::MAX_INSTANCES),
            },
        )
        .map_err(anyhow::Error::msg)?
    };
    let unauthenticated = Unauthenticated::new(Rate {
        per_second: config.server.unauthenticated_per_second,
        burst: config.server.unauthenticated_burst,
    });
    let gateway = Arc::new(Gateway {
        tenants: ArcSwap::from_pointee(
            Tenants::from_config(&config, None, Some(&filters), Some(&metrics))
                .map_err(anyhow::Error::msg)?,
        ),
        producer,
        geoip,
        trusted_proxies: config.server.trusted_proxies.clone(),
        body_timeout: Duration::from_millis(config.server.body_timeout_ms),
        admission,
        metrics,
        unauthenticated,
        config_path: config_path.clone(),
        start_only: weir::reload::StartOnly::of(&config),
        filters: filters.clone(),
        // Without an exporter, sampled requests get ids but no spans.
        sampler: trace::RequestSampler::new(telemetry, !telemetry.otlp_endpoint.is_empty()),
    });
    {
        // Filter files are watched: a changed one is compiled off the request
        // path and swapped in; a broken one keeps the previous version.
        let gateway = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(1));
            loop {
                ticks.tick().await;
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                let slots = gateway.tenants.load().filter_slots();
                let engine = gateway.filters.clone();
                drop(gateway);
                let _ = tokio::task::spawn_blocking(move || {
                    slots.iter().for_each(|s| s.reload_if_changed(&engine))
                })
                .await;
            }
        });
    }
    if gateway.unauthenticated.is_some() {
        // Forget addresses whose limit has recovered, so the table stays small.
        let gateway = Arc::downgrade(&gateway);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(Duration::from_secs(60));
            while let Some(gateway) = {
                ticks.tick().await;
                gateway.upgrade()
            } {
                if let Some(u) = &gateway.unauthenticated {
                    u.prune();
                }
            }
        });
    }
    #[cfg(unix)]
    {
        // SIGHUP reloads tenants, keys, limits and filters (and warns of
        // changed sections that take a restart).
        let gateway = gateway.clone();
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                // Compiling filters blocks: not on an async worker.
                let gateway = gateway.clone();
                let _ = tokio::task::spawn_blocking(move || weir::reload::reload_logged(&gateway))
                    .await;
            }
        });
    }
    tracing::info!(
        http = http.as_deref().unwrap_or(""),
        https = https.as_deref().unwrap_or(""),
        admin = admin.as_deref().unwrap_or(""),
        kafka = %brokers,
        embedded_kafka = embedded.is_some(),
        tenants = config.tenants.len(),
        version = env!("CARGO_PKG_VERSION"),
        "weir listening"
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        server::shutdown_signal().await;
        tracing::info!("shutdown requested");
        let _ = stop.send(true);
    });
    server::serve(
        gateway.clone(),
        listeners,
        stopped,
        ConnectionLimits::from_config(&config.server),
    )
    .await;

    match tokio::task::block_in_place(|| gateway.producer.flush(FLUSH_TIMEOUT)) {
        Ok(()) => tracing::info!("producer flushed; bye"),
        Err(e) => tracing::error!(error = %e, "producer flush incomplete at exit"),
    }
    // The last spans and metrics go out (blocking: the exporters' I/O runs on
    // the other workers).
    tokio::task::block_in_place(|| {
        if let Some(provider) = &provider {
            let _ = provider.shutdown();
        }
        gateway.metrics.shutdown();
    });
    // The producer goes before the embedded broker it talks to.
    drop(gateway);
    drop(embedded);
    Ok(())
}

async fn bind(address: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))
}
