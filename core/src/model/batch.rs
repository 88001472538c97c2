//! An upload after decode and split: its meta object and its events, each
//! carrying what the stages add to it until its part (answer) is decided.
//!
//! A [`Batch`] borrows the request body: the meta object and each event stay
//! the raw JSON text the client sent, so the record value is written without
//! re-encoding the client's data.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::Part;

/// The `meta` object of an upload: what the stages need of it, plus its raw text.
#[derive(Debug)]
pub struct Meta<'a> {
    pub category: String,
    pub device_id: Option<String>,
    pub app: Option<String>,
    /// The whole meta object as the client sent it.
    pub raw: &'a str,
}

/// One event of an upload, from split to answer.
#[derive(Debug)]
pub struct Event<'a> {
    /// The client's id, when it gave a usable one.
    pub id: Option<String>,
    /// The event object as the client sent it, or as a filter replaced it.
    pub raw: Cow<'a, str>,
    pub ts: Option<i64>,
    /// The event's own `ip` field, which wins over the client address.
    pub ip: Option<IpAddr>,
    /// Set by `enrich`.
    pub enrichment: Option<Enrichment>,
    /// `None` while the event is still on its way; set once it is decided.
    pub part: Option<Part>,
}

/// What the gateway adds to every event.
#[derive(Debug, Clone)]
pub struct Enrichment {
    /// UUIDv7, time-ordered; kept as bits (written out hyphenated where
    /// it leaves the node: the record, the key, the answer).
    pub backend_id: uuid::Uuid,
    pub client_ip: Option<IpAddr>,
    /// Shared by the events of a batch that come from one address.
    pub geo: Option<Arc<Geo>>,
}

/// Location of an IP address; any field may be unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Geo {
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
    /// First subdivision, English name.
    pub region: Option<String>,
    /// English name.
    pub city: Option<String>,
}

/// An upload after decode and split: the meta object and every event in order.
#[derive(Debug)]
pub struct Batch<'a> {
    pub meta: Meta<'a>,
    pub events: Vec<Event<'a>>,
    /// Upload time, milliseconds since the epoch; one value for the whole batch.
    pub received_at: i64,
}

impl<'a> Batch<'a> {
    /// Events that no stage has decided yet.
    pub fn pending(&self) -> impl Iterator<Item = &Event<'a>> {
        self.events.iter().filter(|e| e.part.is_none())
    }

    /// Positions of the events still to be written: undecided and enriched.
    pub fn pending_indexes(&self) -> impl Iterator<Item = usize> + '_ {
        self.events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.part.is_none() && e.enrichment.is_some())
            .map(|(index, _)| index)
    }
}
