//! This server as a node among several on one store: its heartbeat, the sweep of dead
//! nodes' refresh runs, the scheduled collection's claim, and the `GET /v1/nodes` view.
//!
//! Each `serve` process is a node with a random id, fresh at each start. Every
//! [`NodeSettings::heartbeat_every`] it records its heartbeat, prunes nodes silent for
//! [`PRUNE_AFTER`], and sweeps the refresh runs of nodes silent for
//! [`NodeSettings::dead_after`]: their unanswered push attempts are taken back, so the
//! devices read `never_pushed` and the next refresh, from any node, pushes them. Every
//! [`CHALLENGE_PRUNE_EVERY`] it also deletes the enrollment challenges used or expired more
//! than [`CHALLENGES_KEPT`] ago (each profile fetched makes one).

use std::sync::{Arc, Mutex};
use std::time::Duration;
use utoipa::ToSchema;

use serde::Serialize;
use time::OffsetDateTime;

use magicpush_store::cluster::{is_alive, Node, RefreshRunRecord, RunKind, RunState};
use magicpush_store::rfc3339;

use super::refresh::RefreshTarget;
use super::{Service, ServiceError};

/// Nodes silent this long are deleted from the list.
pub const PRUNE_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How long a used or expired enrollment challenge is kept (for a look at what happened).
pub const CHALLENGES_KEPT: Duration = Duration::from_secs(24 * 3600);

/// How often a node prunes the enrollment challenges.
pub const CHALLENGE_PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The scheduled collection's job name in the store.
pub const COLLECT_JOB: &str = "collect";

/// Refresh runs `GET /v1/nodes` shows.
const RUNS_SHOWN: usize = 10;

/// How this node heartbeats and judges others.
#[derive(Debug, Clone)]
pub struct NodeSettings {
    /// Its name (`--node-name`).
    pub name: String,
    /// Heartbeat (and sweep) period. Default 5 s.
    pub heartbeat_every: Duration,
    /// A node silent this long is dead: its refresh runs are swept. Default 30 s.
    pub dead_after: Duration,
}

impl Default for NodeSettings {
    fn default() -> Self {
        NodeSettings {
            name: "magicpush".into(),
            heartbeat_every: Duration::from_secs(5),
            dead_after: Duration::from_secs(30),
        }
    }
}

impl NodeSettings {
    /// Refuses settings under which a live node would look dead between two heartbeats.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat_every.is_zero() {
            return Err("the heartbeat interval must be longer than 0s".into());
        }
        if self.dead_after < 2 * self.heartbeat_every {
            return Err(format!(
                "a node is declared dead after {:?} without a heartbeat: it must be at least twice the heartbeat interval ({:?})",
                self.dead_after, self.heartbeat_every
            ));
        }
        Ok(())
    }
}

/// This process as a node.
#[derive(Debug)]
pub(crate) struct ThisNode {
    id: String,
    settings: NodeSettings,
    started_at: OffsetDateTime,
    url: Mutex<String>,
    /// When this node last pruned the enrollment challenges.
    challenges_pruned: Mutex<Option<OffsetDateTime>>,
}

impl ThisNode {
    pub(crate) fn new(settings: NodeSettings, now: OffsetDateTime) -> Self {
        ThisNode {
            id: uuid::Uuid::new_v4().to_string(),
            settings,
            started_at: magicpush_store::truncate_ms(now),
            url: Mutex::new(String::new()),
            challenges_pruned: Mutex::new(None),
        }
    }

    /// Whether the challenges are due for pruning at `now` (and, if so, marks them pruned).
    fn challenge_prune_due(&self, now: OffsetDateTime) -> bool {
        let mut last = self
            .challenges_pruned
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match *last {
            Some(at) if now - at < CHALLENGE_PRUNE_EVERY => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Its heartbeat row at `now`.
    fn row(&self, now: OffsetDateTime) -> Node {
        Node {
            id: self.id.clone(),
            name: self.settings.name.clone(),
            version: env!("CARGO_PKG_VERSION").into(),
            url: self.url.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            started_at: self.started_at,
            last_heartbeat_at: magicpush_store::truncate_ms(now),
        }
    }
}

/// `GET /v1/nodes`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodesView {
    /// Every node recorded, by name.
    pub nodes: Vec<NodeView>,
    /// The newest refresh runs, from any node, newest first.
    pub refreshes: Vec<RunView>,
    /// When (RFC 3339).
    pub generated_at: String,
}

/// One node.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct NodeView {
    /// Random, fresh at each start.
    pub id: String,
    /// Its `--node-name`.
    pub name: String,
    /// The magicpush version it runs.
    pub version: String,
    /// Where it listens.
    pub url: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub last_heartbeat_at: String,
    /// A heartbeat within the dead-after window.
    pub alive: bool,
}

