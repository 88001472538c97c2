//! Limits: per-tenant rates (governor GCRA), per-tenant and node-wide
//! in-flight caps with fair shedding, and a per-address rate for requests
//! that bring no valid key.
//!
//! Order on the request path: the request rate and the in-flight admission
//! are checked right after authentication, before the body is read; the
//! event rate after the split, for the whole batch at once (`check_n`): a
//! batch is taken or refused as a whole, never cut.
//!
//! With `[quotas]` set, the three rates are region-wide ([`region`]):
//! budget leased from Redis, a per-node share while Redis is away. The
//! in-flight caps and the address rate always stay per node: they protect
//! the node's own memory and CPU.
//!
//! Fair shedding: when the node's in-flight requests pass three quarters of
//! its cap, a tenant that holds more than its fair share (the cap divided by
//! the tenants with requests in flight) is shed with 503 first, so a quiet
//! tenant keeps getting answers while a noisy one floods.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use http::StatusCode;

use crate::config::Limits;
use crate::model::{ErrorCode, Reject};

pub mod processing;
pub mod region;

use region::{Region, Shared, Taken};

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Seconds a shed client is told to wait.
const SHED_RETRY_AFTER: u64 = 1;

/// A rate: so many per second, with a burst.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub per_second: f64,
    pub burst: u32,
}

impl Rate {
    /// This node's share of the rate among `nodes` live nodes (at least one
    /// cell of burst).
    fn share(self, nodes: u32) -> Rate {
        let nodes = nodes.max(1);
        Rate {
            per_second: self.per_second / f64::from(nodes),
            burst: self.burst.div_ceil(nodes).max(1),
        }
    }

    fn quota(self) -> Option<Quota> {
        if self.per_second <= 0.0 {
            return None; // 0 means no limit
        }
        let burst = NonZeroU32::new(self.burst.max(1))?;
        Quota::with_period(Duration::from_secs_f64(1.0 / self.per_second))
            .map(|q| q.allow_burst(burst))
    }
}

/// One rate and how it is enforced, named for the answers: by the node
/// alone, or region-wide with the node's share as the fallback.
struct Bucket {
    name: &'static str,
    rate: Rate,
    /// The whole rate, on this node alone (no `[quotas]`).
    limiter: Limiter,
    /// Region-wide, with the share this node falls back to (built for the
    /// live-node count it was last made for).
    region: Option<(Arc<Shared>, ShareLimiter)>,
}

/// The node's share of a region-wide rate, for the live-node count it was made for.
type ShareLimiter = Mutex<Option<(u32, Arc<Limiter>)>>;

impl Bucket {
    fn new(name: &'static str, rate: Rate, region: Option<(&Arc<Region>, &str)>) -> Option<Bucket> {
        Some(Bucket {
            name,
            rate,
            limiter: limiter(rate.quota()?),
            region: region.map(|(region, tenant)| {
                let shared = Shared::new(region, tenant, name, rate.per_second, rate.burst);
                (shared, Mutex::new(None))
            }),
        })
    }

    /// `RateLimit-Policy` item: `"requests";q=100;w=1`.
    fn policy(&self) -> String {
        format!(
            "\"{}\";q={};w=1",
            self.name,
            format_rate(self.rate.per_second)
        )
    }

    /// Takes `n` cells, or says when they could be taken.
    async fn check(&self, n: u32) -> Result<(), Refusal> {
        let Some(n) = NonZeroU32::new(n) else {
            return Ok(());
        };
        let Some((shared, share)) = &self.region else {
            return self.check_with(&self.limiter, n);
        };
        if n.get() > self.rate.burst.max(1) {
            return Err(Refusal::Never {
                bucket: self.name,
                burst: self.rate.burst,
            });
        }
        match shared.take(u64::from(n.get())).await {
            Taken::Yes => Ok(()),
            Taken::Later(wait) => Err(self.later(wait)),
            Taken::Share => {
                let limiter = self.share(share, shared.region().nodes());
                match self.check_with(&limiter, n) {
                    // More at once than the share's burst, though within
                    // the tenant's: it passes once the share has refilled.
                    Err(Refusal::Never { .. }) => {
                        let per_second = self.rate.per_second / f64::from(shared.region().nodes());
                        Err(self.later(Duration::from_secs_f64(f64::from(n.get()) / per_second)))
                    }
                    decided => decided,
                }
            }
        }
    }

