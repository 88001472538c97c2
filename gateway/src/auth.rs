//! Authenticate: the API key in the request names the tenant.
//!
//! The tenant always comes from the key, never from the body. Keys are kept
//! only as SHA-256 hashes; the key's hash is looked up and then compared in
//! constant time. Looking up by hash leaks nothing usable about the key.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::batch::Tenant;
use crate::config::Config;
use crate::filter::host::FilterEngine;
use crate::filter::FilterSlot;
use crate::limit::Quotas;
use crate::metrics::Metrics;
use crate::respond::Reject;

/// The header that may carry the key instead of `Authorization: Bearer`.
pub const KEY_HEADER: &str = "x-weir-key";

/// Every tenant of the node, by the hash of each of its keys.
#[derive(Debug, Default)]
pub struct Tenants {
    by_key_hash: HashMap<[u8; 32], Arc<Tenant>>,
}

impl Tenants {
    /// Builds the registry from a validated config. A tenant keeps its
    /// limiters and in-flight count across a reload, but for a limiter whose
    /// rate changed (see [`Quotas::carried`]); a filter whose settings did
    /// not change is not compiled again. New filters are compiled here, with
    /// `engine`: an error names the filter that does not load. With
    /// `metrics` (a node's), every filter's call counters exist from then on.
    pub fn from_config(
        config: &Config,
        previous: Option<&Tenants>,
        engine: Option<&Arc<FilterEngine>>,
        metrics: Option<&Metrics>,
    ) -> Result<Tenants, String> {
        let old: HashMap<&str, &Arc<Tenant>> = previous
            .map(|p| p.by_key_hash.values().map(|t| (&*t.name, t)).collect())
            .unwrap_or_default();
        let mut by_key_hash = HashMap::new();
        for t in &config.tenants {
            let limits = t.limits(&config.defaults);
            let before = old.get(t.name.as_str());
            let quotas = match before {
                Some(b) if b.quotas.limits == limits => Arc::clone(&b.quotas),
                _ => Arc::new(Quotas::carried(&limits, before.map(|b| &*b.quotas))),
            };
            let mut filters = Vec::with_capacity(t.filters.len());
            for settings in &t.filters {
                let reused =
                    before.and_then(|b| b.filters.iter().find(|f| f.settings == *settings));
                filters.push(match (reused, engine) {
                    (Some(slot), Some(engine)) => {
                        // A reload the operator asked for looks at the file itself.
                        slot.reload_if_content_changed(engine);
                        Arc::clone(slot)
                    }
                    (Some(slot), None) => Arc::clone(slot),
                    (None, Some(engine)) => FilterSlot::load(engine, settings)
                        .map_err(|e| format!("tenant '{}': {e}", t.name))?,
                    (None, None) => {
                        return Err(format!(
                            "tenant '{}': filters are not available here",
                            t.name
                        ))
                    }
                });
            }
            let tenant = Arc::new(Tenant {
                name: t.name.as_str().into(),
                categories: t.categories.clone(),
                quotas,
                filters,
                client_certs: t
                    .client_cert_sha256
                    .iter()
                    .filter_map(|h| decode_hash(h))
                    .collect(),
            });
            for hash in &t.keys_sha256 {
                // Validated by Config::validate: 32 bytes of hex.
                if let Some(hash) = hex::decode(hash)
                    .ok()
                    .and_then(|b| <[u8; 32]>::try_from(b).ok())
                {
                    by_key_hash.insert(hash, tenant.clone());
                }
            }
        }
        let tenants = Tenants { by_key_hash };
        // At 0 until counted: a filter's first failure is then an increase.
        if let Some(metrics) = metrics {
            for slot in tenants.filter_slots() {
                metrics.filter_loaded(&slot.name);
            }
        }
        Ok(tenants)
    }

    /// Every filter slot of every tenant (for the reload watcher and `/readyz`).
    pub fn filter_slots(&self) -> Vec<Arc<FilterSlot>> {
        let mut slots: Vec<Arc<FilterSlot>> = Vec::new();
        for tenant in self.by_key_hash.values() {
            for slot in &tenant.filters {
                if !slots.iter().any(|s| Arc::ptr_eq(s, slot)) {
                    slots.push(slot.clone());
                }
            }
        }
        slots
    }

    /// Finds the tenant of the request's key: 401 when the key is missing or unknown.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Arc<Tenant>, Reject> {
        let key = key_of(headers)?;
        let hash: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        match self.by_key_hash.get_key_value(&hash) {
            Some((stored, tenant)) if bool::from(stored.ct_eq(&hash)) => Ok(tenant.clone()),
            _ => Err(unauthorized("unknown API key")),
        }
    }

    /// Number of tenants.
    pub fn len(&self) -> usize {
        let mut names: Vec<&str> = self.by_key_hash.values().map(|t| &*t.name).collect();
        names.sort_unstable();
        names.dedup();
        names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key_hash.is_empty()
    }
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    hex::decode(hex)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
}

