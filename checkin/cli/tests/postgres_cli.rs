//! `magicpush serve --database-url` and `magicpush migrate`: the PostgreSQL store from the
//! command line. The database comes from `MAGICPUSH_TEST_DATABASE_URL` (see
//! `checkin/postgres`); each test works in a fresh schema. Without the variable the tests
//! that need a server say so and pass, except under `CI=true`.

mod common;

use common::Serve;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_magicpush");
use magicpush_testkit::database::{test_database_url as test_url, URL_VAR};

/// A fresh schema on the test server: the URL whose sessions use it. Dropped at the end.
struct Schema {
    url: String,
    name: String,
    runtime: tokio::runtime::Runtime,
}

impl Schema {
    fn new(url: &str) -> Schema {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let name = format!("cli_{:016x}", fastrand::u64(..));
        runtime.block_on(sql(url, &format!("CREATE SCHEMA {name}")));
        Schema {
            url: url.to_owned(),
            name,
            runtime,
        }
    }

    fn url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}options=-csearch_path%3D{}", self.url, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let drop_schema = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        self.runtime.block_on(sql(&self.url, &drop_schema));
    }
}

async fn sql(url: &str, statement: &str) {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {URL_VAR}: {e}"));
    tokio::spawn(conn);
    client.batch_execute(statement).await.expect(statement);
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("MAGICPUSH_DATA_DIR")
        .env_remove("MAGICPUSH_DATABASE_URL")
        .env_remove("MAGICPUSH_SECRETS_KEY_FILE")
        .output()
        .expect("run magicpush")
}

/// PostgreSQL keeps the secrets sealed: `serve` refuses to start without the key, naming
/// the flag, before it connects anywhere.
#[test]
fn serve_on_postgres_needs_a_secrets_key() {
    let out = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--insecure-no-device-auth",
        "--database-url",
        "postgres://nobody@127.0.0.1:9/none",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started without a key: {stderr}");
    assert!(stderr.contains("--secrets-key-file"), "{stderr}");
    assert!(stderr.contains("--database-url"), "{stderr}");
}

/// `migrate` applies the schema once; `serve --database-url` starts on it and serves.
#[test]
fn migrate_then_serve_on_postgres() {
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url);
    let db = schema.url();
    let first = run(&["migrate", "--database-url", &db]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let all = magicpush_postgres::SCHEMA_VERSION;
    assert!(
        stdout.contains(&format!("{all} migrations applied")),
        "{stdout}"
    );
    let again = run(&["migrate", "--database-url", &db]);
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains("0 migrations applied"), "{stdout}");

    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, "22".repeat(32)).unwrap();
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-device-auth",
        ])
        .args(["--database-url", &db])
        .arg("--secrets-key-file")
        .arg(&key)
        .env_remove("MAGICPUSH_DATA_DIR")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    let node = Serve::listening(child).expect("serve --database-url printed its address");
    assert!(node.url.starts_with("http://127.0.0.1:"), "{}", node.url);
}

/// Starts `serve` on `db` with the admin key `api_key` and `extra` arguments.
fn serve_node(db: &str, key: &std::path::Path, api_key: &str, extra: &[&str]) -> Serve {
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--insecure-no-device-auth",
            "--api-key",
            api_key,
        ])
        .args(["--database-url", db])
        .arg("--secrets-key-file")
        .arg(key)
        .args(extra)
        .env_remove("MAGICPUSH_DATA_DIR")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn serve");
    Serve::listening(child).expect("serve --database-url printed its address")
}

/// Two `serve` processes on one database: a tenant added through node A's admin API is
/// listed by node B within a second, and B keeps the certificate it was started with
/// (`--cert`, not in the database) while it follows A's changes.
#[test]
fn a_tenant_added_on_one_node_is_served_by_the_other() {
    use magicpush_server::client::AdminClient;
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url);
    let db = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, "33".repeat(32)).unwrap();
    let pki = magicpush_fixtures::TestPki::generate().unwrap();
    let cert = dir.path().join("push.pem");
    std::fs::write(&cert, format!("{}{}", pki.push.cert_pem, pki.push.key_pem)).unwrap();
    const KEY: &str = "node-test-admin-key-0123456789";
    let a = serve_node(&db, &key, KEY, &[]);
    let cert_arg = cert.to_string_lossy().into_owned();
    let b = serve_node(&db, &key, KEY, &["--cert", &cert_arg]);
    let (on_a, on_b) = (
        AdminClient::new(&a.url, Some(KEY.into()), None).unwrap(),
        AdminClient::new(&b.url, Some(KEY.into()), None).unwrap(),
    );
    let bundle = format!("{}{}", pki.other_topic.cert_pem, pki.other_topic.key_pem);
    let topics = |v: &serde_json::Value| -> Vec<String> {
        v["topics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["topic"].as_str().unwrap().to_owned())
            .collect()
    };
    schema.runtime.block_on(async {
        let (status, body) = on_a
            .request(
                http::Method::POST,
                "/v1/topics",
                Some(("application/x-pem-file", bytes::Bytes::from(bundle))),
            )
            .await
            .unwrap();
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        let added = std::time::Instant::now();
        let mut want = vec![pki.other_topic_name.clone(), pki.topic.clone()];
        want.sort();
        loop {
            let listed = topics(&on_b.get_json("/v1/topics").await.unwrap());
            if listed == want {
                break;
            }
            assert!(
                added.elapsed() < Duration::from_secs(1),
                "node B lists {listed:?}, not {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // A never had B's --cert: it lists its own tenant only.
        let listed = topics(&on_a.get_json("/v1/topics").await.unwrap());
        assert_eq!(listed, vec![pki.other_topic_name.clone()]);
    });
    drop((a, b));
}

/// The built-in device CA on PostgreSQL: `ca show` finds none before `serve`; two nodes
/// starting together on a fresh database end with one CA, the one `ca show` prints.
#[test]
fn two_nodes_starting_together_share_one_device_ca() {
    use magicpush_server::client::AdminClient;
    let Some(url) = test_url() else { return };
    let schema = Schema::new(&url);
    let db = schema.url();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("secrets.key");
    std::fs::write(&key, "33".repeat(32)).unwrap();
    let key_arg = key.to_str().unwrap();
    let show = |json: bool| {
        let mut args = vec![
            "ca",
            "show",
            "--database-url",
            &db,
            "--secrets-key-file",
            key_arg,
        ];
        if json {
            args.push("--json");
        }
        run(&args)
    };
    let none = show(false);
    assert!(!none.status.success());
    assert!(String::from_utf8_lossy(&none.stderr).contains("serve"));

    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| serve_node(&db, &key, "k", &[]));
        let b = s.spawn(|| serve_node(&db, &key, "k", &[]));
        (a.join().unwrap(), b.join().unwrap())
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ca_of = |node: &Serve| {
        let admin = AdminClient::new(&node.url, None, None).unwrap();
        rt.block_on(admin.call(http::Method::GET, "/scep?operation=GetCACert", None))
            .unwrap()
    };
    let (der_a, der_b) = (ca_of(&a), ca_of(&b));
    assert_eq!(der_a, der_b, "one CA for both nodes");
    let shown = show(true);
    assert!(
        shown.status.success(),
        "{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let pem = json["certificate_pem"].as_str().unwrap();
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, body).unwrap();
    assert_eq!(der, der_a.to_vec());
}
