//! The cost of user filters per event: a pass-through filter (the host's own
//! cost: putting the batch together, instantiation, copying events in and
//! verdicts out), and the example filters `redact-pii` (scanning every
//! string, and named fields), `require-fields` and `tag-bots`, at batch
//! sizes 1, 50 and 500; and one instantiation alone. The same filters in
//! Python (componentize-py) and JavaScript (jco) beside them: pass-through,
//! Python's `tag-bots` and JavaScript's `require-fields`. And `redact-pii`'s
//! own code compiled natively, the floor under its Wasm figure.
//! (Every guest is fuel-metered: see `weir::pipeline::filter::host`.)
//! Needs the components of `scripts/build-filters.sh`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use weir::model::Geo;
use weir::pipeline::filter::host::{BatchInput, Caps, FilterEngine};

/// A component of `scripts/build-filters.sh`: `name`, or `py/name` and
/// `js/name` for the Python and JavaScript ones.
fn component(name: &str) -> Vec<u8> {
    let dir = match name.split_once('/') {
        Some(("py", _)) => "../target/wasm-py",
        Some(("js", _)) => "../target/wasm-js",
        _ => "../target/wasm32-unknown-unknown/release",
    };
    let file = name.rsplit('/').next().unwrap_or(name);
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(dir)
        .join(format!("{file}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/build-filters.sh)", path.display()))
}

/// The events' own text: client id and body. One in ten comes from a
/// crawler (for `tag-bots`).
fn owned(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let user_agent = match i % 10 {
                0 => "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
                _ => "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15",
            };
            (
                format!("ev-{i}"),
                format!(
                    r#"{{"id":"ev-{i}","name":"checkout","user_agent":"{user_agent}","email":"ann@example.com","props":{{"note":"call +44 20 7946 0958","pad":"{}"}}}}"#,
                    "x".repeat(200)
                )
                .into_bytes(),
            )
        })
        .collect()
}

/// Where the events come from: a node shares one location per client
/// address, and a batch holds a few.
fn places() -> Vec<Geo> {
    [
        ("GB", "England", "London"),
        ("SE", "Stockholm", "Stockholm"),
        ("US", "California", "San Jose"),
    ]
    .map(|(country, region, city)| Geo {
        country: Some(country.into()),
        region: Some(region.into()),
        city: Some(city.into()),
    })
    .into()
}

fn events<'a>(owned: &'a [(String, Vec<u8>)], places: &'a [Geo]) -> BatchInput<'a> {
    let mut batch = BatchInput::with_capacity("bench", "PERF", 1_763_780_000_000, owned.len());
    for (i, (id, body)) in owned.iter().enumerate() {
        let backend_id = 0x01a2_01c9_7d46_748f_85b8_0000_0000_0000 + i as u128;
        let place = &places[i % places.len()];
        batch.push(
            backend_id,
            id,
            Some([81, 2, 69, 142].into()),
            Some(place),
            body,
        );
    }
    batch
}

fn filters(c: &mut Criterion) {
    let engine = FilterEngine::new();
    // The Python and JavaScript components take seconds to compile: once.
    engine.cache_in(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/filter-cache"));
    let places = places();
    let caps = Caps {
        memory_bytes: 64 << 20,
        timeout: Duration::from_secs(5),
        max_output_bytes: 64 << 20,
        fuel: None,
    };
    // (bench, component, config)
    for (name, filter, config) in [
        ("pass_through", "pass_through", ""),
        ("pass_through_python", "py/pass_through", ""),
        ("pass_through_js", "js/pass_through", ""),
        // Every string value scanned.
        ("redact_pii", "redact_pii", "{}"),
        ("redact_pii_ts", "js/redact_pii", "{}"),
        // Two named fields, both with something to mask in every event:
        // each is rewritten where it is with `edit_field`.
        (
            "redact_pii_fields",
            "redact_pii",
            r#"{"fields": ["email", "props.note"]}"#,
        ),
        // Fields read with `Event::get` (the body is parsed only to tag).
        (
            "require_fields",
            "require_fields",
            r#"{"fields": ["id", "props.note"]}"#,
        ),
        (
            "require_fields_js",
            "js/require_fields",
            r#"{"fields": ["id", "props.note"]}"#,
        ),
        // One event in ten is a crawler's, tagged in its body.
        (
            "tag_bots",
            "tag_bots",
            r#"{"field": "user_agent", "action": "tag"}"#,
        ),
        (
            "tag_bots_python",
            "py/tag_bots",
            r#"{"field": "user_agent", "action": "tag"}"#,
        ),
    ] {
        let compiled = engine
            .compile(&component(filter), config, caps)
            .expect("compiles");
        let mut group = c.benchmark_group(format!("filter/{name}"));
        for n in [1, 50, 500] {
            let owned = owned(n);
            group.throughput(Throughput::Elements(n as u64));
            // What is measured works: a verdict per event.
            let verdicts = futures::executor::block_on(compiled.call(&events(&owned, &places)))
                .outcome
                .unwrap_or_else(|e| panic!("{name}/{n}: {e}"));
            assert_eq!(verdicts.len(), n, "{name}/{n}");
            // Putting the batch together is part of the cost: the node does
            // it for every call.
            group.bench_with_input(BenchmarkId::from_parameter(n), &owned, |b, owned| {
                b.iter(|| {
                    let batch = events(owned, &places);
                    futures::executor::block_on(compiled.call(&batch))
                        .outcome
                        .map(|v| v.len())
                })
            });
        }
        group.finish();
    }
    // One fresh instance (from the init snapshot) and an empty call, per
    // language.
    for (name, filter) in [
        ("instantiate_and_init", "pass_through"),
        ("instantiate_and_init_python", "py/pass_through"),
        ("instantiate_and_init_js", "js/pass_through"),
    ] {
        let compiled = engine
            .compile(&component(filter), "", caps)
            .expect("compiles");
        c.bench_function(&format!("filter/{name}"), |b| {
            b.iter(|| {
                futures::executor::block_on(
                    compiled.call(&BatchInput::with_capacity("bench", "PERF", 0, 0)),
                )
                .outcome
                .map(|v| v.len())
            })
        });
    }
    // The floor under `redact_pii_fields`: the filter's own code compiled
    // for this machine instead of Wasm, on the same events, with no host
    // around it (no instance, no copies in or out, no checks of what it
    // hands back). What a Wasm guest could at best come down to.
    let fields = ["email".to_owned(), "props.note".to_owned()];
    let owned = owned(50);
    let masked = owned
        .iter()
        .filter_map(|(_, body)| redact_pii::redact_event(body, Some(&fields), "***"))
        .count();
    assert_eq!(masked, 50, "every event has something to mask");
    let mut group = c.benchmark_group("filter_native/redact_pii_fields");
    group.throughput(Throughput::Elements(50));
    group.bench_function(BenchmarkId::from_parameter(50), |b| {
        b.iter(|| {
            owned
                .iter()
                .filter_map(|(_, body)| redact_pii::redact_event(body, Some(&fields), "***"))
                .count()
        })
    });
    group.finish();
}

criterion_group!(benches, filters);
criterion_main!(benches);
