//! Group commit: one task owns the write connection, takes every write waiting in its channel
//! (up to a batch), applies them in one transaction, commits once, then answers every waiter.
//!
//! PostgreSQL aborts the whole transaction when one statement fails, so each write runs in a
//! savepoint: a write that fails is rolled back to it and the others commit. The savepoint
//! costs no round trip of its own: the statement that ends one write's savepoint also opens
//! the next one's (`RELEASE w; SAVEPOINT w`), and the last write's ends with the `COMMIT`.
//!
//! A check-in's writes are each for one device and may run again (their effects are all in
//! the transaction). A batch made only of such writes, no two for the same device, first
//! runs them all at once without savepoints: their statements are pipelined on the
//! connection, so the batch takes as many round trips as its longest write (two or three)
//! instead of the sum of them all. Should any of them fail, that attempt is rolled back
//! whole and the batch runs again one write after another in savepoints, as above, so that
//! one failing write still fails alone.
//!
//! Several nodes write to one database, each with its own writer: a device's report may reach
//! two nodes at once (a load balancer spreading one device's requests, a report re-sent after
//! a timeout). So each transaction first locks the rows of the devices its device writes
//! and server writes are for (`SELECT … FOR NO KEY UPDATE`, in UDID order, pipelined with
//! the `BEGIN`): a device's writes on two nodes run one after the other, the second seeing
//! what the first committed (at read committed each statement sees the commits before it),
//! and two transactions locking the same devices lock them in the same order, so they cannot
//! deadlock over them. (`NO KEY`: rows of other tables naming the device, such as queue
//! rows, may still be inserted meanwhile; a write that deletes a device takes the stronger
//! lock itself.) Should the lock still meet a deadlock or a serialisation failure, nothing
//! has been applied yet: the transaction is rolled back and begun again.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use deadpool_postgres::{ClientWrapper, Object, Pool};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::{ToSql, Type};

use magicpush_store::StoreError;

use crate::pool_err;

/// What a write's work returns: a future borrowing the writer's connection.
pub(crate) type WorkFuture<'c, T> =
    Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'c>>;

/// A write waiting for the writer task.
pub(crate) trait PendingWrite: Send {
    /// Runs inside the open transaction (in its savepoint). False if the write failed.
    fn apply<'c>(
        &'c mut self,
        c: &'c ClientWrapper,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>>;
    /// Answers the waiter once the batch's commit is known.
    fn complete(self: Box<Self>, commit: &Result<(), StoreError>);
    /// The devices whose rows the transaction locks before this write runs.
    fn devices(&self) -> &[String];
    /// Whether `apply` may run again after the transaction it ran in was rolled back.
    fn repeatable(&self) -> bool;
    /// Forgets the result of an attempt that was rolled back.
    fn forget(&mut self);
}

/// Runs once a write's transaction committed, before its waiter hears of it.
pub(crate) type AfterCommit<T> = Box<dyn FnOnce(&T) + Send>;

/// A write's work: run once, or again after a rolled-back attempt.
pub(crate) trait Work<T>: Send + 'static {
    fn run<'c>(&mut self, c: &'c ClientWrapper) -> WorkFuture<'c, T>;
    fn repeatable(&self) -> bool;
}

/// Work that runs once (it may move what it captured into its future).
pub(crate) struct Once<F>(Option<F>);

impl<T, F> Work<T> for Once<F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c ClientWrapper) -> WorkFuture<'c, T> + Send + 'static,
{
    fn run<'c>(&mut self, c: &'c ClientWrapper) -> WorkFuture<'c, T> {
        match self.0.take() {
            Some(work) => work(c),
            None => Box::pin(std::future::ready(Err(StoreError::Closed))),
        }
    }

    fn repeatable(&self) -> bool {
        false
    }
}

/// Work that may run again: its effects are all in the transaction, and a second run after
/// a rollback answers as if the first had never been.
pub(crate) struct Repeat<F>(F);

