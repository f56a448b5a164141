//! Several server nodes on one store: who is running (heartbeats), which node runs a
//! scheduled job (a claim), and each refresh's run record, so that a refresh started on one
//! node is seen from every node and one cut short by a node's death (`kill -9`) is taken back
//! by another.
//!
//! The rules are pure functions of times passed in ([`schedule_decision`], [`is_alive`]);
//! the stores keep the rows. A run's devices are the UDIDs it marked, kept beside the run
//! (not on the device row) until the run ends: a sweep of a dead node's run reads those and
//! nothing else, and a run's push attempts are told apart from another's by the attempt
//! time, which no two runs share ([`ClusterStore::begin_refresh_run`] refuses a taken one).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::{truncate_ms, PushStore, StoreError, StoreFuture};

/// Finished runs kept (the newest); older ones are deleted when a run begins.
pub const RUNS_KEPT: usize = 100;

/// Devices a sweep takes back in one write.
pub const SWEEP_CHUNK: usize = 2_000;

/// A server node as its heartbeat records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Random, fresh at each start: a restarted process is a new node.
    pub id: String,
    /// Its name (`--node-name`, by default the host name).
    pub name: String,
    /// The magicpush version it runs.
    pub version: String,
    /// Where it listens.
    pub url: String,
    /// When the process started.
    pub started_at: OffsetDateTime,
    /// Its last heartbeat.
    pub last_heartbeat_at: OffsetDateTime,
}

/// Whether a node whose last heartbeat was at `last_heartbeat` is alive at `now`: it
/// heartbeated less than `dead_after` ago (a heartbeat "from the future", another node's
/// clock being ahead, counts as alive).
pub fn is_alive(last_heartbeat: OffsetDateTime, now: OffsetDateTime, dead_after: Duration) -> bool {
    now - last_heartbeat < dead_after
}

/// What a scheduled job's claim decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleDecision {
    /// Its last run is at least a period ago: this node runs it now.
    Run,
    /// Its last run is less than a period ago: not yet.
    Wait,
    /// The job has never been recorded: its period starts now (the first run is one period
    /// after the first node starts, as with a single node), nothing runs yet.
    Start,
}

/// The claim's rule: given the job's last run (or `None`), `now` and its period.
pub fn schedule_decision(
    last_run: Option<OffsetDateTime>,
    now: OffsetDateTime,
    every: Duration,
) -> ScheduleDecision {
    match last_run {
        None => ScheduleDecision::Start,
        Some(last) if now - last >= every => ScheduleDecision::Run,
        Some(_) => ScheduleDecision::Wait,
    }
}

/// Where a refresh run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Its node is marking or pushing.
    Running,
    /// Every push has its outcome written or was taken back.
    Finished,
    /// Its node died first; a sweep took back the attempts it left unanswered.
    Abandoned,
}

impl RunState {
    /// The stored (and API) name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Abandoned => "abandoned",
        }
    }

    /// The state named `s`.
    pub fn parse(s: &str) -> Option<RunState> {
        [RunState::Running, RunState::Finished, RunState::Abandoned]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// What a run pushes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunKind {
    /// A refresh (`POST /v1/refresh`, the scheduled collection).
    Refresh,
    /// A command sent with a push (`POST /v1/commands`).
    Command,
}

