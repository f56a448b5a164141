//! [`SqliteStore`]: the durable store. SQLite in WAL mode; one writer thread with group
//! commit; reads on their own connections via `spawn_blocking`.
//!
//! Durability: `synchronous = FULL`. In WAL mode, `NORMAL` only syncs the WAL at checkpoints:
//! a commit survives a process crash (`kill -9`) but can be lost on power failure or an OS
//! crash. A check-in is answered 200 only after it is durable, so every commit syncs the WAL
//! (`FULL`); group commit makes that one fsync per batch of concurrent writes, not per write.

/// The topic of device `?1`, as SQL: the first column of the queue's, the results' and the
/// refresh runs' keys (schema version 12), so a device's rows are found, and written, among
/// its tenant's. One lookup in the UDID index, which holds the topic.
macro_rules! device_topic {
    () => {
        "(SELECT topic FROM devices WHERE udid = ?1)"
    };
}

mod cluster;
mod enrollment;
mod pushcerts;
mod rows;
mod schema;
mod settings;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use dashmap::DashMap;
use rusqlite::{params, Connection, OptionalExtension};
use time::OffsetDateTime;

use self::rows::{
    device_exists, device_from_row, drop_queue, has_queue, has_result, insert_result, load_device,
    load_identity_hash, queued_from_row, require_device, result_from_row, save_device,
    update_for_report, update_push_attempt, update_push_outcome, upsert_for_authenticate,
    upsert_for_token_update, upsert_user, user_from_row, SELECT_DEVICES, SELECT_DEVICES_AFTER,
    SELECT_DEVICES_BY_TOPIC_AFTER, SELECT_DEVICES_BY_TOPIC_FIRST, SELECT_DEVICES_FIRST,
    SELECT_NEXT_QUEUED, SELECT_QUEUED, SELECT_TOPIC_DEVICES_AFTER, SELECT_TOPIC_DEVICES_FIRST,
};
use self::writer::{Counters, Job, PendingWrite, Undo};
use magicpush_mdm::{Authenticate, Command, Report, Secret, Status, TokenUpdate};
use magicpush_store::dedup;
use magicpush_store::prelude::*;
use magicpush_store::secrets::{is_sealed, SecretKey};
use magicpush_store::{apply_contact, to_ms, truncate_ms};
use magicpush_store::{
    logic, BoundIdentity, CommandResult, Device, EnqueueMode, EnqueueOutcome, Enrollment,
    PushOutcome, QueuedCommand, ReportOutcome, StoreError, StoreFuture, User,
};

/// The database file's name under `--data-dir`.
pub const DB_FILE_NAME: &str = "magicpush.sqlite3";

pub(crate) fn db_err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |e| StoreError::Database {
        op,
        detail: e.to_string(),
    }
}

/// Tuning for [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Most writes applied in one transaction. Default 1024.
    pub max_batch: usize,
    /// Encrypts the secret columns (see [`magicpush_store::secrets`]). A database
    /// that was encrypted cannot be opened without its key. Default none.
    pub secrets_key: Option<Arc<SecretKey>>,
    /// Writes waiting for the writer at most. When it is full, a device's write is refused at
    /// once ([`StoreError::Overloaded`]: the device gets 503 with `Retry-After` and retries)
    /// and the server's own writes (refresh bookkeeping, admin changes) wait for room.
    /// Default 8192 (eight full transactions).
    pub max_queued_writes: usize,
    /// Read connections open at most (kept open once opened); a read waits for a free one
    /// when all are busy. Default 8. Opening a connection per read instead costs a schema
    /// parse each time, which dominated the server's CPU under many concurrent reports.
    pub max_readers: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            secrets_key: None,
            max_batch: 1024,
            max_queued_writes: 8192,
            max_readers: 8,
        }
    }
}

struct ReadPool {
    path: PathBuf,
    state: Mutex<ReadPoolState>,
    freed: Condvar,
    max: usize,
}

#[derive(Default)]
struct ReadPoolState {
    idle: Vec<Connection>,
    open: usize,
}

impl ReadPool {
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let lease = ReadLease {
            pool: self,
            conn: Some(self.take()?),
        };
        // The lease holds its connection until it is dropped, after `f`.
        let conn = lease.conn.as_ref().ok_or(StoreError::Closed)?;
        f(conn)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ReadPoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An idle connection, a new one while fewer than `max` are open, or the next one freed.
    fn take(&self) -> Result<Connection, StoreError> {
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(conn);
            }
            if state.open < self.max {
                state.open += 1;
                drop(state);
                return open_reader(&self.path).inspect_err(|_| {
                    self.lock().open -= 1;
                    self.freed.notify_one();
                });
            }
            state = self.freed.wait(state).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A connection borrowed from the pool; returned (or, after a panic, closed) on drop.
struct ReadLease<'a> {
    pool: &'a ReadPool,
    conn: Option<Connection>,
}

impl Drop for ReadLease<'_> {
    fn drop(&mut self) {
        let mut state = self.pool.lock();
        match self.conn.take() {
            Some(conn) if !std::thread::panicking() => state.idle.push(conn),
            _ => state.open -= 1,
        }
        drop(state);
        self.pool.freed.notify_one();
    }
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(db_err("open reader"))?;
    conn.execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = ON;")
        .map_err(db_err("open reader"))?;
    Ok(conn)
}

