//! Group commit: one thread owns the write connection, takes every write waiting in its
//! channel, applies them in one transaction (one savepoint each, so one failing write does not
//! undo the others), commits once, then answers every waiter.
//!
//! A write that changes the database with at most one statement ([`Undo::ByStatement`]) runs
//! without a savepoint: SQLite undoes a failed statement itself, so a failure leaves nothing
//! of it behind. The savepoint, its release and the copies of every page it first touches
//! were a large share of the writer's work for the one-statement writes of an enrollment.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::db_err;
use magicpush_store::StoreError;

/// How a failed write's changes are undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Undo {
    /// The write may change the database with several statements: it runs in a savepoint,
    /// rolled back if it fails.
    BySavepoint,
    /// The write changes the database with at most one statement, and fails either before it
    /// or in it: SQLite undoes a failed statement, so no savepoint is needed.
    ByStatement,
}

/// A write waiting for the writer thread.
pub(crate) trait PendingWrite: Send {
    /// How a failure of this write is undone.
    fn undo(&self) -> Undo;
    /// Runs inside the open transaction. Returns false if the write failed (the writer then
    /// rolls back to the write's savepoint).
    fn apply(&mut self, conn: &Connection) -> bool;
    /// Answers the waiter once the batch's commit is known.
    fn complete(self: Box<Self>, commit: &Result<(), StoreError>);
}

/// Runs on the writer thread once a write's transaction committed, before its waiter hears
/// of it, in commit order (for in-memory indexes that must follow the database).
pub(crate) type AfterCommit<T> = Box<dyn FnOnce(&T) + Send>;

pub(crate) struct Job<T, F> {
    undo: Undo,
    work: Option<F>,
    result: Option<Result<T, StoreError>>,
    reply: oneshot::Sender<Result<T, StoreError>>,
    after_commit: Option<AfterCommit<T>>,
}

impl<T, F> Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    #[cfg(test)]
    pub(crate) fn submit(
        undo: Undo,
        work: F,
    ) -> (
        Box<dyn PendingWrite>,
        oneshot::Receiver<Result<T, StoreError>>,
    ) {
        Self::submit_then(undo, work, None)
    }

    /// [`Job::submit`] with a step run after the commit, only if the write and the commit
    /// succeeded.
    pub(crate) fn submit_then(
        undo: Undo,
        work: F,
        after_commit: Option<AfterCommit<T>>,
    ) -> (
        Box<dyn PendingWrite>,
        oneshot::Receiver<Result<T, StoreError>>,
    ) {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            undo,
            work: Some(work),
            result: None,
            reply,
            after_commit,
        };
        (Box::new(job), rx)
    }
}

impl<T, F> PendingWrite for Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn undo(&self) -> Undo {
        self.undo
    }

    fn apply(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn);
        let ok = result.is_ok();
        self.result = Some(result);
        ok
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
        // The waiter may have gone away (request cancelled); the write is committed anyway.
        let _ = self.reply.send(answer);
    }
}

/// Counters the writer keeps, readable while it runs.
#[derive(Debug)]
pub(crate) struct Counters {
    pub(crate) commits: AtomicU64,
    pub(crate) writes: AtomicU64,
    /// Writes sent and not yet answered.
    pub(crate) queued: AtomicUsize,
    /// Milliseconds after `epoch` of the writer's last sign of life (a commit, or waiting
    /// with nothing to do).
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

/// The writer thread's loop. Returns when every sender is gone and the channel is drained.
pub(crate) fn run(
    mut conn: Connection,
    rx: mpsc::Receiver<Box<dyn PendingWrite>>,
    max_batch: usize,
    counters: Arc<Counters>,
    reopen: &dyn Fn() -> Result<Connection, StoreError>,
) {
    loop {
        counters.progressed();
        let Ok(first) = rx.recv() else { break };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::histogram!("magicpush_store_commit_batch_size").record(batch.len() as f64);
        let (commit, state) = apply_batch(&conn, &mut batch);
        counters.commits.fetch_add(1, Ordering::Relaxed);
        counters
            .writes
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(e) = &commit {
            tracing::error!(error = %e, writes = batch.len(), "store commit failed");
        }
        counters.queued.fetch_sub(batch.len(), Ordering::Relaxed);
        for job in batch {
            job.complete(&commit);
        }
        if state == ConnState::Unknown {
            // ROLLBACK failed: the connection may still be inside the failed transaction.
            // Writing on through it could commit half of that batch with the next one.
            match reopen() {
                Ok(fresh) => {
                    tracing::warn!(
                        "store writer reopened its database connection after a failed ROLLBACK"
                    );
                    conn = fresh;
                }
                Err(e) => {
                    tracing::error!(error = %e, "store writer cannot reopen the database after a failed ROLLBACK; it stops, writes fail and /healthz reports it");
                    break;
                }
            }
        }
    }
}

/// What the connection is left in after a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    /// No transaction open: ready for the next batch.
    Clean,
    /// A failed batch whose ROLLBACK failed too: not to be trusted.
    Unknown,
}

