//! The server nodes of a fleet run (`--nodes N`, `--database-url`) and how the devices'
//! requests are spread over them.
//!
//! - [`NodeSet`]: the nodes, started as children on one store (SQLite in a temporary
//!   directory for one node; a schema of its own in PostgreSQL for any number), or a running
//!   server (`--server`). Stopped, and its schema dropped, by [`NodeSet::stop`].
//! - [`NodeRoutes`]: which node each device request goes to (a seeded choice per device and
//!   request, the same in every run of a seed), and how many each node got.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use magicpush_server::client::AdminClient;
use serde::Serialize;

use super::conn::DeviceConn;
use super::database::RunSchema;
use super::server::{NodeStore, ServeSettings, ServerProcess};
use super::tenants::{self, Tenant};
use super::{admin_err, FleetError};

/// Most nodes a run starts (each is a server process with its own connection pool).
pub const MAX_NODES: usize = 16;

/// The store of the spawned nodes, as the report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// SQLite in a data directory (one node).
    Sqlite,
    /// PostgreSQL (`--database-url`), shared by the nodes.
    Postgres,
}

impl StoreKind {
    /// `sqlite` or `postgres`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// Whether `nodes` nodes can run on this store: at least one, at most [`MAX_NODES`], and more
/// than one only on a shared database (SQLite locks its directory to one server).
pub fn check(nodes: usize, database_url: Option<&str>) -> Result<(), FleetError> {
    if nodes == 0 || nodes > MAX_NODES {
        return Err(FleetError::Config(format!(
            "--nodes must be between 1 and {MAX_NODES}, not {nodes}"
        )));
    }
    if nodes > 1 && database_url.is_none() {
        return Err(FleetError::NodesNeedDatabase { nodes });
    }
    Ok(())
}

/// What a run's nodes are.
#[derive(Debug)]
pub(crate) enum NodePlan<'a> {
    /// Start `nodes` children with `settings` (its store is the SQLite directory to use for
    /// one node without a database).
    Spawn {
        settings: Box<ServeSettings>,
        nodes: usize,
        database_url: Option<&'a str>,
        /// Where the shared secrets key file is written (a private temporary directory).
        scratch: &'a Path,
    },
    /// A running server (`--server`): one node, not started or stopped here.
    Existing { url: &'a str, api_key: &'a str },
}

/// The nodes of a run. [`NodeSet::stop`] stops them (dropping it also does, without
/// dropping the schema).
#[derive(Debug)]
pub(crate) struct NodeSet {
    processes: Vec<ServerProcess>,
    urls: Vec<String>,
    api_key: String,
    store: Option<StoreKind>,
    schema: Option<RunSchema>,
}

impl NodeSet {
    /// Starts the nodes and registers `tenants` (`--topics` 2..) through the first. With
    /// several nodes the first starts alone, the tenants are registered through it, and then
    /// the others start, reading every tenant from the database at start. (A node already
    /// running would get them within a second through the database's notifications; starting
    /// the others after keeps the run from depending on that timing.) Returns the
    /// registrations' wall time. On failure whatever started is stopped and the schema dropped.
    pub(crate) async fn start(
        plan: NodePlan<'_>,
        tenants: &[Tenant],
    ) -> Result<(NodeSet, Duration), FleetError> {
        let mut set = NodeSet {
            processes: Vec::new(),
            urls: Vec::new(),
            api_key: String::new(),
            store: None,
            schema: None,
        };
        let started = set.start_inner(plan, tenants).await;
        match started {
            Ok(register) => Ok((set, register)),
            Err(e) => {
                if let Err(stop) = set.stop().await {
                    tracing::warn!("cleaning up after a failed start: {stop}");
                }
                Err(e)
            }
        }
    }

