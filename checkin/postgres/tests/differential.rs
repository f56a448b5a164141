//! The PostgreSQL store's differential test: [`magicpush_testkit::differential`] (random
//! operation sequences on the memory store and [`PostgresStore`] side by side, compared after
//! every step), each case in a fresh schema of the server `MAGICPUSH_TEST_DATABASE_URL`
//! names. The store always seals its secret columns; a reopen replaces it by a new store on
//! the same database.

use std::sync::OnceLock;

use magicpush_postgres::PostgresStore;
use magicpush_store::Store;
use magicpush_testkit::differential::{self, Case, Durable};
use proptest::prelude::*;

mod common;
use common::{key, test_url, Schema};

/// Random cases per run. Half the SQLite test's: every read compared is a round trip to the
/// server (64 cases took 37 s on a two-core machine).
const CASES: u32 = 32;

struct Postgres {
    store: PostgresStore,
    /// The case's schema; dropped after the store.
    schema: Schema,
}

impl Postgres {
    async fn new(url: &str) -> Self {
        let schema = Schema::new(url).await;
        Postgres {
            store: open(&schema).await,
            schema,
        }
    }
}

async fn open(schema: &Schema) -> PostgresStore {
    PostgresStore::open(&schema.url(), key())
        .await
        .expect("open the PostgreSQL store")
}

impl Durable for Postgres {
    const NAME: &'static str = "postgres";

    fn store(&self) -> &dyn Store {
        &self.store
    }

    /// Opens the database in a new store and drops the old one (every write of which was
    /// acknowledged, so committed).
    async fn reopen(&mut self) {
        self.store = open(&self.schema).await;
    }
}

fn run(case: &Case, url: &str) -> Result<(), TestCaseError> {
    differential::runtime().block_on(async {
        let mut postgres = Postgres::new(url).await;
        differential::check(case, &mut postgres).await
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_and_postgres_stores_agree(case in differential::case()) {
        if let Some(url) = test_url_once() {
            run(&case, &url)?;
        }
    }
}

/// The test server's URL, asked once (the skip line is printed once, not once per case).
fn test_url_once() -> Option<String> {
    static URL: OnceLock<Option<String>> = OnceLock::new();
    URL.get_or_init(test_url).clone()
}
