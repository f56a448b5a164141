//! Rows to values and back, and the statements every write shares.

use std::sync::LazyLock;

use bytes::BytesMut;
use deadpool_postgres::ClientWrapper;
use time::OffsetDateTime;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Row;

use magicpush_mdm::{Authenticate, ErrorChainItem, Report, Secret, Status, TokenUpdate};
use magicpush_store::columns::{Column, Value};
use magicpush_store::logic;
use magicpush_store::writes::{self, DeviceWrite, Dialect};
use magicpush_store::{from_ms, to_ms};
use magicpush_store::{
    BoundIdentity, CommandResult, Device, Enrollment, PushOutcome, QueuedCommand, ReportOutcome,
    StoreError, User, RESULTS_KEPT_PER_DEVICE,
};

use crate::pg_err;

/// A statement parameter.
pub(crate) type Param<'a> = &'a (dyn ToSql + Sync);

/// Runs `sql` (prepared once per connection) and returns the rows changed.
pub(crate) async fn exec(
    c: &ClientWrapper,
    op: &'static str,
    sql: &str,
    params: &[Param<'_>],
) -> Result<u64, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err(op))?;
    c.execute(&stmt, params).await.map_err(pg_err(op))
}

/// `sql` prepared (once per connection), for statements sent together (pipelined).
pub(crate) async fn prepare(
    c: &ClientWrapper,
    op: &'static str,
    sql: &str,
) -> Result<tokio_postgres::Statement, StoreError> {
    c.prepare_cached(sql).await.map_err(pg_err(op))
}

/// Runs `sql` and returns its rows.
pub(crate) async fn query(
    c: &ClientWrapper,
    op: &'static str,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Vec<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err(op))?;
    c.query(&stmt, params).await.map_err(pg_err(op))
}

/// Runs `sql` and returns its row, if any.
pub(crate) async fn query_opt(
    c: &ClientWrapper,
    op: &'static str,
    sql: &str,
    params: &[Param<'_>],
) -> Result<Option<Row>, StoreError> {
    let stmt = c.prepare_cached(sql).await.map_err(pg_err(op))?;
    c.query_opt(&stmt, params).await.map_err(pg_err(op))
}

/// Column `i` of `row`, or a typed error naming the operation.
pub(crate) fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    i: usize,
    op: &'static str,
) -> Result<T, StoreError> {
    row.try_get(i).map_err(pg_err(op))
}

/// A column value bound as the parameter type PostgreSQL inferred for it. A value of the
/// wrong kind for its column is an error, not a silent conversion.
#[derive(Debug)]
pub(crate) struct Bind<'a>(pub(crate) &'a Value<'a>);

impl ToSql for Bind<'_> {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        let mismatch = || -> Box<dyn std::error::Error + Sync + Send> {
            format!("a {:?} bound to a parameter of type {ty}", self.0).into()
        };
        match self.0 {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) if *ty == Type::INT8 => v.to_sql(ty, out),
            Value::Bool(v) if *ty == Type::BOOL => v.to_sql(ty, out),
            Value::Text(v) if *ty == Type::TEXT || *ty == Type::VARCHAR => {
                v.as_ref().to_sql(ty, out)
            }
            Value::Bytes(v) if *ty == Type::BYTEA => v.to_sql(ty, out),
            _ => Err(mismatch()),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Checked against the value's kind in `to_sql`.
        true
    }

    to_sql_checked!();
}

/// The device columns, in [`Column::ALL`]'s order.
pub(crate) static SELECT_DEVICES: LazyLock<String> = LazyLock::new(|| {
    let names: Vec<&str> = Column::ALL.iter().map(|c| c.name()).collect();
    format!("SELECT {} FROM devices", names.join(", "))
});

pub(crate) static SELECT_DEVICE: LazyLock<String> =
    LazyLock::new(|| format!("{} WHERE udid = $1", *SELECT_DEVICES));

