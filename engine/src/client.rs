//! The public face of the pool: [`ClientBuilder`] → [`Client`], `push`, `try_push`,
//! `push_bulk`, certificate replacement, status and shutdown.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::apns::request::{Expiration, InvalidTopic, Priority, RequestTemplate};
use crate::cause::EngineCause;
use crate::cert::PushCertificate;
use crate::dispatch::{Control, Dispatcher, LastConnectError, PoolStatus, Settings};
use crate::endpoint::Endpoint;
use crate::job::{Job, Reply};
use crate::outcome::{BulkItem, DevicePush, PushError, PushResult};
use crate::pool::backoff::Backoff;
use crate::pool::budget::Budget;
use crate::pool::plan::{Plan, RetryPolicy};
use crate::transport::{client_config, root_store, InvalidProxy, Proxy, TlsConfigError};

/// The client could not be built or reconfigured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `certificate(...)` was not called.
    #[error("no push certificate configured")]
    NoCertificate,
    /// [`Client::add_certificate`] with a topic the client already holds.
    #[error("the client already holds a push certificate for topic {topic}: replace it instead")]
    TopicExists {
        /// The topic.
        topic: String,
    },
    /// [`Client::replace_certificate`] with a topic the client does not hold (and it holds
    /// several).
    #[error("the client holds no push certificate for topic {topic}: add it instead")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// An extra trust anchor is not PEM or DER X.509.
    #[error("invalid trust anchor PEM: {0}")]
    TrustAnchorPem(String),
    /// TLS configuration failed.
    #[error(transparent)]
    Tls(#[from] TlsConfigError),
    /// The proxy URL is not `http://[user:password@]host[:port]`.
    #[error(transparent)]
    Proxy(#[from] InvalidProxy),
    /// The certificate's topic is not a valid header value.
    #[error(transparent)]
    Topic(#[from] InvalidTopic),
    /// Called outside a Tokio runtime.
    #[error("the push client must be built inside a Tokio runtime")]
    NoRuntime,
    /// A setting is out of its range.
    #[error("invalid push client setting {setting}: {why}")]
    InvalidSetting {
        /// The builder method.
        setting: &'static str,
        /// The allowed range.
        why: &'static str,
    },
    /// The client was shut down.
    #[error("the push client was shut down")]
    Shutdown,
}

/// `try_push` could not queue the push; it is handed back untouched.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TryPushError {
    /// The queue is full: retry later, or use `push().await`, which waits for room.
    #[error("push queue full ({capacity} pushes waiting); retry later or use push().await")]
    QueueFull {
        /// The push that was not queued.
        push: DevicePush,
        /// The queue's capacity.
        capacity: usize,
    },
    /// The client was shut down: retrying will not help.
    #[error("the push client was shut down")]
    Shutdown {
        /// The push that was not queued.
        push: DevicePush,
    },
}

/// Builds a [`Client`]. Every setter states its default.
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    certificates: Vec<PushCertificate>,
    endpoint: Endpoint,
    proxy: Option<Arc<Proxy>>,
    trust_anchors: Vec<CertificateDer<'static>>,
    web_roots: bool,
    connections: usize,
    max_streams: usize,
    queue_capacity: usize,
    deadline: Duration,
    expiration: Expiration,
    priority: Priority,
    keepalive: Duration,
    ping_timeout: Duration,
    connect_timeout: Duration,
    retry: RetryPolicy,
    reconnect: Backoff,
    rejected_backoff: Backoff,
    idle_timeout: Duration,
    max_total_connections: usize,
    max_total_queued: usize,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            certificates: Vec::new(),
            endpoint: Endpoint::Production,
            proxy: None,
            trust_anchors: Vec::new(),
            web_roots: true,
            connections: 4,
            max_streams: 1000,
            queue_capacity: 10_000,
            deadline: Duration::from_secs(30),
            expiration: Expiration::default(),
            priority: Priority::default(),
            keepalive: Duration::from_secs(60),
            ping_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            reconnect: Backoff::RECONNECT,
            rejected_backoff: Backoff::CERTIFICATE_REJECTED,
            idle_timeout: Duration::from_secs(300),
            max_total_connections: 1_000,
            max_total_queued: 1_000_000,
        }
    }
}

