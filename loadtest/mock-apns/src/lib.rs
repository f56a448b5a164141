//! A mock APNs: an HTTP/2-over-TLS server that judges push requests the way APNs does and
//! injects the faults a push engine must survive.
//!
//! - TLS with ALPN `h2` and client certificates checked against a CA ([`ClientAuth`]); the topic
//!   a connection may push to is the UID of its client certificate's subject.
//! - Each request is judged by [`judge::judge`] (a pure function; the order of its checks and the
//!   decisions where Apple is silent are documented there).
//! - Faults: stream limit (also changed on live connections), delay, 429/503 rates, refused
//!   streams, GOAWAY every N requests, abrupt drops, freezing, 403 certificate rejection.
//! - Counting: pushes accepted per token and per topic, answers by reason, connections, peak
//!   concurrent streams, limit violations and writes per connection ([`MockStats`]).
//!
//! It shares no code with the engine: it judges the engine.
//!
//! Its own ceiling, with `h2load` (which has no client certificate, hence `--client-auth optional`):
//!
//! ```text
//! magicpush-loadtest mock-apns --listen 127.0.0.1:2197 --cert server.pem --key server.key.pem \
//!     --client-ca ca.pem --client-auth optional
//! h2load -n 300000 -c 2 -m 100 -H 'apns-topic: x' -H 'apns-push-type: mdm' -d body.json \
//!     https://127.0.0.1:2197/3/device/<64 hex digits>
//! ```
//!
//! Stream accounting: the server counts a stream from the moment h2 hands it over until its
//! answer is queued, so its count never exceeds what the client had open. Limits take effect
//! per RFC 9113 once the client acknowledged them (see [`settings_io`]); before the first
//! acknowledgement a client may legitimately open more streams, which shows in the peak but is
//! not a violation.

mod connection;
pub mod judge;
pub mod settings_io;
mod state;
mod stats;
pub mod tls;
mod write_count;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

pub use judge::Reason;
pub use stats::{ConnectionStats, MockStats};

use state::Shared;

/// Whether clients must present a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClientAuth {
    /// Like APNs: no certificate, no connection.
    #[default]
    Required,
    /// A client without a certificate may connect and push to any topic (for `h2load`).
    Optional,
}

/// How the mock behaves; everything but `client_auth` can also be changed while running.
#[derive(Debug, Clone)]
pub struct MockConfig {
    /// Client certificate policy.
    pub client_auth: ClientAuth,
    /// SETTINGS_MAX_CONCURRENT_STREAMS advertised (and enforced with REFUSED_STREAM).
    pub max_streams: u32,
    /// Delay before each answer (other streams are not held up).
    pub delay: Duration,
    /// Fraction of valid requests answered 429 TooManyRequests.
    pub rate_429: f64,
    /// Fraction of requests answered 503 ServiceUnavailable.
    pub rate_503: f64,
    /// Fraction of streams reset with REFUSED_STREAM before being processed.
    pub reset_rate: f64,
    /// Send a graceful GOAWAY after every this many requests on a connection.
    pub goaway_every: Option<u64>,
    /// Abruptly close every connection at this interval.
    pub drop_every: Option<Duration>,
    /// Tokens answered 410 Unregistered (hex, any case), timestamped with the mock's start.
    pub unregistered: HashSet<String>,
    /// Tokens answered 400 DeviceTokenNotForTopic (hex, any case).
    pub foreign_tokens: HashSet<String>,
    /// Receives every accepted push.
    pub accepted: Option<mpsc::UnboundedSender<AcceptedPush>>,
}

impl Default for MockConfig {
    fn default() -> Self {
        MockConfig {
            client_auth: ClientAuth::Required,
            max_streams: 1000,
            delay: Duration::ZERO,
            rate_429: 0.0,
            rate_503: 0.0,
            reset_rate: 0.0,
            goaway_every: None,
            drop_every: None,
            unregistered: HashSet::new(),
            foreign_tokens: HashSet::new(),
            accepted: None,
        }
    }
}

/// A push the mock accepted (answered 200).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedPush {
    /// Device token, lowercase hex.
    pub token: String,
    /// The payload's `mdm` member (the PushMagic).
    pub magic: String,
    /// The request's `apns-topic`.
    pub topic: String,
}

