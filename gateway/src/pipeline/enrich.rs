//! Enrich: what the gateway knows about every event and the client does not.
//!
//! Each accepted event gets a UUIDv7 `backend_id` (time-ordered, so records
//! sort by arrival), the client IP (the event's own `ip` wins, else the
//! request's client address) and the GeoIP location of that IP. The upload
//! time and request id are per batch and already on the batch.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::HeaderMap;
use ipnet::IpNet;

use crate::model::{Batch, Enrichment, Geo};
use crate::pipeline::geoip::{canonical, GeoIp};

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

/// The client's address: the socket peer, or, when the peer is a trusted
/// proxy, the last address in `X-Forwarded-For` that is not a trusted proxy.
pub fn client_ip(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer.ip());
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    // Read right to left: each trusted proxy appended the address it saw.
    let mut client = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(value) = value.to_str() else {
            return client;
        };
        for hop in value.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = canonical(ip);
                    if !is_trusted(&client) {
                        return client;
                    }
                }
                Err(_) => return client,
            }
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Event, Meta, Part, PartCode};

    fn headers(xff: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in xff {
            h.append("x-forwarded-for", v.parse().unwrap());
        }
        h
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let proxy: SocketAddr = "10.1.1.1:5000".parse().unwrap();
        let stranger: SocketAddr = "198.51.100.9:5000".parse().unwrap();
        assert_eq!(
            client_ip(stranger, &headers(&["1.2.3.4"]), &trusted),
            stranger.ip()
        );
        assert_eq!(
            client_ip(proxy, &headers(&["1.2.3.4"]), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        // A spoofed left-most entry is ignored: the right-most untrusted hop wins.
        assert_eq!(
            client_ip(proxy, &headers(&["6.6.6.6, 1.2.3.4, 10.0.0.2"]), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &headers(&["6.6.6.6", "1.2.3.4"]), &trusted),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &headers(&["garbage"]), &trusted),
            proxy.ip()
        );
        assert_eq!(client_ip(proxy, &headers(&[]), &trusted), proxy.ip());
        let mapped: SocketAddr = "[::ffff:198.51.100.9]:1".parse().unwrap();
        assert_eq!(
            client_ip(mapped, &headers(&[]), &[]),
            "198.51.100.9".parse::<IpAddr>().unwrap()
        );
    }

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

    use proptest::strategy::Strategy as _;

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

    proptest::proptest! {
        /// Whatever `X-Forwarded-For` says (in one header or two, with
        /// garbage among the addresses), the client is the peer or one of
        /// the addresses it lists, and an untrusted peer is always the
        /// client: a header never makes up an address, and only a trusted
        /// proxy's is believed.
        #[test]
        fn the_client_is_the_peer_or_a_forwarded_address(
            peer_trusted in proptest::bool::ANY,
            hops in proptest::collection::vec(
                proptest::prop_oneof![
                    (0u8..4).prop_map(|i| format!("10.0.0.{i}")),
                    (0u8..4).prop_map(|i| format!("203.0.113.{i}")),
                    proptest::strategy::Just("2001:db8::1".to_owned()),
                    proptest::strategy::Just("::ffff:10.0.0.1".to_owned()),
                    "[ -~]{0,12}",
                ],
                0..6,
            ),
            split in 0usize..6,
        ) {
            use proptest::{prop_assert, prop_assert_eq};
            let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
            let peer: SocketAddr = match peer_trusted {
                true => "10.9.9.9:443".parse().unwrap(),
                false => "198.51.100.7:443".parse().unwrap(),
            };
            // The hops in one header or two.
            let split = split.min(hops.len());
            let mut headers = HeaderMap::new();
            for part in [&hops[..split], &hops[split..]] {
                if let Ok(value) = part.join(", ").parse() {
                    headers.append("x-forwarded-for", value);
                }
            }
            let client = client_ip(peer, &headers, &trusted);
            let listed: Vec<IpAddr> = headers
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
                .map(canonical)
                .collect();
            prop_assert!(client == canonical(peer.ip()) || listed.contains(&client), "{client} from {hops:?}");
            if !peer_trusted {
                prop_assert_eq!(client, canonical(peer.ip()));
            }
        }
    }
}
