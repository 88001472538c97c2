//! The record value downstream consumers read (`proto/record.md`): the
//! gateway's own fields, then the client's `meta` and event text exactly
//! as they were sent, already checked to be JSON by [`crate::decode`] (or a
//! filter's replacement, by [`crate::decode::replacement`]).

use std::net::IpAddr;

use serde::Serialize;

use crate::model::Geo;

/// The fields of the record value that the gateway writes itself.
#[derive(Serialize)]
pub struct RecordFields<'a> {
    pub backend_id: &'a str,
    pub id: Option<&'a str>,
    pub tenant: &'a str,
    pub category: &'a str,
    pub received_at: i64,
    pub ts: Option<i64>,
    pub request_id: &'a str,
    pub client_ip: Option<IpAddr>,
    pub geo: Option<&'a Geo>,
}

/// Writes the record value: the gateway's fields, then the client's `meta`
/// and event object exactly as they were sent (already validated JSON).
///
/// Written by hand, byte for byte what serde_json writes for
/// [`RecordFields`] (a property test compares them): through serde, the
/// fields of every record cost about a tenth of a request's instructions
/// (benches/instructions.sh), more than decoding its events.
pub fn write_value(out: &mut Vec<u8>, fields: &RecordFields<'_>, meta: &str, data: &str) {
    out.reserve(192 + meta.len() + data.len());
    out.extend_from_slice(b"{\"backend_id\":");
    write_str(out, fields.backend_id);
    out.extend_from_slice(b",\"id\":");
    write_or_null(out, fields.id, write_str);
    out.extend_from_slice(b",\"tenant\":");
    write_str(out, fields.tenant);
    out.extend_from_slice(b",\"category\":");
    write_str(out, fields.category);
    out.extend_from_slice(b",\"received_at\":");
    write_int(out, fields.received_at);
    out.extend_from_slice(b",\"ts\":");
    write_or_null(out, fields.ts, write_int);
    out.extend_from_slice(b",\"request_id\":");
    write_str(out, fields.request_id);
    out.extend_from_slice(b",\"client_ip\":");
    write_or_null(out, fields.client_ip, write_ip);
    out.extend_from_slice(b",\"geo\":");
    write_or_null(out, fields.geo, write_geo);
    out.extend_from_slice(b",\"meta\":");
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
}

/// `n` in decimal, two digits at a time (itoa, as serde_json writes it):
/// `write!`'s formatting machinery cost more than the rest of the record,
/// and a digit at a time was still 1.8% of a request's instructions.
fn write_int(out: &mut Vec<u8>, n: i64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// An address as a JSON string (its text has nothing to escape).
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    out.push(b'"');
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                write_int(out, i64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing into a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
    out.push(b'"');
}

/// `value` by `write`, or `null`.
fn write_or_null<T>(out: &mut Vec<u8>, value: Option<T>, write: fn(&mut Vec<u8>, T)) {
    match value {
        Some(value) => write(out, value),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_geo(out: &mut Vec<u8>, geo: &Geo) {
    out.extend_from_slice(b"{\"country\":");
    write_or_null(out, geo.country.as_deref(), write_str);
    out.extend_from_slice(b",\"region\":");
    write_or_null(out, geo.region.as_deref(), write_str);
    out.extend_from_slice(b",\"city\":");
    write_or_null(out, geo.city.as_deref(), write_str);
    out.push(b'}');
}

/// The bytes a JSON string cannot hold as they are: `"`, `\\` and the
/// control characters.
const ESCAPED: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = true;
        b += 1;
    }
    table[b'"' as usize] = true;
    table[b'\\' as usize] = true;
    table
};

/// `text` as a JSON string, escaped as serde_json escapes: `"` and `\\`,
/// and control characters (`\b \t \n \f \r`, else `\u00xx`).
fn write_str(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = text.as_bytes();
    // Most text has nothing to escape: one pass the compiler vectorises
    // (no early exit), then one copy.
    let plain = !bytes.iter().fold(false, |any, &b| {
        any | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let (mut copied, mut i) = (0, 0);
    while i < bytes.len() {
        let b = bytes[i];
        if !ESCAPED[usize::from(b)] {
            i += 1;
            continue;
        }
        out.extend_from_slice(&bytes[copied..i]);
        i += 1;
        copied = i;
        let short = match b {
            0x08 => b'b',
            b'\t' => b't',
            b'\n' => b'n',
            0x0c => b'f',
            b'\r' => b'r',
            b'"' | b'\\' => b,
            _ => {
                let hex = [HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]];
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex[0], hex[1]]);
                continue;
            }
        };
        out.extend_from_slice(&[b'\\', short]);
    }
    out.extend_from_slice(&bytes[copied..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_embeds_the_client_text_unchanged() {
        let mut out = Vec::new();
        let geo = Geo {
            country: Some("GB".into()),
            region: None,
            city: Some("London".into()),
        };
        write_value(
            &mut out,
            &RecordFields {
                backend_id: "b",
                id: Some("e\"1"),
                tenant: "acme",
                category: "c",
                received_at: 5,
                ts: None,
                request_id: "r",
                client_ip: Some("81.2.69.142".parse().unwrap()),
                geo: Some(&geo),
            },
            r#"{"category":"c"}"#,
            r#"{ "id": "e\"1", "n": [1, 2] }"#,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            r#"{"backend_id":"b","id":"e\"1","tenant":"acme","category":"c","received_at":5,"ts":null,"request_id":"r","client_ip":"81.2.69.142","geo":{"country":"GB","region":null,"city":"London"},"meta":{"category":"c"},"data":{ "id": "e\"1", "n": [1, 2] }}"#
        );
        let _: sonic_rs::Value = sonic_rs::from_str(&text).unwrap();
    }

    proptest::proptest! {
        /// Byte for byte what serde_json writes for the same fields, for
        /// any text in them (quotes, backslashes, control characters,
        /// any Unicode).
        #[test]
        fn the_fields_are_what_serde_json_writes(
            id in proptest::option::of("\\PC{0,12}|[\"\\\\\u{0}-\u{1f}a]{0,8}"),
            text in "\\PC{0,12}|[\"\\\\\u{0}-\u{1f}\u{7f}é]{0,8}",
            received_at in proptest::num::i64::ANY,
            ts in proptest::option::of(proptest::num::i64::ANY),
            v6 in proptest::bool::ANY,
        ) {
            let geo = Geo { country: Some(text.clone()), region: None, city: id.clone() };
            let client_ip: IpAddr = match v6 {
                true => "2001:db8::1".parse().unwrap(),
                false => "81.2.69.142".parse().unwrap(),
            };
            let fields = RecordFields {
                backend_id: &text,
                id: id.as_deref(),
                tenant: "acme",
                category: &text,
                received_at,
                ts,
                request_id: &text,
                client_ip: Some(client_ip).filter(|_| received_at % 2 == 0),
                geo: Some(&geo).filter(|_| received_at % 3 != 0),
            };
            let mut ours = Vec::new();
            write_value(&mut ours, &fields, "{}", "[]");
            let mut theirs = serde_json::to_vec(&fields).unwrap();
            theirs.pop();
            theirs.extend_from_slice(b",\"meta\":{},\"data\":[]}");
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), String::from_utf8(theirs).unwrap());
        }
    }
}
