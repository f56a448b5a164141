//! Micro-benchmarks of reading a device's request body, side by side on the same fixtures
//! (`fixtures/plists/`): `mdm::decode` as the server runs it (the one-pass scanner for plain
//! bodies) against the path every body took before the scanner (the structural check, then
//! the plist parser's document). The ratio of the two is what the scanner saves per request.
//!
//! `cargo bench -p magicpush-benches --bench decode`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use magicpush_mdm as mdm;

const BODIES: [&str; 4] = [
    "authenticate",
    "token-update",
    "report-idle",
    "report-acknowledged-device-information",
];

fn decode(c: &mut Criterion) {
    for name in BODIES {
        let body = magicpush_fixtures::read(&format!("plists/{name}.plist"));
        assert!(
            mdm::scan_xml(&body).is_some(),
            "{name}: the scanner reads the fixture"
        );
        let mut g = c.benchmark_group(format!("decode/{name}"));
        g.bench_function("server", |b| {
            b.iter(|| black_box(mdm::decode(black_box(&body)).unwrap()))
        });
        g.bench_function("scanner_alone", |b| {
            b.iter(|| black_box(mdm::scan_xml(black_box(&body)).unwrap()))
        });
        g.bench_function("limits_then_plist_parser", |b| {
            b.iter(|| {
                mdm::check_limits(black_box(&body)).unwrap();
                black_box(plist::Value::from_reader_xml(black_box(body.as_slice())).unwrap())
            })
        });
        g.finish();
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
