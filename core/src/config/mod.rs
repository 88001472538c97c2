//! Configuration: one TOML file plus `WEIR_*` environment overrides.
//!
//! The file is parsed strictly (an unknown key is an error, so a typo never
//! silently falls back to a default), the environment is applied on top, and
//! [`Config::validate`] checks every value. Every error names the key it is
//! about, so an operator can fix the file without reading the code.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use crate::model::is_name_byte;
use template::Template;

pub mod template;

/// A configuration problem, always naming the key and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

/// librdkafka settings that `[kafka.producer]` may not override, and the
/// Weir setting that sets them.
const OWN_KAFKA_SETTINGS: [(&str, &str); 4] = [
    ("bootstrap.servers", "kafka.brokers"),
    ("metadata.broker.list", "kafka.brokers"),
    ("message.timeout.ms", "kafka.delivery_timeout_ms"),
    ("delivery.timeout.ms", "kafka.delivery_timeout_ms"),
];

/// librdkafka settings that `[kafka.producer]` may not set at all, and why.
const REFUSED_KAFKA_SETTINGS: [(&str, &str); 1] = [(
    "delivery.report.only.error",
    "every event is answered from its delivery report: without reports of \
     the records delivered, their requests would wait for ever",
)];

fn invalid(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        problem: problem.into(),
    }
}

/// The whole node configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub kafka: KafkaConfig,
    pub spool: SpoolConfig,
    pub quotas: QuotasConfig,
    pub filters: FiltersConfig,
    pub geoip: GeoIpConfig,
    pub log: LogConfig,
    pub telemetry: TelemetryConfig,
    /// Limits that every tenant gets unless it sets its own.
    pub defaults: Limits,
    pub tenants: Vec<TenantConfig>,
}

/// Listeners and client-address handling.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Plain HTTP listener (`WEIR_LISTEN`); empty disables it.
    pub listen: String,
    /// HTTPS listener (`WEIR_TLS_LISTEN`); empty disables it.
    pub tls_listen: String,
    /// Admin listener for health and operations (`WEIR_ADMIN_LISTEN`); empty disables it.
    pub admin_listen: String,
    /// Proxies whose `X-Forwarded-For` is believed (`WEIR_TRUSTED_PROXIES`, comma-separated CIDRs).
    pub trusted_proxies: Vec<IpNet>,
    /// How long a client may take to send the whole body before it gets 408.
    pub body_timeout_ms: u64,
    /// How long a connection may take to send its request headers; also how
    /// long an idle HTTP/1.1 keep-alive connection is kept.
    pub header_timeout_ms: u64,
    /// Open connections at most, per listener; more wait in the accept queue.
    pub max_connections: usize,
    /// Open connections from one client address (an IPv6 /64) per
    /// listener; 0: no cap. Trusted proxies are not capped.
    pub max_connections_per_address: usize,
    /// Requests in flight on the node at most; past 3/4 of it the tenants
    /// above their fair share are shed first (503).
    pub max_inflight: usize,
    /// The fewest requests processed at once (from their body read to
    /// Kafka's answer; the others wait their turn with their bodies read,
    /// the tenants waiting served in turn).
    /// The node raises the number while requests wait on Kafka rather than
    /// on its CPU (a far Kafka), up to `max_inflight`, and lowers it back
    /// when they queue. Above `max_inflight`, it is `max_inflight`.
    pub processing_min: usize,
    /// Request headers: total bytes and count; more gets 431.
    pub max_header_bytes: usize,
    pub max_headers: usize,
    /// Concurrent h2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Requests with no or a wrong key, per client address (0: no limit).
    pub unauthenticated_per_second: f64,
    pub unauthenticated_burst: u32,
    /// How long in-flight requests may take to finish on shutdown.
    pub drain_timeout_ms: u64,
    /// A connection older than this (±10%) is closed with the answer to a
    /// request (HTTP/1.1: `Connection: close`; HTTP/2: GOAWAY), so that
    /// clients reconnect and spread over the nodes behind a load balancer;
    /// never while idle, which would race the client's next request (an
    /// idle one closes by the idle timeout). 0: no limit.
    pub max_connection_age_ms: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            tls_listen: "127.0.0.1:8443".into(),
            admin_listen: "127.0.0.1:9090".into(),
            trusted_proxies: Vec::new(),
            body_timeout_ms: 10_000,
            header_timeout_ms: 10_000,
            max_connections: 4096,
            max_connections_per_address: 256,
            max_inflight: 1024,
            processing_min: 64,
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            h2_max_concurrent_streams: 256,
            unauthenticated_per_second: 10.0,
            unauthenticated_burst: 20,
            drain_timeout_ms: 30_000,
            max_connection_age_ms: 600_000,
        }
    }
}

/// Certificate and key of the HTTPS listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (`WEIR_TLS_CERT`). With neither file set, the
    /// node makes a self-signed certificate for localhost (for trying Weir only).
    pub cert_path: Option<PathBuf>,
    /// PEM private key (`WEIR_TLS_KEY`).
    pub key_path: Option<PathBuf>,
    /// How often the files are checked for a new certificate (hot reload).
    pub reload_interval_ms: u64,
    /// CA bundle (PEM) for client certificates (`WEIR_TLS_CLIENT_CA`). When
    /// set, clients may present a certificate it signed; tenants with
    /// `client_cert_sha256` then require one of theirs (mTLS).
    pub client_ca_path: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert_path: None,
            key_path: None,
            reload_interval_ms: 1000,
            client_ca_path: None,
        }
    }
}

/// Where and how events are produced.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers (`WEIR_KAFKA_BROKERS`); empty starts the embedded,
    /// non-durable in-process broker.
    pub brokers: String,
    /// Topic of an event; `{category}` and `{tenant}` are replaced (`WEIR_KAFKA_TOPIC_TEMPLATE`).
    pub topic_template: String,
    /// Record key; `{tenant}`, `{category}`, `{device_id}`, `{app}` are replaced.
    /// When a placeholder has no value the key is the event's backend id.
    pub key_template: String,
    /// How long librdkafka tries to deliver an event before it is reported
    /// `delivery_failed` (librdkafka's `message.timeout.ms`).
    pub delivery_timeout_ms: u64,
    /// librdkafka settings that override Weir's producer defaults.
    pub producer: BTreeMap<String, String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            topic_template: "events.{category}".into(),
            key_template: "{tenant}:{device_id}".into(),
            delivery_timeout_ms: 30_000,
            producer: BTreeMap::new(),
        }
    }
}

