//! A black-box fuzzer: mutated uploads and headers thrown at a real node
//! over HTTP, seeded and repeatable (`WEIR_FUZZ_SEED`, and
//! `WEIR_FUZZ_REQUESTS` for a longer run than the suite's). Whatever comes
//! in, the node stays up with flat memory, every answer is JSON with the
//! request's id, a connection is closed only after an answer that says
//! `Connection: close`, and every event it acknowledged is in Kafka as
//! strict JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{json, Value};
use weir_e2e::{batch_request, category, consume_all, kafka, Connection, Node, Transport};

/// xorshift64*: small, seeded, the same sequence on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Pieces of JSON and of the header grammars that mutations splice in.
const DICTIONARY: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"",
    "\\",
    ",",
    ":",
    "null",
    "true",
    "-0",
    "1e999",
    "-1e-999",
    "\\u0000",
    "\\ud800",
    "\\uDFFF",
    "\u{feff}",
    "\u{10ffff}",
    "é",
    "\"data\"",
    "\"meta\"",
    "\"category\"",
    "\"id\"",
    "[[[[[[[[[[[[[[[[",
    "{\"a\":{\"a\":{\"a\":",
    "\0",
    "\r\n",
    " ",
    "123456789012345678901234567890",
    "\"\\\"\\\\\"",
    "\u{7f}",
    "\u{ff}",
];

/// Valid uploads the mutations start from.
fn seeds(category: &str) -> Vec<Vec<u8>> {
    let event = |i: usize| json!({"id": format!("e{i}"), "user": "u1", "ua": "Mozilla/5.0", "props": {"n": i, "f": 1.5, "s": "é\u{1F600}\\\"", "deep": [[[{"x": null}]]], "t": true}});
    vec![
        json!({"meta": {"category": category}, "data": [event(1)]}),
        json!({"meta": {"category": category}, "data": (0..20).map(event).collect::<Vec<_>>()}),
        json!({"meta": {"category": category, "app": "shop", "device_id": "d-1"}, "data": [event(2), {"id": "x", "email": "ann@example.com"}]}),
    ]
    .into_iter()
    .map(|v| v.to_string().into_bytes())
    .collect()
}

