//! Two server nodes on one PostgreSQL schema, each with its own engine (a `FakePusher` that
//! records the certificates it holds) and its push certificate sync running as `serve` runs
//! it: a tenant registered, renewed or removed on node A is in node B's engine within a
//! second, and what A wrote beside it (name, memo, history) is what B lists. A node whose
//! listening session the database terminated still converges (it listens again and
//! re-reads). Skipped without `MAGICPUSH_TEST_DATABASE_URL`, failing under `CI=true`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use magicpush_engine::cert::CertificateInfo;
use magicpush_fixtures::TestPki;
use magicpush_postgres::{PostgresStore, SecretKey};
use magicpush_server::push::PushSender;
use magicpush_server::service::{PushCertState, Service, ServiceConfig, TenantUpdate};
use magicpush_store::Store;
use magicpush_testkit::database::test_database_url as test_url;
use magicpush_testkit::FakePusher;

/// The issue's bound: a change reaches every node's engine within a second.
const WITHIN: Duration = Duration::from_secs(1);

/// The fallback re-read, long enough that the tests see the feed at work, not it.
const FALLBACK: Duration = Duration::from_secs(30);

/// A fresh schema on the test server, dropped at the end.
struct Schema {
    admin: tokio_postgres::Client,
    name: String,
    url: String,
}