impl ClientBuilder {
    /// An MDM push certificate, presented as TLS client identity by its topic's pool. Call
    /// once per topic (a certificate of a topic given before replaces it); more can be added
    /// later with [`Client::add_certificate`]. With one certificate, pushes need not name
    /// their topic.
    pub fn certificate(mut self, cert: PushCertificate) -> Self {
        self.certificates.retain(|c| c.topic() != cert.topic());
        self.certificates.push(cert);
        self
    }

    /// A topic's connections close after this long without a push. Default: 5 minutes.
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.idle_timeout = d;
        self
    }

    /// The most connections all topics together may open (each topic also at most
    /// [`connections`](Self::connections)). A topic with work always gets one in turn: while
    /// it waits, as many connections close as topics wait, other topics' extra connections
    /// first, then a last one idle for 100 ms or held for a 1 s turn. Default: 1,000.
    pub fn max_total_connections(mut self, n: usize) -> Self {
        self.max_total_connections = n.max(1);
        self
    }

    /// The most pushes waiting to be sent in all topics together (each topic also at most
    /// [`queue_capacity`](Self::queue_capacity)). Default: 1,000,000.
    pub fn max_total_queued(mut self, n: usize) -> Self {
        self.max_total_queued = n.max(1);
        self
    }

    /// Where to push. Default: [`Endpoint::Production`] (MDM always uses production).
    pub fn endpoint(mut self, endpoint: Endpoint) -> Self {
        self.endpoint = endpoint;
        self
    }

    /// Reach APNs through this HTTP proxy: `http://[user:password@]host[:port]` (port 80 when
    /// absent). Every connection opens a `CONNECT host:port` tunnel to the endpoint and runs
    /// TLS to APNs inside it, so the proxy sees only the endpoint's name; user and password
    /// (percent-encoded in the URL) are sent as `Proxy-Authorization: Basic`. `https://`
    /// proxies (TLS to the proxy itself) are refused. Logs and errors show the URL with its
    /// password masked. A proxy that refuses the tunnel (a 407 wants credentials) fails the
    /// connection attempt like any other, with reconnects backing off: its status and reason
    /// are the pool's last connection error. Default: no proxy.
    pub fn proxy(mut self, url: &str) -> Result<Self, ClientError> {
        self.proxy = Some(Arc::new(Proxy::parse(url)?));
        Ok(self)
    }

    /// Trust this CA too (PEM, one or more certificates) — for a mock or a proxy.
    /// Default: only the public web roots.
    pub fn trust_anchor_pem(mut self, pem: &[u8]) -> Result<Self, ClientError> {
        let mut found = false;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| ClientError::TrustAnchorPem(e.to_string()))?;
            self.trust_anchors.push(cert);
            found = true;
        }
        if !found {
            return Err(ClientError::TrustAnchorPem(
                "no CERTIFICATE block found".into(),
            ));
        }
        Ok(self)
    }

    /// Whether to trust the public web roots (Apple's gateways chain to one). Default: true.
    pub fn web_roots(mut self, yes: bool) -> Self {
        self.web_roots = yes;
        self
    }

    /// Most HTTP/2 connections of one topic. Default: 4. They open one at a time as the load
    /// asks: one at a topic's first push, another whenever the open ones carry half the
    /// streams they may (and the budget has room with no topic waiting).
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }

    /// Most concurrent streams per connection, whatever the server allows. Default: 1000.
    /// The server's SETTINGS_MAX_CONCURRENT_STREAMS (which may change on a live connection)
    /// always applies too.
    pub fn max_streams_per_connection(mut self, n: usize) -> Self {
        self.max_streams = n.max(1);
        self
    }

    /// Pushes that may wait to be sent. `push().await` waits for room; `try_push` fails with
    /// [`TryPushError::QueueFull`]. Retries waiting for their backoff count against the same
    /// bound. Default: 10,000.
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.queue_capacity = n.max(1);
        self
    }

    /// Every push ends within this time of its submission. Default: 30 s.
    pub fn deadline(mut self, d: Duration) -> Self {
        self.deadline = d;
        self
    }

    /// `apns-expiration`. Default: now + 7 days.
    pub fn expiration(mut self, e: Expiration) -> Self {
        self.expiration = e;
        self
    }

    /// `apns-priority`. Default: 10.
    pub fn priority(mut self, p: Priority) -> Self {
        self.priority = p;
        self
    }

    /// PING a connection after this long without hearing from it. Default: 60 s.
    pub fn keepalive(mut self, d: Duration) -> Self {
        self.keepalive = d;
        self
    }

    /// A PING unanswered this long marks the connection dead. Default: 10 s.
    pub fn ping_timeout(mut self, d: Duration) -> Self {
        self.ping_timeout = d;
        self
    }

    /// TCP + TLS + HTTP/2 setup limit. Default: 10 s.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// Resend budget for 429/500/503 and lost streams. Default: 8 attempts, 100 ms → 5 s.
    pub fn retry_policy(mut self, p: RetryPolicy) -> Self {
        self.retry = p;
        self
    }

    /// Reconnect backoff. Default: 1 s → 60 s with jitter.
    pub fn reconnect_backoff(mut self, b: Backoff) -> Self {
        self.reconnect = b;
        self
    }

    /// Reconnect backoff and fail-fast window while the certificate is refused.
    /// Default: 30 s → 10 min.
    pub fn certificate_rejected_backoff(mut self, b: Backoff) -> Self {
        self.rejected_backoff = b;
        self
    }

    /// Starts the client (its tasks run on the current Tokio runtime). Nothing connects yet:
    /// a topic's pool connects at its first push.
    pub fn build(self) -> Result<Client, ClientError> {
        self.validate()?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        crate::metrics::describe();
        let certificates = self.certificates.clone();
        let roots = root_store(&self.trust_anchors, self.web_roots)?;
        let inner = Arc::new(Inner {
            pools: RwLock::new(Pools::default()),
            budget: Budget::new(self.max_total_connections),
            queued: Arc::new(Semaphore::new(self.max_total_queued)),
            max_total_queued: self.max_total_queued,
            handle,
            config: ClientBuilder {
                certificates: Vec::new(),
                ..self
            },
            roots,
        });
        let client = Client { inner };
        for cert in certificates {
            client.add_certificate(cert)?;
        }
        Ok(client)
    }
}

