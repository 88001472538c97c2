//! Config hot reload (SIGHUP or `POST /admin/reload`): tenants, their keys
//! and their limits change without a restart.
//!
//! The file is read and validated first; an invalid one is refused with its
//! reason and the running tenants stay as they were. Requests in flight keep
//! the tenant they started with. Listeners, Kafka and GeoIP settings need a
//! restart; a change to them is reported, not applied.

use std::sync::Arc;

use crate::auth::Tenants;
use crate::config::Config;
use crate::server::Gateway;

/// Reloads the tenants from the config file; the number of tenants now.
/// New or changed filters are compiled here (blocking: call it off the request path).
pub fn reload(gateway: &Gateway) -> Result<usize, String> {
    let config = Config::load(gateway.config_path.as_deref()).map_err(|e| e.to_string())?;
    let tenants = Tenants::from_config(
        &config,
        Some(&gateway.tenants.load()),
        Some(&gateway.filters),
    )?;
    let count = tenants.len();
    gateway.tenants.store(Arc::new(tenants));
    Ok(count)
}

/// Reloads and logs the outcome; the answer for `POST /admin/reload`.
pub fn reload_logged(gateway: &Gateway) -> Result<usize, String> {
    match reload(gateway) {
        Ok(count) => {
            tracing::info!(tenants = count, "configuration reloaded");
            Ok(count)
        }
        Err(e) => {
            tracing::error!(error = %e, "configuration reload refused; the running configuration stays");
            Err(e)
        }
    }
}
