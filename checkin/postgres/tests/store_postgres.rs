//! The store conformance suite against [`PostgresStore`], plus migrations and sealed secrets.
//!
//! The server is the one `MAGICPUSH_TEST_DATABASE_URL` names (`.ci/postgres.sh start DIR
//! PORT` starts a throwaway one and prints its URL). Each test works in a fresh schema of its
//! own, so the tests run in parallel and never see each other's rows. Without the variable
//! each test prints a line and passes; under `CI=true` it fails.

use std::sync::Arc;

use magicpush_mdm::Secret;
use magicpush_postgres::{migrate, PostgresOptions, PostgresStore, SecretKey, SCHEMA_VERSION};
use magicpush_store::prelude::*;
use magicpush_store::{BoundIdentity, StoreError, StoredPushCert};
use magicpush_testkit::conformance::{authenticate, t, token_update};

mod common;
use common::{admin, key, test_url, Schema};

async fn open_pg() -> Option<(Arc<dyn Store>, Schema)> {
    let url = test_url()?;
    let schema = Schema::new(&url).await;
    let store = PostgresStore::open(&schema.url(), key())
        .await
        .expect("open the PostgreSQL store");
    Some((Arc::new(store) as Arc<dyn Store>, schema))
}

magicpush_testkit::store_conformance!(match open_pg().await {
    Some(opened) => opened,
    None => return,
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_starting_together_migrate_once() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let url = schema.url();
    let (a, b) = tokio::join!(migrate(&url), migrate(&url));
    let (a, b) = (a.expect("migrate a"), b.expect("migrate b"));
    assert_eq!(a + b, SCHEMA_VERSION, "applied {a} and {b}");
    // Two stores opening the same (now current) schema together apply nothing more.
    let (s1, s2) = tokio::join!(
        PostgresStore::open(&url, key()),
        PostgresStore::open(&url, key())
    );
    let (s1, s2) = (s1.expect("open 1"), s2.expect("open 2"));
    let client = admin(&schema.url()).await;
    let rows = client
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap();
    let versions: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    let want: Vec<i32> = (1..=SCHEMA_VERSION as i32).collect();
    assert_eq!(versions, want);
    assert_eq!(migrate(&schema.url()).await.unwrap(), 0);
    // Both nodes write to, and read from, one database.
    s1.authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    assert!(s2.device("A").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_a_fresh_schema_together_migrate_once() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let opened = futures_join_all(
        (0..4)
            .map(|_| {
                let url = schema.url();
                async move { PostgresStore::open(&url, key()).await }
            })
            .collect(),
    )
    .await;
    for store in &opened {
        assert!(store.is_ok(), "{store:?}");
    }
    let client = admin(&schema.url()).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, i64::from(SCHEMA_VERSION));
}

/// Runs the futures together (the test crate has no futures dependency).
async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futures: Vec<F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_schema_is_refused() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    migrate(&schema.url()).await.unwrap();
    admin(&schema.url())
        .await
        .batch_execute("INSERT INTO schema_migrations (version) VALUES (999)")
        .await
        .unwrap();
    let err = PostgresStore::open(&schema.url(), key()).await.unwrap_err();
    assert!(
        matches!(err, StoreError::SchemaTooNew { found: 999, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("upgrade magicpush"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_secrets_key_is_refused() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    drop(PostgresStore::open(&schema.url(), key()).await.unwrap());
    let other = Arc::new(SecretKey::from_bytes(&[7; 32]).unwrap());
    let err = PostgresStore::open(&schema.url(), other).await.unwrap_err();
    assert!(matches!(err, StoreError::SecretsKey(_)), "{err:?}");
    assert!(err.to_string().contains("--secrets-key-file"), "{err}");
}

/// Escrowed tokens and private keys are sealed in the database: the raw columns hold
/// neither the plaintext nor anything that opens without the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_secrets_are_not_stored_in_clear() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let store = PostgresStore::open(&schema.url(), key()).await.unwrap();
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    store
        .token_update(&token_update("A", 1), t(1))
        .await
        .unwrap();
    store
        .set_bootstrap_token("A", Some(&Secret::new(b"bootstrap-secret".to_vec())), t(2))
        .await
        .unwrap();
    let cert = StoredPushCert {
        topic: "com.apple.mgmt.External.test".into(),
        chain_pem: "-----BEGIN CERTIFICATE-----".into(),
        key_pem: Secret::new(b"-----BEGIN PRIVATE KEY----- private".to_vec()),
        registered_at: t(3),
    };
    store.put_push_cert(&cert).await.unwrap();
    let request = magicpush_store::StoredRequest {
        id: "r1".into(),
        created_at: t(4),
        facts: "{}".into(),
        key_pkcs8: Secret::new(b"pkcs8-private-key".to_vec()),
    };
    assert!(store.add_pushcert_request(&request).await.unwrap());

    let client = admin(&schema.url()).await;
    let row = client
        .query_one(
            "SELECT unlock_token, bootstrap_token FROM devices WHERE udid = 'A'",
            &[],
        )
        .await
        .unwrap();
    let (unlock, bootstrap): (Vec<u8>, Vec<u8>) = (row.get(0), row.get(1));
    let cert_key: Vec<u8> = client
        .query_one("SELECT key FROM pushcert_certificates", &[])
        .await
        .unwrap()
        .get(0);
    let request_key: Vec<u8> = client
        .query_one("SELECT key FROM pushcert_requests", &[])
        .await
        .unwrap()
        .get(0);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for (stored, plain) in [
        (&unlock, &b"unlock-secret-bytes"[..]),
        (&bootstrap, &b"bootstrap-secret"[..]),
        (&cert_key, &b"PRIVATE KEY"[..]),
        (&request_key, &b"pkcs8-private-key"[..]),
    ] {
        assert!(stored.starts_with(b"mpk1"), "sealed: {stored:?}");
        assert!(!contains(stored, plain), "in clear: {stored:?}");
    }
    // And the store reads them back whole.
    let d = store.device("A").await.unwrap().unwrap();
    assert_eq!(
        d.unlock_token.as_ref().map(|s| s.expose().to_vec()),
        Some(b"unlock-secret-bytes".to_vec())
    );
    assert_eq!(
        store
            .bootstrap_token("A")
            .await
            .unwrap()
            .map(|s| s.expose().to_vec()),
        Some(b"bootstrap-secret".to_vec())
    );
    assert_eq!(store.push_certs().await.unwrap(), vec![cert]);
    assert_eq!(store.pushcert_requests().await.unwrap(), vec![request]);
}

/// Concurrent writes share transactions, a write fails alone, and a full queue sheds a
/// device's write without writing anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits_and_fail_alone() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let store = Arc::new(PostgresStore::open(&schema.url(), key()).await.unwrap());
    let before = store.commit_stats();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let udid = format!("D{i:03}");
            if i % 10 == 0 {
                // Unknown device: fails, inside a batch with writes that succeed.
                return store.touch(&format!("missing-{i}"), t(1)).await.err();
            }
            store
                .authenticate(&authenticate(&udid), None, t(0))
                .await
                .expect("authenticate");
            None
        });
    }
    let mut failed = 0;
    while let Some(joined) = tasks.join_next().await {
        if let Some(e) = joined.expect("task") {
            assert!(matches!(e, StoreError::UnknownDevice { .. }), "{e:?}");
            failed += 1;
        }
    }
    assert_eq!(failed, 30);
    assert_eq!(store.count().await.unwrap(), 270);
    let stats = store.commit_stats();
    let (commits, writes) = (stats.commits - before.commits, stats.writes - before.writes);
    assert_eq!(writes, 300);
    assert!(commits < writes, "{commits} commits for {writes} writes");
}

