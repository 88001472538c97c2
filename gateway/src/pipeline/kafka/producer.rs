//! The node's one Kafka producer: records for a batch's accepted events,
//! handed to librdkafka, and the wait for Kafka's acknowledgement of each.
//!
//! An event is answered `ok` only once Kafka acknowledged it (idempotent
//! producer, acks=all); anything else is `delivery_failed` and retryable,
//! so nothing is reported accepted that was not.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseRecord, Producer as _};

use super::acks::{failure, AckSlot, Acks, Delivery};
use super::client::{supervise, Clients};
use super::record::{self, record_headers, Origin};
use super::spooler::{key_hash, now_ms, spoolable, Spooler, ToSpool};
use super::topics::{TopicProblem, Topics};
use crate::config::template::{Template, Values};
use crate::config::KafkaConfig;
use crate::model::{Batch, Enrichment, Event, Part, PartCode};
use crate::ops::metrics::KafkaStats;
use crate::ops::trace::TraceHeaders;
use crate::pipeline::spool::SpoolRecord;
use weir_core::record::{write_value, RecordFields};

/// Why the producer could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ProducerError {
    #[error("Kafka producer: {0}")]
    Kafka(#[from] KafkaError),
    #[error("kafka.topic_template: {0}")]
    TopicTemplate(String),
    #[error("kafka.key_template: {0}")]
    KeyTemplate(String),
}

/// The node's Kafka producer, shared by every request.
pub struct Producer {
    /// The librdkafka client, replaced when it cannot recover.
    clients: Arc<Clients>,
    stats: Arc<KafkaStats>,
    topic_template: Template,
    key_template: Template,
    topics: Topics,
    /// The latest answer of [`Producer::check`], and when it came.
    checked: tokio::sync::Mutex<Option<(Instant, Result<usize, String>)>>,
    /// The task that replaces a client that cannot recover.
    supervisor: Option<tokio::task::JoinHandle<()>>,
    /// Where events go that Kafka cannot take now, if the node has a spool.
    spooler: Option<Arc<Spooler>>,
    /// The task that replays the spool.
    replay: Option<tokio::task::JoinHandle<()>>,
    /// Where records entered, for their `weir-region` and `weir-node` headers.
    origin: Origin,
}

/// How long a readiness check's answer is reused: probes and anyone else
/// asking `/readyz` cost the cluster at most one metadata request a second.
const CHECK_TTL: Duration = Duration::from_secs(1);

/// The librdkafka settings Weir uses unless the config overrides them.
pub fn client_config(kafka: &KafkaConfig, brokers: &str, embedded: bool) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("compression.codec", "lz4")
        .set("linger.ms", "5")
        // Records wait here while Kafka is slow: a quarter of librdkafka's
        // 1 GiB default, so a full queue answers `delivery_failed` long
        // before a node with a 1 GiB memory limit is killed (every copy of
        // an upload's `meta` in its records counts).
        .set("queue.buffering.max.kbytes", "262144")
        .set("message.timeout.ms", kafka.delivery_timeout_ms.to_string())
        // librdkafka's statistics (queue bytes, broker round trips) for the metrics.
        .set("statistics.interval.ms", "5000")
        // Topics are the operator's to create; the embedded broker makes its own.
        .set(
            "allow.auto.create.topics",
            if embedded { "true" } else { "false" },
        );
    for (key, value) in &kafka.producer {
        config.set(key, value);
    }
    config
}

impl Producer {
    /// Creates the producer; `embedded` lets the broker create topics on first use.
    pub fn new(
        kafka: &KafkaConfig,
        brokers: &str,
        embedded: bool,
    ) -> Result<Producer, ProducerError> {
        let topic_template =
            Template::topic(&kafka.topic_template).map_err(ProducerError::TopicTemplate)?;
        let key_template =
            Template::key(&kafka.key_template).map_err(ProducerError::KeyTemplate)?;
        let stats = Arc::new(KafkaStats::default());
        let clients = Arc::new(Clients::new(
            client_config(kafka, brokers, embedded),
            stats.clone(),
        )?);
        let supervisor = Some(tokio::spawn(supervise(clients.clone())));
        Ok(Producer {
            clients,
            stats,
            topic_template,
            key_template,
            topics: Topics::new(embedded),
            checked: tokio::sync::Mutex::new(None),
            supervisor,
            spooler: None,
            replay: None,
            origin: Origin::default(),
        })
    }

