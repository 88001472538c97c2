//! The request headers a node reads, parsed: the API key (`Authorization:
//! Bearer` or `X-Weir-Key`), the client's address (`X-Forwarded-For`, from
//! trusted proxies only) and the W3C trace context (`traceparent`,
//! `tracestate`) in and out. Each takes what a stranger sent and either
//! reads it or says why not; none panics (fuzz/fuzz_targets/headers.rs).

use std::net::{IpAddr, SocketAddr};

use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use ipnet::IpNet;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;

use crate::model::{ErrorCode, Reject};

/// The header an API key may come in when `Authorization` is not used.
pub const KEY_HEADER: &str = "x-weir-key";

/// The API key a request carries: 401 with the reason when it carries
/// none, or one that is not well formed.
pub fn api_key(headers: &HeaderMap) -> Result<&str, Reject> {
    if let Some(value) = headers.get(AUTHORIZATION) {
        let value = value
            .to_str()
            .map_err(|_| unauthorized("Authorization: not a valid header value"))?;
        return match value.split_once(' ') {
            Some((scheme, key))
                if scheme.eq_ignore_ascii_case("bearer") && !key.trim().is_empty() =>
            {
                Ok(key.trim())
            }
            _ => Err(unauthorized("Authorization: expected `Bearer <API key>`")),
        };
    }
    match headers.get(KEY_HEADER) {
        Some(value) => value
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or_else(|| unauthorized("X-Weir-Key: empty or not a valid header value")),
        None => Err(unauthorized(
            "missing API key: send `Authorization: Bearer <key>` or `X-Weir-Key: <key>`",
        )),
    }
}

/// 401 with the reason, and how to authenticate.
pub fn unauthorized(message: &str) -> Reject {
    Reject::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        .with_header("www-authenticate", "Bearer realm=\"weir\"")
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

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is looked up as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The trace context a request carries (empty when it carries none or a malformed one).
pub fn trace_context(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&HeaderExtractor(headers))
}

/// The `traceparent` (and `tracestate`, when there is one) for `cx`.
#[derive(Debug, Default, Clone)]
pub struct TraceHeaders {
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
}

impl Injector for TraceHeaders {
    fn set(&mut self, key: &str, value: String) {
        match key {
            "traceparent" => self.traceparent = Some(value),
            "tracestate" if !value.is_empty() => self.tracestate = Some(value),
            _ => {}
        }
    }
}

/// The W3C headers naming the span of `cx` as parent.
pub fn trace_headers(cx: &Context) -> TraceHeaders {
    let mut headers = TraceHeaders::default();
    TraceContextPropagator::new().inject_context(cx, &mut headers);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

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

    use proptest::strategy::Strategy as _;

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