impl RunKind {
    /// The stored (and API) name.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Refresh => "refresh",
            RunKind::Command => "command",
        }
    }

    /// The kind named `s`.
    pub fn parse(s: &str) -> Option<RunKind> {
        [RunKind::Refresh, RunKind::Command]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One refresh (or a command's pushes) as the store records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshRunRecord {
    /// Random id.
    pub id: String,
    /// The node running it.
    pub node_id: String,
    /// What it pushes for.
    pub kind: RunKind,
    /// The `last_push_at` its marks carry (unique among runs).
    pub attempted_at: OffsetDateTime,
    /// When it began.
    pub started_at: OffsetDateTime,
    /// When it finished or was abandoned.
    pub finished_at: Option<OffsetDateTime>,
    /// Where it stands.
    pub state: RunState,
    /// Devices it marked so far.
    pub devices: u64,
    /// Pushes whose outcome is written so far.
    pub answered: u64,
    /// Push attempts taken back: not sent before a shutdown, or left unanswered by a dead
    /// node (the sweep).
    pub withdrawn: u64,
}

impl RefreshRunRecord {
    /// A refresh run beginning now on `node_id`, marking at `attempted_at`.
    pub fn begin(id: String, node_id: String, attempted_at: OffsetDateTime) -> Self {
        let attempted_at = truncate_ms(attempted_at);
        RefreshRunRecord {
            id,
            node_id,
            kind: RunKind::Refresh,
            attempted_at,
            started_at: attempted_at,
            finished_at: None,
            state: RunState::Running,
            devices: 0,
            answered: 0,
            withdrawn: 0,
        }
    }
}

/// Nodes, scheduled jobs and refresh runs (see the [module docs](self)).
pub trait ClusterStore: Send + Sync {
    /// Records `node`'s heartbeat: inserts or replaces its row.
    fn heartbeat<'a>(&'a self, node: &'a Node) -> StoreFuture<'a, ()>;

    /// Every node recorded, by name then id.
    fn nodes(&self) -> StoreFuture<'_, Vec<Node>>;

    /// Deletes the nodes whose last heartbeat is before `silent_since`; the number deleted.
    fn prune_nodes(&self, silent_since: OffsetDateTime) -> StoreFuture<'_, u64>;

    /// Claims scheduled job `job` for `node_id` at `now`: decides with
    /// [`schedule_decision`] on the job's last run, atomically among nodes (two nodes
    /// claiming together: at most one gets `true`), and records `now` as the last run when it
    /// runs or starts. True if this node runs the job now.
    fn claim_schedule<'a>(
        &'a self,
        job: &'a str,
        node_id: &'a str,
        now: OffsetDateTime,
        every: Duration,
    ) -> StoreFuture<'a, bool>;

    /// Records a run beginning. `Ok(false)` (nothing written) if another run already marks
    /// at `run.attempted_at`: the caller picks a later millisecond. Deletes finished runs
    /// beyond the newest [`RUNS_KEPT`].
    fn begin_refresh_run<'a>(&'a self, run: &'a RefreshRunRecord) -> StoreFuture<'a, bool>;

    /// Adds devices to a running run, before their attempts are marked (a device listed but
    /// never marked is left alone by a sweep: its attempt is not the run's).
    fn add_refresh_run_devices<'a>(
        &'a self,
        run_id: &'a str,
        udids: &'a [String],
    ) -> StoreFuture<'a, ()>;

    /// Adds to a run's progress: `answered` more pushes have their outcome written,
    /// `withdrawn` more attempts were taken back.
    fn add_refresh_run_progress<'a>(
        &'a self,
        run_id: &'a str,
        answered: u64,
        withdrawn: u64,
    ) -> StoreFuture<'a, ()>;

    /// The run ended (every push has its outcome written or was taken back): `finished` at
    /// `at`, its device list dropped. A run already abandoned stays so.
    fn finish_refresh_run<'a>(&'a self, run_id: &'a str, at: OffsetDateTime)
        -> StoreFuture<'a, ()>;

    /// The newest runs (by start), at most `limit`.
    fn refresh_runs(&self, limit: usize) -> StoreFuture<'_, Vec<RefreshRunRecord>>;

    /// Takes back the runs of dead nodes: for every running run whose node's last heartbeat
    /// is before `dead_before` (or whose node is not recorded), withdraws its devices'
    /// attempts as [`PushStore::withdraw_push_attempts`] does (still the run's, no outcome,
    /// no report since) and marks it abandoned at `at`. The runs abandoned.
    fn sweep_dead_runs(
        &self,
        dead_before: OffsetDateTime,
        at: OffsetDateTime,
    ) -> StoreFuture<'_, Vec<RefreshRunRecord>>;
}

/// [`ClusterStore`] kept in memory, for stores with one node: all of it for the memory
/// store; the heartbeats and claims for the SQLite store (one process per data directory, so
/// they concern only the running process), which keeps its refresh runs in the database so
/// that the next process can take back those of one killed mid-refresh.
#[derive(Debug, Default)]
pub struct ClusterMemory {
    inner: Mutex<ClusterState>,
}