    /// Records say they entered at `origin`.
    pub fn with_origin(mut self, origin: Origin) -> Producer {
        self.origin = origin;
        self
    }

    /// Spools what Kafka cannot take now, and replays it once it can (a
    /// task started here, for the life of the producer).
    pub fn with_spool(mut self, spooler: Arc<Spooler>) -> Producer {
        self.replay = Some(tokio::spawn(super::replay::replay(
            spooler.clone(),
            self.clients.clone(),
        )));
        self.spooler = Some(spooler);
        self
    }

    /// The spool, if the node has one.
    pub fn spooler(&self) -> Option<&Arc<Spooler>> {
        self.spooler.as_ref()
    }

    /// The topic for a tenant's category.
    pub fn topic(&self, tenant: &str, category: &str) -> String {
        let values = Values {
            tenant,
            category,
            device_id: None,
            app: None,
        };
        // A topic template has only these two placeholders: always rendered.
        self.topic_template.render(&values).unwrap_or_default()
    }

    /// Sends every pending, enriched event to `topic` (from [`Producer::topic`],
    /// rendered once per request by the caller) and waits for each acknowledgement;
    /// every such event's part is decided on return. With a spool, the wait
    /// lasts `spool.wait_ms` at most, and what Kafka could not take by then
    /// is spooled ([`super::spooler`]).
    ///
    /// `held` (the request's place among those in flight) is kept until
    /// the last of its records is answered, so a client that goes away
    /// while they are queued does not free it for a retry that queues the
    /// same records again.
    pub async fn produce(
        &self,
        batch: &mut Batch<'_>,
        topic: Arc<str>,
        tenant: &str,
        request_id: &str,
        trace: &TraceHeaders,
        held: impl Send + Sync + 'static,
    ) -> Produced {
        let started = Instant::now();
        let device_key = record::key(&self.key_template, tenant, &batch.meta);
        let source = Source {
            // Only a spool needs the key's name.
            key_hash: device_key
                .as_deref()
                .filter(|_| self.spooler.is_some())
                .map(|k| key_hash(&topic, k.as_bytes())),
            topic,
            tenant,
            request_id,
            trace,
            origin: &self.origin,
            device_key,
        };
        let mut produced = Produced::default();
        let away = self.spooler.as_ref().filter(|s| s.kafka_away());
        let ensured = match away {
            Some(_) => Ok(()),
            None => self.check_topic(&source.topic).await,
        };
        let spool_now = match ensured {
            Ok(()) if away.is_some() => away,
            Ok(()) => self
                .spooler
                .as_ref()
                .filter(|spooler| source.key_hash.is_some_and(|key| spooler.holds(key))),
            Err(TopicProblem::Unavailable(_)) if self.spooler.is_some() => {
                let spooler = self.spooler.as_ref();
                spooler.inspect(|s| s.note_unreachable())
            }
            Err(problem) => {
                produced.failed = fail_pending(batch, &problem.to_string());
                produced.enqueue = started.elapsed();
                return produced;
            }
        };
        if let Some(spooler) = spool_now {
            let pending = batch.pending_indexes().map(|index| (None, index)).collect();
            spool_events(spooler, batch, &source, pending, None, &mut produced).await;
            produced.enqueue = started.elapsed();
            return produced;
        }
        let (acks, indexes) = self.send(batch, &source, held);
        produced.enqueue = started.elapsed();
        let abandoned = match &self.spooler {
            None => {
                acks.all().await;
                Vec::new()
            }
            Some(spooler) => match tokio::time::timeout(spooler.wait, acks.all()).await {
                Ok(()) => Vec::new(),
                Err(_) => acks.abandon(spooler),
            },
        };
        produced.deliver = started.elapsed() - produced.enqueue;
        let mut to_spool = Vec::new();
        for (position, index) in indexes.into_iter().enumerate() {
            if abandoned.get(position) == Some(&true) {
                to_spool.push((Some(position), index));
                continue;
            }
            let result = acks.result(position);
            match result {
                Err(e) if self.spooler.is_some() && spoolable(&e) => {
                    to_spool.push((Some(position), index));
                }
                result => answer(
                    &mut batch.events[index],
                    &source.topic,
                    result,
                    &mut produced,
                ),
            }
        }
        if let Some(spooler) = &self.spooler {
            if produced.delivered > 0 {
                spooler.kafka_delivered();
            }
            if !to_spool.is_empty() {
                spool_events(
                    spooler,
                    batch,
                    &source,
                    to_spool,
                    Some(&acks),
                    &mut produced,
                )
                .await;
            }
        }
        produced
    }

