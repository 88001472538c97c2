//! Metrics of the gateway itself, with the OpenTelemetry SDK, read as
//! Prometheus text on the admin listener's `/metrics`.
//!
//! The four golden signals: traffic (`weir_http_requests_total`,
//! `weir_events_total`), latency (`weir_http_request_duration_seconds`,
//! `weir_stage_duration_seconds` per stage: `produce` builds and enqueues
//! the records, `deliver` waits for Kafka's acknowledgements), errors (by
//! status and by part code, `weir_kafka_broker_errors`) and saturation
//! (`weir_inflight_requests` against `_max`, `weir_open_connections`,
//! `weir_kafka_queue_messages` and `_bytes` against `_max_messages` and
//! `_max_bytes` from librdkafka's statistics, `weir_kafka_broker_rtt_p99_seconds`,
//! `weir_filter_instances` against `_max`, the spool's `weir_spool_*`,
//! `weir_kafka_producer_rebuilds_total`, the region-wide quotas'
//! `weir_quota_*`, and
//! `weir_runtime_busy_seconds_total` / `weir_runtime_workers`: the share of
//! time the async workers are busy). Plus the upload
//! outcome counters users know from the old gateway (`weir_uploads_total` by
//! `outcome`: all_upload, wrong_meta, wrong_data, success_upload).
//!
//! Label cardinality is bounded: never a device, IP, event id or key. The
//! tenant comes from the config; the category is client-chosen, so only the
//! first [`MAX_CATEGORIES`] seen of each tenant get their own label, the rest
//! are `other` (per tenant, so that one tenant's made-up categories never
//! take the labels of another's).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::metrics::{
    BoundCounter, BoundHistogram, Counter, Histogram, Meter, MeterProvider as _,
};
use opentelemetry::KeyValue;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use prometheus::{Encoder, TextEncoder};

use crate::config::TelemetryConfig;
use crate::model::{Batch, ErrorCode, PartCode, UploadFault};
use crate::ops::otlp;

/// Distinct category labels of one tenant at most; more share the label `other`.
pub const MAX_CATEGORIES: usize = 100;

/// Distinct counter names of one tenant's filter at most; more share `other`.
pub const MAX_FILTER_COUNTERS: usize = 16;

/// The outcomes of `weir_filter_calls_total`: a call that gave valid
/// verdicts, and one that failed (on all its events, or on some).
const FILTER_CALL_OUTCOMES: [&str; 2] = ["ok", "error"];

/// Latency buckets, seconds: 0.5 ms to 10 s.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every instrument of the node.
pub struct Metrics {
    registry: prometheus::Registry,
    provider: SdkMeterProvider,
    requests: Counter<u64>,
    request_duration: Histogram<f64>,
    events: Counter<u64>,
    uploads: Outcomes,
    /// Indexed by [`Stage`].
    stages: [BoundHistogram<f64>; Stage::ALL.len()],
    filter_calls: Counter<u64>,
    /// `filter_calls` bound by filter name (from the config), for each of
    /// [`FILTER_CALL_OUTCOMES`], when the filter is loaded.
    filter_call_counters: Mutex<HashMap<String, [BoundCounter<u64>; 2]>>,
    /// The counters filters keep (`count` in the guest SDK).
    guest_counters: Counter<u64>,
    /// `guest_counters` bound by tenant, filter and counter name.
    guest_counter_names: Mutex<HashMap<String, HashMap<String, GuestCounters>>>,
    /// The request counter and histogram bound by route, status and tenant
    /// on first use: tenants come from the config and statuses are few.
    answered: Mutex<HashMap<AnsweredLabels, Answered>>,
    /// Category labels given so far, by tenant, each with its event counters.
    categories: Mutex<HashMap<Arc<str>, TenantCategories>>,
    connections: Arc<Connections>,
}

/// One tenant's filter's counters, by name.
type GuestCounters = HashMap<String, BoundCounter<u64>>;