    async fn start_inner(
        &mut self,
        plan: NodePlan<'_>,
        tenants: &[Tenant],
    ) -> Result<Duration, FleetError> {
        let (mut settings, nodes, database_url, scratch) = match plan {
            NodePlan::Existing { url, api_key } => {
                self.urls.push(url.to_owned());
                self.api_key = api_key.to_owned();
                return tenants::register(&self.admin(0)?, tenants).await;
            }
            NodePlan::Spawn {
                settings,
                nodes,
                database_url,
                scratch,
            } => (*settings, nodes, database_url, scratch),
        };
        check(nodes, database_url)?;
        self.api_key = settings.api_key.clone();
        self.store = Some(StoreKind::Sqlite);
        if let Some(url) = database_url {
            let schema = RunSchema::create(url).await?;
            settings.store = NodeStore::Postgres {
                url: schema.url().to_owned(),
                secrets_key_file: write_secrets_key(scratch)?,
            };
            self.schema = Some(schema);
            self.store = Some(StoreKind::Postgres);
        }
        let first = spawn(settings.clone()).await?;
        self.urls.push(first.url().to_owned());
        self.processes.push(first);
        let register = tenants::register(&self.admin(0)?, tenants).await?;
        let rest: Vec<_> = (1..nodes)
            .map(|_| tokio::spawn(spawn(settings.clone())))
            .collect();
        let mut failed = None;
        for node in rest {
            let node = node.await.map_err(|e| FleetError::Server {
                detail: e.to_string(),
            });
            match node.and_then(|n| n) {
                Ok(process) => {
                    self.urls.push(process.url().to_owned());
                    self.processes.push(process);
                }
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(register),
        }
    }

    /// The nodes' base URLs, in start order.
    pub(crate) fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The store of spawned nodes (None: `--server`, not known).
    pub(crate) fn store(&self) -> Option<StoreKind> {
        self.store
    }

    /// The run's PostgreSQL schema, if any.
    pub(crate) fn schema(&self) -> Option<&str> {
        self.schema.as_ref().map(RunSchema::name)
    }

    /// The node the refresh is started on, and the run's counts read from: the last started,
    /// so that with several nodes it is not the one the tenants were registered through (it
    /// pushes with the certificates it loaded from the database).
    pub(crate) fn refresh_node(&self) -> usize {
        self.urls.len().saturating_sub(1)
    }

    /// An admin API client of node `node`.
    pub(crate) fn admin(&self, node: usize) -> Result<AdminClient, FleetError> {
        let url = self.urls.get(node).ok_or_else(|| FleetError::Server {
            detail: format!("no node {node}"),
        })?;
        Ok(AdminClient::new(url, Some(self.api_key.clone()), None)
            .map_err(|e| admin_err("client", e))?
            .with_timeout(Duration::from_secs(60)))
    }

    /// Each spawned node's peak resident memory so far, in MiB (empty for `--server`).
    pub(crate) fn peak_rss_mb(&self) -> Vec<Option<f64>> {
        self.processes
            .iter()
            .map(ServerProcess::peak_rss_mb)
            .collect()
    }

    /// Stops the spawned nodes (together), then drops the run's schema.
    pub(crate) async fn stop(mut self) -> Result<(), FleetError> {
        let stopping: Vec<_> = self
            .processes
            .drain(..)
            .map(|p| tokio::task::spawn_blocking(move || p.stop()))
            .collect();
        for s in stopping {
            let _ = s.await;
        }
        match self.schema.take() {
            Some(schema) => schema.drop_schema().await,
            None => Ok(()),
        }
    }
}

async fn spawn(settings: ServeSettings) -> Result<ServerProcess, FleetError> {
    tokio::task::spawn_blocking(move || ServerProcess::spawn(&settings))
        .await
        .map_err(|e| FleetError::Server {
            detail: e.to_string(),
        })?
}

/// A fresh secrets key (32 random bytes, hex) in `dir`/secrets.key, shared by the nodes: each
/// node seals the push certificates' keys and the escrowed tokens with it, and must open what
/// the others sealed. `dir` is the run's private temporary directory.
fn write_secrets_key(dir: &Path) -> Result<PathBuf, FleetError> {
    use ring::rand::SecureRandom;
    let mut key = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| FleetError::Config("no random bytes for the secrets key".into()))?;
    let path = dir.join("secrets.key");
    std::fs::write(&path, hex::encode(key)).map_err(|e| {
        FleetError::Config(format!(
            "cannot write the secrets key {}: {e}",
            path.display()
        ))
    })?;
    Ok(path)
}

/// What the device side needs to reach one node.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    addr: SocketAddr,
    authority: String,
}

impl Target {
    pub(crate) async fn resolve(url: &str) -> Result<Target, FleetError> {
        let authority = url
            .trim_end_matches('/')
            .strip_prefix("http://")
            .ok_or_else(|| {
                FleetError::Config(format!(
                    "the device traffic needs a plain http:// server URL, not {url}"
                ))
            })?
            .to_owned();
        let addr = tokio::net::lookup_host(authority.as_str())
            .await
            .map_err(|e| FleetError::Config(format!("cannot resolve {authority}: {e}")))?
            .next()
            .ok_or_else(|| FleetError::Config(format!("{authority} resolves to nothing")))?;
        Ok(Target { addr, authority })
    }

    fn conn(&self) -> DeviceConn {
        DeviceConn::new(self.addr, &self.authority, Duration::from_secs(30))
    }
}

/// The number of a device's request, for [`NodeRoutes::node_of`]: Authenticate 0,
/// TokenUpdate 1, then its reports after the push from [`FIRST_REPORT`] on.
pub(crate) const FIRST_REPORT: u32 = 2;
/// With `--enroll`, the request for the enrollment profile (before Authenticate).
pub(crate) const PROFILE_REQUEST: u32 = 254;
/// With `--enroll`, the SCEP PKIOperation (after the profile, before Authenticate).
pub(crate) const SCEP_REQUEST: u32 = 255;

