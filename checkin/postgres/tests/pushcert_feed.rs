//! The feed of push certificate changes between nodes: two stores on one schema, each
//! listening; a write on one moves the other's counter (and not its own), a write in another
//! schema moves neither, and a listening session terminated by the server is re-established
//! and reported as a change (what was sent meanwhile is lost). Skipped without
//! `MAGICPUSH_TEST_DATABASE_URL`, failing under `CI=true` (see `tests/common`).

use std::time::Duration;

use magicpush_postgres::PostgresStore;
use magicpush_store::{PushCertChanges, PushCertLog, PushCertStore, StoredPushCert};
use magicpush_testkit::conformance::t;

mod common;
use common::{admin, key, test_url, Schema};

/// A change reaches a node within this.
const WITHIN: Duration = Duration::from_secs(1);

/// The URL with an application name of its own (the listener's session is named after it).
fn named(url: &str, name: &str) -> String {
    format!("{url}&application_name={name}")
}

/// Waits for the counter to move; false if it did not within `within`.
async fn moves(changes: &mut PushCertChanges, within: Duration) -> bool {
    matches!(
        tokio::time::timeout(within, changes.changed()).await,
        Ok(Ok(()))
    )
}

/// Whether the counter stays still for a while.
async fn stays(changes: &mut PushCertChanges) -> bool {
    !moves(changes, Duration::from_millis(300)).await
}

/// A store's feed, once it listens (its first session counts as a change).
async fn listening(store: &PostgresStore) -> PushCertChanges {
    let mut changes = store.pushcert_changes().expect("PostgreSQL has a feed");
    assert!(
        moves(&mut changes, Duration::from_secs(10)).await,
        "the listener never started"
    );
    changes
}

fn cert(topic: &str) -> StoredPushCert {
    StoredPushCert {
        topic: topic.into(),
        chain_pem: "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n".into(),
        key_pem: magicpush_mdm::Secret::new(b"key".to_vec()),
        registered_at: t(1),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_on_one_node_reaches_the_other_and_not_itself() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let other_schema = Schema::new(&url).await;
    let a = PostgresStore::open(&schema.url(), key()).await.unwrap();
    let b = PostgresStore::open(&schema.url(), key()).await.unwrap();
    let elsewhere = PostgresStore::open(&other_schema.url(), key())
        .await
        .unwrap();
    let (mut on_a, mut on_b) = (listening(&a).await, listening(&b).await);

    // Every kind of write, each seen by the other node.
    a.put_push_cert(&cert("t.a")).await.unwrap();
    assert!(moves(&mut on_b, WITHIN).await, "certificate put");
    a.set_pushcert_memo("t.a", Some("a@example.jp"))
        .await
        .unwrap();
    assert!(moves(&mut on_b, WITHIN).await, "memo");
    a.set_tenant_name("t.a", Some("A")).await.unwrap();
    assert!(moves(&mut on_b, WITHIN).await, "name");
    a.set_pushcert_log(PushCertLog::History, &["{}".to_owned()])
        .await
        .unwrap();
    assert!(moves(&mut on_b, WITHIN).await, "history");
    let request = magicpush_store::StoredRequest {
        id: "r1".into(),
        created_at: t(1),
        facts: "{}".into(),
        key_pkcs8: magicpush_mdm::Secret::new(vec![1]),
    };
    a.add_pushcert_request(&request).await.unwrap();
    assert!(moves(&mut on_b, WITHIN).await, "request added");
    a.remove_pushcert_request("r1").await.unwrap();
    assert!(moves(&mut on_b, WITHIN).await, "request removed");
    a.delete_push_cert("t.a").await.unwrap();
    assert!(moves(&mut on_b, WITHIN).await, "certificate deleted");
    assert!(
        stays(&mut on_a).await,
        "a node's own writes are not news to it"
    );

    // And the other way.
    b.put_push_cert(&cert("t.b")).await.unwrap();
    assert!(moves(&mut on_a, WITHIN).await);

    // Another schema on the same database is another deployment.
    elsewhere.put_push_cert(&cert("t.x")).await.unwrap();
    assert!(stays(&mut on_a).await && stays(&mut on_b).await);

    // Writes that change nothing announce nothing.
    assert!(!a.delete_push_cert("t.none").await.unwrap());
    assert!(stays(&mut on_b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_listener_listens_again_and_says_so() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url).await;
    let name = format!("feed_{:08x}", fastrand::u32(..));
    let a = PostgresStore::open(&schema.url(), key()).await.unwrap();
    let b = PostgresStore::open(&named(&schema.url(), &name), key())
        .await
        .unwrap();
    let mut on_b = listening(&b).await;

    let killer = admin(&url).await;
    let killed = killer
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("{name}/pushcert-listener")],
        )
        .await
        .unwrap();
    assert_eq!(
        killed.len(),
        1,
        "one listening session, named for operators"
    );
    // Back within the backoff's first steps, reported as a change (notifications sent while
    // it was away are lost).
    assert!(
        moves(&mut on_b, Duration::from_secs(3)).await,
        "no resync after the cut"
    );
    a.put_push_cert(&cert("t.a")).await.unwrap();
    assert!(moves(&mut on_b, WITHIN).await, "listening again");
}

/// The listening session is made as the store's others are: over TLS when the URL asks for
/// it, the server's certificate verified. Needs a server with TLS (`.ci/postgres.sh` makes
/// one when `openssl` is there); without, says so and passes, except under CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listener_speaks_tls_when_the_url_asks() {
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
            "the test server has no TLS (ssl = {ssl}, ssl_ca_file = {ca:?})"
        );
        eprintln!("skipped: the test server has no TLS with a CA file (.ci/postgres.sh makes one)");
        return;
    }
    let schema = Schema::new(&url).await;
    let base = schema
        .url()
        .replace("sslmode=disable&", "")
        .replace("sslmode=disable", "");
    let name = format!("feedtls_{:08x}", fastrand::u32(..));
    let tls_url = format!("{base}&application_name={name}&sslmode=verify-full&sslrootcert={ca}");
    let plain = PostgresStore::open(&schema.url(), key()).await.unwrap();
    let secure = PostgresStore::open(&tls_url, key()).await.unwrap();
    let mut changes = listening(&secure).await;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl), count(*) FROM pg_stat_activity a
             JOIN pg_stat_ssl s USING (pid) WHERE a.application_name = $1",
            &[&format!("{name}/pushcert-listener")],
        )
        .await
        .unwrap();
    let (tls_sessions, all): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (tls_sessions, all),
        (1, 1),
        "one listening session, over TLS"
    );
    plain.put_push_cert(&cert("t.a")).await.unwrap();
    assert!(moves(&mut changes, WITHIN).await);
}
