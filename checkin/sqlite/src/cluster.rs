//! [`ClusterStore`] on SQLite. One process serves a data directory, so the node list and the
//! scheduled jobs' claims stay in memory ([`ClusterMemory`]); the refresh runs and the
//! devices each marked are in the database (schema version 7), so that a process killed
//! with `kill -9` mid-refresh leaves them for the next one: its runs' node is not this
//! process (nor any node heard of), so the first sweep takes them back.

use std::time::Duration;

use rusqlite::{params, Connection, Row};
use time::OffsetDateTime;

use magicpush_store::cluster::{
    ClusterStore, Node, RefreshRunRecord, RunKind, RunState, RUNS_KEPT, SWEEP_CHUNK,
};
use magicpush_store::{from_ms, to_ms, truncate_ms, PushStore, StoreError, StoreFuture};

use crate::{db_err, SqliteStore};

const RUN_COLUMNS: &str =
    "id, node_id, attempted_at, started_at, finished_at, state, devices, withdrawn, answered, kind";

fn run_from_row(r: &Row<'_>) -> rusqlite::Result<Result<RefreshRunRecord, StoreError>> {
    let state: String = r.get(5)?;
    let count = |i| r.get::<_, i64>(i).map(|n| u64::try_from(n).unwrap_or(0));
    let Some(parsed) = RunState::parse(&state) else {
        return Ok(Err(StoreError::Corrupt {
            what: format!("refresh_runs.state {state:?}"),
        }));
    };
    let kind: String = r.get(9)?;
    let Some(kind) = RunKind::parse(&kind) else {
        return Ok(Err(StoreError::Corrupt {
            what: format!("refresh_runs.kind {kind:?}"),
        }));
    };
    Ok(Ok(RefreshRunRecord {
        id: r.get(0)?,
        node_id: r.get(1)?,
        attempted_at: from_ms(r.get(2)?),
        started_at: from_ms(r.get(3)?),
        finished_at: r.get::<_, Option<i64>>(4)?.map(from_ms),
        state: parsed,
        devices: count(6)?,
        withdrawn: count(7)?,
        answered: count(8)?,
        kind,
    }))
}

/// The runs `filter` selects, newest first.
fn read_runs(
    c: &Connection,
    filter: &str,
    limit: usize,
) -> Result<Vec<RefreshRunRecord>, StoreError> {
    const OP: &str = "read refresh runs";
    let sql = format!(
        "SELECT {RUN_COLUMNS} FROM refresh_runs {filter} ORDER BY started_at DESC, id DESC LIMIT ?1"
    );
    let mut stmt = c.prepare_cached(&sql).map_err(db_err(OP))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![limit], run_from_row)
        .map_err(db_err(OP))?;
    let mut runs = Vec::new();
    for row in rows {
        runs.push(row.map_err(db_err(OP))??);
    }
    Ok(runs)
}

impl SqliteStore {
    /// Withdraws `run`'s unanswered attempts and marks it abandoned; `None` if it was no
    /// longer running.
    async fn abandon_run(
        &self,
        run: RefreshRunRecord,
        at: OffsetDateTime,
    ) -> Result<Option<RefreshRunRecord>, StoreError> {
        let id = run.id.clone();
        let udids: Vec<String> = self
            .read(move |c| {
                const OP: &str = "read a refresh run's devices";
                let mut stmt = c
                    .prepare_cached(
                        "SELECT udid FROM refresh_run_devices WHERE run_id = ?1
                         ORDER BY topic, udid",
                    )
                    .map_err(db_err(OP))?;
                let rows = stmt
                    .query_map(params![id], |r| r.get(0))
                    .map_err(db_err(OP))?;
                rows.collect::<Result<_, _>>().map_err(db_err(OP))
            })
            .await?;
        let mut withdrawn = 0u64;
        for chunk in udids.chunks(SWEEP_CHUNK) {
            withdrawn += self.withdraw_push_attempts(chunk, run.attempted_at).await?;
        }
        let (id, at) = (run.id, to_ms(truncate_ms(at)));
        let withdrawn = i64::try_from(withdrawn).unwrap_or(i64::MAX);
        self.write(move |c| {
            const OP: &str = "abandon a refresh run";
            c.prepare_cached("DELETE FROM refresh_run_devices WHERE run_id = ?1")
                .and_then(|mut s| s.execute(params![id]))
                .map_err(db_err(OP))?;
            let changed = c
                .prepare_cached(
                    "UPDATE refresh_runs SET state = 'abandoned', finished_at = ?2,
                         withdrawn = withdrawn + ?3
                     WHERE id = ?1 AND state = 'running'",
                )
                .and_then(|mut s| s.execute(params![id, at, withdrawn]))
                .map_err(db_err(OP))?;
            if changed == 0 {
                return Ok(None);
            }
            let mut stmt = c
                .prepare_cached(&format!(
                    "SELECT {RUN_COLUMNS} FROM refresh_runs WHERE id = ?1"
                ))
                .map_err(db_err(OP))?;
            let mut rows = stmt
                .query_map(params![id], run_from_row)
                .map_err(db_err(OP))?;
            match rows.next() {
                Some(row) => Ok(Some(row.map_err(db_err(OP))??)),
                None => Ok(None),
            }
        })
        .await
    }
}

