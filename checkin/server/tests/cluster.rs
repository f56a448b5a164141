//! Several nodes on one PostgreSQL database, as services in one test process.
//!
//! - A node dies in the middle of a refresh (its runtime dropped: no task of it runs again,
//!   nothing is taken back or finished, its heartbeat stops, as after `kill -9`), and another
//!   node takes its refresh back: the devices it had not pushed read `never_pushed` (no state
//!   claims a push that was not sent), the push it had answered keeps its outcome, and the
//!   next refresh, from the live node, pushes them.
//! - Two nodes run the scheduled collection: it runs once a period, on one of them.
//!
//! Needs `MAGICPUSH_TEST_DATABASE_URL` (a fresh schema per test); without it the tests say
//! so and pass, except under `CI=true`.

use std::sync::Arc;
use std::time::Duration;

use magicpush_postgres::{PostgresStore, SecretKey};
use magicpush_server::push::PushSender;
use magicpush_server::service::{
    NodeSettings, PushCertState, RefreshTarget, Service, ServiceConfig,
};
use magicpush_store::cluster::RunState;
use magicpush_store::connectivity::{state, ConnState};
use magicpush_store::{PushOutcome, Store};
use magicpush_testkit::conformance::{authenticate, t, token_update};
use magicpush_testkit::database::test_database_url as test_url;
use magicpush_testkit::{FakeOutcome, FakePusher};

/// A push certificate for the topic the conformance devices enroll with.
fn push_certificate() -> magicpush_engine::cert::CertificateInfo {
    use magicpush_fixtures::{push_cert, Ca, KeyKind};
    let ca = Ca::new("test", KeyKind::EcdsaP256).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let day = time::Duration::days(1);
    let cert = push_cert(&ca, "test", now - day, now + 300 * day, KeyKind::EcdsaP256).unwrap();
    magicpush_engine::cert::CertificateInfo::from_pem(cert.cert_pem.as_bytes()).unwrap()
}

fn node(name: &str, pusher: Arc<FakePusher>, store: Arc<dyn Store>) -> Arc<Service> {
    Arc::new(Service::new(
        store,
        pusher as Arc<dyn PushSender>,
        PushCertState::new(Some(push_certificate())),
        ServiceConfig {
            push_concurrency: 1,
            node: NodeSettings {
                name: name.into(),
                heartbeat_every: Duration::from_millis(100),
                dead_after: Duration::from_millis(800),
            },
            ..ServiceConfig::default()
        },
    ))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// The test's schema on the shared server; its URL.
async fn schema(url: &str) -> (String, String) {
    let name = format!("t_{:016x}", fastrand_u64());
    let (admin, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect to the test server");
    tokio::spawn(conn);
    admin
        .batch_execute(&format!("CREATE SCHEMA {name}"))
        .await
        .unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    (format!("{url}{sep}options=-csearch_path%3D{name}"), name)
}

async fn drop_schema(url: &str, name: &str) {
    if let Ok((admin, conn)) = tokio_postgres::connect(url, tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .await;
    }
}

fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish()
}

fn key() -> Arc<SecretKey> {
    Arc::new(SecretKey::from_bytes(&[7; 32]).unwrap())
}

#[test]
fn a_refresh_cut_by_a_nodes_death_is_taken_back_and_pushed_by_another_node() {
    let Some(url) = test_url() else { return };
    let udids: Vec<String> = (1..=5).map(|i| format!("DEATH-{i}")).collect();
    let token = |i: usize| hex::encode([i as u8; 32]);

    // Node A: device 1's push is answered at once, device 2's never; 3–5 wait their turn
    // (one push at a time).
    let a_rt = runtime();
    let (db, schema_name) = a_rt.block_on(schema(&url));
    let a_pusher = FakePusher::new();
    a_pusher.set_outcome(&token(2), FakeOutcome::Accept(Duration::from_secs(3600)));
    let (a, run_id) = a_rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&db, key()).await.unwrap());
        for (i, udid) in udids.iter().enumerate() {
            store
                .authenticate(&authenticate(udid), None, t(0))
                .await
                .unwrap();
            store
                .token_update(&token_update(udid, i as u8 + 1), t(1))
                .await
                .unwrap();
        }
        let a = node("a", a_pusher.clone(), Arc::clone(&store));
        a.spawn_heartbeat();
        let summary = a.refresh(RefreshTarget::All).await.unwrap();
        assert_eq!(summary.pushing, 5);
        // Device 1 answered and recorded (its outcome, then the run's progress: two writes),
        // device 2 in flight.
        for _ in 0..500 {
            let d1 = store.device(&udids[0]).await.unwrap().unwrap();
            let answered = a.nodes().await.unwrap().refreshes[0].answered;
            if d1.push_outcome.is_some() && answered == 1 && a_pusher.sent().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (a, summary.run_id)
    });
    assert_eq!(
        a_pusher.sent().len(),
        2,
        "device 1 answered, device 2 in flight"
    );
    let a_id = a.node_id().to_owned();
    // kill -9: no task of node A runs again.
    a_rt.shutdown_background();

    let b_rt = runtime();
    b_rt.block_on(async {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&db, key()).await.unwrap());
        let b_pusher = FakePusher::new();
        let b = node("b", b_pusher.clone(), Arc::clone(&store));
        // While A's heartbeat is fresh its run is left alone.
        assert!(b.node_tick().await.unwrap().is_empty());
        let view = b.nodes().await.unwrap();
        let alive: Vec<(&str, bool)> = view
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.alive))
            .collect();
        assert_eq!(alive, vec![("a", true), ("b", true)]);
        assert_eq!(view.refreshes[0].state, RunState::Running);

        tokio::time::sleep(Duration::from_millis(900)).await;
        let swept = b.node_tick().await.unwrap();
        assert_eq!(swept.len(), 1, "{swept:?}");
        assert_eq!(
            (swept[0].id.as_str(), swept[0].node_id.as_str()),
            (run_id.as_str(), a_id.as_str())
        );
        assert_eq!(
            (swept[0].devices, swept[0].answered, swept[0].withdrawn),
            (5, 1, 4)
        );
        let now = time::OffsetDateTime::now_utc();
        for (i, udid) in udids.iter().enumerate() {
            let d = store.device(udid).await.unwrap().unwrap();
            let s = state(&d, now, Duration::from_secs(300));
            let want = if i == 0 {
                ConnState::Pending
            } else {
                ConnState::NeverPushed
            };
            assert_eq!(s, want, "{udid}: {d:?}");
        }
        let view = b.nodes().await.unwrap();
        assert!(!view.nodes.iter().find(|n| n.name == "a").unwrap().alive);
        assert_eq!(view.refreshes[0].state, RunState::Abandoned);
        assert_eq!(view.refreshes[0].withdrawn, 4);

        // The next refresh, from node B, pushes every device; its run finishes.
        let again = b.refresh(RefreshTarget::All).await.unwrap();
        assert_eq!(again.pushing, 5);
        assert!(b.pushes_settled(Duration::from_secs(10)).await);
        assert_eq!(b_pusher.sent().len(), 5);
        for udid in &udids {
            let d = store.device(udid).await.unwrap().unwrap();
            assert_eq!(d.push_outcome, Some(PushOutcome::Accepted), "{udid}");
        }
        let runs = store.refresh_runs(2).await.unwrap();
        assert_eq!(runs[0].id, again.run_id);
        assert_eq!(runs[0].state, RunState::Finished);
        assert_eq!((runs[0].devices, runs[0].answered), (5, 5));
        assert_eq!(runs[1].state, RunState::Abandoned);
        drop_schema(&url, &schema_name).await;
    });
}

