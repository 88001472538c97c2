//! The cost the limits add to one request: the request-rate check, the
//! in-flight admission (taken and released), the byte-rate checks (before
//! and after the body is read) and the event-rate check of a batch of 50.
//! (Rates high enough never to refuse: the limiters do their arithmetic,
//! as a limited tenant's do.) The checks are async (a region-wide rate may
//! wait for Redis); a node's own never does, so each is polled once.

use criterion::{criterion_group, criterion_main, Criterion};
use futures::FutureExt;
use weir::config::Limits;
use weir::edge::limit::{Admission, Quotas};

fn limits(c: &mut Criterion) {
    let quotas = Quotas::new(&Limits {
        requests_per_second: 1e9,
        requests_burst: u32::MAX,
        events_per_second: 1e9,
        events_burst: u32::MAX,
        bytes_per_second: 1e9,
        bytes_burst: u32::MAX,
        ..Limits::default()
    });
    let admission = Admission::new(1024);

    c.bench_function("limits/per_request", |b| {
        b.iter(|| {
            let ok = matches!(quotas.check_request().now_or_never(), Some(Ok(())));
            let admitted = admission.admit(&quotas);
            let before_body = matches!(quotas.check_bytes(1).now_or_never(), Some(Ok(())));
            let body = matches!(quotas.check_bytes(20_000).now_or_never(), Some(Ok(())));
            let events = matches!(quotas.check_events(50).now_or_never(), Some(Ok(())));
            drop(admitted);
            ok && before_body && body && events
        })
    });
    c.bench_function("limits/request_rate_only", |b| {
        b.iter(|| matches!(quotas.check_request().now_or_never(), Some(Ok(()))))
    });
    c.bench_function("limits/admission_only", |b| {
        b.iter(|| admission.admit(&quotas).is_ok())
    });
}

criterion_group!(benches, limits);
criterion_main!(benches);