/// Checks the key against the database (or records it, encrypting what was stored in the
/// clear before). A database that was encrypted refuses to open without its key or with
/// another one.
fn prepare_secrets(conn: &mut Connection, key: Option<&SecretKey>) -> Result<(), StoreError> {
    let check: Option<Vec<u8>> = conn
        .query_row(
            "SELECT value FROM meta WHERE name = 'secrets_check'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(db_err("read secrets check"))?;
    match (key, check) {
        (None, None) => Ok(()),
        (None, Some(_)) => Err(StoreError::SecretsKey(
            "the database's secrets (UnlockTokens, BootstrapTokens, push certificate keys) are encrypted: give the --secrets-key-file they were written with".into(),
        )),
        (Some(key), Some(check)) if key.matches_check(&check) => Ok(()),
        (Some(_), Some(_)) => Err(StoreError::SecretsKey(
            "--secrets-key-file is not the key this database's secrets were encrypted with".into(),
        )),
        (Some(key), None) => {
            let tx = conn.transaction().map_err(db_err("encrypt secrets"))?;
            // (udid, unlock_token, bootstrap_token) of every device holding a secret.
            type SecretRow = (String, Option<Vec<u8>>, Option<Vec<u8>>);
            let rows: Vec<SecretRow> = {
                let mut stmt = tx
                    .prepare(
                        "SELECT udid, unlock_token, bootstrap_token FROM devices
                         WHERE unlock_token IS NOT NULL OR bootstrap_token IS NOT NULL",
                    )
                    .map_err(db_err("encrypt secrets"))?;
                let rows = stmt
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                    .map_err(db_err("encrypt secrets"))?;
                rows.collect::<Result<_, _>>()
                    .map_err(db_err("encrypt secrets"))?
            };
            let seal = |column: &str, udid: &str, v: Option<Vec<u8>>| {
                v.map(|v| {
                    if is_sealed(&v) {
                        Ok(v)
                    } else {
                        key.seal(column, udid, &v)
                    }
                })
                .transpose()
            };
            for (udid, unlock, bootstrap) in rows {
                let unlock = seal("unlock_token", &udid, unlock)?;
                let bootstrap = seal("bootstrap_token", &udid, bootstrap)?;
                tx.execute(
                    "UPDATE devices SET unlock_token = ?2, bootstrap_token = ?3 WHERE udid = ?1",
                    params![udid, unlock, bootstrap],
                )
                .map_err(db_err("encrypt secrets"))?;
            }
            // The push certificates' private keys: (table, name column, sealing column name).
            for (table, id, column) in [
                ("pushcert_certificates", "topic", pushcerts::CERT_KEY),
                ("pushcert_requests", "id", pushcerts::REQUEST_KEY),
                // One row, id 1: its sealing name is "1".
                ("device_ca", "CAST(id AS TEXT)", enrollment::CA_KEY.0),
            ] {
                let rows: Vec<(String, Vec<u8>)> = {
                    let mut stmt = tx
                        .prepare(&format!("SELECT {id}, key FROM {table}"))
                        .map_err(db_err("encrypt secrets"))?;
                    let rows = stmt
                        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                        .map_err(db_err("encrypt secrets"))?;
                    rows.collect::<Result<_, _>>()
                        .map_err(db_err("encrypt secrets"))?
                };
                for (name, value) in rows {
                    if let Some(sealed) = seal(column, &name, Some(value))? {
                        tx.execute(
                            &format!("UPDATE {table} SET key = ?2 WHERE {id} = ?1"),
                            params![name, sealed],
                        )
                        .map_err(db_err("encrypt secrets"))?;
                    }
                }
            }
            tx.execute(
                "INSERT INTO meta (name, value) VALUES ('secrets_check', ?1)",
                [key.check_value()?],
            )
            .map_err(db_err("encrypt secrets"))?;
            tx.commit().map_err(db_err("encrypt secrets"))
        }
    }
}

/// The device's next queued command at `at` (see [`QueueStore::next_command`]).
fn next_queued(
    c: &Connection,
    udid: &str,
    skip_not_now: bool,
    at: OffsetDateTime,
) -> Result<Option<QueuedCommand>, StoreError> {
    c.prepare_cached(&SELECT_NEXT_QUEUED)
        .and_then(|mut s| {
            s.query_row(params![udid, skip_not_now, to_ms(at)], queued_from_row)
                .optional()
        })
        .map_err(db_err("read queue"))
}

/// [`drop_expired`]'s statement: each of the device's few queued rows looks its command up
/// by key. (Written as `uuid IN (SELECT uuid FROM commands WHERE
/// expires_at <= ?)`, SQLite scanned every command ever stored on every report: 3.6 ms a
/// report with 100,000 commands, against 4 µs now.)
const DROP_EXPIRED: &str = concat!(
    "DELETE FROM queue WHERE topic = ",
    device_topic!(),
    " AND udid = ?1 AND EXISTS
       (SELECT 1 FROM commands
        WHERE commands.uuid = queue.uuid AND commands.expires_at IS NOT NULL
          AND commands.expires_at <= ?2)"
);

/// Drops the device's queued commands that expired by `at` (unsent).
fn drop_expired(c: &Connection, udid: &str, at: OffsetDateTime) -> Result<(), StoreError> {
    c.prepare_cached(DROP_EXPIRED)
        .and_then(|mut s| s.execute(params![udid, to_ms(at)]))
        .map(drop)
        .map_err(db_err("drop expired commands"))
}

/// Whether device `?1` has a command of RequestType `?2` queued.
const HAS_QUEUED_TYPE: &str = concat!(
    "SELECT 1 FROM queue WHERE topic = ",
    device_topic!(),
    " AND udid = ?1 AND request_type = ?2"
);

const DEQUEUE: &str = concat!(
    "DELETE FROM queue WHERE topic = ",
    device_topic!(),
    " AND udid = ?1 AND uuid = ?2 RETURNING request_type"
);

/// Removes command `uuid` from the device's queue; its RequestType if it was queued.
fn dequeue(c: &Connection, udid: &str, uuid: &str) -> Result<Option<String>, StoreError> {
    c.prepare_cached(DEQUEUE)
        .and_then(|mut s| s.query_row(params![udid, uuid], |r| r.get(0)).optional())
        .map_err(db_err("record result"))
}

const MARK_NOT_NOW: &str = concat!(
    "UPDATE queue SET not_now_at = ?3 WHERE topic = ",
    device_topic!(),
    " AND udid = ?1 AND uuid = ?2 RETURNING request_type"
);

/// Marks command `uuid` answered NotNow; its RequestType if it is queued.
fn mark_not_now(
    c: &Connection,
    udid: &str,
    uuid: &str,
    at: OffsetDateTime,
) -> Result<Option<String>, StoreError> {
    c.prepare_cached(MARK_NOT_NOW)
        .and_then(|mut s| {
            s.query_row(params![udid, uuid, to_ms(at)], |r| r.get(0))
                .optional()
        })
        .map_err(db_err("record result"))
}

const REQUEST_TYPE_OF: &str = "SELECT request_type FROM commands WHERE uuid = ?1";

/// The RequestType of a stored command, queued for this device or not.
fn stored_request_type(c: &Connection, uuid: &str) -> Result<Option<String>, StoreError> {
    c.prepare_cached(REQUEST_TYPE_OF)
        .and_then(|mut s| s.query_row([uuid], |r| r.get(0)).optional())
        .map_err(db_err("record result"))
}

/// The writer connection's page cache, in KiB.
const WRITER_CACHE_KIB: u32 = 24 * 1024;

/// WAL pages after which a commit checkpoints (SQLite's default is 1000). The checkpoint runs
/// on the writer thread, so every write waits for it; a longer WAL copies a page written many
/// times in a burst (a device row, an index page) once instead of once per 1000 pages.
///
/// 32,000 pages (a WAL of up to 128 MB on disk): a large fleet's enrollment writes rows all
/// over a table too big to repeat pages within a shorter WAL. At 1,000,000 devices an 8,000-page
/// WAL enrolled 10,800 devices/s, this one 13,300/s (18,000/s at 50,000 either way); the whole
/// 1M fleet took 152 s instead of 173 s (BENCHMARKS.md §12, "Settled choices").
const WAL_AUTOCHECKPOINT_PAGES: u32 = 32000;

/// Prepared statements the writer keeps. rusqlite's default (16) is fewer than the writer
/// uses, so the least recently used were parsed again and again under a mixed load.
const WRITER_STATEMENTS: usize = 64;

fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let mut conn = Connection::open(path).map_err(db_err("open"))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(db_err("enable WAL"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database {
            op: "enable WAL",
            detail: format!("journal mode is {mode:?}, not wal"),
        });
    }
    // The writer's page cache holds the hot b-tree pages (devices, queue, indexes) of a large
    // fleet: with SQLite's default 2 MB, most writes of a refresh re-read pages from the OS.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = FULL; PRAGMA foreign_keys = OFF; PRAGMA busy_timeout = 5000;
         PRAGMA cache_size = -{WRITER_CACHE_KIB};
         PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES};"
    ))
    .map_err(db_err("open"))?;
    // Migrations run with foreign keys off (see `schema::migrate`); writes run with them on.
    schema::migrate(&mut conn)?;
    conn.execute_batch("PRAGMA foreign_keys = ON;")
        .map_err(db_err("open"))?;
    conn.set_prepared_statement_cache_capacity(WRITER_STATEMENTS);
    Ok(conn)
}

