//! The request headers a node reads, parsed: the API key (`Authorization:
//! Bearer` or `X-Weir-Key`), the client's address (`X-Forwarded-For`, from
//! trusted proxies only) and the W3C trace context (`traceparent`,
//! `tracestate`) in and out. Each takes what a stranger sent and either
//! reads it or says why not; none panics (fuzz/fuzz_targets/headers.rs).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr as _;

use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};
use ipnet::IpNet;
use opentelemetry::propagation::{Injector, TextMapPropagator};
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
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

/// The trace context a request carries: its `traceparent` when W3C Trace
/// Context says it is valid (else none: the request starts a new trace),
/// with its `tracestate` when that is valid too.
///
/// Read here, by the spec's grammar, not by OpenTelemetry's propagator: it
/// takes more than the spec allows (`cf-<32>-<16>-009`, `00-1-1-01`: any
/// width, any version, a longer flags field), and the node would pass such
/// a parent on to every record as if the client had sent it; found by
/// fuzz/fuzz_targets/headers.rs.
pub fn trace_context(headers: &HeaderMap) -> Context {
    let parent = headers
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| traceparent(v.trim_matches([' ', '\t'])));
    let Some((trace_id, span_id, flags)) = parent else {
        return Context::new();
    };
    let state = tracestate(headers)
        .and_then(|state| TraceState::from_str(&state).ok())
        .unwrap_or_default();
    // Only the sampled flag is known to version 00; others are not passed on.
    let flags = TraceFlags::new(flags) & TraceFlags::SAMPLED;
    let remote = SpanContext::new(trace_id, span_id, flags, true, state);
    Context::new().with_remote_span_context(remote)
}

const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// A `traceparent` by W3C Trace Context (level 1, §3.2):
/// `version-traceid-parentid-flags` in lowercase hex of 2, 32, 16 and 2
/// digits; version `ff` is invalid, and so are all-zero ids; version 00
/// ends after the flags, a later version may go on after a `-`.
fn traceparent(value: &str) -> Option<(TraceId, SpanId, u8)> {
    let b = value.as_bytes();
    let hex = |range: std::ops::Range<usize>| {
        b.get(range)
            .filter(|s| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')))
            .and_then(|s| std::str::from_utf8(s).ok())
    };
    let version = hex(0..2)?;
    let rest_ok = match version {
        "ff" => false,
        "00" => b.len() == 55,
        _ => b.len() == 55 || b.get(55) == Some(&b'-'),
    };
    if !rest_ok || (b[2], b[35], b[52]) != (b'-', b'-', b'-') {
        return None;
    }
    let trace_id = u128::from_str_radix(hex(3..35)?, 16)
        .ok()
        .filter(|&id| id != 0)?;
    let span_id = u64::from_str_radix(hex(36..52)?, 16)
        .ok()
        .filter(|&id| id != 0)?;
    let flags = u8::from_str_radix(hex(53..55)?, 16).ok()?;
    Some((
        TraceId::from_bytes(trace_id.to_be_bytes()),
        SpanId::from_bytes(span_id.to_be_bytes()),
        flags,
    ))
}

/// The request's `tracestate` (its header lines joined, as HTTP lists
/// are) when every list member is well formed by W3C Trace Context and
/// there are at most 32 of them; else none (the spec lets a vendor drop a
/// `tracestate` it cannot read, and a partial one could misattribute).
fn tracestate(headers: &HeaderMap) -> Option<Cow<'_, str>> {
    let mut lines = headers.get_all(TRACESTATE).iter();
    let first = lines.next()?.to_str().ok()?;
    let mut joined = Cow::Borrowed(first);
    for line in lines {
        let joined = joined.to_mut();
        joined.push(',');
        joined.push_str(line.to_str().ok()?);
    }
    let members = joined
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .filter(|m| !m.is_empty());
    let mut count = 0;
    for member in members {
        count += 1;
        if count > 32 || !is_list_member(member) {
            return None;
        }
    }
    (count > 0).then_some(joined)
}