impl ClientBuilder {
    /// Every setting within its range, so that nothing inside the pool can panic on a zero
    /// interval, an empty jitter range or an overflowing deadline.
    fn validate(&self) -> Result<(), ClientError> {
        const DAY: Duration = Duration::from_secs(86_400);
        let bad = |setting, why| Err(ClientError::InvalidSetting { setting, why });
        let within = |d: Duration, max: Duration| !d.is_zero() && d <= max;
        if self.connections > 1_000 {
            return bad("connections", "1 to 1,000");
        }
        if self.max_streams > 1 << 20 {
            return bad("max_streams_per_connection", "1 to 1,048,576");
        }
        if self.queue_capacity > 1 << 24 {
            return bad("queue_capacity", "1 to 16,777,216");
        }
        if self.max_total_queued > 1 << 28 {
            return bad("max_total_queued", "1 to 268,435,456");
        }
        if self.max_total_connections > 100_000 {
            return bad("max_total_connections", "1 to 100,000");
        }
        if !within(self.idle_timeout, DAY) {
            return bad("idle_timeout", "more than 0 and at most 24 h");
        }
        if !within(self.deadline, DAY) {
            return bad("deadline", "more than 0 and at most 24 h");
        }
        if !within(self.keepalive, DAY) {
            return bad("keepalive", "more than 0 and at most 24 h");
        }
        if !within(self.ping_timeout, DAY) {
            return bad("ping_timeout", "more than 0 and at most 24 h");
        }
        if !within(self.connect_timeout, DAY) {
            return bad("connect_timeout", "more than 0 and at most 24 h");
        }
        if let Expiration::After(d) = self.expiration {
            if d > 30 * DAY {
                return bad("expiration", "at most 30 days (what APNs keeps)");
            }
        }
        if self.retry.max_attempts == 0 || self.retry.max_attempts > 1_000 {
            return bad("retry_policy", "max_attempts 1 to 1,000");
        }
        for (setting, b) in [
            ("retry_policy", self.retry.backoff),
            ("reconnect_backoff", self.reconnect),
            ("certificate_rejected_backoff", self.rejected_backoff),
        ] {
            if !within(b.base, DAY) || b.max < b.base || b.max > DAY {
                return bad(
                    setting,
                    "base more than 0, max at least base, both at most 24 h",
                );
            }
        }
        Ok(())
    }
}