/// Route, status and tenant (`None`: no tenant was named) of an answer.
type AnsweredLabels = (&'static str, u16, Option<Arc<str>>);

/// The request counter and duration histogram of one [`AnsweredLabels`].
type Answered = (BoundCounter<u64>, BoundHistogram<f64>);

/// One tenant's category labels: at most [`MAX_CATEGORIES`] of its own, then `other`.
#[derive(Default)]
struct TenantCategories {
    known: HashMap<Arc<str>, EventCounters>,
    other: Option<EventCounters>,
}

/// `weir_events_total` of one tenant and category label, bound per part
/// code on first use.
struct EventCounters {
    label: Arc<str>,
    by_code: Vec<(PartCode, BoundCounter<u64>)>,
}

impl EventCounters {
    fn new(label: Arc<str>) -> EventCounters {
        EventCounters {
            label,
            by_code: Vec::new(),
        }
    }
}

/// The pipeline stages, timed in `weir_stage_duration_seconds{stage}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for a turn among the requests processed at once.
    Turn,
    Decode,
    Validate,
    Enrich,
    Filter,
    /// Building and enqueueing the records.
    Produce,
    /// Waiting for Kafka's acknowledgements.
    Deliver,
}

impl Stage {
    const ALL: [Stage; 7] = [
        Stage::Turn,
        Stage::Decode,
        Stage::Validate,
        Stage::Enrich,
        Stage::Filter,
        Stage::Produce,
        Stage::Deliver,
    ];

    fn label(self) -> &'static str {
        match self {
            Stage::Turn => "turn",
            Stage::Decode => "decode",
            Stage::Validate => "validate",
            Stage::Enrich => "enrich",
            Stage::Filter => "filter",
            Stage::Produce => "produce",
            Stage::Deliver => "deliver",
        }
    }
}

/// `weir_uploads_total` by outcome, bound once: every upload counts one or two.
struct Outcomes {
    all_upload: BoundCounter<u64>,
    wrong_meta: BoundCounter<u64>,
    wrong_data: BoundCounter<u64>,
    success_upload: BoundCounter<u64>,
}

/// Reads a saturation value when `/metrics` is scraped.
pub type Gauge = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Where the saturation gauges read their values.
pub struct Saturation {
    /// Requests in flight.
    pub inflight: Gauge,
    /// The node's cap on requests in flight (`server.max_inflight`).
    pub inflight_max: u64,
    /// Requests in processing (from their body read to Kafka's answer).
    pub processing: Gauge,
    /// How many may be at once now (adaptive).
    pub processing_limit: Gauge,
    /// Records in the producer not yet acknowledged.
    pub kafka_queue: Gauge,
    /// librdkafka's latest statistics.
    pub kafka: Arc<KafkaStats>,
    /// Filter instances alive (one per running filter call).
    pub filter_instances: Gauge,
    /// The pool's capacity of filter instances.
    pub filter_instances_max: u64,
    /// The spool's figures, when the node has one.
    pub spool: Option<SpoolGauge>,
    /// The region-wide quotas' state, when the node has a Redis.
    pub quotas: Option<QuotaGauge>,
}

/// Reads the region-wide quotas' state when `/metrics` is scraped.
pub type QuotaGauge = Arc<dyn Fn() -> QuotaReadings + Send + Sync>;

/// The region-wide quotas' state at one moment.
#[derive(Debug, Clone, Default)]
pub struct QuotaReadings {
    /// Redis answers: the limits are region-wide.
    pub synced: bool,
    /// Live nodes last counted (1 before the first count).
    pub nodes: u32,
    /// Redis calls since start: (call, outcome, count).
    pub calls: Vec<(&'static str, &'static str, u64)>,
}

/// Reads the spool's figures when `/metrics` is scraped.
pub type SpoolGauge = Arc<dyn Fn() -> SpoolReadings + Send + Sync>;