/// The durable [`Store`]. Opening is blocking (do it before serving); every operation after
/// that runs off the async runtime and must be called from within a Tokio runtime.
///
/// How long waiting writes may see no commit before the store calls itself wedged.
pub const WEDGED_AFTER: std::time::Duration = std::time::Duration::from_secs(30);

/// What a write does when the writer's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Fail with [`StoreError::Overloaded`] (a device retries).
    Shed,
    /// Wait for room (the server's own work).
    Wait,
}

/// Dropping the store finishes the queued writes and joins the writer thread.
pub struct SqliteStore {
    path: PathBuf,
    writes: Option<mpsc::SyncSender<Box<dyn PendingWrite>>>,
    writer: Option<JoinHandle<()>>,
    readers: Arc<ReadPool>,
    counters: Arc<Counters>,
    queue_capacity: usize,
    secrets: Option<Arc<SecretKey>>,
    /// Identity bindings seen so far (UDID → certificate hash or none), so that the check on
    /// every authenticated request is no database read. Filled from reads (only where the
    /// writer has not put a value first) and by the writer after each commit that changes a
    /// binding, in commit order: it never holds a value older than the database's.
    bindings: Arc<DashMap<String, Option<[u8; 32]>>>,
    /// Nodes and scheduled jobs, in memory: one process serves a data directory (its lock
    /// refuses a second), so they concern only this process. Refresh runs are in the
    /// database (see `cluster.rs`).
    cluster: magicpush_store::cluster::ClusterMemory,
}

/// How well group commit is batching: `writes / commits` is the mean batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Transactions committed (or attempted) by the writer.
    pub commits: u64,
    /// Writes applied in them.
    pub writes: u64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) `data_dir/magicpush.sqlite3`, creating `data_dir` too.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(data_dir, SqliteOptions::default())
    }

    /// [`SqliteStore::open`] with options (a secrets key, limits).
    pub fn open_with(data_dir: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        magicpush_store::private::private_dir(data_dir).map_err(|e| StoreError::Database {
            op: "create data directory",
            detail: format!("{}: {e}", data_dir.display()),
        })?;
        Self::open_file(&data_dir.join(DB_FILE_NAME), options)
    }

    /// Opens (creating if needed) the database file at `path`, migrating its schema. The
    /// database and its WAL and shared-memory files are mode 0600 (they hold unlock and
    /// bootstrap tokens): the file is created with that mode before SQLite opens it, and
    /// SQLite gives its `-wal` and `-shm` files the database's mode.
    pub fn open_file(path: &Path, options: SqliteOptions) -> Result<Self, StoreError> {
        let private = |p: &Path, r: std::io::Result<()>| {
            r.map_err(|e| StoreError::Database {
                op: "make the database private",
                detail: format!("{}: {e}", p.display()),
            })
        };
        private(path, magicpush_store::private::create_private_file(path))?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            let side = PathBuf::from(side);
            private(&side, magicpush_store::private::restrict_file(&side))?;
        }
        let mut conn = open_writer(path)?;
        prepare_secrets(&mut conn, options.secrets_key.as_deref())?;
        let (tx, rx) = mpsc::sync_channel(options.max_queued_writes.max(1));
        let max_batch = options.max_batch.max(1);
        let counters = Arc::new(Counters::default());
        let writer_counters = Arc::clone(&counters);
        let reopen_path = path.to_owned();
        let writer = std::thread::Builder::new()
            .name("magicpush-store-writer".into())
            .spawn(move || {
                let reopen = move || open_writer(&reopen_path);
                writer::run(conn, rx, max_batch, writer_counters, &reopen)
            })
            .map_err(|e| StoreError::Database {
                op: "start writer thread",
                detail: e.to_string(),
            })?;
        Ok(SqliteStore {
            path: path.to_owned(),
            writes: Some(tx),
            writer: Some(writer),
            readers: Arc::new(ReadPool {
                path: path.to_owned(),
                state: Mutex::new(ReadPoolState::default()),
                freed: Condvar::new(),
                max: options.max_readers.max(1),
            }),
            counters,
            queue_capacity: options.max_queued_writes.max(1),
            secrets: options.secrets_key.clone(),
            bindings: Arc::new(DashMap::new()),
            cluster: Default::default(),
        })
    }

    /// Commits and writes so far.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write for the writer thread; it runs in its own savepoint. Waits for room
    /// when the queue is full.
    fn write<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Undo::BySavepoint, work, None, Admission::Wait)
    }

    /// [`SqliteStore::write`] for a device's request: refused with
    /// [`StoreError::Overloaded`] instead of waiting when the queue is full.
    fn device_write<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Undo::BySavepoint, work, None, Admission::Shed)
    }

    /// Queues a write that changes the database with at most one statement and fails only
    /// before or in it (see [`Undo::ByStatement`]): it runs without a savepoint.
    fn write_one_statement<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Undo::ByStatement, work, None, Admission::Wait)
    }

    /// [`SqliteStore::write_one_statement`] for a device's request (see
    /// [`SqliteStore::device_write`]).
    fn device_write_one_statement<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(Undo::ByStatement, work, None, Admission::Shed)
    }

    fn submit<T, F>(
        &self,
        undo: Undo,
        work: F,
        after_commit: Option<writer::AfterCommit<T>>,
        admission: Admission,
    ) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, rx) = Job::submit_then(undo, work, after_commit);
        let Some(tx) = self.writes.clone() else {
            return Box::pin(std::future::ready(Err(StoreError::Closed)));
        };
        let counters = Arc::clone(&self.counters);
        // Counted before it is sent, so the writer's count of answered writes never passes
        // it. Handed to the writer now, when there is room: writes created together share a
        // commit. Only a full queue makes the future wait (or refuse).
        counters.queued.fetch_add(1, Ordering::Relaxed);
        let unsent = || counters.queued.fetch_sub(1, Ordering::Relaxed);
        let waiting = match tx.try_send(job) {
            Ok(()) => None,
            Err(mpsc::TrySendError::Disconnected(_)) => {
                unsent();
                return Box::pin(std::future::ready(Err(StoreError::Closed)));
            }
            Err(mpsc::TrySendError::Full(job)) => match admission {
                Admission::Shed => {
                    unsent();
                    metrics::counter!("magicpush_store_writes_shed_total").increment(1);
                    let queued = self.queue_capacity;
                    return Box::pin(std::future::ready(Err(StoreError::Overloaded { queued })));
                }
                Admission::Wait => Some(job),
            },
        };
        Box::pin(async move {
            if let Some(mut job) = waiting {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    match tx.try_send(job) {
                        Ok(()) => break,
                        Err(mpsc::TrySendError::Disconnected(_)) => {
                            counters.queued.fetch_sub(1, Ordering::Relaxed);
                            return Err(StoreError::Closed);
                        }
                        Err(mpsc::TrySendError::Full(back)) => job = back,
                    }
                }
            }
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// `secret` as stored in `column` of `udid` (sealed when a key is configured).
    fn seal(&self, column: &str, udid: &str, secret: Secret) -> Result<Secret, StoreError> {
        match &self.secrets {
            Some(key) => Ok(Secret::new(key.seal(column, udid, secret.expose())?)),
            None => Ok(secret),
        }
    }

    /// A stored secret as the caller sees it.
    fn unseal(
        key: Option<&SecretKey>,
        column: &str,
        udid: &str,
        stored: Secret,
    ) -> Result<Secret, StoreError> {
        match key {
            Some(key) => Ok(Secret::new(key.open(column, udid, stored.expose())?)),
            None => Ok(stored),
        }
    }

    /// A device read from the database with its secrets decrypted.
    fn unseal_device(key: Option<&SecretKey>, mut d: Device) -> Result<Device, StoreError> {
        if key.is_some() {
            d.unlock_token = d
                .unlock_token
                .map(|t| Self::unseal(key, "unlock_token", &d.udid, t))
                .transpose()?;
            d.bootstrap_token = d
                .bootstrap_token
                .map(|t| Self::unseal(key, "bootstrap_token", &d.udid, t))
                .transpose()?;
        }
        Ok(d)
    }

    /// Whether the writer is alive and making progress: `Err` once its thread has ended, or
    /// while writes have waited [`WEDGED_AFTER`] without a commit.
    fn writer_health(&self) -> Result<(), StoreError> {
        if self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            return Err(StoreError::Closed);
        }
        let queued = self.counters.queued.load(Ordering::Relaxed);
        let stalled = self.counters.since_progress();
        if queued > 0 && stalled >= WEDGED_AFTER {
            return Err(StoreError::Database {
                op: "writer",
                detail: format!(
                    "{queued} writes waiting and no commit for {}s",
                    stalled.as_secs()
                ),
            });
        }
        Ok(())
    }

    fn read<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let pool = Arc::clone(&self.readers);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || pool.with(work))
                .await
                .map_err(|e| StoreError::Database {
                    op: "read",
                    detail: format!("read task failed: {e}"),
                })?
        })
    }

    fn read_devices(&self, filter: &'static str) -> StoreFuture<'static, Vec<Device>> {
        let key = self.secrets.clone();
        self.read(move |c| {
            let sql = format!("{} {filter} ORDER BY udid", *SELECT_DEVICES);
            let mut stmt = c.prepare_cached(&sql).map_err(db_err("read devices"))?;
            let rows = stmt
                .query_map([], device_from_row)
                .map_err(db_err("read devices"))?;
            Self::collect_devices(rows, key.as_deref())
        })
    }

    /// One page of devices: `sql` with `params` bound, then the page size `limit`.
    fn device_page<const N: usize>(
        &self,
        sql: &'static str,
        params: [rusqlite::types::Value; N],
        limit: usize,
    ) -> StoreFuture<'_, Vec<Device>> {
        let key = self.secrets.clone();
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.read(move |c| {
            let mut stmt = c.prepare_cached(sql).map_err(db_err("read devices"))?;
            let params = params.into_iter().chain([limit.into()]);
            let rows = stmt
                .query_map(rusqlite::params_from_iter(params), device_from_row)
                .map_err(db_err("read devices"))?;
            Self::collect_devices(rows, key.as_deref())
        })
    }

    fn collect_devices(
        rows: impl Iterator<Item = rusqlite::Result<Result<Device, StoreError>>>,
        key: Option<&SecretKey>,
    ) -> Result<Vec<Device>, StoreError> {
        let mut out = Vec::new();
        for row in rows {
            let d = row.map_err(db_err("read devices"))??;
            out.push(Self::unseal_device(key, d)?);
        }
        Ok(out)
    }
}

