//! One page of the device list (`GET /v1/devices?limit=50&cursor=…`, the console's device
//! table) from a SQLite store of 1,000 devices and of 100,000, handled whole by the server in
//! process (routing, the admin key, the store read, the states, JSON): the page's time must
//! not grow with the fleet (issue 24: at most 2× from 1,000 to 100,000 devices). The pages
//! asked for start in the middle of the fleet, so the store seeks its UDID index rather than
//! reading from the start.
//!
//! `cargo bench -p magicpush-benches --bench pages`

use std::hint::black_box;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt as _, Full};
use magicpush_server::http::{AdminKey, App, DeviceAuth, DEFAULT_BODY_LIMIT};
use magicpush_server::service::{PushCertState, Service, ServiceConfig};
use magicpush_sqlite::SqliteStore;
use magicpush_store::Store;
use magicpush_testkit::conformance::{authenticate, t, token_update};

const KEY: &str = "bench-admin-key";
const PAGE: usize = 50;

/// A SQLite store in `dir` holding `n` enrolled devices (`D000000`…), written concurrently
/// so that they share commits.
async fn fleet(dir: &std::path::Path, n: usize) -> Arc<dyn Store> {
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir).expect("open SQLite"));
    let udids: Vec<String> = (0..n).map(|i| format!("D{i:06}")).collect();
    for chunk in udids.chunks(2_000) {
        let mut writes = tokio::task::JoinSet::new();
        for udid in chunk {
            let (store, udid) = (Arc::clone(&store), udid.clone());
            writes.spawn(async move {
                store
                    .authenticate(&authenticate(&udid), None, t(0))
                    .await
                    .expect("authenticate");
                store
                    .token_update(&token_update(&udid, 1), t(1))
                    .await
                    .expect("token update");
            });
        }
        while let Some(done) = writes.join_next().await {
            done.expect("a write task");
        }
    }
    store
}

fn app(store: Arc<dyn Store>) -> App {
    let service = Arc::new(Service::new(
        store,
        magicpush_testkit::FakePusher::new(),
        PushCertState::new(None),
        ServiceConfig::default(),
    ));
    App::new(
        service,
        AdminKey::new(Some(KEY)),
        DEFAULT_BODY_LIMIT,
        DeviceAuth::Off,
    )
}

/// The page of [`PAGE`] devices after the fleet's middle device.
fn page_request(n: usize) -> http::Request<Full<Bytes>> {
    let cursor =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:D{:06}", n / 2));
    http::Request::get(format!("/v1/devices?limit={PAGE}&cursor={cursor}"))
        .header("authorization", format!("Bearer {KEY}"))
        .body(Full::new(Bytes::new()))
        .expect("a valid request")
}

fn pages(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let mut g = c.benchmark_group("devices_page");
    for n in [1_000, 100_000] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let app = rt.block_on(async { app(fleet(dir.path(), n).await) });
        // The page is what the console gets: 50 devices and a cursor.
        let body = rt.block_on(async {
            let resp = app.handle(page_request(n)).await;
            assert!(resp.status().is_success(), "{n}: {}", resp.status());
            resp.into_body().collect().await.expect("body").to_bytes()
        });
        let page: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(page["devices"].as_array().map(Vec::len), Some(PAGE));
        assert!(page["next_cursor"].is_string());
        g.bench_function(format!("{n}_devices"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let resp = app.handle(page_request(black_box(n))).await;
                    black_box(resp.into_body().collect().await.expect("body"))
                })
            })
        });
    }
    g.finish();
}

criterion_group!(benches, pages);
criterion_main!(benches);