/// The spool: where events go while Kafka cannot take them (issue 17).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpoolConfig {
    /// A directory on the node's disk (`WEIR_SPOOL_PATH`); none: no spool,
    /// and events Kafka cannot take are answered `delivery_failed`.
    pub path: Option<PathBuf>,
    /// The most bytes the spool's files may take on disk (the node's total).
    pub max_bytes: u64,
    /// The most bytes of events one tenant may have spooled.
    pub tenant_max_bytes: u64,
    /// Segment files are closed past this size (and deleted once all their
    /// events are in Kafka); an event's record must fit in one.
    pub segment_bytes: u64,
    /// `always`: an event is answered `spooled` only once fsync'd
    /// (concurrent requests share one fsync); `never`: once written to the
    /// OS (a crash of the machine may lose recent events).
    pub fsync: String,
    /// How long a request waits for Kafka's acknowledgements before its
    /// events still unanswered are spooled.
    pub wait_ms: u64,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            path: None,
            max_bytes: 1 << 30,
            tenant_max_bytes: 256 << 20,
            segment_bytes: 16 << 20,
            fsync: "always".into(),
            wait_ms: 5_000,
        }
    }
}

/// What the node's filters share, whoever's they are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FiltersConfig {
    /// A directory for compiled filters (`WEIR_FILTER_CACHE`): a restart or
    /// a reload of an unchanged filter then loads it from there in well
    /// under a second instead of compiling it (and running its `init`)
    /// again. None: every start compiles every filter.
    pub cache_path: Option<PathBuf>,
}

/// Region-wide quotas: with a Redis that the nodes of a region share, each
/// tenant's rates hold for the region as a whole (issue 18).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotasConfig {
    /// `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, or
    /// `redis+unix:///path` (`WEIR_REDIS_URL`); empty: every node enforces
    /// the limits on its own.
    pub redis_url: String,
    /// Prefix of the Redis keys: nodes that share it share the tenants'
    /// budgets. Empty: `weir:<telemetry.region>`, or `weir` with no region.
    pub prefix: String,
    /// A PEM file of the CA that signed a `rediss://` server's certificate,
    /// when it is not in the system's trust store.
    pub ca_path: Option<PathBuf>,
    /// `redis_url` is a node of a Redis Cluster: the client follows the
    /// cluster's slots (each tenant's keys share one).
    pub cluster: bool,
    /// The most a request waits for Redis (once, when its tenant's budget
    /// on the node runs out); past it the node serves on its share.
    pub timeout_ms: u64,
    /// How much budget a node takes from Redis at a time, as time at the
    /// tenant's rate: more means fewer Redis calls and more budget held
    /// by idle nodes.
    pub lease_ms: u64,
    /// How often a node says it is alive, counts the live nodes, gives back
    /// budget it did not use, and tries an unreachable Redis again.
    pub sync_ms: u64,
}

impl Default for QuotasConfig {
    fn default() -> Self {
        QuotasConfig {
            redis_url: String::new(),
            prefix: String::new(),
            ca_path: None,
            cluster: false,
            timeout_ms: 100,
            lease_ms: 100,
            sync_ms: 1000,
        }
    }
}

impl QuotasConfig {
    /// The key prefix: the configured one, or one from the region.
    pub fn key_prefix(&self, region: &str) -> String {
        match (self.prefix.as_str(), region) {
            ("", "") => "weir".into(),
            ("", region) => format!("weir:{region}"),
            (prefix, _) => prefix.into(),
        }
    }
}

/// The smallest spool settings that work: a segment must hold the largest
/// record, and a tenant's share a segment's worth of records.
pub const MIN_SPOOL_BYTES: u64 = 64 << 10;

/// The GeoIP database.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GeoIpConfig {
    /// A `.mmdb` file of a City or Country layout (`WEIR_GEOIP_PATH`); none: `geo` is null.
    pub path: Option<PathBuf>,
    /// Read the file into memory instead of mapping it.
    pub in_memory: bool,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `weir=debug`; `RUST_LOG` wins when set.
    pub level: String,
    /// `json` (one object per line) or `pretty`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "json".into(),
        }
    }
}

/// The node's own traces and metrics (design §6).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Make spans at all (false: no spans; records carry the client's
    /// `traceparent`, or an unsampled one of a new trace).
    pub traces: bool,
    /// Record metrics at all (false: `/metrics` is empty).
    pub metrics: bool,
    /// The OpenTelemetry sampler: `parentbased_traceidratio` (the default:
    /// a client's decision is followed, `sample_ratio` of new traces are
    /// sampled), `parentbased_always_on`, `parentbased_always_off`,
    /// `traceidratio`, `always_on` or `always_off`.
    pub sampler: String,
    /// Share of new traces sampled, 0 to 1 (for the ratio samplers).
    pub sample_ratio: f64,
    /// OTLP collector, e.g. `http://127.0.0.1:4317` (gRPC) or
    /// `http://127.0.0.1:4318` (HTTP); empty: no export.
    pub otlp_endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub otlp_protocol: String,
    /// Headers (gRPC metadata) sent with every export, e.g. an auth token.
    pub otlp_headers: BTreeMap<String, String>,
    /// How often metrics are pushed over OTLP, ms.
    pub metrics_interval_ms: u64,
    /// `deployment.environment` of the node's resource.
    pub environment: String,
    /// The node's region (resource attribute `cloud.region` and a label of its metrics).
    pub region: String,
    /// `service.name` of the node's resource.
    pub service_name: String,
    /// More attributes of the node's resource (e.g. `k8s.pod.name`); they
    /// win over the ones Weir sets, but for those with a key of their own
    /// (`service_name`, `environment`, `region`).
    pub resource_attributes: BTreeMap<String, String>,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            traces: true,
            metrics: true,
            sampler: "parentbased_traceidratio".into(),
            sample_ratio: 1.0,
            otlp_endpoint: String::new(),
            otlp_protocol: "grpc".into(),
            otlp_headers: BTreeMap::new(),
            metrics_interval_ms: 10_000,
            environment: "development".into(),
            region: String::new(),
            service_name: "weir".into(),
            resource_attributes: BTreeMap::new(),
        }
    }
}

/// Rates and size limits of a tenant (design §2, §5). Every field may be
/// be set in `[defaults]` and overridden per tenant. A rate of 0 is no limit.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub requests_per_second: f64,
    pub requests_burst: u32,
    pub events_per_second: f64,
    pub events_burst: u32,
    /// Body bytes after decompression: what decoding costs the node.
    pub bytes_per_second: f64,
    pub bytes_burst: u32,
    /// Requests of the tenant in flight at once.
    pub max_inflight: usize,
    pub max_events_per_batch: usize,
    pub max_body_bytes: usize,
    pub max_decompressed_bytes: usize,
    pub max_event_bytes: usize,
    /// Bytes of a batch's `meta`, which every record of the batch carries.
    pub max_meta_bytes: usize,
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests_per_second: 10_000.0,
            requests_burst: 20_000,
            events_per_second: 500_000.0,
            events_burst: 1_000_000,
            bytes_per_second: 200.0 * 1024.0 * 1024.0,
            bytes_burst: 400 * 1024 * 1024,
            max_inflight: 256,
            max_events_per_batch: 1000,
            max_body_bytes: 1024 * 1024,
            max_decompressed_bytes: 10 * 1024 * 1024,
            max_event_bytes: 64 * 1024,
            max_meta_bytes: 8 * 1024,
            max_depth: 64,
        }
    }
}