#[derive(Debug, Default)]
struct ClusterState {
    nodes: BTreeMap<String, Node>,
    schedules: HashMap<String, OffsetDateTime>,
    /// In start order.
    runs: Vec<RefreshRunRecord>,
    devices: HashMap<String, Vec<String>>,
}

impl ClusterMemory {
    fn lock(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`ClusterStore::heartbeat`].
    pub fn heartbeat(&self, node: &Node) {
        let mut node = node.clone();
        node.started_at = truncate_ms(node.started_at);
        node.last_heartbeat_at = truncate_ms(node.last_heartbeat_at);
        self.lock().nodes.insert(node.id.clone(), node);
    }

    /// [`ClusterStore::nodes`].
    pub fn nodes(&self) -> Vec<Node> {
        let mut nodes: Vec<Node> = self.lock().nodes.values().cloned().collect();
        nodes.sort_by(|a, b| (&a.name, &a.id).cmp(&(&b.name, &b.id)));
        nodes
    }

    /// [`ClusterStore::prune_nodes`].
    pub fn prune_nodes(&self, silent_since: OffsetDateTime) -> u64 {
        let mut s = self.lock();
        let before = s.nodes.len();
        s.nodes.retain(|_, n| n.last_heartbeat_at >= silent_since);
        (before - s.nodes.len()) as u64
    }

    /// Whether node `node_id` is dead at `dead_before`: not recorded, or its last heartbeat
    /// is older.
    pub fn is_dead(&self, node_id: &str, dead_before: OffsetDateTime) -> bool {
        self.lock()
            .nodes
            .get(node_id)
            .is_none_or(|n| n.last_heartbeat_at < dead_before)
    }

    /// [`ClusterStore::claim_schedule`].
    pub fn claim_schedule(&self, job: &str, now: OffsetDateTime, every: Duration) -> bool {
        let mut s = self.lock();
        let decision = schedule_decision(s.schedules.get(job).copied(), now, every);
        if decision != ScheduleDecision::Wait {
            s.schedules.insert(job.to_owned(), truncate_ms(now));
        }
        decision == ScheduleDecision::Run
    }

    /// [`ClusterStore::begin_refresh_run`].
    pub fn begin_run(&self, run: &RefreshRunRecord) -> bool {
        let mut s = self.lock();
        if s.runs.iter().any(|r| r.attempted_at == run.attempted_at) {
            return false;
        }
        s.runs.push(run.clone());
        let finished = s.runs.iter().filter(|r| r.finished_at.is_some()).count();
        let mut excess = finished.saturating_sub(RUNS_KEPT);
        s.runs.retain(|r| {
            let drop = excess > 0 && r.finished_at.is_some();
            excess -= usize::from(drop);
            !drop
        });
        true
    }

    /// [`ClusterStore::add_refresh_run_devices`].
    pub fn add_run_devices(&self, run_id: &str, udids: &[String]) {
        let mut s = self.lock();
        if let Some(run) = s.runs.iter_mut().find(|r| r.id == run_id) {
            run.devices += udids.len() as u64;
        }
        s.devices
            .entry(run_id.to_owned())
            .or_default()
            .extend(udids.iter().cloned());
    }

    /// [`ClusterStore::add_refresh_run_progress`].
    pub fn add_progress(&self, run_id: &str, answered: u64, withdrawn: u64) {
        if let Some(run) = self.lock().runs.iter_mut().find(|r| r.id == run_id) {
            run.answered += answered;
            run.withdrawn += withdrawn;
        }
    }

    /// [`ClusterStore::finish_refresh_run`].
    pub fn finish_run(&self, run_id: &str, at: OffsetDateTime) {
        let mut s = self.lock();
        s.devices.remove(run_id);
        if let Some(run) = s
            .runs
            .iter_mut()
            .find(|r| r.id == run_id && r.state == RunState::Running)
        {
            run.state = RunState::Finished;
            run.finished_at = Some(truncate_ms(at));
        }
    }