fn apply_batch(
    conn: &Connection,
    batch: &mut [Box<dyn PendingWrite>],
) -> (Result<(), StoreError>, ConnState) {
    if let Err(e) = conn
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(db_err("begin"))
    {
        return (Err(e), ConnState::Clean);
    }
    let applied = batch.iter_mut().try_for_each(|job| {
        if job.undo() == Undo::ByStatement {
            job.apply(conn);
            return Ok(());
        }
        run_cached(conn, "SAVEPOINT write")?;
        if !job.apply(conn) {
            run_cached(conn, "ROLLBACK TO write")?;
        }
        run_cached(conn, "RELEASE write")
    });
    let committed = applied.and_then(|()| conn.execute_batch("COMMIT").map_err(db_err("commit")));
    if committed.is_err() && !conn.is_autocommit() {
        if let Err(e) = conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "store ROLLBACK failed");
            if !conn.is_autocommit() {
                return (committed, ConnState::Unknown);
            }
        }
    }
    (committed, ConnState::Clean)
}

fn run_cached(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(drop)
        .map_err(db_err("savepoint"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(conn: &Connection, v: i64) -> Result<(), StoreError> {
        conn.execute("INSERT INTO t (v) VALUES (?1)", [v])
            .map(drop)
            .map_err(db_err("insert"))
    }

    #[test]
    fn a_failing_write_is_undone_alone_and_the_batch_commits() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        for _ in 0..2 {
            let (ok1, rx1) = Job::submit(Undo::ByStatement, |c: &Connection| insert(c, 1));
            let (bad, rx2) = Job::submit(Undo::BySavepoint, |c: &Connection| {
                insert(c, 2)?;
                Err::<(), _>(StoreError::Closed)
            });
            let (ok3, rx3) = Job::submit(Undo::BySavepoint, |c: &Connection| insert(c, 3));
            let mut batch = vec![ok1, bad, ok3];
            let (commit, _) = apply_batch(&conn, &mut batch);
            assert_eq!(commit, Ok(()));
            for job in batch {
                job.complete(&commit);
            }
            assert_eq!(rx1.blocking_recv().unwrap(), Ok(()));
            assert_eq!(rx2.blocking_recv().unwrap(), Err(StoreError::Closed));
            assert_eq!(rx3.blocking_recv().unwrap(), Ok(()));
        }
        let values: Vec<i64> = conn
            .prepare("SELECT v FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(values, vec![1, 3, 1, 3]);
        assert!(conn.is_autocommit(), "no transaction left open");
    }

    #[test]
    fn a_failing_one_statement_write_leaves_nothing_without_a_savepoint() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL UNIQUE)")
            .unwrap();
        let (ok1, rx1) = Job::submit(Undo::ByStatement, |c: &Connection| insert(c, 1));
        // Inserts 5, then fails on the duplicate 1 in the same statement: SQLite undoes both.
        let (bad, rx2) = Job::submit(Undo::ByStatement, |c: &Connection| {
            c.execute("INSERT INTO t (v) VALUES (5), (1)", [])
                .map(drop)
                .map_err(db_err("insert"))
        });
        let (ok3, rx3) = Job::submit(Undo::ByStatement, |c: &Connection| insert(c, 3));
        let mut batch = vec![ok1, bad, ok3];
        let (commit, _) = apply_batch(&conn, &mut batch);
        assert_eq!(commit, Ok(()));
        for job in batch {
            job.complete(&commit);
        }
        assert_eq!(rx1.blocking_recv().unwrap(), Ok(()));
        assert!(matches!(
            rx2.blocking_recv().unwrap(),
            Err(StoreError::Database { .. })
        ));
        assert_eq!(rx3.blocking_recv().unwrap(), Ok(()));
        let values: Vec<i64> = conn
            .prepare("SELECT v FROM t ORDER BY rowid")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(values, vec![1, 3]);
    }
}