/// A tenant as written in the file. Limits left out come from `[defaults]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub name: String,
    /// Hex SHA-256 of each API key; never the key itself.
    pub keys_sha256: Vec<String>,
    /// Glob patterns of the categories the tenant may post; `*` allows any.
    #[serde(default = "any_category")]
    pub categories: Vec<String>,
    /// SHA-256 fingerprints (hex, of the DER) of the client certificates
    /// this tenant must present over HTTPS; empty: no client certificate needed.
    #[serde(default)]
    pub client_cert_sha256: Vec<String>,
    pub requests_per_second: Option<f64>,
    pub requests_burst: Option<u32>,
    pub events_per_second: Option<f64>,
    pub events_burst: Option<u32>,
    pub bytes_per_second: Option<f64>,
    pub bytes_burst: Option<u32>,
    pub max_inflight: Option<usize>,
    pub max_events_per_batch: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_decompressed_bytes: Option<usize>,
    pub max_event_bytes: Option<usize>,
    pub max_meta_bytes: Option<usize>,
    pub max_depth: Option<usize>,
    /// The tenant's filter chain, in order.
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
}

/// One Wasm filter of a tenant's chain (design §4).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// The component file (`.wasm`); watched and hot-reloaded. Or:
    #[serde(default)]
    pub path: PathBuf,
    /// Where the node fetches the component (http or https), with its
    /// `sha256`: checked before use, kept on disk by its hash; a new hash
    /// in the config fetches again (`pipeline::filter::source`).
    #[serde(default)]
    pub url: Option<String>,
    /// The hex SHA-256 of the component at `url`.
    #[serde(default)]
    pub sha256: Option<String>,
    /// Handed to the filter's `init`.
    #[serde(default)]
    pub config: String,
    /// What a failing filter means for the events.
    #[serde(default)]
    pub on_error: OnError,
    /// Linear memory of one call, MiB; growing past it traps.
    #[serde(default = "default_filter_memory_mb")]
    pub memory_mb: usize,
    /// CPU time of one call, ms (checked about every millisecond of guest code).
    #[serde(default = "default_filter_timeout_ms")]
    pub timeout_ms: u64,
    /// Bytes one call may return (replacements and drop reasons).
    #[serde(default = "default_filter_output")]
    pub max_output_bytes: usize,
    /// Wasm fuel of one call (about one unit per instruction): an exact,
    /// repeatable CPU cap on top of the timeout.
    #[serde(default)]
    pub fuel: Option<u64>,
}

fn default_filter_memory_mb() -> usize {
    64
}
fn default_filter_timeout_ms() -> u64 {
    100
}
fn default_filter_output() -> usize {
    16 * 1024 * 1024
}

/// A filter's failure policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// The events pass unfiltered; the failure is logged.
    FailOpen,
    /// The events get `filter_error`, retryable (nothing unfiltered gets through).
    #[default]
    FailClosed,
}

fn any_category() -> Vec<String> {
    vec!["*".into()]
}

impl TenantConfig {
    /// The tenant's limits: its own where set, else the defaults.
    pub fn limits(&self, defaults: &Limits) -> Limits {
        Limits {
            requests_per_second: self
                .requests_per_second
                .unwrap_or(defaults.requests_per_second),
            requests_burst: self.requests_burst.unwrap_or(defaults.requests_burst),
            events_per_second: self.events_per_second.unwrap_or(defaults.events_per_second),
            events_burst: self.events_burst.unwrap_or(defaults.events_burst),
            bytes_per_second: self.bytes_per_second.unwrap_or(defaults.bytes_per_second),
            bytes_burst: self.bytes_burst.unwrap_or(defaults.bytes_burst),
            max_inflight: self.max_inflight.unwrap_or(defaults.max_inflight),
            max_events_per_batch: self
                .max_events_per_batch
                .unwrap_or(defaults.max_events_per_batch),
            max_body_bytes: self.max_body_bytes.unwrap_or(defaults.max_body_bytes),
            max_decompressed_bytes: self
                .max_decompressed_bytes
                .unwrap_or(defaults.max_decompressed_bytes),
            max_event_bytes: self.max_event_bytes.unwrap_or(defaults.max_event_bytes),
            max_meta_bytes: self.max_meta_bytes.unwrap_or(defaults.max_meta_bytes),
            max_depth: self.max_depth.unwrap_or(defaults.max_depth),
        }
    }
}

/// The samplers `telemetry.sampler` (`OTEL_TRACES_SAMPLER`) may name.
pub const SAMPLERS: &[&str] = &[
    "parentbased_traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "traceidratio",
    "always_on",
    "always_off",
];

/// The environment variables Weir reads, with the key each one overrides.
pub const ENV_OVERRIDES: &[(&str, &str)] = &[
    ("WEIR_LISTEN", "server.listen"),
    ("WEIR_TLS_LISTEN", "server.tls_listen"),
    ("WEIR_ADMIN_LISTEN", "server.admin_listen"),
    ("WEIR_TRUSTED_PROXIES", "server.trusted_proxies"),
    ("WEIR_TLS_CERT", "tls.cert_path"),
    ("WEIR_TLS_KEY", "tls.key_path"),
    ("WEIR_TLS_CLIENT_CA", "tls.client_ca_path"),
    ("WEIR_KAFKA_BROKERS", "kafka.brokers"),
    ("WEIR_KAFKA_TOPIC_TEMPLATE", "kafka.topic_template"),
    ("WEIR_SPOOL_PATH", "spool.path"),
    ("WEIR_REDIS_URL", "quotas.redis_url"),
    ("WEIR_FILTER_CACHE", "filters.cache_path"),
    ("WEIR_GEOIP_PATH", "geoip.path"),
    ("WEIR_LOG_LEVEL", "log.level"),
    ("WEIR_LOG_FORMAT", "log.format"),
    ("WEIR_TELEMETRY_TRACES", "telemetry.traces"),
    ("WEIR_TELEMETRY_METRICS", "telemetry.metrics"),
    // The OpenTelemetry SDK's own names. The resource's attributes first, so
    // that the variables for one of them win, as the specification orders:
    // `service.name`, `deployment.environment` and `cloud.region` there set
    // `telemetry.service_name`, `.environment` and `.region`.
    ("OTEL_RESOURCE_ATTRIBUTES", "telemetry.resource_attributes"),
    ("OTEL_SERVICE_NAME", "telemetry.service_name"),
    ("WEIR_REGION", "telemetry.region"),
    ("WEIR_ENVIRONMENT", "telemetry.environment"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "telemetry.otlp_endpoint"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "telemetry.otlp_protocol"),
    ("OTEL_EXPORTER_OTLP_HEADERS", "telemetry.otlp_headers"),
    ("OTEL_TRACES_SAMPLER", "telemetry.sampler"),
    ("OTEL_TRACES_SAMPLER_ARG", "telemetry.sample_ratio"),
];

