//! Rows to values and back.

use std::sync::LazyLock;

use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension, Row};
use time::OffsetDateTime;

use super::db_err;
use magicpush_mdm::{Authenticate, ErrorChainItem, Report, Secret, Status, TokenUpdate};
use magicpush_store::columns::{Column, Value};
use magicpush_store::logic;
use magicpush_store::writes::{self, DeviceWrite, Dialect};
use magicpush_store::{from_ms, to_ms};
use magicpush_store::{
    BoundIdentity, CommandResult, Device, Enrollment, PushOutcome, QueuedCommand, StoreError, User,
    RESULTS_KEPT_PER_DEVICE,
};

pub(crate) static SELECT_DEVICES: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
    format!("SELECT {} FROM devices", names.join(", "))
});

/// The first page of devices by UDID (`?1`: the page size).
pub(crate) static SELECT_DEVICES_FIRST: LazyLock<String> =
    LazyLock::new(|| format!("{} ORDER BY udid LIMIT ?1", *SELECT_DEVICES));

/// The page of devices after UDID `?1` (`?2`: the page size): a range of the UDID index.
pub(crate) static SELECT_DEVICES_AFTER: LazyLock<String> =
    LazyLock::new(|| format!("{} WHERE udid > ?1 ORDER BY udid LIMIT ?2", *SELECT_DEVICES));

/// The first page of devices in key order, by tenant (`?1`: the page size).
pub(crate) static SELECT_DEVICES_BY_TOPIC_FIRST: LazyLock<String> =
    LazyLock::new(|| format!("{} ORDER BY topic, udid LIMIT ?1", *SELECT_DEVICES));

/// The page of devices after `(topic ?1, UDID ?2)` in key order (`?3`: the page size).
pub(crate) static SELECT_DEVICES_BY_TOPIC_AFTER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE (topic, udid) > (?1, ?2) ORDER BY topic, udid LIMIT ?3",
        *SELECT_DEVICES
    )
});

/// The first page of topic `?1`'s devices (`?2`: the page size): a range of the key.
pub(crate) static SELECT_TOPIC_DEVICES_FIRST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE topic = ?1 ORDER BY udid LIMIT ?2",
        *SELECT_DEVICES
    )
});

/// The page of topic `?1`'s devices after UDID `?2` (`?3`: the page size).
pub(crate) static SELECT_TOPIC_DEVICES_AFTER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE topic = ?1 AND udid > ?2 ORDER BY udid LIMIT ?3",
        *SELECT_DEVICES
    )
});

/// A declared write's statement in SQLite's dialect, rendered at first use.
struct Statement {
    write: &'static DeviceWrite,
    sql: LazyLock<String>,
}

macro_rules! statement {
    ($name:ident = $write:path) => {
        static $name: Statement = Statement {
            write: &$write,
            sql: LazyLock::new(|| $write.sql(Dialect::Sqlite)),
        };
    };
}

statement!(AUTHENTICATE = writes::AUTHENTICATE);
statement!(TOKEN_UPDATE = writes::TOKEN_UPDATE);
statement!(REPORT = writes::REPORT);
statement!(REPORT_WITH_INFO = writes::REPORT_WITH_INFO);
statement!(PUSH_ATTEMPT = writes::PUSH_ATTEMPT);
statement!(PUSH_OUTCOME = writes::PUSH_OUTCOME);
statement!(SAVE = writes::SAVE);

impl Statement {
    /// Merges `fresh` (the rule's result on a fresh device) into the stored row. Returns
    /// the number of rows changed (0: an update of an unknown device).
    fn run(&self, conn: &Connection, fresh: &Device) -> rusqlite::Result<usize> {
        let values = self.write.values(fresh);
        conn.prepare_cached(&self.sql)?
            .execute(params_from_iter(values.iter().map(bind)))
    }
}

/// A column value as SQLite binds it.
fn bind<'a>(v: &'a Value<'a>) -> ToSqlOutput<'a> {
    ToSqlOutput::Borrowed(match v {
        Value::Null => ValueRef::Null,
        Value::Int(i) => ValueRef::Integer(*i),
        Value::Bool(b) => ValueRef::Integer(i64::from(*b)),
        Value::Text(t) => ValueRef::Text(t.as_bytes()),
        Value::Bytes(b) => ValueRef::Blob(b),
    })
}

