//! A check-in handled whole by the server, in process: routing, decode, service, the
//! in-memory store, metrics and the answer — everything a check-in costs but the sockets and
//! hyper. Beside it, the decode alone on the same body, so the rest can be told apart.
//!
//! `cargo bench -p magicpush-benches --bench handle`

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::Full;
use magicpush_mdm as mdm;
use magicpush_server::http::{App, DeviceAuth};
use magicpush_store::MemoryStore;

/// Each fixture and the path a device sends it to.
const BODIES: [(&str, &str); 3] = [
    ("authenticate", "/mdm/checkin"),
    ("token-update", "/mdm/checkin"),
    ("report-idle", "/mdm/server"),
];

fn app() -> App {
    App::with_pusher(
        Arc::new(MemoryStore::new()),
        magicpush_testkit::FakePusher::new(),
        DeviceAuth::Off,
    )
}

fn request(path: &str, body: &Bytes) -> http::Request<Full<Bytes>> {
    http::Request::put(path)
        .header("content-type", "application/x-apple-aspen-mdm-checkin")
        .header("content-length", body.len())
        .body(Full::new(body.clone()))
        .expect("a valid request")
}

fn handle(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let app = app();
    // The device the Idle report names must be enrolled for the report to be a 200.
    for (name, path) in &BODIES[..2] {
        let body = Bytes::from(magicpush_fixtures::read(&format!("plists/{name}.plist")));
        let resp = rt.block_on(app.handle(request(path, &body)));
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
    }
    for (name, path) in BODIES {
        let body = Bytes::from(magicpush_fixtures::read(&format!("plists/{name}.plist")));
        let resp = rt.block_on(app.handle(request(path, &body)));
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
        let mut g = c.benchmark_group(format!("handle/{name}"));
        g.bench_function("app", |b| {
            b.iter(|| black_box(rt.block_on(app.handle(request(path, black_box(&body))))))
        });
        g.bench_function("decode_alone", |b| {
            b.iter(|| black_box(mdm::decode(black_box(&body)).unwrap()))
        });
        g.finish();
    }
}

criterion_group!(benches, handle);
criterion_main!(benches);