impl Config {
    /// Reads the file at `path` (if any), applies the environment and validates.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(path, |name| std::env::var(name).ok())
    }

    /// As [`Config::load`], with the environment given as a function (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Self::parse(&text).map_err(|message| ConfigError::Parse {
                    path: path.to_owned(),
                    message,
                })?
            }
            None => Config::default(),
        };
        config.apply_env(env)?;
        config.validate()?;
        Ok(config)
    }

    /// Parses TOML text; the error is toml's own, which names the key and line.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let optional_path = |v: String| (!v.is_empty()).then(|| PathBuf::from(v));
        for (name, _) in ENV_OVERRIDES {
            let Some(value) = env(name) else { continue };
            match *name {
                "WEIR_LISTEN" => self.server.listen = value,
                "WEIR_TLS_LISTEN" => self.server.tls_listen = value,
                "WEIR_ADMIN_LISTEN" => self.server.admin_listen = value,
                "WEIR_TRUSTED_PROXIES" => {
                    self.server.trusted_proxies = value
                        .split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| {
                            s.parse().map_err(|_| {
                                invalid(
                                    "WEIR_TRUSTED_PROXIES",
                                    format!("'{s}' is not a CIDR such as 10.0.0.0/8"),
                                )
                            })
                        })
                        .collect::<Result<_, _>>()?
                }
                "WEIR_TLS_CERT" => self.tls.cert_path = optional_path(value),
                "WEIR_TLS_KEY" => self.tls.key_path = optional_path(value),
                "WEIR_TLS_CLIENT_CA" => self.tls.client_ca_path = optional_path(value),
                "WEIR_KAFKA_BROKERS" => self.kafka.brokers = value,
                "WEIR_KAFKA_TOPIC_TEMPLATE" => self.kafka.topic_template = value,
                "WEIR_SPOOL_PATH" => self.spool.path = optional_path(value),
                "WEIR_REDIS_URL" => self.quotas.redis_url = value,
                "WEIR_FILTER_CACHE" => self.filters.cache_path = optional_path(value),
                "WEIR_GEOIP_PATH" => self.geoip.path = optional_path(value),
                "WEIR_LOG_LEVEL" => self.log.level = value,
                "WEIR_LOG_FORMAT" => self.log.format = value,
                "WEIR_TELEMETRY_TRACES" => self.telemetry.traces = boolean(name, &value)?,
                "WEIR_TELEMETRY_METRICS" => self.telemetry.metrics = boolean(name, &value)?,
                "WEIR_REGION" => self.telemetry.region = value,
                "WEIR_ENVIRONMENT" => self.telemetry.environment = value,
                "OTEL_EXPORTER_OTLP_ENDPOINT" => self.telemetry.otlp_endpoint = value,
                "OTEL_EXPORTER_OTLP_PROTOCOL" => self.telemetry.otlp_protocol = value,
                "OTEL_EXPORTER_OTLP_HEADERS" => {
                    self.telemetry.otlp_headers = key_values(name, &value)?
                }
                "OTEL_RESOURCE_ATTRIBUTES" => {
                    let t = &mut self.telemetry;
                    for (key, value) in key_values(name, &value)? {
                        match key.as_str() {
                            "service.name" => t.service_name = value,
                            "deployment.environment" | "deployment.environment.name" => {
                                t.environment = value
                            }
                            "cloud.region" => t.region = value,
                            _ => {
                                t.resource_attributes.insert(key, value);
                            }
                        }
                    }
                }
                "OTEL_SERVICE_NAME" => self.telemetry.service_name = value,
                "OTEL_TRACES_SAMPLER" => self.telemetry.sampler = value,
                "OTEL_TRACES_SAMPLER_ARG" => {
                    self.telemetry.sample_ratio = value.trim().parse().map_err(|_| {
                        invalid(*name, format!("'{value}' is not a number from 0 to 1"))
                    })?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks every value; the first problem found is returned.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_telemetry()?;
        self.validate_server()?;
        self.validate_kafka()?;
        self.validate_spool()?;
        self.validate_quotas()?;
        if !matches!(self.log.format.as_str(), "json" | "pretty") {
            return Err(invalid(
                "log.format",
                format!("'{}' is not one of json, pretty", self.log.format),
            ));
        }
        validate_limits("defaults", &self.defaults)?;
        let mut names = std::collections::HashSet::new();
        let mut hashes = std::collections::HashMap::new();
        for (i, tenant) in self.tenants.iter().enumerate() {
            self.validate_tenant(i, tenant, &mut names, &mut hashes)?;
        }
        Ok(())
    }

    /// `[telemetry]`.
    fn validate_telemetry(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.telemetry.sample_ratio) {
            return Err(invalid(
                "telemetry.sample_ratio",
                "must be a number from 0 to 1",
            ));
        }
        if !SAMPLERS.contains(&self.telemetry.sampler.as_str()) {
            return Err(invalid(
                "telemetry.sampler",
                format!(
                    "'{}' is not one of {}",
                    self.telemetry.sampler,
                    SAMPLERS.join(", ")
                ),
            ));
        }
        if !matches!(
            self.telemetry.otlp_protocol.as_str(),
            "grpc" | "http/protobuf"
        ) {
            return Err(invalid(
                "telemetry.otlp_protocol",
                format!(
                    "'{}' is not grpc or http/protobuf",
                    self.telemetry.otlp_protocol
                ),
            ));
        }
        // The exporters are built without TLS: an https:// endpoint would
        // fail at every export, long after start.
        if self.telemetry.otlp_endpoint.starts_with("https://") {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                format!(
                    "'{}': https is not built in; export over http to a local OpenTelemetry Collector (it can forward over TLS)",
                    self.telemetry.otlp_endpoint
                ),
            ));
        }
        if !self.telemetry.otlp_endpoint.is_empty()
            && self
                .telemetry
                .otlp_endpoint
                .parse::<http::Uri>()
                .map_or(true, |uri| uri.scheme().is_none())
        {
            return Err(invalid(
                "telemetry.otlp_endpoint",
                format!(
                    "'{}' is not a URL such as http://127.0.0.1:4317",
                    self.telemetry.otlp_endpoint
                ),
            ));
        }
        if self.telemetry.metrics_interval_ms == 0 {
            return Err(invalid(
                "telemetry.metrics_interval_ms",
                "must be more than 0",
            ));
        }
        Ok(())
    }

    /// `[server]` and `[tls]`.
    fn validate_server(&self) -> Result<(), ConfigError> {
        for (key, value) in [
            ("server.listen", &self.server.listen),
            ("server.tls_listen", &self.server.tls_listen),
            ("server.admin_listen", &self.server.admin_listen),
        ] {
            if !value.is_empty() && value.parse::<SocketAddr>().is_err() {
                return Err(invalid(
                    key,
                    format!("'{value}' is not an address such as 127.0.0.1:8080"),
                ));
            }
        }
        if self.server.listen.is_empty() && self.server.tls_listen.is_empty() {
            return Err(invalid(
                "server.listen",
                "both server.listen and server.tls_listen are empty: no listener would accept events",
            ));
        }
        if self.server.max_header_bytes < 8192 {
            return Err(invalid("server.max_header_bytes", "must be at least 8192"));
        }
        check_rate(
            self.server.unauthenticated_per_second,
            self.server.unauthenticated_burst,
        )
        .map_err(|(on_rate, problem)| {
            let key = match on_rate {
                true => "server.unauthenticated_per_second",
                false => "server.unauthenticated_burst",
            };
            invalid(key, problem)
        })?;
        if self.tls.cert_path.is_some() != self.tls.key_path.is_some() {
            return Err(invalid(
                "tls.cert_path",
                "tls.cert_path and tls.key_path must be set together",
            ));
        }
        for (key, value) in [
            ("server.body_timeout_ms", self.server.body_timeout_ms),
            ("server.header_timeout_ms", self.server.header_timeout_ms),
            ("kafka.delivery_timeout_ms", self.kafka.delivery_timeout_ms),
            ("server.max_connections", self.server.max_connections as u64),
            ("server.max_inflight", self.server.max_inflight as u64),
            ("server.processing_min", self.server.processing_min as u64),
            ("server.max_headers", self.server.max_headers as u64),
            (
                "server.h2_max_concurrent_streams",
                self.server.h2_max_concurrent_streams as u64,
            ),
            ("tls.reload_interval_ms", self.tls.reload_interval_ms),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        Ok(())
    }

    /// `[kafka]`.
    /// `[quotas]`.
    fn validate_quotas(&self) -> Result<(), ConfigError> {
        let quotas = &self.quotas;
        let url = quotas.redis_url.as_str();
        if !url.is_empty()
            && !["redis://", "rediss://", "redis+unix://", "unix://"]
                .iter()
                .any(|scheme| url.starts_with(scheme))
        {
            return Err(invalid(
                "quotas.redis_url",
                "must start with redis://, rediss:// (TLS) or redis+unix://",
            ));
        }
        if let Some(bad) = quotas
            .prefix
            .chars()
            .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '{' | '}'))
        {
            return Err(invalid(
                "quotas.prefix",
                format!(
                    "'{}' has {bad:?}: no spaces or braces (braces are Redis Cluster hash tags)",
                    quotas.prefix
                ),
            ));
        }
        for (key, value, most) in [
            ("quotas.timeout_ms", quotas.timeout_ms, 10_000),
            ("quotas.lease_ms", quotas.lease_ms, 10_000),
            ("quotas.sync_ms", quotas.sync_ms, 60_000),
        ] {
            if !(1..=most).contains(&value) {
                return Err(invalid(key, format!("{value} must be from 1 to {most}")));
            }
        }
        if quotas.ca_path.is_some() && !url.starts_with("rediss://") {
            return Err(invalid(
                "quotas.ca_path",
                "is only used with a rediss:// (TLS) redis_url",
            ));
        }
        Ok(())
    }

    /// `[spool]`.
    fn validate_spool(&self) -> Result<(), ConfigError> {
        let spool = &self.spool;
        for (key, value) in [
            ("spool.max_bytes", spool.max_bytes),
            ("spool.tenant_max_bytes", spool.tenant_max_bytes),
            ("spool.segment_bytes", spool.segment_bytes),
        ] {
            if value < MIN_SPOOL_BYTES {
                return Err(invalid(
                    key,
                    format!("{value} is below the least that works, {MIN_SPOOL_BYTES} (64 KiB)"),
                ));
            }
        }
        if spool.tenant_max_bytes > spool.max_bytes {
            return Err(invalid(
                "spool.tenant_max_bytes",
                format!(
                    "{} is more than spool.max_bytes ({}), the whole spool",
                    spool.tenant_max_bytes, spool.max_bytes
                ),
            ));
        }
        if !matches!(spool.fsync.as_str(), "always" | "never") {
            return Err(invalid(
                "spool.fsync",
                format!("'{}' is not one of always, never", spool.fsync),
            ));
        }
        // Only a node with a spool waits this long (without one, a request
        // waits for Kafka's every answer).
        let spooling = spool.path.is_some();
        if spool.wait_ms == 0 || (spooling && spool.wait_ms > self.kafka.delivery_timeout_ms) {
            return Err(invalid(
                "spool.wait_ms",
                format!(
                    "{} must be from 1 to kafka.delivery_timeout_ms ({}): past that Kafka has answered every event",
                    spool.wait_ms, self.kafka.delivery_timeout_ms
                ),
            ));
        }
        Ok(())
    }

    fn validate_kafka(&self) -> Result<(), ConfigError> {
        // librdkafka settings Weir has its own key for: one way to set each,
        // and no override that breaks what the key guarantees (a
        // `message.timeout.ms` of 0 would make a request wait for Kafka forever).
        for (librdkafka, weir) in OWN_KAFKA_SETTINGS {
            if self.kafka.producer.contains_key(librdkafka) {
                return Err(invalid(
                    format!("kafka.producer.\"{librdkafka}\""),
                    format!("set {weir} instead"),
                ));
            }
        }
        for (librdkafka, why) in REFUSED_KAFKA_SETTINGS {
            if self.kafka.producer.contains_key(librdkafka) {
                return Err(invalid(format!("kafka.producer.\"{librdkafka}\""), why));
            }
        }
        Template::topic(&self.kafka.topic_template)
            .map_err(|p| invalid("kafka.topic_template", p))?;
        Template::key(&self.kafka.key_template).map_err(|p| invalid("kafka.key_template", p))?;
        Ok(())
    }

    /// `tenants[i]`: its name and keys unique across tenants (`names`,
    /// `hashes` hold those of the tenants before it).
    fn validate_tenant<'a>(
        &'a self,
        i: usize,
        tenant: &'a TenantConfig,
        names: &mut std::collections::HashSet<&'a str>,
        hashes: &mut std::collections::HashMap<Vec<u8>, &'a str>,
    ) -> Result<(), ConfigError> {
        let at = format!("tenants[{i}]");
        if !crate::model::is_valid_name(&tenant.name) {
            return Err(invalid(
                format!("{at}.name"),
                format!(
                    "'{}' must be 1 to 64 characters of A-Z a-z 0-9 _ . -, and not . or ..",
                    tenant.name
                ),
            ));
        }
        if tenant.name.len() > 64 {
            return Err(invalid(format!("{at}.name"), "longer than 64 characters"));
        }
        if !names.insert(tenant.name.as_str()) {
            return Err(invalid(
                format!("{at}.name"),
                format!("tenant '{}' is declared twice", tenant.name),
            ));
        }
        if tenant.keys_sha256.is_empty() {
            return Err(invalid(
                format!("{at}.keys_sha256"),
                "at least one key hash is required",
            ));
        }
        for (k, hash) in tenant.keys_sha256.iter().enumerate() {
            let key = format!("{at}.keys_sha256[{k}]");
            let bytes = hex::decode(hash)
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    invalid(&key, "must be 64 hex digits (the SHA-256 of the API key)")
                })?;
            if let Some(other) = hashes.insert(bytes, tenant.name.as_str()) {
                return Err(invalid(
                    key,
                    format!("the same key is already given to tenant '{other}'"),
                ));
            }
        }
        for (k, fingerprint) in tenant.client_cert_sha256.iter().enumerate() {
            if hex::decode(fingerprint).map(|b| b.len()) != Ok(32) {
                return Err(invalid(
                    format!("{at}.client_cert_sha256[{k}]"),
                    "must be 64 hex digits (the SHA-256 of the certificate's DER)",
                ));
            }
        }
        if !tenant.client_cert_sha256.is_empty() && self.tls.client_ca_path.is_none() {
            return Err(invalid(
                format!("{at}.client_cert_sha256"),
                "needs tls.client_ca_path: without it no client certificate is ever asked for",
            ));
        }
        if tenant.categories.is_empty() {
            return Err(invalid(
                format!("{at}.categories"),
                "empty: the tenant could post nothing (use [\"*\"] for any category)",
            ));
        }
        for (c, pattern) in tenant.categories.iter().enumerate() {
            if pattern.is_empty() || !pattern.bytes().all(|b| b == b'*' || is_name_byte(b)) {
                return Err(invalid(
                    format!("{at}.categories[{c}]"),
                    format!("'{pattern}' may hold only A-Z a-z 0-9 _ . - and the wildcard *"),
                ));
            }
        }
        validate_limits(&at, &tenant.limits(&self.defaults))?;
        validate_filters(&at, &tenant.filters)
    }
}