fn opt_ts(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<OffsetDateTime>> {
    Ok(row.get::<_, Option<i64>>(i)?.map(from_ms))
}

/// Reads one `SELECT_DEVICES` row. The outer error is SQLite's, the inner a corrupt value.
pub(crate) fn device_from_row(row: &Row<'_>) -> rusqlite::Result<Result<Device, StoreError>> {
    let mut d = Device::new(row.get::<_, String>(0)?);
    d.info.device_name = row.get(1)?;
    d.info.model = row.get(2)?;
    d.info.model_name = row.get(3)?;
    d.info.product_name = row.get(4)?;
    d.info.os_version = row.get(5)?;
    d.info.build_version = row.get(6)?;
    d.info.serial_number = row.get(7)?;
    d.info.imei = row.get(8)?;
    d.info.meid = row.get(9)?;
    d.info.phone_number = row.get(10)?;
    d.topic = row.get::<_, Option<String>>(11)?.filter(|t| !t.is_empty());
    d.token = row.get(12)?;
    d.push_magic = row.get(13)?;
    d.unlock_token = row.get::<_, Option<Vec<u8>>>(14)?.map(Secret::new);
    d.bootstrap_token = row.get::<_, Option<Vec<u8>>>(15)?.map(Secret::new);
    d.awaiting_configuration = row.get(16)?;
    d.authenticated_at = opt_ts(row, 17)?;
    d.enrolled_at = opt_ts(row, 18)?;
    d.token_updated_at = opt_ts(row, 19)?;
    d.last_seen_at = opt_ts(row, 20)?;
    d.checked_out_at = opt_ts(row, 21)?;
    d.info_collected_at = opt_ts(row, 22)?;
    d.last_push_at = opt_ts(row, 23)?;
    let kind: Option<String> = row.get(24)?;
    let reason: Option<String> = row.get(25)?;
    let unregistered_ms: Option<i64> = row.get(26)?;
    d.push_outcome_at = opt_ts(row, 27)?;
    d.last_report_at = opt_ts(row, 28)?;
    d.first_report_after_push_at = opt_ts(row, 29)?;
    d.push_outcome = match push_outcome(&d.udid, kind, reason, unregistered_ms) {
        Ok(outcome) => outcome,
        Err(e) => return Ok(Err(e)),
    };
    d.identity = match identity_from_row(&d.udid, row, 30) {
        Ok(identity) => identity,
        Err(e) => return Ok(Err(e)),
    };
    d.awaiting_token_update = row.get(36)?;
    Ok(Ok(d))
}

/// A 32-byte hash column; `what` names it in the error for any other length.
pub(crate) fn hash_column(
    udid: &str,
    what: &str,
    value: Option<Vec<u8>>,
) -> Result<Option<[u8; 32]>, StoreError> {
    value
        .map(|v| {
            <[u8; 32]>::try_from(v.as_slice()).map_err(|_| StoreError::Corrupt {
                what: format!("device {udid}: {what} of {} bytes", v.len()),
            })
        })
        .transpose()
}

/// The six `identity_*` columns from `first` on. Returns the inner error for corrupt values.
fn identity_from_row(
    udid: &str,
    row: &Row<'_>,
    first: usize,
) -> Result<Option<BoundIdentity>, StoreError> {
    let sql = |e: rusqlite::Error| StoreError::Database {
        op: "read device",
        detail: e.to_string(),
    };
    let Some(sha256) = hash_column(udid, "identity_sha256", row.get(first).map_err(sql)?)? else {
        return Ok(None);
    };
    Ok(Some(BoundIdentity {
        sha256,
        subject: row
            .get::<_, Option<String>>(first + 1)
            .map_err(sql)?
            .unwrap_or_default(),
        serial: row
            .get::<_, Option<String>>(first + 2)
            .map_err(sql)?
            .unwrap_or_default(),
        not_after: from_ms(
            row.get::<_, Option<i64>>(first + 3)
                .map_err(sql)?
                .unwrap_or(0),
        ),
        bound_at: from_ms(
            row.get::<_, Option<i64>>(first + 4)
                .map_err(sql)?
                .unwrap_or(0),
        ),
        replaced_sha256: hash_column(
            udid,
            "identity_replaced_sha256",
            row.get(first + 5).map_err(sql)?,
        )?,
    }))
}

/// The push outcome stored in the `push_outcome`, `push_reason` and `push_unregistered_ms`
/// columns of device `udid`.
fn push_outcome(
    udid: &str,
    kind: Option<String>,
    reason: Option<String>,
    unregistered_ms: Option<i64>,
) -> Result<Option<PushOutcome>, StoreError> {
    let Some(kind) = kind else {
        return Ok(None);
    };
    let timestamp_ms = unregistered_ms.and_then(|v| u64::try_from(v).ok());
    match PushOutcome::from_stored(&kind, reason.as_deref(), timestamp_ms) {
        Some(outcome) => Ok(Some(outcome)),
        None => Err(StoreError::Corrupt {
            what: format!("device {udid}: push_outcome {kind:?}"),
        }),
    }
}

/// `logic::authenticate` on the stored row, as `writes::AUTHENTICATE` declares, reading only
/// its topic (to move it when the tenant changes, [`moving_tenant`]) and, with an identity,
/// its binding (to return it).
pub(crate) fn upsert_for_authenticate(
    conn: &Connection,
    msg: &Authenticate,
    identity: Option<&BoundIdentity>,
    at: OffsetDateTime,
) -> Result<Option<[u8; 32]>, StoreError> {
    // The binding before this write: a lookup in the page the upsert touches next.
    let previous = match identity {
        Some(_) => load_identity_hash(conn, &msg.udid)?,
        None => None,
    };
    // The rule on a fresh device: its info holds exactly the facts the message sent, and
    // `writes::AUTHENTICATE` overlays them, binds the identity and keeps the other columns.
    let mut d = Device::new(msg.udid.as_str());
    logic::authenticate(&mut d, msg, at);
    if let Some(id) = identity {
        logic::bind_identity(&mut d, id);
    }
    let stored = stored_topic(conn, &msg.udid)?;
    let written = moving_tenant(conn, &msg.udid, stored.as_deref(), &msg.topic, || {
        AUTHENTICATE.run(conn, &d)
    })?;
    match (written, identity) {
        (Ok(_), _) => Ok(previous),
        // The statement failed as a whole: SQLite left nothing of it behind.
        (Err(e), Some(id)) if is_unique_violation(&e) => {
            let other: Option<String> = conn
                .prepare_cached(SELECT_BY_IDENTITY)
                .and_then(|mut s| s.query_row([id.sha256.to_vec()], |r| r.get(0)).optional())
                .map_err(db_err("read device"))?;
            Err(StoreError::IdentityInUse {
                udid: other.unwrap_or_else(|| "(unknown)".into()),
            })
        }
        (Err(e), _) => Err(db_err("write device")(e)),
    }
}

/// The device an identity certificate is bound to. It finds its row through the partial
/// index `devices_by_identity`, which holds bound devices only (schema version 4).
pub(crate) const SELECT_BY_IDENTITY: &str = "SELECT udid FROM devices WHERE identity_sha256 = ?1";

/// Whether the device has any command queued.
pub(crate) fn has_queue(conn: &Connection, udid: &str) -> Result<bool, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT 1 FROM queue WHERE topic = ",
        device_topic!(),
        " AND udid = ?1 LIMIT 1"
    ))
    .and_then(|mut s| s.exists([udid]))
    .map_err(db_err("read queue"))
}