    /// Whether the topic exists; with a spool, a request does not wait out
    /// a slow metadata lookup (it counts as Kafka unavailable).
    async fn check_topic(&self, topic: &str) -> Result<(), TopicProblem> {
        let ensure = self.topics.ensure(&self.clients, topic);
        match &self.spooler {
            None => ensure.await,
            Some(spooler) => tokio::time::timeout(spooler.wait, ensure)
                .await
                .unwrap_or_else(|_| {
                    let why = "Kafka metadata: no answer in time";
                    Err(TopicProblem::Unavailable(why.into()))
                }),
        }
    }

    /// Hands a record per pending, enriched event to librdkafka; returns
    /// their answers to wait for and the events' positions in the batch, in
    /// the order of the answers.
    fn send(
        &self,
        batch: &Batch<'_>,
        source: &Source<'_>,
        held: impl Send + Sync + 'static,
    ) -> (Arc<Acks>, Vec<usize>) {
        let headers = record_headers(
            source.trace,
            source.request_id,
            source.tenant,
            source.origin,
        );
        let client = self.clients.load();
        let indexes: Vec<usize> = batch.pending_indexes().collect();
        let acks = Acks::new(indexes.len(), Some(Box::new(held)));
        let mut value = Vec::with_capacity(1024);
        for (position, &index) in indexes.iter().enumerate() {
            let event = &batch.events[index];
            let Some(enrichment) = &event.enrichment else {
                acks.answer(position, Err(KafkaError::Canceled));
                continue;
            };
            let mut hyphenated = [0; uuid::fmt::Hyphenated::LENGTH];
            let backend_id = &*enrichment
                .backend_id
                .hyphenated()
                .encode_lower(&mut hyphenated);
            value.clear();
            write_event_value(&mut value, batch, event, enrichment, backend_id, source);
            let key = source.device_key.as_deref().unwrap_or(backend_id);
            let slot = Box::new(AckSlot {
                acks: acks.clone(),
                position,
                answered: false,
            });
            let record = BaseRecord::with_opaque_to(&source.topic, slot)
                .payload(&value[..])
                .key(key)
                .headers(headers.clone());
            // Not enqueued (e.g. the producer's queue is full): answered here.
            if let Err((e, record)) = client.rd.send(record) {
                (*record.delivery_opaque).answer(Err(e));
            }
        }
        (acks, indexes)
    }

    /// Whether the cluster answers a metadata request: the number of brokers.
    /// One request at a time, its answer reused for [`CHECK_TTL`].
    pub async fn check(&self) -> Result<usize, String> {
        if let Some(fatal) = self.fatal().or_else(|| self.client_fatal()) {
            return Err(fatal);
        }
        let mut checked = self.checked.lock().await;
        if let Some((at, answer)) = &*checked {
            if at.elapsed() < CHECK_TTL {
                return answer.clone();
            }
        }
        let answer = self.clients.load_full().brokers().await;
        *checked = Some((Instant::now(), answer.clone()));
        answer
    }

    /// Why only a restart brings the node back, if that is so: new
    /// producers (see [`super::client`]) kept failing. A single fatal error
    /// of the idempotent producer (librdkafka then refuses every record of
    /// that client) is not such a reason: the client is replaced within a
    /// second, and `check` fails meanwhile.
    pub fn fatal(&self) -> Option<String> {
        self.clients.gave_up()
    }

    /// The current client's fatal error, if it has one (replaced shortly).
    fn client_fatal(&self) -> Option<String> {
        let client = self.clients.load();
        let (code, reason) = client.rd.client().fatal_error()?;
        Some(format!(
            "fatal producer error ({code:?}): {reason}; a new producer replaces it"
        ))
    }

    /// The latest librdkafka statistics (every `statistics.interval.ms`).
    pub fn stats(&self) -> Arc<KafkaStats> {
        self.stats.clone()
    }

    /// Records queued in the producer, not yet acknowledged (saturation).
    pub fn queued(&self) -> impl Fn() -> u64 + Send + Sync + 'static {
        let clients = self.clients.clone();
        move || clients.load().rd.in_flight_count().max(0) as u64
    }

    /// Lets the client go now (after [`Producer::flush`]): the report task
    /// ends and librdkafka's client is destroyed before this returns, so
    /// nothing of it outlives a broker stopped next.
    pub async fn close(mut self) {
        if let Some(replay) = self.replay.take() {
            replay.abort();
            let _ = replay.await;
        }
        if let Some(supervisor) = self.supervisor.take() {
            supervisor.abort();
            let _ = supervisor.await;
        }
        self.clients.load_full().close().await;
    }

    /// Waits until every queued record is delivered or `timeout` passes.
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        self.clients
            .load()
            .rd
            .flush(timeout)
            .map_err(|e| e.to_string())
    }
}