/// The first page of devices by UDID (`$1`: the page size).
pub(crate) static SELECT_DEVICES_FIRST: LazyLock<String> =
    LazyLock::new(|| format!("{} ORDER BY udid LIMIT $1", *SELECT_DEVICES));

/// The page of devices after UDID `$1` (`$2`: the page size): a range of the primary key.
pub(crate) static SELECT_DEVICES_AFTER: LazyLock<String> =
    LazyLock::new(|| format!("{} WHERE udid > $1 ORDER BY udid LIMIT $2", *SELECT_DEVICES));

/// The first page of devices by tenant, through `devices_by_topic` (`$1`: the page size).
pub(crate) static SELECT_DEVICES_BY_TOPIC_FIRST: LazyLock<String> =
    LazyLock::new(|| format!("{} ORDER BY topic, udid LIMIT $1", *SELECT_DEVICES));

/// The page of devices after `(topic $1, UDID $2)` by tenant (`$3`: the page size).
pub(crate) static SELECT_DEVICES_BY_TOPIC_AFTER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE (topic, udid) > ($1, $2) ORDER BY topic, udid LIMIT $3",
        *SELECT_DEVICES
    )
});

/// The first page of topic `$1`'s devices (`$2`: the page size), through `devices_by_topic`.
pub(crate) static SELECT_TOPIC_DEVICES_FIRST: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE topic = $1 ORDER BY udid LIMIT $2",
        *SELECT_DEVICES
    )
});

/// The page of topic `$1`'s devices after UDID `$2` (`$3`: the page size).
pub(crate) static SELECT_TOPIC_DEVICES_AFTER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{} WHERE topic = $1 AND udid > $2 ORDER BY udid LIMIT $3",
        *SELECT_DEVICES
    )
});

/// A declared write's statement in PostgreSQL's dialect, rendered at first use.
pub(crate) struct Statement {
    pub(crate) write: &'static DeviceWrite,
    sql: LazyLock<String>,
    /// The same write for many devices at once (`$1`: an array of UDIDs), for writes that
    /// change existing devices only; `RETURNING udid` names those it changed.
    many: LazyLock<Option<String>>,
}

