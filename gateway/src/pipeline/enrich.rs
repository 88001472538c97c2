//! Enrich: what the gateway knows about every event and the client does not.
//!
//! Each accepted event gets a UUIDv7 `backend_id` (time-ordered, so records
//! sort by arrival), the client IP (the event's own `ip` wins, else the
//! request's client address) and the GeoIP location of that IP. The upload
//! time and request id are per batch and already on the batch.

use std::net::IpAddr;
use std::sync::Arc;

use crate::model::{Batch, Enrichment, Geo};
use crate::pipeline::geoip::GeoIp;
use weir_core::headers::canonical;

/// Enriches every pending event of the batch.
pub fn enrich(batch: &mut Batch<'_>, client_ip: IpAddr, geoip: Option<&GeoIp>) {
    // Most events of a batch share the client's IP: look each address up once.
    let mut seen: Vec<(IpAddr, Option<Arc<Geo>>)> = Vec::new();
    for event in batch.events.iter_mut().filter(|e| e.part.is_none()) {
        let ip = canonical(event.ip.unwrap_or(client_ip));
        let geo = geoip.and_then(|db| match seen.iter().find(|(seen_ip, _)| *seen_ip == ip) {
            Some((_, geo)) => geo.clone(),
            None => {
                let geo = db.lookup(ip).map(Arc::new);
                seen.push((ip, geo.clone()));
                geo
            }
        });
        event.enrichment = Some(Enrichment {
            backend_id: uuid::Uuid::now_v7(),
            client_ip: Some(ip),
            geo,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Meta, Part, PartCode};

    #[test]
    fn every_pending_event_gets_an_id_and_its_ip() {
        let mut batch = Batch {
            meta: Meta {
                category: "c".into(),
                device_id: None,
                app: None,
                raw: "{}",
            },
            events: vec![
                Event {
                    id: Some("a".into()),
                    raw: "{}".into(),
                    ts: None,
                    ip: None,
                    enrichment: None,
                    part: None,
                },
                Event {
                    id: Some("b".into()),
                    raw: "{}".into(),
                    ts: None,
                    ip: Some("::ffff:192.0.2.1".parse().unwrap()),
                    enrichment: None,
                    part: None,
                },
                Event {
                    id: None,
                    raw: "5".into(),
                    ts: None,
                    ip: None,
                    enrichment: None,
                    part: Some(Part::failed(None, PartCode::Invalid, "x".into(), false)),
                },
            ],
            received_at: 1,
        };
        enrich(&mut batch, "198.51.100.1".parse().unwrap(), None);
        let a = batch.events[0].enrichment.as_ref().unwrap();
        let b = batch.events[1].enrichment.as_ref().unwrap();
        assert_eq!(a.client_ip, Some("198.51.100.1".parse().unwrap()));
        assert_eq!(b.client_ip, Some("192.0.2.1".parse().unwrap()));
        assert_eq!(a.backend_id.get_version_num(), 7);
        assert!(a.backend_id < b.backend_id, "UUIDv7 ids are time-ordered");
        assert!(batch.events[2].enrichment.is_none());
    }

    /// Records sort by arrival across the node, not only within a batch:
    /// an id made after another one (here, on another thread that was
    /// handed the first) is greater, however close in time the two are
    /// (UUIDv7 from one process-wide context: a counter within a
    /// millisecond, not random bits).
    #[test]
    fn backend_ids_made_one_after_another_on_any_thread_sort_in_that_order() {
        let (to_b, at_b) = std::sync::mpsc::channel::<uuid::Uuid>();
        let (to_a, at_a) = std::sync::mpsc::channel::<uuid::Uuid>();
        let b = std::thread::spawn(move || {
            for previous in at_b {
                let id = uuid::Uuid::now_v7();
                assert!(id > previous, "{id} made after {previous}");
                if to_a.send(id).is_err() {
                    return;
                }
            }
        });
        let mut previous = uuid::Uuid::now_v7();
        for _ in 0..20_000 {
            to_b.send(previous).unwrap();
            let theirs = at_a.recv().unwrap();
            let id = uuid::Uuid::now_v7();
            assert!(id > theirs, "{id} made after {theirs}");
            previous = id;
        }
        drop(to_b);
        b.join().unwrap();
    }
}
