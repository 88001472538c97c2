//! The state every request of a node shares, built once from the config.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::reload::StartOnly;
use super::NodeError;
use crate::config::Config;
use crate::edge::auth::Tenants;
use crate::edge::limit::processing::Processing;
use crate::edge::limit::region::Region;
use crate::edge::limit::{Admission, Rate, Unauthenticated};
use crate::ops::metrics::{Metrics, QuotaGauge, Saturation, SpoolGauge};
use crate::ops::trace::RequestSampler;
use crate::pipeline::filter::host::{FilterEngine, MAX_INSTANCES};
use crate::pipeline::geoip::GeoIp;
use crate::pipeline::kafka::Producer;

/// Everything a request needs, shared by every connection.
pub struct Gateway {
    /// Swapped whole on a config reload.
    pub tenants: ArcSwap<Tenants>,
    pub producer: Producer,
    pub geoip: Option<GeoIp>,
    pub trusted_proxies: Vec<IpNet>,
    pub body_timeout: Duration,
    pub admission: Arc<Admission>,
    /// Turns among the requests being processed (adaptive).
    pub processing: Arc<Processing>,
    pub unauthenticated: Option<Unauthenticated>,
    /// The link to the region's shared budgets (`[quotas]`), if any.
    pub region: Option<Arc<Region>>,
    /// The file a reload reads.
    pub config_path: Option<PathBuf>,
    /// The config sections a reload does not apply, as at start.
    pub start_only: StartOnly,
    /// The Wasm engine of every tenant's filters.
    pub filters: Arc<FilterEngine>,
    pub metrics: Metrics,
    /// Samples requests before their spans are made (with
    /// `telemetry.traces = false`, none is: see `RequestSampler::decide`).
    pub sampler: RequestSampler,
}

impl Gateway {
    /// A node's shared state from a validated config (read from
    /// `config_path`, which a reload reads again), writing with `producer`:
    /// the GeoIP database is opened, every tenant's filters compiled and the
    /// instruments made. Call inside the runtime.
    pub fn new(
        config: &Config,
        config_path: Option<PathBuf>,
        producer: Producer,
        region: Option<Arc<Region>>,
    ) -> Result<Gateway, NodeError> {
        let telemetry = &config.telemetry;
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
        let filters = FilterEngine::new();
        if let Some(dir) = &config.filters.cache_path {
            filters.cache_in(dir.clone());
        }
        let admission = Admission::new(config.server.max_inflight);
        let processing = Processing::new(config.server.processing_min, config.server.max_inflight);
        let metrics = {
            let admission = admission.clone();
            let (taken, limit) = (processing.clone(), processing.clone());
            Metrics::new(
                telemetry,
                Saturation {
                    inflight: Arc::new(move || admission.inflight() as u64),
                    inflight_max: config.server.max_inflight as u64,
                    processing: Arc::new(move || taken.taken() as u64),
                    processing_limit: Arc::new(move || limit.limit() as u64),
                    kafka_queue: Arc::new(producer.queued()),
                    kafka: producer.stats(),
                    filter_instances: Arc::new(filters.instances()),
                    filter_instances_max: u64::from(MAX_INSTANCES),
                    quotas: region.clone().map(|region| {
                        let read: QuotaGauge = Arc::new(move || region.readings());
                        read
                    }),
                    spool: producer.spooler().map(|spooler| {
                        let spooler = spooler.clone();
                        // Every configured tenant has its series, at 0 when
                        // it has nothing spooled.
                        let names: Vec<String> =
                            config.tenants.iter().map(|t| t.name.clone()).collect();
                        let read: SpoolGauge = Arc::new(move || {
                            let mut readings = spooler.figures();
                            for name in &names {
                                if !readings.tenants.iter().any(|(t, ..)| t == name) {
                                    readings.tenants.push((name.clone(), 0, 0));
                                }
                            }
                            readings
                        });
                        read
                    }),
                },
            )
            .map_err(NodeError::Telemetry)?
        };
        let tenants = Tenants::at_start(config, &filters, &metrics, region.as_ref())
            .map_err(NodeError::Tenants)?;
        Ok(Gateway {
            tenants: ArcSwap::from_pointee(tenants),
            producer,
            geoip,
            trusted_proxies: config.server.trusted_proxies.clone(),
            body_timeout: Duration::from_millis(config.server.body_timeout_ms),
            admission,
            processing,
            region,
            metrics,
            unauthenticated: Unauthenticated::new(Rate {
                per_second: config.server.unauthenticated_per_second,
                burst: config.server.unauthenticated_burst,
            }),
            config_path,
            start_only: StartOnly::of(config),
            filters,
            // Without an exporter, sampled requests get ids but no spans.
            sampler: RequestSampler::new(telemetry, !telemetry.otlp_endpoint.is_empty()),
        })
    }
}
