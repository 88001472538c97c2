//! The librdkafka client behind the producer, and its replacement when it
//! cannot recover (issue 17). Two failures leave a client that never
//! writes again while the node looks healthy:
//!
//! - a fatal error of the idempotent producer (librdkafka refuses every
//!   record from then on);
//! - a broker that lost the producer's state (a replaced or restored
//!   cluster, an expired producer id): librdkafka bumps the epoch and
//!   retries, the broker refuses every retry, every record times out,
//!   while metadata requests still succeed.
//!
//! [`supervise`] watches for both and builds a new client, which works at
//! once; the old one's records are purged, so that their requests spool
//! them (or answer `delivery_failed`, retryable, without a spool). A client
//! that keeps failing that way is given up on: the node then says it must
//! restart.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaResult;
use rdkafka::producer::{BaseProducer, Producer as _, PurgeConfig};

use super::acks::{serve_reports, Deliveries, KafkaContext};
use crate::ops::metrics::KafkaStats;

/// How often the supervisor looks at the client.
const TICK: Duration = Duration::from_secs(1);
/// Deliveries are judged over windows this long...
const WINDOW: Duration = Duration::from_secs(5);
/// ...and a client is replaced after this many windows with failures and
/// a cluster that answers metadata, with no delivery since the first.
const STALLED_WINDOWS: u32 = 2;
/// At most this many replacements within [`REBUILD_PERIOD`]; one more is
/// needed only when new clients fail too, and a restart is then due.
pub(super) const MAX_REBUILDS: usize = 3;
const REBUILD_PERIOD: Duration = Duration::from_secs(300);