/// A text parameter of a [`SqliteStore::device_page`] statement.
fn text(s: &str) -> rusqlite::types::Value {
    rusqlite::types::Value::Text(s.to_owned())
}

#[cfg(test)]
impl SqliteStore {
    /// `touch` with an owned UDID, for tests that spawn it.
    fn touch_owned(&self, udid: String) -> StoreFuture<'static, ()> {
        let at = truncate_ms(OffsetDateTime::now_utc());
        self.device_write(move |c| {
            let mut d = require_device(c, &udid)?;
            apply_contact(&mut d, at);
            save_device(c, &d)
        })
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.writes.take();
        if let Some(writer) = self.writer.take() {
            // The writer drains its channel, then exits; a panic there has already been
            // reported to the waiters as `Closed`.
            let _ = writer.join();
        }
    }
}

fn device_or_new(c: &Connection, udid: &str) -> Result<Device, StoreError> {
    Ok(load_device(c, udid)?.unwrap_or_else(|| Device::new(udid)))
}

impl CheckinStore for SqliteStore {
    fn authenticate<'a>(
        &'a self,
        msg: &'a Authenticate,
        identity: Option<&'a BoundIdentity>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<[u8; 32]>> {
        let (msg, identity, at) = (msg.clone(), identity.cloned(), truncate_ms(at));
        let after = identity.as_ref().map(|id| {
            let (bindings, udid, hash) = (Arc::clone(&self.bindings), msg.udid.clone(), id.sha256);
            Box::new(move |_: &Option<[u8; 32]>| {
                bindings.insert(udid, Some(hash));
            }) as writer::AfterCommit<Option<[u8; 32]>>
        });
        // One statement for a device with nothing queued (every first enrollment); a
        // re-Authenticate that must also drop the old enrollment's queue runs both in a
        // savepoint of its own, so that it lands whole or not at all.
        self.submit(
            Undo::ByStatement,
            move |c| {
                if !has_queue(c, &msg.udid)? {
                    return upsert_for_authenticate(c, &msg, identity.as_ref(), at);
                }
                c.execute_batch("SAVEPOINT authenticate")
                    .map_err(db_err("savepoint"))?;
                let done = upsert_for_authenticate(c, &msg, identity.as_ref(), at)
                    .and_then(|previous| drop_queue(c, &msg.udid).map(|()| previous));
                let end = if done.is_ok() {
                    "RELEASE authenticate"
                } else {
                    "ROLLBACK TO authenticate; RELEASE authenticate"
                };
                c.execute_batch(end).map_err(db_err("savepoint"))?;
                done
            },
            after,
            Admission::Shed,
        )
    }

    fn delete_device<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, bool> {
        let udid = udid.to_owned();
        let (bindings, forget) = (Arc::clone(&self.bindings), udid.clone());
        let after: writer::AfterCommit<bool> = Box::new(move |_| {
            bindings.remove(&forget);
        });
        self.submit(
            Undo::BySavepoint,
            move |c| {
                // Before the device: its rows are found by its topic.
                for sql in [
                    concat!(
                        "DELETE FROM queue WHERE topic = ",
                        device_topic!(),
                        " AND udid = ?1"
                    ),
                    "DELETE FROM users WHERE udid = ?1",
                    concat!(
                        "DELETE FROM results WHERE topic = ",
                        device_topic!(),
                        " AND udid = ?1"
                    ),
                ] {
                    c.prepare_cached(sql)
                        .and_then(|mut s| s.execute([&udid]))
                        .map_err(db_err("delete device"))?;
                }
                let removed = c
                    .prepare_cached("DELETE FROM devices WHERE udid = ?1")
                    .and_then(|mut s| s.execute([&udid]))
                    .map_err(db_err("delete device"))?;
                Ok(removed > 0)
            },
            Some(after),
            Admission::Wait,
        )
    }

    fn delete_topic_devices<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, u64> {
        let topic = topic.to_owned();
        let bindings = Arc::clone(&self.bindings);
        // The bindings are a cache of the table: emptied, they are read again as needed.
        let after: writer::AfterCommit<u64> = Box::new(move |_| bindings.clear());
        self.submit(
            Undo::BySavepoint,
            move |c| {
                for sql in [
                    "DELETE FROM queue WHERE topic = ?1",
                    "DELETE FROM users WHERE udid IN (SELECT udid FROM devices WHERE topic = ?1)",
                    "DELETE FROM results WHERE topic = ?1",
                ] {
                    c.execute(sql, [&topic])
                        .map_err(db_err("delete a topic's devices"))?;
                }
                let removed = c
                    .execute("DELETE FROM devices WHERE topic = ?1", [&topic])
                    .map_err(db_err("delete a topic's devices"))?;
                Ok(removed as u64)
            },
            Some(after),
            Admission::Wait,
        )
    }

    fn delete_all_devices(&self) -> StoreFuture<'_, u64> {
        let bindings = Arc::clone(&self.bindings);
        let after: writer::AfterCommit<u64> = Box::new(move |_| bindings.clear());
        self.submit(
            Undo::BySavepoint,
            move |c| {
                for sql in [
                    "DELETE FROM queue",
                    "DELETE FROM users",
                    "DELETE FROM results",
                    "DELETE FROM commands",
                ] {
                    c.execute(sql, []).map_err(db_err("delete all devices"))?;
                }
                let removed = c
                    .execute("DELETE FROM devices", [])
                    .map_err(db_err("delete all devices"))?;
                Ok(removed as u64)
            },
            Some(after),
            Admission::Wait,
        )
    }

    fn token_update<'a>(
        &'a self,
        msg: &'a TokenUpdate,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Enrollment> {
        let (mut msg, at) = (msg.clone(), truncate_ms(at));
        if let Some(unlock) = msg.unlock_token.take() {
            match self.seal("unlock_token", &msg.udid, unlock) {
                Ok(sealed) => msg.unlock_token = Some(sealed),
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            }
        }
        if msg.user.is_none() {
            // A read, then one upsert.
            return self.device_write_one_statement(move |c| upsert_for_token_update(c, &msg, at));
        }
        self.device_write(move |c| {
            let Some(user) = &msg.user else {
                return upsert_for_token_update(c, &msg, at);
            };
            let mut d = device_or_new(c, &msg.udid)?;
            apply_contact(&mut d, at);
            save_device(c, &d)?;
            upsert_user(
                c,
                &User {
                    udid: msg.udid.clone(),
                    user_id: user.user_id.clone(),
                    short_name: user.short_name.clone(),
                    long_name: user.long_name.clone(),
                    token: msg.token.as_hex().to_owned(),
                    push_magic: msg.push_magic.clone(),
                    updated_at: at,
                },
            )?;
            Ok(Enrollment::UserChannel)
        })
    }

    fn check_out<'a>(&'a self, udid: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()> {
        let (udid, at) = (udid.to_owned(), truncate_ms(at));
        self.device_write(move |c| {
            let mut d = require_device(c, &udid)?;
            logic::check_out(&mut d, at);
            save_device(c, &d)?;
            // The enrollment ended: nothing queued for it may reach a later one.
            drop_queue(c, &udid)
        })
    }

    fn set_bootstrap_token<'a>(
        &'a self,
        udid: &'a str,
        token: Option<&'a Secret>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (udid, at) = (udid.to_owned(), truncate_ms(at));
        let token = match token
            .cloned()
            .map(|t| self.seal("bootstrap_token", &udid, t))
        {
            Some(Err(e)) => return Box::pin(std::future::ready(Err(e))),
            Some(Ok(t)) => Some(t),
            None => None,
        };
        self.device_write(move |c| {
            let mut d = require_device(c, &udid)?;
            d.bootstrap_token = token;
            apply_contact(&mut d, at);
            save_device(c, &d)
        })
    }

    fn bootstrap_token<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<Secret>> {
        let udid = udid.to_owned();
        let key = self.secrets.clone();
        self.read(move |c| {
            let token: Option<Option<Vec<u8>>> = c
                .query_row(
                    "SELECT bootstrap_token FROM devices WHERE udid = ?1",
                    [&udid],
                    |r| r.get(0),
                )
                .optional()
                .map_err(db_err("read bootstrap token"))?;
            token
                .flatten()
                .map(|t| Self::unseal(key.as_deref(), "bootstrap_token", &udid, Secret::new(t)))
                .transpose()
        })
    }

    fn touch<'a>(&'a self, udid: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()> {
        let (udid, at) = (udid.to_owned(), truncate_ms(at));
        self.device_write(move |c| {
            let mut d = require_device(c, &udid)?;
            apply_contact(&mut d, at);
            save_device(c, &d)
        })
    }

    fn users<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<User>> {
        let udid = udid.to_owned();
        self.read(move |c| {
            c.prepare_cached(
                "SELECT udid, user_id, short_name, long_name, token, push_magic, updated_at
                 FROM users WHERE udid = ?1 ORDER BY user_id",
            )
            .and_then(|mut s| {
                s.query_map([&udid], user_from_row)?
                    .collect::<Result<Vec<_>, _>>()
            })
            .map_err(db_err("read users"))
        })
    }
}

