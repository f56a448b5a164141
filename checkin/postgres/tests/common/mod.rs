//! What the PostgreSQL tests share: the test server's URL and a fresh schema per test.

#![allow(dead_code, unreachable_pub)] // Each test file uses its part.

use std::sync::Arc;

use magicpush_postgres::SecretKey;
use tokio_postgres::NoTls;

pub use magicpush_testkit::database::{test_database_url as test_url, URL_VAR};

/// `url` with its sessions' `search_path` set to `schema`.
pub fn in_schema(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-csearch_path%3D{schema}")
}

pub fn key() -> Arc<SecretKey> {
    Arc::new(SecretKey::from_bytes(&[42; 32]).expect("32 bytes"))
}

/// A connection for the test's own SQL.
pub async fn admin(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {URL_VAR}: {e}"));
    tokio::spawn(conn);
    client
}

/// A fresh schema, dropped (with everything in it) when the test ends.
pub struct Schema {
    url: String,
    name: String,
}

impl Schema {
    pub async fn new(url: &str) -> Schema {
        let name = format!("t_{:016x}", fastrand::u64(..));
        admin(url)
            .await
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create the test's schema");
        Schema {
            url: url.to_owned(),
            name,
        }
    }

    pub fn url(&self) -> String {
        in_schema(&self.url, &self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Its own thread and runtime: this may run inside the test's runtime.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async {
                if let Ok((client, conn)) = tokio_postgres::connect(&url, NoTls).await {
                    tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            })
        })
        .join();
    }
}