/// A store with one writer, and a device row locked from outside: the writer's next batch
/// (a write of that device) waits on the lock, and every write made meanwhile queues behind
/// it, to form the writer's following batch once [`Held::release`] lets it go.
struct Held {
    admin: tokio_postgres::Client,
    held: tokio::task::JoinHandle<Result<(), StoreError>>,
}

const HELD: &str = "HELD";

impl Held {
    async fn hold(store: &Arc<PostgresStore>, schema: &Schema) -> Held {
        store
            .authenticate(&authenticate(HELD), None, t(0))
            .await
            .expect("authenticate the held device");
        let admin = admin(&schema.url()).await;
        admin.batch_execute("BEGIN").await.expect("begin");
        admin
            .execute("SELECT 1 FROM devices WHERE udid = $1 FOR UPDATE", &[&HELD])
            .await
            .expect("lock the held device");
        let xid: String = admin
            .query_one("SELECT pg_current_xact_id()::text", &[])
            .await
            .expect("the holder's transaction id")
            .get(0);
        let store2 = Arc::clone(store);
        let held = tokio::spawn(async move { store2.touch(HELD, t(1)).await });
        // Until the writer waits on the holder's lock.
        let watcher = common::admin(&schema.url()).await;
        let waiting = "SELECT count(*) FROM pg_locks
                       WHERE NOT granted AND locktype = 'transactionid' AND transactionid::text = $1";
        let mut waited = 0;
        loop {
            let n: i64 = watcher.query_one(waiting, &[&xid]).await.unwrap().get(0);
            if n > 0 {
                break;
            }
            waited += 1;
            assert!(waited < 1_000, "the writer never waited on the held row");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Held { admin, held }
    }

    async fn release(self) {
        self.admin.batch_execute("COMMIT").await.expect("release");
        self.held.await.expect("task").expect("the held write");
    }
}

/// A batch of writes each for another device runs pipelined; one failing write in it rolls
/// the attempt back and the batch runs again one write at a time, so it still fails alone;
/// two devices claiming one identity certificate in one batch: one gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelined_batch_commits_whole_or_runs_again_write_by_write() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let options = PostgresOptions {
        writers: 1,
        ..PostgresOptions::default()
    };
    let store = Arc::new(
        PostgresStore::open_with(&schema.url(), key(), options)
            .await
            .unwrap(),
    );
    let dyn_store: &dyn Store = store.as_ref();

    // Every write succeeds: committed in one pipelined batch.
    let held = Held::hold(&store, &schema).await;
    let before = store.commit_stats();
    let messages: Vec<_> = (0..40).map(|i| authenticate(&format!("P{i:02}"))).collect();
    let updates: Vec<_> = (0..40u8)
        .map(|i| token_update(&format!("P{i:02}"), i))
        .collect();
    let written: Vec<_> = messages
        .iter()
        .map(|m| dyn_store.authenticate(m, None, t(2)))
        .collect();
    held.release().await;
    for w in futures_util::future::join_all(written).await {
        w.expect("authenticate");
    }
    let stats = store.commit_stats();
    assert_eq!(stats.pipelined - before.pipelined, 1, "{stats:?}");
    assert_eq!(stats.pipeline_retries, before.pipeline_retries, "{stats:?}");
    assert_eq!(
        stats.commits - before.commits,
        2,
        "the held write, then the 40"
    );
    // A read then a write each (TokenUpdate), pipelined across devices.
    let held = Held::hold(&store, &schema).await;
    let written: Vec<_> = updates
        .iter()
        .map(|m| dyn_store.token_update(m, t(3)))
        .collect();
    held.release().await;
    for w in futures_util::future::join_all(written).await {
        w.expect("token update");
    }
    for i in 0..40 {
        let d = store
            .device(&format!("P{i:02}"))
            .await
            .unwrap()
            .expect("stored");
        assert!(
            d.enrolled_at.is_some() && d.token.is_some(),
            "P{i:02}: {d:?}"
        );
        assert!(!d.awaiting_token_update, "P{i:02}: {d:?}");
    }
    assert_eq!(store.commit_stats().pipelined - before.pipelined, 2);

    // One write fails (an unknown device): it fails alone, the others commit.
    let held = Held::hold(&store, &schema).await;
    let before = store.commit_stats();
    let messages: Vec<_> = (0..20).map(|i| authenticate(&format!("F{i:02}"))).collect();
    let mut written: Vec<_> = messages
        .iter()
        .map(|m| Box::pin(async { dyn_store.authenticate(m, None, t(4)).await.map(drop) }) as _)
        .collect::<Vec<std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>>>();
    written.insert(7, Box::pin(dyn_store.touch("missing", t(4))));
    // Two devices claiming one certificate.
    let claimed = [authenticate("C1"), authenticate("C2")];
    let id = magicpush_testkit::conformance::identity(9, t(4));
    let claims: Vec<_> = claimed
        .iter()
        .map(|m| dyn_store.authenticate(m, Some(&id), t(4)))
        .collect();
    held.release().await;
    let outcomes = futures_util::future::join_all(written).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i, outcome) {
            (7, Err(StoreError::UnknownDevice { .. })) => {}
            (7, other) => panic!("the unknown device's write: {other:?}"),
            (_, other) => other.as_ref().map(drop).expect("authenticate"),
        }
    }
    let claims = futures_util::future::join_all(claims).await;
    let won = claims.iter().filter(|c| c.is_ok()).count();
    assert_eq!(won, 1, "{claims:?}");
    assert!(
        claims
            .iter()
            .any(|c| matches!(c, Err(StoreError::IdentityInUse { .. }))),
        "{claims:?}"
    );
    let stats = store.commit_stats();
    assert_eq!(
        stats.pipeline_retries - before.pipeline_retries,
        1,
        "{stats:?}"
    );
    assert_eq!(stats.writes - before.writes, 24, "{stats:?}");
    for i in 0..20 {
        assert!(store.device(&format!("F{i:02}")).await.unwrap().is_some());
    }
    assert!(store.device("missing").await.unwrap().is_none());
}