macro_rules! statement {
    ($name:ident = $write:path) => {
        pub(crate) static $name: Statement = Statement {
            write: &$write,
            sql: LazyLock::new(|| $write.sql(Dialect::Postgres)),
            many: LazyLock::new(|| many_sql(&$write)),
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

/// [`DeviceWrite::sql`] of an update, applied to every device whose UDID is in the array
/// `$1`: one statement for a chunk of devices that get the same values.
pub(crate) fn many_sql(write: &DeviceWrite) -> Option<String> {
    if write.creates {
        return None;
    }
    let one = write.sql(Dialect::Postgres);
    let head = one.strip_suffix(" WHERE udid = $1")?;
    Some(format!(
        "{head} WHERE udid = ANY($1::text[]) RETURNING udid"
    ))
}

impl Statement {
    /// The statement, prepared on this connection, for pipelining; bind
    /// [`DeviceWrite::values`] of the write.
    pub(crate) async fn prepare(
        &self,
        c: &ClientWrapper,
        op: &'static str,
    ) -> Result<tokio_postgres::Statement, StoreError> {
        prepare(c, op, &self.sql).await
    }

    /// Merges `fresh` (the rule's result on a fresh device) into the stored row: the rows
    /// changed (0: an update of an unknown device).
    pub(crate) async fn run(
        &self,
        c: &ClientWrapper,
        op: &'static str,
        fresh: &Device,
    ) -> Result<u64, StoreError> {
        let values = self.write.values(fresh);
        let binds: Vec<Bind<'_>> = values.iter().map(Bind).collect();
        let params: Vec<Param<'_>> = binds.iter().map(|b| b as Param<'_>).collect();
        let stmt = c.prepare_cached(&self.sql).await.map_err(pg_err(op))?;
        c.execute(&stmt, &params).await.map_err(pg_err(op))
    }

    /// [`Statement::run`] for every device of `udids` with the values of `fresh` (whose own
    /// UDID is not used): the UDIDs of the devices changed.
    pub(crate) async fn run_many(
        &self,
        c: &ClientWrapper,
        op: &'static str,
        udids: &[&str],
        fresh: &Device,
    ) -> Result<Vec<String>, StoreError> {
        let Some(sql) = self.many.as_deref() else {
            return Err(StoreError::Database {
                op,
                detail: format!("{} has no form for many devices", self.write.name),
            });
        };
        let values = self.write.values(fresh);
        let binds: Vec<Bind<'_>> = values.iter().skip(1).map(Bind).collect();
        let mut params: Vec<Param<'_>> = vec![&udids];
        params.extend(binds.iter().map(|b| b as Param<'_>));
        let rows = query(c, op, sql, &params).await?;
        rows.iter().map(|r| get::<String>(r, 0, op)).collect()
    }
}

fn opt_ts(row: &Row, i: usize, op: &'static str) -> Result<Option<OffsetDateTime>, StoreError> {
    Ok(get::<Option<i64>>(row, i, op)?.map(from_ms))
}

/// Reads one [`SELECT_DEVICES`] row (secrets as stored: sealed).
pub(crate) fn device_from_row(row: &Row) -> Result<Device, StoreError> {
    const OP: &str = "read device";
    let text = |i| get::<Option<String>>(row, i, OP);
    let bytes = |i| get::<Option<Vec<u8>>>(row, i, OP);
    let mut d = Device::new(get::<String>(row, 0, OP)?);
    d.info.device_name = text(1)?;
    d.info.model = text(2)?;
    d.info.model_name = text(3)?;
    d.info.product_name = text(4)?;
    d.info.os_version = text(5)?;
    d.info.build_version = text(6)?;
    d.info.serial_number = text(7)?;
    d.info.imei = text(8)?;
    d.info.meid = text(9)?;
    d.info.phone_number = text(10)?;
    d.topic = text(11)?.filter(|t| !t.is_empty());
    d.token = text(12)?;
    d.push_magic = text(13)?;
    d.unlock_token = bytes(14)?.map(Secret::new);
    d.bootstrap_token = bytes(15)?.map(Secret::new);
    d.awaiting_configuration = get(row, 16, OP)?;
    d.authenticated_at = opt_ts(row, 17, OP)?;
    d.enrolled_at = opt_ts(row, 18, OP)?;
    d.token_updated_at = opt_ts(row, 19, OP)?;
    d.last_seen_at = opt_ts(row, 20, OP)?;
    d.checked_out_at = opt_ts(row, 21, OP)?;
    d.info_collected_at = opt_ts(row, 22, OP)?;
    d.last_push_at = opt_ts(row, 23, OP)?;
    let kind = text(24)?;
    let reason = text(25)?;
    let unregistered_ms: Option<i64> = get(row, 26, OP)?;
    d.push_outcome_at = opt_ts(row, 27, OP)?;
    d.last_report_at = opt_ts(row, 28, OP)?;
    d.first_report_after_push_at = opt_ts(row, 29, OP)?;
    d.push_outcome = push_outcome(&d.udid, kind, reason, unregistered_ms)?;
    d.identity = match hash_column(&d.udid, "identity_sha256", bytes(30)?)? {
        None => None,
        Some(sha256) => Some(BoundIdentity {
            sha256,
            subject: text(31)?.unwrap_or_default(),
            serial: text(32)?.unwrap_or_default(),
            not_after: from_ms(get::<Option<i64>>(row, 33, OP)?.unwrap_or(0)),
            bound_at: from_ms(get::<Option<i64>>(row, 34, OP)?.unwrap_or(0)),
            replaced_sha256: hash_column(&d.udid, "identity_replaced_sha256", bytes(35)?)?,
        }),
    };
    d.awaiting_token_update = get(row, 36, OP)?;
    Ok(d)
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

pub(crate) async fn load_device(
    c: &ClientWrapper,
    udid: &str,
) -> Result<Option<Device>, StoreError> {
    query_opt(c, "read device", &SELECT_DEVICE, &[&udid])
        .await?
        .map(|row| device_from_row(&row))
        .transpose()
}

pub(crate) async fn require_device(c: &ClientWrapper, udid: &str) -> Result<Device, StoreError> {
    load_device(c, udid)
        .await?
        .ok_or_else(|| StoreError::UnknownDevice { udid: udid.into() })
}

/// Writes the whole device as given (`writes::SAVE`).
pub(crate) async fn save_device(c: &ClientWrapper, d: &Device) -> Result<(), StoreError> {
    SAVE.run(c, "write device", d).await.map(drop)
}

/// `logic::authenticate` on the stored row without reading it, as `writes::AUTHENTICATE`
/// declares, and the old enrollment's queue dropped, in one round trip (the two statements
/// pipelined). With an identity, one read first: the device's binding (to return it) and the
/// device the certificate is bound to, so that a certificate of another device is refused
/// before anything is written (a failed statement would abort the whole transaction).
pub(crate) async fn authenticate_and_drop_queue(
    c: &ClientWrapper,
    msg: &Authenticate,
    identity: Option<&BoundIdentity>,
    at: OffsetDateTime,
) -> Result<Option<[u8; 32]>, StoreError> {
    const OP: &str = "read device";
    let mut previous = None;
    if let Some(id) = identity {
        let sha = id.sha256.as_slice();
        let rows = query(
            c,
            OP,
            // Not `udid = $1 OR identity_sha256 = $2`: its plan, kept from when the table was
            // small, scans every device; each half of this one uses its index.
            "SELECT udid, identity_sha256 FROM devices WHERE udid = $1
             UNION ALL
             SELECT udid, identity_sha256 FROM devices WHERE identity_sha256 = $2 AND udid <> $1",
            &[&msg.udid, &sha],
        )
        .await?;
        for row in &rows {
            let udid: String = get(row, 0, OP)?;
            if udid == msg.udid {
                previous = hash_column(&udid, "identity_sha256", get(row, 1, OP)?)?;
            } else {
                return Err(StoreError::IdentityInUse { udid });
            }
        }
    }
    let mut d = Device::new(msg.udid.as_str());
    logic::authenticate(&mut d, msg, at);
    if let Some(id) = identity {
        logic::bind_identity(&mut d, id);
    }
    let upsert = AUTHENTICATE.prepare(c, "write device").await?;
    let drop = prepare(c, "drop queue", DROP_QUEUE).await?;
    let values = AUTHENTICATE.write.values(&d);
    let binds: Vec<Bind<'_>> = values.iter().map(Bind).collect();
    let params: Vec<Param<'_>> = binds.iter().map(|b| b as Param<'_>).collect();
    let written = tokio::try_join!(
        biased;
        async { c.execute(&upsert, &params).await.map_err(pg_err("write device")) },
        // A new enrollment: nothing queued for the old one may reach it.
        async { c.execute(&drop, &[&msg.udid]).await.map_err(pg_err("drop queue")) },
    );
    match written {
        Ok(_) => Ok(previous),
        // Another node bound the certificate between the check and the write.
        Err(StoreError::Database { detail, .. })
            if identity.is_some() && detail.contains("devices_by_identity") =>
        {
            Err(StoreError::IdentityInUse {
                udid: "(another device)".into(),
            })
        }
        Err(e) => Err(e),
    }
}

const DROP_QUEUE: &str = "DELETE FROM queue WHERE udid = $1";

/// Drops every command queued for the device.
pub(crate) async fn drop_queue(c: &ClientWrapper, udid: &str) -> Result<(), StoreError> {
    exec(
        c,
        "drop queue",
        "DELETE FROM queue WHERE udid = $1",
        &[&udid],
    )
    .await
    .map(drop)
}

/// `logic::token_update` (device channel) on the stored row, reading only the columns that
/// decide re-enrollment (`writes::TOKEN_UPDATE_READS`) and writing as `writes::TOKEN_UPDATE`
/// declares. Creates the device if unknown.
pub(crate) async fn upsert_for_token_update(
    c: &ClientWrapper,
    msg: &TokenUpdate,
    at: OffsetDateTime,
) -> Result<Enrollment, StoreError> {
    const OP: &str = "read device";
    let mut d = Device::new(msg.udid.as_str());
    let row = query_opt(
        c,
        OP,
        "SELECT enrolled_at, checked_out_at, token_updated_at, push_outcome, push_reason,
           push_unregistered_ms, push_outcome_at, last_seen_at, awaiting_token_update
         FROM devices WHERE udid = $1",
        &[&msg.udid],
    )
    .await?;
    if let Some(row) = row {
        d.enrolled_at = opt_ts(&row, 0, OP)?;
        d.checked_out_at = opt_ts(&row, 1, OP)?;
        d.token_updated_at = opt_ts(&row, 2, OP)?;
        d.push_outcome_at = opt_ts(&row, 6, OP)?;
        d.last_seen_at = opt_ts(&row, 7, OP)?;
        d.awaiting_token_update = get(&row, 8, OP)?;
        d.push_outcome = push_outcome(
            &d.udid,
            get(&row, 3, OP)?,
            get(&row, 4, OP)?,
            get(&row, 5, OP)?,
        )?;
    }
    let enrollment = logic::token_update(&mut d, msg, at);
    TOKEN_UPDATE.run(c, "write device", &d).await?;
    Ok(enrollment)
}

/// A command report, as `QueueStore::record_report` describes it, in two round trips of
/// pipelined statements:
/// 1. the columns `logic::report` decides on (`writes::REPORT_READS`), the device's expired
///    commands dropped, and the reported command ended (a final status) or marked (NotNow);
/// 2. the device written as `writes::REPORT` (or `REPORT_WITH_INFO`, when the report carries
///    device facts) declares, the result recorded with its RequestType and the oldest
///    results pruned, and the device's next command read.
///
/// Statements are sent in order and run in order: each sees what the ones before it did.
/// `report` holds what the rule reads (no raw dictionary, no error chain); `raw` is the
/// report as XML, for a result.
pub(crate) async fn record_report(
    c: &ClientWrapper,
    report: &Report,
    error_chain: &[ErrorChainItem],
    raw: Option<&[u8]>,
    at: OffsetDateTime,
) -> Result<ReportOutcome, StoreError> {
    const OP: &str = "record result";
    let udid = report.udid.as_str();
    let status = report.status;
    let at_ms = to_ms(at);
    let read = prepare(c, "read device", REPORT_READ).await?;
    let expire = prepare(c, "drop expired commands", DROP_EXPIRED).await?;
    let uuid = report
        .command_uuid
        .as_deref()
        .filter(|_| status != Status::Idle);
    let end = match uuid {
        Some(_) if status.is_final() => Some(prepare(c, OP, DEQUEUE).await?),
        Some(_) if status == Status::NotNow => Some(prepare(c, OP, MARK_NOT_NOW).await?),
        _ => None,
    };
    let uuid_param = uuid.unwrap_or_default();
    let (row, _, ended) = tokio::try_join!(
        biased;
        async { c.query_opt(&read, &[&udid]).await.map_err(pg_err("read device")) },
        async {
            c.execute(&expire, &[&udid, &at_ms])
                .await
                .map_err(pg_err("drop expired commands"))
        },
        async {
            match &end {
                Some(stmt) if status == Status::NotNow => c
                    .query_opt(stmt, &[&udid, &uuid_param, &at_ms])
                    .await
                    .map_err(pg_err(OP)),
                Some(stmt) => c
                    .query_opt(stmt, &[&udid, &uuid_param])
                    .await
                    .map_err(pg_err(OP)),
                None => Ok(None),
            }
        },
    )?;
    // An unknown device: what the statements beside the read did is undone with the write.
    let Some(row) = row else {
        return Err(StoreError::UnknownDevice { udid: udid.into() });
    };
    let mut d = Device::new(udid);
    d.last_seen_at = opt_ts(&row, 0, "read device")?;
    d.last_report_at = opt_ts(&row, 1, "read device")?;
    d.last_push_at = opt_ts(&row, 2, "read device")?;
    d.first_report_after_push_at = opt_ts(&row, 3, "read device")?;
    // `d.info` starts empty, so after the merge it holds exactly the facts the report sent,
    // which `writes::REPORT_WITH_INFO` overlays on the stored ones.
    let (closed_push, info_updated) = logic::report(&mut d, report, at);
    let write = if info_updated {
        &REPORT_WITH_INFO
    } else {
        &REPORT
    };
    let update = write.prepare(c, "write device").await?;
    let values = write.write.values(&d);
    let binds: Vec<Bind<'_>> = values.iter().map(Bind).collect();
    let params: Vec<Param<'_>> = binds.iter().map(|b| b as Param<'_>).collect();
    let next = prepare(c, "read queue", &SELECT_NEXT_QUEUED).await?;
    let skip_not_now = status != Status::Idle;
    let mut out = ReportOutcome {
        closed_push,
        info_updated,
        ..ReportOutcome::default()
    };
    let Some(uuid) = uuid else {
        let (_, next) = tokio::try_join!(
            biased;
            async { c.execute(&update, &params).await.map_err(pg_err("write device")) },
            async {
                c.query_opt(&next, &[&udid, &skip_not_now, &at_ms])
                    .await
                    .map_err(pg_err("read queue"))
            },
        )?;
        out.next_command = Some(next.map(|r| queued_from_row(&r)).transpose()?);
        return Ok(out);
    };
    // The queue row carried the RequestType; a command not queued is looked up in the insert.
    let queued_type: Option<String> = ended.map(|r| get(&r, 0, OP)).transpose()?;
    if queued_type.is_some() {
        out.known_command = true;
        out.dequeued = status.is_final();
    }
    let chain = serde_json::to_string(error_chain).map_err(|e| StoreError::Corrupt {
        what: format!("error chain not serialisable: {e}"),
    })?;
    let raw = raw.unwrap_or_default();
    let kept = RESULTS_KEPT_PER_DEVICE as i64;
    let insert = prepare(c, "write result", INSERT_RESULT).await?;
    let prune = prepare(c, "prune results", PRUNE_RESULTS).await?;
    let (_, inserted, _, next) = tokio::try_join!(
        biased;
        async { c.execute(&update, &params).await.map_err(pg_err("write device")) },
        async {
            c.query_one(
                &insert,
                &[
                    &udid,
                    &uuid,
                    &queued_type,
                    &status.as_str(),
                    &chain,
                    &raw,
                    &at_ms,
                    &status.is_final(),
                ],
            )
            .await
            .map_err(pg_err("write result"))
        },
        async { c.execute(&prune, &[&udid, &kept]).await.map_err(pg_err("prune results")) },
        async {
            c.query_opt(&next, &[&udid, &skip_not_now, &at_ms])
                .await
                .map_err(pg_err("read queue"))
        },
    )?;
    out.request_type = get(&inserted, 0, "write result")?;
    out.next_command = Some(next.map(|r| queued_from_row(&r)).transpose()?);
    Ok(out)
}

/// The columns the rule reads, with the device's row locked: the transaction already holds
/// the lock (see `writer`), this keeps the write correct on its own.
const REPORT_READ: &str =
    "SELECT last_seen_at, last_report_at, last_push_at, first_report_after_push_at
     FROM devices WHERE udid = $1 FOR NO KEY UPDATE";

/// Drops the device's queued commands that expired by `$2` (unsent). Each of the device's
/// few queued rows looks its command up by key.
pub(crate) const DROP_EXPIRED: &str = "DELETE FROM queue WHERE udid = $1 AND EXISTS
       (SELECT 1 FROM commands
        WHERE commands.uuid = queue.uuid AND commands.expires_at IS NOT NULL
          AND commands.expires_at <= $2)";

pub(crate) const DEQUEUE: &str =
    "DELETE FROM queue WHERE udid = $1 AND uuid = $2 RETURNING request_type";

pub(crate) const MARK_NOT_NOW: &str =
    "UPDATE queue SET not_now_at = $3 WHERE udid = $1 AND uuid = $2 RETURNING request_type";

/// A result, with the RequestType of its command: `$3` when the queue row gave it, else the
/// stored command's (if any); returns that RequestType. A final answer (`$8`) for a command
/// not queued (`$3` null) that the device already has a result of this status for is the
/// same answer again: it is not inserted (`QueueStore::record_report`).
pub(crate) const INSERT_RESULT: &str = "WITH kind AS (
       SELECT COALESCE($3::text, (SELECT request_type FROM commands WHERE uuid = $2))
         AS request_type),
     inserted AS (
       INSERT INTO results (udid, uuid, request_type, status, error_chain, raw, at)
       SELECT $1, $2, kind.request_type, $4, $5, $6, $7 FROM kind
       WHERE $3::text IS NOT NULL OR NOT $8::boolean OR NOT EXISTS
         (SELECT 1 FROM results WHERE udid = $1 AND uuid = $2 AND status = $4)
       RETURNING 1)
     SELECT request_type FROM kind";

/// Keeps the device's newest [`RESULTS_KEPT_PER_DEVICE`] (`$2`) results.
pub(crate) const PRUNE_RESULTS: &str = "DELETE FROM results WHERE udid = $1 AND id <= (
     SELECT id FROM results WHERE udid = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)";

/// The fresh device a push attempt at `at` leaves (the same for every device).
pub(crate) fn push_attempt_values(at: OffsetDateTime) -> Device {
    let mut d = Device::new("");
    logic::push_attempt(&mut d, at);
    d
}

/// The fresh device a push outcome leaves (the same for every device with that outcome).
pub(crate) fn push_outcome_values(outcome: &PushOutcome, at: OffsetDateTime) -> Device {
    let mut d = Device::new("");
    logic::push_outcome(&mut d, outcome, at);
    d
}

/// A device's queue: `$1` UDID, `$2` skip NotNow, `$3` now (ms; expired commands are left
/// out — pass `i64::MIN` to list them all).
pub(crate) const SELECT_QUEUED: &str =
    "SELECT q.uuid, q.request_type, c.body, q.queued_at, q.not_now_at, c.expires_at
     FROM queue q JOIN commands c ON c.uuid = q.uuid
     WHERE q.udid = $1 AND (NOT $2 OR q.not_now_at IS NULL)
       AND (c.expires_at IS NULL OR c.expires_at > $3)
     ORDER BY q.id";

/// The device's next queued command: [`SELECT_QUEUED`]'s first row.
pub(crate) static SELECT_NEXT_QUEUED: LazyLock<String> =
    LazyLock::new(|| format!("{SELECT_QUEUED} LIMIT 1"));

pub(crate) fn queued_from_row(row: &Row) -> Result<QueuedCommand, StoreError> {
    const OP: &str = "read queue";
    Ok(QueuedCommand {
        uuid: get(row, 0, OP)?,
        request_type: get(row, 1, OP)?,
        body: get(row, 2, OP)?,
        queued_at: from_ms(get(row, 3, OP)?),
        not_now_at: opt_ts(row, 4, OP)?,
        expires_at: opt_ts(row, 5, OP)?,
    })
}

/// The device's next queued command at `at` (see `QueueStore::next_command`).
pub(crate) async fn next_queued(
    c: &ClientWrapper,
    udid: &str,
    skip_not_now: bool,
    at: OffsetDateTime,
) -> Result<Option<QueuedCommand>, StoreError> {
    let at = to_ms(at);
    query_opt(
        c,
        "read queue",
        &SELECT_NEXT_QUEUED,
        &[&udid, &skip_not_now, &at],
    )
    .await?
    .map(|r| queued_from_row(&r))
    .transpose()
}

pub(crate) fn result_from_row(row: &Row) -> Result<CommandResult, StoreError> {
    const OP: &str = "read results";
    let udid: String = get(row, 0, OP)?;
    let command_uuid: String = get(row, 1, OP)?;
    let status_text: String = get(row, 3, OP)?;
    let chain_text: String = get(row, 4, OP)?;
    let Ok(status) = status_text.parse::<Status>() else {
        return Err(StoreError::Corrupt {
            what: format!("result for {udid}/{command_uuid}: status {status_text:?}"),
        });
    };
    let error_chain: Vec<ErrorChainItem> =
        serde_json::from_str(&chain_text).map_err(|e| StoreError::Corrupt {
            what: format!("result for {udid}/{command_uuid}: error chain: {e}"),
        })?;
    Ok(CommandResult {
        udid,
        command_uuid,
        request_type: get(row, 2, OP)?,
        status,
        error_chain,
        raw: get(row, 5, OP)?,
        at: from_ms(get(row, 6, OP)?),
    })
}

pub(crate) fn user_from_row(row: &Row) -> Result<User, StoreError> {
    const OP: &str = "read users";
    Ok(User {
        udid: get(row, 0, OP)?,
        user_id: get(row, 1, OP)?,
        short_name: get(row, 2, OP)?,
        long_name: get(row, 3, OP)?,
        token: get(row, 4, OP)?,
        push_magic: get(row, 5, OP)?,
        updated_at: from_ms(get(row, 6, OP)?),
    })
}

pub(crate) async fn upsert_user(c: &ClientWrapper, u: &User) -> Result<(), StoreError> {
    let at = to_ms(u.updated_at);
    exec(
        c,
        "write user",
        "INSERT INTO users (udid, user_id, short_name, long_name, token, push_magic, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (udid, user_id) DO UPDATE SET short_name = excluded.short_name,
           long_name = excluded.long_name, token = excluded.token,
           push_magic = excluded.push_magic, updated_at = excluded.updated_at",
        &[
            &u.udid,
            &u.user_id,
            &u.short_name,
            &u.long_name,
            &u.token,
            &u.push_magic,
            &at,
        ],
    )
    .await
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_render_for_many_devices_and_upserts_do_not() {
        let many = many_sql(&writes::PUSH_ATTEMPT).unwrap();
        assert!(many.starts_with("UPDATE devices SET "), "{many}");
        assert!(
            many.ends_with(" WHERE udid = ANY($1::text[]) RETURNING udid"),
            "{many}"
        );
        assert!(!many.contains("?"), "PostgreSQL placeholders only: {many}");
        assert!(many_sql(&writes::PUSH_OUTCOME).is_some());
        assert!(many_sql(&writes::AUTHENTICATE).is_none());
        assert!(many_sql(&writes::SAVE).is_none());
    }

    #[test]
    fn every_declared_write_renders_with_dollar_placeholders() {
        for w in writes::ALL {
            let sql = w.sql(Dialect::Postgres);
            assert!(sql.contains("$1"), "{sql}");
            assert!(!sql.contains("?1"), "{sql}");
        }
    }

    #[test]
    fn values_bind_only_to_their_own_kind_of_column() {
        let mut out = BytesMut::new();
        let int = Value::Int(5);
        assert!(Bind(&int).to_sql(&Type::INT8, &mut out).is_ok());
        assert!(Bind(&int).to_sql(&Type::TEXT, &mut out).is_err());
        let text = Value::Text("a".into());
        assert!(Bind(&text).to_sql(&Type::TEXT, &mut out).is_ok());
        assert!(Bind(&text).to_sql(&Type::BYTEA, &mut out).is_err());
        let flag = Value::Bool(true);
        assert!(Bind(&flag).to_sql(&Type::BOOL, &mut out).is_ok());
        let bytes = Value::Bytes(b"x");
        assert!(Bind(&bytes).to_sql(&Type::BYTEA, &mut out).is_ok());
        assert!(matches!(
            Bind(&Value::Null).to_sql(&Type::INT8, &mut out),
            Ok(IsNull::Yes)
        ));
    }
}
