//! [`PostgresStore`]: the device store on a PostgreSQL server, for platforms that run several
//! server nodes on one database, or that must survive a machine's loss.
//!
//! It keeps everything the SQLite store keeps — devices, queues, results, user channels,
//! identity bindings, the push certificates with their keys, pending requests, the Apple ID
//! memos, tenant names, the certificates' logs — with the same semantics (the same
//! conformance suite, `magicpush_testkit::conformance`, runs against both), and the same
//! rules of each write ([`magicpush_store::writes`], rendered for PostgreSQL).
//!
//! - **Durability**: a write's future resolves `Ok` only after its transaction's `COMMIT`
//!   returned; with the server's defaults (`fsync`, `synchronous_commit = on`) that commit is
//!   on disk. An acknowledged write is never lost. A write that fails was not acknowledged:
//!   it was rolled back, except when the connection is lost during the `COMMIT` itself,
//!   whose outcome no client can know: that write may or may not have landed.
//! - **Connections**: the writer and the readers reconnect by themselves when the server
//!   ends their sessions; the writer never reuses a connection left in an unknown state.
//!   While the server cannot be reached (refused or lost connections, a server shutting down
//!   or starting) operations fail with [`StoreError::Unavailable`], which the HTTP server
//!   answers 503 with `Retry-After`; the same store serves again once it is back
//!   (`tests/outage.rs` cuts a TCP forwarder between the store and the server).
//! - **Group commit**: one writer task owns a connection; every write waiting when it starts a
//!   transaction (up to [`PostgresOptions::max_batch`]) joins it, so concurrent check-ins
//!   share one commit (one WAL flush) instead of one each. A batch of check-in writes runs
//!   them all at once, their statements pipelined; should one fail, the batch runs again one
//!   write at a time, each in its own savepoint, so a failing write is undone alone and the
//!   others commit (see `writer`). Writes that touch many devices are batched
//!   statements (`udid = ANY($1)`, one multi-row `INSERT … SELECT FROM unnest`). The writer's
//!   queue is bounded: a device's write finding it full fails at once with
//!   [`StoreError::Overloaded`]; the server's own writes wait for room.
//! - **Several nodes**: each node's transaction locks the rows of the devices it writes
//!   (`FOR NO KEY UPDATE`, in UDID order, see `writer`), so one device's writes on two nodes run one
//!   after the other; a final report arriving twice (on two nodes, or re-sent) is recorded
//!   once and dequeues its command once. `tests/nodes.rs` races reports on two stores.
//!   Push certificate writes notify the other nodes (`LISTEN`/`NOTIFY`, see `listen`):
//!   [`PushCertStore::pushcert_changes`] is their feed.
//! - **Reads** go through a connection pool (deadpool-postgres) and see every acknowledged
//!   write. The identity lookup of every authenticated request is read from the database
//!   (another node may have rebound the device), the lookups of concurrent requests in one
//!   query (see the `identity` module).
//! - **Secrets**: a [`SecretKey`] is mandatory. Unlock and bootstrap tokens and the push
//!   certificates' private keys (in use and pending) are sealed with it before they leave
//!   the process; the database keeps a check value, so another key is refused at open.
//! - **Migrations**: versioned, recorded in `schema_migrations`, applied at open under a
//!   PostgreSQL advisory lock (two nodes starting together migrate once); [`migrate`] applies
//!   them alone. A schema newer than this build is refused ([`StoreError::SchemaTooNew`]).
//! - **TLS**: as the URL's `sslmode` asks (see [`TlsMode`]), with rustls.
//! - **Bounded tables**: results are pruned to [`magicpush_store::RESULTS_KEPT_PER_DEVICE`]
//!   per device as new ones arrive; a command leaves its device's queue with its final result.
//!
//! Tests: `tests/store_postgres.rs` runs the conformance suite on the server named by
//! `MAGICPUSH_TEST_DATABASE_URL`, each test in a fresh schema of its own (the store is opened
//! with `options=-csearch_path=…`). Without the variable the tests print a line and pass,
//! except under `CI=true`, where they fail. `.ci/postgres.sh start DIR PORT` starts a
//! throwaway cluster and prints the URL.

mod cluster;
mod enrollment;
mod identity;
mod listen;
mod pushcerts;
mod rows;
mod schema;
mod settings;
mod tls;
mod writer;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_postgres::NoTls;

use self::rows::{
    device_from_row, drop_queue, exec, get, load_device, next_queued, push_attempt_values,
    push_outcome_values, query, query_opt, queued_from_row, require_device, result_from_row,
    save_device, upsert_for_token_update, upsert_user, user_from_row, Param, PUSH_ATTEMPT,
    PUSH_OUTCOME, SELECT_DEVICES, SELECT_DEVICES_AFTER, SELECT_DEVICES_BY_TOPIC_AFTER,
    SELECT_DEVICES_BY_TOPIC_FIRST, SELECT_DEVICES_FIRST, SELECT_QUEUED, SELECT_TOPIC_DEVICES_AFTER,
    SELECT_TOPIC_DEVICES_FIRST,
};
use self::writer::{AfterCommit, Counters, Job, Once, PendingWrite, Repeat, Work, WorkFuture};
use magicpush_mdm::{Authenticate, Command, Report, Secret, Status, TokenUpdate};
use magicpush_store::prelude::*;
use magicpush_store::{apply_contact, dedup, logic, to_ms, truncate_ms};
use magicpush_store::{
    BoundIdentity, CommandResult, Device, EnqueueMode, EnqueueOutcome, Enrollment, PushOutcome,
    QueuedCommand, ReportOutcome, StoreError, StoreFuture, User,
};