/// The spool's figures at one moment.
#[derive(Debug, Clone, Default)]
pub struct SpoolReadings {
    /// Events in the spool, not yet in Kafka.
    pub records: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes of the spool's files (acknowledged records until their segment goes).
    pub disk_bytes: u64,
    /// The cap on `disk_bytes` (`spool.max_bytes`).
    pub max_bytes: u64,
    /// Seconds since the oldest event in the spool was accepted.
    pub oldest_age_seconds: f64,
    /// Per tenant: name, bytes, records.
    pub tenants: Vec<(String, u64, u64)>,
    /// Why appends fail, if they do.
    pub fault: Option<String>,
    /// Totals since start, by what happened to events: `spooled`,
    /// `replayed`, `late` (the first send delivered after all), `duplicate`
    /// (in Kafka twice), `refused_full` (the spool or the tenant's share
    /// full), `disk_error`, `dropped` (Kafka refuses them for good), and
    /// damaged records skipped (`corrupt`).
    pub totals: [(&'static str, u64); 8],
}

/// What the metrics read from librdkafka's statistics (the producer
/// writes them at every report).
#[derive(Debug, Default)]
pub struct KafkaStats {
    /// Bytes of the records waiting in the producer's queues.
    pub queue_bytes: std::sync::atomic::AtomicU64,
    /// The queue's capacity in bytes (`queue.buffering.max.kbytes`).
    pub queue_max_bytes: std::sync::atomic::AtomicU64,
    /// The queue's capacity in records (`queue.buffering.max.messages`).
    pub queue_max_messages: std::sync::atomic::AtomicU64,
    /// Topics the producer holds an object for: those it wrote to.
    pub topics: std::sync::atomic::AtomicU64,
    /// Per broker: its name and the p99 of its request round trips, seconds.
    pub broker_rtt_p99: std::sync::Mutex<Vec<(String, f64)>>,
    /// Per broker: requests that failed to be sent or timed out (totals).
    pub broker_errors: std::sync::Mutex<Vec<(String, u64)>>,
    /// Producers replaced because the old one could not recover.
    pub producer_rebuilds: std::sync::atomic::AtomicU64,
}

/// Open connections by listener, kept by [`Metrics::connection`] guards.
#[derive(Default)]
struct Connections {
    ingest: AtomicU64,
    admin: AtomicU64,
}

/// One open connection; counted until dropped.
pub struct OpenConnection(Arc<Connections>, bool);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        let counter = if self.1 {
            &self.0.admin
        } else {
            &self.0.ingest
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Creates the instruments; the saturation gauges are read at each
    /// scrape (or export). With `config.metrics` off nothing is recorded; with an OTLP
    /// endpoint they are also pushed every `metrics_interval_ms`. Call
    /// inside the runtime.
    pub fn new(config: &TelemetryConfig, saturation: Saturation) -> Result<Metrics, String> {
        let registry = prometheus::Registry::new();
        let provider = provider(config, &registry)?;
        let meter = provider.meter("weir");
        let connections = saturation_gauges(&meter, saturation);
        node_gauges(&meter, config);
        // Stages and outcomes have fixed labels: bound once, each measurement
        // then skips the SDK's attribute lookup (per reader) on the request path.
        // The labelled counters are bound on first use (`answered`, `categories`).
        let uploads = meter
            .u64_counter("weir.uploads")
            .with_description(
                "Uploads by outcome: all_upload, wrong_meta, wrong_data, success_upload",
            )
            .build();
        let stage_duration = meter
            .f64_histogram("weir.stage.duration")
            .with_unit("s")
            .with_description("Time in each pipeline stage (produce builds and enqueues the records; deliver waits for Kafka)")
            .with_boundaries(BUCKETS.to_vec())
            .build();
        Ok(Metrics {
            requests: meter
                .u64_counter("weir.http.requests")
                .with_description("HTTP requests by route, status and tenant")
                .build(),
            request_duration: meter
                .f64_histogram("weir.http.request.duration")
                .with_unit("s")
                .with_description("Time from request to answer")
                .with_boundaries(BUCKETS.to_vec())
                .build(),
            events: meter
                .u64_counter("weir.events")
                .with_description("Events by tenant, category and part code")
                .build(),
            uploads: Outcomes {
                all_upload: uploads.bind(&[KeyValue::new("outcome", "all_upload")]),
                wrong_meta: uploads.bind(&[KeyValue::new("outcome", "wrong_meta")]),
                wrong_data: uploads.bind(&[KeyValue::new("outcome", "wrong_data")]),
                success_upload: uploads.bind(&[KeyValue::new("outcome", "success_upload")]),
            },
            stages: Stage::ALL
                .map(|stage| stage_duration.bind(&[KeyValue::new("stage", stage.label())])),
            filter_calls: meter
                .u64_counter("weir.filter.calls")
                .with_description("Filter calls by filter and outcome (ok; error: the call failed, or a replacement was not a JSON object within the event limits)")
                .build(),
            filter_call_counters: Mutex::new(HashMap::new()),
            guest_counters: meter
                .u64_counter("weir.filter.guest.counter")
                .with_description(
                    "Counters the tenants' filters keep (count() in the guest SDK), by tenant, filter and name",
                )
                .build(),
            guest_counter_names: Mutex::new(HashMap::new()),
            answered: Mutex::new(HashMap::new()),
            categories: Mutex::new(HashMap::new()),
            connections,
            registry,
            provider,
        })
    }

    /// One answered request.
    /// `tenant` is `None` when no tenant was named (label `-`).
    pub fn request(
        &self,
        route: &'static str,
        status: u16,
        tenant: Option<Arc<str>>,
        seconds: f64,
    ) {
        let mut answered = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        let (count, duration) = answered.entry((route, status, tenant)).or_insert_with_key(
            |(route, status, tenant)| {
                let route = KeyValue::new("route", *route);
                let status = KeyValue::new("status", i64::from(*status));
                let tenant = KeyValue::new("tenant", tenant.clone().unwrap_or_else(|| "-".into()));
                (
                    self.requests.bind(&[route.clone(), status.clone(), tenant]),
                    self.request_duration.bind(&[route, status]),
                )
            },
        );
        count.add(1);
        duration.record(seconds);
    }

    /// Counts a connection of the ingest (or admin) listener while it is open.
    pub fn connection(&self, admin: bool) -> OpenConnection {
        let counter = if admin {
            &self.connections.admin
        } else {
            &self.connections.ingest
        };
        counter.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.connections.clone(), admin)
    }

    /// One stage of one request.
    pub fn stage(&self, stage: Stage, seconds: f64) {
        self.stages[stage as usize].record(seconds);
    }

    /// A filter of the config is loaded: its call counters exist from now
    /// on, at 0 until a call counts, so that its first failure is an
    /// increase `rate()` sees rather than a new series. (Again for a filter
    /// already loaded: nothing changes.)
    pub fn filter_loaded(&self, filter: &str) {
        self.filter_calls_of(filter, |_| ());
    }

    /// One filter call.
    pub fn filter_call(&self, filter: &str, ok: bool) {
        self.filter_calls_of(filter, |by_outcome| by_outcome[usize::from(!ok)].add(1));
    }

    /// Runs `f` on the filter's call counters, by [`FILTER_CALL_OUTCOMES`],
    /// bound (at 0) if they were not.
    fn filter_calls_of(&self, filter: &str, f: impl FnOnce(&[BoundCounter<u64>; 2])) {
        let mut calls = self
            .filter_call_counters
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let by_outcome = match calls.get(filter) {
            Some(by_outcome) => by_outcome,
            None => calls.entry(filter.to_owned()).or_insert_with(|| {
                FILTER_CALL_OUTCOMES.map(|outcome| {
                    let counter = self.filter_calls.bind(&[
                        KeyValue::new("filter", filter.to_owned()),
                        KeyValue::new("outcome", outcome),
                    ]);
                    // A measurement, so that an exporter of deltas sends it too.
                    counter.add(0);
                    counter
                })
            }),
        };
        f(by_outcome);
    }

    /// What one filter call counted (`count` in the guest SDK). A filter's
    /// first [`MAX_FILTER_COUNTERS`] names per tenant get their own label,
    /// the rest `other`: guests choose names, operators pay for labels.
    pub fn guest_counters<'a>(
        &self,
        tenant: &str,
        filter: &str,
        counters: impl IntoIterator<Item = (&'a String, &'a u64)>,
    ) {
        let mut counters = counters.into_iter().peekable();
        if counters.peek().is_none() {
            return;
        }
        let mut all = self
            .guest_counter_names
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let filters = match all.get_mut(tenant) {
            Some(filters) => filters,
            None => all.entry(tenant.to_owned()).or_default(),
        };
        let names = match filters.get_mut(filter) {
            Some(names) => names,
            None => filters.entry(filter.to_owned()).or_default(),
        };
        for (name, delta) in counters {
            let label = match names.contains_key(name) || names.len() < MAX_FILTER_COUNTERS {
                true => name.as_str(),
                false => "other",
            };
            if !names.contains_key(label) {
                let bound = self.guest_counters.bind(&[
                    KeyValue::new("tenant", tenant.to_owned()),
                    KeyValue::new("filter", filter.to_owned()),
                    KeyValue::new("name", label.to_owned()),
                ]);
                names.insert(label.to_owned(), bound);
            }
            if let Some(counter) = names.get(label) {
                counter.add(*delta);
            }
        }
    }