    /// [`ClusterStore::refresh_runs`].
    pub fn runs(&self, limit: usize) -> Vec<RefreshRunRecord> {
        let s = self.lock();
        let mut runs: Vec<RefreshRunRecord> = s.runs.iter().rev().take(limit).cloned().collect();
        runs.sort_by(|a, b| (b.started_at, &b.id).cmp(&(a.started_at, &a.id)));
        runs
    }

    /// The running runs of nodes dead at `dead_before`, with their devices.
    fn dead_runs(&self, dead_before: OffsetDateTime) -> Vec<(RefreshRunRecord, Vec<String>)> {
        let s = self.lock();
        s.runs
            .iter()
            .filter(|r| r.state == RunState::Running)
            .filter(|r| {
                s.nodes
                    .get(&r.node_id)
                    .is_none_or(|n| n.last_heartbeat_at < dead_before)
            })
            .map(|r| (r.clone(), s.devices.get(&r.id).cloned().unwrap_or_default()))
            .collect()
    }

    /// Marks a run abandoned with `withdrawn` attempts taken back; `None` if it was no longer
    /// running.
    fn abandon(
        &self,
        run_id: &str,
        withdrawn: u64,
        at: OffsetDateTime,
    ) -> Option<RefreshRunRecord> {
        let mut s = self.lock();
        s.devices.remove(run_id);
        let run = s
            .runs
            .iter_mut()
            .find(|r| r.id == run_id && r.state == RunState::Running)?;
        run.state = RunState::Abandoned;
        run.finished_at = Some(truncate_ms(at));
        run.withdrawn += withdrawn;
        Some(run.clone())
    }

    /// [`ClusterStore::sweep_dead_runs`], withdrawing through `push` (the store whose
    /// devices the runs marked).
    pub async fn sweep(
        &self,
        push: &dyn PushStore,
        dead_before: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Result<Vec<RefreshRunRecord>, StoreError> {
        let mut swept = Vec::new();
        for (run, udids) in self.dead_runs(dead_before) {
            let mut withdrawn = 0;
            for chunk in udids.chunks(SWEEP_CHUNK) {
                withdrawn += push.withdraw_push_attempts(chunk, run.attempted_at).await?;
            }
            swept.extend(self.abandon(&run.id, withdrawn, at));
        }
        Ok(swept)
    }
}

/// Implements [`ClusterStore`] for a store type with a `cluster: ClusterMemory` field (and
/// [`PushStore`]).
#[macro_export]
macro_rules! cluster_in_memory {
    ($store:ty) => {
        impl $crate::cluster::ClusterStore for $store {
            fn heartbeat<'a>(
                &'a self,
                node: &'a $crate::cluster::Node,
            ) -> $crate::StoreFuture<'a, ()> {
                self.cluster.heartbeat(node);
                Box::pin(std::future::ready(Ok(())))
            }

            fn nodes(&self) -> $crate::StoreFuture<'_, Vec<$crate::cluster::Node>> {
                Box::pin(std::future::ready(Ok(self.cluster.nodes())))
            }