pub use self::schema::SCHEMA_VERSION;
pub use self::tls::TlsMode;
pub use magicpush_store::SecretKey;

/// Whether a driver error means the database cannot be reached: no server answered, the
/// connection was lost, or the server is shutting down or starting (SQLSTATE classes 08 and
/// 57P0x) — as opposed to a statement the server refused.
pub(crate) fn is_unreachable(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => {
            let code = code.code();
            code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
        }
        // No server error: the connection failed or closed (an I/O error, a closed
        // session), unless the driver itself refused a value.
        None => e.is_closed() || e.as_db_error().is_none() && has_io_cause(e),
    }
}

/// Whether an I/O error of the network is behind `e`: refused, reset, timed out, no route.
/// Not a TLS handshake's failure (a certificate refused is a setting to fix, not an outage).
fn has_io_cause(e: &(dyn std::error::Error + 'static)) -> bool {
    use std::io::ErrorKind as K;
    let mut cause = e.source();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                K::ConnectionRefused
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::NotConnected
                    | K::BrokenPipe
                    | K::UnexpectedEof
                    | K::TimedOut
                    | K::AddrNotAvailable
                    | K::HostUnreachable
                    | K::NetworkUnreachable
                    | K::NetworkDown
            );
        }
        cause = c.source();
    }
    false
}

/// A driver error as the store reports it, naming the operation.
pub(crate) fn pg_err(op: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |e| {
        if is_unreachable(&e) {
            return StoreError::Unavailable {
                op,
                detail: with_causes(&e),
            };
        }
        // The server's own message (`ERROR: …`) says more than the driver's "db error".
        let detail = match e.as_db_error() {
            Some(db) => {
                format!("{}: {}", db.severity(), db.message())
                    + &db
                        .constraint()
                        .map(|c| format!(" (constraint {c})"))
                        .unwrap_or_default()
            }
            None => with_causes(&e),
        };
        StoreError::Database { op, detail }
    }
}

/// An error's message followed by its causes' (the driver's own message leaves out why a
/// connection or a TLS handshake failed).
pub(crate) fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// A pool error (no connection to be had) as the store reports it.
pub(crate) fn pool_err(
    op: &'static str,
) -> impl FnOnce(deadpool_postgres::PoolError) -> StoreError {
    move |e| match e {
        deadpool_postgres::PoolError::Backend(e) => pg_err(op)(e),
        // No connection made (or free) in time: the server does not answer.
        e @ deadpool_postgres::PoolError::Timeout(_) => StoreError::Unavailable {
            op,
            detail: with_causes(&e),
        },
        e => StoreError::Database {
            op,
            detail: with_causes(&e),
        },
    }
}

/// Tuning for [`PostgresStore`].
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most writes applied in one transaction. Default 256 (a write run one at a time is a
    /// savepoint, and PostgreSQL tracks a transaction's subtransactions).
    pub max_batch: usize,
    /// Writes waiting for the writer at most; when full, a device's write is refused at once
    /// ([`StoreError::Overloaded`]) and the server's own writes wait. Default 8192.
    pub max_queued_writes: usize,
    /// Connections for reads (the writers have theirs besides). Default 8.
    pub max_readers: usize,
    /// Writers, each with its connection and its own group commits. A device's writes all go
    /// to one writer (chosen by its UDID), so they keep their order; writes of different
    /// devices commit side by side. A batch is a few round trips even when its writes are
    /// pipelined, so one writer is bound by the database's latency rather than its work.
    /// Default 4.
    pub writers: usize,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_batch: 256,
            max_queued_writes: 8192,
            max_readers: 8,
            writers: 4,
        }
    }
}

/// The writer of a write that touches `devices`: the first device's (by a hash of its UDID),
/// so that one device's writes keep their order; the first writer for writes of no device.
fn writer_for(devices: &[String], writers: usize) -> usize {
    use std::hash::{Hash, Hasher};
    match devices.first() {
        Some(udid) if writers > 1 => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            udid.hash(&mut h);
            (h.finish() % writers as u64) as usize
        }
        _ => 0,
    }
}

/// How long waiting writes may see no commit before the store calls itself wedged.
pub const WEDGED_AFTER: Duration = Duration::from_secs(30);

/// What a write does when the writer's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admission {
    /// Fail with [`StoreError::Overloaded`] (a device retries).
    Shed,
    /// Wait for room (the server's own work).
    Wait,
}