    /// The outcome of an upload refused as a whole, by its rejection's error code.
    pub fn refused_upload(&self, error: ErrorCode) {
        self.uploads.all_upload.add(1);
        match error.upload_fault() {
            Some(UploadFault::WrongMeta) => self.uploads.wrong_meta.add(1),
            Some(UploadFault::WrongData) => self.uploads.wrong_data.add(1),
            None => {}
        }
    }

    /// The outcome of an answered batch, and its events by part code.
    pub fn batch(&self, tenant: &Arc<str>, batch: &Batch<'_>) {
        self.uploads.all_upload.add(1);
        let mut counts: Vec<(PartCode, u64)> = Vec::new();
        for part in batch.events.iter().filter_map(|e| e.part.as_ref()) {
            match counts.iter_mut().find(|(code, _)| *code == part.code) {
                Some((_, n)) => *n += 1,
                None => counts.push((part.code, 1)),
            }
        }
        self.with_category(tenant, &batch.meta.category, |counters| {
            for &(code, n) in &counts {
                let counter = match counters.by_code.iter().position(|(c, _)| *c == code) {
                    Some(i) => &counters.by_code[i].1,
                    None => {
                        let counter = self.events.bind(&[
                            KeyValue::new("tenant", tenant.clone()),
                            KeyValue::new("category", counters.label.clone()),
                            KeyValue::new("code", code.as_str()),
                        ]);
                        counters.by_code.push((code, counter));
                        &counters.by_code[counters.by_code.len() - 1].1
                    }
                };
                counter.add(n);
            }
        });
        if counts
            .iter()
            .any(|(code, _)| matches!(code, PartCode::Invalid | PartCode::TooLarge))
        {
            self.uploads.wrong_data.add(1);
        } else if counts.iter().all(|(code, _)| code.is_accepted()) {
            self.uploads.success_upload.add(1);
        }
    }