            fn prune_nodes(
                &self,
                silent_since: time::OffsetDateTime,
            ) -> $crate::StoreFuture<'_, u64> {
                Box::pin(std::future::ready(Ok(self
                    .cluster
                    .prune_nodes(silent_since))))
            }

            fn claim_schedule<'a>(
                &'a self,
                job: &'a str,
                _node_id: &'a str,
                now: time::OffsetDateTime,
                every: std::time::Duration,
            ) -> $crate::StoreFuture<'a, bool> {
                Box::pin(std::future::ready(Ok(self
                    .cluster
                    .claim_schedule(job, now, every))))
            }

            fn begin_refresh_run<'a>(
                &'a self,
                run: &'a $crate::cluster::RefreshRunRecord,
            ) -> $crate::StoreFuture<'a, bool> {
                Box::pin(std::future::ready(Ok(self.cluster.begin_run(run))))
            }

            fn add_refresh_run_devices<'a>(
                &'a self,
                run_id: &'a str,
                udids: &'a [String],
            ) -> $crate::StoreFuture<'a, ()> {
                self.cluster.add_run_devices(run_id, udids);
                Box::pin(std::future::ready(Ok(())))
            }

            fn add_refresh_run_progress<'a>(
                &'a self,
                run_id: &'a str,
                answered: u64,
                withdrawn: u64,
            ) -> $crate::StoreFuture<'a, ()> {
                self.cluster.add_progress(run_id, answered, withdrawn);
                Box::pin(std::future::ready(Ok(())))
            }

            fn finish_refresh_run<'a>(
                &'a self,
                run_id: &'a str,
                at: time::OffsetDateTime,
            ) -> $crate::StoreFuture<'a, ()> {
                self.cluster.finish_run(run_id, at);
                Box::pin(std::future::ready(Ok(())))
            }

            fn refresh_runs(
                &self,
                limit: usize,
            ) -> $crate::StoreFuture<'_, Vec<$crate::cluster::RefreshRunRecord>> {
                Box::pin(std::future::ready(Ok(self.cluster.runs(limit))))
            }

            fn sweep_dead_runs(
                &self,
                dead_before: time::OffsetDateTime,
                at: time::OffsetDateTime,
            ) -> $crate::StoreFuture<'_, Vec<$crate::cluster::RefreshRunRecord>> {
                Box::pin(self.cluster.sweep(self, dead_before, at))
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> OffsetDateTime {
        crate::from_ms(1_780_000_000_000 + ms)
    }

    #[test]
    fn a_job_runs_once_a_period_has_passed_since_its_last_run() {
        let every = Duration::from_secs(60);
        assert_eq!(
            schedule_decision(None, t(0), every),
            ScheduleDecision::Start
        );
        assert_eq!(
            schedule_decision(Some(t(0)), t(59_999), every),
            ScheduleDecision::Wait
        );
        assert_eq!(
            schedule_decision(Some(t(0)), t(60_000), every),
            ScheduleDecision::Run
        );
        assert_eq!(
            schedule_decision(Some(t(0)), t(3_600_000), every),
            ScheduleDecision::Run
        );
        // Another node's clock ahead: its last run "in the future" is not a period ago.
        assert_eq!(
            schedule_decision(Some(t(5_000)), t(0), every),
            ScheduleDecision::Wait
        );
    }

    #[test]
    fn a_node_is_alive_within_the_window_after_its_heartbeat() {
        let window = Duration::from_secs(30);
        assert!(is_alive(t(0), t(29_999), window));
        assert!(!is_alive(t(0), t(30_000), window));
        assert!(is_alive(t(1_000), t(0), window), "a clock ahead");
    }

    #[test]
    fn run_kinds_have_stable_names() {
        for k in [RunKind::Refresh, RunKind::Command] {
            assert_eq!(RunKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(RunKind::parse("other"), None);
    }

    #[test]
    fn run_states_have_stable_names() {
        for s in [RunState::Running, RunState::Finished, RunState::Abandoned] {
            assert_eq!(RunState::parse(s.as_str()), Some(s));
        }
        assert_eq!(RunState::parse("gone"), None);
    }

    #[test]
    fn memory_claims_run_once_per_period_and_keep_bounded_runs() {
        let c = ClusterMemory::default();
        let every = Duration::from_secs(10);
        assert!(!c.claim_schedule("collect", t(0), every));
        assert!(!c.claim_schedule("collect", t(9_999), every));
        assert!(c.claim_schedule("collect", t(10_000), every));
        assert!(!c.claim_schedule("collect", t(10_001), every));
        for i in 0..(RUNS_KEPT as i64 + 5) {
            let run = RefreshRunRecord::begin(format!("r{i}"), "n".into(), t(i));
            assert!(c.begin_run(&run));
            assert!(!c.begin_run(&run), "its attempt time is taken");
            c.finish_run(&run.id, t(i));
        }
        assert!(c.runs(usize::MAX).len() <= RUNS_KEPT + 1);
        assert_eq!(c.runs(1)[0].id, format!("r{}", RUNS_KEPT + 4));
    }
}