/// How well group commit is batching: `writes / commits` is the mean batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitStats {
    /// Transactions committed (or attempted) by the writer.
    pub commits: u64,
    /// Writes applied in them.
    pub writes: u64,
    /// Of the commits, those whose writes ran pipelined, all at once.
    pub pipelined: u64,
    /// Pipelined attempts that failed, rolled back and ran again one write at a time.
    pub pipeline_retries: u64,
}

/// The PostgreSQL [`Store`]. Open it inside a Tokio runtime; dropping it lets the writer
/// finish the writes already queued, then stop.
pub struct PostgresStore {
    pool: Pool,
    /// Each writer's queue.
    writes: Vec<mpsc::Sender<Box<dyn PendingWrite>>>,
    writers: Vec<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
    queue_capacity: usize,
    secrets: Arc<SecretKey>,
    /// Identity lookups, gathered into one query at a time.
    identities: identity::IdentityReads,
    /// Where the database is, for the listening session.
    url: tls::DatabaseUrl,
    /// This store's name in its push certificate notifications.
    origin: listen::Origin,
    /// The runtime the store was opened in (the listener runs there).
    runtime: tokio::runtime::Handle,
    /// Started by the first [`PushCertStore::pushcert_changes`] (a store nobody asks for
    /// them holds no listening session).
    listener: std::sync::OnceLock<listen::Listener>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

/// One connection of its own (not pooled), for migrations: its session lock goes with it.
async fn connect(url: &tls::DatabaseUrl) -> Result<tokio_postgres::Client, StoreError> {
    let config = url.config()?;
    let (client, task) = match url.mode {
        TlsMode::Off => {
            let (client, conn) = config.connect(NoTls).await.map_err(pg_err("connect"))?;
            (client, tokio::spawn(async move { drop(conn.await) }))
        }
        _ => {
            let (client, conn) = config
                .connect(url.connector()?)
                .await
                .map_err(pg_err("connect"))?;
            (client, tokio::spawn(async move { drop(conn.await) }))
        }
    };
    drop(task);
    Ok(client)
}

/// Applies the migrations this build has and the database lacks (what `magicpush migrate
/// --database-url` runs); the number applied. Safe to run from several nodes at once.
pub async fn migrate(url: &str) -> Result<u32, StoreError> {
    let url = tls::DatabaseUrl::parse(url)?;
    let client = connect(&url).await?;
    schema::migrate(&client).await
}

impl PostgresStore {
    /// Connects, migrates the schema (see [`migrate`]), checks the secrets key against the
    /// database (recording it in a new one) and starts the writer.
    pub async fn open(url: &str, secrets_key: Arc<SecretKey>) -> Result<Self, StoreError> {
        Self::open_with(url, secrets_key, PostgresOptions::default()).await
    }

