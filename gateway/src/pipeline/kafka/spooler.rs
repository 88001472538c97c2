//! The producer's side of the spool (issue 17): events Kafka cannot take
//! now are written to the node's durable spool ([`crate::pipeline::spool`])
//! and answered `spooled`; [`super::replay`] sends them on once it can.
//!
//! Three things keep a key's events in the order they were accepted:
//! - while a key has records in the spool, its new events are spooled
//!   behind them ([`Spooler::holds`]), never sent past them;
//! - replay sends oldest first, and waits while records a request gave up
//!   on are still in librdkafka's queue (they may yet be delivered, before
//!   anything spooled after them);
//! - such a late delivery acknowledges the record's spooled copy, so that
//!   replay does not send it again (when replay got there first, the event
//!   is in Kafka twice and counted in `duplicates`).

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tokio::sync::{mpsc, Notify};

use crate::config::SpoolConfig;
use crate::model::{Part, PartCode};
use crate::ops::metrics::SpoolReadings;
use crate::pipeline::spool::{
    DiskFault, Recovery, Spool, SpoolError, SpoolOptions, SpoolRecord, SyncPolicy,
};

/// The spool as the producer uses it, shared by the requests and the
/// replay task.
pub struct Spooler {
    pub(super) spool: Arc<Spool>,
    /// This node's name, in every `spooled` part.
    node: Arc<str>,
    /// How long a request waits for Kafka before spooling.
    pub(super) wait: Duration,
    /// Records in the spool per key (a hash of topic and record key).
    keys: Mutex<HashMap<u64, u32>>,
    /// When records were accepted, one sample a second at most: the age of
    /// the oldest record without reading it from disk.
    ages: Mutex<VecDeque<(u64, u64)>>,
    /// Records that requests stopped waiting for and librdkafka still holds.
    pub(super) abandoned: AtomicU64,
    /// When Kafka last acknowledged a record (Unix ms).
    last_delivery_ms: AtomicU64,
    /// Until when (Unix ms) Kafka counts as away after its metadata could
    /// not be had.
    unreachable_until_ms: AtomicU64,
    /// Late deliveries of spooled records, for the replay task to acknowledge.
    late: mpsc::UnboundedSender<Late>,
    pub(super) late_rx: Mutex<Option<mpsc::UnboundedReceiver<Late>>>,
    /// The latest disk fault of an append, cleared by the next good one.
    fault: Mutex<Option<String>>,
    /// Events are in the spool (for the log lines when that starts and ends).
    spooling: std::sync::atomic::AtomicBool,
    /// Woken when records are spooled (the replay task waits on it).
    pub(super) more: Notify,
    pub counters: SpoolCounters,
}

/// A spooled record that librdkafka delivered after all: its number and key.
#[derive(Debug, Clone, Copy)]
pub(super) struct Late {
    pub seq: u64,
    pub key: Option<u64>,
}

/// The spool's counters, for the metrics.
#[derive(Debug, Default)]
pub struct SpoolCounters {
    /// Events written to the spool.
    pub spooled: AtomicU64,
    /// Spooled events replay delivered.
    pub replayed: AtomicU64,
    /// Spooled events Kafka took twice (delivered late and replayed).
    pub duplicates: AtomicU64,
    /// Spooled events whose first send was delivered after all.
    pub late: AtomicU64,
    /// Events refused because the spool (or the tenant's share) was full.
    pub full: AtomicU64,
    /// Appends that failed on the disk.
    pub disk_errors: AtomicU64,
    /// Spooled records Kafka refuses for good (too large for the topic).
    pub refused: AtomicU64,
}

/// One event to spool: its position in the batch and its record.
pub(super) struct ToSpool {
    pub index: usize,
    pub backend_id: Option<Box<str>>,
    pub key: Option<u64>,
    pub payload: Vec<u8>,
}