/// Checks the client certificate of a tenant that requires one (mTLS): the
/// connection's verified certificate must be one of the tenant's. 403 otherwise.
pub fn check_client_cert(tenant: &Tenant, presented: Option<&[u8; 32]>) -> Result<(), Reject> {
    if tenant.client_certs.is_empty() {
        return Ok(());
    }
    let known =
        presented.is_some_and(|p| tenant.client_certs.iter().any(|c| bool::from(c.ct_eq(p))));
    if known {
        return Ok(());
    }
    Err(Reject::new(
        StatusCode::FORBIDDEN,
        "client_certificate_required",
        match presented {
            None => format!(
                "tenant '{}' requires a client certificate (HTTPS with mTLS)",
                tenant.name
            ),
            Some(_) => format!(
                "the client certificate is not one of tenant '{}'",
                tenant.name
            ),
        },
    ))
}

/// Checks that the tenant may post to the category: 403 otherwise.
pub fn authorize(tenant: &Tenant, category: &str) -> Result<(), Reject> {
    if tenant.allows(category) {
        Ok(())
    } else {
        Err(Reject::new(
            StatusCode::FORBIDDEN,
            "category_not_allowed",
            format!(
                "meta.category: tenant '{}' may not post to category '{category}'",
                tenant.name
            ),
        ))
    }
}

fn key_of(headers: &HeaderMap) -> Result<&str, Reject> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| unauthorized("Authorization: not a valid header value"))?;
        return match value.split_once(' ') {
            Some((scheme, key))
                if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() =>
            {
                Ok(key.trim())
            }
            _ => Err(unauthorized("Authorization: expected `Bearer <API key>`")),
        };
    }
    match headers.get(KEY_HEADER) {
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| unauthorized("X-Weir-Key: empty or not a valid header value")),
        None => Err(unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `X-Weir-Key: <key>`",
        )),
    }
}

fn unauthorized(message: &str) -> Reject {
    Reject::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        .with_header("www-authenticate", "Bearer realm=\"weir\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants() -> Tenants {
        let hash = hex::encode(Sha256::digest(b"secret"));
        let config = Config::parse(&format!(
            "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"{hash}\"]\ncategories = [\"app_*\"]\n"
        ))
        .unwrap();
        Tenants::from_config(&config, None, None, None).unwrap()
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn the_key_names_the_tenant() {
        let t = tenants();
        for h in [
            headers(&[("authorization", "Bearer secret")]),
            headers(&[("authorization", "bearer  secret ")]),
            headers(&[("x-weir-key", "secret")]),
        ] {
            assert_eq!(&*t.authenticate(&h).unwrap().name, "acme");
        }
    }

    #[test]
    fn a_missing_or_wrong_key_is_401_with_a_reason() {
        let t = tenants();
        for (h, message) in [
            (
                headers(&[]),
                "missing API key: send `Authorization: Bearer <key>` or `X-Weir-Key: <key>`",
            ),
            (
                headers(&[("authorization", "Bearer nope")]),
                "unknown API key",
            ),
            (
                headers(&[("authorization", "Basic abc")]),
                "Authorization: expected `Bearer <API key>`",
            ),
            (
                headers(&[("x-weir-key", "")]),
                "X-Weir-Key: empty or not a valid header value",
            ),
        ] {
            let r = t.authenticate(&h).unwrap_err();
            assert_eq!(r.status, StatusCode::UNAUTHORIZED);
            assert_eq!(r.message, message);
        }
    }

    #[test]
    fn a_reload_keeps_the_limiters_of_unchanged_tenants() {
        let first = tenants();
        let key = headers(&[("x-weir-key", "secret")]);
        let hash = hex::encode(Sha256::digest(b"secret"));
        let same = Config::parse(&format!(
            "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"{hash}\"]\ncategories = [\"app_*\"]\n"
        ))
        .unwrap();
        let reloaded = Tenants::from_config(&same, Some(&first), None, None).unwrap();
        assert!(Arc::ptr_eq(
            &first.authenticate(&key).unwrap().quotas,
            &reloaded.authenticate(&key).unwrap().quotas
        ));
        let changed = Config::parse(&format!(
            "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"{hash}\"]\nrequests_per_second = 5.0\n"
        ))
        .unwrap();
        let reloaded = Tenants::from_config(&changed, Some(&first), None, None).unwrap();
        let quotas = &reloaded.authenticate(&key).unwrap().quotas;
        assert_eq!(quotas.limits.requests_per_second, 5.0);
        assert_eq!(reloaded.len(), 1);
    }

    #[test]
    fn categories_are_authorized_by_glob() {
        let t = tenants();
        let tenant = t
            .authenticate(&headers(&[("x-weir-key", "secret")]))
            .unwrap();
        assert!(authorize(&tenant, "app_start").is_ok());
        let r = authorize(&tenant, "PERF").unwrap_err();
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(
            r.message,
            "meta.category: tenant 'acme' may not post to category 'PERF'"
        );
    }
}