    /// [`PostgresStore::open`] with options.
    pub async fn open_with(
        url: &str,
        secrets_key: Arc<SecretKey>,
        options: PostgresOptions,
    ) -> Result<Self, StoreError> {
        let parsed = tls::DatabaseUrl::parse(url)?;
        {
            let client = connect(&parsed).await?;
            schema::migrate(&client).await?;
        }
        let config = parsed.config()?;
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match parsed.mode {
            TlsMode::Off => Manager::from_config(config, NoTls, manager_config),
            _ => Manager::from_config(config, parsed.connector()?, manager_config),
        };
        let pool = Pool::builder(manager)
            // The readers, the writers and the identity lookups' one.
            .max_size(options.max_readers.max(1) + options.writers.max(1) + 1)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(30)))
            .create_timeout(Some(Duration::from_secs(10)))
            .build()
            .map_err(|e| StoreError::Database {
                op: "open",
                detail: e.to_string(),
            })?;
        {
            let c = pool.get().await.map_err(pool_err("open"))?;
            check_secrets(&c, &secrets_key).await?;
        }
        let capacity = options.max_queued_writes.max(1);
        let n = options.writers.max(1);
        let counters = Arc::new(Counters::default());
        let (mut writes, mut writers) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for _ in 0..n {
            let (tx, rx) = mpsc::channel((capacity / n).max(1));
            writes.push(tx);
            writers.push(tokio::spawn(writer::run(
                pool.clone(),
                rx,
                options.max_batch.max(1),
                Arc::clone(&counters),
            )));
        }
        Ok(PostgresStore {
            identities: identity::IdentityReads::start(pool.clone()),
            pool,
            writes,
            writers,
            counters,
            queue_capacity: capacity,
            secrets: secrets_key,
            url: parsed,
            origin: listen::new_origin(),
            runtime: tokio::runtime::Handle::current(),
            listener: std::sync::OnceLock::new(),
        })
    }

    /// Commits and writes so far.
    pub fn commit_stats(&self) -> CommitStats {
        CommitStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            pipelined: self.counters.pipelined.load(Ordering::Relaxed),
            pipeline_retries: self.counters.pipeline_retries.load(Ordering::Relaxed),
        }
    }

    async fn reader(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_err("connect"))
    }

    /// Queues a write; the server's own (waits for room when the queue is full).
    fn write<T, F>(&self, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c ClientWrapper) -> WorkFuture<'c, T> + Send + 'static,
    {
        self.submit(Once::new(work), None, Admission::Wait, Vec::new())
    }

    /// [`PostgresStore::write`] of devices `udids`: their rows are locked for the
    /// transaction, in order, before any write of it runs (see [`writer`]'s docs).
    fn write_devices<T, F>(&self, udids: Vec<String>, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c ClientWrapper) -> WorkFuture<'c, T> + Send + 'static,
    {
        self.submit(Once::new(work), None, Admission::Wait, udids)
    }

    /// Queues a write of device `udid` (its row is locked for the transaction, see
    /// [`writer`]'s docs): refused with [`StoreError::Overloaded`] when the queue is full.
    /// The work may run again: its effects are all in the database, so after a rolled-back
    /// attempt it runs anew. A batch of such writes, each for another device, has its
    /// statements pipelined.
    fn device_write<T, F>(&self, udid: String, work: F) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        F: for<'c> Fn(&'c ClientWrapper) -> WorkFuture<'c, T> + Send + 'static,
    {
        self.submit(Repeat::new(work), None, Admission::Shed, vec![udid])
    }

    fn submit<T, W>(
        &self,
        work: W,
        after_commit: Option<AfterCommit<T>>,
        admission: Admission,
        devices: Vec<String>,
    ) -> StoreFuture<'static, T>
    where
        T: Send + 'static,
        W: Work<T>,
    {
        let tx = self.writes[writer_for(&devices, self.writes.len())].clone();
        let (job, rx) = Job::submit(work, after_commit, devices);
        let counters = Arc::clone(&self.counters);
        counters.queued.fetch_add(1, Ordering::Relaxed);
        let unsent = || counters.queued.fetch_sub(1, Ordering::Relaxed);
        // Handed to the writer now when there is room: writes made together share a commit.
        let waiting = match tx.try_send(job) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                unsent();
                return Box::pin(std::future::ready(Err(StoreError::Closed)));
            }
            Err(mpsc::error::TrySendError::Full(job)) => match admission {
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
            if let Some(job) = waiting {
                if tx.send(job).await.is_err() {
                    counters.queued.fetch_sub(1, Ordering::Relaxed);
                    return Err(StoreError::Closed);
                }
            }
            rx.await.map_err(|_| StoreError::Closed)?
        })
    }

    /// `secret` sealed for `column` of `udid`.
    fn seal(&self, column: &str, udid: &str, secret: &Secret) -> Result<Secret, StoreError> {
        Ok(Secret::new(self.secrets.seal(
            column,
            udid,
            secret.expose(),
        )?))
    }

    /// A stored secret as the caller sees it.
    fn unseal(&self, column: &str, udid: &str, stored: Vec<u8>) -> Result<Secret, StoreError> {
        Ok(Secret::new(self.secrets.open(column, udid, &stored)?))
    }

    /// A device read from the database with its secrets opened.
    fn unseal_device(&self, mut d: Device) -> Result<Device, StoreError> {
        if let Some(t) = d.unlock_token.take() {
            d.unlock_token = Some(self.unseal("unlock_token", &d.udid, t.expose().to_vec())?);
        }
        if let Some(t) = d.bootstrap_token.take() {
            d.bootstrap_token =
                Some(self.unseal("bootstrap_token", &d.udid, t.expose().to_vec())?);
        }
        Ok(d)
    }

    fn writer_health(&self) -> Result<(), StoreError> {
        if self.writers.iter().any(|w| w.is_finished()) {
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

    async fn read_devices(
        &self,
        filter: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Device>, StoreError> {
        let c = self.reader().await?;
        let sql = format!("{} {filter} ORDER BY udid", *SELECT_DEVICES);
        let rows = query(&c, "read devices", &sql, params).await?;
        rows.iter()
            .map(|r| device_from_row(r).and_then(|d| self.unseal_device(d)))
            .collect()
    }
}

/// Checks the key against the database's check value, recording it in a new database (two
/// nodes opening a new database together: the first value written is the one kept).
async fn check_secrets(c: &ClientWrapper, key: &SecretKey) -> Result<(), StoreError> {
    let value = key.check_value()?;
    exec(
        c,
        "record secrets check",
        "INSERT INTO meta (name, value) VALUES ('secrets_check', $1) ON CONFLICT (name) DO NOTHING",
        &[&value],
    )
    .await?;
    let row = query_opt(
        c,
        "read secrets check",
        "SELECT value FROM meta WHERE name = 'secrets_check'",
        &[],
    )
    .await?;
    let stored: Vec<u8> = match row {
        Some(row) => get(&row, 0, "read secrets check")?,
        None => Vec::new(),
    };
    if key.matches_check(&stored) {
        Ok(())
    } else {
        Err(StoreError::SecretsKey(
            "--secrets-key-file is not the key this database's secrets were encrypted with".into(),
        ))
    }
}

impl CheckinStore for PostgresStore {
    fn authenticate<'a>(
        &'a self,
        msg: &'a Authenticate,
        identity: Option<&'a BoundIdentity>,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<[u8; 32]>> {
        let (msg, identity, at) = (Arc::new(msg.clone()), identity.cloned(), truncate_ms(at));
        let identity = Arc::new(identity);
        self.device_write(msg.udid.clone(), move |c| {
            let (msg, identity) = (Arc::clone(&msg), Arc::clone(&identity));
            Box::pin(async move {
                rows::authenticate_and_drop_queue(c, &msg, identity.as_ref().as_ref(), at).await
            })
        })
    }

    fn token_update<'a>(
        &'a self,
        msg: &'a TokenUpdate,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Enrollment> {
        let (mut msg, at) = (msg.clone(), truncate_ms(at));
        if let Some(unlock) = msg.unlock_token.take() {
            match self.seal("unlock_token", &msg.udid, &unlock) {
                Ok(sealed) => msg.unlock_token = Some(sealed),
                Err(e) => return Box::pin(std::future::ready(Err(e))),
            }
        }
        let msg = Arc::new(msg);
        self.device_write(msg.udid.clone(), move |c| {
            let msg = Arc::clone(&msg);
            Box::pin(async move {
                let Some(user) = &msg.user else {
                    return upsert_for_token_update(c, &msg, at).await;
                };
                let mut d = load_device(c, &msg.udid)
                    .await?
                    .unwrap_or_else(|| Device::new(msg.udid.as_str()));
                apply_contact(&mut d, at);
                save_device(c, &d).await?;
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
                )
                .await?;
                Ok(Enrollment::UserChannel)
            })
        })
    }

    fn check_out<'a>(&'a self, udid: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()> {
        let (udid, at): (Arc<str>, _) = (udid.into(), truncate_ms(at));
        self.device_write(udid.to_string(), move |c| {
            let udid = Arc::clone(&udid);
            Box::pin(async move {
                let mut d = require_device(c, &udid).await?;
                logic::check_out(&mut d, at);
                save_device(c, &d).await?;
                // The enrollment ended: nothing queued for it may reach a later one.
                drop_queue(c, &udid).await
            })
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
            .map(|t| self.seal("bootstrap_token", &udid, t))
            .transpose()
        {
            Ok(t) => t,
            Err(e) => return Box::pin(std::future::ready(Err(e))),
        };
        self.device_write(udid.clone(), move |c| {
            let (udid, token) = (udid.clone(), token.clone());
            Box::pin(async move {
                let mut d = require_device(c, &udid).await?;
                d.bootstrap_token = token;
                apply_contact(&mut d, at);
                save_device(c, &d).await
            })
        })
    }

    fn bootstrap_token<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<Secret>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let row = query_opt(
                &c,
                "read bootstrap token",
                "SELECT bootstrap_token FROM devices WHERE udid = $1",
                &[&udid],
            )
            .await?;
            let stored: Option<Vec<u8>> = match row {
                Some(row) => get(&row, 0, "read bootstrap token")?,
                None => None,
            };
            stored
                .map(|t| self.unseal("bootstrap_token", udid, t))
                .transpose()
        })
    }

    fn touch<'a>(&'a self, udid: &'a str, at: OffsetDateTime) -> StoreFuture<'a, ()> {
        let (udid, at): (Arc<str>, _) = (udid.into(), truncate_ms(at));
        self.device_write(udid.to_string(), move |c| {
            let udid = Arc::clone(&udid);
            Box::pin(async move {
                let mut d = require_device(c, &udid).await?;
                apply_contact(&mut d, at);
                save_device(c, &d).await
            })
        })
    }

    fn users<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<User>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let rows = query(
                &c,
                "read users",
                "SELECT udid, user_id, short_name, long_name, token, push_magic, updated_at
                 FROM users WHERE udid = $1 ORDER BY user_id",
                &[&udid],
            )
            .await?;
            rows.iter().map(user_from_row).collect()
        })
    }

    fn delete_device<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, bool> {
        let udid = udid.to_owned();
        self.write_devices(vec![udid.clone()], move |c| {
            Box::pin(async move {
                const OP: &str = "delete device";
                for sql in [
                    "DELETE FROM queue WHERE udid = $1",
                    "DELETE FROM users WHERE udid = $1",
                    "DELETE FROM results WHERE udid = $1",
                ] {
                    exec(c, OP, sql, &[&udid]).await?;
                }
                let removed = exec(c, OP, "DELETE FROM devices WHERE udid = $1", &[&udid]).await?;
                Ok(removed > 0)
            })
        })
    }

    fn delete_all_devices(&self) -> StoreFuture<'_, u64> {
        self.write(move |c| {
            Box::pin(async move {
                const OP: &str = "delete all devices";
                for sql in [
                    "DELETE FROM queue",
                    "DELETE FROM users",
                    "DELETE FROM results",
                    "DELETE FROM commands",
                ] {
                    exec(c, OP, sql, &[]).await?;
                }
                exec(c, OP, "DELETE FROM devices", &[]).await
            })
        })
    }

    fn delete_topic_devices<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, u64> {
        let topic = topic.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                const OP: &str = "delete a topic's devices";
                for sql in [
                    "DELETE FROM queue WHERE udid IN (SELECT udid FROM devices WHERE topic = $1)",
                    "DELETE FROM users WHERE udid IN (SELECT udid FROM devices WHERE topic = $1)",
                    "DELETE FROM results WHERE udid IN (SELECT udid FROM devices WHERE topic = $1)",
                ] {
                    exec(c, OP, sql, &[&topic]).await?;
                }
                exec(c, OP, "DELETE FROM devices WHERE topic = $1", &[&topic]).await
            })
        })
    }
}