/// An APNs push client: one pool of HTTP/2 connections per push certificate (per topic), each
/// behind its own bounded queue, sharing one budget of connections. Cheap to clone; the pools
/// stop when the last clone is dropped or [`Client::shutdown`] is called.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    pools: RwLock<Pools>,
    /// Connections of every topic together.
    budget: Arc<Budget>,
    /// Pushes queued in every topic together.
    queued: Arc<Semaphore>,
    max_total_queued: usize,
    handle: tokio::runtime::Handle,
    /// The settings each topic's pool starts with (its certificate list unused).
    config: ClientBuilder,
    /// The trust anchors every topic's TLS configuration shares.
    roots: Arc<rustls::RootCertStore>,
}

#[derive(Debug, Default)]
struct Pools {
    by_topic: HashMap<Arc<str>, Arc<TopicPool>>,
    shut_down: bool,
}

/// One topic's pool, as the client reaches it.
#[derive(Debug)]
struct TopicPool {
    /// Its topic, which every push it takes is labelled with.
    topic: Arc<str>,
    intake: mpsc::Sender<Job>,
    control: mpsc::UnboundedSender<Control>,
    /// The pool's last connection error, for the pushes that end at the caller's deadline.
    last_connect_error: Arc<LastConnectError>,
}

impl TopicPool {
    /// `push`, naming this pool's topic (for a push that named none), so that its outcome is
    /// counted under it.
    fn label(&self, mut push: DevicePush) -> DevicePush {
        if push.topic.is_none() {
            push.topic = Some(Arc::clone(&self.topic));
        }
        push
    }
}

/// Extra time the caller waits beyond the deadline for the pool's own, more precise answer.
const BACKSTOP_GRACE: Duration = Duration::from_millis(250);

impl Client {
    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Adds a push certificate for a topic the client does not hold yet. Its pool connects at
    /// its first push.
    pub fn add_certificate(&self, cert: PushCertificate) -> Result<(), ClientError> {
        let topic: Arc<str> = Arc::from(cert.topic());
        let mut pools = self.write_pools();
        if pools.shut_down {
            return Err(ClientError::Shutdown);
        }
        if pools.by_topic.contains_key(&topic) {
            return Err(ClientError::TopicExists {
                topic: topic.to_string(),
            });
        }
        let pool = self.spawn_pool(cert)?;
        pools.by_topic.insert(topic, Arc::new(pool));
        Ok(())
    }

    fn spawn_pool(&self, cert: PushCertificate) -> Result<TopicPool, ClientError> {
        let c = &self.inner.config;
        let topic: Arc<str> = Arc::from(cert.topic());
        let tls = client_config(&cert, &self.inner.roots)?;
        let template = Arc::new(RequestTemplate::new(
            c.endpoint.authority(),
            cert.topic(),
            c.priority,
            c.expiration,
        )?);
        let (intake_tx, intake_rx) = mpsc::channel(c.queue_capacity);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let settings = Settings {
            endpoint: c.endpoint.clone(),
            proxy: c.proxy.clone(),
            max_streams: c.max_streams,
            connect_timeout: c.connect_timeout,
            keepalive: c.keepalive,
            ping_timeout: c.ping_timeout,
            retry: c.retry,
            held_limit: c.queue_capacity,
            certificate: cert,
            plan: Plan::new(c.connections, c.reconnect, c.rejected_backoff),
            budget: Arc::clone(&self.inner.budget),
            idle_timeout: c.idle_timeout,
        };
        let last_connect_error = Arc::new(LastConnectError::default());
        let dispatcher = Dispatcher::new(
            settings,
            tls,
            template,
            intake_rx,
            control_rx,
            last_connect_error.clone(),
        );
        self.inner.handle.spawn(dispatcher.run());
        Ok(TopicPool {
            topic,
            intake: intake_tx,
            control: control_tx,
            last_connect_error,
        })
    }