/// Drops every command queued for the device.
pub(crate) fn drop_queue(conn: &Connection, udid: &str) -> Result<(), StoreError> {
    conn.prepare_cached(concat!(
        "DELETE FROM queue WHERE topic = ",
        device_topic!(),
        " AND udid = ?1"
    ))
    .and_then(|mut s| s.execute([udid]))
    .map(drop)
    .map_err(db_err("drop queue"))
}

fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(
        e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
    )
}

/// The identity hash bound to `udid` (`None`: no binding or no device).
pub(crate) fn load_identity_hash(
    conn: &Connection,
    udid: &str,
) -> Result<Option<[u8; 32]>, StoreError> {
    let value: Option<Option<Vec<u8>>> = conn
        .prepare_cached("SELECT identity_sha256 FROM devices WHERE udid = ?1")
        .and_then(|mut s| s.query_row([udid], |r| r.get(0)).optional())
        .map_err(db_err("read device"))?;
    hash_column(udid, "identity_sha256", value.flatten())
}

/// `logic::token_update` (device channel) on the stored row, reading only the columns that
/// decide re-enrollment (`writes::TOKEN_UPDATE_READS`) and writing as `writes::TOKEN_UPDATE`
/// declares. Creates the device if unknown.
pub(crate) fn upsert_for_token_update(
    conn: &Connection,
    msg: &TokenUpdate,
    at: OffsetDateTime,
) -> Result<Enrollment, StoreError> {
    let mut d = Device::new(msg.udid.as_str());
    let stored = conn
        .prepare_cached(
            "SELECT enrolled_at, checked_out_at, token_updated_at, push_outcome, push_reason,
               push_unregistered_ms, push_outcome_at, last_seen_at, awaiting_token_update, topic
             FROM devices WHERE udid = ?1",
        )
        .and_then(|mut s| {
            s.query_row([&msg.udid], |row| {
                d.enrolled_at = opt_ts(row, 0)?;
                d.checked_out_at = opt_ts(row, 1)?;
                d.token_updated_at = opt_ts(row, 2)?;
                d.push_outcome_at = opt_ts(row, 6)?;
                d.last_seen_at = opt_ts(row, 7)?;
                d.awaiting_token_update = row.get(8)?;
                Ok((
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                    row.get::<_, String>(9)?,
                ))
            })
            .optional()
        })
        .map_err(db_err("read device"))?;
    let mut stored_topic = None;
    if let Some((kind, reason, unregistered_ms, topic)) = stored {
        d.push_outcome = push_outcome(&d.udid, kind, reason, unregistered_ms)?;
        stored_topic = Some(topic);
    }
    let enrollment = logic::token_update(&mut d, msg, at);
    moving_tenant(conn, &msg.udid, stored_topic.as_deref(), &msg.topic, || {
        TOKEN_UPDATE.run(conn, &d)
    })?
    .map_err(db_err("write device"))?;
    Ok(enrollment)
}

