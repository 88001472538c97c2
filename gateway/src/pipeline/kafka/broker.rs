//! The embedded broker: librdkafka's in-process mock cluster, used when no
//! brokers are configured so that one command gives a working node.
//!
//! It speaks the Kafka protocol on a loopback port (so `weir tail` and any
//! Kafka client can read from it), keeps everything in memory and loses it
//! all on exit. It is for trying Weir on one machine, never for production.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

/// Partitions of every topic on the embedded broker.
pub const PARTITIONS: i32 = 4;

/// A running in-process Kafka-protocol broker.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts a one-broker mock cluster on a random loopback port.
    pub fn start() -> Result<EmbeddedBroker, rdkafka::error::KafkaError> {
        Ok(EmbeddedBroker {
            cluster: MockCluster::new(1)?,
        })
    }

    /// The `bootstrap.servers` address of the broker.
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    /// Creates `topic` with [`PARTITIONS`] partitions. Topics not created here
    /// are created by the broker on first use (auto-create is on for it).
    pub fn create_topic(&self, topic: &str) -> Result<(), rdkafka::error::KafkaError> {
        self.cluster.create_topic(topic, PARTITIONS, 1)
    }
}