    /// Runs `f` on the event counters of the category's label: the category
    /// itself while the tenant has fewer than [`MAX_CATEGORIES`], else `other`.
    fn with_category<R>(
        &self,
        tenant: &Arc<str>,
        category: &str,
        f: impl FnOnce(&mut EventCounters) -> R,
    ) -> R {
        let mut categories = self.categories.lock().unwrap_or_else(|p| p.into_inner());
        let seen = match categories.get_mut(tenant) {
            Some(seen) => seen,
            None => categories.entry(tenant.clone()).or_default(),
        };
        if let Some(known) = seen.known.get_mut(category) {
            return f(known);
        }
        if seen.known.len() < MAX_CATEGORIES {
            let label: Arc<str> = category.into();
            let counters = seen
                .known
                .entry(label.clone())
                .or_insert_with(|| EventCounters::new(label));
            return f(counters);
        }
        f(seen
            .other
            .get_or_insert_with(|| EventCounters::new("other".into())))
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> Vec<u8> {
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }

    pub fn shutdown(&self) {
        let _ = self.provider.shutdown();
    }
}

/// The meter provider: Prometheus (scraped from `registry`) when metrics
/// are on, and OTLP pushes too with an endpoint.
fn provider(
    config: &TelemetryConfig,
    registry: &prometheus::Registry,
) -> Result<SdkMeterProvider, String> {
    let mut provider = SdkMeterProvider::builder().with_resource(otlp::resource(config));
    if config.metrics {
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_target_info()
            .scope_info_enabled(false)
            .build()
            .map_err(|e| e.to_string())?;
        provider = provider.with_reader(exporter);
        if !config.otlp_endpoint.is_empty() {
            let reader = PeriodicReader::builder(otlp::metric_exporter(config)?)
                .with_interval(Duration::from_millis(config.metrics_interval_ms))
                .build();
            provider = provider.with_reader(reader);
        }
    }
    let provider = provider.build();
    Ok(provider)
}

/// The saturation gauges, read at each scrape; returns the open-connection
/// counts that [`Metrics::connection`] keeps.
fn saturation_gauges(meter: &Meter, saturation: Saturation) -> Arc<Connections> {
    let Saturation {
        inflight,
        inflight_max,
        processing,
        processing_limit,
        kafka_queue,
        kafka,
        filter_instances,
        filter_instances_max,
        spool,
        quotas,
    } = saturation;
    if let Some(spool) = spool {
        spool_gauges(meter, spool);
    }
    if let Some(quotas) = quotas {
        quota_gauges(meter, quotas);
    }
    gauge(
        meter,
        "weir.inflight.requests",
        "Requests in flight on the node (saturation)",
        move || inflight(),
    );
    gauge(
        meter,
        "weir.inflight.requests.max",
        "The node's cap on requests in flight (server.max_inflight); past 3/4 of it, tenants over their share are shed",
        move || inflight_max,
    );
    gauge(
        meter,
        "weir.processing.requests",
        "Requests being processed, from their body read to Kafka's answer; the others admitted wait their turn (saturation)",
        move || processing(),
    );
    gauge(
        meter,
        "weir.processing.limit",
        "How many requests may be processed at once: adaptive, from server.processing_min up to server.max_inflight",
        move || processing_limit(),
    );
    let connections = Arc::new(Connections::default());
    let open = connections.clone();
    meter
        .u64_observable_gauge("weir.open.connections")
        .with_description("Open client connections by listener (saturation)")
        .with_callback(move |observer| {
            for (listener, count) in [("ingest", &open.ingest), ("admin", &open.admin)] {
                observer.observe(
                    count.load(Ordering::Relaxed),
                    &[KeyValue::new("listener", listener)],
                );
            }
        })
        .build();
    gauge(
        meter,
        "weir.kafka.queue.messages",
        "Records waiting in the producer for Kafka's acknowledgement (saturation)",
        move || kafka_queue(),
    );
    kafka_gauges(meter, kafka);
    gauge(
        meter,
        "weir.filter.instances",
        "Filter instances alive: calls running (saturation of the pool)",
        move || filter_instances(),
    );
    gauge(
        meter,
        "weir.filter.instances.max",
        "Capacity of the filter instance pool",
        move || filter_instances_max,
    );
    connections
}

/// What librdkafka's statistics say of the producer's queue and brokers.
fn kafka_gauges(meter: &Meter, kafka: Arc<KafkaStats>) {
    let stats = kafka.clone();
    gauge(
        meter,
        "weir.kafka.queue.bytes",
        "Bytes of the records in the producer's queue (librdkafka statistics)",
        move || stats.queue_bytes.load(Ordering::Relaxed),
    );
    let stats = kafka.clone();
    gauge(
        meter,
        "weir.kafka.queue.max.bytes",
        "Capacity of the producer's queue in bytes",
        move || stats.queue_max_bytes.load(Ordering::Relaxed),
    );
    let stats = kafka.clone();
    gauge(
        meter,
        "weir.kafka.queue.max.messages",
        "Capacity of the producer's queue in records (full at either capacity)",
        move || stats.queue_max_messages.load(Ordering::Relaxed),
    );
    let stats = kafka.clone();
    meter
        .u64_observable_counter("weir.kafka.producer.rebuilds")
        .with_description("Kafka producers replaced by a new one: the old one had a fatal error, or stopped delivering while the cluster answered")
        .with_callback(move |observer| {
            observer.observe(stats.producer_rebuilds.load(Ordering::Relaxed), &[])
        })
        .build();
    let stats = kafka.clone();
    gauge(
        meter,
        "weir.kafka.topics",
        "Topics the producer holds (librdkafka statistics): those written to",
        move || stats.topics.load(Ordering::Relaxed),
    );
    let stats = kafka.clone();
    meter
        .f64_observable_gauge("weir.kafka.broker.rtt.p99")
        .with_unit("s")
        .with_description("p99 of request round trips to each broker (librdkafka statistics)")
        .with_callback(move |observer| {
            for (broker, seconds) in stats
                .broker_rtt_p99
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                observer.observe(*seconds, &[KeyValue::new("broker", broker.clone())]);
            }
        })
        .build();
    meter
        .u64_observable_counter("weir.kafka.broker.errors")
        .with_description(
            "Requests to each broker that failed or timed out (librdkafka statistics)",
        )
        .with_callback(move |observer| {
            for (broker, errors) in kafka
                .broker_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
            {
                observer.observe(*errors, &[KeyValue::new("broker", broker.clone())]);
            }
        })
        .build();
}

