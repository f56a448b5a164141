//! The SQLite store's differential test: [`magicpush_testkit::differential`] (random
//! operation sequences on the memory store and [`SqliteStore`] side by side, compared after
//! every step) with the store in a temporary directory. Half the cases encrypt its secret
//! columns; a reopen opens the database in a new store and closes the old one.

use std::sync::Arc;

use magicpush_sqlite::{SqliteOptions, SqliteStore};
use magicpush_store::{SecretKey, Store};
use magicpush_testkit::differential::{self, Case, Durable};
use proptest::prelude::*;

/// Random cases per run.
const CASES: u32 = 64;

struct Sqlite {
    store: SqliteStore,
    options: SqliteOptions,
    /// Holds the SQLite database; dropped after the store.
    dir: tempfile::TempDir,
}

impl Sqlite {
    /// A store on a fresh database; `sealed`: it encrypts its secret columns
    /// (`SqliteOptions::secrets_key`).
    fn new(sealed: bool) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = SecretKey::from_bytes(&[7; 32]).expect("a 32-byte key");
        let options = SqliteOptions {
            secrets_key: sealed.then(|| Arc::new(key)),
            ..SqliteOptions::default()
        };
        Sqlite {
            store: open(&dir, &options),
            options,
            dir,
        }
    }
}

fn open(dir: &tempfile::TempDir, options: &SqliteOptions) -> SqliteStore {
    SqliteStore::open_with(dir.path(), options.clone()).expect("open the SQLite store")
}

impl Durable for Sqlite {
    const NAME: &'static str = "sqlite";

    fn store(&self) -> &dyn Store {
        &self.store
    }

    /// Opens the database in a new SQLite store and closes the old one. Blocks, on the
    /// test's thread (the one blocking on the runtime, not a runtime worker), while the old
    /// store's writer finishes.
    async fn reopen(&mut self) {
        self.store = open(&self.dir, &self.options);
    }
}

fn run(case: &Case, sealed: bool) -> Result<(), TestCaseError> {
    let mut sqlite = Sqlite::new(sealed);
    differential::runtime().block_on(differential::check(case, &mut sqlite))
    // The store is dropped here, off the runtime: dropping joins the writer thread.
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: CASES,
        ..ProptestConfig::default()
    })]

    #[test]
    fn memory_and_sqlite_stores_agree(case in differential::case(), sealed in any::<bool>()) {
        run(&case, sealed)?;
    }
}