pub(crate) fn load_device(conn: &Connection, udid: &str) -> Result<Option<Device>, StoreError> {
    let sql = format!("{} WHERE udid = ?1", *SELECT_DEVICES);
    let mut stmt = conn.prepare_cached(&sql).map_err(db_err("read device"))?;
    stmt.query_row([udid], device_from_row)
        .optional()
        .map_err(db_err("read device"))?
        .transpose()
}

pub(crate) fn require_device(conn: &Connection, udid: &str) -> Result<Device, StoreError> {
    load_device(conn, udid)?.ok_or_else(|| StoreError::UnknownDevice { udid: udid.into() })
}

pub(crate) fn device_exists(conn: &Connection, udid: &str) -> Result<bool, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT 1 FROM devices WHERE udid = ?1")
        .map_err(db_err("read device"))?;
    stmt.exists([udid]).map_err(db_err("read device"))
}

/// `logic::push_attempt` on the stored row, as `writes::PUSH_ATTEMPT` declares. Returns
/// false if the device is unknown.
pub(crate) fn update_push_attempt(
    conn: &Connection,
    udid: &str,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let mut d = Device::new(udid);
    logic::push_attempt(&mut d, at);
    PUSH_ATTEMPT
        .run(conn, &d)
        .map(|n| n > 0)
        .map_err(db_err("record push attempt"))
}

/// `logic::push_outcome` on the stored row, as `writes::PUSH_OUTCOME` declares. Returns
/// false if the device is unknown.
pub(crate) fn update_push_outcome(
    conn: &Connection,
    udid: &str,
    outcome: &PushOutcome,
    at: OffsetDateTime,
) -> Result<bool, StoreError> {
    let mut d = Device::new(udid);
    logic::push_outcome(&mut d, outcome, at);
    PUSH_OUTCOME
        .run(conn, &d)
        .map(|n| n > 0)
        .map_err(db_err("record push outcome"))
}

/// `logic::report` on the stored row, reading only the columns it decides on
/// (`writes::REPORT_READS`) and writing as `writes::REPORT` (or, when the report carries
/// device facts, `writes::REPORT_WITH_INFO`) declares.
/// Returns (closed the open push, updated the device facts).
pub(crate) fn update_for_report(
    conn: &Connection,
    report: &Report,
    at: OffsetDateTime,
) -> Result<(bool, bool), StoreError> {
    let mut d = Device::new(report.udid.as_str());
    let found = conn
        .prepare_cached(
            "SELECT last_seen_at, last_report_at, last_push_at, first_report_after_push_at
             FROM devices WHERE udid = ?1",
        )
        .and_then(|mut s| {
            s.query_row([&report.udid], |row| {
                d.last_seen_at = opt_ts(row, 0)?;
                d.last_report_at = opt_ts(row, 1)?;
                d.last_push_at = opt_ts(row, 2)?;
                d.first_report_after_push_at = opt_ts(row, 3)?;
                Ok(())
            })
            .optional()
        })
        .map_err(db_err("read device"))?;
    if found.is_none() {
        return Err(StoreError::UnknownDevice {
            udid: report.udid.clone(),
        });
    }
    // `d.info` starts empty, so after the merge it holds exactly the facts the report sent,
    // which `writes::REPORT_WITH_INFO` overlays on the stored ones.
    let (closed, info_updated) = logic::report(&mut d, report, at);
    let statement = if info_updated {
        &REPORT_WITH_INFO
    } else {
        &REPORT
    };
    let written = statement.run(conn, &d);
    written.map_err(db_err("write device"))?;
    Ok((closed, info_updated))
}