/// `tenants[i].filters`.
fn validate_filters(at: &str, filters: &[FilterConfig]) -> Result<(), ConfigError> {
    for (f, filter) in filters.iter().enumerate() {
        let key = format!("{at}.filters[{f}]");
        if filter.memory_mb == 0 || filter.memory_mb > 1024 {
            return Err(invalid(
                format!("{key}.memory_mb"),
                "must be from 1 to 1024",
            ));
        }
        if filter.timeout_ms == 0 {
            return Err(invalid(
                format!("{key}.timeout_ms"),
                "must be greater than 0",
            ));
        }
        validate_filter_source(&key, filter)?;
    }
    Ok(())
}

/// A filter's component: a file, or a URL with its SHA-256 (not both).
fn validate_filter_source(key: &str, filter: &FilterConfig) -> Result<(), ConfigError> {
    match (
        &filter.url,
        &filter.sha256,
        filter.path.as_os_str().is_empty(),
    ) {
        (None, None, false) => {
            if !filter.path.is_file() {
                return Err(invalid(
                    format!("{key}.path"),
                    format!("{} is not a file", filter.path.display()),
                ));
            }
        }
        (Some(url), Some(sha256), true) => {
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.parse::<http::Uri>().is_err()
            {
                return Err(invalid(
                    format!("{key}.url"),
                    format!("'{url}' is not an http:// or https:// URL"),
                ));
            }
            if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    format!("{key}.sha256"),
                    "must be 64 hex digits (the SHA-256 of the component)",
                ));
            }
        }
        (Some(_), None, _) => {
            return Err(invalid(
                format!("{key}.sha256"),
                "a url needs the sha256 of the component it serves",
            ))
        }
        (Some(_), Some(_), false) | (None, Some(_), false) => {
            return Err(invalid(
                key.to_owned(),
                "give the component as path, or as url with sha256, not both",
            ))
        }
        (None, _, true) => {
            return Err(invalid(
                format!("{key}.path"),
                "is missing (or give url and sha256)",
            ))
        }
    }
    Ok(())
}