impl IdentityStore for SqliteStore {
    fn identity_hash<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<[u8; 32]>> {
        if let Some(known) = self.bindings.get(udid) {
            let known = *known;
            return Box::pin(std::future::ready(Ok(known)));
        }
        let bindings = Arc::clone(&self.bindings);
        let udid = udid.to_owned();
        let read = self.read(move |c| load_identity_hash(c, &udid).map(|h| (udid, h)));
        Box::pin(async move {
            let (udid, hash) = read.await?;
            // A commit that raced this read has put the newer value: keep it.
            Ok(*bindings.entry(udid).or_insert(hash))
        })
    }
}

impl QueueStore for SqliteStore {
    fn cancel_command<'a>(&'a self, uuid: &'a str) -> StoreFuture<'a, Option<usize>> {
        let uuid = uuid.to_owned();
        self.write_one_statement(move |c| {
            let known = c
                .prepare_cached("SELECT 1 FROM commands WHERE uuid = ?1")
                .and_then(|mut s| s.exists([&uuid]))
                .map_err(db_err("cancel command"))?;
            if !known {
                return Ok(None);
            }
            c.prepare_cached("DELETE FROM queue WHERE uuid = ?1")
                .and_then(|mut s| s.execute([&uuid]))
                .map(Some)
                .map_err(db_err("cancel command"))
        })
    }

