//! Schema migrations, versioned with `PRAGMA user_version`.

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::db_err;
use magicpush_store::{PushOutcome, StoreError};

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
    // 2: devices clustered by UDID (WITHOUT ROWID): a device is found in one b-tree, not an
    // index and then the table, and a refresh (which pushes, and so hears back, in UDID order)
    // walks the table's pages in order instead of all over it. `queue_by_type` goes: the
    // device's few queued rows are found by `queue_by_device`, and every queue insert and
    // delete had to keep a fourth b-tree up to date.
    "CREATE TABLE devices_v2 (
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
    ) WITHOUT ROWID;
    INSERT INTO devices_v2 SELECT
        udid, device_name, model, model_name, product_name,
        os_version, build_version, serial_number, imei, meid,
        phone_number,
        topic, token, push_magic, unlock_token, bootstrap_token,
        awaiting_configuration,
        authenticated_at, enrolled_at, token_updated_at,
        last_seen_at, checked_out_at, info_collected_at,
        last_push_at, push_outcome, push_reason, push_unregistered_ms,
        push_outcome_at, last_report_at, first_report_after_push_at
    FROM devices;
    DROP TABLE devices;
    ALTER TABLE devices_v2 RENAME TO devices;
    DROP INDEX queue_by_type;",
    // 3: the identity certificate each enrollment is bound to. The unique index keeps one
    // certificate to one device and finds the device a certificate belongs to. And whether an
    // Authenticate (a new enrollment) still waits for its TokenUpdate. Commands may expire.
    // `meta` holds the secrets key's check value when the secret columns are encrypted.
    "ALTER TABLE devices ADD COLUMN identity_sha256 BLOB;
    ALTER TABLE devices ADD COLUMN identity_subject TEXT;
    ALTER TABLE devices ADD COLUMN identity_serial TEXT;
    ALTER TABLE devices ADD COLUMN identity_not_after INTEGER;
    ALTER TABLE devices ADD COLUMN identity_bound_at INTEGER;
    ALTER TABLE devices ADD COLUMN identity_replaced_sha256 BLOB;
    CREATE UNIQUE INDEX devices_by_identity ON devices (identity_sha256);
    ALTER TABLE devices ADD COLUMN awaiting_token_update INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE commands ADD COLUMN expires_at INTEGER;
    CREATE TABLE meta (name TEXT PRIMARY KEY NOT NULL, value BLOB NOT NULL);",
    // 4: the identity index holds bound devices only. A device without an identity (device
    // authentication off, or not yet bound) had a (NULL, udid) entry all the same, so every
    // such enrollment wrote a second b-tree page at a random place for nothing. The index is
    // still unique, and `identity_sha256 = ?` still uses it.
    "DROP INDEX devices_by_identity;
    CREATE UNIQUE INDEX devices_by_identity ON devices (identity_sha256)
        WHERE identity_sha256 IS NOT NULL;",
    // 5: push reasons by their stored names (the rows are rewritten by `stored_push_reasons`,
    // DATA_MIGRATIONS); the push certificates' state, which lived in files beside the
    // database (private keys sealed like the devices' secrets when there is a secrets key).
    "CREATE TABLE pushcert_certificates (
        topic TEXT PRIMARY KEY NOT NULL,
        chain_pem TEXT NOT NULL,
        key BLOB NOT NULL,
        registered_at INTEGER NOT NULL
    );
    CREATE TABLE pushcert_requests (
        id TEXT PRIMARY KEY NOT NULL,
        created_at INTEGER NOT NULL,
        facts TEXT NOT NULL,
        key BLOB NOT NULL
    );
    CREATE TABLE pushcert_memos (
        topic TEXT PRIMARY KEY NOT NULL,
        apple_id TEXT NOT NULL
    );
    CREATE TABLE pushcert_logs (
        log TEXT NOT NULL,
        seq INTEGER NOT NULL,
        record TEXT NOT NULL,
        PRIMARY KEY (log, seq)
    ) WITHOUT ROWID;",
    // 6: tenants (one per push certificate topic) have display names; a device's topic is
    // looked up for one tenant's listings and deletion.
    "CREATE TABLE tenant_names (
        topic TEXT PRIMARY KEY NOT NULL,
        name TEXT NOT NULL
    );
    CREATE INDEX devices_by_topic ON devices (topic);",
    // 7: refresh runs and the devices each marked until it ends, so that a refresh cut short
    // by the process's death (kill -9) is taken back by the next process (see
    // magicpush_store::cluster).
    "CREATE TABLE refresh_runs (
        id TEXT PRIMARY KEY NOT NULL,
        node_id TEXT NOT NULL,
        kind TEXT NOT NULL DEFAULT 'refresh',
        attempted_at INTEGER NOT NULL UNIQUE,
        started_at INTEGER NOT NULL,
        finished_at INTEGER,
        state TEXT NOT NULL,
        devices INTEGER NOT NULL DEFAULT 0,
        answered INTEGER NOT NULL DEFAULT 0,
        withdrawn INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX refresh_runs_by_start ON refresh_runs (started_at);
    CREATE TABLE refresh_run_devices (
        run_id TEXT NOT NULL,
        udid TEXT NOT NULL,
        PRIMARY KEY (run_id, udid)
    ) WITHOUT ROWID;",
    // 8: run-time settings changed through PUT /v1/settings (magicpush_store::settings),
    // durations in milliseconds; a NULL collect_every is the collection turned off.
    "CREATE TABLE settings (
        key TEXT PRIMARY KEY NOT NULL,
        value_ms INTEGER,
        updated_at INTEGER NOT NULL
    ) WITHOUT ROWID;",
    // 9: enrollment (magicpush_store::enrollment): one-time SCEP challenges by their SHA-256
    // (an invitation may own them), the serials of revoked device certificates, and the
    // device CA for a store that keeps it (serve keeps SQLite's in the data directory).
    "CREATE TABLE enrollment_challenges (
        hash BLOB PRIMARY KEY NOT NULL,
        enrollment_id TEXT NOT NULL,
        invitation_id TEXT,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        used_at INTEGER
    ) WITHOUT ROWID;
    CREATE INDEX enrollment_challenges_by_invitation ON enrollment_challenges (invitation_id);
    CREATE TABLE revoked_certificates (
        serial TEXT PRIMARY KEY NOT NULL,
        udid TEXT NOT NULL,
        revoked_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE TABLE device_ca (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        cert_pem TEXT NOT NULL,
        key BLOB NOT NULL,
        created_at INTEGER NOT NULL
    );",
    // 10: enrollment invitations (magicpush_store::enrollment::Invitation): the URL's id,
    // the tenant, how many devices may enroll and how many did; and which devices enrolled
    // through each (recorded at their Authenticate).
    "CREATE TABLE enrollment_invitations (
        id TEXT PRIMARY KEY NOT NULL,
        topic TEXT,
        note TEXT,
        uses INTEGER NOT NULL,
        enrolled INTEGER NOT NULL DEFAULT 0,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL,
        withdrawn_at INTEGER
    ) WITHOUT ROWID;
    CREATE TABLE enrollment_invitation_devices (
        invitation_id TEXT NOT NULL,
        udid TEXT NOT NULL,
        enrolled_at INTEGER NOT NULL,
        PRIMARY KEY (invitation_id, udid)
    ) WITHOUT ROWID;
    CREATE INDEX enrollment_invitation_devices_by_udid
        ON enrollment_invitation_devices (udid);",
    // 11: devices clustered by tenant: keyed (topic, udid), a device with no topic under the
    // empty one. With many tenants a refresh pushes each tenant's devices together (one
    // connection group per topic), so the devices that answer at one time are a few runs of
    // one tenant's keys; keyed by UDID alone they were spread over the whole table and every
    // report wrote a page of its own. A refresh of every tenant walks the table in key order.
    // The UDID stays unique: every lookup and upsert by UDID goes through its index, and the
    // users' and queue's references still name it. `devices_by_topic` goes: the key does its
    // job.
    "CREATE TABLE devices_v11 (
        udid TEXT NOT NULL UNIQUE,
        device_name TEXT, model TEXT, model_name TEXT, product_name TEXT,
        os_version TEXT, build_version TEXT, serial_number TEXT, imei TEXT, meid TEXT,
        phone_number TEXT,
        topic TEXT NOT NULL DEFAULT '', token TEXT, push_magic TEXT,
        unlock_token BLOB, bootstrap_token BLOB,
        awaiting_configuration INTEGER NOT NULL DEFAULT 0,
        authenticated_at INTEGER, enrolled_at INTEGER, token_updated_at INTEGER,
        last_seen_at INTEGER, checked_out_at INTEGER, info_collected_at INTEGER,
        last_push_at INTEGER, push_outcome TEXT, push_reason TEXT, push_unregistered_ms INTEGER,
        push_outcome_at INTEGER, last_report_at INTEGER, first_report_after_push_at INTEGER,
        identity_sha256 BLOB, identity_subject TEXT, identity_serial TEXT,
        identity_not_after INTEGER, identity_bound_at INTEGER, identity_replaced_sha256 BLOB,
        awaiting_token_update INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (topic, udid)
    ) WITHOUT ROWID;
    INSERT INTO devices_v11 SELECT
        udid, device_name, model, model_name, product_name,
        os_version, build_version, serial_number, imei, meid,
        phone_number,
        COALESCE(topic, ''), token, push_magic, unlock_token, bootstrap_token,
        awaiting_configuration,
        authenticated_at, enrolled_at, token_updated_at,
        last_seen_at, checked_out_at, info_collected_at,
        last_push_at, push_outcome, push_reason, push_unregistered_ms,
        push_outcome_at, last_report_at, first_report_after_push_at,
        identity_sha256, identity_subject, identity_serial,
        identity_not_after, identity_bound_at, identity_replaced_sha256,
        awaiting_token_update
    FROM devices;
    DROP TABLE devices;
    ALTER TABLE devices_v11 RENAME TO devices;
    CREATE UNIQUE INDEX devices_by_identity ON devices (identity_sha256)
        WHERE identity_sha256 IS NOT NULL;",
    // 12: a device's queue, results and refresh-run entries keyed by its tenant too, as
    // version 11 keys the devices: a report's writes to them land beside those of the other
    // devices of its tenant answering at the time. Each row carries its device's topic,
    // looked up by UDID as it is written; the store moves the rows of a device whose topic
    // changes (rows::move_tenant: a TokenUpdate with another topic keeps the queue). Not a
    // trigger: one on `devices` made every enrollment write slower, firing or not.
    "CREATE TABLE queue_v12 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        topic TEXT NOT NULL,
        udid TEXT NOT NULL REFERENCES devices(udid),
        uuid TEXT NOT NULL REFERENCES commands(uuid),
        request_type TEXT NOT NULL,
        queued_at INTEGER NOT NULL,
        not_now_at INTEGER,
        UNIQUE (topic, udid, uuid)
    );
    INSERT INTO queue_v12 (id, topic, udid, uuid, request_type, queued_at, not_now_at)
        SELECT q.id, COALESCE((SELECT d.topic FROM devices d WHERE d.udid = q.udid), ''),
            q.udid, q.uuid, q.request_type, q.queued_at, q.not_now_at
        FROM queue q;
    DROP TABLE queue;
    ALTER TABLE queue_v12 RENAME TO queue;
    CREATE INDEX queue_by_device ON queue (topic, udid, id);
    ALTER TABLE results ADD COLUMN topic TEXT NOT NULL DEFAULT '';
    UPDATE results
        SET topic = COALESCE((SELECT d.topic FROM devices d WHERE d.udid = results.udid), '');
    DROP INDEX results_by_device;
    CREATE INDEX results_by_device ON results (topic, udid, id);
    CREATE TABLE refresh_run_devices_v12 (
        run_id TEXT NOT NULL,
        topic TEXT NOT NULL,
        udid TEXT NOT NULL,
        PRIMARY KEY (run_id, topic, udid)
    ) WITHOUT ROWID;
    INSERT INTO refresh_run_devices_v12 (run_id, topic, udid)
        SELECT r.run_id, COALESCE((SELECT d.topic FROM devices d WHERE d.udid = r.udid), ''),
            r.udid
        FROM refresh_run_devices r;
    DROP TABLE refresh_run_devices;
    ALTER TABLE refresh_run_devices_v12 RENAME TO refresh_run_devices;",
];

