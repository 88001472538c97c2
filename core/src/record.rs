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
pub fn write_value(out: &mut Vec<u8>, fields: &RecordFields<'_>, meta: &str, data: &str) {
    // Serializing a struct of strings and numbers into a Vec cannot fail.
    if sonic_rs::to_writer(&mut *out, fields).is_err() || out.last() != Some(&b'}') {
        out.clear();
        out.push(b'{');
    } else {
        out.pop(); // the closing brace; meta and data follow
        out.push(b',');
    }
    out.extend_from_slice(b"\"meta\":");
    out.extend_from_slice(meta.as_bytes());
    out.extend_from_slice(b",\"data\":");
    out.extend_from_slice(data.as_bytes());
    out.push(b'}');
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
}
