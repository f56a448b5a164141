//! [`ClusterStore`] on PostgreSQL: the nodes' heartbeats, the scheduled jobs' claims and the
//! refresh runs, shared by every node on the database (schema migration 2).
//!
//! These writes are few (a heartbeat every few seconds, a run's rows once per chunk of 2,000
//! devices), so they go straight to a pooled connection rather than through the writer's
//! group commits. A run's devices are written before the chunk's push attempts are marked
//! (the caller awaits one, then the other): whatever a node's death leaves marked is listed.
//! The sweep withdraws through [`PushStore::withdraw_push_attempts`], the writer's ordered
//! device locks included.

use std::time::Duration;

use time::OffsetDateTime;
use tokio_postgres::Row;

use magicpush_store::cluster::{
    schedule_decision, ClusterStore, Node, RefreshRunRecord, RunKind, RunState, ScheduleDecision,
    RUNS_KEPT, SWEEP_CHUNK,
};
use magicpush_store::prelude::*;
use magicpush_store::{from_ms, to_ms, truncate_ms, StoreError, StoreFuture};

use crate::rows::{exec, get, query};
use crate::{pg_err, PostgresStore};

/// The advisory lock of scheduled job `job` (transaction-scoped): a fixed prefix and the
/// job name's FNV-1a hash. Advisory locks are per database, so every node (and every schema
/// of a test database) shares it: claims of one job are serialised, which is the point.
fn schedule_lock(job: &str) -> i64 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in job.bytes() {
        hash = (hash ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    // "mpsc" in the high half: apart from the migration lock.
    (0x6d70_7363_i64 << 32) | i64::from(hash)
}

const RUN_COLUMNS: &str =
    "id, node_id, attempted_at, started_at, finished_at, state, devices, withdrawn, answered, kind";

fn node_from_row(r: &Row) -> Result<Node, StoreError> {
    const OP: &str = "read nodes";
    Ok(Node {
        id: get(r, 0, OP)?,
        name: get(r, 1, OP)?,
        version: get(r, 2, OP)?,
        url: get(r, 3, OP)?,
        started_at: from_ms(get(r, 4, OP)?),
        last_heartbeat_at: from_ms(get(r, 5, OP)?),
    })
}

fn run_from_row(r: &Row) -> Result<RefreshRunRecord, StoreError> {
    const OP: &str = "read refresh runs";
    let state: String = get(r, 5, OP)?;
    let count = |i| get::<i64>(r, i, OP).map(|n| u64::try_from(n).unwrap_or(0));
    Ok(RefreshRunRecord {
        id: get(r, 0, OP)?,
        node_id: get(r, 1, OP)?,
        attempted_at: from_ms(get(r, 2, OP)?),
        started_at: from_ms(get(r, 3, OP)?),
        finished_at: get::<Option<i64>>(r, 4, OP)?.map(from_ms),
        state: RunState::parse(&state).ok_or_else(|| StoreError::Corrupt {
            what: format!("refresh_runs.state {state:?}"),
        })?,
        devices: count(6)?,
        withdrawn: count(7)?,
        answered: count(8)?,
        kind: {
            let kind: String = get(r, 9, OP)?;
            RunKind::parse(&kind).ok_or_else(|| StoreError::Corrupt {
                what: format!("refresh_runs.kind {kind:?}"),
            })?
        },
    })
}

impl PostgresStore {
    /// Withdraws the attempts `run` left unanswered and marks it abandoned; `None` if it was
    /// no longer running (it finished, or another node swept it first).
    async fn abandon_run(
        &self,
        run: &RefreshRunRecord,
        at: OffsetDateTime,
    ) -> Result<Option<RefreshRunRecord>, StoreError> {
        let udids: Vec<String> = {
            let c = self.reader().await?;
            let rows = query(
                &c,
                "read a refresh run's devices",
                "SELECT udid FROM refresh_run_devices WHERE run_id = $1 ORDER BY udid",
                &[&run.id],
            )
            .await?;
            rows.iter()
                .map(|r| get(r, 0, "read a refresh run's devices"))
                .collect::<Result<_, _>>()?
        };
        let mut withdrawn = 0u64;
        for chunk in udids.chunks(SWEEP_CHUNK) {
            withdrawn += self.withdraw_push_attempts(chunk, run.attempted_at).await?;
        }
        let c = self.reader().await?;
        let withdrawn = i64::try_from(withdrawn).unwrap_or(i64::MAX);
        let sql = format!(
            "WITH gone AS (DELETE FROM refresh_run_devices WHERE run_id = $1)
             UPDATE refresh_runs SET state = 'abandoned', finished_at = $2,
                 withdrawn = withdrawn + $3
             WHERE id = $1 AND state = 'running' RETURNING {RUN_COLUMNS}"
        );
        let rows = query(
            &c,
            "abandon a refresh run",
            &sql,
            &[&run.id, &to_ms(truncate_ms(at)), &withdrawn],
        )
        .await?;
        rows.first().map(run_from_row).transpose()
    }
}

impl ClusterStore for PostgresStore {
    fn heartbeat<'a>(&'a self, node: &'a Node) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let c = self.reader().await?;
            exec(
                &c,
                "record a heartbeat",
                "INSERT INTO nodes (id, name, version, url, started_at, last_heartbeat_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name,
                     version = EXCLUDED.version, url = EXCLUDED.url,
                     started_at = EXCLUDED.started_at,
                     last_heartbeat_at = EXCLUDED.last_heartbeat_at",
                &[
                    &node.id,
                    &node.name,
                    &node.version,
                    &node.url,
                    &to_ms(node.started_at),
                    &to_ms(node.last_heartbeat_at),
                ],
            )
            .await
            .map(drop)
        })
    }

    fn nodes(&self) -> StoreFuture<'_, Vec<Node>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let rows = query(
                &c,
                "read nodes",
                "SELECT id, name, version, url, started_at, last_heartbeat_at FROM nodes
                 ORDER BY name, id",
                &[],
            )
            .await?;
            rows.iter().map(node_from_row).collect()
        })
    }

    fn prune_nodes(&self, silent_since: OffsetDateTime) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let c = self.reader().await?;
            exec(
                &c,
                "prune nodes",
                "DELETE FROM nodes WHERE last_heartbeat_at < $1",
                &[&to_ms(silent_since)],
            )
            .await
        })
    }

    fn claim_schedule<'a>(
        &'a self,
        job: &'a str,
        node_id: &'a str,
        now: OffsetDateTime,
        every: Duration,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            const OP: &str = "claim a scheduled job";
            let mut c = self.reader().await?;
            let tx = c.transaction().await.map_err(pg_err(OP))?;
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&schedule_lock(job)])
                .await
                .map_err(pg_err(OP))?;
            let last = tx
                .query_opt("SELECT last_run_at FROM schedules WHERE job = $1", &[&job])
                .await
                .map_err(pg_err(OP))?
                .map(|r| get::<i64>(&r, 0, OP).map(from_ms))
                .transpose()?;
            let decision = schedule_decision(last, now, every);
            if decision != ScheduleDecision::Wait {
                tx.execute(
                    "INSERT INTO schedules (job, last_run_at, node_id) VALUES ($1, $2, $3)
                     ON CONFLICT (job) DO UPDATE SET last_run_at = EXCLUDED.last_run_at,
                         node_id = EXCLUDED.node_id",
                    &[&job, &to_ms(truncate_ms(now)), &node_id],
                )
                .await
                .map_err(pg_err(OP))?;
            }
            tx.commit().await.map_err(pg_err(OP))?;
            Ok(decision == ScheduleDecision::Run)
        })
    }

    fn begin_refresh_run<'a>(&'a self, run: &'a RefreshRunRecord) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let c = self.reader().await?;
            let added = exec(
                &c,
                "begin a refresh run",
                "INSERT INTO refresh_runs
                     (id, node_id, attempted_at, started_at, finished_at, state, devices, withdrawn,
                      kind)
                 VALUES ($1, $2, $3, $4, NULL, 'running', 0, 0, $5) ON CONFLICT DO NOTHING",
                &[
                    &run.id,
                    &run.node_id,
                    &to_ms(run.attempted_at),
                    &to_ms(run.started_at),
                    &run.kind.as_str(),
                ],
            )
            .await?;
            if added == 0 {
                return Ok(false);
            }
            let kept = i64::try_from(RUNS_KEPT).unwrap_or(i64::MAX);
            exec(
                &c,
                "prune refresh runs",
                "DELETE FROM refresh_runs WHERE finished_at IS NOT NULL AND id NOT IN (
                     SELECT id FROM refresh_runs WHERE finished_at IS NOT NULL
                     ORDER BY started_at DESC LIMIT $1)",
                &[&kept],
            )
            .await?;
            Ok(true)
        })
    }

    fn add_refresh_run_devices<'a>(
        &'a self,
        run_id: &'a str,
        udids: &'a [String],
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let c = self.reader().await?;
            exec(
                &c,
                "record a refresh run's devices",
                "WITH added AS (
                     INSERT INTO refresh_run_devices (run_id, udid)
                     SELECT $1, u FROM unnest($2::text[]) AS u
                     ON CONFLICT DO NOTHING RETURNING 1)
                 UPDATE refresh_runs SET devices = devices + (SELECT count(*) FROM added)
                 WHERE id = $1",
                &[&run_id, &udids],
            )
            .await
            .map(drop)
        })
    }

    fn add_refresh_run_progress<'a>(
        &'a self,
        run_id: &'a str,
        answered: u64,
        withdrawn: u64,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let c = self.reader().await?;
            let count = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
            exec(
                &c,
                "record a refresh run's progress",
                "UPDATE refresh_runs SET answered = answered + $2, withdrawn = withdrawn + $3
                 WHERE id = $1",
                &[&run_id, &count(answered), &count(withdrawn)],
            )
            .await
            .map(drop)
        })
    }

    fn finish_refresh_run<'a>(
        &'a self,
        run_id: &'a str,
        at: OffsetDateTime,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let c = self.reader().await?;
            exec(
                &c,
                "finish a refresh run",
                "WITH gone AS (DELETE FROM refresh_run_devices WHERE run_id = $1)
                 UPDATE refresh_runs SET state = 'finished', finished_at = $2
                 WHERE id = $1 AND state = 'running'",
                &[&run_id, &to_ms(truncate_ms(at))],
            )
            .await
            .map(drop)
        })
    }

    fn refresh_runs(&self, limit: usize) -> StoreFuture<'_, Vec<RefreshRunRecord>> {
        Box::pin(async move {
            let c = self.reader().await?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let sql = format!(
                "SELECT {RUN_COLUMNS} FROM refresh_runs ORDER BY started_at DESC, id DESC LIMIT $1"
            );
            let rows = query(&c, "read refresh runs", &sql, &[&limit]).await?;
            rows.iter().map(run_from_row).collect()
        })
    }

    fn sweep_dead_runs(
        &self,
        dead_before: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, Vec<RefreshRunRecord>> {
        Box::pin(async move {
            let dead = {
                let c = self.reader().await?;
                let sql = format!(
                    "SELECT {} FROM refresh_runs r LEFT JOIN nodes n ON n.id = r.node_id
                     WHERE r.finished_at IS NULL
                       AND (n.id IS NULL OR n.last_heartbeat_at < $1)
                     ORDER BY r.started_at",
                    RUN_COLUMNS
                        .split(", ")
                        .map(|c| format!("r.{c}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                let rows = query(&c, "find dead nodes' runs", &sql, &[&to_ms(dead_before)]).await?;
                rows.iter()
                    .map(run_from_row)
                    .collect::<Result<Vec<_>, _>>()?
            };
            let mut swept = Vec::new();
            for run in &dead {
                swept.extend(self.abandon_run(run, at).await?);
            }
            Ok(swept)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_locks_differ_by_job_and_from_the_migration_lock() {
        assert_ne!(schedule_lock("collect"), schedule_lock("collect2"));
        assert_eq!(schedule_lock("collect"), schedule_lock("collect"));
        assert_ne!(schedule_lock("collect") >> 32, 0x6d61_6769);
    }
}
