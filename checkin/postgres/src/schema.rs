//! Versioned migrations, recorded in `schema_migrations` and applied under an advisory lock.
//!
//! Every node runs [`migrate`] when it opens the store: the first to take the lock applies
//! what is missing, each migration in its own transaction with its row in
//! `schema_migrations`; the others wait for the lock, then find nothing left to do. A
//! database that records a version this build does not know is refused
//! ([`StoreError::SchemaTooNew`]): an older node must not write a newer schema's tables.

use tokio_postgres::Client;

use magicpush_store::StoreError;

use crate::pg_err;

/// Migration `i` brings the schema from version `i` to `i + 1`. Append only; never edit one
/// that has shipped.
///
/// Times are Unix milliseconds in `bigint` (as the SQLite store keeps them, so both share
/// their row code and rules); secrets and hashes are `bytea`; the queue's order is an
/// identity column.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the device store and the push certificates' state, as SQLite's schema version 6 has
    // them.
    "CREATE TABLE devices (
        udid text PRIMARY KEY,
        device_name text, model text, model_name text, product_name text,
        os_version text, build_version text, serial_number text, imei text, meid text,
        phone_number text,
        topic text, token text, push_magic text, unlock_token bytea, bootstrap_token bytea,
        awaiting_configuration boolean NOT NULL DEFAULT false,
        authenticated_at bigint, enrolled_at bigint, token_updated_at bigint,
        last_seen_at bigint, checked_out_at bigint, info_collected_at bigint,
        last_push_at bigint, push_outcome text, push_reason text, push_unregistered_ms bigint,
        push_outcome_at bigint, last_report_at bigint, first_report_after_push_at bigint,
        identity_sha256 bytea, identity_subject text, identity_serial text,
        identity_not_after bigint, identity_bound_at bigint, identity_replaced_sha256 bytea,
        awaiting_token_update boolean NOT NULL DEFAULT false
    );
    -- One certificate to one device; holds bound devices only.
    CREATE UNIQUE INDEX devices_by_identity ON devices (identity_sha256)
        WHERE identity_sha256 IS NOT NULL;
    -- One tenant's devices (listing, deletion).
    CREATE INDEX devices_by_topic ON devices (topic, udid);
    CREATE TABLE users (
        udid text NOT NULL REFERENCES devices (udid),
        user_id text NOT NULL,
        short_name text, long_name text,
        token text NOT NULL, push_magic text NOT NULL, updated_at bigint NOT NULL,
        PRIMARY KEY (udid, user_id)
    );
    CREATE TABLE commands (
        uuid text PRIMARY KEY,
        request_type text NOT NULL,
        body bytea NOT NULL,
        created_at bigint NOT NULL,
        expires_at bigint
    );
    CREATE TABLE queue (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        udid text NOT NULL REFERENCES devices (udid),
        uuid text NOT NULL REFERENCES commands (uuid),
        request_type text NOT NULL,
        queued_at bigint NOT NULL,
        not_now_at bigint,
        UNIQUE (udid, uuid)
    );
    -- A device's next command: its rows in queue order.
    CREATE INDEX queue_by_device ON queue (udid, id);
    -- A command's queues (cancel, and the reference check when commands are deleted).
    CREATE INDEX queue_by_command ON queue (uuid);
    CREATE TABLE results (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        udid text NOT NULL,
        uuid text NOT NULL,
        request_type text,
        status text NOT NULL,
        error_chain text NOT NULL,
        raw bytea NOT NULL,
        at bigint NOT NULL
    );
    CREATE INDEX results_by_device ON results (udid, id);
    CREATE TABLE meta (name text PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE pushcert_certificates (
        topic text PRIMARY KEY,
        chain_pem text NOT NULL,
        key bytea NOT NULL,
        registered_at bigint NOT NULL
    );
    CREATE TABLE pushcert_requests (
        id text PRIMARY KEY,
        created_at bigint NOT NULL,
        facts text NOT NULL,
        key bytea NOT NULL
    );
    CREATE TABLE pushcert_memos (topic text PRIMARY KEY, apple_id text NOT NULL);
    CREATE TABLE pushcert_logs (
        log text NOT NULL,
        seq bigint NOT NULL,
        record text NOT NULL,
        PRIMARY KEY (log, seq)
    );
    CREATE TABLE tenant_names (topic text PRIMARY KEY, name text NOT NULL);",
    // 2: several nodes (see cluster.rs): their heartbeats, the scheduled jobs' last runs, and
    // each refresh's run with the devices it marked until it ends.
    "CREATE TABLE nodes (
        id text PRIMARY KEY,
        name text NOT NULL,
        version text NOT NULL,
        url text NOT NULL,
        started_at bigint NOT NULL,
        last_heartbeat_at bigint NOT NULL
    );
    CREATE TABLE schedules (
        job text PRIMARY KEY,
        last_run_at bigint NOT NULL,
        node_id text NOT NULL
    );
    CREATE TABLE refresh_runs (
        id text PRIMARY KEY,
        node_id text NOT NULL,
        kind text NOT NULL DEFAULT 'refresh',
        -- The last_push_at its marks carry: no two runs share one, so a device's attempt
        -- is told to be a run's by its time alone.
        attempted_at bigint NOT NULL UNIQUE,
        started_at bigint NOT NULL,
        finished_at bigint,
        state text NOT NULL,
        devices bigint NOT NULL DEFAULT 0,
        answered bigint NOT NULL DEFAULT 0,
        withdrawn bigint NOT NULL DEFAULT 0
    );
    -- The sweep's question: which runs are still running.
    CREATE INDEX refresh_runs_running ON refresh_runs (node_id) WHERE finished_at IS NULL;
    CREATE INDEX refresh_runs_by_start ON refresh_runs (started_at);
    -- A running run's devices (dropped when it ends): the sweep reads one run's by its key,
    -- never the devices table whole.
    CREATE TABLE refresh_run_devices (
        run_id text NOT NULL,
        udid text NOT NULL,
        PRIMARY KEY (run_id, udid)
    );",
    // 3: run-time settings changed through PUT /v1/settings (magicpush_store::settings),
    // shared by every node; durations in milliseconds, a NULL collect_every is off.
    "CREATE TABLE settings (
        key text PRIMARY KEY,
        value_ms bigint,
        updated_at bigint NOT NULL
    )",
    // 4: enrollment (magicpush_store::enrollment): one-time SCEP challenges by their SHA-256
    // (an invitation may own them), the serials of revoked device certificates, and the
    // built-in device CA, one row, its key sealed with the secrets key.
    "CREATE TABLE enrollment_challenges (
        hash bytea PRIMARY KEY,
        enrollment_id text NOT NULL,
        invitation_id text,
        created_at bigint NOT NULL,
        expires_at bigint NOT NULL,
        used_at bigint
    );
    CREATE INDEX enrollment_challenges_by_invitation ON enrollment_challenges (invitation_id);
    CREATE TABLE revoked_certificates (
        serial text PRIMARY KEY,
        udid text NOT NULL,
        revoked_at bigint NOT NULL
    );
    CREATE TABLE device_ca (
        id integer PRIMARY KEY CHECK (id = 1),
        cert_pem text NOT NULL,
        key bytea NOT NULL,
        created_at bigint NOT NULL
    )",
    // 5: enrollment invitations (magicpush_store::enrollment::Invitation): the URL's id, the
    // tenant, how many devices may enroll and how many did; and which devices enrolled
    // through each (recorded at their Authenticate).
    "CREATE TABLE enrollment_invitations (
        id text PRIMARY KEY,
        topic text,
        note text,
        uses bigint NOT NULL,
        enrolled bigint NOT NULL DEFAULT 0,
        created_at bigint NOT NULL,
        expires_at bigint NOT NULL,
        withdrawn_at bigint
    );
    CREATE TABLE enrollment_invitation_devices (
        invitation_id text NOT NULL,
        udid text NOT NULL,
        enrolled_at bigint NOT NULL,
        PRIMARY KEY (invitation_id, udid)
    );
    CREATE INDEX enrollment_invitation_devices_by_udid
        ON enrollment_invitation_devices (udid)",
    // 6: a device without a topic is kept under the empty one (as SQLite's version 11 keys
    // devices), so `devices_by_topic` orders every device by tenant and a refresh of every
    // tenant walks it with one row comparison.
    "UPDATE devices SET topic = '' WHERE topic IS NULL;
    ALTER TABLE devices ALTER COLUMN topic SET DEFAULT '';
    ALTER TABLE devices ALTER COLUMN topic SET NOT NULL",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The advisory lock migrations hold (one per database; any fixed number would do).