    fn enqueue<'a>(
        &'a self,
        command: &'a Command,
        udids: &'a [String],
        mode: EnqueueMode,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, EnqueueOutcome> {
        let uuid = command.uuid.clone();
        let request_type = command.request_type.clone();
        let body = command.to_xml();
        let expires_at = command.expires_at.map(to_ms);
        let udids: Vec<String> = dedup(udids).into_iter().cloned().collect();
        let at = to_ms(truncate_ms(at));
        self.write(move |c| {
            let exists = c
                .prepare_cached("SELECT 1 FROM commands WHERE uuid = ?1")
                .and_then(|mut s| s.exists([&uuid]))
                .map_err(db_err("enqueue"))?;
            if exists {
                return Err(StoreError::DuplicateCommand { uuid });
            }
            c.execute(
                "INSERT INTO commands (uuid, request_type, body, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![uuid, request_type, body, at, expires_at],
            )
            .map_err(db_err("enqueue"))?;
            queue_for_each(
                c,
                &uuid,
                &request_type,
                at,
                udids,
                mode == EnqueueMode::SkipIfQueued,
                device_exists,
            )
        })
    }

    fn has_queued<'a>(&'a self, udid: &'a str, request_type: &'a str) -> StoreFuture<'a, bool> {
        let (udid, request_type) = (udid.to_owned(), request_type.to_owned());
        self.read(move |c| {
            c.prepare_cached(HAS_QUEUED_TYPE)
                .and_then(|mut s| s.exists(params![udid, request_type]))
                .map_err(db_err("read queue"))
        })
    }

    fn next_command<'a>(
        &'a self,
        udid: &'a str,
        skip_not_now: bool,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<QueuedCommand>> {
        let (udid, at) = (udid.to_owned(), truncate_ms(at));
        self.read(move |c| next_queued(c, &udid, skip_not_now, at))
    }

    fn queued<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<QueuedCommand>> {
        let udid = udid.to_owned();
        self.read(move |c| {
            c.prepare_cached(SELECT_QUEUED)
                .and_then(|mut s| {
                    s.query_map(params![udid, false, i64::MIN], queued_from_row)?
                        .collect::<Result<Vec<_>, _>>()
                })
                .map_err(db_err("read queue"))
        })
    }

    fn record_report<'a>(
        &'a self,
        report: &'a Report,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ReportOutcome> {
        let at = truncate_ms(at);
        let udid = report.udid.clone();
        let status = report.status;
        let command_uuid = report
            .command_uuid
            .clone()
            .filter(|_| status != Status::Idle);
        let device_info = report.device_info.clone();
        let error_chain = report.error_chain.clone();
        // Encode outside the writer thread: it is the one serial resource.
        let raw = command_uuid.as_ref().map(|_| report.raw_xml());
        let report = Report {
            udid: udid.clone(),
            user_id: None,
            status,
            command_uuid: command_uuid.clone(),
            error_chain: Vec::new(),
            device_info,
            raw: plist::Dictionary::new(),
        };
        self.device_write(move |c| {
            let (closed_push, info_updated) = update_for_report(c, &report, at)?;
            drop_expired(c, &udid, at)?;
            let mut out = ReportOutcome {
                closed_push,
                info_updated,
                ..ReportOutcome::default()
            };
            let Some(uuid) = command_uuid else {
                out.next_command = Some(next_queued(c, &udid, status != Status::Idle, at)?);
                return Ok(out);
            };
            // One statement finds the queued command and ends or marks it; the queue row
            // carries the RequestType, so only a command not queued is looked up.
            let queued = if status.is_final() {
                dequeue(c, &udid, &uuid)?
            } else if status == Status::NotNow {
                mark_not_now(c, &udid, &uuid, at)?
            } else {
                None
            };
            if let Some(request_type) = queued {
                out.known_command = true;
                out.dequeued = status.is_final();
                out.request_type = Some(request_type);
            } else {
                out.request_type = stored_request_type(c, &uuid)?;
                if status.is_final() && has_result(c, &udid, &uuid, status)? {
                    // The same final answer again: recorded once.
                    out.next_command = Some(next_queued(c, &udid, true, at)?);
                    return Ok(out);
                }
            }
            insert_result(
                c,
                &CommandResult {
                    udid: udid.clone(),
                    command_uuid: uuid,
                    request_type: out.request_type.clone(),
                    status,
                    error_chain,
                    raw: raw.unwrap_or_default(),
                    at,
                },
            )?;
            out.next_command = Some(next_queued(c, &udid, status != Status::Idle, at)?);
            Ok(out)
        })
    }

    fn results<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<CommandResult>> {
        let udid = udid.to_owned();
        self.read(move |c| {
            let mut stmt = c
                .prepare_cached(concat!(
                    "SELECT udid, uuid, request_type, status, error_chain, raw, at
                     FROM results WHERE topic = ",
                    device_topic!(),
                    " AND udid = ?1 ORDER BY id"
                ))
                .map_err(db_err("read results"))?;
            let rows = stmt
                .query_map([&udid], result_from_row)
                .map_err(db_err("read results"))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(row.map_err(db_err("read results"))??);
            }
            Ok(out)
        })
    }
}

impl PushStore for SqliteStore {
    fn record_push_attempts<'a>(
        &'a self,
        udids: &'a [String],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (udids, at) = (udids.to_vec(), truncate_ms(at));
        self.write(move |c| {
            for udid in udids {
                update_push_attempt(c, &udid, at)?;
            }
            Ok(())
        })
    }

    fn withdraw_push_attempts<'a>(
        &'a self,
        udids: &'a [String],
        attempted_at: OffsetDateTime,
    ) -> StoreFuture<'a, u64> {
        let (udids, at) = (udids.to_vec(), truncate_ms(attempted_at));
        self.write(move |c| {
            let mut n = 0;
            for udid in udids {
                n += c
                    .prepare_cached(
                        "UPDATE devices SET last_push_at = NULL
                         WHERE udid = ?1 AND last_push_at = ?2 AND push_outcome IS NULL
                           AND first_report_after_push_at IS NULL",
                    )
                    .and_then(|mut s| {
                        s.execute(rusqlite::params![udid, magicpush_store::to_ms(at)])
                    })
                    .map_err(db_err("withdraw push attempt"))? as u64;
            }
            Ok(n)
        })
    }

    fn record_push_outcome<'a>(
        &'a self,
        udid: &'a str,
        outcome: &'a PushOutcome,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (udid, outcome, at) = (udid.to_owned(), outcome.clone(), truncate_ms(at));
        self.write(move |c| {
            if update_push_outcome(c, &udid, &outcome, at)? {
                Ok(())
            } else {
                Err(StoreError::UnknownDevice { udid })
            }
        })
    }

    fn queue_and_mark_pushes<'a>(
        &'a self,
        command: &'a Command,
        udids: &'a [String],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, EnqueueOutcome> {
        let uuid = command.uuid.clone();
        let request_type = command.request_type.clone();
        let body = command.to_xml();
        let expires_at = command.expires_at.map(to_ms);
        let udids: Vec<String> = dedup(udids).into_iter().cloned().collect();
        let at = truncate_ms(at);
        self.write(move |c| {
            let at_ms = to_ms(at);
            c.prepare_cached(
                "INSERT INTO commands (uuid, request_type, body, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (uuid) DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![uuid, request_type, body, at_ms, expires_at]))
            .map_err(db_err("enqueue"))?;
            queue_for_each(c, &uuid, &request_type, at_ms, udids, true, |c, udid| {
                update_push_attempt(c, udid, at)
            })
        })
    }

    fn record_push_outcomes<'a>(
        &'a self,
        outcomes: &'a [(String, PushOutcome)],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (outcomes, at) = (outcomes.to_vec(), truncate_ms(at));
        self.write(move |c| {
            for (udid, outcome) in &outcomes {
                update_push_outcome(c, udid, outcome, at)?;
            }
            Ok(())
        })
    }
}