impl Schema {
    async fn new(url: &str) -> Schema {
        let (admin, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect to the test server");
        tokio::spawn(conn);
        let name = format!("t_{:016x}", rand_u64());
        admin
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap();
        let sep = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{sep}options=-csearch_path%3D{name}");
        Schema { admin, name, url }
    }

    async fn drop_it(self) {
        let _ = self
            .admin
            .batch_execute(&format!("DROP SCHEMA {} CASCADE", self.name))
            .await;
    }
}

fn rand_u64() -> u64 {
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

/// One server node: its store, service, engine and sync task.
struct Node {
    service: Arc<Service>,
    pusher: Arc<FakePusher>,
    sync: tokio::task::JoinHandle<()>,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.sync.abort();
    }
}

async fn node(url: &str) -> Node {
    node_with(url, FALLBACK).await
}

/// A node re-reading the store every `fallback` besides the feed's changes.
async fn node_with(url: &str, fallback: Duration) -> Node {
    let key = Arc::new(SecretKey::from_bytes(&[5; 32]).unwrap());
    let store: Arc<dyn Store> = Arc::new(PostgresStore::open(url, key).await.expect("open"));
    let pusher = FakePusher::new();
    let service = Arc::new(Service::new(
        store,
        pusher.clone() as Arc<dyn PushSender>,
        PushCertState::new(None),
        ServiceConfig::default(),
    ));
    service.load_pushcert_state().await.expect("load");
    let sync = service
        .spawn_pushcert_sync(fallback)
        .expect("PostgreSQL has a change feed");
    Node {
        service,
        pusher,
        sync,
    }
}

/// How long `done` took to hold (polled every few milliseconds); panics after `within`.
async fn converges<F, Fut>(what: &str, within: Duration, mut done: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if done().await {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: not seen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn bundle(c: &magicpush_fixtures::CertKey) -> Vec<u8> {
    format!("{}{}", c.cert_pem, c.key_pem).into_bytes()
}

fn serial(c: &magicpush_fixtures::CertKey) -> String {
    CertificateInfo::from_pem(c.cert_pem.as_bytes())
        .unwrap()
        .serial()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registered_renewed_and_removed_on_one_node_reach_the_other_within_a_second() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let pki = TestPki::generate().unwrap();
    let (a, b) = (node(&schema.url).await, node(&schema.url).await);
    let topic = pki.topic.clone();
    let mut delays = Vec::new();

    // Registered on A.
    a.service.add_tenant(&bundle(&pki.push)).await.unwrap();
    let want = serial(&pki.push);
    delays.push(
        converges("the new tenant in B's engine", WITHIN, || async {
            b.pusher.certificates().get(&topic) == Some(&want)
        })
        .await,
    );
    assert_eq!(b.service.pushcert(Some(&topic)).unwrap().serial, want);

    // Named and memo'd on A.
    let update = TenantUpdate {
        name: Some("Customer A".into()),
        apple_id: Some("mdm@customer-a.example".into()),
    };
    a.service.set_tenant(&topic, update).await.unwrap();
    delays.push(
        converges("the name and memo on B", WITHIN, || async {
            let view = b.service.pushcert(Some(&topic)).unwrap();
            view.name.as_deref() == Some("Customer A")
                && view.apple_id.as_deref() == Some("mdm@customer-a.example")
        })
        .await,
    );

    // Renewed on A.
    a.service
        .replace_pushcert(Some(&topic), &bundle(&pki.push_renewal))
        .await
        .unwrap();
    let renewed = serial(&pki.push_renewal);
    delays.push(
        converges("the renewal in B's engine", WITHIN, || async {
            b.pusher.certificates().get(&topic) == Some(&renewed)
        })
        .await,
    );
    // B's history is A's: both certificates, the first replaced, with the memo.
    converges("A's history on B", WITHIN, || async {
        b.service.pushcert_history(None) == a.service.pushcert_history(None)
    })
    .await;
    let history = b.service.pushcert_history(Some(&topic));
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(history[0].replaced_at.is_some() && history[1].replaced_at.is_none());
    assert_eq!(
        history[1].apple_id.as_deref(),
        Some("mdm@customer-a.example")
    );

    // A second tenant added on B reaches A, and A's next history write keeps B's entry.
    b.service
        .add_tenant(&bundle(&pki.other_topic))
        .await
        .unwrap();
    let other = pki.other_topic_name.clone();
    delays.push(
        converges("B's tenant in A's engine", WITHIN, || async {
            a.pusher.certificates().contains_key(&other)
        })
        .await,
    );

    // Removed on A.
    a.service.delete_pushcert(Some(&topic)).await.unwrap();
    delays.push(
        converges("the removal in B's engine", WITHIN, || async {
            !b.pusher.certificates().contains_key(&topic)
        })
        .await,
    );
    assert!(b.service.pushcert(Some(&topic)).is_err());
    converges("the history on both", WITHIN, || async {
        b.service.pushcert_history(None) == a.service.pushcert_history(None)
    })
    .await;
    let history = a.service.pushcert_history(None);
    assert_eq!(history.len(), 3, "both tenants' entries kept: {history:?}");
    assert!(history
        .iter()
        .all(|e| e.topic != topic || e.replaced_at.is_some()));
    assert_eq!(
        b.pusher.certificates().keys().collect::<Vec<_>>(),
        vec![&other],
        "B's engine holds the remaining tenant only"
    );
    println!("propagation delays between nodes: {delays:?}");
    drop((a, b));
    schema.drop_it().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_listening_session_was_terminated_still_converges() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let pki = TestPki::generate().unwrap();
    let name = format!("nodeb_{:08x}", rand_u64() as u32);
    let a = node(&schema.url).await;
    let b = node(&format!("{}&application_name={name}", schema.url)).await;
    let listener = format!("{name}/pushcert-listener");
    let terminate = || async {
        schema
            .admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&listener],
            )
            .await
            .unwrap()
            .len()
    };
    converges("B listening", Duration::from_secs(10), || async {
        terminate().await == 1
    })
    .await;
    // Changed while B is not listening: the notification is lost, B re-reads once it
    // listens again (well before the fallback's tick).
    a.service.add_tenant(&bundle(&pki.push)).await.unwrap();
    let topic = pki.topic.clone();
    let took = converges(
        "the tenant on B after its session was cut",
        Duration::from_secs(5),
        || async { b.pusher.certificates().contains_key(&topic) },
    )
    .await;
    println!("converged {took:?} after the listening session was terminated");
    // And B hears the next change as usual.
    converges("B listening again", Duration::from_secs(10), || async {
        schema
            .admin
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = $1",
                &[&listener],
            )
            .await
            .unwrap()
            .len()
            == 1
    })
    .await;
    a.service.delete_pushcert(Some(&topic)).await.unwrap();
    converges("the removal on B", WITHIN, || async {
        !b.pusher.certificates().contains_key(&topic)
    })
    .await;
    drop((a, b));
    schema.drop_it().await;
}

