//! Config hot reload (SIGHUP or `POST /admin/reload`): tenants, their keys
//! and their limits change without a restart.
//!
//! The file is read and validated first; an invalid one is refused with its
//! reason and the running tenants stay as they were. Requests in flight keep
//! the tenant they started with. The other sections (listeners, TLS paths,
//! Kafka, the spool, quotas, GeoIP, logs, telemetry) need a restart; a change to them is
//! reported (in the answer and a warning), not applied.

use std::sync::Arc;

use super::Gateway;
use crate::config::{
    Config, FiltersConfig, GeoIpConfig, KafkaConfig, LogConfig, QuotasConfig, ServerConfig,
    SpoolConfig, TelemetryConfig, TlsConfig,
};
use crate::edge::auth::Tenants;

/// The sections of the config a reload does not apply, as the node started
/// with them, to tell an operator which changes wait for a restart.
#[derive(Debug, Default)]
pub struct StartOnly {
    server: ServerConfig,
    tls: TlsConfig,
    kafka: KafkaConfig,
    spool: SpoolConfig,
    quotas: QuotasConfig,
    filters: FiltersConfig,
    geoip: GeoIpConfig,
    log: LogConfig,
    telemetry: TelemetryConfig,
}

impl StartOnly {
    pub fn of(config: &Config) -> StartOnly {
        StartOnly {
            server: config.server.clone(),
            tls: config.tls.clone(),
            kafka: config.kafka.clone(),
            spool: config.spool.clone(),
            quotas: config.quotas.clone(),
            filters: config.filters.clone(),
            geoip: config.geoip.clone(),
            log: config.log.clone(),
            telemetry: config.telemetry.clone(),
        }
    }

    /// The sections of `config` that differ from the running ones.
    fn changed(&self, config: &Config) -> Vec<&'static str> {
        [
            ("server", self.server == config.server),
            ("tls", self.tls == config.tls),
            ("kafka", self.kafka == config.kafka),
            ("spool", self.spool == config.spool),
            ("quotas", self.quotas == config.quotas),
            ("filters", self.filters == config.filters),
            ("geoip", self.geoip == config.geoip),
            ("log", self.log == config.log),
            ("telemetry", self.telemetry == config.telemetry),
        ]
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(section, _)| section)
        .collect()
    }
}

/// What a reload applied.
#[derive(Debug)]
pub struct Reloaded {
    /// Tenants now.
    pub tenants: usize,
    /// Sections that changed in the file but take a restart to apply.
    pub restart_needed: Vec<&'static str>,
}

/// Held while a reload reads the file and swaps the tenants in.
static RELOADING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Reloads the tenants from the config file.
/// New or changed filters are compiled here (blocking: call it off the request path).
pub fn reload(gateway: &Gateway) -> Result<Reloaded, String> {
    // One at a time (a POST and a SIGHUP may overlap): otherwise the slower
    // of two, which may have read the older file, would be the one left.
    let _one = RELOADING.lock().unwrap_or_else(|e| e.into_inner());
    let config = Config::load(gateway.config_path.as_deref()).map_err(|e| e.to_string())?;
    let tenants = Tenants::from_config(
        &config,
        Some(&gateway.tenants.load()),
        Some(&gateway.filters),
        Some(&gateway.metrics),
        gateway.region.as_ref(),
    )?;
    let count = tenants.len();
    gateway.tenants.store(Arc::new(tenants));
    Ok(Reloaded {
        tenants: count,
        restart_needed: gateway.start_only.changed(&config),
    })
}

/// Reloads and logs the outcome; the answer for `POST /admin/reload`.
pub fn reload_logged(gateway: &Gateway) -> Result<Reloaded, String> {
    match reload(gateway) {
        Ok(reloaded) => {
            tracing::info!(tenants = reloaded.tenants, "configuration reloaded");
            if !reloaded.restart_needed.is_empty() {
                tracing::warn!(
                    sections = ?reloaded.restart_needed,
                    "these sections of the configuration changed but apply only at start: restart the node"
                );
            }
            Ok(reloaded)
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            Err(e)
        }
    }
}