/// The spool's contents, its age and what happened to its events.
fn spool_gauges(meter: &Meter, spool: SpoolGauge) {
    // Per tenant: (name, bytes, records).
    let per_tenant = |name, unit, description, pick: fn(&(String, u64, u64)) -> u64| {
        let read = spool.clone();
        meter
            .u64_observable_gauge(name)
            .with_unit(unit)
            .with_description(description)
            .with_callback(move |observer| {
                for tenant in read().tenants {
                    observer.observe(pick(&tenant), &[KeyValue::new("tenant", tenant.0)]);
                }
            })
            .build();
    };
    per_tenant(
        "weir.spool.records",
        "",
        "Events in the spool, not yet in Kafka, by tenant",
        |t| t.2,
    );
    per_tenant(
        "weir.spool.bytes",
        "By",
        "Bytes of the events in the spool, by tenant",
        |t| t.1,
    );
    let read = spool.clone();
    gauge(
        meter,
        "weir.spool.disk.bytes",
        "Bytes of the spool's files on disk (against weir_spool_max_bytes)",
        move || read().disk_bytes,
    );
    let read = spool.clone();
    gauge(
        meter,
        "weir.spool.max.bytes",
        "The spool's cap on disk (spool.max_bytes)",
        move || read().max_bytes,
    );
    let read = spool.clone();
    meter
        .f64_observable_gauge("weir.spool.oldest.age")
        .with_unit("s")
        .with_description("Age of the oldest event in the spool (0 when empty)")
        .with_callback(move |observer| observer.observe(read().oldest_age_seconds, &[]))
        .build();
    meter
        .u64_observable_counter("weir.spool.events")
        .with_description("Spooled events by outcome: spooled, replayed, late (first send delivered after all), duplicate (in Kafka twice), refused_full, disk_error, dropped (Kafka refuses for good), corrupt (damaged, skipped)")
        .with_callback(move |observer| {
            for (outcome, total) in spool().totals {
                observer.observe(total, &[KeyValue::new("outcome", outcome)]);
            }
        })
        .build();
}