/// Checks a rate a second (0: no limit) and its burst; the error says
/// whether the rate (`true`) or the burst is wrong. Bounded so that the
/// limiter's arithmetic holds: a token's period in nanoseconds is neither 0
/// nor, times the burst, past 64 bits.
fn check_rate(per_second: f64, burst: u32) -> Result<(), (bool, &'static str)> {
    if !per_second.is_finite() || per_second < 0.0 {
        return Err((true, "must be a number ≥ 0 (0: no limit)"));
    }
    if per_second == 0.0 {
        return Ok(());
    }
    if !(1e-6..=1e9).contains(&per_second) {
        return Err((true, "must be 0 (no limit) or from 0.000001 to 1000000000"));
    }
    if burst == 0 {
        return Err((false, "must be at least 1 when the rate is limited"));
    }
    if f64::from(burst) * 1e9 / per_second >= 9e18 {
        return Err((
            false,
            "takes centuries to refill at this rate: raise the rate or lower the burst",
        ));
    }
    Ok(())
}

fn validate_limits(at: &str, limits: &Limits) -> Result<(), ConfigError> {
    for (rate_key, rate, burst_key, burst) in [
        (
            "requests_per_second",
            limits.requests_per_second,
            "requests_burst",
            limits.requests_burst,
        ),
        (
            "events_per_second",
            limits.events_per_second,
            "events_burst",
            limits.events_burst,
        ),
        (
            "bytes_per_second",
            limits.bytes_per_second,
            "bytes_burst",
            limits.bytes_burst,
        ),
    ] {
        check_rate(rate, burst).map_err(|(on_rate, problem)| {
            let key = if on_rate { rate_key } else { burst_key };
            invalid(format!("{at}.{key}"), problem)
        })?;
    }
    // A body the size limits take must fit the burst, or it never passes.
    if limits.bytes_per_second > 0.0
        && (limits.bytes_burst as usize) < limits.max_decompressed_bytes
    {
        return Err(invalid(
            format!("{at}.bytes_burst"),
            format!(
                "must be at least max_decompressed_bytes ({}), or the largest body could never pass",
                limits.max_decompressed_bytes
            ),
        ));
    }
    for (key, value) in [
        ("max_inflight", limits.max_inflight),
        ("max_events_per_batch", limits.max_events_per_batch),
        ("max_body_bytes", limits.max_body_bytes),
        ("max_decompressed_bytes", limits.max_decompressed_bytes),
        ("max_event_bytes", limits.max_event_bytes),
        ("max_meta_bytes", limits.max_meta_bytes),
        ("max_depth", limits.max_depth),
    ] {
        if value == 0 {
            return Err(invalid(format!("{at}.{key}"), "must be greater than 0"));
        }
    }
    // Filters read events with serde_json, which stops at 128 levels: an
    // event the node accepts must be one its filters can read.
    if limits.max_depth > 128 {
        return Err(invalid(
            format!("{at}.max_depth"),
            "must be at most 128 (filters' JSON readers go no deeper)",
        ));
    }
    if limits.max_decompressed_bytes < limits.max_body_bytes {
        return Err(invalid(
            format!("{at}.max_decompressed_bytes"),
            "must be at least max_body_bytes",
        ));
    }
    Ok(())
}

