//! Region-wide rates: each tenant's limits held across all the nodes that
//! share one Redis and key prefix (`[quotas]`).
//!
//! Redis keeps one token bucket per tenant and rate, refilled by Redis'
//! own clock inside a Lua script, so the nodes' clocks do not matter.
//! A node does not ask Redis for every request: it *leases* budget ahead of
//! need (`lease_ms` worth of the tenant's rate at a time, taken in the
//! background when its local tokens run low), spends it locally, and gives
//! back what it has not used after a quiet `sync_ms`. A request waits for
//! Redis only when its tenant's local tokens cannot cover it, once, for at
//! most `timeout_ms`. Leased tokens have left Redis' bucket, so the region
//! never admits more than the bucket gives; what a window can see beyond
//! the limit is only what nodes leased before it and spend in it: at most
//! one lease (plus one batch) per node.
//!
//! When Redis does not answer (down, frozen, refusing), the node serves
//! each tenant a per-node share of its limits (the limit divided by the
//! live nodes it last counted), says so once in its log, in `/readyz` and
//! in `weir_quota_region_synced`, and tries Redis again every `sync_ms`.
//!
//! Keys: `<prefix>:{<tenant>}:<rate>` (a tenant's keys share a Redis
//! Cluster hash slot) and `<prefix>:nodes` (live nodes). All expire; none
//! holds a key or an event.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisFuture, Script, Value};

use crate::config::QuotasConfig;
use crate::ops::metrics::QuotaReadings;

/// Takes up to `need + extra` tokens from a bucket: all of `need` or none
/// (a batch is taken whole), and as much of `extra` as is there. A
/// negative `need` gives tokens back. Returns the tokens granted and, when
/// `need` could not be, the milliseconds until it could.
///
/// KEYS[1]: the bucket. ARGV: rate (tokens per second), burst, need, extra.
const LEASE: &str = r#"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + tonumber(now[2]) / 1000
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local need, extra = tonumber(ARGV[3]), tonumber(ARGV[4])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]), tonumber(state[2])
if tokens == nil or at == nil then tokens, at = burst, now end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local granted, wait = 0, 0
if need < 0 then
  tokens = math.min(burst, tokens - need)
elseif tokens >= need then
  granted = need + math.max(0, math.min(extra, math.floor(tokens - need)))
  tokens = tokens - granted
else
  wait = math.ceil((need - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
-- Past the time to refill, the bucket is full: the key may go.
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {granted, wait}
"#;

/// Marks this node alive and counts the nodes seen alive within a window.
///
/// KEYS[1]: the nodes' sorted set. ARGV: this node, the window in ms.
const HEARTBEAT: &str = r#"
local now = redis.call('TIME')
now = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('PEXPIRE', KEYS[1], window * 2)
return redis.call('ZCARD', KEYS[1])
"#;

/// The Redis calls a node makes, for `weir_quota_redis_calls_total`.
#[derive(Debug, Clone, Copy)]
pub enum Call {
    /// Budget taken ahead of need, or for a request that waits.
    Lease,
    /// Unused budget given back.
    GiveBack,
    /// The node's heartbeat (and the probe of an unreachable Redis).
    Heartbeat,
}

impl Call {
    pub const ALL: [Call; 3] = [Call::Lease, Call::GiveBack, Call::Heartbeat];

    pub fn label(self) -> &'static str {
        match self {
            Call::Lease => "lease",
            Call::GiveBack => "give_back",
            Call::Heartbeat => "heartbeat",
        }
    }
}

/// How a Redis call ended.
pub const CALL_OUTCOMES: [&str; 3] = ["ok", "error", "timeout"];

/// What Redis answered a lease.
#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub granted: u64,
    /// When nothing was granted: how long until `need` could be.
    pub wait: Duration,
}

/// One Redis server, or a Redis Cluster (`quotas.cluster`): every call
/// touches one key, and a tenant's keys share a hash slot.
// One per node, made once: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    Single(Client),
    Cluster(ClusterClient),
}