/// The region-wide quotas: whether Redis answers, the live nodes the
/// shares are computed from, and the Redis calls (for sizing Redis).
fn quota_gauges(meter: &Meter, quotas: QuotaGauge) {
    let read = quotas.clone();
    gauge(
        meter,
        "weir.quota.region.synced",
        "1 while Redis answers and tenants' limits are region-wide; 0 while the node serves on its per-node share",
        move || u64::from(read().synced),
    );
    let read = quotas.clone();
    gauge(
        meter,
        "weir.quota.nodes",
        "Live nodes sharing the region's quotas, as last counted (the share is 1/this)",
        move || u64::from(read().nodes),
    );
    meter
        .u64_observable_counter("weir.quota.redis.calls")
        .with_description("Redis calls for the region-wide quotas, by call (lease, give_back, heartbeat) and outcome (ok, error, timeout)")
        .with_callback(move |observer| {
            for (call, outcome, count) in quotas().calls {
                observer.observe(
                    count,
                    &[
                        KeyValue::new("call", call),
                        KeyValue::new("outcome", outcome),
                    ],
                );
            }
        })
        .build();
}

/// The node's identity and its async runtime's busy time.
fn node_gauges(meter: &Meter, config: &TelemetryConfig) {
    // The node's identity as labels of a constant 1 (the Prometheus "info"
    // pattern): dashboards join on `instance` to group nodes by region.
    let info = [
        KeyValue::new("region", config.region.clone()),
        KeyValue::new("environment", config.environment.clone()),
        KeyValue::new("version", env!("CARGO_PKG_VERSION")),
    ];
    meter
        .u64_observable_gauge("weir.node.info")
        .with_description("Always 1; the labels name the node's region, environment and version")
        .with_callback(move |observer| observer.observe(1, &info))
        .build();
    // Busy time of the async workers; its rate over the worker count is the busy ratio.
    let runtime = tokio::runtime::Handle::current().metrics();
    let workers = runtime.num_workers() as u64;
    meter
        .f64_observable_counter("weir.runtime.busy")
        .with_unit("s")
        .with_description("Time the async runtime's workers spent busy, summed over workers")
        .with_callback(move |observer| {
            let busy: f64 = (0..runtime.num_workers())
                .map(|w| runtime.worker_total_busy_duration(w).as_secs_f64())
                .sum();
            observer.observe(busy, &[]);
        })
        .build();
    meter
        .u64_observable_gauge("weir.runtime.workers")
        .with_description("Worker threads of the async runtime")
        .with_callback(move |observer| observer.observe(workers, &[]))
        .build();
}