/// The statements a check-in runs once per batch or per identity (each batch's device
/// locks, the identity reads) are planned for what they ask: a plan kept from when the
/// devices table was nearly empty would scan the whole table each time once it grew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_used_while_the_table_was_small_do_not_scan_it_once_it_grew() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    // Its sessions are found by name, to know when they ended and their statistics are in.
    let name = format!("scanprobe_{:08x}", fastrand::u32(..));
    let store_url = format!("{}&application_name={name}", schema.url());
    let identity = |i: u32| {
        let mut sha = [0u8; 32];
        sha[..4].copy_from_slice(&i.to_be_bytes());
        BoundIdentity::new(sha, format!("CN={i}"), format!("{i:08X}"), t(86_400), t(0))
    };
    let checkins = |store: Arc<PostgresStore>, range: std::ops::Range<u32>| async move {
        let mut tasks = tokio::task::JoinSet::new();
        for i in range {
            let store = Arc::clone(&store);
            let id = identity(i);
            tasks.spawn(async move {
                let udid = format!("G{i:05}");
                store
                    .authenticate(&authenticate(&udid), Some(&id), t(1))
                    .await
                    .expect("authenticate");
                assert_eq!(store.identity_hash(&udid).await.unwrap(), Some(id.sha256));
            });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("task");
        }
    };
    let store = Arc::new(PostgresStore::open(&store_url, key()).await.unwrap());
    // Each statement used many times on a small table, then the table grows to 3,000.
    for i in 0..20 {
        checkins(Arc::clone(&store), i..i + 1).await;
    }
    checkins(Arc::clone(&store), 20..3_000).await;
    drop(store);
    let watcher = admin(&schema.url()).await;
    let mut waited = 0;
    loop {
        let open: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        waited += 1;
        assert!(waited < 1_000, "the store's sessions never ended");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let read: i64 = watcher
        .query_one(
            "SELECT seq_tup_read FROM pg_stat_user_tables
             WHERE relname = 'devices' AND schemaname = current_schema()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // Plans kept from the small table scan it for every lock and identity read: 3.0–3.2
    // million rows read here (measured). Planned for what they ask, they scan only while the
    // table is a few pages, where a scan is the cheaper plan: 40,000–60,000 rows.
    assert!(read < 300_000, "{read} rows of devices read by scanning");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_sheds_device_writes() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let options = PostgresOptions {
        max_queued_writes: 1,
        max_batch: 1,
        ..PostgresOptions::default()
    };
    let store = Arc::new(
        PostgresStore::open_with(&schema.url(), key(), options)
            .await
            .unwrap(),
    );
    // Many device writes at once through a queue of one: some are shed, none is half-done.
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u32 {
        let store = Arc::clone(&store);
        tasks.spawn(async move {
            let udid = format!("D{i:03}");
            (
                udid.clone(),
                store.authenticate(&authenticate(&udid), None, t(0)).await,
            )
        });
    }
    let mut shed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (udid, result) = joined.expect("task");
        match result {
            Ok(_) => {}
            Err(StoreError::Overloaded { queued: 1 }) => shed.push(udid),
            Err(e) => panic!("{e:?}"),
        }
    }
    for udid in &shed {
        assert!(store.device(udid).await.unwrap().is_none(), "{udid}");
    }
    assert_eq!(store.count().await.unwrap(), 200 - shed.len());
    store.health().await.unwrap();
}