    fn check_with(&self, limiter: &Limiter, n: NonZeroU32) -> Result<(), Refusal> {
        match limiter.check_n(n) {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(not_until)) => {
                Err(self.later(not_until.wait_time_from(DefaultClock::default().now())))
            }
            Err(_) => Err(Refusal::Never {
                bucket: self.name,
                burst: self.rate.burst,
            }),
        }
    }

    fn later(&self, wait: Duration) -> Refusal {
        Refusal::Later {
            bucket: self.name,
            wait,
            policy: self.policy(),
        }
    }

    /// The node's share of the rate among `nodes` live nodes: a limiter
    /// made when the count changes, kept otherwise (its spent cells with it).
    fn share(&self, share: &ShareLimiter, nodes: u32) -> Arc<Limiter> {
        let mut share = share.lock().unwrap_or_else(|p| p.into_inner());
        match &*share {
            Some((made_for, limiter)) if *made_for == nodes => limiter.clone(),
            _ => {
                // A rate that has a quota has one when divided.
                let limiter = Arc::new(limiter(
                    self.rate
                        .share(nodes)
                        .quota()
                        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)),
                ));
                *share = Some((nodes, limiter.clone()));
                limiter
            }
        }
    }
}

fn limiter(quota: Quota) -> Limiter {
    RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>()
}

/// `Retry-After` is whole seconds: round up, so that retrying after it succeeds.
fn whole_seconds_up(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn format_rate(per_second: f64) -> String {
    if per_second.fract() == 0.0 {
        format!("{per_second:.0}")
    } else {
        format!("{per_second}")
    }
}

/// Why a limiter refused.
#[derive(Debug)]
pub enum Refusal {
    /// Over the rate now; `wait` is the earliest time it would pass.
    Later {
        bucket: &'static str,
        wait: Duration,
        policy: String,
    },
    /// More at once than the burst: it can never pass.
    Never { bucket: &'static str, burst: u32 },
}

impl Refusal {
    /// The rejection for this refusal: 429 with an exact `Retry-After` and
    /// the RateLimit headers, or 413 when the batch can never fit.
    pub fn reject(&self, what: &str) -> Reject {
        match self {
            Refusal::Later {
                bucket,
                wait,
                policy,
            } => {
                let seconds = whole_seconds_up(*wait);
                // Rounded up as the seconds are: a client that waits this
                // long is not refused again for a millisecond short.
                let millis = u64::try_from(wait.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX);
                let mut reject = Reject::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    format!("{what}: over the tenant's {bucket} rate; retry after {millis} ms"),
                )
                .with_header("retry-after", seconds.to_string())
                .with_header("ratelimit-policy", policy.clone())
                .with_header("ratelimit", format!("\"{bucket}\";r=0;t={seconds}"));
                reject.limit = Some(bucket);
                reject.retry_after_ms = Some(millis);
                reject
            }
            Refusal::Never { bucket, burst } => {
                let mut reject = Reject::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    ErrorCode::BatchOverBurst,
                    format!("{what}: more than the tenant's {bucket} burst of {burst} at once; split the batch"),
                );
                reject.limit = Some(bucket);
                reject
            }
        }
    }
}

/// A tenant's rate limiters and in-flight count. A config reload keeps
/// them whole while the tenant's limits do not change, and otherwise
/// carries over the in-flight count and every limiter whose rate did not
/// change ([`Quotas::carried`]): a reload refills no burst and forgets no
/// request in flight.
pub struct Quotas {
    requests: Option<Arc<Bucket>>,
    events: Option<Arc<Bucket>>,
    bytes: Option<Arc<Bucket>>,
    max_inflight: usize,
    inflight: Arc<AtomicUsize>,
    /// The limits these were built from.
    pub limits: Limits,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("limits", &self.limits)
            .finish()
    }
}