    /// Installs a new certificate for its topic (a renewal): new connections present it,
    /// existing ones finish their streams and close. No push is lost or failed by the swap.
    /// While the client holds exactly one certificate, a certificate of another topic replaces
    /// it (the topic changes); with none, it is added; with several, the topic must be one the
    /// client holds.
    pub fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ClientError> {
        let c = &self.inner.config;
        let tls = client_config(&cert, &self.inner.roots)?;
        let template = Arc::new(RequestTemplate::new(
            c.endpoint.authority(),
            cert.topic(),
            c.priority,
            c.expiration,
        )?);
        let topic: Arc<str> = Arc::from(cert.topic());
        let mut pools = self.write_pools();
        if pools.shut_down {
            return Err(ClientError::Shutdown);
        }
        let pool = match pools.by_topic.get(&topic) {
            Some(pool) => Arc::clone(pool),
            None if pools.by_topic.len() == 1 => {
                let old = pools.by_topic.keys().next().cloned().expect("one topic");
                let old = pools.by_topic.remove(&old).expect("present");
                let pool = Arc::new(TopicPool {
                    topic: Arc::clone(&topic),
                    intake: old.intake.clone(),
                    control: old.control.clone(),
                    last_connect_error: Arc::clone(&old.last_connect_error),
                });
                pools.by_topic.insert(topic, Arc::clone(&pool));
                pool
            }
            None if pools.by_topic.is_empty() => {
                // Nothing to replace: the certificate is the client's first.
                drop(pools);
                return self.add_certificate(cert);
            }
            None => {
                return Err(ClientError::UnknownTopic {
                    topic: topic.to_string(),
                })
            }
        };
        pool.control
            .send(Control::ReplaceCertificate {
                tls,
                template,
                certificate: cert,
            })
            .map_err(|_| ClientError::Shutdown)
    }

    /// Removes a topic's certificate: its queued pushes fail at once with
    /// [`PushError::UnknownTopic`], those in flight finish, its connections close. False if
    /// the client did not hold that topic.
    pub fn remove_certificate(&self, topic: &str) -> bool {
        let Some(pool) = self.write_pools().by_topic.remove(topic) else {
            return false;
        };
        let (done, _) = oneshot::channel();
        let _ = pool.control.send(Control::Shutdown {
            done,
            error: PushError::UnknownTopic {
                topic: Arc::from(topic),
            },
        });
        true
    }

    /// The topics the client holds a certificate for, sorted.
    pub fn topics(&self) -> Vec<String> {
        let mut topics: Vec<String> = self
            .read_pools()
            .by_topic
            .keys()
            .map(|t| t.to_string())
            .collect();
        topics.sort_unstable();
        topics
    }

    fn read_pools(&self) -> std::sync::RwLockReadGuard<'_, Pools> {
        self.inner
            .pools
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write_pools(&self) -> std::sync::RwLockWriteGuard<'_, Pools> {
        self.inner
            .pools
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pool a push goes to: its topic's, or the only one.
    fn pool_for(&self, push: &DevicePush) -> Result<Arc<TopicPool>, PushError> {
        let pools = self.read_pools();
        if pools.shut_down {
            return Err(PushError::Shutdown);
        }
        match &push.topic {
            Some(topic) => {
                pools
                    .by_topic
                    .get(topic)
                    .cloned()
                    .ok_or_else(|| PushError::UnknownTopic {
                        topic: Arc::clone(topic),
                    })
            }
            None => match pools.by_topic.len() {
                1 => Ok(pools.by_topic.values().next().cloned().expect("one pool")),
                0 => Err(PushError::NoCertificate),
                topics => Err(PushError::TopicRequired { topics }),
            },
        }
    }

    /// Pushes one device and waits for its outcome (waiting for queue room first). Always
    /// ends within the deadline (plus a small grace).
    pub async fn push(&self, push: DevicePush) -> PushResult {
        let pool = self.pool_for(&push)?;
        let push = pool.label(push);
        let now = Instant::now();
        let (mut job, rx) = Job::single(push, self.inner.config.deadline, now);
        let deadline = job.deadline;
        let full = || PushError::DeadlineExceeded {
            deadline: self.inner.config.deadline,
            attempts: 0,
            last: Some(EngineCause::QueueFull.into()),
            connect_error: pool.last_connect_error.get(),
        };
        let held = match Arc::clone(&self.inner.queued).try_acquire_owned() {
            Ok(held) => held,
            Err(_) => {
                let wait = Arc::clone(&self.inner.queued).acquire_owned();
                match tokio::time::timeout_at(deadline, wait).await {
                    Ok(Ok(held)) => held,
                    Ok(Err(_)) => return Err(PushError::Shutdown),
                    Err(_) => {
                        let e = full();
                        job.finish(Err(e.clone()));
                        return Err(e);
                    }
                }
            }
        };
        job.held = Some(held);
        let permit = match tokio::time::timeout_at(deadline, pool.intake.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => {
                // The pool stopped: the client shut down, or the topic was removed.
                let e = self.pool_gone(&job.push);
                job.finish(Err(e.clone()));
                return Err(e);
            }
            Err(_) => {
                let e = full();
                job.finish(Err(e.clone()));
                return Err(e);
            }
        };
        permit.send(job);
        self.await_outcome(rx, deadline, &pool).await
    }