impl Spooler {
    /// Opens the spool of `config` (recovering what a crash left) and reads
    /// it once, streaming, for the keys it holds; `None` without a path.
    pub fn open(config: &SpoolConfig, node: Arc<str>) -> Result<Option<Arc<Spooler>>, SpoolError> {
        let Some(path) = &config.path else {
            return Ok(None);
        };
        let options = SpoolOptions {
            path: path.clone(),
            max_bytes: config.max_bytes,
            tenant_max_bytes: config.tenant_max_bytes,
            segment_bytes: config.segment_bytes,
            sync: match config.fsync.as_str() {
                "never" => SyncPolicy::Never,
                _ => SyncPolicy::Always,
            },
        };
        let (spool, recovery) = Spool::open(options)?;
        log_recovery(path, &recovery);
        let (late, late_rx) = mpsc::unbounded_channel();
        let spooler = Spooler {
            spool,
            node,
            wait: Duration::from_millis(config.wait_ms),
            keys: Mutex::new(HashMap::new()),
            ages: Mutex::new(VecDeque::new()),
            abandoned: AtomicU64::new(0),
            last_delivery_ms: AtomicU64::new(now_ms()),
            unreachable_until_ms: AtomicU64::new(0),
            late,
            late_rx: Mutex::new(Some(late_rx)),
            fault: Mutex::new(None),
            spooling: std::sync::atomic::AtomicBool::new(false),
            more: Notify::new(),
            counters: SpoolCounters::default(),
        };
        spooler.scan()?;
        let stats = spooler.spool.stats();
        if stats.records > 0 {
            tracing::info!(path = %path.display(), records = stats.records, bytes = stats.bytes,
                "spool: events from before the restart, replayed once Kafka answers");
        }
        Ok(Some(Arc::new(spooler)))
    }

    /// Reads every pending record once, for the keys and ages it holds.
    fn scan(&self) -> Result<(), SpoolError> {
        let mut reader = self.spool.reader();
        let mut keys = lock(&self.keys);
        while let Some(spooled) = reader.next_record()? {
            // An unreadable record is replayed as bytes it cannot be (see
            // `replay`); it holds no key.
            let Ok(record) = SpoolRecord::decode(&spooled.payload) else {
                continue;
            };
            if let Some(key) = &record.key {
                *keys.entry(key_hash(&record.topic, key)).or_default() += 1;
            }
            self.sample_age(spooled.seq, record.accepted_at_ms);
        }
        Ok(())
    }