impl ListingStore for SqliteStore {
    fn enrolled_topics(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, u64>> {
        self.read(|c| {
            // `Device::is_enrolled() && !Device::is_checked_out()`, in SQL.
            let mut stmt = c
                .prepare_cached(
                    "SELECT COALESCE(topic, ''), count(*) FROM devices
                     WHERE enrolled_at IS NOT NULL AND token IS NOT NULL
                       AND push_magic IS NOT NULL
                       AND (checked_out_at IS NULL
                            OR (token_updated_at IS NOT NULL
                                AND checked_out_at < token_updated_at))
                     GROUP BY 1",
                )
                .map_err(db_err("read topics"))?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
                .map_err(db_err("read topics"))?;
            rows.map(|r| {
                r.map(|(t, n)| (t, n.max(0) as u64))
                    .map_err(db_err("read topics"))
            })
            .collect()
        })
    }

    fn devices(&self) -> StoreFuture<'_, Vec<Device>> {
        self.read_devices("")
    }

    fn devices_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        match after {
            Some(after) => self.device_page(&SELECT_DEVICES_AFTER, [text(after)], limit),
            None => self.device_page(&SELECT_DEVICES_FIRST, [], limit),
        }
    }

    fn topic_devices_page<'a>(
        &'a self,
        topic: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        match after {
            Some(after) => {
                let params = [text(topic), text(after)];
                self.device_page(&SELECT_TOPIC_DEVICES_AFTER, params, limit)
            }
            None => self.device_page(&SELECT_TOPIC_DEVICES_FIRST, [text(topic)], limit),
        }
    }

    fn devices_page_by_topic<'a>(
        &'a self,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        match after {
            Some((topic, udid)) => {
                let params = [text(topic), text(udid)];
                self.device_page(&SELECT_DEVICES_BY_TOPIC_AFTER, params, limit)
            }
            None => self.device_page(&SELECT_DEVICES_BY_TOPIC_FIRST, [], limit),
        }
    }

    fn device<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<Device>> {
        let udid = udid.to_owned();
        let key = self.secrets.clone();
        self.read(move |c| {
            load_device(c, &udid)?
                .map(|d| Self::unseal_device(key.as_deref(), d))
                .transpose()
        })
    }

    fn pushable(&self) -> StoreFuture<'_, Vec<Device>> {
        let all = self.read_devices("WHERE enrolled_at IS NOT NULL AND token IS NOT NULL");
        Box::pin(async move {
            let mut devices = all.await?;
            devices.retain(Device::is_pushable);
            Ok(devices)
        })
    }

    fn count(&self) -> StoreFuture<'_, usize> {
        self.read(|c| {
            c.query_row("SELECT COUNT(*) FROM devices", [], |r| r.get::<_, i64>(0))
                .map(|n| usize::try_from(n).unwrap_or(0))
                .map_err(db_err("count devices"))
        })
    }
}

impl Store for SqliteStore {
    fn health(&self) -> StoreFuture<'_, ()> {
        if let Err(e) = self.writer_health() {
            return Box::pin(std::future::ready(Err(e)));
        }
        let count = self.count();
        Box::pin(async move { count.await.map(drop) })
    }
}

/// Queues command `uuid` for each of `udids` that `known` accepts (unknown ones are listed as
/// such), skipping devices that already have one of `request_type` queued when
/// `skip_if_queued`. Shared by `enqueue` and `queue_and_mark_pushes`, which differ only in how
/// they check (and touch) the device.
fn queue_for_each(
    c: &Connection,
    uuid: &str,
    request_type: &str,
    at_ms: i64,
    udids: Vec<String>,
    skip_if_queued: bool,
    mut known: impl FnMut(&Connection, &str) -> Result<bool, StoreError>,
) -> Result<EnqueueOutcome, StoreError> {
    let mut out = EnqueueOutcome {
        command_uuid: uuid.to_owned(),
        ..EnqueueOutcome::default()
    };
    let mut already = c
        .prepare_cached(HAS_QUEUED_TYPE)
        .map_err(db_err("enqueue"))?;
    let mut insert = c
        .prepare_cached(concat!(
            "INSERT INTO queue (topic, udid, uuid, request_type, queued_at) VALUES (",
            device_topic!(),
            ", ?1, ?2, ?3, ?4)"
        ))
        .map_err(db_err("enqueue"))?;
    for udid in udids {
        if !known(c, &udid)? {
            out.unknown.push(udid);
            continue;
        }
        if skip_if_queued
            && already
                .exists(params![udid, request_type])
                .map_err(db_err("enqueue"))?
        {
            out.already_queued.push(udid);
            continue;
        }
        insert
            .execute(params![udid, uuid, request_type, at_ms])
            .map_err(db_err("enqueue"))?;
        out.queued.push(udid);
    }
    Ok(out)
}