impl<T, F> Work<T> for Repeat<F>
where
    T: Send + 'static,
    F: for<'c> Fn(&'c ClientWrapper) -> WorkFuture<'c, T> + Send + 'static,
{
    fn run<'c>(&mut self, c: &'c ClientWrapper) -> WorkFuture<'c, T> {
        (self.0)(c)
    }

    fn repeatable(&self) -> bool {
        true
    }
}

impl<F> Once<F> {
    pub(crate) fn new(work: F) -> Self {
        Once(Some(work))
    }
}

impl<F> Repeat<F> {
    pub(crate) fn new(work: F) -> Self {
        Repeat(work)
    }
}

pub(crate) struct Job<T, W> {
    work: W,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    after_commit: Option<AfterCommit<T>>,
    devices: Vec<String>,
}

impl<T, W> Job<T, W>
where
    T: Send + 'static,
    W: Work<T>,
{
    pub(crate) fn submit(
        work: W,
        after_commit: Option<AfterCommit<T>>,
        devices: Vec<String>,
    ) -> (
        Box<dyn PendingWrite>,
        oneshot::Receiver<Result<T, StoreError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            work,
            result: None,
            reply,
            after_commit,
            devices,
        };
        (Box::new(job), rx)
    }
}

impl<T, W> PendingWrite for Job<T, W>
where
    T: Send + 'static,
    W: Work<T>,
{
    fn apply<'c>(
        &'c mut self,
        c: &'c ClientWrapper,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>> {
        let work = self.work.run(c);
        Box::pin(async move {
            let result = work.await;
            let ok = result.is_ok();
            self.result = Some(result);
            ok
        })
    }

    fn complete(self: Box<Self>, commit: &Result<(), StoreError>) {
        let answer = match (self.result, commit) {
            (Some(Err(e)), _) => Err(e),
            (_, Err(e)) => Err(e.clone()),
            (Some(Ok(v)), Ok(())) => {
                if let Some(after) = self.after_commit {
                    after(&v);
                }
                Ok(v)
            }
            (None, Ok(())) => Err(StoreError::Closed),
        };
        // The waiter may have gone (request cancelled); the write is committed anyway.
        let _ = self.reply.send(answer);
    }

    fn devices(&self) -> &[String] {
        &self.devices
    }

    fn repeatable(&self) -> bool {
        self.work.repeatable()
    }

    fn forget(&mut self) {
        self.result = None;
    }
}

/// Counters the writer keeps, readable while it runs.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    /// Batches run with their writes pipelined (see the module's docs).
    pub(crate) pipelined: AtomicU64,
    /// Pipelined attempts rolled back and run again one write at a time.
    pub(crate) pipeline_retries: AtomicU64,
    /// Writes sent and not yet answered.
    pub(crate) queued: AtomicUsize,
    progress_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            pipelined: AtomicU64::new(0),
            pipeline_retries: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            progress_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Counters {
    fn progressed(&self) {
        let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.progress_ms.store(ms, Ordering::Relaxed);
    }

    /// How long since the writer last showed progress.
    pub(crate) fn since_progress(&self) -> Duration {
        let last = Duration::from_millis(self.progress_ms.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(last)
    }
}

/// The writer task's loop. Returns when every sender is gone and the channel is drained.
pub(crate) async fn run(
    pool: Pool,
    mut rx: mpsc::Receiver<Box<dyn PendingWrite>>,
    max_batch: usize,
    counters: Arc<Counters>,
) {
    let mut conn: Option<Object> = None;
    loop {
        counters.progressed();
        let Some(first) = rx.recv().await else { break };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("magicpush_store_commit_batch_size").record(batch.len() as f64);
        // The connection is kept between batches; a closed one is replaced from the pool.
        if conn.as_ref().is_some_and(|c| c.is_closed()) {
            conn = None;
        }
        if conn.is_none() {
            match pool.get().await {
                Ok(c) => conn = Some(c),
                Err(e) => {
                    let failed = Err(pool_err("connect the writer")(e));
                    finish(&counters, batch, &failed);
                    continue;
                }
            }
        }
        let Some(client) = conn.as_deref() else {
            continue;
        };
        let (commit, state) = apply_batch(client, &mut batch, &counters).await;
        if let Err(e) = &commit {
            tracing::error!(error = %e, writes = batch.len(), "store commit failed");
        }
        if state == ConnState::Unknown {
            // A failed batch whose ROLLBACK failed: the connection may still be in the
            // transaction. It leaves the pool (closed, not reused).
            if let Some(c) = conn.take() {
                drop(Object::take(c));
            }
        }
        finish(&counters, batch, &commit);
    }
}

fn finish(counters: &Counters, batch: Vec<Box<dyn PendingWrite>>, commit: &Result<(), StoreError>) {
    counters.commits.fetch_add(1, Ordering::Relaxed);
    counters
        .writes
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    counters.queued.fetch_sub(batch.len(), Ordering::Relaxed);
    for job in batch {
        job.complete(commit);
    }
}

/// What the connection is left in after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnState {
    /// No transaction open.
    Clean,
    /// ROLLBACK failed: not to be trusted.
    Unknown,
}