/// A gauge of one reading without labels, taken at each collection.
fn gauge(
    meter: &opentelemetry::metrics::Meter,
    name: &'static str,
    description: &'static str,
    read: impl Fn() -> u64 + Send + Sync + 'static,
) {
    meter
        .u64_observable_gauge(name)
        .with_description(description)
        .with_callback(move |observer| observer.observe(read(), &[]))
        .build();
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each tenant has its own budget of category labels.
    #[tokio::test]
    async fn category_labels_are_budgeted_per_tenant() {
        let gauge: Gauge = Arc::new(|| 0);
        let metrics = Metrics::new(
            &TelemetryConfig::default(),
            Saturation {
                inflight: gauge.clone(),
                inflight_max: 0,
                processing: gauge.clone(),
                processing_limit: gauge.clone(),
                kafka_queue: gauge.clone(),
                kafka: Arc::default(),
                filter_instances: gauge,
                filter_instances_max: 0,
                spool: None,
                quotas: None,
            },
        )
        .unwrap();
        let (noisy, calm): (Arc<str>, Arc<str>) = ("noisy".into(), "calm".into());
        let label = |tenant: &Arc<str>, category: &str| {
            metrics.with_category(tenant, category, |c| c.label.clone())
        };
        for i in 0..MAX_CATEGORIES {
            assert_eq!(&*label(&noisy, &format!("c{i}")), format!("c{i}"));
        }
        assert_eq!(&*label(&noisy, "one-too-many"), "other");
        assert_eq!(&*label(&noisy, "c7"), "c7", "known ones keep theirs");
        assert_eq!(&*label(&calm, "orders"), "orders");
    }

    /// `Metrics::stage` indexes the bound histograms by `Stage as usize`.
    #[test]
    fn stages_are_listed_in_their_own_order() {
        for (i, stage) in Stage::ALL.iter().enumerate() {
            assert_eq!(*stage as usize, i, "{stage:?}");
        }
    }
}