/// A producer dropped without [`Producer::close`] still stops its report task.
impl Drop for Producer {
    fn drop(&mut self) {
        if let Some(supervisor) = &self.supervisor {
            supervisor.abort();
        }
        if let Some(replay) = &self.replay {
            replay.abort();
        }
    }
}

/// What the records of one request are made of, besides each event.
struct Source<'a> {
    topic: Arc<str>,
    tenant: &'a str,
    request_id: &'a str,
    trace: &'a TraceHeaders,
    origin: &'a Origin,
    /// The record key from the template, when every placeholder has a
    /// value; else each event's backend id is its key.
    device_key: Option<String>,
    /// The spool's name for that key (see [`Spooler::holds`]).
    key_hash: Option<u64>,
}

/// Writes the record value of one event.
fn write_event_value(
    value: &mut Vec<u8>,
    batch: &Batch<'_>,
    event: &Event<'_>,
    enrichment: &Enrichment,
    backend_id: &str,
    source: &Source<'_>,
) {
    write_value(
        value,
        &RecordFields {
            backend_id,
            id: event.id.as_deref(),
            tenant: source.tenant,
            category: &batch.meta.category,
            received_at: batch.received_at,
            ts: event.ts,
            request_id: source.request_id,
            client_ip: enrichment.client_ip,
            geo: enrichment.geo.as_deref(),
        },
        batch.meta.raw,
        &event.raw,
    );
}

/// Decides an event's part from Kafka's answer.
fn answer(event: &mut Event<'_>, topic: &Arc<str>, result: Delivery, produced: &mut Produced) {
    let backend_id = event
        .enrichment
        .as_ref()
        .map(|e| backend_id_text(&e.backend_id));
    event.part = Some(match result {
        Ok((partition, offset)) => {
            produced.delivered += 1;
            Part {
                id: event.id.clone(),
                code: PartCode::Ok,
                message: None,
                retryable: None,
                backend_id,
                topic: Some(topic.clone()),
                partition: Some(partition),
                offset: Some(offset),
                spooled: None,
            }
        }
        Err(e) => {
            let part = failure(event.id.clone(), backend_id, &e);
            produced.failed += usize::from(part.code == PartCode::DeliveryFailed);
            part
        }
    });
}

/// A backend id's text, in one allocation of its exact size.
fn backend_id_text(id: &uuid::Uuid) -> Box<str> {
    let mut hyphenated = [0; uuid::fmt::Hyphenated::LENGTH];
    Box::from(&*id.hyphenated().encode_lower(&mut hyphenated))
}

/// Answers every pending event `delivery_failed` (retryable) with `why`;
/// returns how many.
fn fail_pending(batch: &mut Batch<'_>, why: &str) -> usize {
    let mut failed = 0;
    for event in batch.events.iter_mut().filter(|e| e.part.is_none()) {
        failed += 1;
        event.part = Some(Part::failed(
            event.id.clone(),
            PartCode::DeliveryFailed,
            why.to_owned(),
            true,
        ));
    }
    failed
}