    /// Why a push's pool no longer takes pushes.
    fn pool_gone(&self, push: &DevicePush) -> PushError {
        match (&push.topic, self.read_pools().shut_down) {
            (Some(topic), false) => PushError::UnknownTopic {
                topic: Arc::clone(topic),
            },
            _ => PushError::Shutdown,
        }
    }

    /// Queues one push without waiting for room; the returned future yields its outcome. A
    /// push for a topic the client does not hold is queued nowhere: its future yields the
    /// error at once.
    pub fn try_push(
        &self,
        push: DevicePush,
    ) -> Result<impl std::future::Future<Output = PushResult> + Send + 'static, TryPushError> {
        let pool = match self.pool_for(&push) {
            Ok(pool) => pool,
            Err(PushError::Shutdown) => return Err(TryPushError::Shutdown { push }),
            Err(e) => {
                return Ok(Either::Now(Some(Err(e))));
            }
        };
        let Ok(held) = Arc::clone(&self.inner.queued).try_acquire_owned() else {
            return Err(TryPushError::QueueFull {
                push,
                capacity: self.inner.max_total_queued,
            });
        };
        let push = pool.label(push);
        let (mut job, rx) = Job::single(push, self.inner.config.deadline, Instant::now());
        job.held = Some(held);
        let deadline = job.deadline;
        match pool.intake.try_send(job) {
            Ok(()) => {
                let this = self.clone();
                Ok(Either::Later(Box::pin(async move {
                    this.await_outcome(rx, deadline, &pool).await
                })))
            }
            Err(mpsc::error::TrySendError::Full(job)) => Err(TryPushError::QueueFull {
                push: job.cancel(),
                capacity: self.inner.config.queue_capacity,
            }),
            Err(mpsc::error::TrySendError::Closed(job)) => {
                Err(TryPushError::Shutdown { push: job.cancel() })
            }
        }
    }

    async fn await_outcome(
        &self,
        rx: oneshot::Receiver<PushResult>,
        deadline: Instant,
        pool: &TopicPool,
    ) -> PushResult {
        match tokio::time::timeout_at(deadline + BACKSTOP_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PushError::Shutdown),
            Err(_) => Err(PushError::DeadlineExceeded {
                deadline: self.inner.config.deadline,
                attempts: 0,
                last: None,
                connect_error: pool.last_connect_error.get(),
            }),
        }
    }

    /// Pushes many devices, yielding each outcome as it completes. At most the queues'
    /// capacity plus the streams in flight are held at once, so an iterator of a million
    /// pushes is consumed lazily in bounded memory.
    pub fn push_bulk<I>(&self, pushes: I) -> BulkPush<I::IntoIter>
    where
        I: IntoIterator<Item = DevicePush>,
    {
        let (results_tx, results) = mpsc::unbounded_channel();
        BulkPush {
            client: self.clone(),
            source: pushes.into_iter(),
            exhausted: false,
            closed: false,
            pending: None,
            next_index: 0,
            outstanding: 0,
            results_tx,
            results,
            summary: Summary::default(),
            started: Instant::now(),
        }
    }

    /// A snapshot of every topic's pool together: counts summed; `certificate_rejected` and
    /// `last_connect_error` are the first topic's (in topic order) that has one.
    pub async fn status(&self) -> Result<PoolStatus, ClientError> {
        let pools: Vec<(String, Arc<TopicPool>)> = self.pools_sorted();
        let mut total = PoolStatus::default();
        for (_, pool) in pools {
            let s = Self::pool_status(&pool).await?;
            total.open_connections += s.open_connections;
            total.draining_connections += s.draining_connections;
            total.in_flight += s.in_flight;
            total.waiting += s.waiting;
            total.reconnects += s.reconnects;
            if total.certificate_rejected.is_none() {
                total.certificate_rejected = s.certificate_rejected;
            }
            if total.last_connect_error.is_none() {
                total.last_connect_error = s.last_connect_error;
            }
        }
        Ok(total)
    }

    /// A snapshot of each topic's pool.
    pub async fn topic_statuses(&self) -> Result<BTreeMap<String, PoolStatus>, ClientError> {
        let mut out = BTreeMap::new();
        for (topic, pool) in self.pools_sorted() {
            out.insert(topic, Self::pool_status(&pool).await?);
        }
        Ok(out)
    }

    fn pools_sorted(&self) -> Vec<(String, Arc<TopicPool>)> {
        let mut pools: Vec<(String, Arc<TopicPool>)> = self
            .read_pools()
            .by_topic
            .iter()
            .map(|(t, p)| (t.to_string(), Arc::clone(p)))
            .collect();
        pools.sort_by(|a, b| a.0.cmp(&b.0));
        pools
    }

    async fn pool_status(pool: &TopicPool) -> Result<PoolStatus, ClientError> {
        let (tx, rx) = oneshot::channel();
        pool.control
            .send(Control::Status(tx))
            .map_err(|_| ClientError::Shutdown)?;
        rx.await.map_err(|_| ClientError::Shutdown)
    }

    /// Stops taking pushes, fails queued ones with [`PushError::Shutdown`], lets streams in
    /// flight finish, and closes the connections of every topic.
    pub async fn shutdown(&self) {
        let pools: Vec<Arc<TopicPool>> = {
            let mut pools = self.write_pools();
            pools.shut_down = true;
            pools.by_topic.drain().map(|(_, p)| p).collect()
        };
        let mut waits = Vec::with_capacity(pools.len());
        for pool in pools {
            let (done, rx) = oneshot::channel();
            if pool
                .control
                .send(Control::Shutdown {
                    done,
                    error: PushError::Shutdown,
                })
                .is_ok()
            {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.await;
        }
    }
}