/// A connection to either.
#[derive(Clone)]
enum Connection {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(cmd, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// This node's link to the region's shared budgets.
pub struct Region {
    backend: Backend,
    /// A multiplexed connection, dropped on an error or timeout (a frozen
    /// Redis would hold every later call behind it) and made again by the
    /// next [`Region::sync`].
    connection: ArcSwapOption<Connection>,
    prefix: String,
    /// This node in the live set: its name, process and start time, so two
    /// nodes on one host are two.
    member: String,
    /// The URL without its password, for logs.
    shown: String,
    pub timeout: Duration,
    pub lease: Duration,
    pub sync_every: Duration,
    synced: AtomicBool,
    nodes: AtomicU32,
    away: Mutex<Option<String>>,
    calls: [[AtomicU64; 3]; 3],
    lease_script: Script,
    heartbeat_script: Script,
}

/// A `[quotas]` setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RegionError {
    #[error("quotas.redis_url: {0}")]
    Url(String),
    #[error("quotas.ca_path: cannot read {path}: {source}")]
    Ca {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

impl Region {
    /// The link from `[quotas]`, or `None` without a `redis_url`. Makes no
    /// connection: [`Region::sync`] does.
    pub fn new(
        config: &QuotasConfig,
        region: &str,
        node: &str,
    ) -> Result<Option<Arc<Region>>, RegionError> {
        if config.redis_url.is_empty() {
            return Ok(None);
        }
        let url = config.redis_url.as_str();
        let certificates = if url.starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; ours is ring.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let root_cert = match &config.ca_path {
                Some(path) => Some(std::fs::read(path).map_err(|source| RegionError::Ca {
                    path: path.clone(),
                    source,
                })?),
                None => None,
            };
            Some(redis::TlsCertificates {
                client_tls: None,
                root_cert,
            })
        } else {
            None
        };
        let wait = Duration::from_millis(config.timeout_ms).max(Duration::from_secs(1));
        let backend = match (config.cluster, certificates) {
            (false, None) => Client::open(url).map(Backend::Single),
            (false, Some(certificates)) => {
                Client::build_with_tls(url, certificates).map(Backend::Single)
            }
            (true, certificates) => {
                let mut builder = ClusterClient::builder(vec![url])
                    .connection_timeout(wait)
                    .response_timeout(wait)
                    .retries(0);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                builder.build().map(Backend::Cluster)
            }
        }
        .map_err(|e| RegionError::Url(e.to_string()))?;
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        Ok(Some(Arc::new(Region {
            backend,
            connection: ArcSwapOption::empty(),
            prefix: config.key_prefix(region),
            member: format!("{node}/{}/{started}", std::process::id()),
            shown: without_password(url),
            timeout: Duration::from_millis(config.timeout_ms),
            lease: Duration::from_millis(config.lease_ms),
            sync_every: Duration::from_millis(config.sync_ms),
            synced: AtomicBool::new(false),
            nodes: AtomicU32::new(1),
            away: Mutex::new(Some("Redis not reached yet".into())),
            calls: Default::default(),
            lease_script: Script::new(LEASE),
            heartbeat_script: Script::new(HEARTBEAT),
        })))
    }

    /// The Redis key of one of a tenant's rates.
    pub fn key(&self, tenant: &str, rate: &str) -> String {
        format!("{}:{{{tenant}}}:{rate}", self.prefix)
    }

    /// Redis answers: leases are taken from the region's buckets.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    /// Live nodes last counted; at least 1.
    pub fn nodes(&self) -> u32 {
        self.nodes.load(Ordering::Relaxed).max(1)
    }

    /// For `/metrics`: every call × outcome, at 0 until it happens.
    pub fn readings(&self) -> QuotaReadings {
        let mut calls = Vec::with_capacity(Call::ALL.len() * CALL_OUTCOMES.len());
        for call in Call::ALL {
            for (o, outcome) in CALL_OUTCOMES.iter().enumerate() {
                let count = self.calls[call as usize][o].load(Ordering::Relaxed);
                calls.push((call.label(), *outcome, count));
            }
        }
        QuotaReadings {
            synced: self.synced(),
            nodes: self.nodes(),
            calls,
        }
    }

    /// `/readyz` detail.
    pub fn detail(&self) -> String {
        let nodes = self.nodes();
        match &*self.lock_away() {
            None => format!("region-wide: {nodes} node(s) share {}", self.shown),
            Some(why) => format!(
                "per-node share (1/{nodes} of each limit): {why}; Redis at {} is tried every {} ms",
                self.shown,
                self.sync_every.as_millis()
            ),
        }
    }

    fn lock_away(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.away.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, call: Call, outcome: usize) {
        self.calls[call as usize][outcome].fetch_add(1, Ordering::Relaxed);
    }

    /// Redis did not answer: serve on the share until the next sync
    /// reaches it. Logged once per spell.
    pub fn away(&self, why: String) {
        self.connection.store(None);
        let was_synced = self.synced.swap(false, Ordering::Relaxed);
        if was_synced {
            tracing::warn!(
                redis = %self.shown,
                nodes = self.nodes(),
                "Redis does not answer ({why}): each tenant gets this node's share of its limits until it does"
            );
        }
        *self.lock_away() = Some(why);
    }

    fn back(&self, nodes: u32) {
        self.nodes.store(nodes.max(1), Ordering::Relaxed);
        *self.lock_away() = None;
        if !self.synced.swap(true, Ordering::Relaxed) {
            tracing::info!(redis = %self.shown, nodes, "Redis answers: tenants' limits are region-wide");
        }
    }

    /// The connection, made if there is none.
    async fn connection(&self) -> redis::RedisResult<Connection> {
        if let Some(connection) = self.connection.load_full() {
            return Ok((*connection).clone());
        }
        let wait = self.timeout.max(Duration::from_secs(1));
        let connection = match &self.backend {
            Backend::Single(client) => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(wait))
                    .set_response_timeout(Some(wait));
                Connection::Single(
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await?,
                )
            }
            Backend::Cluster(client) => Connection::Cluster(client.get_async_connection().await?),
        };
        self.connection.store(Some(Arc::new(connection.clone())));
        Ok(connection)
    }