impl Quotas {
    pub fn new(limits: &Limits) -> Quotas {
        Quotas::carried(limits, None, None)
    }

    /// The quotas for `limits`, carrying over from `before` (the tenant's
    /// until a reload) its in-flight count and each limiter whose rate is
    /// the same. With `region` (the link and the tenant's name), the rates
    /// are region-wide.
    pub fn carried(
        limits: &Limits,
        before: Option<&Quotas>,
        region: Option<(&Arc<Region>, &str)>,
    ) -> Quotas {
        let bucket = |name, per_second, burst, old: Option<&Arc<Bucket>>| {
            let rate = Rate { per_second, burst };
            match old {
                Some(old) if old.rate == rate => Some(old.clone()),
                _ => Bucket::new(name, rate, region).map(Arc::new),
            }
        };
        Quotas {
            requests: bucket(
                "requests",
                limits.requests_per_second,
                limits.requests_burst,
                before.and_then(|b| b.requests.as_ref()),
            ),
            events: bucket(
                "events",
                limits.events_per_second,
                limits.events_burst,
                before.and_then(|b| b.events.as_ref()),
            ),
            bytes: bucket(
                "bytes",
                limits.bytes_per_second,
                limits.bytes_burst,
                before.and_then(|b| b.bytes.as_ref()),
            ),
            max_inflight: limits.max_inflight,
            inflight: before.map_or_else(Default::default, |b| b.inflight.clone()),
            limits: limits.clone(),
        }
    }

    /// One request against the request rate.
    pub async fn check_request(&self) -> Result<(), Refusal> {
        match &self.requests {
            Some(bucket) => bucket.check(1).await,
            None => Ok(()),
        }
    }

    /// A whole batch of `n` events against the event rate.
    pub async fn check_events(&self, n: u32) -> Result<(), Refusal> {
        match &self.events {
            Some(bucket) => bucket.check(n).await,
            None => Ok(()),
        }
    }

    /// A body's bytes (after decompression) against the byte rate; a body
    /// larger than the burst can never pass. `check_bytes(1)` before the
    /// body is read refuses a tenant already over its rate.
    pub async fn check_bytes(&self, n: usize) -> Result<(), Refusal> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        match &self.bytes {
            Some(bucket) => bucket.check(n).await,
            None => Ok(()),
        }
    }

    /// Gives back to the region the budget this node holds for the tenant
    /// but has not used for `idle`.
    pub async fn give_back_idle(&self, idle: Duration) {
        for bucket in [&self.requests, &self.events, &self.bytes]
            .into_iter()
            .flatten()
        {
            if let Some((shared, _)) = &bucket.region {
                shared.give_back_idle(idle).await;
            }
        }
    }

    /// Requests of this tenant now in flight.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Relaxed)
    }
}

/// The node-wide in-flight count, and the admission that uses it.
///
/// Decisions are taken under one lock (a few nanoseconds, once per request)
/// so that concurrent requests cannot all slip past a threshold together.
#[derive(Debug)]
pub struct Admission {
    max: usize,
    state: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    /// Requests in flight on the node.
    inflight: usize,
    /// Tenants with at least one request in flight.
    active: usize,
}

/// A request in flight; counted until dropped. It owns what it counts, so
/// it can outlive the request: the producer keeps it until the request's
/// last record is answered, also when the client went away before that.
#[must_use]
pub struct Admitted {
    admission: Arc<Admission>,
    /// The tenant's in-flight count ([`Quotas`]).
    tenant: Arc<AtomicUsize>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut counts = self.admission.lock();
        counts.inflight -= 1;
        if self.tenant.fetch_sub(1, Ordering::AcqRel) == 1 {
            counts.active -= 1;
        }
    }
}

