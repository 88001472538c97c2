//! `GET /healthz` (the process answers) and `GET /readyz` (Kafka answers a
//! metadata request and the GeoIP database is loaded): what a load balancer
//! and an orchestrator ask before sending traffic.

use http::{Response, StatusCode};
use serde::Serialize;

use crate::respond::{self, Body};
use crate::server::Gateway;

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
}

#[derive(Serialize)]
struct Readiness<'a> {
    status: &'a str,
    kafka: String,
    geoip: &'a str,
    tenants: usize,
    /// Filters whose file on disk does not load (the previous version serves).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filter_errors: Vec<String>,
}

pub fn healthz(request_id: &str) -> Response<Body> {
    respond::json(StatusCode::OK, &Health { status: "ok" }, request_id)
}

pub async fn readyz(gateway: &Gateway, request_id: &str) -> Response<Body> {
    let (ready, kafka) = match gateway.producer.check().await {
        Ok(brokers) => (true, format!("ok: {brokers} broker(s)")),
        Err(e) => (false, format!("unavailable: {e}")),
    };
    let geoip = gateway
        .geoip
        .as_ref()
        .map_or("not configured", |g| g.description.as_str());
    let tenants = gateway.tenants.load();
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        kafka,
        geoip,
        tenants: tenants.len(),
        filter_errors: tenants
            .filter_slots()
            .iter()
            .filter_map(|slot| {
                slot.error()
                    .map(|e| format!("{}: {e}", slot.settings.path.display()))
            })
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond::json(status, &body, request_id)
}