/// One mutation of `body`, as libFuzzer's would be.
fn mutate(rng: &mut Rng, body: &mut Vec<u8>) {
    let at = rng.below(body.len() + 1);
    match rng.below(7) {
        0 if !body.is_empty() => {
            let i = rng.below(body.len());
            body[i] ^= 1 << rng.below(8);
        }
        1 if !body.is_empty() => {
            let i = rng.below(body.len());
            body[i] = rng.next() as u8;
        }
        2 => {
            let end = (at + rng.below(16)).min(body.len());
            body.drain(at..end);
        }
        3 => {
            let piece = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
            body.splice(at..at, piece.iter().copied());
        }
        4 => {
            let end = (at + rng.below(64)).min(body.len());
            let copy = body[at..end].to_vec();
            let to = rng.below(body.len() + 1);
            body.splice(to..to, copy);
        }
        5 => body.truncate(at),
        _ => {
            let piece = DICTIONARY[rng.below(DICTIONARY.len())].as_bytes();
            let end = (at + piece.len()).min(body.len());
            body.splice(at..end, piece.iter().copied());
        }
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

/// A request: a seed, mutated a few times (sometimes not at all),
/// sometimes compressed (and then maybe mutated again), with headers drawn
/// from right, wrong and odd ones.
fn request(rng: &mut Rng, seeds: &[Vec<u8>]) -> http::Request<http_body_util::Full<Bytes>> {
    let mut body = seeds[rng.below(seeds.len())].clone();
    if !rng.chance(10) {
        for _ in 0..1 + rng.below(4) {
            mutate(rng, &mut body);
        }
    }
    let mut headers: Vec<(&str, String)> = Vec::new();
    match rng.below(10) {
        0 => {
            body = gzip(&body);
            headers.push(("content-encoding", "gzip".into()));
        }
        1 => {
            body = zstd::encode_all(&body[..], 1).unwrap_or_default();
            headers.push(("content-encoding", "zstd".into()));
        }
        2 => {
            body = gzip(&body);
            mutate(rng, &mut body);
            headers.push(("content-encoding", "gzip".into()));
        }
        3 => {
            let odd = [
                "br",
                "gzip, zstd",
                "identity",
                "GZIP",
                "",
                "x-unknown",
                "zstd",
            ];
            headers.push(("content-encoding", odd[rng.below(odd.len())].into()));
        }
        _ => {}
    }
    if rng.chance(20) {
        let values = [
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            "00-00000000000000000000000000000000-b7ad6b7169203331-01".to_owned(),
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".to_owned(),
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331".to_owned(),
            format!(
                "00-{:032x}-{:016x}-{:02x}",
                rng.next(),
                rng.next(),
                rng.next() as u8
            ),
            "garbage".to_owned(),
        ];
        headers.push(("traceparent", values[rng.below(values.len())].clone()));
        if rng.chance(50) {
            headers.push(("tracestate", "a=b,c=d,=x,,k=".repeat(1 + rng.below(20))));
        }
    }
    if rng.chance(10) {
        let values = [
            "203.0.113.9",
            "unknown, 198.51.100.2",
            "::1, ,",
            "1.2.3.4:80",
            "[2001:db8::1]",
        ];
        headers.push(("x-forwarded-for", values[rng.below(values.len())].into()));
    }
    let mut request = batch_request(
        Some("fuzz"),
        body,
        &headers
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .collect::<Vec<_>>(),
    );
    if rng.chance(5) {
        let types = [
            "text/plain",
            "application/json; charset=latin1",
            "",
            "application/x-ndjson",
        ];
        if let Ok(value) = http::HeaderValue::from_str(types[rng.below(types.len())]) {
            request.headers_mut().insert("content-type", value);
        }
    }
    request
}

/// The node's resident memory, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[tokio::test(flavor = "multi_thread")]
async fn mutated_uploads_and_headers_never_break_the_node_or_lose_an_acknowledged_event() {
    let seed: u64 = std::env::var("WEIR_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let requests: usize = std::env::var("WEIR_FUZZ_REQUESTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    let category = category("fuzz", 2).await;
    let node = Node::start(
        &weir_e2e::tenant("fuzz", "fuzz", ""),
        &[("WEIR_KAFKA_BROKERS", kafka())],
    )
    .unwrap();
    let pid = node.pid();
    let seeds = seeds(&category);
    let mut rng = Rng(seed);
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    // Acknowledged events: (topic, partition, offset) → backend id.
    let mut acknowledged: BTreeMap<(String, i64, i64), String> = BTreeMap::new();
    let mut connection = Connection::open(&Transport::Http, &node.http)
        .await
        .unwrap();
    let mut warm_rss = 0;
    for n in 0..requests {
        if n == requests / 10 {
            warm_rss = rss(pid);
        }
        let request = request(&mut rng, &seeds);
        let answer = match connection.send(request).await {
            Ok(answer) => answer,
            Err(e) => panic!("request {n} (seed {seed}): the connection was dropped without Connection: close: {e}"),
        };
        *statuses.entry(answer.status).or_default() += 1;
        assert!(
            matches!(answer.status, 200 | 207 | 400 | 413 | 415 | 503),
            "request {n} (seed {seed}): status {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        );
        let json: Value = serde_json::from_slice(&answer.body).unwrap_or_else(|e| {
            panic!(
                "request {n} (seed {seed}): the answer is not JSON ({e}): {:?}",
                answer.body
            )
        });
        let id = answer.header("x-request-id").unwrap_or_default();
        assert!(
            !id.is_empty() && json["request_id"] == id,
            "request {n}: {json}"
        );
        for part in json["parts"].as_array().into_iter().flatten() {
            if part["code"] == "ok" {
                let place = (
                    part["topic"].as_str().unwrap_or_default().to_owned(),
                    part["partition"].as_i64().unwrap_or(-1),
                    part["offset"].as_i64().unwrap_or(-1),
                );
                let backend = part["backend_id"].as_str().unwrap_or_default().to_owned();
                assert!(
                    acknowledged.insert(place, backend).is_none(),
                    "request {n}: one place, two events: {json}"
                );
            }
        }
        if answer.header("connection") == Some("close") {
            connection = Connection::open(&Transport::Http, &node.http)
                .await
                .unwrap();
        }
    }
    println!(
        "seed {seed}, {requests} requests: statuses {statuses:?}, {} events acknowledged",
        acknowledged.len()
    );
    // Both sides of the grammar were reached, or the mutations say nothing.
    assert!(
        statuses.get(&200).is_some_and(|&n| n > requests / 20),
        "{statuses:?}"
    );
    assert!(
        statuses.get(&400).is_some_and(|&n| n > requests / 20),
        "{statuses:?}"
    );

    // Alive, and its memory flat: what it holds after a tenth of the run
    // (allocator arenas, buffers, the producer's queue warmed up) plus a
    // margin that a leak of every upload would pass many times over.
    let health = weir_e2e::get(&node.http, "/healthz").await.unwrap();
    assert_eq!(health.status, 200);
    let end_rss = rss(pid);
    println!(
        "RSS after {} requests: {} MiB, at the end: {} MiB",
        requests / 10,
        warm_rss >> 20,
        end_rss >> 20
    );
    assert!(end_rss < warm_rss + (48 << 20), "{warm_rss} → {end_rss}");

    // Every acknowledged event is in Kafka, where the answer said, as
    // strict JSON (the harness parses every record with serde_json).
    let topics: BTreeSet<&str> = acknowledged.keys().map(|(t, ..)| t.as_str()).collect();
    for topic in topics {
        let records = consume_all(kafka(), topic, Duration::from_secs(2)).unwrap();
        let by_place: BTreeMap<(i64, i64), &weir_e2e::Record> = records
            .iter()
            .map(|r| ((i64::from(r.partition), r.offset), r))
            .collect();
        for ((_, partition, offset), backend) in
            acknowledged.iter().filter(|((t, ..), _)| t == topic)
        {
            let record = by_place.get(&(*partition, *offset)).unwrap_or_else(|| {
                panic!("acknowledged {backend} not at {topic}/{partition}@{offset}")
            });
            assert!(
                String::from_utf8_lossy(&record.raw).contains(backend.as_str())
                    || record.headers.values().any(|v| v == backend),
                "{topic}/{partition}@{offset} is not {backend}: {:?}",
                record.value
            );
        }
    }
}