/// An admin's requests spread over nodes by a load balancer: the request issued on A, Apple's
/// certificate for it uploaded on B at once (before any notification could arrive). B
/// catches up with the store before deciding, so it finds A's pending key; A then sees the
/// tenant and the request retired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_issued_on_one_node_is_answered_on_the_other() {
    use magicpush_server::pushcert::request::{self, Subject};
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let pki = TestPki::generate().unwrap();
    let (a, b) = (node(&schema.url).await, node(&schema.url).await);
    let subject = Subject {
        email: Some("it@example.co.jp".into()),
        common_name: Some("Example KK".into()),
        country: Some("JP".into()),
    };
    let issued = a.service.issue_pushcert_request(subject).await.unwrap();
    let csr = request::read_csr(issued.request.as_bytes()).unwrap();
    let now = time::OffsetDateTime::now_utc();
    let apple = magicpush_fixtures::push_cert_for_csr(
        &pki.ca,
        &csr,
        "node-b-answer",
        now - time::Duration::days(1),
        now + time::Duration::days(365),
    )
    .unwrap();
    let view = b.service.add_tenant(apple.as_bytes()).await.unwrap();
    assert!(
        b.service.pushcert_requests().is_empty(),
        "the request is retired"
    );
    converges("B's tenant in A's engine", WITHIN, || async {
        a.pusher.certificates().get(&view.topic) == Some(&view.serial)
    })
    .await;
    converges("the retired request on A", WITHIN, || async {
        a.service.pushcert_requests().is_empty()
    })
    .await;
    drop((a, b));
    schema.drop_it().await;
}

/// A change no notification announced (written by hand in SQL, or sent while a node's
/// listener was away and missed) is picked up by the periodic re-read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_periodic_re_read_finds_what_no_notification_announced() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let pki = TestPki::generate().unwrap();
    let a = node(&schema.url).await;
    let b = node_with(&schema.url, Duration::from_millis(300)).await;
    a.service.add_tenant(&bundle(&pki.push)).await.unwrap();
    let topic = pki.topic.clone();
    converges("the tenant on B", WITHIN, || async {
        b.pusher.certificates().contains_key(&topic)
    })
    .await;
    schema
        .admin
        .execute(
            &format!(
                "INSERT INTO {}.tenant_names (topic, name) VALUES ($1, 'Named in SQL')",
                schema.name
            ),
            &[&topic],
        )
        .await
        .unwrap();
    converges("the name on B", Duration::from_secs(3), || async {
        b.service.pushcert(Some(&topic)).unwrap().name.as_deref() == Some("Named in SQL")
    })
    .await;
    assert_eq!(
        a.service.pushcert(Some(&topic)).unwrap().name,
        None,
        "A re-reads every 30 s: not yet"
    );
    drop((a, b));
    schema.drop_it().await;
}

/// A store no other node writes (memory, SQLite) has no feed: no task to run.
#[tokio::test]
async fn a_single_node_store_needs_no_sync() {
    let service = Arc::new(Service::new(
        Arc::new(magicpush_store::MemoryStore::new()),
        FakePusher::new() as Arc<dyn PushSender>,
        PushCertState::new(None),
        ServiceConfig::default(),
    ));
    assert!(service.spawn_pushcert_sync(FALLBACK).is_none());
}

/// The run-time settings ride on the same feed: a `PUT /v1/settings` on A is in force on B
/// within a second (long before B's heartbeat, which is not even running here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_settings_change_on_one_node_is_in_force_on_the_other_within_a_second() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let (a, b) = (node(&schema.url).await, node(&schema.url).await);
    assert_eq!(b.service.unreachable_after(), Duration::from_secs(300));
    let change = serde_json::json!({"unreachable_after": "7m", "collect_every": "1h"});
    a.service.put_settings(&change).await.unwrap();
    converges("A's settings on B", WITHIN, || async {
        let view = b.service.settings_view();
        view.unreachable_after_s == 420 && view.collecting
    })
    .await;
    assert_eq!(
        b.service.settings_view().collect_every.as_deref(),
        Some("1h")
    );
    a.service.stop_collector();
    b.service.stop_collector();
    drop((a, b));
    schema.drop_it().await;
}