impl ClusterStore for SqliteStore {
    fn heartbeat<'a>(&'a self, node: &'a Node) -> StoreFuture<'a, ()> {
        self.cluster.heartbeat(node);
        Box::pin(std::future::ready(Ok(())))
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<Node>> {
        Box::pin(std::future::ready(Ok(self.cluster.nodes())))
    }

    fn prune_nodes(&self, silent_since: OffsetDateTime) -> StoreFuture<'_, u64> {
        Box::pin(std::future::ready(Ok(self
            .cluster
            .prune_nodes(silent_since))))
    }

    fn claim_schedule<'a>(
        &'a self,
        job: &'a str,
        _node_id: &'a str,
        now: OffsetDateTime,
        every: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self
            .cluster
            .claim_schedule(job, now, every))))
    }

    fn begin_refresh_run<'a>(&'a self, run: &'a RefreshRunRecord) -> StoreFuture<'a, bool> {
        let run = run.clone();
        self.write(move |c| {
            const OP: &str = "begin a refresh run";
            let added = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO refresh_runs
                         (id, node_id, attempted_at, started_at, finished_at, state, devices,
                          withdrawn, kind)
                     VALUES (?1, ?2, ?3, ?4, NULL, 'running', 0, 0, ?5)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        run.id,
                        run.node_id,
                        to_ms(run.attempted_at),
                        to_ms(run.started_at),
                        run.kind.as_str()
                    ])
                })
                .map_err(db_err(OP))?;
            if added == 0 {
                return Ok(false);
            }
            let kept = i64::try_from(RUNS_KEPT).unwrap_or(i64::MAX);
            c.prepare_cached(
                "DELETE FROM refresh_runs WHERE finished_at IS NOT NULL AND id NOT IN (
                     SELECT id FROM refresh_runs WHERE finished_at IS NOT NULL
                     ORDER BY started_at DESC LIMIT ?1)",
            )
            .and_then(|mut s| s.execute(params![kept]))
            .map_err(db_err("prune refresh runs"))?;
            Ok(true)
        })
    }

    fn add_refresh_run_devices<'a>(
        &'a self,
        run_id: &'a str,
        udids: &'a [String],
    ) -> StoreFuture<'a, ()> {
        let (run_id, udids) = (run_id.to_owned(), udids.to_vec());
        self.write(move |c| {
            const OP: &str = "record a refresh run's devices";
            let mut added = 0i64;
            // Keyed by the device's tenant (schema version 12): a refresh of every tenant
            // lists its devices in key order. A device gone since the walk read it is listed
            // under no topic; the sweep finds nothing to withdraw for it.
            let mut insert = c
                .prepare_cached(
                    "INSERT OR IGNORE INTO refresh_run_devices (run_id, topic, udid)
                     VALUES (?1, COALESCE((SELECT topic FROM devices WHERE udid = ?2), ''), ?2)",
                )
                .map_err(db_err(OP))?;
            for udid in &udids {
                added += insert.execute(params![run_id, udid]).map_err(db_err(OP))? as i64;
            }
            c.prepare_cached("UPDATE refresh_runs SET devices = devices + ?2 WHERE id = ?1")
                .and_then(|mut s| s.execute(params![run_id, added]))
                .map_err(db_err(OP))?;
            Ok(())
        })
    }

    fn add_refresh_run_progress<'a>(
        &'a self,
        run_id: &'a str,
        answered: u64,
        withdrawn: u64,
    ) -> StoreFuture<'a, ()> {
        let run_id = run_id.to_owned();
        let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        let (answered, withdrawn) = (count(answered), count(withdrawn));
        self.write(move |c| {
            c.prepare_cached(
                "UPDATE refresh_runs SET answered = answered + ?2, withdrawn = withdrawn + ?3
                 WHERE id = ?1",
            )
            .and_then(|mut s| s.execute(params![run_id, answered, withdrawn]))
            .map_err(db_err("record a refresh run's progress"))?;
            Ok(())
        })
    }

    fn finish_refresh_run<'a>(
        &'a self,
        run_id: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        let (run_id, at) = (run_id.to_owned(), to_ms(truncate_ms(at)));
        self.write(move |c| {
            const OP: &str = "finish a refresh run";
            c.prepare_cached("DELETE FROM refresh_run_devices WHERE run_id = ?1")
                .and_then(|mut s| s.execute(params![run_id]))
                .map_err(db_err(OP))?;
            c.prepare_cached(
                "UPDATE refresh_runs SET state = 'finished', finished_at = ?2
                 WHERE id = ?1 AND state = 'running'",
            )
            .and_then(|mut s| s.execute(params![run_id, at]))
            .map_err(db_err(OP))?;
            Ok(())
        })
    }

    fn refresh_runs(&self, limit: usize) -> StoreFuture<'_, Vec<RefreshRunRecord>> {
        self.read(move |c| read_runs(c, "", limit))
    }

    fn sweep_dead_runs(
        &self,
        dead_before: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, Vec<RefreshRunRecord>> {
        Box::pin(async move {
            let running = self
                .read(|c| read_runs(c, "WHERE finished_at IS NULL", usize::MAX))
                .await?;
            let mut swept = Vec::new();
            for run in running {
                if self.cluster.is_dead(&run.node_id, dead_before) {
                    swept.extend(self.abandon_run(run, at).await?);
                }
            }
            swept.reverse();
            Ok(swept)
        })
    }
}
