//! The public face of the pool: [`ClientBuilder`] → [`Client`], `push`, `try_push`,
//! `push_bulk`, certificate replacement, status and shutdown.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot};

use crate::apns::request::{Expiration, InvalidTopic, Priority, RequestTemplate};
use crate::cause::EngineCause;
use crate::cert::PushCertificate;
use crate::dispatch::{Control, Dispatcher, LastConnectError, PoolStatus, Settings};
use crate::endpoint::Endpoint;
use crate::job::{Job, Reply};
use crate::outcome::{BulkItem, DevicePush, PushError, PushResult};
use crate::pool::backoff::Backoff;
use crate::pool::plan::{Plan, RetryPolicy};
use crate::transport::{client_config, InvalidProxy, Proxy, TlsConfigError};

/// The client could not be built or reconfigured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// `certificate(...)` was not called.
    #[error("no push certificate configured")]
    NoCertificate,
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
    certificate: Option<PushCertificate>,
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
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            certificate: None,
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
        }
    }
}

impl ClientBuilder {
    /// The MDM push certificate, presented as TLS client identity. Required.
    pub fn certificate(mut self, cert: PushCertificate) -> Self {
        self.certificate = Some(cert);
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

    /// Number of HTTP/2 connections. Default: 4.
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

    /// Starts the pool (its tasks run on the current Tokio runtime). Connections open in the
    /// background; pushes submitted meanwhile wait for them.
    pub fn build(self) -> Result<Client, ClientError> {
        self.validate()?;
        let handle = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        let cert = self.certificate.ok_or(ClientError::NoCertificate)?;
        let tls = client_config(&cert, &self.trust_anchors, self.web_roots)?;
        let template = Arc::new(RequestTemplate::new(
            self.endpoint.authority(),
            cert.topic(),
            self.priority,
            self.expiration,
        )?);
        crate::metrics::describe();
        let (intake_tx, intake_rx) = mpsc::channel(self.queue_capacity);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let settings = Settings {
            endpoint: self.endpoint.clone(),
            proxy: self.proxy,
            max_streams: self.max_streams,
            connect_timeout: self.connect_timeout,
            keepalive: self.keepalive,
            ping_timeout: self.ping_timeout,
            retry: self.retry,
            held_limit: self.queue_capacity,
            certificate: cert.clone(),
            plan: Plan::new(self.connections, self.reconnect, self.rejected_backoff),
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
        handle.spawn(dispatcher.run());
        Ok(Client {
            inner: Arc::new(Inner {
                intake: intake_tx,
                control: control_tx,
                last_connect_error,
                deadline: self.deadline,
                queue_capacity: self.queue_capacity,
                endpoint: self.endpoint,
                trust_anchors: self.trust_anchors,
                web_roots: self.web_roots,
                priority: self.priority,
                expiration: self.expiration,
            }),
        })
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

/// An APNs push client: a pool of HTTP/2 connections behind a bounded queue. Cheap to clone;
/// the pool stops when the last clone is dropped or [`Client::shutdown`] is called.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    intake: mpsc::Sender<Job>,
    control: mpsc::UnboundedSender<Control>,
    /// The pool's last connection error, for the pushes that end at the caller's deadline.
    last_connect_error: Arc<LastConnectError>,
    deadline: Duration,
    queue_capacity: usize,
    endpoint: Endpoint,
    trust_anchors: Vec<CertificateDer<'static>>,
    web_roots: bool,
    priority: Priority,
    expiration: Expiration,
}

/// Extra time the caller waits beyond the deadline for the pool's own, more precise answer.
const BACKSTOP_GRACE: Duration = Duration::from_millis(250);

impl Client {
    /// A builder with the defaults.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Pushes one device and waits for its outcome (waiting for queue room first). Always
    /// ends within the deadline (plus a small grace).
    pub async fn push(&self, push: DevicePush) -> PushResult {
        let now = Instant::now();
        let (job, rx) = Job::single(push, self.inner.deadline, now);
        let deadline = job.deadline;
        let permit = match tokio::time::timeout_at(deadline, self.inner.intake.reserve()).await {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => {
                job.finish(Err(PushError::Shutdown));
                return Err(PushError::Shutdown);
            }
            Err(_) => {
                let e = PushError::DeadlineExceeded {
                    deadline: self.inner.deadline,
                    attempts: 0,
                    last: Some(EngineCause::QueueFull.into()),
                    connect_error: self.inner.last_connect_error.get(),
                };
                job.finish(Err(e.clone()));
                return Err(e);
            }
        };
        permit.send(job);
        self.await_outcome(rx, deadline).await
    }

    /// Queues one push without waiting for room; the returned future yields its outcome.
    pub fn try_push(
        &self,
        push: DevicePush,
    ) -> Result<impl std::future::Future<Output = PushResult> + Send + 'static, TryPushError> {
        let (job, rx) = Job::single(push, self.inner.deadline, Instant::now());
        let deadline = job.deadline;
        match self.inner.intake.try_send(job) {
            Ok(()) => {
                let this = self.clone();
                Ok(async move { this.await_outcome(rx, deadline).await })
            }
            Err(mpsc::error::TrySendError::Full(job)) => Err(TryPushError::QueueFull {
                push: job.cancel(),
                capacity: self.inner.queue_capacity,
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
    ) -> PushResult {
        match tokio::time::timeout_at(deadline + BACKSTOP_GRACE, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PushError::Shutdown),
            Err(_) => Err(PushError::DeadlineExceeded {
                deadline: self.inner.deadline,
                attempts: 0,
                last: None,
                connect_error: self.inner.last_connect_error.get(),
            }),
        }
    }

    /// Pushes many devices, yielding each outcome as it completes. At most the queue's
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
            next_index: 0,
            outstanding: 0,
            results_tx,
            results,
            summary: Summary::default(),
            started: Instant::now(),
        }
    }

    /// Installs a new certificate (a renewal): new connections present it, existing ones
    /// finish their streams and close. No push is lost or failed by the swap.
    pub fn replace_certificate(&self, cert: PushCertificate) -> Result<(), ClientError> {
        let tls = client_config(&cert, &self.inner.trust_anchors, self.inner.web_roots)?;
        let template = Arc::new(RequestTemplate::new(
            self.inner.endpoint.authority(),
            cert.topic(),
            self.inner.priority,
            self.inner.expiration,
        )?);

        self.inner
            .control
            .send(Control::ReplaceCertificate {
                tls,
                template,
                certificate: cert,
            })
            .map_err(|_| ClientError::Shutdown)
    }

    /// A snapshot of the pool.
    pub async fn status(&self) -> Result<PoolStatus, ClientError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .control
            .send(Control::Status(tx))
            .map_err(|_| ClientError::Shutdown)?;
        rx.await.map_err(|_| ClientError::Shutdown)
    }

    /// Stops taking pushes, fails queued ones with [`PushError::Shutdown`], lets streams in
    /// flight finish, and closes the connections.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.control.send(Control::Shutdown(tx)).is_ok() {
            let _ = rx.await;
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
        let inner = self.client.inner.clone();
        loop {
            // Submit without waiting while the queue has room; the burst shares one reading
            // of the clock.
            let mut now = None;
            while !self.exhausted && !self.closed {
                match inner.intake.try_reserve() {
                    Ok(permit) => self.submit(permit, *now.get_or_insert_with(Instant::now)),
                    Err(mpsc::error::TrySendError::Full(())) => break,
                    Err(mpsc::error::TrySendError::Closed(())) => self.closed = true,
                }
            }
            if let Ok(item) = self.results.try_recv() {
                return Some(self.reported(item));
            }
            if self.closed && !self.exhausted {
                // Shut down: the rest end as `Shutdown`, one at a time, never queued.
                match self.source.next() {
                    Some(push) => {
                        let index = self.next_index;
                        self.next_index += 1;
                        self.summary.sent += 1;
                        let result = Err(PushError::Shutdown);
                        count(&mut self.summary, &result);
                        return Some(BulkItem {
                            index,
                            token: push.token,
                            result,
                        });
                    }
                    None => self.exhausted = true,
                }
            }
            if self.exhausted && self.outstanding == 0 {
                self.summary.elapsed = self.started.elapsed();
                return None;
            }
            let step = tokio::select! {
                biased;
                Some(item) = self.results.recv(), if self.outstanding > 0 => Step::Done(item),
                permit = inner.intake.reserve(), if !self.exhausted && !self.closed => {
                    Step::Room(permit.is_ok())
                }
            };
            match step {
                Step::Done(item) => return Some(self.reported(item)),
                // Room again: the loop's top submits.
                Step::Room(true) => {}
                Step::Room(false) => self.closed = true,
            }
        }
    }

    fn submit(&mut self, permit: mpsc::Permit<'_, Job>, now: Instant) {
        let Some(push) = self.source.next() else {
            self.exhausted = true;
            return;
        };
        let reply = Reply::Bulk {
            index: self.next_index,
            tx: self.results_tx.clone(),
        };
        self.next_index += 1;
        self.outstanding += 1;
        self.summary.sent += 1;
        permit.send(Job::new(push, reply, self.client.inner.deadline, now));
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
