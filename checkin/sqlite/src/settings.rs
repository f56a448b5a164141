//! [`SettingsStore`] on SQLite: the `settings` key/value table (schema version 8).

use rusqlite::params;
use time::OffsetDateTime;

use magicpush_store::{to_ms, SettingsStore, StoreFuture, StoredSettings};

use crate::{db_err, SqliteStore};

impl SettingsStore for SqliteStore {
    fn settings(&self) -> StoreFuture<'_, StoredSettings> {
        self.read(|c| {
            const OP: &str = "read settings";
            let mut stmt = c
                .prepare_cached("SELECT key, value_ms FROM settings")
                .map_err(db_err(OP))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db_err(OP))?
                .collect::<Result<Vec<(String, Option<i64>)>, _>>()
                .map_err(db_err(OP))?;
            StoredSettings::from_rows(rows)
        })
    }

    fn put_settings<'a>(
        &'a self,
        change: &'a StoredSettings,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let rows = change.rows();
        self.write(move |c| {
            const OP: &str = "write settings";
            let mut stmt = c
                .prepare_cached(
                    "INSERT INTO settings (key, value_ms, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value_ms = excluded.value_ms,
                         updated_at = excluded.updated_at",
                )
                .map_err(db_err(OP))?;
            for (key, value) in &rows {
                stmt.execute(params![key, value, to_ms(at)])
                    .map_err(db_err(OP))?;
            }
            Ok(())
        })
    }
}