#[cfg(any(test, feature = "fault-injection"))]
impl SqliteStore {
    /// Makes the writer thread die (a write that panics), as a bug or a crash in SQLite would.
    /// Tests only (feature `fault-injection`, which only test builds turn on).
    pub async fn kill_writer_for_tests(&self) {
        let dead = self.write(|_| -> Result<(), StoreError> { panic!("writer killed by a test") });
        let _ = dead.await;
        while !self.writer.as_ref().is_none_or(|w| w.is_finished()) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The statements every report runs must find their rows by key: a scan grows with the
    /// table (every command ever stored, every queued row of every device).
    #[test]
    fn the_statements_of_a_report_scan_no_table() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("db")).unwrap();
        let statements = [
            DROP_EXPIRED,
            SELECT_NEXT_QUEUED.as_str(),
            DEQUEUE,
            MARK_NOT_NOW,
            REQUEST_TYPE_OF,
            HAS_QUEUED_TYPE,
            rows::SELECT_QUEUED,
        ];
        for sql in statements {
            let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let unbound = std::iter::repeat_n(rusqlite::types::Null, plan.parameter_count());
            let details: Vec<String> = plan
                .query_map(rusqlite::params_from_iter(unbound), |r| {
                    r.get::<_, String>(3)
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            assert!(
                !details.iter().any(|d| d.starts_with("SCAN")),
                "{sql}\n{details:#?}"
            );
            // The queue is read among the device's tenant's rows (schema version 12).
            for d in details.iter().filter(|d| d.starts_with("SEARCH q")) {
                assert!(d.contains("(topic=? AND udid=?"), "{sql}\n{details:#?}");
            }
        }
    }

    /// A page of a device listing is read in key order from where the last one ended, no
    /// sort of the whole table for each page: by UDID a range of the UDID index, by tenant
    /// (and one tenant's) a range of the primary key.
    #[test]
    fn a_device_page_reads_a_range_of_the_key_without_sorting() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("db")).unwrap();
        let plan = |sql: &str| -> Vec<String> {
            let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let unbound = std::iter::repeat_n(rusqlite::types::Null, plan.parameter_count());
            plan.query_map(rusqlite::params_from_iter(unbound), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
        };
        let after = plan(&SELECT_DEVICES_AFTER);
        assert!(
            after
                .iter()
                .any(|d| d.starts_with("SEARCH devices USING INDEX sqlite_autoindex_devices_1")),
            "{after:#?}"
        );
        for sql in [
            &*SELECT_DEVICES_BY_TOPIC_AFTER,
            &*SELECT_TOPIC_DEVICES_AFTER,
        ] {
            let details = plan(sql);
            assert!(
                details
                    .iter()
                    .any(|d| d.starts_with("SEARCH devices USING PRIMARY KEY")),
                "{sql}\n{details:#?}"
            );
        }
        for details in [
            after,
            plan(&SELECT_DEVICES_FIRST),
            plan(&SELECT_DEVICES_BY_TOPIC_FIRST),
            plan(&SELECT_DEVICES_BY_TOPIC_AFTER),
            plan(&SELECT_TOPIC_DEVICES_FIRST),
            plan(&SELECT_TOPIC_DEVICES_AFTER),
        ] {
            assert!(
                !details.iter().any(|d| d.contains("TEMP B-TREE")),
                "{details:#?}"
            );
        }
    }

    /// The identity index holds bound devices only (a device without an identity would
    /// write a second b-tree page at a random place on every enrollment for nothing), and
    /// the lookup of a certificate's device still finds its row through it.
    #[test]
    fn the_identity_index_holds_bound_devices_only_and_serves_the_lookup() {
        let dir = tempfile::tempdir().unwrap();
        let conn = open_writer(&dir.path().join("db")).unwrap();
        let index_sql: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'index' AND name = 'devices_by_identity'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(
            index_sql.starts_with("CREATE UNIQUE INDEX")
                && index_sql.ends_with("WHERE identity_sha256 IS NOT NULL"),
            "{index_sql}"
        );
        let mut plan = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", rows::SELECT_BY_IDENTITY))
            .unwrap();
        let details: Vec<String> = plan
            .query_map([rusqlite::types::Null], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            details.iter().any(|d| d
                .starts_with("SEARCH devices USING COVERING INDEX devices_by_identity")
                || d.starts_with("SEARCH devices USING INDEX devices_by_identity")),
            "{details:#?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_dead_writer_is_unhealthy_and_writes_fail_closed() {
        use magicpush_testkit::conformance::{authenticate, t};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store.health().await.unwrap();
        store.kill_writer_for_tests().await;
        assert_eq!(store.health().await, Err(StoreError::Closed));
        let write = store.authenticate(&authenticate("A"), None, t(0)).await;
        assert_eq!(write, Err(StoreError::Closed));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_sheds_device_writes_and_holds_the_servers_own() {
        use magicpush_testkit::conformance::{authenticate, t};
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            max_queued_writes: 2,
            max_batch: 1,
            ..SqliteOptions::default()
        };
        let store = Arc::new(SqliteStore::open_file(&dir.path().join("db"), options).unwrap());
        // Hold the writer in a slow write, then fill the queue behind it.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let slow = store.write(move |_| {
            let _ = started_tx.send(());
            std::thread::sleep(std::time::Duration::from_millis(300));
            Ok(())
        });
        let slow = tokio::spawn(slow);
        started_rx.recv().unwrap();
        let queued: Vec<_> = ["Q1", "Q2"]
            .into_iter()
            .map(|u| tokio::spawn(store.touch_owned(u.to_owned())))
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let shed = store.authenticate(&authenticate("A"), None, t(0)).await;
        assert!(
            matches!(shed, Err(StoreError::Overloaded { queued: 2 })),
            "{shed:?}"
        );
        assert!(
            store.device("A").await.unwrap().is_none(),
            "a shed write left nothing"
        );
        // The server's own write waits for room and lands.
        let cmd = magicpush_mdm::Command::new("RestartDevice", plist::Dictionary::new());
        let waited = store.enqueue(&cmd, &[], EnqueueMode::Always, t(1)).await;
        assert!(waited.is_ok(), "{waited:?}");
        slow.await.unwrap().unwrap();
        for q in queued {
            // Unknown devices: the writes ran (and failed as the contract says).
            assert!(matches!(
                q.await.unwrap(),
                Err(StoreError::UnknownDevice { .. })
            ));
        }
        store.health().await.unwrap();
        assert_eq!(store.counters.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn read_pool_opens_at_most_max_connections_and_reuses_them() {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            max_readers: 2,
            ..SqliteOptions::default()
        };
        let store = SqliteStore::open_file(&dir.path().join("db.sqlite3"), options).unwrap();
        let pool = Arc::clone(&store.readers);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let pool = Arc::clone(&pool);
                std::thread::spawn(move || {
                    for _ in 0..20 {
                        pool.with(|c| {
                            std::thread::sleep(std::time::Duration::from_millis(1));
                            c.query_row("SELECT count(*) FROM devices", [], |r| r.get::<_, i64>(0))
                                .map_err(db_err("count"))
                        })
                        .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let state = pool.lock();
        assert_eq!(state.open, 2);
        assert_eq!(state.idle.len(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reports_answer_the_next_command_from_the_writer() {
        use magicpush_testkit::conformance::{authenticate, report, t, token_update};
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).unwrap();
        store
            .authenticate(&authenticate("A"), None, t(0))
            .await
            .unwrap();
        store
            .token_update(&token_update("A", 1), t(0))
            .await
            .unwrap();
        let cmd = Command::new("ProfileList", plist::Dictionary::new());
        store
            .enqueue(&cmd, &["A".to_string()], EnqueueMode::Always, t(1))
            .await
            .unwrap();
        let idle = report("A", Status::Idle, None, plist::Dictionary::new());
        let out = store.record_report(&idle, t(2)).await.unwrap();
        let next = out.next_command.expect("the SQLite store looks");
        assert_eq!(next.map(|c| c.uuid), Some(cmd.uuid.clone()));
        let ack = report(
            "A",
            Status::Acknowledged,
            Some(&cmd.uuid),
            plist::Dictionary::new(),
        );
        let out = store.record_report(&ack, t(3)).await.unwrap();
        assert_eq!(out.next_command, Some(None));
    }
}