    /// Kafka acknowledged a record just now.
    pub(super) fn kafka_delivered(&self) {
        self.last_delivery_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Whether Kafka looks away: records a request gave up on are still
    /// unanswered and nothing was acknowledged for a whole wait. New events
    /// are then spooled at once instead of each request waiting out
    /// `wait` first; the abandoned records' answers (delivered when Kafka is
    /// back, failed after `kafka.delivery_timeout_ms`) end it.
    pub(super) fn kafka_away(&self) -> bool {
        let now = now_ms();
        if now < self.unreachable_until_ms.load(Ordering::Relaxed) {
            return true;
        }
        let since = now.saturating_sub(self.last_delivery_ms.load(Ordering::Relaxed));
        self.abandoned.load(Ordering::Relaxed) > 0 && since >= self.wait.as_millis() as u64
    }

    /// Kafka's metadata could not be had: for one wait, requests spool at
    /// once rather than each wait for a lookup (then one tries again).
    pub(super) fn note_unreachable(&self) {
        let until = now_ms() + self.wait.as_millis() as u64;
        self.unreachable_until_ms.store(until, Ordering::Relaxed);
    }

    /// Whether the key has records in the spool: its new events go behind them.
    pub(super) fn holds(&self, key: u64) -> bool {
        lock(&self.keys).get(&key).is_some_and(|&n| n > 0)
    }

    /// Writes the events' records under `tenant`, each answered once it is
    /// durable: `spooled` with its number, or `delivery_failed` (retryable)
    /// with the reason when the spool is full or the disk refused.
    pub(super) async fn spool(
        self: &Arc<Self>,
        tenant: &str,
        events: Vec<ToSpool>,
    ) -> Vec<(usize, Result<u64, Part>)> {
        let this = self.clone();
        let owned = tenant.to_owned();
        let written = tokio::task::spawn_blocking(move || this.write_durably(&owned, events)).await;
        let answers = match written {
            Ok(answers) => answers,
            // The blocking task panicked: nothing can be said to be on disk.
            Err(e) => {
                tracing::error!(error = %e, "spool: the write task failed");
                return Vec::new();
            }
        };
        if answers.iter().any(|(_, r)| r.is_ok()) {
            if !self.spooling.swap(true, Ordering::Relaxed) {
                tracing::warn!(tenant, "Kafka cannot take events now: spooling them");
            }
            self.more.notify_one();
        }
        answers
    }

    fn write_durably(&self, tenant: &str, events: Vec<ToSpool>) -> Vec<(usize, Result<u64, Part>)> {
        let accepted_at = now_ms();
        let mut written = Vec::with_capacity(events.len());
        for event in events {
            let result = self.spool.write(tenant, &event.payload);
            if let (Ok(_), Some(key)) = (&result, event.key) {
                *lock(&self.keys).entry(key).or_default() += 1;
            }
            written.push((event, result));
        }
        let mut answers = Vec::with_capacity(written.len());
        for (event, result) in written {
            let result = result.and_then(|seq| self.spool.wait_durable(seq).map(|()| seq));
            let answer = match result {
                Ok(seq) => {
                    self.counters.spooled.fetch_add(1, Ordering::Relaxed);
                    self.sample_age(seq, accepted_at);
                    *lock(&self.fault) = None;
                    Ok(seq)
                }
                Err(e) => {
                    self.note_failure(&e, event.key);
                    let mut part = Part::failed(
                        None,
                        PartCode::DeliveryFailed,
                        format!("Kafka could not take the event now, and the spool could not hold it: {e}"),
                        e.retryable(),
                    );
                    part.backend_id = event.backend_id.clone();
                    Err(part)
                }
            };
            answers.push((event.index, answer));
        }
        answers
    }

    /// Counts a failed append; a record written but not made durable gives
    /// back its place in the key's count (it is not held).
    fn note_failure(&self, e: &SpoolError, key: Option<u64>) {
        match e {
            SpoolError::Full { .. } | SpoolError::TenantFull { .. } => {
                self.counters.full.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                if let Some(key) = key {
                    self.release_key(key);
                }
                if e.disk_fault().is_some() {
                    self.counters.disk_errors.fetch_add(1, Ordering::Relaxed);
                    *lock(&self.fault) = Some(describe_fault(e));
                    tracing::error!(error = %e, "spool: append failed on the disk");
                }
            }
        }
    }

    /// The spool is empty: logs the end of a spell of spooling.
    pub(super) fn drained(&self) {
        if self.spooling.swap(false, Ordering::Relaxed) {
            let c = &self.counters;
            tracing::info!(
                spooled = c.spooled.load(Ordering::Relaxed),
                replayed = c.replayed.load(Ordering::Relaxed),
                duplicates = c.duplicates.load(Ordering::Relaxed),
                "spool empty again: every spooled event is in Kafka (totals since start)"
            );
        }
    }

    /// One of the key's records left the spool.
    pub(super) fn release_key(&self, key: u64) {
        let mut keys = lock(&self.keys);
        if let Some(n) = keys.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                keys.remove(&key);
            }
        }
    }

    /// A spooled record's first send was delivered after all.
    pub(super) fn delivered_late(&self, seq: u64, key: Option<u64>) {
        let _ = self.late.send(Late { seq, key });
        self.more.notify_one();
    }

    /// A `spooled` part for record `seq`.
    pub(super) fn part(&self, id: Option<String>, backend_id: Option<Box<str>>, seq: u64) -> Part {
        Part::spooled(id, backend_id, self.node.clone(), seq)
    }

    fn sample_age(&self, seq: u64, accepted_at_ms: u64) {
        let mut ages = lock(&self.ages);
        match ages.back() {
            Some(&(_, at)) if accepted_at_ms < at + 1000 => {}
            _ => ages.push_back((seq, accepted_at_ms)),
        }
    }

    /// The spool's figures now.
    pub fn figures(&self) -> SpoolReadings {
        let stats = self.spool.stats();
        let oldest_age_seconds = stats.oldest_seq.map_or(0.0, |oldest| {
            let mut ages = lock(&self.ages);
            // Samples wholly before the oldest pending record are done.
            while ages.len() > 1 && ages[1].0 <= oldest {
                ages.pop_front();
            }
            ages.front()
                .map_or(0.0, |&(_, at)| now_ms().saturating_sub(at) as f64 / 1000.0)
        });
        let c = &self.counters;
        let total = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        SpoolReadings {
            records: stats.records,
            bytes: stats.bytes,
            disk_bytes: stats.disk_bytes,
            max_bytes: self.spool.max_bytes(),
            oldest_age_seconds,
            tenants: self.spool.tenants(),
            fault: lock(&self.fault).clone(),
            totals: [
                ("spooled", total(&c.spooled)),
                ("replayed", total(&c.replayed)),
                ("late", total(&c.late)),
                ("duplicate", total(&c.duplicates)),
                ("refused_full", total(&c.full)),
                ("disk_error", total(&c.disk_errors)),
                ("dropped", total(&c.refused)),
                ("corrupt", stats.corrupt_records),
            ],
        }
    }

    /// What `/readyz` says of the spool, and whether it can take events.
    pub fn readiness(&self) -> (bool, String) {
        let f = self.figures();
        if let Some(fault) = f.fault {
            return (false, format!("cannot append: {fault}"));
        }
        if f.disk_bytes >= f.max_bytes {
            return (
                false,
                format!("full: {} of {} bytes", f.disk_bytes, f.max_bytes),
            );
        }
        match f.records {
            0 => (true, "idle".into()),
            n => (
                true,
                format!(
                    "spooling: {n} events ({} bytes), the oldest {:.0} s old; replayed once Kafka takes them",
                    f.bytes, f.oldest_age_seconds
                ),
            ),
        }
    }

    /// Logs what stays on disk when the node stops.
    pub fn log_stop(&self) {
        let stats = self.spool.stats();
        match stats.records {
            0 => tracing::info!("spool: empty at stop"),
            n => tracing::info!(
                records = n,
                bytes = stats.bytes,
                "spool: events stay on disk for the next start"
            ),
        }
    }
}