impl Admission {
    pub fn new(max: usize) -> Arc<Admission> {
        Arc::new(Admission {
            max,
            state: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        // The counts stay consistent even if a holder panicked: take them as they are.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Requests in flight on the node.
    pub fn inflight(&self) -> usize {
        self.lock().inflight
    }

    /// Admits one request of the tenant, or sheds it.
    ///
    /// Below three quarters of the node's cap everyone is admitted (up to the
    /// tenant's own cap). Above it, a tenant is admitted only while it holds
    /// less than an equal share of those three quarters, so no tenant alone
    /// can fill the node, and the last quarter is there for tenants under
    /// their share.
    pub fn admit(self: &Arc<Self>, quotas: &Quotas) -> Result<Admitted, Reject> {
        let mut counts = self.lock();
        let mine = quotas.inflight.load(Ordering::Acquire);
        if mine >= quotas.max_inflight {
            return Err(Reject::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::TooManyInFlight,
                format!(
                    "the tenant already has {} requests in flight (its limit)",
                    quotas.max_inflight
                ),
            )
            .with_header("retry-after", SHED_RETRY_AFTER.to_string()));
        }
        if counts.inflight >= self.max {
            return Err(overloaded("the node is at its in-flight limit"));
        }
        let busy = self.max * 3 / 4;
        if counts.inflight >= busy {
            let active = counts.active + usize::from(mine == 0);
            if mine >= (busy / active).max(1) {
                return Err(overloaded(
                    "the node is busy and this tenant holds more than its share",
                ));
            }
        }
        counts.inflight += 1;
        if quotas.inflight.fetch_add(1, Ordering::AcqRel) == 0 {
            counts.active += 1;
        }
        Ok(Admitted {
            admission: self.clone(),
            tenant: quotas.inflight.clone(),
        })
    }
}

fn overloaded(why: &str) -> Reject {
    Reject::new(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Overloaded,
        format!("{why}; retry later"),
    )
    .with_header("retry-after", SHED_RETRY_AFTER.to_string())
}

/// The unit a client address is limited as: an IPv4 address, or the /64
/// of an IPv6 one (a single host is usually given a whole /64, and could
/// otherwise take a new address for every request). An IPv4 address
/// mapped into IPv6 counts as itself.
pub fn client_network(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !u128::from(u64::MAX)).into()),
        },
    }
}

/// Requests without a valid key, limited per client address (see
/// [`client_network`]) so that an unauthenticated flood costs almost nothing.
pub struct Unauthenticated {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
}

impl Unauthenticated {
    pub fn new(rate: Rate) -> Option<Unauthenticated> {
        Some(Unauthenticated {
            limiter: RateLimiter::keyed(rate.quota()?),
        })
    }

