//! `GET /healthz` (the process answers and needs no restart) and `GET /readyz` (Kafka answers a
//! metadata request and the GeoIP database is loaded): what a load balancer
//! and an orchestrator ask before sending traffic. The details of readiness
//! are the admin listener's.

use http::{Response, StatusCode};
use serde::Serialize;

use super::Gateway;
use crate::respond::{self, Body};

#[derive(Serialize)]
struct Health<'a> {
    status: &'a str,
    /// Why the node must be restarted (admin listener only).
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<String>,
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
    /// Filters whose first version is still being fetched or compiled
    /// (their tenants' events are refused, retryable, until then). Not a
    /// reason to be unready: every other tenant is served.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    filters_loading: Vec<String>,
    /// The spool, when the node has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    spool: Option<String>,
    /// Region-wide quotas, when configured: region-wide or on the node's
    /// share. Not a reason to be unready: on its share the node still
    /// enforces every limit.
    #[serde(skip_serializing_if = "Option::is_none")]
    quotas: Option<String>,
}

/// Liveness: the process answers, and nothing happened that only a
/// restart repairs. A Kafka producer that cannot recover (a fatal error,
/// or no delivery while the cluster answers) is replaced by a new one;
/// only when new ones keep failing does the node answer 503 here, and an
/// orchestrator replaces it (`/readyz` fails too, which only takes traffic
/// away).
pub fn healthz(gateway: &Gateway, request_id: &str, detailed: bool) -> Response<Body> {
    match gateway.producer.fatal() {
        None => respond::json(
            StatusCode::OK,
            &Health {
                status: "ok",
                reason: None,
            },
            request_id,
        ),
        Some(fatal) => respond::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &Health {
                status: "failed",
                reason: detailed.then_some(fatal),
            },
            request_id,
        ),
    }
}

/// Readiness. The admin listener says why (Kafka's error, the GeoIP
/// database, filter files that do not load); the public listener only
/// whether, so that file paths and broker errors are not told to anyone.
pub async fn readyz(gateway: &Gateway, request_id: &str, detailed: bool) -> Response<Body> {
    let kafka = gateway.producer.check().await;
    // With a spool the node does its job while Kafka is away, as long as
    // the spool takes events.
    let spool = gateway.producer.spooler().map(|s| s.readiness());
    let ready = match &spool {
        Some((spool_ok, _)) => kafka.is_ok() || *spool_ok,
        None => kafka.is_ok(),
    };
    let spool = spool.map(|(ok, detail)| match (detailed, ok) {
        (true, _) => detail,
        (false, true) => "ok".into(),
        (false, false) => "unavailable".into(),
    });
    let kafka = match (kafka, detailed) {
        (Ok(brokers), true) => format!("ok: {brokers} broker(s)"),
        (Err(e), true) => format!("unavailable: {e}"),
        (Ok(_), false) => "ok".into(),
        (Err(_), false) => "unavailable".into(),
    };
    let geoip = match (&gateway.geoip, detailed) {
        (None, _) => "not configured",
        (Some(g), true) => g.description.as_str(),
        (Some(_), false) => "loaded",
    };
    let tenants = gateway.tenants.load();
    // Each filter's trouble, if any: why it does not load, or since when
    // its first version is loading.
    let (mut filter_errors, mut filters_loading) = (Vec::new(), Vec::new());
    if detailed {
        for slot in tenants.filter_slots() {
            if let Some(e) = slot.error() {
                filter_errors.push(format!("{}: {e}", slot.source()));
            }
            if let Some(taken) = slot.loading() {
                filters_loading.push(format!(
                    "{}: loading for {} s",
                    slot.source(),
                    taken.as_secs()
                ));
            }
        }
    }
    let body = Readiness {
        status: if ready { "ready" } else { "not_ready" },
        kafka,
        geoip,
        tenants: tenants.len(),
        filter_errors,
        filters_loading,
        spool,
        quotas: gateway
            .region
            .as_ref()
            .map(|region| match (detailed, region.synced()) {
                (true, _) => region.detail(),
                (false, true) => "region".into(),
                (false, false) => "node-share".into(),
            }),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    respond::json(status, &body, request_id)
}
