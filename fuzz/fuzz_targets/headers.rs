//! The request headers a node reads: the W3C trace context, Content-Type
//! and Content-Encoding, X-Forwarded-For and the API key.
//!
//! - `traceparent`: accepted exactly when W3C Trace Context says it is
//!   valid (checked here against a reading of the spec's grammar), and what
//!   is accepted goes out again as the same trace and parent, version 00,
//!   only the sampled flag kept; an invalid one starts a new trace (no
//!   context). `tracestate`: what goes out is well formed and holds only
//!   members that came in.
//! - Content-Type/Content-Encoding: JSON in one known coding, or 415.
//! - X-Forwarded-For: the client is the peer or an address the header
//!   lists, and only a trusted peer's list is believed.
//! - API key: a non-empty key taken from the header it came in, or 401.
#![no_main]

use std::net::{IpAddr, SocketAddr};

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use libfuzzer_sys::fuzz_target;
use opentelemetry::trace::TraceContextExt;
use weir_core::encoding::{check_headers, Encoding};
use weir_core::headers::{api_key, client_ip, trace_context, trace_headers};

#[derive(Arbitrary, Debug)]
enum TraceParent {
    Text(Vec<u8>),
    /// Built from its fields, so that valid ones are common.
    Fields {
        version: u8,
        trace_id: u128,
        parent_id: u64,
        flags: u8,
        upper: bool,
        tail: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    traceparent: Option<TraceParent>,
    tracestate: Vec<Vec<u8>>,
    content_type: Option<Vec<u8>>,
    content_encoding: Vec<Vec<u8>>,
    forwarded_for: Vec<Vec<u8>>,
    peer_is_proxy: bool,
    authorization: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

fuzz_target!(|input: Input| {
    let mut headers = HeaderMap::new();
    let mut add = |name: &'static str, bytes: &[u8]| {
        if let Ok(value) = HeaderValue::from_bytes(bytes) {
            headers.append(name, value);
        }
    };
    if let Some(parent) = &input.traceparent {
        add("traceparent", &traceparent_text(parent));
    }
    for state in &input.tracestate {
        add("tracestate", state);
    }
    if let Some(media) = &input.content_type {
        add("content-type", media);
    }
    for coding in &input.content_encoding {
        add("content-encoding", coding);
    }
    for hops in &input.forwarded_for {
        add("x-forwarded-for", hops);
    }
    if let Some(value) = &input.authorization {
        add("authorization", value);
    }
    if let Some(value) = &input.key {
        add("x-weir-key", value);
    }
    check_trace_context(&headers);
    check_body_headers(&headers);
    check_forwarded_for(&headers, input.peer_is_proxy);
    check_api_key(&headers);
});

fn traceparent_text(parent: &TraceParent) -> Vec<u8> {
    match parent {
        TraceParent::Text(bytes) => bytes.clone(),
        TraceParent::Fields {
            version,
            trace_id,
            parent_id,
            flags,
            upper,
            tail,
        } => {
            let text = format!("{version:02x}-{trace_id:032x}-{parent_id:016x}-{flags:02x}");
            let mut text = match upper {
                true => text.to_ascii_uppercase().into_bytes(),
                false => text.into_bytes(),
            };
            text.extend_from_slice(tail);
            text
        }
    }
}

/// `traceparent` by the grammar of W3C Trace Context (level 1, §3.2):
/// `version "-" trace-id "-" parent-id "-" trace-flags`, lowercase hex of
/// 2, 32, 16 and 2 digits; version `ff` is invalid; all-zero ids are
/// invalid; version 00 has nothing after the flags, a later version may
/// have more after a `-`. (HTTP's optional white space around a value is
/// not part of it.)
fn w3c_traceparent(value: &str) -> Option<(&str, &str, u8)> {
    let value = value.trim_matches([' ', '\t']);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    };
    let fields: Vec<&str> = value.splitn(5, '-').collect();
    let [version, trace_id, parent_id, flags, rest @ ..] = fields.as_slice() else {
        return None;
    };
    let valid = lower_hex(version, 2)
        && *version != "ff"
        && lower_hex(trace_id, 32)
        && trace_id.chars().any(|c| c != '0')
        && lower_hex(parent_id, 16)
        && parent_id.chars().any(|c| c != '0')
        && lower_hex(flags, 2)
        && match *version {
            "00" => rest.is_empty(),
            _ => true,
        };
    valid.then(|| {
        (
            *trace_id,
            *parent_id,
            u8::from_str_radix(flags, 16).unwrap_or(0),
        )
    })
}

