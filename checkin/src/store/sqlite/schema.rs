//! Schema migrations, versioned with `PRAGMA user_version`.

use rusqlite::Connection;

use super::db_err;
use crate::store::StoreError;

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only; never edit one that
/// has shipped.
const MIGRATIONS: &[&str] = &[
    // 1: devices, users, commands, the per-device queue, results.
    "CREATE TABLE devices (
        udid TEXT PRIMARY KEY NOT NULL,
        device_name TEXT, model TEXT, model_name TEXT, product_name TEXT,
        os_version TEXT, build_version TEXT, serial_number TEXT, imei TEXT, meid TEXT,
        phone_number TEXT,
        topic TEXT, token TEXT, push_magic TEXT, unlock_token BLOB, bootstrap_token BLOB,
        awaiting_configuration INTEGER NOT NULL DEFAULT 0,
        authenticated_at INTEGER, enrolled_at INTEGER, token_updated_at INTEGER,
        last_seen_at INTEGER, checked_out_at INTEGER, info_collected_at INTEGER,
        last_push_at INTEGER, push_outcome TEXT, push_reason TEXT, push_unregistered_ms INTEGER,
        push_outcome_at INTEGER, last_report_at INTEGER, first_report_after_push_at INTEGER
    );
    CREATE TABLE users (
        udid TEXT NOT NULL REFERENCES devices(udid),
        user_id TEXT NOT NULL,
        short_name TEXT, long_name TEXT,
        token TEXT NOT NULL, push_magic TEXT NOT NULL, updated_at INTEGER NOT NULL,
        PRIMARY KEY (udid, user_id)
    );
    CREATE TABLE commands (
        uuid TEXT PRIMARY KEY NOT NULL,
        request_type TEXT NOT NULL,
        body BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        udid TEXT NOT NULL REFERENCES devices(udid),
        uuid TEXT NOT NULL REFERENCES commands(uuid),
        request_type TEXT NOT NULL,
        queued_at INTEGER NOT NULL,
        not_now_at INTEGER,
        UNIQUE (udid, uuid)
    );
    CREATE INDEX queue_by_device ON queue (udid, id);
    CREATE INDEX queue_by_type ON queue (udid, request_type);
    CREATE TABLE results (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        udid TEXT NOT NULL,
        uuid TEXT NOT NULL,
        request_type TEXT,
        status TEXT NOT NULL,
        error_chain TEXT NOT NULL,
        raw BLOB NOT NULL,
        at INTEGER NOT NULL
    );
    CREATE INDEX results_by_device ON results (udid, id);",
];

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database to [`VERSION`], one transaction per migration.
pub(crate) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db_err("read schema version"))?;
    if found > VERSION {
        return Err(StoreError::SchemaTooNew {
            found,
            supported: VERSION,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let tx = conn.transaction().map_err(db_err("migrate"))?;
        tx.execute_batch(sql).map_err(db_err("migrate"))?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(db_err("migrate"))?;
        tx.commit().map_err(db_err("migrate"))?;
    }
    Ok(())
}
