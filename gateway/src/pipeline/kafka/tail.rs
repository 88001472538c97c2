//! `weir tail`: read a topic and print each record with its key, partition,
//! offset and headers, for operators checking what a node wrote.

use std::io::Write;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;

/// Where in the topic reading starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum From {
    Beginning,
    End,
}

/// What to read and for how long.
#[derive(Debug, Clone)]
pub struct TailOptions {
    pub brokers: String,
    pub topic: String,
    pub from: From,
    /// Stop after this many records.
    pub max: Option<u64>,
    /// Stop when no record came for this long.
    pub idle: Option<Duration>,
}

/// A record as printed: one JSON object per line.
#[derive(Serialize)]
pub struct Printed<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub headers: Vec<(String, Option<String>)>,
    pub value: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic '{0}' does not exist")]
    NoTopic(String),
    #[error("writing output: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads every partition of the topic and prints records to `out` as JSON lines.
pub fn tail(options: &TailOptions, out: &mut impl Write) -> Result<u64, TailError> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &options.brokers)
        .set("group.id", "weir-tail")
        .set("enable.auto.commit", "false")
        .set("allow.auto.create.topics", "false")
        .create()?;
    let metadata = consumer.fetch_metadata(Some(&options.topic), Duration::from_secs(10))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == options.topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(TailError::NoTopic(options.topic.clone()));
    }
    let start = match options.from {
        From::Beginning => Offset::Beginning,
        From::End => Offset::End,
    };
    let mut assignment = TopicPartitionList::new();
    for p in partitions {
        assignment.add_partition_offset(&options.topic, p, start)?;
    }
    // Assigned partitions, not a group subscription: no rebalance wait.
    consumer.assign(&assignment)?;

    let mut count = 0;
    let mut last = Instant::now();
    loop {
        if options.max.is_some_and(|max| count >= max) {
            return Ok(count);
        }
        if options.idle.is_some_and(|idle| last.elapsed() >= idle) {
            return Ok(count);
        }
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = message?;
        last = Instant::now();
        count += 1;
        let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
        let headers = message
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_owned(), text(h.value)))
                    .collect()
            })
            .unwrap_or_default();
        let printed = Printed {
            topic: message.topic(),
            partition: message.partition(),
            offset: message.offset(),
            key: text(message.key()),
            headers,
            value: text(message.payload()),
        };
        let line = sonic_rs::to_string(&printed).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
        out.flush()?;
    }
}