/// A `tracestate` list member by W3C's grammar: `key=value`, the key a
/// simple key (`[a-z0-9][a-z0-9_\-*/]{0,255}`) or `tenant@system` (the
/// tenant like a simple key of up to 241, the system `[a-z]` and up to 13
/// more), the value 1 to 256 printable ASCII characters but `,` and `=`,
/// not ending in a space.
fn w3c_list_member(member: &str) -> bool {
    let Some((key, value)) = member.split_once('=') else {
        return false;
    };
    let key_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-*/".contains(c);
    let simple = |k: &str, max: usize| {
        (1..=max).contains(&k.len())
            && k.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && k.chars().all(key_char)
    };
    let key_ok = match key.split_once('@') {
        Some((tenant, system)) => {
            simple(tenant, 241)
                && simple(system, 14)
                && system.starts_with(|c: char| c.is_ascii_lowercase())
        }
        None => simple(key, 256),
    };
    key_ok
        && (1..=256).contains(&value.len())
        && value
            .chars()
            .all(|c| (' '..='~').contains(&c) && c != ',' && c != '=')
        && !value.ends_with(' ')
}

fn check_trace_context(headers: &HeaderMap) {
    let cx = trace_context(headers);
    let span = cx.span();
    let got = span.span_context();
    let sent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(w3c_traceparent);
    let out = trace_headers(&cx);
    let Some((trace_id, parent_id, flags)) = sent else {
        assert!(!got.is_valid(), "{headers:?} taken as {got:?}");
        assert!(out.traceparent.is_none() && out.tracestate.is_none());
        return;
    };
    assert!(got.is_remote());
    let expected = format!("00-{trace_id}-{parent_id}-{:02x}", flags & 1);
    assert_eq!(
        out.traceparent.as_deref(),
        Some(expected.as_str()),
        "{headers:?}"
    );
    if let Some(state) = out.tracestate {
        let members: Vec<&str> = state.split(',').collect();
        assert!(members.len() <= 32, "{state}");
        let sent: Vec<String> = headers
            .get_all("tracestate")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|m| m.trim_matches([' ', '\t']).to_owned())
            .collect();
        for member in members {
            assert!(w3c_list_member(member), "out: {member:?} of {state:?}");
            assert!(sent.iter().any(|s| s == member), "{member:?} was not sent");
        }
    }
}

fn check_body_headers(headers: &HeaderMap) {
    let media = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim_matches([' ', '\t']).to_ascii_lowercase());
    let codings: Option<Vec<String>> = headers
        .get_all("content-encoding")
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<Vec<_>>>()
        .map(|lines| {
            lines
                .iter()
                .flat_map(|l| l.split(','))
                .map(|c| c.trim_matches([' ', '\t']).to_ascii_lowercase())
                .filter(|c| !c.is_empty() && c != "identity")
                .collect()
        });
    let expected = match (media.as_deref(), codings.as_deref()) {
        (Some("application/json"), Some([])) => Some(Encoding::Identity),
        (Some("application/json"), Some([one])) => match one.as_str() {
            "gzip" | "x-gzip" => Some(Encoding::Gzip),
            "zstd" => Some(Encoding::Zstd),
            _ => None,
        },
        _ => None,
    };
    match check_headers(headers) {
        Ok(encoding) => assert_eq!(Some(encoding), expected, "{headers:?}"),
        Err(refused) => {
            assert_eq!(expected, None, "{headers:?}: {}", refused.message);
            assert_eq!(refused.status.as_u16(), 415);
            assert!(!refused.message.is_empty());
        }
    }
}

fn check_forwarded_for(headers: &HeaderMap, peer_is_proxy: bool) {
    let trusted: Vec<IpNet> = vec![
        "10.0.0.0/8".parse().expect("a net"),
        "::1/128".parse().expect("a net"),
    ];
    let peer: SocketAddr = match peer_is_proxy {
        true => "10.9.9.9:443".parse().expect("an address"),
        false => "198.51.100.7:443".parse().expect("an address"),
    };
    let client = client_ip(peer, headers, &trusted);
    let listed: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
        .map(weir_core::headers::canonical)
        .collect();
    assert!(
        client == peer.ip() || listed.contains(&client),
        "{client} from {headers:?}"
    );
    if !peer_is_proxy {
        assert_eq!(client, peer.ip());
    }
}

fn check_api_key(headers: &HeaderMap) {
    match api_key(headers) {
        Ok(key) => {
            assert!(!key.is_empty());
            assert_eq!(key, key.trim(), "a key is trimmed");
            let carried = ["authorization", "x-weir-key"].iter().any(|name| {
                headers
                    .get(*name)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains(key))
            });
            assert!(carried, "{key:?} from {headers:?}");
            if let Some(auth) = headers.get("authorization") {
                let text = auth.to_str().expect("a key came from it");
                assert!(
                    text.len() > 7 && text[..7].eq_ignore_ascii_case("bearer "),
                    "{text:?}"
                );
            }
        }
        Err(refused) => {
            assert_eq!(refused.status.as_u16(), 401);
            assert!(!refused.message.is_empty());
        }
    }
}