const MIGRATION_LOCK: i64 = 0x6d61_6769_6370_7573; // "magicpus"

/// Brings the schema to [`SCHEMA_VERSION`] under the advisory lock; the number of migrations
/// applied. The lock is a session lock: it is released here, or with the connection if this
/// fails half-way (the caller drops it).
pub(crate) async fn migrate(client: &Client) -> Result<u32, StoreError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err("take the migration lock"))?;
    let applied = migrate_locked(client).await;
    let unlocked = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(pg_err("release the migration lock"));
    let applied = applied?;
    unlocked?;
    Ok(applied)
}

async fn migrate_locked(client: &Client) -> Result<u32, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await
        .map_err(pg_err("create schema_migrations"))?;
    let found: i32 = client
        .query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )
        .await
        .and_then(|row| row.try_get(0))
        .map_err(pg_err("read schema version"))?;
    if i64::from(found) > i64::from(SCHEMA_VERSION) {
        return Err(StoreError::SchemaTooNew {
            found: i64::from(found),
            supported: i64::from(SCHEMA_VERSION),
        });
    }
    let mut applied = 0;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(found.max(0) as usize) {
        let version = i32::try_from(i + 1).unwrap_or(i32::MAX);
        // One transaction per migration: its DDL and its row land together or not at all.
        let script = format!(
            "BEGIN;\n{sql};\nINSERT INTO schema_migrations (version) VALUES ({version});\nCOMMIT;"
        );
        if let Err(e) = client.batch_execute(&script).await {
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(StoreError::Database {
                op: "migrate",
                detail: format!("migration to schema version {version}: {e}"),
            });
        }
        tracing::info!(version, "PostgreSQL schema migrated");
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_devices_table_has_every_column_in_order() {
        use magicpush_store::columns::Column;
        let devices = MIGRATIONS[0]
            .split("CREATE TABLE devices (")
            .nth(1)
            .and_then(|s| s.split(");").next())
            .unwrap();
        let names: Vec<&str> = devices
            .split(',')
            .filter_map(|c| c.split_whitespace().next())
            .collect();
        let want: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
        assert_eq!(names, want);
    }
}