/// Migrations whose data change SQL alone cannot write, by the version they bring the schema
/// to; each runs in that version's transaction, after its SQL.
const DATA_MIGRATIONS: &[(i64, DataMigration)] = &[(5, stored_push_reasons)];

/// A migration's data step, run inside its transaction.
type DataMigration = fn(&Transaction<'_>) -> Result<(), StoreError>;

/// The schema version this build writes.
pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// 5: a push outcome's reason is kept by its stable stored name (`apns:ExpiredToken`,
/// `engine:deadline_exceeded`), not the engine's display text, which spelled some engine
/// outcomes exactly as APNs reasons (`Shutdown`).
fn stored_push_reasons(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let rows: Vec<(String, String, String)> = {
        let mut stmt = tx
            .prepare(
                "SELECT udid, push_outcome, push_reason FROM devices
                 WHERE push_outcome IS NOT NULL AND push_reason IS NOT NULL",
            )
            .map_err(db_err("migrate push reasons"))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .map_err(db_err("migrate push reasons"))?;
        rows.collect::<Result<_, _>>()
            .map_err(db_err("migrate push reasons"))?
    };
    let mut update = tx
        .prepare("UPDATE devices SET push_reason = ?2 WHERE udid = ?1")
        .map_err(db_err("migrate push reasons"))?;
    for (udid, kind, reason) in rows {
        let Some(stored) =
            PushOutcome::from_stored(&kind, Some(&reason), None).and_then(|o| o.stored_reason())
        else {
            continue;
        };
        if stored.as_ref() != reason {
            update
                .execute(params![udid, stored])
                .map_err(db_err("migrate push reasons"))?;
        }
    }
    Ok(())
}

/// Brings the database to [`VERSION`], one transaction per migration.
///
/// Foreign keys must be off while it runs (SQLite ignores the pragma inside a transaction):
/// a migration that rebuilds a table drops the old one while other tables still reference
/// it. Each migration checks the references before it commits, so a rebuild cannot leave a
/// dangling one behind.
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
        for (_, data) in DATA_MIGRATIONS.iter().filter(|(v, _)| *v == i as i64 + 1) {
            data(&tx)?;
        }
        let dangling: Option<String> = tx
            .query_row("PRAGMA foreign_key_check", [], |r| r.get(0))
            .optional()
            .map_err(db_err("migrate"))?;
        if let Some(table) = dangling {
            return Err(StoreError::Corrupt {
                what: format!(
                    "migration to schema version {}: table {table} has a row whose reference \
                     is broken",
                    i + 1
                ),
            });
        }
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(db_err("migrate"))?;
        tx.commit().map_err(db_err("migrate"))?;
    }
    Ok(())
}
