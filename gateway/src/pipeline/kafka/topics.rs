//! Which topics exist: a missing topic gets a clear, retryable answer at
//! once instead of a delivery timeout, without asking the cluster about
//! every name a client makes up.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;

use super::client::Clients;

/// How long a listing of the cluster's topics answers "missing" before the
/// cluster is asked again.
const MISSING_TOPIC_TTL: Duration = Duration::from_secs(5);
/// How long a failed listing of the topics is the answer, before the
/// cluster is asked again.
const FAILED_LISTING_TTL: Duration = Duration::from_secs(1);
/// How long a metadata request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a record cannot go to its topic now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum TopicProblem {
    /// The cluster does not have it: an operator must create it.
    #[error("{0}")]
    Missing(String),
    /// The cluster could not be asked (away, or too slow): a spool may
    /// hold the record until it answers.
    #[error("{0}")]
    Unavailable(String),
}

/// The topics seen in listings of the cluster, and when it was last listed.
#[derive(Default)]
pub(super) struct TopicState {
    known: std::collections::HashSet<String>,
    listed_at: Option<Instant>,
    /// The latest listing's failure, and when: the answer for a while, so
    /// that requests waiting their turn to list do not each wait out
    /// [`METADATA_TIMEOUT`] while the cluster is away.
    pub(super) failed: Option<(Instant, String)>,
    /// Listings asked of the cluster so far.
    pub(super) listings: u64,
}

/// The topics known to exist, from listings of the cluster.
pub(super) struct Topics {
    pub(super) state: RwLock<TopicState>,
    /// Held while the cluster's topics are listed: one listing at a time.
    listing: tokio::sync::Mutex<()>,
    /// The embedded broker makes a topic on first use: none is checked.
    embedded: bool,
}

impl Topics {
    pub(super) fn new(embedded: bool) -> Topics {
        Topics {
            state: RwLock::default(),
            listing: tokio::sync::Mutex::new(()),
            embedded,
        }
    }

    /// Checks that the topic exists, so a missing topic gives a clear answer
    /// at once instead of a timeout.
    ///
    /// Against a listing of all the cluster's topics (at most one every
    /// [`MISSING_TOPIC_TTL`], and only when a topic is not known), never by
    /// asking for the topic by name: librdkafka keeps a topic object for
    /// every name it is asked about, for the life of the producer, and asks
    /// the cluster about each missing one every second. Categories are the
    /// client's to choose, so names made up by the thousand would grow both
    /// without end.
    pub(super) async fn ensure(&self, clients: &Clients, topic: &str) -> Result<(), TopicProblem> {
        if self.embedded {
            return Ok(());
        }
        if let Some(known) = self.known(topic)? {
            return known.then_some(()).ok_or_else(|| missing_topic(topic));
        }
        let _listing = self.listing.lock().await;
        // Listed by another request while this one waited?
        if let Some(known) = self.known(topic)? {
            return known.then_some(()).ok_or_else(|| missing_topic(topic));
        }
        // The client is taken only to list: a known topic costs no more.
        let client = clients.load_full();
        let listed = tokio::task::spawn_blocking(move || {
            let metadata = client.rd.client().fetch_metadata(None, METADATA_TIMEOUT)?;
            Ok::<Vec<String>, KafkaError>(
                metadata
                    .topics()
                    .iter()
                    .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                    .map(|t| t.name().to_owned())
                    .collect(),
            )
        })
        .await
        .map_err(|e| format!("Kafka metadata lookup failed: {e}"))
        .and_then(|listed| listed.map_err(|e| format!("Kafka metadata unavailable: {e}")));
        let mut state = self.state.write().unwrap_or_else(|p| p.into_inner());
        state.listings += 1;
        match listed {
            Ok(topics) => {
                // Added to, never replaced: a topic once seen is not answered
                // missing because one listing left it out (a broker with
                // metadata still incomplete after a restart).
                state.known.extend(topics);
                state.listed_at = Some(Instant::now());
                state.failed = None;
                match state.known.contains(topic) {
                    true => Ok(()),
                    false => Err(missing_topic(topic)),
                }
            }
            Err(why) => {
                state.failed = Some((Instant::now(), why.clone()));
                Err(TopicProblem::Unavailable(why))
            }
        }
    }

    /// Whether the topic exists, as far as the listings say: `None` when it
    /// is not in one young enough to say it is missing, and the latest
    /// listing's failure while that is recent.
    fn known(&self, topic: &str) -> Result<Option<bool>, TopicProblem> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if state.known.contains(topic) {
            return Ok(Some(true));
        }
        if let Some((at, why)) = &state.failed {
            if at.elapsed() < FAILED_LISTING_TTL {
                return Err(TopicProblem::Unavailable(why.clone()));
            }
        }
        Ok(match state.listed_at {
            Some(at) if at.elapsed() < MISSING_TOPIC_TTL => Some(false),
            _ => None,
        })
    }
}

/// The answer for a topic the cluster does not have.
pub(super) fn missing_topic(topic: &str) -> TopicProblem {
    TopicProblem::Missing(format!(
        "topic '{topic}' does not exist on the Kafka cluster; an operator must create it"
    ))
}
