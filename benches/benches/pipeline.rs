//! Per-event cost of the CPU stages: decode + validate + split, and enrich
//! (UUIDv7, client IP, GeoIP on MaxMind's test City database), at batch
//! sizes 1, 50 and 500 of ~400-byte events; and the check of one event a
//! filter replaced (as a masking filter replaces every event).

use std::path::Path;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weir::config::Limits;
use weir::pipeline::decode::{decode_and_split, replacement, EventLimits};
use weir::pipeline::enrich::enrich;
use weir::pipeline::geoip::GeoIp;

fn body(events: usize) -> Vec<u8> {
    let ips = ["81.2.69.142", "2001:480:10::1", "89.160.20.128", "8.8.8.8"];
    let data: Vec<String> = (0..events)
        .map(|i| {
            format!(
                r#"{{"id":"ev-{i}","ts":1763780000000,"name":"screen_view","ip":"{}","props":{{"screen":"checkout","cold":false,"pad":"{}"}}}}"#,
                ips[i % ips.len()],
                "x".repeat(290)
            )
        })
        .collect();
    format!(
        r#"{{"meta":{{"category":"PERF","app":"bench","device_id":"d-1"}},"data":[{}]}}"#,
        data.join(",")
    )
    .into_bytes()
}

fn pipeline(c: &mut Criterion) {
    let limits = Limits::default();
    let db = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/GeoIP2-City-Test.mmdb");
    let geoip = GeoIp::open(&db, false).expect("the MaxMind test database");
    let client = "198.51.100.7".parse().expect("an IP");

    let mut group = c.benchmark_group("decode_split");
    for n in [1, 50, 500] {
        let body = body(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| {
            b.iter(|| decode_and_split(body, &limits, 0).map(|batch| batch.events.len()))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("enrich");
    for n in [1, 50, 500] {
        let body = body(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &body, |b, body| {
            b.iter_batched(
                || decode_and_split(body, &limits, 0).expect("a valid batch"),
                |mut batch| {
                    enrich(&mut batch, client, Some(&geoip));
                    batch
                },
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();

    // A replaced event: the text a filter hands back, checked before the
    // next filter or the record gets it (the copy is part of the cost: the
    // check takes the filter's bytes).
    let replaced = br#"{"id":"ev-1","ts":1763780000000,"name":"screen_view","ip":"81.2.69.142","user_agent":"Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X)","props":{"screen":"checkout","cold":false,"email":"***","pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"},"is_bot":true}"#.to_vec();
    let event_limits = EventLimits::of(&limits);
    c.bench_function("replacement", |b| {
        b.iter(|| replacement(replaced.clone(), event_limits).map(|text| text.len()))
    });
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