/// One librdkafka producer and the task that serves its reports.
pub(super) struct Client {
    pub(super) rd: Arc<BaseProducer<KafkaContext>>,
    reports: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Client {
    fn new(config: &ClientConfig, context: KafkaContext) -> KafkaResult<Client> {
        let rd: Arc<BaseProducer<KafkaContext>> = Arc::new(config.create_with_context(context)?);
        let reports = tokio::spawn(serve_reports(rd.clone()));
        Ok(Client {
            rd,
            reports: Mutex::new(Some(reports)),
        })
    }

    /// Whether the cluster answers a metadata request within 2 s, asked
    /// off the runtime: the number of brokers, or why not. (The readiness
    /// check, the supervisor and replay all tell "away" from "answering"
    /// with it.)
    pub(super) async fn brokers(&self) -> Result<usize, String> {
        let rd = self.rd.clone();
        tokio::task::spawn_blocking(move || {
            rd.client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(|m| m.brokers().len())
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|answer| answer)
    }

    /// Ends the report task (and waits for it), so that nothing of the
    /// client outlives the caller's next step.
    pub(super) async fn close(&self) {
        let reports = self
            .reports
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(reports) = reports {
            reports.abort();
            let _ = reports.await;
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(reports) = self
            .reports
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
        {
            reports.abort();
        }
    }
}

/// The producer's current client, and what it takes to make another.
pub(super) struct Clients {
    current: ArcSwap<Client>,
    config: ClientConfig,
    stats: Arc<KafkaStats>,
    deliveries: Arc<Deliveries>,
    /// When clients were replaced, within [`REBUILD_PERIOD`].
    rebuilt: Mutex<VecDeque<Instant>>,
    /// Why replacing stopped helping: the node must restart.
    gave_up: Mutex<Option<String>>,
}

impl Clients {
    pub(super) fn new(config: ClientConfig, stats: Arc<KafkaStats>) -> KafkaResult<Clients> {
        let deliveries = Arc::new(Deliveries::default());
        let context = KafkaContext::new(stats.clone(), deliveries.clone());
        let client = Client::new(&config, context)?;
        Ok(Clients {
            current: ArcSwap::from_pointee(client),
            config,
            stats,
            deliveries,
            rebuilt: Mutex::new(VecDeque::new()),
            gave_up: Mutex::new(None),
        })
    }

    /// The client to use now.
    pub(super) fn load(&self) -> arc_swap::Guard<Arc<Client>> {
        self.current.load()
    }

    /// The client to use now, to keep across an await.
    pub(super) fn load_full(&self) -> Arc<Client> {
        self.current.load_full()
    }

    /// Why the node must restart, once replacing clients stopped helping.
    pub(super) fn gave_up(&self) -> Option<String> {
        self.gave_up
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the client with a new one, unless that happened too often
    /// already (then the node gives up); the old client's records are
    /// purged off the runtime, which answers their requests.
    fn rebuild(&self, why: &str) {
        let mut rebuilt = self.rebuilt.lock().unwrap_or_else(PoisonError::into_inner);
        while rebuilt
            .front()
            .is_some_and(|at| at.elapsed() > REBUILD_PERIOD)
        {
            rebuilt.pop_front();
        }
        if rebuilt.len() >= MAX_REBUILDS {
            let reason = format!(
                "{why}; {MAX_REBUILDS} new Kafka producers in {} s did not help: the node must restart",
                REBUILD_PERIOD.as_secs()
            );
            tracing::error!(reason, "giving up on the Kafka producer");
            *self.gave_up.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
            return;
        }
        let context = KafkaContext::new(self.stats.clone(), self.deliveries.clone());
        let client = match Client::new(&self.config, context) {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, reason = why, "cannot make a new Kafka producer");
                return;
            }
        };
        rebuilt.push_back(Instant::now());
        let old = self.current.swap(Arc::new(client));
        self.stats.producer_rebuilds.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            reason = why,
            "Kafka producer replaced by a new one; its records in flight are purged and answered"
        );
        tokio::task::spawn_blocking(move || {
            old.rd.purge(PurgeConfig::default().queue().inflight());
            // Serves the purge's reports, which answer the waiting requests.
            let _ = old.rd.flush(Duration::from_secs(2));
            drop(old);
        });
    }
}

/// Watches the client for a fatal error or a stall and replaces it (see
/// the module's documentation). Runs for the life of the producer.
pub(super) async fn supervise(clients: Arc<Clients>) {
    let mut tick = tokio::time::interval(TICK);
    let mut window = Window::new(&clients.deliveries);
    let mut stalled = 0;
    loop {
        tick.tick().await;
        if clients.gave_up().is_some() {
            return;
        }
        let client = clients.load_full();
        if let Some((code, reason)) = client.rd.client().fatal_error() {
            clients.rebuild(&format!("fatal producer error ({code:?}): {reason}"));
            window = Window::settling(&clients.deliveries);
            stalled = 0;
            continue;
        }
        let Some((ok, failed)) = window.close(&clients.deliveries) else {
            continue;
        };
        if ok > 0 {
            stalled = 0;
            continue;
        }
        // Nothing answered at all (records waiting out their timeout, or
        // none sent): no news either way. Answers of a stuck client come in
        // bursts, a delivery timeout apart, so such a window in between
        // must not reset the count.
        if failed == 0 {
            continue;
        }
        // Failing with nothing delivered: a cluster away does not answer
        // metadata either; one that answers has lost this client's state.
        stalled = match client.brokers().await {
            Ok(_) => stalled + 1,
            Err(_) => 0,
        };
        if stalled >= STALLED_WINDOWS {
            clients.rebuild(&format!(
                "{failed} records failed and none was delivered for {} s while the cluster answers metadata",
                (WINDOW * STALLED_WINDOWS).as_secs()
            ));
            window = Window::settling(&clients.deliveries);
            stalled = 0;
        }
    }
}

/// One window of delivery counts.
struct Window {
    opened: Instant,
    start: (u64, u64),
}

impl Window {
    fn new(deliveries: &Deliveries) -> Window {
        Window {
            opened: Instant::now(),
            start: deliveries.snapshot(),
        }
    }

    /// After a replacement: the first window starts once the old client's
    /// purged records are answered.
    fn settling(deliveries: &Deliveries) -> Window {
        Window {
            opened: Instant::now() + WINDOW,
            start: deliveries.snapshot(),
        }
    }

    /// Delivered and failed since the window opened, once it is over (a
    /// new one opens then).
    fn close(&mut self, deliveries: &Deliveries) -> Option<(u64, u64)> {
        let now = Instant::now();
        if now < self.opened {
            // Settling: the purge's answers are not counted.
            self.start = deliveries.snapshot();
            return None;
        }
        if now - self.opened < WINDOW {
            return None;
        }
        let end = deliveries.snapshot();
        let counts = (end.0 - self.start.0, end.1 - self.start.1);
        *self = Window::new(deliveries);
        Some(counts)
    }
}