/// One refresh run (or a command's pushes).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RunView {
    /// Its id.
    pub id: String,
    /// `refresh`, or `command` (a command sent with a push).
    #[schema(value_type = crate::http::openapi::RunKind)]
    pub kind: RunKind,
    /// The node that runs (ran) it.
    pub node_id: String,
    /// That node's name, while it is listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// `running`, `finished` or `abandoned` (its node died; its unanswered attempts were
    /// taken back).
    #[schema(value_type = crate::http::openapi::RunState)]
    pub state: RunState,
    /// Devices it marked for a push.
    pub devices: u64,
    /// Pushes whose outcome is written.
    pub answered: u64,
    /// Attempts taken back after its node died.
    pub withdrawn: u64,
    /// The `last_push_at` of its pushes (RFC 3339).
    pub pushed_at: String,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339; absent while running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl From<RefreshRunRecord> for RunView {
    fn from(r: RefreshRunRecord) -> Self {
        RunView {
            id: r.id,
            kind: r.kind,
            node_id: r.node_id,
            node: None,
            state: r.state,
            devices: r.devices,
            answered: r.answered,
            withdrawn: r.withdrawn,
            pushed_at: rfc3339(r.attempted_at),
            started_at: rfc3339(r.started_at),
            finished_at: r.finished_at.map(rfc3339),
        }
    }
}

impl Service {
    /// This node's id (random, fresh at each start).
    pub fn node_id(&self) -> &str {
        self.node.id()
    }

    /// This node's name.
    pub fn node_name(&self) -> &str {
        &self.node.settings.name
    }

    /// The URL this node listens on, as its heartbeat shows it.
    pub fn set_node_url(&self, url: &str) {
        *self.node.url.lock().unwrap_or_else(|e| e.into_inner()) = url.to_owned();
    }

    /// Records this node's heartbeat at `now`.
    pub(crate) async fn heartbeat(&self, now: OffsetDateTime) -> Result<(), ServiceError> {
        Ok(self.store.heartbeat(&self.node.row(now)).await?)
    }

    /// One tick: the heartbeat, the pruning of long-silent nodes, and the sweep of dead
    /// nodes' refresh runs. The runs abandoned.
    pub async fn node_tick(&self) -> Result<Vec<RefreshRunRecord>, ServiceError> {
        let now = Self::now();
        self.heartbeat(now).await?;
        self.store.prune_nodes(now - PRUNE_AFTER).await?;
        let dead_before = now - self.node.settings.dead_after;
        let swept = self.store.sweep_dead_runs(dead_before, now).await?;
        if self.node.challenge_prune_due(now) {
            let pruned = self.store.prune_challenges(now - CHALLENGES_KEPT).await?;
            if pruned > 0 {
                tracing::info!(pruned, "used and expired enrollment challenges deleted");
            }
        }
        for run in &swept {
            tracing::warn!(
                run = %run.id,
                dead_node = %run.node_id,
                devices = run.devices,
                withdrawn = run.withdrawn,
                "a dead node's refresh taken back: its unanswered devices read never_pushed and the next refresh pushes them"
            );
        }
        Ok(swept)
    }

    /// Records a run of `kind` beginning on this node; its id and the attempt time its marks
    /// carry: now, or the next free millisecond (no two runs share one). The heartbeat goes
    /// first, so that no node sees a run whose node is not listed (dead).
    pub(crate) async fn begin_run(
        &self,
        kind: RunKind,
    ) -> Result<(String, OffsetDateTime), ServiceError> {
        let mut at = magicpush_store::truncate_ms(Self::now());
        self.heartbeat(at).await?;
        for _ in 0..BEGIN_TRIES {
            let id = uuid::Uuid::new_v4().to_string();
            let mut run = RefreshRunRecord::begin(id, self.node_id().to_owned(), at);
            run.kind = kind;
            if self.store.begin_refresh_run(&run).await? {
                tracing::info!(run = %run.id, kind = kind.as_str(), node = %self.node_name(), "push run begins");
                return Ok((run.id, at));
            }
            at += time::Duration::milliseconds(1);
        }
        Err(ServiceError::Conflict(format!(
            "no free millisecond for a refresh's push attempts after {BEGIN_TRIES} tries: too many refreshes at once; retry"
        )))
    }