    /// One script call, bounded by `limit`; counted. `Err` says why it failed.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        call: Call,
        limit: Duration,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, String> {
        let result = tokio::time::timeout(limit, async {
            let mut connection = self.connection().await?;
            invocation.invoke_async::<T>(&mut connection).await
        })
        .await;
        match result {
            Ok(Ok(value)) => {
                self.count(call, 0);
                Ok(value)
            }
            Ok(Err(e)) => {
                self.count(call, 1);
                Err(format!("{}: {e}", call.label()))
            }
            Err(_) => {
                self.count(call, 2);
                Err(format!(
                    "{}: no answer within {} ms",
                    call.label(),
                    limit.as_millis()
                ))
            }
        }
    }

    /// Takes `need` tokens (all or none) and up to `extra` more from the
    /// bucket at `key`; a negative `need` gives tokens back. `Err` when
    /// Redis did not answer within `quotas.timeout_ms`; the node is then
    /// away from the region.
    pub async fn lease(
        &self,
        key: &str,
        per_second: f64,
        burst: u32,
        need: i64,
        extra: u64,
    ) -> Result<Lease, ()> {
        let call = if need < 0 {
            Call::GiveBack
        } else {
            Call::Lease
        };
        let mut invocation = self.lease_script.key(key);
        invocation.arg(per_second).arg(burst).arg(need).arg(extra);
        match self
            .invoke::<(u64, u64)>(call, self.timeout, invocation)
            .await
        {
            Ok((granted, wait_ms)) => Ok(Lease {
                granted,
                wait: Duration::from_millis(wait_ms),
            }),
            Err(why) => {
                self.away(why);
                Err(())
            }
        }
    }