/// A `tracestate` list member: `key=value`, the key of up to 256 of
/// `a-z 0-9 _ - * /` starting with a letter or digit, or `tenant@system`
/// (up to 241 and 14, the system starting with a letter); the value 1 to
/// 256 printable ASCII characters but `,` and `=`, not ending in a space.
fn is_list_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    let part = |key: &str, max: usize, first: fn(&u8) -> bool| {
        let allowed = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-*/".contains(c);
        (1..=max).contains(&key.len())
            && key.as_bytes().first().is_some_and(first)
            && key.as_bytes().iter().all(allowed)
    };
    let letter_or_digit: fn(&u8) -> bool = |c| c.is_ascii_lowercase() || c.is_ascii_digit();
    let key_ok = match key.split_once('@') {
        Some((tenant, system)) => {
            part(tenant, 241, letter_or_digit) && part(system, 14, u8::is_ascii_lowercase)
        }
        None => part(key, 256, letter_or_digit),
    };
    key_ok
        && (1..=256).contains(&value.len())
        && value
            .bytes()
            .all(|c| (b' '..=b'~').contains(&c) && c != b',' && c != b'=')
        && !value.ends_with(' ')
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

    use opentelemetry::trace::TraceContextExt;

    #[test]
    fn extracts_and_injects_w3c_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        h.insert("tracestate", "vendor=abc".parse().unwrap());
        let cx = trace_context(&h);
        let span = cx.span();
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(sc.is_remote());
        let out = trace_headers(&cx);
        assert_eq!(
            out.traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(out.tracestate.as_deref(), Some("vendor=abc"));
    }

    #[test]
    fn a_malformed_traceparent_is_ignored() {
        let mut h = HeaderMap::new();
        h.insert("traceparent", "00-zz-00f067aa0ba902b7-01".parse().unwrap());
        assert!(!trace_context(&h).span().span_context().is_valid());
        assert!(trace_headers(&Context::new()).traceparent.is_none());
    }

    fn trace_headers_for(pairs: &[(&'static str, &str)]) -> TraceHeaders {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        trace_headers(&trace_context(&h))
    }

    /// Only a `traceparent` W3C Trace Context calls valid is continued;
    /// OpenTelemetry's propagator alone took every one of the invalid ones
    /// below but the all-zero ids (the first was found by
    /// fuzz/fuzz_targets/headers.rs).
    #[test]
    fn only_a_w3c_traceparent_is_continued() {
        let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
        let parent = "00f067aa0ba902b7";
        for invalid in [
            "cf-36306630303d6f326a6f72302c206730-0000000030616137-009",
            "00-1-1-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0-04bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
        ] {
            assert_eq!(
                trace_headers_for(&[("traceparent", invalid)]).traceparent,
                None,
                "{invalid}"
            );
        }
        // A later version may carry more after the flags; it goes on as 00,
        // with only the sampled flag; white space around the value is HTTP's.
        for (sent, flags) in [
            (format!("01-{trace}-{parent}-03-more-fields"), "01"),
            (format!(" 00-{trace}-{parent}-00\t"), "00"),
            (format!("cc-{trace}-{parent}-ff"), "01"),
        ] {
            assert_eq!(
                trace_headers_for(&[("traceparent", &sent)]).traceparent,
                Some(format!("00-{trace}-{parent}-{flags}")),
                "{sent}"
            );
        }
    }

    /// `tracestate` goes on when all of it is well formed (its lines joined,
    /// at most 32 members), and not at all otherwise.
    #[test]
    fn a_tracestate_goes_on_whole_or_not_at_all() {
        let parent = (
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        );
        let state = |lines: &[&'static str]| {
            let mut pairs = vec![parent];
            pairs.extend(lines.iter().map(|l| ("tracestate", *l)));
            trace_headers_for(&pairs).tracestate
        };
        assert_eq!(
            state(&["rojo=00f067aa0ba902b7"]).as_deref(),
            Some("rojo=00f067aa0ba902b7")
        );
        assert_eq!(
            state(&["a=1, tenant@vendor=x y", "b=2"]).as_deref(),
            Some("a=1,tenant@vendor=x y,b=2")
        );
        for broken in [
            "a=", "A=1", "a=1,b", "a=x\ty", "a=1 =", "a=b=c", "@v=1", "t@9=1",
        ] {
            assert_eq!(state(&["ok=1", broken]), None, "{broken}");
        }
        let many: String = (0..33).map(|i| format!("k{i}=v,")).collect();
        let many: &'static str = Box::leak(many.into_boxed_str());
        assert_eq!(state(&[many]), None);
        assert_eq!(state(&[]), None);
    }
}