    /// Runs [`Service::node_tick`] now and every heartbeat interval until aborted, and
    /// re-reads the stored settings each time ([`Service::reload_settings`]).
    pub fn spawn_heartbeat(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(service.node.settings.heartbeat_every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Err(err) = service.node_tick().await {
                    tracing::warn!("node heartbeat failed: {err}");
                }
                // Settings changed through another node's PUT /v1/settings reach this one.
                if let Err(err) = service.reload_settings().await {
                    tracing::warn!("cannot re-read the stored settings: {err}");
                }
            }
        })
    }

    /// `GET /v1/nodes`: the nodes with their liveness at `now`, and the newest refresh runs.
    pub async fn nodes(&self) -> Result<NodesView, ServiceError> {
        let now = Self::now();
        let dead_after = self.node.settings.dead_after;
        let nodes: Vec<NodeView> = self
            .store
            .nodes()
            .await?
            .into_iter()
            .map(|n| NodeView {
                alive: is_alive(n.last_heartbeat_at, now, dead_after),
                id: n.id,
                name: n.name,
                version: n.version,
                url: n.url,
                started_at: rfc3339(n.started_at),
                last_heartbeat_at: rfc3339(n.last_heartbeat_at),
            })
            .collect();
        let refreshes = self
            .store
            .refresh_runs(RUNS_SHOWN)
            .await?
            .into_iter()
            .map(|r| {
                let mut view = RunView::from(r);
                view.node = nodes
                    .iter()
                    .find(|n| n.id == view.node_id)
                    .map(|n| n.name.clone());
                view
            })
            .collect();
        Ok(NodesView {
            nodes,
            refreshes,
            generated_at: rfc3339(now),
        })
    }

    /// Runs "refresh all" every `every` on one node of the cluster at a time: every node
    /// ticks more often ([`collector_tick`]) and claims the job in the store, which grants
    /// it once a period ([`magicpush_store::cluster::schedule_decision`]); so the
    /// collection keeps its cadence when the node that ran it last dies. The first run is one
    /// period after the first node started. Until the task is aborted.
    pub fn spawn_collector(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let tick = collector_tick(every);
            let mut ticks = tokio::time::interval(tick);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let claimed = service
                    .store
                    .claim_schedule(COLLECT_JOB, service.node_id(), Self::now(), every)
                    .await;
                match claimed {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(err) => {
                        tracing::warn!("cannot claim the scheduled collection: {err}");
                        continue;
                    }
                }
                tracing::info!(node = %service.node_name(), node_id = %service.node_id(), "scheduled collection claimed by this node");
                match service.refresh(RefreshTarget::All).await {
                    Ok(s) => {
                        tracing::info!(pushing = s.pushing, run = %s.run_id, "scheduled collection started")
                    }
                    Err(err) => tracing::warn!("scheduled collection failed: {err}"),
                }
            }
        })
    }
}

/// Milliseconds a refresh tries for its attempt time before giving up.
const BEGIN_TRIES: usize = 100;

/// Adds to `run`'s progress in the store; a failure is only logged (the progress is for
/// display; the devices' own rows are what counts).
pub(crate) async fn add_progress(
    store: &dyn magicpush_store::Store,
    run: &str,
    answered: u64,
    withdrawn: u64,
) {
    if let Err(err) = store
        .add_refresh_run_progress(run, answered, withdrawn)
        .await
    {
        tracing::info!(%run, "refresh run progress not recorded: {err}");
    }
}

/// Marks `run` finished (every push has its outcome written or was taken back), trying a
/// few times; a run left `running` is swept once this node dies, which takes back only
/// the attempts that still have no outcome.
pub(crate) async fn finish_run(store: &dyn magicpush_store::Store, run: &str) {
    let mut wait = Duration::from_millis(100);
    for attempt in 1..=4 {
        match store.finish_refresh_run(run, Service::now()).await {
            Ok(()) => {
                tracing::info!(%run, "refresh run finished");
                return;
            }
            Err(err) if attempt < 4 => {
                tracing::info!(%run, "refresh run not marked finished yet ({err}); retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait *= 4;
            }
            Err(err) => tracing::warn!(%run, "cannot mark the refresh run finished: {err}"),
        }
    }
}

/// How often nodes claim a job of period `every`: a tenth of it, at most 30 s, at least
/// 10 ms.
pub fn collector_tick(every: Duration) -> Duration {
    (every / 10).clamp(Duration::from_millis(10), Duration::from_secs(30))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_claim_ten_times_a_period_at_most_every_30s() {
        assert_eq!(
            collector_tick(Duration::from_secs(24 * 3600)),
            Duration::from_secs(30)
        );
        assert_eq!(
            collector_tick(Duration::from_secs(60)),
            Duration::from_secs(6)
        );
        assert_eq!(
            collector_tick(Duration::from_millis(1)),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn challenges_are_pruned_once_an_hour() {
        let start = time::macros::datetime!(2026-12-07 0:00 UTC);
        let node = ThisNode::new(NodeSettings::default(), start);
        assert!(node.challenge_prune_due(start));
        assert!(!node.challenge_prune_due(start + time::Duration::minutes(59)));
        assert!(node.challenge_prune_due(start + time::Duration::minutes(60)));
        assert!(!node.challenge_prune_due(start + time::Duration::minutes(61)));
    }

    #[test]
    fn a_node_cannot_be_dead_between_two_heartbeats() {
        assert!(NodeSettings::default().check().is_ok());
        let tight = NodeSettings {
            heartbeat_every: Duration::from_secs(5),
            dead_after: Duration::from_secs(9),
            ..NodeSettings::default()
        };
        assert!(tight.check().unwrap_err().contains("twice"));
    }
}