/// The statement that ends write `i` (ok or not) and opens the next one's savepoint, or
/// commits after the last.
pub(crate) fn between(ok: bool, last: bool) -> &'static str {
    match (ok, last) {
        (true, false) => "RELEASE SAVEPOINT w; SAVEPOINT w",
        (false, false) => "ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w; SAVEPOINT w",
        (true, true) => "COMMIT",
        (false, true) => "ROLLBACK TO SAVEPOINT w; COMMIT",
    }
}

pub(crate) async fn apply_batch(
    c: &ClientWrapper,
    batch: &mut [Box<dyn PendingWrite>],
    counters: &Counters,
) -> (Result<(), StoreError>, ConnState) {
    if pipelinable(batch) {
        match apply_pipelined(c, batch).await {
            Pipelined::Done(commit, state) => {
                counters.pipelined.fetch_add(1, Ordering::Relaxed);
                return (commit, state);
            }
            Pipelined::RolledBack => {
                // Its errors may be the aborted transaction's, not the writes' own.
                for job in batch.iter_mut() {
                    job.forget();
                }
                counters.pipeline_retries.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("magicpush_store_pipeline_retries_total").increment(1);
            }
        }
    }
    let devices = locked_devices(batch);
    let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
    let mut attempt = 1;
    loop {
        match begin(c, &devices, true).await {
            Ok(()) => break,
            Err(e) => {
                // Nothing was written: a deadlock or serialisation failure over the locks is
                // retried; anything else (a broken connection) fails the batch.
                let state = rollback(c).await;
                if attempt < BEGIN_ATTEMPTS && state == ConnState::Clean && is_retryable(&e) {
                    tracing::debug!(error = %e, attempt, "store lock retried");
                    attempt += 1;
                    continue;
                }
                return (Err(crate::pg_err("begin")(e)), state);
            }
        }
    }
    // Whether the write before succeeded; its savepoint is still open.
    let mut before: Option<bool> = None;
    for job in batch.iter_mut() {
        let ok = match before {
            None => job.apply(c).await,
            Some(ok) => {
                // The statement closing the write before and opening this one's savepoint is
                // sent first, and this write's first statements behind it, in one round trip.
                // Should it fail, the transaction is aborted: this write fails too and the
                // batch rolls back whole.
                let (switched, applied) = tokio::join!(
                    biased;
                    c.batch_execute(between(ok, false)),
                    job.apply(c),
                );
                if let Err(e) = switched {
                    let failed = Err(crate::pg_err("savepoint")(e));
                    return (failed, rollback(c).await);
                }
                applied
            }
        };
        before = Some(ok);
    }
    if let Err(e) = c.batch_execute(between(before.unwrap_or(true), true)).await {
        let failed = Err(crate::pg_err("commit")(e));
        return (failed, rollback(c).await);
    }
    (Ok(()), ConnState::Clean)
}