/// A future that is ready at once, or one to wait for (what [`Client::try_push`] returns).
enum Either<F> {
    Now(Option<PushResult>),
    Later(F),
}

impl<F: std::future::Future<Output = PushResult> + Unpin> std::future::Future for Either<F> {
    type Output = PushResult;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<PushResult> {
        match self.get_mut() {
            Either::Now(result) => {
                std::task::Poll::Ready(result.take().unwrap_or(Err(PushError::Shutdown)))
            }
            Either::Later(f) => std::pin::Pin::new(f).poll(cx),
        }
    }
}

/// Counts of a bulk push so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Pushes submitted.
    pub sent: u64,
    /// Pushes APNs accepted.
    pub delivered: u64,
    /// Failures by [`PushError::reason`] as displayed: APNs's reasons as APNs spells them
    /// (`Unregistered`, `BadDeviceToken`, …), the engine's own causes by their display names
    /// (`DeadlineExceeded`, `StreamReset(CANCEL)`, …). For a key that tells the two apart
    /// use [`Cause::stored_name`](crate::cause::Cause::stored_name).
    pub failed: BTreeMap<String, u64>,
    /// Time since the bulk push started.
    pub elapsed: Duration,
}

/// Outcomes of [`Client::push_bulk`] as they complete.
pub struct BulkPush<I> {
    client: Client,
    source: I,
    exhausted: bool,
    /// The client was shut down.
    closed: bool,
    /// A push taken from the source that waits for room in its topic's queue.
    pending: Option<(DevicePush, Arc<TopicPool>)>,
    next_index: usize,
    /// Submitted and not yet reported.
    outstanding: usize,
    results_tx: mpsc::UnboundedSender<BulkItem>,
    results: mpsc::UnboundedReceiver<BulkItem>,
    summary: Summary,
    started: Instant,
}

