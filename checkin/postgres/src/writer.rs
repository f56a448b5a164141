//! Group commit: one task owns the write connection, takes every write waiting in its channel
//! (up to a batch), applies them in one transaction, commits once, then answers every waiter.
//!
//! PostgreSQL aborts the whole transaction when one statement fails, so each write runs in a
//! savepoint: a write that fails is rolled back to it and the others commit. The savepoint
//! costs no round trip of its own: the statement that ends one write's savepoint also opens
//! the next one's (`RELEASE w; SAVEPOINT w`), and the last write's ends with the `COMMIT`.
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

use magicpush_store::StoreError;

use crate::pool_err;
use crate::rows::Param;

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
}

/// Runs once a write's transaction committed, before its waiter hears of it.
pub(crate) type AfterCommit<T> = Box<dyn FnOnce(&T) + Send>;

pub(crate) struct Job<T, F> {
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    after_commit: Option<AfterCommit<T>>,
    devices: Vec<String>,
}

impl<T, F> Job<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c ClientWrapper) -> WorkFuture<'c, T> + Send + 'static,
{
    pub(crate) fn submit(
        work: F,
        after_commit: Option<AfterCommit<T>>,
        devices: Vec<String>,
    ) -> (
        Box<dyn PendingWrite>,
        oneshot::Receiver<Result<T, StoreError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            work: Some(work),
            result: None,
            reply,
            after_commit,
            devices,
        };
        (Box::new(job), rx)
    }
}

impl<T, F> PendingWrite for Job<T, F>
where
    T: Send + 'static,
    F: for<'c> FnOnce(&'c ClientWrapper) -> WorkFuture<'c, T> + Send + 'static,
{
    fn apply<'c>(
        &'c mut self,
        c: &'c ClientWrapper,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'c>> {
        let work = self.work.take();
        Box::pin(async move {
            let result = match work {
                Some(work) => work(c).await,
                None => Err(StoreError::Closed),
            };
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
}

/// Counters the writer keeps, readable while it runs.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
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
        let (commit, state) = apply_batch(client, &mut batch).await;
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
) -> (Result<(), StoreError>, ConnState) {
    let mut devices: Vec<&str> = batch
        .iter()
        .flat_map(|j| j.devices().iter().map(String::as_str))
        .collect();
    devices.sort_unstable();
    devices.dedup();
    let mut attempt = 1;
    loop {
        match begin(c, &devices).await {
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

/// Times a batch's `BEGIN` and its device locks are tried before the batch fails.
const BEGIN_ATTEMPTS: u32 = 5;

/// Locks the devices' rows in UDID order (the database's); a device not stored yet has no
/// row to lock (its first write creates it, and `ON CONFLICT` settles creations racing).
pub(crate) const LOCK_DEVICES: &str =
    "SELECT udid FROM devices WHERE udid = ANY($1::text[]) ORDER BY udid FOR NO KEY UPDATE";

/// Opens the transaction, locks `devices` and opens the first write's savepoint, in one
/// round trip.
async fn begin(c: &ClientWrapper, devices: &[&str]) -> Result<(), tokio_postgres::Error> {
    if devices.is_empty() {
        return c.batch_execute("BEGIN; SAVEPOINT w").await;
    }
    let lock = c.prepare_cached(LOCK_DEVICES).await?;
    let params: [Param<'_>; 1] = [&devices];
    let (began, locked, saved) = tokio::join!(
        biased;
        c.batch_execute("BEGIN"),
        c.query(&lock, &params),
        c.batch_execute("SAVEPOINT w"),
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

    #[test]
    fn each_write_ends_in_the_statement_that_opens_the_next() {
        assert_eq!(between(true, false), "RELEASE SAVEPOINT w; SAVEPOINT w");
        assert!(between(false, false).starts_with("ROLLBACK TO SAVEPOINT w;"));
        assert_eq!(between(true, true), "COMMIT");
        assert_eq!(between(false, true), "ROLLBACK TO SAVEPOINT w; COMMIT");
    }
}