/// Whether a record Kafka did not take may go to the spool: all but those
/// Kafka will never take (replay would send them in vain for ever).
pub(super) fn spoolable(e: &KafkaError) -> bool {
    !matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::TopicAuthorizationFailed
                | RDKafkaErrorCode::ClusterAuthorizationFailed
        )
    )
}

/// The hash of a record's topic and key, the spool's name for a key.
pub(super) fn key_hash(topic: &str, key: &[u8]) -> u64 {
    let mut hasher = std::hash::DefaultHasher::new();
    topic.hash(&mut hasher);
    key.hash(&mut hasher);
    hasher.finish()
}

fn describe_fault(e: &SpoolError) -> String {
    let what = match e.disk_fault() {
        Some(DiskFault::Full) => "disk full",
        Some(DiskFault::ReadOnly) => "file system read-only",
        Some(DiskFault::Permission) => "permission denied",
        _ => "I/O error",
    };
    format!("{what} ({e})")
}

fn log_recovery(path: &std::path::Path, r: &Recovery) {
    let path = path.display();
    if r.corrupt_records > 0 || r.torn_bytes > 0 {
        tracing::warn!(%path, records = r.records, corrupt_records = r.corrupt_records,
            torn_bytes = r.torn_bytes, set_aside = ?r.set_aside,
            "spool opened with damage: damaged records skipped (their segments kept aside as *.corrupt), a torn tail cut");
    } else {
        tracing::info!(%path, records = r.records, bytes = r.bytes, segments = r.segments, "spool opened");
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