/// Which node each device request goes to, and how many each node got.
#[derive(Debug)]
pub(crate) struct NodeRoutes {
    targets: Vec<Target>,
    requests: Vec<AtomicU64>,
    seed: u64,
}

impl NodeRoutes {
    /// Routes over the nodes at `urls` (at least one), choosing with `seed`.
    pub(crate) async fn resolve(urls: &[String], seed: u64) -> Result<Arc<NodeRoutes>, FleetError> {
        let mut targets = Vec::with_capacity(urls.len());
        for url in urls {
            targets.push(Target::resolve(url).await?);
        }
        if targets.is_empty() {
            return Err(FleetError::Config("no node to send requests to".into()));
        }
        Ok(Arc::new(NodeRoutes {
            requests: targets.iter().map(|_| AtomicU64::new(0)).collect(),
            targets,
            seed,
        }))
    }

    /// The node of request `request` of device `device`: uniform over the nodes, independent
    /// from one request to the next (so one device's reports race on several nodes), and the
    /// same for a seed whatever order the workers run in.
    pub(crate) fn node_of(&self, device: usize, request: u32) -> usize {
        node_of(self.seed, self.targets.len(), device, request)
    }

    /// Requests sent to each node so far (retries on a broken connection not counted).
    pub(crate) fn requests(&self) -> Vec<u64> {
        self.requests
            .iter()
            .map(|r| r.load(Ordering::Relaxed))
            .collect()
    }

    /// A worker's connections: one per node, each opened at its first request.
    pub(crate) fn conns(self: &Arc<Self>) -> NodeConns {
        NodeConns {
            conns: self.targets.iter().map(Target::conn).collect(),
            routes: Arc::clone(self),
        }
    }
}

/// splitmix64's output function: a well-mixed 64-bit value of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn node_of(seed: u64, nodes: usize, device: usize, request: u32) -> usize {
    if nodes <= 1 {
        return 0;
    }
    let x = mix(seed ^ mix(((device as u64) << 8) ^ u64::from(request)));
    (x % nodes as u64) as usize
}

/// One worker's connections to the nodes.
pub(crate) struct NodeConns {
    conns: Vec<DeviceConn>,
    routes: Arc<NodeRoutes>,
}

impl NodeConns {
    /// `PUT path` as request `request` of device `device`, to the node [`NodeRoutes`] chose.
    pub(crate) async fn put(
        &mut self,
        device: usize,
        request: u32,
        path: &'static str,
        content_type: &'static str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> Result<(StatusCode, Bytes), FleetError> {
        let node = self.routes.node_of(device, request);
        self.routes.requests[node].fetch_add(1, Ordering::Relaxed);
        self.conns[node]
            .put(path, content_type, body, signature)
            .await
    }

    /// `method path` as request `request` of device `device`, to the node [`NodeRoutes`]
    /// chose (`label` names the request in errors).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn send(
        &mut self,
        device: usize,
        request: u32,
        method: Method,
        path: &str,
        label: &'static str,
        content_type: Option<&'static str>,
        body: Bytes,
    ) -> Result<(StatusCode, Bytes), FleetError> {
        let node = self.routes.node_of(device, request);
        self.routes.requests[node].fetch_add(1, Ordering::Relaxed);
        self.conns[node]
            .send(method, path, label, content_type, body, None)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_node_takes_everything() {
        assert!((0..100).all(|d| node_of(7, 1, d, 0) == 0 && node_of(7, 1, d, 5) == 0));
    }

    #[test]
    fn requests_spread_evenly_and_repeatably() {
        let mut per_node = [0u32; 3];
        for d in 0..3000 {
            for r in 0..4 {
                per_node[node_of(42, 3, d, r)] += 1;
            }
        }
        // 12,000 requests over three nodes: each within 5 % of 4,000.
        assert!(
            per_node.iter().all(|n| n.abs_diff(4000) < 200),
            "{per_node:?}"
        );
        // The same seed chooses the same; one device's requests go to more than one node.
        assert_eq!(node_of(42, 3, 17, 2), node_of(42, 3, 17, 2));
        let nodes: std::collections::BTreeSet<_> = (0..8).map(|r| node_of(42, 3, 17, r)).collect();
        assert!(nodes.len() > 1, "{nodes:?}");
        // Another seed, another choice somewhere.
        assert!((0..100).any(|d| node_of(1, 3, d, 0) != node_of(2, 3, d, 0)));
    }

    #[test]
    fn several_nodes_need_a_database() {
        assert!(check(1, None).is_ok());
        assert!(check(3, Some("postgres://h/db")).is_ok());
        let e = check(2, None).unwrap_err();
        assert!(matches!(e, FleetError::NodesNeedDatabase { nodes: 2 }));
        assert!(e.to_string().contains("--database-url"), "{e}");
        assert!(check(0, None).is_err());
        assert!(check(MAX_NODES + 1, Some("postgres://h/db")).is_err());
    }
}