/// Two nodes, each with the collector on, every 400 ms: over about 2.2 s the collection
/// runs at most once a period between them (the first period starts at the first claim; a
/// loaded machine may miss a period or two), never twice in a period.
#[test]
fn two_nodes_collect_once_a_period_between_them() {
    let Some(url) = test_url() else { return };
    let rt = runtime();
    rt.block_on(async {
        let (db, schema_name) = schema(&url).await;
        let every = Duration::from_millis(400);
        let mut nodes = Vec::new();
        for name in ["a", "b"] {
            let store: Arc<dyn Store> = Arc::new(PostgresStore::open(&db, key()).await.unwrap());
            if name == "a" {
                store
                    .authenticate(&authenticate("COLLECTED"), None, t(0))
                    .await
                    .unwrap();
                store
                    .token_update(&token_update("COLLECTED", 1), t(1))
                    .await
                    .unwrap();
            }
            nodes.push((node(name, FakePusher::new(), Arc::clone(&store)), store));
        }
        let started = std::time::Instant::now();
        let tasks: Vec<_> = nodes
            .iter()
            .flat_map(|(n, _)| [n.spawn_heartbeat(), n.spawn_collector(every)])
            .collect();
        tokio::time::sleep(Duration::from_millis(2_200)).await;
        for task in &tasks {
            task.abort();
        }
        let elapsed = started.elapsed();
        let runs = nodes[0].1.refresh_runs(100).await.unwrap();
        // The first claim starts the period: at most one run per period after it.
        let most = (elapsed.as_millis() / every.as_millis()) as usize;
        assert!(
            runs.len() <= most && runs.len() + 2 >= most,
            "{} collections in {elapsed:?} every {every:?}: {runs:?}",
            runs.len()
        );
        let mut starts: Vec<_> = runs.iter().map(|r| r.started_at).collect();
        starts.sort();
        // Claims are a period apart; a run starts a little after its claim (a heartbeat
        // and its row first), so the starts are compared with some slack.
        for pair in starts.windows(2) {
            assert!(
                pair[1] - pair[0] >= every * 3 / 4,
                "two collections within a period: {starts:?}"
            );
        }
        drop_schema(&url, &schema_name).await;
    });
}