/// Writes the whole device as given (`writes::SAVE`).
pub(crate) fn save_device(conn: &Connection, d: &Device) -> Result<(), StoreError> {
    let stored = stored_topic(conn, &d.udid)?;
    let topic = d.topic.as_deref().unwrap_or_default();
    moving_tenant(conn, &d.udid, stored.as_deref(), topic, || {
        SAVE.run(conn, d)
    })?
    .map(drop)
    .map_err(db_err("write device"))
}

/// The topic device `udid` is stored under (the empty one for none); `None` if it is not
/// stored.
fn stored_topic(conn: &Connection, udid: &str) -> Result<Option<String>, StoreError> {
    conn.prepare_cached("SELECT topic FROM devices WHERE udid = ?1")
        .and_then(|mut s| s.query_row([udid], |r| r.get(0)).optional())
        .map_err(db_err("read device"))
}

/// Runs `write`, first moving the device from topic `stored` to `topic`, with its queue and
/// its results, when the two differ. The devices, the queue and the results are keyed by
/// topic first (schema versions 11 and 12), and the upserts leave the topic alone
/// ([`Dialect::upserts_set`](magicpush_store::writes::Dialect::upserts_set)): a device that
/// changes tenant moves here. The move and the write share a savepoint, so a write that
/// fails (an identity bound to another device, say) leaves the device where it was; the
/// writes calling this otherwise run a single statement without one (`Undo::ByStatement`).
/// The outer error is the move's, the inner one the write's.
fn moving_tenant<T>(
    conn: &Connection,
    udid: &str,
    stored: Option<&str>,
    topic: &str,
    write: impl FnOnce() -> rusqlite::Result<T>,
) -> Result<rusqlite::Result<T>, StoreError> {
    let Some(stored) = stored.filter(|s| *s != topic) else {
        return Ok(write());
    };
    conn.execute_batch("SAVEPOINT move_tenant")
        .map_err(db_err("savepoint"))?;
    let done = move_tenant(conn, udid, stored, topic).map(|()| write());
    let end = match &done {
        Ok(Ok(_)) => "RELEASE move_tenant",
        _ => "ROLLBACK TO move_tenant; RELEASE move_tenant",
    };
    conn.execute_batch(end).map_err(db_err("savepoint"))?;
    done
}

/// Moves device `udid`'s row, queue and results from topic `from` to `to`.
fn move_tenant(conn: &Connection, udid: &str, from: &str, to: &str) -> Result<(), StoreError> {
    for sql in [
        "UPDATE devices SET topic = ?3 WHERE topic = ?2 AND udid = ?1",
        "UPDATE queue SET topic = ?3 WHERE topic = ?2 AND udid = ?1",
        "UPDATE results SET topic = ?3 WHERE topic = ?2 AND udid = ?1",
    ] {
        conn.prepare_cached(sql)
            .and_then(|mut s| s.execute(params![udid, from, to]))
            .map_err(db_err("move a device to its new tenant"))?;
    }
    Ok(())
}

pub(crate) fn queued_from_row(row: &Row<'_>) -> rusqlite::Result<QueuedCommand> {
    Ok(QueuedCommand {
        uuid: row.get(0)?,
        request_type: row.get(1)?,
        body: row.get(2)?,
        queued_at: from_ms(row.get(3)?),
        not_now_at: opt_ts(row, 4)?,
        expires_at: opt_ts(row, 5)?,
    })
}