    /// The heartbeat: says this node is alive, counts the live nodes, and
    /// brings an away node back to region-wide limits when Redis answers.
    /// The first connection may take up to a second.
    pub async fn sync(&self) {
        let window = self.sync_every * 3;
        let mut invocation = self.heartbeat_script.key(format!("{}:nodes", self.prefix));
        invocation.arg(&self.member).arg(window.as_millis() as u64);
        let limit = self
            .timeout
            .max(Duration::from_secs(1))
            .min(self.sync_every);
        match self.invoke::<u32>(Call::Heartbeat, limit, invocation).await {
            Ok(nodes) => self.back(nodes),
            Err(why) => self.away(why),
        }
    }

    /// Takes this node out of the live set (a clean stop), best effort.
    pub async fn leave(&self) {
        let Some(connection) = self.connection.load_full() else {
            return;
        };
        let mut connection = (*connection).clone();
        let _ = tokio::time::timeout(
            self.timeout,
            redis::cmd("ZREM")
                .arg(format!("{}:nodes", self.prefix))
                .arg(&self.member)
                .exec_async(&mut connection),
        )
        .await;
    }
}

/// `scheme://user:***@host/...`: a URL fit for logs.
fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.into();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.into(),
    }
}

/// One of a tenant's rates on this node, region-wide: the budget it holds
/// and the share it falls back to.
pub struct Shared {
    region: Arc<Region>,
    key: String,
    per_second: f64,
    burst: u32,
    /// Tokens taken from Redis at a time, beyond the need of the moment.
    lease_size: u64,
    held: Mutex<Held>,
    /// One lease call at a time: requests that find the budget spent wait
    /// for it rather than each call Redis.
    refilling: tokio::sync::Mutex<()>,
    /// A lease ahead of need is on its way.
    prefetching: AtomicBool,
}

#[derive(Debug)]
struct Held {
    tokens: u64,
    /// Redis said the region's bucket is empty until then: refuse without asking.
    empty_until: Option<Instant>,
    used_at: Instant,
}

impl Held {
    /// `n` from the tokens held, or how long the region said to wait;
    /// `None`: neither, ask Redis.
    fn take(&mut self, n: u64, now: Instant) -> Option<Taken> {
        if self.tokens >= n {
            self.tokens -= n;
            self.used_at = now;
            return Some(Taken::Yes);
        }
        match self.empty_until {
            Some(until) if until > now => Some(Taken::Later(until - now)),
            _ => None,
        }
    }
}

/// What [`Shared::take`] decided.
#[derive(Debug, PartialEq)]
pub enum Taken {
    Yes,
    /// The region is over the rate; the budget is back after `wait`.
    Later(Duration),
    /// Redis is away: decide on the node's share.
    Share,
}

