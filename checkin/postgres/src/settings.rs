//! [`SettingsStore`] on PostgreSQL: the `settings` key/value table (schema migration 3),
//! shared by every node on the database. A write notifies the other nodes on the push
//! certificates' channel (`listen`), so their feed moves on and they re-read the settings
//! within a second; each node also re-reads them on its heartbeat, in case it missed one.

use time::OffsetDateTime;

use magicpush_store::{to_ms, SettingsStore, StoreFuture, StoredSettings};

use crate::rows::{get, query};
use crate::{listen, pg_err, PostgresStore};

impl SettingsStore for PostgresStore {
    fn settings(&self) -> StoreFuture<'_, StoredSettings> {
        Box::pin(async move {
            const OP: &str = "read settings";
            let c = self.reader().await?;
            let rows = query(&c, OP, "SELECT key, value_ms FROM settings", &[]).await?;
            let rows = rows
                .iter()
                .map(|r| Ok((get::<String>(r, 0, OP)?, get::<Option<i64>>(r, 1, OP)?)))
                .collect::<Result<Vec<_>, magicpush_store::StoreError>>()?;
            StoredSettings::from_rows(rows)
        })
    }

    fn put_settings<'a>(
        &'a self,
        change: &'a StoredSettings,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            const OP: &str = "write settings";
            let mut c = self.reader().await?;
            let tx = c.transaction().await.map_err(pg_err(OP))?;
            for (key, value) in change.rows() {
                tx.execute(
                    "INSERT INTO settings (key, value_ms, updated_at) VALUES ($1, $2, $3)
                     ON CONFLICT (key) DO UPDATE SET value_ms = EXCLUDED.value_ms,
                         updated_at = EXCLUDED.updated_at",
                    &[&key, &value, &to_ms(at)],
                )
                .await
                .map_err(pg_err(OP))?;
            }
            // Delivered only if the write commits.
            let origin: &str = &self.origin;
            tx.execute(listen::NOTIFY_SQL, &[&origin])
                .await
                .map_err(pg_err("announce a settings change"))?;
            tx.commit().await.map_err(pg_err(OP))
        })
    }
}
