//! Authenticate: the API key in the request names the tenant, which may
//! then post only to its categories. The tenants themselves ([`Tenants`]) are
//! built here from the config, with their limiters and filter chains.
//!
//! The tenant always comes from the key, never from the body. Keys are kept
//! only as SHA-256 hashes; the key's hash is looked up and then compared in
//! constant time. Looking up by hash leaks nothing usable about the key.

use std::collections::HashMap;
use std::sync::Arc;

use http::{HeaderMap, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{Config, Limits};
use crate::edge::limit::region::Region;
use crate::edge::limit::Quotas;
use crate::model::{ErrorCode, Reject};
use crate::ops::metrics::Metrics;
use crate::pipeline::filter::host::FilterEngine;
use crate::pipeline::filter::FilterSlot;
use weir_core::headers::{api_key, unauthorized};

/// A tenant as the request path sees it, resolved from its API key.
pub struct Tenant {
    pub name: Arc<str>,
    /// Glob patterns of the categories it may post.
    pub categories: Vec<String>,
    /// Its rate limiters and in-flight count, with the limits they enforce.
    pub quotas: Arc<Quotas>,
    /// Its filter chain, in order.
    pub filters: Vec<Arc<FilterSlot>>,
    /// SHA-256 of the client certificates it must present; empty: none needed.
    pub client_certs: Vec<[u8; 32]>,
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tenant").field("name", &self.name).finish()
    }
}

impl Tenant {
    /// The tenant's limits.
    pub fn limits(&self) -> &Limits {
        &self.quotas.limits
    }

    /// Whether the tenant may post to `category` (a glob match, `*` any run of characters).
    pub fn allows(&self, category: &str) -> bool {
        self.categories
            .iter()
            .any(|pattern| glob_match(pattern.as_bytes(), category.as_bytes()))
    }
}

/// Matches `text` against `pattern`, where `*` stands for any run of bytes.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    // Iterative match with backtracking to the last star: linear for the
    // short patterns of a config file, no recursion.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

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
    /// With `region`, the tenants' rates are region-wide.
    pub fn from_config(
        config: &Config,
        previous: Option<&Tenants>,
        engine: Option<&Arc<FilterEngine>>,
        metrics: Option<&Metrics>,
        region: Option<&Arc<Region>>,
    ) -> Result<Tenants, String> {
        Self::build(config, previous, engine, metrics, region, false)
    }

    /// The registry of a node's start: as [`Self::from_config`], but a
    /// filter not compiled in the cache yet is left loading (see
    /// [`FilterSlot::load_or_defer`]), to load once the node listens.
    pub fn at_start(
        config: &Config,
        engine: &Arc<FilterEngine>,
        metrics: &Metrics,
        region: Option<&Arc<Region>>,
    ) -> Result<Tenants, String> {
        Self::build(config, None, Some(engine), Some(metrics), region, true)
    }

    fn build(
        config: &Config,
        previous: Option<&Tenants>,
        engine: Option<&Arc<FilterEngine>>,
        metrics: Option<&Metrics>,
        region: Option<&Arc<Region>>,
        defer: bool,
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
                _ => Arc::new(Quotas::carried(
                    &limits,
                    before.map(|b| &*b.quotas),
                    region.map(|r| (r, t.name.as_str())),
                )),
            };
            let mut filters = Vec::with_capacity(t.filters.len());
            for (position, settings) in t.filters.iter().enumerate() {
                let reused =
                    before.and_then(|b| b.filters.iter().find(|f| f.settings == *settings));
                filters.push(match (reused, engine) {
                    (Some(slot), Some(engine)) => {
                        // A reload the operator asked for looks at the file itself.
                        slot.reload_if_content_changed(engine);
                        Arc::clone(slot)
                    }
                    (Some(slot), None) => Arc::clone(slot),
                    (None, Some(engine)) => match if defer {
                        FilterSlot::load_or_defer(engine, settings)
                    } else {
                        FilterSlot::load(engine, settings)
                    } {
                        Ok(slot) => slot,
                        // A remote component that cannot be had keeps the
                        // version the chain had at this place.
                        Err(e) => match before
                            .and_then(|b| b.filters.get(position))
                            .filter(|old| settings.url.is_some() && old.settings.url.is_some())
                        {
                            Some(old) => FilterSlot::carried(old, settings, e),
                            None => return Err(format!("tenant '{}': {e}", t.name)),
                        },
                    },
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

    /// Every tenant's quotas, once each (a tenant may have several keys).
    pub fn quotas(&self) -> Vec<Arc<Quotas>> {
        let mut seen = std::collections::HashSet::new();
        self.by_key_hash
            .values()
            .filter(|t| seen.insert(Arc::as_ptr(&t.quotas)))
            .map(|t| t.quotas.clone())
            .collect()
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
        let key = api_key(headers)?;
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
        ErrorCode::ClientCertificateRequired,
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
            ErrorCode::CategoryNotAllowed,
            format!(
                "meta.category: tenant '{}' may not post to category '{category}'",
                tenant.name
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_like_a_shell() {
        for (pattern, text, expected) in [
            ("*", "anything", true),
            ("PERF_CRASH", "PERF_CRASH", true),
            ("PERF_CRASH", "PERF_CRASHX", false),
            ("app_*", "app_start", true),
            ("app_*", "app_", true),
            ("app_*", "ap", false),
            ("*_x_*", "a_x_b", true),
            ("*_x_*", "a_y_b", false),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYbZ", false),
        ] {
            assert_eq!(
                glob_match(pattern.as_bytes(), text.as_bytes()),
                expected,
                "{pattern} ~ {text}"
            );
        }
    }

    fn tenants() -> Tenants {
        let hash = hex::encode(Sha256::digest(b"secret"));
        let config = Config::parse(&format!(
            "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"{hash}\"]\ncategories = [\"app_*\"]\n"
        ))
        .unwrap();
        Tenants::from_config(&config, None, None, None, None).unwrap()
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
        let reloaded = Tenants::from_config(&same, Some(&first), None, None, None).unwrap();
        assert!(Arc::ptr_eq(
            &first.authenticate(&key).unwrap().quotas,
            &reloaded.authenticate(&key).unwrap().quotas
        ));
        let changed = Config::parse(&format!(
            "[[tenants]]\nname = \"acme\"\nkeys_sha256 = [\"{hash}\"]\nrequests_per_second = 5.0\n"
        ))
        .unwrap();
        let reloaded = Tenants::from_config(&changed, Some(&first), None, None, None).unwrap();
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