/// Why the mock could not start.
#[derive(Debug, thiserror::Error)]
pub enum MockError {
    /// A PEM input could not be read.
    #[error("mock APNs: cannot read the {what} PEM: {detail}")]
    Pem { what: &'static str, detail: String },
    /// The TLS configuration was refused.
    #[error("mock APNs: invalid {what}: {detail}")]
    Tls { what: &'static str, detail: String },
    /// The listening socket could not be opened.
    #[error("mock APNs: cannot listen on {addr}: {cause}")]
    Bind {
        addr: SocketAddr,
        cause: std::io::Error,
    },
}

/// The mock APNs server.
pub struct MockApns;

impl MockApns {
    /// Binds `listen` and serves until the handle is shut down or dropped. Needs a Tokio
    /// runtime (multi-thread for throughput).
    pub async fn start(
        listen: SocketAddr,
        server_cert_pem: &str,
        server_key_pem: &str,
        client_ca_pem: &str,
        config: MockConfig,
    ) -> Result<MockHandle, MockError> {
        let tls = tls::server_config(
            server_cert_pem,
            server_key_pem,
            client_ca_pem,
            config.client_auth,
        )?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|cause| MockError::Bind {
                addr: listen,
                cause,
            })?;
        let local_addr = listener.local_addr().map_err(|cause| MockError::Bind {
            addr: listen,
            cause,
        })?;
        let shared = Arc::new(Shared::new(&config));
        let acceptor = TlsAcceptor::from(tls);
        let task = tokio::spawn(accept_loop(listener, acceptor, shared.clone()));
        let dropper = config.drop_every.filter(|d| !d.is_zero()).map(|every| {
            let shared = shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tick.tick().await;
                    shared.bump(|c| c.drop_gen += 1);
                }
            })
        });
        tracing::info!(%local_addr, "mock APNs listening");
        Ok(MockHandle {
            local_addr,
            shared,
            task: Some(task),
            dropper,
        })
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    let mut control = shared.control.subscribe();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            changed = control.changed() => {
                if changed.is_err() || control.borrow().shutdown {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    connections.spawn(connection::serve(tcp, peer, acceptor.clone(), shared.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "mock APNs: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Controls and observes a running mock. Dropping it stops the mock.
pub struct MockHandle {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
    dropper: Option<JoinHandle<()>>,
}

impl MockHandle {
    /// The address the mock listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `https://127.0.0.1:<port>` (or the bound address).
    pub fn url(&self) -> String {
        format!("https://{}", self.local_addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> MockStats {
        stats::snapshot(&self.shared)
    }

    /// Pushes answered 200 so far: one atomic load, for polling (a [`stats`](Self::stats)
    /// snapshot copies every connection's figures).
    pub fn accepted_total(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Error answers with `reason` so far: one atomic load, for polling.
    pub fn rejected_count(&self, reason: Reason) -> u64 {
        self.shared.by_reason[reason as usize].load(Ordering::Relaxed)
    }

    /// How many pushes to `token` were accepted.
    pub fn accepted_for(&self, token: &str) -> u64 {
        self.shared
            .accepted_by_token
            .get(&token.to_ascii_lowercase())
            .unwrap_or(0)
    }

    /// Accepted pushes by token (lowercase hex).
    pub fn accepted_by_token(&self) -> std::collections::HashMap<String, u64> {
        self.shared.accepted_by_token.snapshot()
    }

    /// Receives every push accepted from now on (replaces an earlier subscriber).
    pub fn subscribe_accepted(&self) -> mpsc::UnboundedReceiver<AcceptedPush> {
        self.shared.subscribe()
    }

    /// Changes SETTINGS_MAX_CONCURRENT_STREAMS: new connections get it, live ones get a
    /// SETTINGS frame. Enforced for each connection once its client acknowledged it.
    pub fn set_max_streams(&self, n: u32) {
        self.shared.max_streams.store(n, Ordering::Relaxed);
        self.shared.bump(|c| c.limit_gen += 1);
    }

    /// Changes the answer delay.
    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Changes the fraction of valid requests answered 429.
    pub fn set_rate_429(&self, p: f64) {
        self.shared.rate_429.set(p);
    }

    /// Changes the fraction of requests answered 503.
    pub fn set_rate_503(&self, p: f64) {
        self.shared.rate_503.set(p);
    }

    /// Changes the fraction of streams refused with RST_STREAM REFUSED_STREAM.
    pub fn set_reset_rate(&self, p: f64) {
        self.shared.reset_rate.set(p);
    }

    /// Sends GOAWAY after every `n` requests on a connection (`None`: never).
    pub fn set_goaway_every(&self, n: Option<u64>) {
        self.shared
            .goaway_every
            .store(n.unwrap_or(0), Ordering::Relaxed);
    }

    /// Sends a graceful GOAWAY on every live connection.
    pub fn goaway_all(&self) {
        self.shared.bump(|c| c.goaway_gen += 1);
    }

    /// Closes every live connection abruptly (no GOAWAY, no TLS close_notify).
    pub fn drop_all(&self) {
        self.shared.bump(|c| c.drop_gen += 1);
    }

    /// Stops serving live connections entirely: requests and PINGs get no answer.
    pub fn freeze(&self) {
        self.shared.bump(|c| c.frozen = true);
    }

    /// Resumes serving frozen connections.
    pub fn thaw(&self) {
        self.shared.bump(|c| c.frozen = false);
    }

    /// Answers every request 403 with `reason` (e.g. [`Reason::BadCertificate`]), or stops.
    pub fn reject_certificate(&self, reason: Option<Reason>) {
        let v = reason.map_or(0, |r| r as u32 + 1);
        self.shared.reject_certificate.store(v, Ordering::Relaxed);
    }

    /// Answers pushes to `token` with 410 Unregistered, timestamped now.
    pub fn add_unregistered(&self, token: &str) {
        self.shared
            .unregistered
            .insert(&token.to_ascii_lowercase(), state::now_ms());
    }

    /// Makes `token` live again.
    pub fn remove_unregistered(&self, token: &str) {
        self.shared.unregistered.remove(&token.to_ascii_lowercase());
    }

    /// Answers pushes to `token` with 400 DeviceTokenNotForTopic.
    pub fn add_foreign_token(&self, token: &str) {
        self.shared.foreign.insert(&token.to_ascii_lowercase(), ());
    }

    /// Stops the mock: closes the listener and every connection, and waits for them.
    pub async fn shutdown(mut self) {
        self.shared.bump(|c| c.shutdown = true);
        if let Some(d) = self.dropper.take() {
            d.abort();
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
    }
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.shared.bump(|c| c.shutdown = true);
        if let Some(d) = self.dropper.take() {
            d.abort();
        }
    }
}

impl std::fmt::Debug for MockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockHandle")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}