/// Whether the batch's writes may run all at once, their statements pipelined: each may run
/// again (should the attempt fail, it is rolled back and run one write after another in
/// savepoints), each is a device's write, and no two are for the same device (their order
/// would then matter). Writes of distinct devices touch distinct rows; where they could
/// still meet (two devices claiming one identity certificate), a unique index fails one of
/// them and the attempt falls back.
pub(crate) fn pipelinable(batch: &[Box<dyn PendingWrite>]) -> bool {
    if batch.len() < 2 {
        return false;
    }
    let mut seen = std::collections::HashSet::new();
    batch.iter().all(|job| {
        job.repeatable()
            && !job.devices().is_empty()
            && job.devices().iter().all(|udid| seen.insert(udid.as_str()))
    })
}

/// Every device the batch's writes lock, in UDID order (the order they are locked in).
fn locked_devices(batch: &[Box<dyn PendingWrite>]) -> Vec<String> {
    let mut devices: Vec<String> = batch
        .iter()
        .flat_map(|j| j.devices().iter().cloned())
        .collect();
    devices.sort_unstable();
    devices.dedup();
    devices
}

/// How a pipelined attempt ended.
enum Pipelined {
    /// Committed, or its commit failed: the batch's outcome.
    Done(Result<(), StoreError>, ConnState),
    /// A write failed, or the lock: nothing was applied, the connection is clean, and the
    /// batch is to run again one write at a time.
    RolledBack,
}

/// Runs every write of the batch at once in one transaction: their statements are sent
/// without waiting for each other's answers (the `BEGIN` and the locks ahead of them), so
/// the batch takes as many round trips as its longest write rather than all of them.
async fn apply_pipelined(c: &ClientWrapper, batch: &mut [Box<dyn PendingWrite>]) -> Pipelined {
    let devices = locked_devices(batch);
    let devices: Vec<&str> = devices.iter().map(String::as_str).collect();
    // `biased`: the `BEGIN` and the locks are sent before any write's statement.
    let applied = futures_util::future::join_all(batch.iter_mut().map(|job| job.apply(c)));
    let (began, applied) = tokio::join!(biased; begin(c, &devices, false), applied);
    if began.is_err() || applied.contains(&false) {
        return match rollback(c).await {
            ConnState::Clean => Pipelined::RolledBack,
            state => {
                let failed = match began {
                    Err(e) => crate::pg_err("begin")(e),
                    Ok(()) => StoreError::Unavailable {
                        op: "roll back a batch",
                        detail: "the connection failed after a write failed".into(),
                    },
                };
                Pipelined::Done(Err(failed), state)
            }
        };
    }
    match c.batch_execute("COMMIT").await {
        Ok(()) => Pipelined::Done(Ok(()), ConnState::Clean),
        Err(e) => Pipelined::Done(Err(crate::pg_err("commit")(e)), rollback(c).await),
    }
}

/// Times a batch's `BEGIN` and its device locks are tried before the batch fails.
const BEGIN_ATTEMPTS: u32 = 5;

/// Locks the devices' rows in UDID order (the database's); a device not stored yet has no
/// row to lock (its first write creates it, and `ON CONFLICT` settles creations racing).
pub(crate) const LOCK_DEVICES: &str =
    "SELECT udid FROM devices WHERE udid = ANY($1::text[]) ORDER BY udid FOR NO KEY UPDATE";