impl IdentityStore for PostgresStore {
    /// Read from the database every time: another node may have bound the device to another
    /// certificate since (an in-process cache could not hear of it). One index lookup.
    fn identity_hash<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<[u8; 32]>> {
        Box::pin(self.identities.get(udid))
    }
}

/// What [`queue_for`] does for each device.
struct QueueFor<'a> {
    uuid: &'a str,
    request_type: &'a str,
    at_ms: i64,
    skip_if_queued: bool,
}

/// Queues a stored command for each of `udids` that `known` holds, in the order given (the
/// others are listed as unknown), skipping those with one of its RequestType queued when
/// asked: one multi-row insert for the chunk.
async fn queue_for(
    c: &ClientWrapper,
    q: QueueFor<'_>,
    udids: Vec<String>,
    known: &HashSet<String>,
) -> Result<EnqueueOutcome, StoreError> {
    const OP: &str = "enqueue";
    let mut out = EnqueueOutcome {
        command_uuid: q.uuid.to_owned(),
        ..EnqueueOutcome::default()
    };
    let already: HashSet<String> = if q.skip_if_queued && !known.is_empty() {
        let candidates: Vec<&str> = known.iter().map(String::as_str).collect();
        query(
            c,
            OP,
            "SELECT DISTINCT udid FROM queue WHERE udid = ANY($1::text[]) AND request_type = $2",
            &[&candidates, &q.request_type],
        )
        .await?
        .iter()
        .map(|r| get::<String>(r, 0, OP))
        .collect::<Result<_, _>>()?
    } else {
        HashSet::new()
    };
    for udid in udids {
        if !known.contains(&udid) {
            out.unknown.push(udid);
        } else if already.contains(&udid) {
            out.already_queued.push(udid);
        } else {
            out.queued.push(udid);
        }
    }
    if !out.queued.is_empty() {
        exec(
            c,
            OP,
            "INSERT INTO queue (udid, uuid, request_type, queued_at)
             SELECT u.udid, $2, $3, $4 FROM unnest($1::text[]) WITH ORDINALITY AS u (udid, n)
             ORDER BY u.n",
            &[&out.queued, &q.uuid, &q.request_type, &q.at_ms],
        )
        .await?;
    }
    Ok(out)
}