/// A device's queue: `?1` UDID, `?2` skip NotNow, `?3` now (ms; expired commands are left
/// out — pass `i64::MIN` to list them all).
pub(crate) const SELECT_QUEUED: &str = concat!(
    "SELECT q.uuid, q.request_type, c.body, q.queued_at, q.not_now_at, c.expires_at
     FROM queue q JOIN commands c ON c.uuid = q.uuid
     WHERE q.topic = ",
    device_topic!(),
    " AND q.udid = ?1 AND (?2 = 0 OR q.not_now_at IS NULL)
       AND (c.expires_at IS NULL OR c.expires_at > ?3)
     ORDER BY q.id"
);

/// The device's next queued command: [`SELECT_QUEUED`]'s first row, its text made once.
pub(crate) static SELECT_NEXT_QUEUED: LazyLock<String> =
    LazyLock::new(|| format!("{SELECT_QUEUED} LIMIT 1"));

pub(crate) fn result_from_row(
    row: &Row<'_>,
) -> rusqlite::Result<Result<CommandResult, StoreError>> {
    let udid: String = row.get(0)?;
    let command_uuid: String = row.get(1)?;
    let status_text: String = row.get(3)?;
    let chain_text: String = row.get(4)?;
    let Ok(status) = status_text.parse::<Status>() else {
        return Ok(Err(StoreError::Corrupt {
            what: format!("result for {udid}/{command_uuid}: status {status_text:?}"),
        }));
    };
    let error_chain: Vec<ErrorChainItem> = match serde_json::from_str(&chain_text) {
        Ok(c) => c,
        Err(e) => {
            return Ok(Err(StoreError::Corrupt {
                what: format!("result for {udid}/{command_uuid}: error chain: {e}"),
            }))
        }
    };
    Ok(Ok(CommandResult {
        udid,
        command_uuid,
        request_type: row.get(2)?,
        status,
        error_chain,
        raw: row.get(5)?,
        at: from_ms(row.get(6)?),
    }))
}

/// Whether the device has a result of `status` for command `uuid` (among those kept).
pub(crate) fn has_result(
    conn: &Connection,
    udid: &str,
    uuid: &str,
    status: Status,
) -> Result<bool, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT 1 FROM results WHERE topic = ",
        device_topic!(),
        " AND udid = ?1 AND uuid = ?2 AND status = ?3 LIMIT 1"
    ))
    .and_then(|mut s| s.exists(params![udid, uuid, status.as_str()]))
    .map_err(db_err("read results"))
}

pub(crate) fn insert_result(conn: &Connection, r: &CommandResult) -> Result<(), StoreError> {
    let chain = serde_json::to_string(&r.error_chain).map_err(|e| StoreError::Corrupt {
        what: format!("error chain not serialisable: {e}"),
    })?;
    conn.prepare_cached(concat!(
        "INSERT INTO results (topic, udid, uuid, request_type, status, error_chain, raw, at)
         VALUES (COALESCE(",
        device_topic!(),
        ", ''), ?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            r.udid,
            r.command_uuid,
            r.request_type,
            r.status.as_str(),
            chain,
            r.raw,
            to_ms(r.at)
        ])
    })
    .map_err(db_err("write result"))?;
    conn.prepare_cached(concat!(
        "DELETE FROM results WHERE topic = ",
        device_topic!(),
        " AND udid = ?1 AND id <= (SELECT id FROM results WHERE topic = ",
        device_topic!(),
        " AND udid = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)"
    ))
    .and_then(|mut s| s.execute(params![r.udid, RESULTS_KEPT_PER_DEVICE as i64]))
    .map_err(db_err("prune results"))?;
    Ok(())
}

pub(crate) fn user_from_row(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        udid: row.get(0)?,
        user_id: row.get(1)?,
        short_name: row.get(2)?,
        long_name: row.get(3)?,
        token: row.get(4)?,
        push_magic: row.get(5)?,
        updated_at: from_ms(row.get(6)?),
    })
}

pub(crate) fn upsert_user(conn: &Connection, u: &User) -> Result<(), StoreError> {
    conn.prepare_cached(
        "INSERT INTO users (udid, user_id, short_name, long_name, token, push_magic, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (udid, user_id) DO UPDATE SET short_name = excluded.short_name,
           long_name = excluded.long_name, token = excluded.token,
           push_magic = excluded.push_magic, updated_at = excluded.updated_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            u.udid,
            u.user_id,
            u.short_name,
            u.long_name,
            u.token,
            u.push_magic,
            to_ms(u.updated_at)
        ])
    })
    .map_err(db_err("write user"))?;
    Ok(())
}
