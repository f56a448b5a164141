//! Micro-benchmarks of the engine's per-push work that does not touch a socket: encoding a
//! request, classifying an answer, and the pool's bookkeeping.
//!
//! `cargo bench -p magicpush-benches` (full run) or
//! `cargo bench -p magicpush-benches -- --quick` (smoke).

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{criterion_group, criterion_main, Criterion};
use magicpush_engine::apns::request::{payload, Expiration, Priority, RequestTemplate};
use magicpush_engine::apns::response::classify;
use magicpush_engine::pool::backoff::Backoff;
use magicpush_engine::pool::pick::{pick, SlotLoad};
use magicpush_engine::pool::plan::{Plan, RetryPolicy};
use magicpush_engine::DeviceToken;
use tokio::time::Instant;

fn request_encoding(c: &mut Criterion) {
    let template = RequestTemplate::new(
        "api.push.apple.com:443".parse().unwrap(),
        "com.apple.mgmt.External.2c8a6f6e-1b8e-4f5e-9d0a-7f3a1e2b4c5d",
        Priority::default(),
        Expiration::default(),
    )
    .unwrap();
    let token = DeviceToken::from_bytes(&[0xab; 32]).unwrap();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("request");
    g.bench_function("head", |b| {
        b.iter(|| black_box(template.request(black_box(&token), now)))
    });
    g.bench_function("head_cached_headers", |b| {
        let mut cache = template.header_cache();
        b.iter(|| black_box(template.request_with(black_box(&token), cache.headers(now))))
    });
    g.bench_function("payload", |b| {
        b.iter(|| black_box(payload(black_box("5D2F1C0A-8E1B-4C7A-9F3E-2B6D8A0C4E1F"))))
    });
    g.bench_function("token_from_bytes", |b| {
        b.iter(|| black_box(DeviceToken::from_bytes(black_box(&[0xab; 32])).unwrap()))
    });
    g.bench_function("token_from_hex", |b| {
        let hex = "ab".repeat(32);
        b.iter(|| black_box(DeviceToken::from_hex(black_box(&hex)).unwrap()))
    });
    g.finish();
}

fn response_decoding(c: &mut Criterion) {
    let mut g = c.benchmark_group("response");
    g.bench_function("200", |b| {
        b.iter(|| {
            black_box(classify(
                200,
                Some("8C5D7C1E-7E4F-4B0A-9C3D-2A1B0E9F8D7C"),
                b"",
            ))
        })
    });
    g.bench_function("410_with_timestamp", |b| {
        let body = br#"{"reason":"Unregistered","timestamp":1700000000000}"#;
        b.iter(|| black_box(classify(410, None, black_box(body))))
    });
    g.bench_function("400_unknown_reason", |b| {
        let body = br#"{"reason":"SomethingApple Added Later"}"#;
        b.iter(|| black_box(classify(400, None, black_box(body))))
    });
    g.finish();
}

fn pool_bookkeeping(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool");
    let loads: Vec<SlotLoad> = (0..4)
        .map(|i| SlotLoad {
            open: true,
            in_flight: 100 + i * 37,
            max_streams: 500,
        })
        .collect();
    g.bench_function("pick_of_4", |b| {
        b.iter(|| black_box(pick(black_box(&loads), Some(1))))
    });
    let loads16: Vec<SlotLoad> = (0..16)
        .map(|i| SlotLoad {
            open: i % 5 != 0,
            in_flight: 10 * i,
            max_streams: 1000,
        })
        .collect();
    g.bench_function("pick_of_16", |b| {
        b.iter(|| black_box(pick(black_box(&loads16), None)))
    });
    let policy = RetryPolicy::default();
    let now = Instant::now();
    let deadline = now + Duration::from_secs(30);
    g.bench_function("retry_decision", |b| {
        b.iter(|| black_box(policy.decide(black_box(3), false, now, deadline, 0.5)))
    });
    g.bench_function("plan_close_and_reconnect", |b| {
        let mut plan = Plan::new(4, Backoff::RECONNECT, Backoff::CERTIFICATE_REJECTED);
        let mut t = Instant::now();
        plan.take_due(t);
        b.iter(|| {
            t += Duration::from_millis(1);
            plan.on_connected(2, t);
            plan.on_closed(
                2,
                t,
                magicpush_engine::pool::plan::CloseCause::GoAway,
                true,
                0.5,
            );
            black_box(plan.take_due(t))
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    request_encoding,
    response_decoding,
    pool_bookkeeping
);
criterion_main!(benches);