impl QueueStore for PostgresStore {
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
        let at_ms = to_ms(truncate_ms(at));
        self.write_devices(udids.clone(), move |c| {
            Box::pin(async move {
                const OP: &str = "enqueue";
                let inserted = query_opt(
                    c,
                    OP,
                    "INSERT INTO commands (uuid, request_type, body, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (uuid) DO NOTHING RETURNING uuid",
                    &[&uuid, &request_type, &body, &at_ms, &expires_at],
                )
                .await?;
                if inserted.is_none() {
                    return Err(StoreError::DuplicateCommand { uuid });
                }
                let known: HashSet<String> = if udids.is_empty() {
                    HashSet::new()
                } else {
                    query(
                        c,
                        OP,
                        "SELECT udid FROM devices WHERE udid = ANY($1::text[])",
                        &[&udids],
                    )
                    .await?
                    .iter()
                    .map(|r| get::<String>(r, 0, OP))
                    .collect::<Result<_, _>>()?
                };
                let q = QueueFor {
                    uuid: &uuid,
                    request_type: &request_type,
                    at_ms,
                    skip_if_queued: mode == EnqueueMode::SkipIfQueued,
                };
                queue_for(c, q, udids, &known).await
            })
        })
    }

    fn has_queued<'a>(&'a self, udid: &'a str, request_type: &'a str) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let c = self.reader().await?;
            let row = query_opt(
                &c,
                "read queue",
                "SELECT 1 FROM queue WHERE udid = $1 AND request_type = $2 LIMIT 1",
                &[&udid, &request_type],
            )
            .await?;
            Ok(row.is_some())
        })
    }

    fn next_command<'a>(
        &'a self,
        udid: &'a str,
        skip_not_now: bool,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, Option<QueuedCommand>> {
        Box::pin(async move {
            let c = self.reader().await?;
            next_queued(&c, udid, skip_not_now, truncate_ms(at)).await
        })
    }

    fn queued<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<QueuedCommand>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let rows = query(&c, "read queue", SELECT_QUEUED, &[&udid, &false, &i64::MIN]).await?;
            rows.iter().map(queued_from_row).collect()
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
        let error_chain = report.error_chain.clone();
        // Encoded outside the writer: it is the one serial resource.
        let raw = command_uuid.as_ref().map(|_| report.raw_xml());
        let report = Report {
            udid: udid.clone(),
            user_id: None,
            status,
            command_uuid: command_uuid.clone(),
            error_chain: Vec::new(),
            device_info: report.device_info.clone(),
            raw: plist::Dictionary::new(),
        };
        let written = Arc::new((report, error_chain, raw));
        self.device_write(udid.clone(), move |c| {
            let written = Arc::clone(&written);
            Box::pin(async move {
                let (report, error_chain, raw) = &*written;
                rows::record_report(c, report, error_chain, raw.as_deref(), at).await
            })
        })
    }

    fn results<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Vec<CommandResult>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let rows = query(
                &c,
                "read results",
                "SELECT udid, uuid, request_type, status, error_chain, raw, at
                 FROM results WHERE udid = $1 ORDER BY id",
                &[&udid],
            )
            .await?;
            rows.iter().map(result_from_row).collect()
        })
    }

    fn cancel_command<'a>(&'a self, uuid: &'a str) -> StoreFuture<'a, Option<usize>> {
        let uuid = uuid.to_owned();
        self.write(move |c| {
            Box::pin(async move {
                const OP: &str = "cancel command";
                let known = query_opt(c, OP, "SELECT 1 FROM commands WHERE uuid = $1", &[&uuid])
                    .await?
                    .is_some();
                if !known {
                    return Ok(None);
                }
                let n = exec(c, OP, "DELETE FROM queue WHERE uuid = $1", &[&uuid]).await?;
                Ok(Some(usize::try_from(n).unwrap_or(usize::MAX)))
            })
        })
    }
}