/// Spools the events at `events` (each with its record's position among
/// the request's acks, if it was sent) and answers them.
async fn spool_events(
    spooler: &Arc<Spooler>,
    batch: &mut Batch<'_>,
    source: &Source<'_>,
    events: Vec<(Option<usize>, usize)>,
    acks: Option<&Acks>,
    produced: &mut Produced,
) {
    let spooled_at = now_ms().to_string();
    let headers: Vec<(String, Vec<u8>)> = record::header_pairs(
        source.trace,
        source.request_id,
        source.tenant,
        source.origin,
    )
    .chain([(SPOOLED_AT_HEADER, spooled_at.as_str())])
    .map(|(k, v)| (k.to_owned(), v.as_bytes().to_vec()))
    .collect();
    let mut records = Vec::with_capacity(events.len());
    let mut value = Vec::with_capacity(1024);
    let mut positions = std::collections::HashMap::new();
    for &(position, index) in &events {
        let event = &batch.events[index];
        let Some(enrichment) = &event.enrichment else {
            continue;
        };
        let backend_id = enrichment.backend_id.hyphenated().to_string();
        value.clear();
        write_event_value(&mut value, batch, event, enrichment, &backend_id, source);
        let record = SpoolRecord {
            tenant: source.tenant.to_owned(),
            accepted_at_ms: u64::try_from(batch.received_at).unwrap_or(0),
            topic: source.topic.to_string(),
            key: Some(
                source
                    .device_key
                    .as_deref()
                    .unwrap_or(&backend_id)
                    .as_bytes()
                    .to_vec(),
            ),
            headers: headers.clone(),
            value: value.clone(),
        };
        if let Some(position) = position {
            positions.insert(index, position);
        }
        match record.encode() {
            Ok(payload) => records.push(ToSpool {
                index,
                backend_id: Some(backend_id.into_boxed_str()),
                key: source.key_hash,
                payload,
            }),
            Err(e) => {
                let mut part =
                    Part::failed(event.id.clone(), PartCode::TooLarge, e.to_string(), false);
                part.backend_id = Some(backend_id.into());
                batch.events[index].part = Some(part);
            }
        }
    }
    for (index, answer) in spooler.spool(source.tenant, records).await {
        let event = &mut batch.events[index];
        event.part = Some(match answer {
            Ok(seq) => {
                if let (Some(acks), Some(&position)) = (acks, positions.get(&index)) {
                    acks.spooled(position, seq, source.key_hash);
                }
                produced.spooled += 1;
                let backend_id = event
                    .enrichment
                    .as_ref()
                    .map(|e| backend_id_text(&e.backend_id));
                spooler.part(event.id.clone(), backend_id, seq)
            }
            Err(mut part) => {
                produced.failed += 1;
                part.id = event.id.clone();
                part
            }
        });
    }
    // A spool write that did not answer (its task failed) is not held.
    produced.failed += fail_pending(batch, "the spool could not take the event; retry later");
}

/// The header a spooled record gets: when it was spooled (Unix ms).
pub const SPOOLED_AT_HEADER: &str = "weir-spooled-at";

/// What became of a batch's records, and where the time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct Produced {
    /// Checking the topic, building the records and handing them to librdkafka.
    pub enqueue: Duration,
    /// Waiting for Kafka's acknowledgements.
    pub deliver: Duration,
    /// Events Kafka acknowledged.
    pub delivered: usize,
    /// Events answered `delivery_failed` (retryable).
    pub failed: usize,
    /// Events answered `spooled`.
    pub spooled: usize,
}

#[cfg(test)]
mod tests {
    use super::super::topics::missing_topic;
    use super::*;
    use crate::ops::testing::eventually;
    use std::sync::atomic::Ordering;