fn boolean(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim() {
        "true" | "1" | "on" => Ok(true),
        "false" | "0" | "off" => Ok(false),
        _ => Err(invalid(name, format!("'{value}' is not true or false"))),
    }
}

/// `key=value,key2=value2`, values percent-encoded: the OpenTelemetry
/// variables' format (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_RESOURCE_ATTRIBUTES`).
fn key_values(name: &str, value: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    value
        .split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(name, format!("'{pair}' is not key=value")))?;
            Ok((key.trim().to_owned(), percent_decode(value.trim())))
        })
        .collect()
}

/// `%XX` escapes decoded (OTEL_EXPORTER_OTLP_HEADERS values); anything
/// malformed is kept as it is.
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weir.toml");
        std::fs::write(&path, text).unwrap();
        Config::load_with_env(Some(&path), |name| {
            env.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    const KEY_HASH: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

    #[test]
    fn defaults_are_complete_and_valid() {
        let config = load("", &[]).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080");
        assert_eq!(config.kafka.topic_template, "events.{category}");
        assert_eq!(config.defaults.max_events_per_batch, 1000);
        assert!(config.kafka.brokers.is_empty());
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load(
            "[server]\nlisten = \"127.0.0.1:1\"\n[kafka]\nbrokers = \"a:1\"\n",
            &[
                ("WEIR_LISTEN", "127.0.0.1:2"),
                ("WEIR_KAFKA_BROKERS", "b:2"),
                ("WEIR_TLS_LISTEN", ""),
                ("WEIR_TRUSTED_PROXIES", "10.0.0.0/8, ::1/128"),
            ],
        )
        .unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:2");
        assert_eq!(config.kafka.brokers, "b:2");
        assert_eq!(config.server.tls_listen, "");
        assert_eq!(config.server.trusted_proxies.len(), 2);
    }

    #[test]
    fn telemetry_takes_the_opentelemetry_environment() {
        let config = load(
            "[telemetry]\nregion = \"eu-west\"\n",
            &[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
                (
                    "OTEL_EXPORTER_OTLP_HEADERS",
                    "authorization=Bearer%20t0k, x-team = edge",
                ),
                ("OTEL_TRACES_SAMPLER_ARG", "0.01"),
                ("OTEL_TRACES_SAMPLER", "traceidratio"),
                ("WEIR_TELEMETRY_METRICS", "off"),
            ],
        )
        .unwrap();
        assert_eq!(config.telemetry.sampler, "traceidratio");
        assert!(load("", &[("OTEL_TRACES_SAMPLER", "sometimes")])
            .unwrap_err()
            .to_string()
            .starts_with("telemetry.sampler: 'sometimes' is not one of parentbased_traceidratio,"));
        let t = &config.telemetry;
        assert_eq!(t.otlp_endpoint, "http://collector:4318");
        assert_eq!(t.otlp_protocol, "http/protobuf");
        assert_eq!(t.otlp_headers["authorization"], "Bearer t0k");
        assert_eq!(t.otlp_headers["x-team"], "edge");
        assert_eq!(t.sample_ratio, 0.01);
        assert!(t.traces && !t.metrics);
        assert_eq!(t.region, "eu-west");
        assert_eq!(t.service_name, "weir");

        // The resource: OTEL_SERVICE_NAME over `service.name` in
        // OTEL_RESOURCE_ATTRIBUTES over the default; WEIR_REGION over
        // `cloud.region` there.
        let resource = |env: &[(&str, &str)]| load("", env).unwrap().telemetry;
        let attributes =
            "service.name=edge,deployment.environment=prod,cloud.region=eu,k8s.pod.name=weir%2D0";
        let t = resource(&[("OTEL_RESOURCE_ATTRIBUTES", attributes)]);
        assert_eq!(
            (&*t.service_name, &*t.environment, &*t.region),
            ("edge", "prod", "eu")
        );
        assert_eq!(t.resource_attributes["k8s.pod.name"], "weir-0");
        let t = resource(&[
            ("OTEL_RESOURCE_ATTRIBUTES", attributes),
            ("OTEL_SERVICE_NAME", "gateway"),
            ("WEIR_REGION", "us"),
        ]);
        assert_eq!((&*t.service_name, &*t.region), ("gateway", "us"));
    }

    #[test]
    fn tenant_limits_fall_back_to_defaults() {
        let config = load(
            &format!(
                "[defaults]\nmax_event_bytes = 1000\n[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"{KEY_HASH}\"]\nmax_events_per_batch = 5\n"
            ),
            &[],
        )
        .unwrap();
        let limits = config.tenants[0].limits(&config.defaults);
        assert_eq!(limits.max_events_per_batch, 5);
        assert_eq!(limits.max_event_bytes, 1000);
        assert_eq!(config.tenants[0].categories, vec!["*"]);
    }

    fn problem(text: &str, env: &[(&str, &str)]) -> String {
        load(text, env).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key_and_the_problem() {
        assert!(problem("[server]\nlisen = \"x\"\n", &[]).contains("unknown field `lisen`"));
        assert_eq!(
            problem("", &[("WEIR_LISTEN", "nowhere")]),
            "server.listen: 'nowhere' is not an address such as 127.0.0.1:8080"
        );
        assert_eq!(
            problem("[[tenants]]\nname = \"a\"\nkeys_sha256 = [\"abc\"]\n", &[]),
            "tenants[0].keys_sha256[0]: must be 64 hex digits (the SHA-256 of the API key)"
        );
        assert!(problem(
            &format!("[[tenants]]\nname = \"a\"\nkeys_sha256 = [\"{KEY_HASH}\"]\n[[tenants]]\nname = \"b\"\nkeys_sha256 = [\"{KEY_HASH}\"]\n"),
            &[]
        )
        .starts_with("tenants[1].keys_sha256[0]: the same key is already given to tenant 'a'"));
        assert_eq!(
            problem(
                &format!("[[tenants]]\nname = \"a\"\nkeys_sha256 = [\"{KEY_HASH}\"]\ncategories = [\"a/b\"]\n"),
                &[]
            ),
            "tenants[0].categories[0]: 'a/b' may hold only A-Z a-z 0-9 _ . - and the wildcard *"
        );
        assert_eq!(
            problem("[defaults]\nmax_event_bytes = 0\n", &[]),
            "defaults.max_event_bytes: must be greater than 0"
        );
        assert_eq!(
            problem("[defaults]\nmax_depth = 129\n", &[]),
            "defaults.max_depth: must be at most 128 (filters' JSON readers go no deeper)"
        );
        assert_eq!(
            problem("[kafka.producer]\n\"message.timeout.ms\" = \"0\"\n", &[]),
            "kafka.producer.\"message.timeout.ms\": set kafka.delivery_timeout_ms instead"
        );
        assert_eq!(
            problem(
                "[kafka.producer]\n\"bootstrap.servers\" = \"k:9092\"\n",
                &[]
            ),
            "kafka.producer.\"bootstrap.servers\": set kafka.brokers instead"
        );
        assert!(problem(
            "[kafka.producer]\n\"delivery.report.only.error\" = \"true\"\n",
            &[]
        )
        .starts_with("kafka.producer.\"delivery.report.only.error\": every event is answered"));
        assert!(problem("[kafka]\ntopic_template = \"x/{category}\"\n", &[])
            .starts_with("kafka.topic_template:"));
        assert!(problem(
            "",
            &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector:4318")]
        )
        .starts_with("telemetry.otlp_endpoint: 'https://collector:4318': https is not built in"));
        // Rates the limiter's arithmetic cannot hold are refused, not a panic
        // at start or reload, nor a limit silently off.
        assert_eq!(
            problem("[defaults]\nrequests_per_second = 1e-30\n", &[]),
            "defaults.requests_per_second: must be 0 (no limit) or from 0.000001 to 1000000000"
        );
        assert_eq!(
            problem("[defaults]\nevents_per_second = 2e9\n", &[]),
            "defaults.events_per_second: must be 0 (no limit) or from 0.000001 to 1000000000"
        );
        assert!(problem(
            "[defaults]\nevents_per_second = 0.000001\nevents_burst = 4000000000\n",
            &[]
        )
        .starts_with("defaults.events_burst: takes centuries to refill"));
        assert_eq!(
            problem("[defaults]\nbytes_burst = 1000\n", &[]),
            "defaults.bytes_burst: must be at least max_decompressed_bytes (10485760), or the largest body could never pass"
        );
        assert_eq!(
            problem("[server]\nprocessing_min = 0\n", &[]),
            "server.processing_min: must be greater than 0"
        );
        assert_eq!(
            problem("[server]\nunauthenticated_burst = 0\n", &[]),
            "server.unauthenticated_burst: must be at least 1 when the rate is limited"
        );
        assert_eq!(
            problem("", &[("WEIR_TRUSTED_PROXIES", "nope")]),
            "WEIR_TRUSTED_PROXIES: 'nope' is not a CIDR such as 10.0.0.0/8"
        );
        assert!(problem(
            "",
            &[
                ("WEIR_CONFIG_UNUSED", "x"),
                ("WEIR_LISTEN", ""),
                ("WEIR_TLS_LISTEN", "")
            ]
        )
        .starts_with("server.listen: both"));
    }

    #[test]
    fn quotas_are_region_wide_only_with_a_redis_and_name_their_faults() {
        let config = load("", &[("WEIR_REDIS_URL", "rediss://weir:pw@redis:6380")]).unwrap();
        assert_eq!(config.quotas.redis_url, "rediss://weir:pw@redis:6380");
        assert_eq!(config.quotas.key_prefix(""), "weir");
        assert_eq!(config.quotas.key_prefix("eu-west-1"), "weir:eu-west-1");
        let config = load("[quotas]\nprefix = \"edge:eu\"\n", &[]).unwrap();
        assert_eq!(config.quotas.key_prefix("eu-west-1"), "edge:eu");
        assert_eq!(
            problem("", &[("WEIR_REDIS_URL", "http://redis:6379")]),
            "quotas.redis_url: must start with redis://, rediss:// (TLS) or redis+unix://"
        );
        assert_eq!(
            problem("[quotas]\nprefix = \"a{b}\"\n", &[]),
            "quotas.prefix: 'a{b}' has '{': no spaces or braces (braces are Redis Cluster hash tags)"
        );
        assert_eq!(
            problem("[quotas]\ntimeout_ms = 0\n", &[]),
            "quotas.timeout_ms: 0 must be from 1 to 10000"
        );
        assert_eq!(
            problem(
                "[quotas]\nredis_url = \"redis://r\"\nca_path = \"/ca.pem\"\n",
                &[]
            ),
            "quotas.ca_path: is only used with a rediss:// (TLS) redis_url"
        );
    }

    #[test]
    fn a_filter_comes_from_a_path_or_a_url_with_its_hash() {
        let tenant = |filter: &str| {
            format!("[[tenants]]\nname = \"a\"\nkeys_sha256 = [\"{KEY_HASH}\"]\n[[tenants.filters]]\n{filter}\n")
        };
        let hash = "ab".repeat(32);
        let config = load(
            &tenant(&format!(
                "url = \"https://f.example/a.wasm\"\nsha256 = \"{hash}\""
            )),
            &[],
        )
        .unwrap();
        assert_eq!(
            config.tenants[0].filters[0].url.as_deref(),
            Some("https://f.example/a.wasm")
        );
        assert_eq!(
            problem(&tenant("url = \"https://f.example/a.wasm\""), &[]),
            "tenants[0].filters[0].sha256: a url needs the sha256 of the component it serves"
        );
        assert_eq!(
            problem(&tenant("url = \"ftp://f/a.wasm\"\nsha256 = \"00\""), &[]),
            "tenants[0].filters[0].url: 'ftp://f/a.wasm' is not an http:// or https:// URL"
        );
        assert_eq!(
            problem(&tenant("url = \"https://f/a.wasm\"\nsha256 = \"00\""), &[]),
            "tenants[0].filters[0].sha256: must be 64 hex digits (the SHA-256 of the component)"
        );
        assert_eq!(
            problem(&tenant("config = \"\""), &[]),
            "tenants[0].filters[0].path: is missing (or give url and sha256)"
        );
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/weir.toml")), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("cannot read config file /nonexistent/weir.toml"));
    }
}