impl PushStore for PostgresStore {
    fn record_push_attempts<'a>(
        &'a self,
        udids: &'a [String],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (udids, at) = (udids.to_vec(), truncate_ms(at));
        self.write_devices(udids.clone(), move |c| {
            Box::pin(async move {
                if udids.is_empty() {
                    return Ok(());
                }
                let names: Vec<&str> = udids.iter().map(String::as_str).collect();
                PUSH_ATTEMPT
                    .run_many(c, "record push attempt", &names, &push_attempt_values(at))
                    .await
                    .map(drop)
            })
        })
    }

    fn withdraw_push_attempts<'a>(
        &'a self,
        udids: &'a [String],
        attempted_at: OffsetDateTime,
    ) -> StoreFuture<'a, u64> {
        let (udids, at_ms) = (udids.to_vec(), to_ms(truncate_ms(attempted_at)));
        self.write_devices(udids.clone(), move |c| {
            Box::pin(async move {
                exec(
                    c,
                    "withdraw push attempt",
                    "UPDATE devices SET last_push_at = NULL
                     WHERE udid = ANY($1::text[]) AND last_push_at = $2 AND push_outcome IS NULL
                       AND first_report_after_push_at IS NULL",
                    &[&udids, &at_ms],
                )
                .await
            })
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
        self.write_devices(udids.clone(), move |c| {
            Box::pin(async move {
                let at_ms = to_ms(at);
                exec(
                    c,
                    "enqueue",
                    "INSERT INTO commands (uuid, request_type, body, created_at, expires_at)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (uuid) DO NOTHING",
                    &[&uuid, &request_type, &body, &at_ms, &expires_at],
                )
                .await?;
                // The push attempts, one statement: the devices it changed are the known ones.
                let known: HashSet<String> = if udids.is_empty() {
                    HashSet::new()
                } else {
                    let names: Vec<&str> = udids.iter().map(String::as_str).collect();
                    PUSH_ATTEMPT
                        .run_many(c, "record push attempt", &names, &push_attempt_values(at))
                        .await?
                        .into_iter()
                        .collect()
                };
                let q = QueueFor {
                    uuid: &uuid,
                    request_type: &request_type,
                    at_ms,
                    skip_if_queued: true,
                };
                queue_for(c, q, udids, &known).await
            })
        })
    }

    fn record_push_outcome<'a>(
        &'a self,
        udid: &'a str,
        outcome: &'a PushOutcome,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (udid, outcome, at) = (udid.to_owned(), outcome.clone(), truncate_ms(at));
        self.write_devices(vec![udid.clone()], move |c| {
            Box::pin(async move {
                let changed = PUSH_OUTCOME
                    .run_many(
                        c,
                        "record push outcome",
                        &[udid.as_str()],
                        &push_outcome_values(&outcome, at),
                    )
                    .await?;
                if changed.is_empty() {
                    Err(StoreError::UnknownDevice { udid })
                } else {
                    Ok(())
                }
            })
        })
    }

    fn record_push_outcomes<'a>(
        &'a self,
        outcomes: &'a [(String, PushOutcome)],
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let at = truncate_ms(at);
        // Applied in order, a device's last outcome is the one that stays (each write sets
        // the same columns at the same time): keep it, then write each distinct outcome once
        // for all its devices.
        let mut last: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
        for (i, (udid, _)) in outcomes.iter().enumerate() {
            last.insert(udid.as_str(), i);
        }
        let mut groups: Vec<(PushOutcome, Vec<String>)> = Vec::new();
        for (i, (udid, outcome)) in outcomes.iter().enumerate() {
            if last.get(udid.as_str()) != Some(&i) {
                continue;
            }
            match groups.iter_mut().find(|(o, _)| o == outcome) {
                Some((_, udids)) => udids.push(udid.clone()),
                None => groups.push((outcome.clone(), vec![udid.clone()])),
            }
        }
        let locked: Vec<String> = groups.iter().flat_map(|(_, u)| u.iter().cloned()).collect();
        self.write_devices(locked, move |c| {
            Box::pin(async move {
                for (outcome, udids) in &groups {
                    let names: Vec<&str> = udids.iter().map(String::as_str).collect();
                    PUSH_OUTCOME
                        .run_many(
                            c,
                            "record push outcome",
                            &names,
                            &push_outcome_values(outcome, at),
                        )
                        .await?;
                }
                Ok(())
            })
        })
    }
}