    /// Raises a fatal error on the producer's current client with
    /// librdkafka's own test hook.
    fn raise_fatal(producer: &Producer) {
        use rdkafka::types::RDKafkaRespErr;
        let reason = std::ffi::CString::new("injected by the test").unwrap();
        let client = producer.clients.load();
        // SAFETY: the client is alive and `reason` outlives the call.
        let raised = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                client.rd.client().native_ptr(),
                RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            )
        };
        assert_eq!(raised, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
    }

    /// Sends one record through the current client; Kafka's answer.
    async fn send_one(producer: &Producer, topic: &str) -> Delivery {
        let acks = Acks::new(1, None);
        let slot = Box::new(AckSlot {
            acks: acks.clone(),
            position: 0,
            answered: false,
        });
        let record = BaseRecord::with_opaque_to(topic, slot)
            .payload("x")
            .key("k");
        if let Err((e, record)) = producer.clients.load().rd.send(record) {
            (*record.delivery_opaque).answer(Err(e));
        }
        acks.all().await;
        acks.result(0)
    }

    /// A fatal error of the idempotent producer gets the node a new
    /// producer, which writes at once; when new ones keep failing, the node
    /// gives up and says it must restart (`/healthz`, `/readyz`).
    #[tokio::test(flavor = "multi_thread")]
    async fn a_fatal_producer_error_gets_a_new_producer_until_that_stops_helping() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("events.t", 1, 1).unwrap();
        let producer =
            Producer::new(&KafkaConfig::default(), &cluster.bootstrap_servers(), false).unwrap();
        assert_eq!(producer.check().await, Ok(1));
        assert!(send_one(&producer, "events.t").await.is_ok());
        let rebuilds = || producer.stats.producer_rebuilds.load(Ordering::Relaxed);
        for round in 1..=super::super::client::MAX_REBUILDS as u64 {
            raise_fatal(&producer);
            let why = producer.check().await.unwrap_err();
            assert!(why.contains("injected by the test"), "{why}");
            eventually(Duration::from_secs(10), "a new producer", || {
                rebuilds() == round
            })
            .await;
            assert_eq!(producer.fatal(), None);
            assert!(
                send_one(&producer, "events.t").await.is_ok(),
                "round {round}"
            );
        }
        raise_fatal(&producer);
        eventually(Duration::from_secs(10), "giving up", || {
            producer.fatal().is_some()
        })
        .await;
        let fatal = producer.fatal().unwrap();
        assert!(fatal.contains("injected by the test"), "{fatal}");
        assert!(fatal.contains("the node must restart"), "{fatal}");
        assert_eq!(producer.check().await, Err(fatal));
        assert_eq!(rebuilds(), super::super::client::MAX_REBUILDS as u64);
    }

    /// Made-up categories leave nothing behind in librdkafka: a topic is
    /// checked against a listing of the cluster's, never asked for by name.
    #[tokio::test(flavor = "multi_thread")]
    async fn missing_topics_are_found_by_listing_and_leave_no_topic_object() {
        let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
        cluster.create_topic("events.real", 1, 1).unwrap();
        let mut kafka = KafkaConfig::default();
        kafka
            .producer
            .insert("statistics.interval.ms".into(), "100".into());
        let producer = Producer::new(&kafka, &cluster.bootstrap_servers(), false).unwrap();
        assert_eq!(
            producer
                .topics
                .ensure(&producer.clients, "events.real")
                .await,
            Ok(())
        );
        for i in 0..20 {
            let topic = format!("events.made-up-{i}");
            assert_eq!(
                producer.topics.ensure(&producer.clients, &topic).await,
                Err(missing_topic(&topic))
            );
        }
        // One listing answered them all (it is younger than the TTL).
        assert_eq!(producer.topics.state.read().unwrap().listings, 1);
        // The next statistics report says how many topic objects librdkafka
        // holds: none (a listing makes none, and nothing was written).
        let topics = &producer.stats.topics;
        topics.store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
        let reported = || topics.load(std::sync::atomic::Ordering::Relaxed) != u64::MAX;
        eventually(Duration::from_secs(10), "a statistics report", reported).await;
        assert_eq!(
            topics.load(std::sync::atomic::Ordering::Relaxed),
            0,
            "topic objects held by librdkafka"
        );
    }

    /// With the cluster away, requests for topics not known do not queue up
    /// to each wait out a listing: the failure is everyone's answer a while.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_listing_is_the_answer_for_a_while() {
        let producer = Producer::new(&KafkaConfig::default(), "127.0.0.1:1", false).unwrap();
        let (a, b, c) = tokio::join!(
            producer.topics.ensure(&producer.clients, "events.a"),
            producer.topics.ensure(&producer.clients, "events.b"),
            producer.topics.ensure(&producer.clients, "events.c"),
        );
        for answer in [a, b, c] {
            let Err(super::super::topics::TopicProblem::Unavailable(why)) = answer else {
                panic!("not unavailable: {answer:?}");
            };
            assert!(why.starts_with("Kafka metadata unavailable"), "{why}");
        }
        // One listing was tried, not three one after another.
        let state = producer.topics.state.read().unwrap();
        assert_eq!(state.listings, 1);
        assert!(state.failed.is_some());
    }

    #[tokio::test]
    async fn the_key_falls_back_when_a_placeholder_is_empty() {
        let kafka = KafkaConfig::default();
        let producer = Producer::new(&kafka, "127.0.0.1:1", false).unwrap();
        let mut batch = Batch {
            meta: crate::model::Meta {
                category: "c".into(),
                device_id: Some("d-42".into()),
                app: None,
                raw: "{}",
            },
            events: Vec::new(),
            received_at: 0,
        };
        assert_eq!(
            record::key(&producer.key_template, "acme", &batch.meta).as_deref(),
            Some("acme:d-42")
        );
        // A value is not read again as a placeholder.
        batch.meta.device_id = Some("{app}{tenant}".into());
        assert_eq!(
            record::key(&producer.key_template, "acme", &batch.meta).as_deref(),
            Some("acme:{app}{tenant}")
        );
        batch.meta.device_id = None;
        assert_eq!(
            record::key(&producer.key_template, "acme", &batch.meta),
            None
        );
        assert_eq!(producer.topic("acme", "PERF"), "events.PERF");
    }
}