    /// Counts one failed request from `ip`; `Err` when the address is over its rate.
    pub fn check(&self, ip: IpAddr) -> Result<(), Reject> {
        self.limiter
            .check_key(&client_network(ip))
            .map_err(|not_until| {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                let seconds = whole_seconds_up(wait);
                Reject::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    "too many requests without a valid API key from this address",
                )
                .with_header("retry-after", seconds.to_string())
            })
    }

    /// Forgets addresses whose limit has fully recovered (bounds memory).
    pub fn prune(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check without Redis never waits: run it to the end here.
    fn now<F: std::future::Future>(check: F) -> F::Output {
        futures::executor::block_on(check)
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let net = |ip: &str| client_network(ip.parse().unwrap()).to_string();
        assert_eq!(net("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(net("2001:db8:1:2:bbbb::9"), "2001:db8:1:2::");
        assert_eq!(net("81.2.69.142"), "81.2.69.142");
        assert_eq!(net("::ffff:81.2.69.142"), "81.2.69.142");
        let unauthenticated = Unauthenticated::new(Rate {
            per_second: 1.0,
            burst: 2,
        })
        .unwrap();
        for i in 1..=2 {
            let ip = format!("2001:db8::{i}").parse().unwrap();
            assert!(unauthenticated.check(ip).is_ok());
        }
        let other_address_same_64 = "2001:db8::ffff".parse().unwrap();
        assert!(unauthenticated.check(other_address_same_64).is_err());
        assert!(unauthenticated
            .check("2001:db8:0:1::1".parse().unwrap())
            .is_ok());
    }

    fn limits(rps: f64, burst: u32, eps: f64, events_burst: u32, inflight: usize) -> Limits {
        Limits {
            requests_per_second: rps,
            requests_burst: burst,
            events_per_second: eps,
            events_burst,
            max_inflight: inflight,
            ..Limits::default()
        }
    }

    #[test]
    fn the_request_rate_allows_its_burst_then_says_when() {
        let q = Quotas::new(&limits(0.5, 3, 0.0, 0, 10));
        for _ in 0..3 {
            now(q.check_request()).unwrap();
        }
        let reject = now(q.check_request()).unwrap_err().reject("request");
        assert_eq!(reject.status, StatusCode::TOO_MANY_REQUESTS);
        let header = |n: &str| {
            reject
                .headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        // One cell every 2 s: the next one in just under 2 s, rounded up.
        assert_eq!(header("retry-after").as_deref(), Some("2"));
        assert_eq!(
            header("ratelimit-policy").as_deref(),
            Some("\"requests\";q=0.5;w=1")
        );
        assert_eq!(header("ratelimit").as_deref(), Some("\"requests\";r=0;t=2"));
        assert!((1..=2000).contains(&reject.retry_after_ms.unwrap()));
        assert_eq!(reject.limit, Some("requests"));
    }

    proptest::proptest! {
        /// Any rate the config takes, shared among any number of live nodes
        /// (a count Redis reports), is a limiter that works: it has a quota
        /// (not the 1/s fallback), its burst times its period does not
        /// overflow governor's arithmetic, the shares' bursts add up to at
        /// least the tenant's, and their rates to the tenant's.
        #[test]
        fn every_share_of_a_valid_rate_is_a_working_limiter(
            per_second in 1e-6f64..=1e9,
            burst in 1u32..=u32::MAX,
            nodes in proptest::prop_oneof![1u32..=64, 1u32..=u32::MAX],
        ) {
            // What config::check_rate takes.
            proptest::prop_assume!(f64::from(burst) * 1e9 / per_second < 9e18);
            let share = Rate { per_second, burst }.share(nodes);
            let quota = share.quota();
            proptest::prop_assert!(quota.is_some(), "{share:?}");
            let limiter = limiter(quota.unwrap());
            // Its burst passes at once, and (where a cell takes more than a
            // millisecond to come back) the next one waits.
            let burst_n = NonZeroU32::new(share.burst).unwrap();
            proptest::prop_assert!(matches!(limiter.check_n(burst_n), Ok(Ok(_))), "{share:?}");
            if share.per_second < 1e3 {
                proptest::prop_assert!(matches!(limiter.check_n(NonZeroU32::MIN), Ok(Err(_))), "{share:?}");
            }
            proptest::prop_assert!(u64::from(share.burst) * u64::from(nodes) >= u64::from(burst));
            let whole = share.per_second * f64::from(nodes);
            proptest::prop_assert!((whole - per_second).abs() <= per_second * 1e-9, "{whole} vs {per_second}");
        }

        /// Every wait a refusal names, in seconds (`Retry-After`,
        /// `RateLimit`'s `t`) and in milliseconds (`retry_after_ms`, the
        /// message), is the limiter's wait rounded up to its unit: never
        /// shorter (a client that waits it is not refused again for want
        /// of a fraction), and shorter by a whole unit never covers it.
        #[test]
        fn a_refusals_waits_round_up(nanos in 0u64..100_000_000_000) {
            let wait = Duration::from_nanos(nanos);
            let reject = Refusal::Later { bucket: "events", wait, policy: String::new() }.reject("batch");
            let header = |n: &str| reject.headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone()).unwrap();
            let seconds: u64 = header("retry-after").parse().unwrap();
            proptest::prop_assert!(Duration::from_secs(seconds) >= wait);
            proptest::prop_assert!(seconds == 0 || Duration::from_secs(seconds - 1) < wait);
            proptest::prop_assert_eq!(header("ratelimit"), format!("\"events\";r=0;t={seconds}"));
            let millis = reject.retry_after_ms.unwrap();
            proptest::prop_assert!(Duration::from_millis(millis) >= wait);
            proptest::prop_assert!(millis == 0 || Duration::from_millis(millis - 1) < wait);
            let said = format!("retry after {millis} ms");
            proptest::prop_assert!(reject.message.contains(&said), "{}", reject.message);
        }
    }

    /// A reload that changes a tenant's limits keeps what did not change:
    /// a spent burst stays spent, and requests in flight stay counted.
    #[test]
    fn a_reload_carries_over_spent_bursts_and_requests_in_flight() {
        let before = Quotas::new(&limits(0.01, 2, 0.01, 10, 5));
        now(before.check_request()).unwrap();
        now(before.check_request()).unwrap();
        now(before.check_events(10)).unwrap();
        let admission = Admission::new(100);
        let _admitted = admission.admit(&before).unwrap();
        // Another limit changes: both spent bursts carry over.
        let mut other = limits(0.01, 2, 0.01, 10, 5);
        other.max_body_bytes /= 2;
        let after = Quotas::carried(&other, Some(&before), None);
        assert!(now(after.check_request()).is_err());
        assert!(now(after.check_events(1)).is_err());
        assert_eq!(after.inflight(), 1);
        // The request rate changes: it starts afresh; the event rate does not.
        let after = Quotas::carried(&limits(0.01, 3, 0.01, 10, 5), Some(&before), None);
        now(after.check_request()).unwrap();
        assert!(now(after.check_events(1)).is_err());
        assert_eq!(after.inflight(), 1);
    }

    #[test]
    fn a_batch_is_taken_or_refused_whole() {
        let q = Quotas::new(&limits(0.0, 0, 1.0, 10, 10));
        now(q.check_events(8)).unwrap();
        assert!(matches!(now(q.check_events(5)), Err(Refusal::Later { .. })));
        // Nothing was taken by the refused batch: 2 cells are still there.
        now(q.check_events(2)).unwrap();
        let never = now(q.check_events(11)).unwrap_err().reject("data");
        assert_eq!(never.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(
            never.message,
            "data: more than the tenant's events burst of 10 at once; split the batch"
        );
        // Zero means no limit.
        now(Quotas::new(&limits(0.0, 0, 0.0, 0, 1)).check_events(1_000_000)).unwrap();
    }

    #[test]
    fn in_flight_caps_and_fair_shedding() {
        let admission = Admission::new(8);
        let noisy = Quotas::new(&limits(0.0, 0, 0.0, 0, 100));
        let quiet = Quotas::new(&limits(0.0, 0, 0.0, 0, 100));
        let mut held = Vec::new();
        // Alone, a tenant gets three quarters of the node, not all of it.
        for _ in 0..6 {
            held.push(admission.admit(&noisy).unwrap());
        }
        let shed = admission.admit(&noisy).err().unwrap();
        assert_eq!(
            (shed.status, shed.error),
            (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::Overloaded)
        );
        // The last quarter is there for a tenant under its share (3 of the busy 6).
        let q1 = admission.admit(&quiet).unwrap();
        let q2 = admission.admit(&quiet).unwrap();
        assert!(admission.admit(&noisy).is_err());
        // Full: everyone is shed.
        assert_eq!(admission.inflight(), 8);
        assert_eq!(
            admission.admit(&quiet).err().unwrap().status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        drop((q1, q2));
        held.clear();
        assert_eq!(admission.inflight(), 0);
        assert_eq!(noisy.inflight(), 0);
        assert_eq!(admission.lock().active, 0);

        let capped = Quotas::new(&limits(0.0, 0, 0.0, 0, 1));
        let _one = admission.admit(&capped).unwrap();
        let r = admission.admit(&capped).err().unwrap();
        assert_eq!(
            (r.status, r.error),
            (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyInFlight)
        );
    }

    #[test]
    fn unauthenticated_requests_are_limited_per_address() {
        // A token every 100 s: nothing recovers while the test runs.
        let u = Unauthenticated::new(Rate {
            per_second: 0.01,
            burst: 2,
        })
        .unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        u.check(a).unwrap();
        u.check(a).unwrap();
        assert_eq!(
            u.check(a).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        u.check(b).unwrap();
        // Pruning forgets only addresses whose limit has recovered: `a`,
        // still over it, stays limited.
        u.prune();
        assert_eq!(
            u.check(a).unwrap_err().status,
            StatusCode::TOO_MANY_REQUESTS
        );
        assert_eq!(u.limiter.len(), 2);
    }
}