/// Opens the transaction, locks `devices` and (with `savepoint`) opens the first write's
/// savepoint, in one round trip. Its first poll sends every statement, so statements sent
/// after that poll run inside the transaction.
async fn begin(
    c: &ClientWrapper,
    devices: &[&str],
    savepoint: bool,
) -> Result<(), tokio_postgres::Error> {
    if devices.is_empty() {
        return c
            .batch_execute(if savepoint {
                "BEGIN; SAVEPOINT w"
            } else {
                "BEGIN"
            })
            .await;
    }
    // Unnamed, so planned for these devices each time: a plan kept from when the table was
    // small (a sequential scan) would read every device for each batch.
    let params: [(&(dyn ToSql + Sync), Type); 1] = [(&devices, Type::TEXT_ARRAY)];
    let (began, locked, saved) = tokio::join!(
        biased;
        c.batch_execute("BEGIN"),
        c.query_typed(LOCK_DEVICES, &params),
        async {
            if savepoint {
                c.batch_execute("SAVEPOINT w").await
            } else {
                Ok(())
            }
        },
    );
    began?;
    locked?;
    saved
}

/// A deadlock or a serialisation failure: the transaction may succeed when run again.
pub(crate) fn is_retryable(e: &tokio_postgres::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.code().is_some_and(|code| {
        *code == SqlState::T_R_DEADLOCK_DETECTED || *code == SqlState::T_R_SERIALIZATION_FAILURE
    })
}

async fn rollback(c: &ClientWrapper) -> ConnState {
    if c.is_closed() {
        return ConnState::Unknown;
    }
    match c.batch_execute("ROLLBACK").await {
        Ok(()) => ConnState::Clean,
        Err(e) => {
            tracing::error!(error = %e, "store ROLLBACK failed");
            ConnState::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write that only says what it is for.
    struct Fake {
        devices: Vec<String>,
        repeatable: bool,
    }

    impl PendingWrite for Fake {
        fn apply<'c>(
            &'c mut self,
            _: &'c ClientWrapper,
        ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>> {
            Box::pin(std::future::ready(true))
        }
        fn complete(self: Box<Self>, _: &Result<(), StoreError>) {}
        fn devices(&self) -> &[String] {
            &self.devices
        }
        fn repeatable(&self) -> bool {
            self.repeatable
        }
        fn forget(&mut self) {}
    }

    fn batch(writes: &[(&[&str], bool)]) -> Vec<Box<dyn PendingWrite>> {
        writes
            .iter()
            .map(|(devices, repeatable)| {
                Box::new(Fake {
                    devices: devices.iter().map(|d| d.to_string()).collect(),
                    repeatable: *repeatable,
                }) as Box<dyn PendingWrite>
            })
            .collect()
    }

    #[test]
    fn only_repeatable_writes_of_distinct_devices_are_pipelined() {
        assert!(pipelinable(&batch(&[(&["A"], true), (&["B"], true)])));
        // One write alone gains nothing.
        assert!(!pipelinable(&batch(&[(&["A"], true)])));
        // Two writes of one device keep their order.
        assert!(!pipelinable(&batch(&[(&["A"], true), (&["A"], true)])));
        assert!(!pipelinable(&batch(&[(&["A", "B"], true), (&["B"], true)])));
        // A write that cannot run again, or one of no device (a server write).
        assert!(!pipelinable(&batch(&[(&["A"], true), (&["B"], false)])));
        assert!(!pipelinable(&batch(&[(&["A"], true), (&[], true)])));
    }

    #[test]
    fn a_batch_locks_each_device_once_in_order() {
        let b = batch(&[(&["C", "A"], false), (&["B", "A"], true)]);
        assert_eq!(locked_devices(&b), ["A", "B", "C"]);
    }

    #[test]
    fn each_write_ends_in_the_statement_that_opens_the_next() {
        assert_eq!(between(true, false), "RELEASE SAVEPOINT w; SAVEPOINT w");
        assert!(between(false, false).starts_with("ROLLBACK TO SAVEPOINT w;"));
        assert_eq!(between(true, true), "COMMIT");
        assert_eq!(between(false, true), "ROLLBACK TO SAVEPOINT w; COMMIT");
    }
}