/// The store over TLS as `sslmode` asks: `require` encrypts, `verify-ca` and `verify-full`
/// check the server's certificate against `sslrootcert` (and refuse a server the system's
/// roots do not know). Needs a server with TLS (`.ci/postgres.sh` makes one when `openssl`
/// is there); without, says so and passes, except under CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_as_the_url_asks() {
    let Some(url) = test_url() else { return };
    let client = admin(&url).await;
    let ssl: String = client.query_one("SHOW ssl", &[]).await.unwrap().get(0);
    let ca: String = client
        .query_one("SHOW ssl_ca_file", &[])
        .await
        .unwrap()
        .get(0);
    if ssl != "on" || ca.is_empty() {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "the test server has no TLS (ssl = {ssl}, ssl_ca_file = {ca:?}): .ci/postgres.sh \
             gives it TLS when openssl is installed"
        );
        eprintln!("skipped: the test server has no TLS with a CA file (.ci/postgres.sh makes one)");
        return;
    }
    let schema = Schema::new(&url).await;
    // The URL as given asks for no TLS; each case replaces its sslmode.
    let base = schema
        .url()
        .replace("sslmode=disable&", "")
        .replace("sslmode=disable", "");
    let sep = if base.contains('?') { '&' } else { '?' };
    let with = |app: &str, tls: &str| format!("{base}{sep}application_name={app}&{tls}");
    let root = format!("sslrootcert={ca}");
    for tls in [
        "sslmode=require".to_owned(),
        format!("sslmode=verify-ca&{root}"),
        format!("sslmode=verify-full&{root}"),
    ] {
        // Its own application name: the sessions counted below are this store's.
        let app = format!("tls_{}", fastrand::u32(..));
        let store = PostgresStore::open(&with(&app, &tls), key())
            .await
            .unwrap_or_else(|e| panic!("{tls}: {e}"));
        store
            .authenticate(&authenticate("A"), None, t(0))
            .await
            .unwrap_or_else(|e| panic!("{tls}: {e}"));
        assert!(store.device("A").await.unwrap().is_some(), "{tls}");
        let (tls_sessions, plain): (i64, i64) = {
            let row = client
                .query_one(
                    "SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
                     FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                     WHERE a.application_name = $1",
                    &[&app],
                )
                .await
                .unwrap();
            (row.get(0), row.get(1))
        };
        assert!(tls_sessions > 0, "{tls}: no TLS session");
        assert_eq!(plain, 0, "{tls}: a session in the clear");
        drop(store);
    }
    // The test CA is in no system store: verifying against the system's roots fails.
    let err = PostgresStore::open(&with("tls_refused", "sslmode=verify-full"), key())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::Database { op: "connect", detail } if detail.contains("certificate")),
        "{err:?}"
    );
}

