//! Replay: the spool's records to Kafka, oldest first, alongside new
//! traffic, through the node's producer (one producer keeps a partition's
//! records in order). A record leaves the spool only once Kafka
//! acknowledged it.
//!
//! The spool is read in passes from its oldest pending record. A window
//! that fails as a whole while the cluster does not answer (Kafka away)
//! ends the pass: the next starts after a pause that grows while Kafka
//! stays away. When only some records fail,
//! their keys are held back for the rest of the pass (a key's later records
//! never overtake its failed one) and the others go on, so one record Kafka
//! keeps refusing (its topic deleted) holds back its own key, never the
//! whole spool.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord};
use tokio::sync::mpsc::UnboundedReceiver;

use super::acks::{AckSlot, Acks, KafkaContext};
use super::client::Clients;
use super::record::owned_headers;
use super::spooler::{key_hash, spoolable, Late, Spooler};
use crate::pipeline::spool::{Reader, SpoolRecord, SpooledRecord};

/// The most records, and bytes, sent before their acknowledgements are
/// awaited: memory stays bounded however large the spool.
const WINDOW_RECORDS: usize = 1000;
const WINDOW_BYTES: usize = 8 << 20;
/// The pause after a failed window, doubling up to the most.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often the replay looks again when nothing woke it.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// Runs for the life of the producer.
pub(super) async fn replay(spooler: Arc<Spooler>, clients: Arc<Clients>) {
    let taken = spooler
        .late_rx
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    let Some(mut late) = taken else { return };
    let mut reader: Option<Reader> = None;
    // Keys whose records failed in this pass.
    let mut held: HashSet<u64> = HashSet::new();
    let mut backoff = MIN_BACKOFF;
    loop {
        // Late deliveries first: their spooled copies need not be sent.
        let mut delivered = Vec::new();
        while let Ok(one) = late.try_recv() {
            delivered.push(one);
        }
        acknowledge_late(&spooler, delivered).await;
        // Records a request gave up on may still be delivered by librdkafka,
        // ahead of anything spooled after them: wait for their answers.
        let abandoned = spooler.abandoned.load(Ordering::SeqCst) > 0;
        let empty = spooler.spool.stats().records == 0;
        if empty && !abandoned {
            spooler.drained();
        }
        if abandoned || empty {
            idle(&spooler, &mut late).await;
            continue;
        }
        let (back, window) = read_window(&spooler, reader.take()).await;
        reader = back;
        let records = match window {
            // The end of a pass that held keys back: the next one, after a pause.
            Ok(records) if records.is_empty() && !held.is_empty() => {
                (reader, backoff) = (None, pause(backoff).await);
                held.clear();
                continue;
            }
            Ok(records) if records.is_empty() => {
                idle(&spooler, &mut late).await;
                continue;
            }
            Ok(records) => records,
            Err(e) => {
                tracing::error!(error = %e, "spool: replay cannot read the spool");
                (reader, backoff) = (None, pause(backoff).await);
                continue;
            }
        };
        let client = clients.load_full();
        let sent = send_window(&spooler, &client.rd, records, &held).await;
        if sent.delivered > 0 {
            spooler.kafka_delivered();
        }
        let Some(why) = sent.failure else {
            if held.is_empty() {
                backoff = MIN_BACKOFF;
            }
            continue;
        };
        // Nothing taken: Kafka away, or these records refused while the
        // cluster answers (a whole window of one deleted topic's records)?
        if sent.delivered == 0 && client.brokers().await.is_err() {
            tracing::warn!(error = %why, retry_in_ms = backoff.as_millis() as u64,
                "spool: Kafka took no replayed record; sending again from the oldest");
            (reader, backoff) = (None, pause(backoff).await);
            held.clear();
        } else {
            tracing::warn!(error = %why, keys = sent.failed_keys.len(),
                "spool: Kafka refused some replayed records; their keys wait for the next pass");
            held.extend(sent.failed_keys);
        }
    }
}

/// Waits `backoff`; the next, longer one.
async fn pause(backoff: Duration) -> Duration {
    tokio::time::sleep(backoff).await;
    (backoff * 2).min(MAX_BACKOFF)
}

/// What became of a window.
struct Sent {
    /// Records Kafka took.
    delivered: usize,
    /// Why some were not taken, if any were not.
    failure: Option<String>,
    /// The keys of those.
    failed_keys: Vec<u64>,
}

/// Waits until records are spooled, a late delivery comes, or a while.
async fn idle(spooler: &Spooler, late: &mut UnboundedReceiver<Late>) {
    tokio::select! {
        () = spooler.more.notified() => {}
        one = late.recv() => {
            if let Some(one) = one {
                acknowledge_late(spooler, vec![one]).await;
            }
        }
        () = tokio::time::sleep(IDLE_CHECK) => {}
    }
}

/// Acknowledges spooled records whose first send was delivered after all.
async fn acknowledge_late(spooler: &Spooler, delivered: Vec<Late>) {
    if delivered.is_empty() {
        return;
    }
    let seqs: Vec<u64> = delivered.iter().map(|l| l.seq).collect();
    let acked: HashSet<u64> = ack(spooler, seqs.clone()).await.into_iter().collect();
    let newly = acked.len();
    for late in delivered.iter().filter(|l| acked.contains(&l.seq)) {
        if let Some(key) = late.key {
            spooler.release_key(key);
        }
    }
    let counters = &spooler.counters;
    counters.late.fetch_add(newly as u64, Ordering::Relaxed);
    // Replay had sent it already: in Kafka twice.
    let twice = (seqs.len() - newly) as u64;
    counters.duplicates.fetch_add(twice, Ordering::Relaxed);
}