impl PostgresStore {
    /// One page of devices: `sql` with `params` bound.
    async fn device_page(
        &self,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Device>, StoreError> {
        let c = self.reader().await?;
        let rows = query(&c, "read devices", sql, params).await?;
        rows.iter()
            .map(|r| device_from_row(r).and_then(|d| self.unseal_device(d)))
            .collect()
    }
}

impl ListingStore for PostgresStore {
    fn devices(&self) -> StoreFuture<'_, Vec<Device>> {
        Box::pin(self.read_devices("", &[]))
    }

    fn devices_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            match after {
                Some(after) => {
                    self.device_page(&SELECT_DEVICES_AFTER, &[&after, &limit])
                        .await
                }
                None => self.device_page(&SELECT_DEVICES_FIRST, &[&limit]).await,
            }
        })
    }

    fn topic_devices_page<'a>(
        &'a self,
        topic: &'a str,
        after: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            match after {
                Some(after) => {
                    let params: &[Param<'_>] = &[&topic, &after, &limit];
                    self.device_page(&SELECT_TOPIC_DEVICES_AFTER, params).await
                }
                None => {
                    let params: &[Param<'_>] = &[&topic, &limit];
                    self.device_page(&SELECT_TOPIC_DEVICES_FIRST, params).await
                }
            }
        })
    }

    fn devices_page_by_topic<'a>(
        &'a self,
        after: Option<(&'a str, &'a str)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<Device>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            match after {
                Some((topic, udid)) => {
                    let params: &[Param<'_>] = &[&topic, &udid, &limit];
                    self.device_page(&SELECT_DEVICES_BY_TOPIC_AFTER, params)
                        .await
                }
                None => {
                    self.device_page(&SELECT_DEVICES_BY_TOPIC_FIRST, &[&limit])
                        .await
                }
            }
        })
    }

    fn device<'a>(&'a self, udid: &'a str) -> StoreFuture<'a, Option<Device>> {
        Box::pin(async move {
            let c = self.reader().await?;
            load_device(&c, udid)
                .await?
                .map(|d| self.unseal_device(d))
                .transpose()
        })
    }

    fn pushable(&self) -> StoreFuture<'_, Vec<Device>> {
        Box::pin(async move {
            let mut devices = self
                .read_devices("WHERE enrolled_at IS NOT NULL AND token IS NOT NULL", &[])
                .await?;
            devices.retain(Device::is_pushable);
            Ok(devices)
        })
    }

    fn count(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let c = self.reader().await?;
            let rows = query(&c, "count devices", "SELECT count(*) FROM devices", &[]).await?;
            let n: i64 = match rows.first() {
                Some(row) => get(row, 0, "count devices")?,
                None => 0,
            };
            Ok(usize::try_from(n).unwrap_or(0))
        })
    }

    fn enrolled_topics(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, u64>> {
        Box::pin(async move {
            const OP: &str = "read topics";
            let c = self.reader().await?;
            // `Device::is_enrolled() && !Device::is_checked_out()`, in SQL.
            let rows = query(
                &c,
                OP,
                "SELECT COALESCE(topic, ''), count(*) FROM devices
                 WHERE enrolled_at IS NOT NULL AND token IS NOT NULL
                   AND push_magic IS NOT NULL
                   AND (checked_out_at IS NULL
                        OR (token_updated_at IS NOT NULL AND checked_out_at < token_updated_at))
                 GROUP BY 1",
                &[],
            )
            .await?;
            rows.iter()
                .map(|r| {
                    let n: i64 = get(r, 1, OP)?;
                    Ok((get(r, 0, OP)?, n.max(0) as u64))
                })
                .collect()
        })
    }
}

impl Store for PostgresStore {
    fn health(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.writer_health()?;
            let c = self.reader().await?;
            query(&c, "health", "SELECT 1", &[]).await.map(drop)
        })
    }
}