/// The server ends the store's sessions (a restart, a failover, an administrator): the store
/// connects again by itself. A write in flight when its connection dies fails (it was not
/// acknowledged); the writes after it land, and nothing acknowledged is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_reconnects_after_its_sessions_are_killed() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let app = format!("killed_{}", fastrand::u32(..));
    let store = PostgresStore::open(&format!("{}&application_name={app}", schema.url()), key())
        .await
        .unwrap();
    store
        .authenticate(&authenticate("A"), None, t(0))
        .await
        .unwrap();
    assert!(store.device("A").await.unwrap().is_some());
    let client = admin(&url).await;
    let killed: i64 = client
        .query_one(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = $1) k",
            &[&app],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        killed >= 2,
        "the writer's and a reader's sessions: {killed}"
    );
    // The driver hears of the end of each session shortly; a write may fail meanwhile.
    let mut landed = false;
    for attempt in 0..20 {
        match store
            .token_update(&token_update("A", 1), t(1 + attempt))
            .await
        {
            Ok(_) => {
                landed = true;
                break;
            }
            // A killed session is the database going away for that connection.
            Err(StoreError::Unavailable { .. }) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(landed, "no write landed after the sessions were killed");
    for i in 0..5 {
        let udid = format!("B{i}");
        store
            .authenticate(&authenticate(&udid), None, t(30))
            .await
            .unwrap();
    }
    assert_eq!(store.count().await.unwrap(), 6);
    let a = store.device("A").await.unwrap().unwrap();
    assert!(a.enrolled_at.is_some(), "the token update is there");
    store.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrollment_state_survives_reopen_and_the_ca_key_is_sealed() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let ca = magicpush_store::StoredDeviceCa {
        cert_pem: "CA PEM".into(),
        key_pem: Secret::new(b"-----BEGIN PRIVATE KEY----- ca".to_vec()),
        created_at: t(0),
    };
    let (_, hash) = magicpush_store::enrollment::new_challenge();
    {
        let store = PostgresStore::open(&schema.url(), key()).await.unwrap();
        store.revoke_serial("0abc", "UDID-1", t(0)).await.unwrap();
        store.create_device_ca(&ca).await.unwrap();
        store
            .add_challenge(&magicpush_store::StoredChallenge {
                hash,
                enrollment_id: "enr".into(),
                invitation_id: None,
                created_at: t(0),
                expires_at: t(60),
            })
            .await
            .unwrap();
    }
    let store = PostgresStore::open(&schema.url(), key()).await.unwrap();
    assert!(store.is_revoked("0abc").await.unwrap());
    assert_eq!(store.device_ca().await.unwrap(), Some(ca));
    assert_eq!(
        store
            .consume_challenge(&hash, t(1))
            .await
            .unwrap()
            .as_deref(),
        Some("enr")
    );
    let client = admin(&schema.url()).await;
    let stored: Vec<u8> = client
        .query_one("SELECT key FROM device_ca", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!stored.windows(11).any(|w| w == b"PRIVATE KEY"));
}