impl<I: Iterator<Item = DevicePush>> BulkPush<I> {
    /// The next finished push, or `None` when every push has ended.
    pub async fn next(&mut self) -> Option<BulkItem> {
        loop {
            // Submit without waiting while the queues have room; the burst shares one
            // reading of the clock.
            let mut now = None;
            while self.pending.is_none() && !self.exhausted && !self.closed {
                let Some(push) = self.source.next() else {
                    self.exhausted = true;
                    break;
                };
                match self.client.pool_for(&push) {
                    Ok(pool) => {
                        let now = *now.get_or_insert_with(Instant::now);
                        if let Err(push) = self.try_submit(push, &pool, now) {
                            self.pending = Some((push, pool));
                        }
                    }
                    Err(PushError::Shutdown) => {
                        self.closed = true;
                        self.end_now(push, PushError::Shutdown);
                    }
                    // No pool for it: it ends at once, in order with the others.
                    Err(e) => self.end_now(push, e),
                }
            }
            if let Ok(item) = self.results.try_recv() {
                return Some(self.reported(item));
            }
            if self.closed && !self.exhausted && self.pending.is_none() {
                // Shut down: the rest end as `Shutdown`, one at a time, never queued.
                match self.source.next() {
                    Some(push) => self.end_now(push, PushError::Shutdown),
                    None => self.exhausted = true,
                }
                continue;
            }
            if self.exhausted && self.pending.is_none() && self.outstanding == 0 {
                self.summary.elapsed = self.started.elapsed();
                return None;
            }
            let pending_pool = self.pending.as_ref().map(|(_, pool)| Arc::clone(pool));
            let queued = Arc::clone(&self.client.inner.queued);
            let step = tokio::select! {
                biased;
                Some(item) = self.results.recv(), if self.outstanding > 0 => Step::Done(item),
                room = async {
                    let pool = pending_pool.expect("guarded by the branch's condition");
                    // Room in both bounds: the client's in total, then the topic's queue.
                    let held = queued.acquire_owned().await;
                    let open = pool.intake.reserve().await.is_ok();
                    drop(held);
                    open
                }, if self.pending.is_some() => Step::Room(room),
            };
            match step {
                Step::Done(item) => return Some(self.reported(item)),
                Step::Room(true) => {
                    let (push, pool) = self.pending.take().expect("pending");
                    if let Err(push) = self.try_submit(push, &pool, Instant::now()) {
                        self.pending = Some((push, pool));
                        // Taken meanwhile by another caller: wait again.
                        tokio::task::yield_now().await;
                    }
                }
                Step::Room(false) => {
                    // The topic's pool stopped (removed) or the client shut down.
                    let (push, _) = self.pending.take().expect("pending");
                    let e = self.client.pool_gone(&push);
                    if matches!(e, PushError::Shutdown) {
                        self.closed = true;
                    }
                    self.end_now(push, e);
                }
            }
        }
    }

    /// Queues `push` if both bounds have room now; hands it back if not.
    fn try_submit(
        &mut self,
        push: DevicePush,
        pool: &TopicPool,
        now: Instant,
    ) -> Result<(), DevicePush> {
        let Ok(held) = Arc::clone(&self.client.inner.queued).try_acquire_owned() else {
            return Err(push);
        };
        let permit = match pool.intake.try_reserve() {
            Ok(permit) => permit,
            Err(mpsc::error::TrySendError::Full(())) => return Err(push),
            Err(mpsc::error::TrySendError::Closed(())) => {
                drop(held);
                let e = self.client.pool_gone(&push);
                self.end_now(push, e);
                return Ok(());
            }
        };
        let reply = Reply::Bulk {
            index: self.next_index,
            tx: self.results_tx.clone(),
        };
        self.next_index += 1;
        self.outstanding += 1;
        self.summary.sent += 1;
        let mut job = Job::new(
            pool.label(push),
            reply,
            self.client.inner.config.deadline,
            now,
        );
        job.held = Some(held);
        permit.send(job);
        Ok(())
    }

    /// Ends `push` without queueing it: its outcome is reported like any other.
    fn end_now(&mut self, push: DevicePush, error: PushError) {
        let item = BulkItem {
            index: self.next_index,
            token: push.token,
            result: Err(error),
        };
        self.next_index += 1;
        self.outstanding += 1;
        self.summary.sent += 1;
        let _ = self.results_tx.send(item);
    }

    fn reported(&mut self, item: BulkItem) -> BulkItem {
        self.outstanding -= 1;
        count(&mut self.summary, &item.result);
        item
    }

    /// Drains the rest and returns the summary.
    pub async fn finish(mut self) -> Summary {
        while self.next().await.is_some() {}
        self.summary()
    }

    /// Counts so far.
    pub fn summary(&self) -> Summary {
        let mut s = self.summary.clone();
        s.elapsed = self.started.elapsed();
        s
    }
}

enum Step {
    Done(BulkItem),
    Room(bool),
}

fn count(summary: &mut Summary, result: &PushResult) {
    match result {
        Ok(_) => summary.delivered += 1,
        Err(e) => *summary.failed.entry(e.reason().to_string()).or_default() += 1,
    }
}