impl Shared {
    pub fn new(
        region: &Arc<Region>,
        tenant: &str,
        rate: &str,
        per_second: f64,
        burst: u32,
    ) -> Arc<Shared> {
        let lease_size = ((per_second * region.lease.as_secs_f64()).ceil() as u64)
            .clamp(1, u64::from(burst.max(1)));
        Arc::new(Shared {
            region: region.clone(),
            key: region.key(tenant, rate),
            per_second,
            burst,
            lease_size,
            held: Mutex::new(Held {
                tokens: 0,
                empty_until: None,
                used_at: Instant::now(),
            }),
            refilling: tokio::sync::Mutex::new(()),
            prefetching: AtomicBool::new(false),
        })
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From the tokens held, if they cover `n` (and below half a lease
    /// left, the next lease is asked for in the background, so requests at
    /// a steady rate never wait for Redis); else the region's answer as of
    /// the last lease, if it said to wait. One lock.
    fn take_held(self: &Arc<Self>, n: u64) -> Option<Taken> {
        let mut held = self.lock();
        let taken = held.take(n, Instant::now());
        let low = held.tokens < self.lease_size.div_ceil(2);
        drop(held);
        if low && taken == Some(Taken::Yes) {
            self.prefetch();
        }
        taken
    }

    /// Takes `n` tokens: from those held (no wait), else from Redis (one
    /// bounded wait); `Share` when Redis is away.
    pub async fn take(self: &Arc<Self>, n: u64) -> Taken {
        if !self.region.synced() {
            return Taken::Share;
        }
        if let Some(taken) = self.take_held(n) {
            return taken;
        }
        match tokio::time::timeout(self.region.timeout, self.refill_and_take(n)).await {
            Ok(taken) => taken,
            Err(_) => {
                self.region.away(format!(
                    "a lease took more than {} ms",
                    self.region.timeout.as_millis()
                ));
                Taken::Share
            }
        }
    }

    async fn refill_and_take(&self, n: u64) -> Taken {
        let _one_at_a_time = self.refilling.lock().await;
        // Another request may have refilled while this one waited; if not,
        // the tokens held are this request's, the rest comes from Redis.
        let have = {
            let mut held = self.lock();
            if let Some(taken) = held.take(n, Instant::now()) {
                return taken;
            }
            std::mem::take(&mut held.tokens)
        };
        let need = n - have;
        let lease = self
            .region
            .lease(
                &self.key,
                self.per_second,
                self.burst,
                need as i64,
                self.lease_size,
            )
            .await;
        let mut held = self.lock();
        match lease {
            Ok(lease) if lease.granted >= need => {
                held.tokens += have + lease.granted - n;
                held.empty_until = None;
                held.used_at = Instant::now();
                Taken::Yes
            }
            Ok(lease) => {
                held.tokens += have + lease.granted;
                held.empty_until = Some(Instant::now() + lease.wait);
                Taken::Later(lease.wait)
            }
            Err(()) => {
                held.tokens += have;
                Taken::Share
            }
        }
    }

    /// Takes the next lease in the background (one at a time).
    fn prefetch(self: &Arc<Self>) {
        if self.prefetching.swap(true, Ordering::Relaxed) {
            return;
        }
        let shared = self.clone();
        tokio::spawn(async move {
            if let Ok(_one_at_a_time) = shared.refilling.try_lock() {
                let lease = shared
                    .region
                    .lease(
                        &shared.key,
                        shared.per_second,
                        shared.burst,
                        0,
                        shared.lease_size,
                    )
                    .await;
                if let Ok(lease) = lease {
                    shared.lock().tokens += lease.granted;
                }
            }
            shared.prefetching.store(false, Ordering::Relaxed);
        });
    }

    /// Gives back to the region the tokens held but not used for `idle`,
    /// so that a tenant that moves to other nodes finds its budget there.
    pub async fn give_back_idle(&self, idle: Duration) {
        let Ok(_one_at_a_time) = self.refilling.try_lock() else {
            return;
        };
        let tokens = {
            let mut held = self.lock();
            if held.tokens == 0 || held.used_at.elapsed() < idle {
                return;
            }
            std::mem::take(&mut held.tokens)
        };
        let _ = self
            .region
            .lease(&self.key, self.per_second, self.burst, -(tokens as i64), 0)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_never_show_the_password() {
        assert_eq!(
            without_password("rediss://weir:s3cret@redis.eu:6380/2"),
            "rediss://weir:***@redis.eu:6380/2"
        );
        assert_eq!(
            without_password("redis://:s3cret@10.0.0.1"),
            "redis://:***@10.0.0.1"
        );
        assert_eq!(
            without_password("redis://10.0.0.1:6379"),
            "redis://10.0.0.1:6379"
        );
    }

    #[test]
    fn a_tenants_keys_share_one_cluster_slot_and_say_whose_they_are() {
        let config = QuotasConfig {
            redis_url: "redis://127.0.0.1:1".into(),
            ..QuotasConfig::default()
        };
        let region = Region::new(&config, "eu-west", "node-a").unwrap().unwrap();
        assert_eq!(region.key("acme", "events"), "weir:eu-west:{acme}:events");
        assert_eq!(region.key("acme", "bytes"), "weir:eu-west:{acme}:bytes");
        // A lease of 100 ms at the rate, within the burst.
        let shared = Shared::new(&region, "acme", "events", 5000.0, 10_000);
        assert_eq!(shared.lease_size, 500);
        let shared = Shared::new(&region, "acme", "requests", 50.0, 2);
        assert_eq!(shared.lease_size, 2);
    }
}