/// Acknowledges records in the spool (durably); the numbers newly acknowledged.
async fn ack(spooler: &Spooler, seqs: Vec<u64>) -> Vec<u64> {
    let spool = spooler.spool.clone();
    let acked = tokio::task::spawn_blocking(move || spool.ack_each(&seqs)).await;
    match acked {
        Ok(Ok(newly)) => newly,
        Ok(Err(e)) => {
            // Not durable: the records stay and are replayed again (duplicates,
            // never a loss).
            tracing::error!(error = %e, "spool: cannot record acknowledgements");
            Vec::new()
        }
        Err(e) => {
            tracing::error!(error = %e, "spool: the acknowledgement task failed");
            Vec::new()
        }
    }
}

/// The next records from the reader (a new one, from the oldest pending
/// record, when `reader` is `None`), read off the runtime.
async fn read_window(
    spooler: &Arc<Spooler>,
    reader: Option<Reader>,
) -> (Option<Reader>, Result<Vec<SpooledRecord>, String>) {
    let mut reader = reader.unwrap_or_else(|| spooler.spool.reader());
    let read = tokio::task::spawn_blocking(move || {
        let (mut records, mut bytes) = (Vec::new(), 0);
        while records.len() < WINDOW_RECORDS && bytes < WINDOW_BYTES {
            match reader.next_record() {
                Ok(Some(record)) => {
                    bytes += record.payload.len();
                    records.push(record);
                }
                Ok(None) => break,
                Err(e) => return (reader, Err(e)),
            }
        }
        (reader, Ok(records))
    })
    .await;
    match read {
        Ok((reader, records)) => (Some(reader), records.map_err(|e| e.to_string())),
        Err(e) => (None, Err(format!("the read task failed: {e}"))),
    }
}

/// Sends the records, but those of a `held` key (they stay pending), and
/// waits for every answer; acknowledges those Kafka took.
async fn send_window(
    spooler: &Spooler,
    producer: &BaseProducer<KafkaContext>,
    spooled: Vec<SpooledRecord>,
    held: &HashSet<u64>,
) -> Sent {
    let acks = Acks::new(spooled.len(), None);
    let mut records = Vec::with_capacity(spooled.len());
    for (position, one) in spooled.iter().enumerate() {
        match SpoolRecord::decode(&one.payload) {
            Ok(record) if record_key(&record).is_some_and(|k| held.contains(&k)) => {
                acks.answer(position, Err(KafkaError::Canceled));
                records.push(None);
            }
            Ok(record) => {
                let slot = Box::new(AckSlot {
                    acks: acks.clone(),
                    position,
                    answered: false,
                });
                let headers = record
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_slice()));
                let mut out = BaseRecord::with_opaque_to(&record.topic, slot)
                    .payload(&record.value)
                    .headers(owned_headers(headers));
                if let Some(key) = &record.key {
                    out = out.key(key);
                }
                if let Err((e, out)) = producer.send(out) {
                    (*out.delivery_opaque).answer(Err(e));
                }
                records.push(Some(record));
            }
            // The frame's checksum held, yet it is no record (a bug, or a
            // file from another version): it can never be sent.
            Err(e) => {
                tracing::error!(seq = one.seq, error = %e, "spool: a record cannot be read; dropped");
                acks.answer(position, Ok((-1, -1)));
                records.push(None);
            }
        }
    }
    acks.all().await;
    let (mut took, mut failure, mut refused) = (Vec::new(), None, 0);
    let mut failed_keys = Vec::new();
    for (position, one) in spooled.iter().enumerate() {
        let result = acks.result(position);
        let record = records.get(position).and_then(Option::as_ref);
        match result {
            // Held back, not sent.
            Err(_) if record.is_none() => {}
            Ok(_) => took.push(one.seq),
            Err(e) if !spoolable(&e) => {
                tracing::error!(seq = one.seq, error = %e, "spool: Kafka refuses a replayed record for good; dropped");
                refused += 1;
                took.push(one.seq);
            }
            Err(e) => {
                failure.get_or_insert(e.to_string());
                failed_keys.extend(record.and_then(record_key));
            }
        }
    }
    let acked: HashSet<u64> = ack(spooler, took.clone()).await.into_iter().collect();
    for (one, record) in spooled.iter().zip(&records) {
        if let (true, Some(key)) = (
            acked.contains(&one.seq),
            record.as_ref().and_then(record_key),
        ) {
            spooler.release_key(key);
        }
    }
    let counters = &spooler.counters;
    counters.refused.fetch_add(refused, Ordering::Relaxed);
    let replayed = (acked.len() as u64).saturating_sub(refused);
    counters.replayed.fetch_add(replayed, Ordering::Relaxed);
    // Delivered late in the meantime and acknowledged first: in Kafka twice.
    let twice = (took.len() - acked.len()) as u64;
    counters.duplicates.fetch_add(twice, Ordering::Relaxed);
    Sent {
        delivered: took.len() - refused as usize,
        failure,
        failed_keys,
    }
}

/// The spool's name for a record's key (see [`Spooler::holds`]).
fn record_key(record: &SpoolRecord) -> Option<u64> {
    let key = record.key.as_ref()?;
    Some(key_hash(&record.topic, key))
}
