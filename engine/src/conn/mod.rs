//! One open APNs connection: sends the pushes the dispatcher hands it, reads their answers,
//! keeps the connection alive with PINGs, and hands back whatever it could not finish.

use std::future::poll_fn;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use tokio::sync::{mpsc, Notify};

use crate::apns::reason::Reason;
use crate::apns::request::{payload, RequestTemplate};
use crate::apns::response::{classify, Verdict};
use crate::job::Job;
use crate::outcome::PushError;
use crate::pool::plan::CloseCause;
use crate::transport::Connected;

/// How often an otherwise idle connection task re-reads its stream limit.
const TICK: Duration = Duration::from_millis(250);

/// Identifies one connection over the pool's life.
pub(crate) type ConnId = u64;

/// What the dispatcher and a connection share without messages.
#[derive(Debug)]
pub(crate) struct ConnShared {
    /// Streams handed to this connection and not yet ended.
    pub in_flight: AtomicUsize,
    /// Current stream limit (server's, capped by the pool's).
    pub max_streams: AtomicUsize,
}

/// Messages from connections (and connection attempts) to the dispatcher.
pub(crate) enum Event {
    Connected {
        slot: usize,
        attempt: u64,
        connected: Connected,
    },
    ConnectFailed {
        slot: usize,
        attempt: u64,
        error: crate::transport::ConnectError,
    },
    /// Stop giving this connection work (GOAWAY received or it is dying). `served`: it
    /// answered at least one push.
    GoingAway {
        id: ConnId,
        cause: CloseCause,
        served: bool,
    },
    /// The connection ended; `leftover` were never answered.
    Closed {
        id: ConnId,
        cause: CloseCause,
        served: bool,
        leftover: Vec<(Job, Reason, bool)>,
    },
    /// A push met a transient failure. `unprocessed`: the server never looked at it.
    Retry {
        job: Job,
        reason: Reason,
        unprocessed: bool,
    },
    /// APNs answered 403 for the certificate on connection `id`.
    CertificateRejected { id: ConnId, reason: Reason },
    /// A push sent at `sent_at` was delivered while the pool was in the
    /// certificate-rejected state.
    Recovered { sent_at: Instant },
}

/// The dispatcher's handle on an open connection.
#[derive(Debug)]
pub(crate) struct Live {
    pub id: ConnId,
    pub shared: Arc<ConnShared>,
    pub jobs: mpsc::UnboundedSender<Job>,
}

/// Settings a connection needs.
pub(crate) struct ConnConfig {
    /// The certificate generation this connection presents.
    pub generation: u64,
    /// The pool's current certificate generation.
    pub current_generation: Arc<std::sync::atomic::AtomicU64>,
    pub template: Arc<RequestTemplate>,
    pub max_streams_cap: usize,
    pub keepalive: Duration,
    pub ping_timeout: Duration,
    pub events: mpsc::UnboundedSender<Event>,
    pub capacity: Arc<Notify>,
    pub rejected: Arc<AtomicBool>,
}

type InFlight = Pin<Box<dyn Future<Output = (usize, Answer)> + Send>>;

enum Answer {
    Verdict(Verdict),
    StreamError(h2::Error),
    TimedOut,
}

/// Starts the connection's tasks and returns the dispatcher's handle.
pub(crate) fn spawn(
    id: ConnId,
    slot: usize,
    connected: Connected,
    config: Arc<ConnConfig>,
) -> Live {
    let max = connected
        .send
        .current_max_send_streams()
        .min(config.max_streams_cap);
    let shared = Arc::new(ConnShared {
        in_flight: AtomicUsize::new(0),
        max_streams: AtomicUsize::new(max),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let driver = Driver {
        id,
        slot,
        shared: shared.clone(),
        jobs: rx,
        slab: Slab::default(),
        inflight: FuturesUnordered::new(),
        served: false,
        expiration: config.template.expiration_cache(),
        config,
    };
    tokio::spawn(driver.run(connected));
    Live {
        id,
        shared,
        jobs: tx,
    }
}

struct Driver {
    id: ConnId,
    slot: usize,
    shared: Arc<ConnShared>,
    config: Arc<ConnConfig>,
    jobs: mpsc::UnboundedReceiver<Job>,
    slab: Slab,
    inflight: FuturesUnordered<InFlight>,
    /// Whether the server answered at least one push here.
    served: bool,
    expiration: crate::apns::request::ExpirationCache,
}

impl Driver {
    async fn run(mut self, connected: Connected) {
        let Connected {
            mut send,
            ping,
            mut connection,
        } = connected;
        let activity = Arc::new(ActivityClock::new());
        let dead = Arc::new(Notify::new());
        let keepalive = tokio::spawn(keepalive(
            ping,
            activity.clone(),
            self.shared.clone(),
            dead.clone(),
            self.config.keepalive,
            self.config.ping_timeout,
        ));
        let mut held: Option<Job> = None;
        let mut accepting = true;
        let mut cause = CloseCause::Retired;
        // Wakes an idle connection now and then: a SETTINGS change that raised the stream
        // limit, or a push held for a stream past its deadline, needs no other event.
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                // The connection's own I/O first: it reads answers and writes requests.
                result = &mut connection => {
                    cause = match result {
                        Ok(()) => CloseCause::GoAway,
                        Err(e) => close_cause(&e),
                    };
                    // Answers that arrived before the end are ready now; the other streams
                    // will never be answered (the connection is no longer polled): they are
                    // handed back below.
                    while let Some(Some((key, answer))) = self.inflight.next().now_or_never() {
                        self.on_answer(key, answer);
                    }
                    break;
                }
                Some((key, answer)) = self.inflight.next(), if !self.inflight.is_empty() => {
                    self.on_answer_heard(key, answer, &activity);
                    // Take every other answer that is already in, in this one wake-up.
                    while let Some(Some((key, answer))) = self.inflight.next().now_or_never() {
                        self.on_answer_heard(key, answer, &activity);
                    }
                }
                ready = poll_fn(|cx| send.poll_ready(cx)), if held.is_some() => {
                    let job = held.take().expect("guarded by held.is_some()");
                    match ready {
                        Ok(()) => {
                            self.send(&mut send, job);
                            self.pump(&mut send, &mut held);
                        }
                        Err(e) => {
                            // GOAWAY or a dead connection: this push never left.
                            self.hand_back(job, stream_reason(&e), true);
                            if accepting {
                                accepting = false;
                                cause = close_cause(&e);
                                self.going_away(cause.clone());
                            }
                        }
                    }
                }
                job = self.jobs.recv(), if held.is_none() && accepting => match job {
                    Some(job) => {
                        held = Some(job);
                        self.pump(&mut send, &mut held);
                    }
                    // The dispatcher retired this connection: finish what is in flight.
                    None => accepting = false,
                },
                _ = tick.tick() => {
                    if held.as_ref().is_some_and(|j| Instant::now() >= j.deadline) {
                        self.release();
                        held.take().expect("checked above").deadline_exceeded();
                    }
                }
                () = dead.notified() => {
                    cause = CloseCause::PingTimeout;
                    while let Some(Some((key, answer))) = self.inflight.next().now_or_never() {
                        self.on_answer(key, answer);
                    }
                    tracing::warn!(conn = self.id, "APNs connection did not answer a keepalive PING; replacing it");
                    break;
                }
            }
            if accepting {
                let max = send
                    .current_max_send_streams()
                    .min(self.config.max_streams_cap);
                if max != self.shared.max_streams.load(Ordering::Relaxed) {
                    self.shared.max_streams.store(max, Ordering::Relaxed);
                    self.config.capacity.notify_one();
                }
            } else if held.is_none() && self.inflight.is_empty() {
                break;
            }
        }
        keepalive.abort();
        drop(send);
        self.shared.max_streams.store(0, Ordering::Relaxed);
        let mut leftover = Vec::new();
        if let Some(job) = held.take() {
            leftover.push((job, Reason::new("ConnectionClosed"), true));
        }
        // Streams that never got an answer: the server may or may not have processed them.
        self.inflight.clear();
        for job in self.slab.drain() {
            leftover.push((job, Reason::new("ConnectionLost"), false));
        }
        while let Ok(job) = self.jobs.try_recv() {
            leftover.push((job, Reason::new("ConnectionClosed"), true));
        }
        self.jobs.close();
        while let Some(job) = self.jobs.recv().await {
            leftover.push((job, Reason::new("ConnectionClosed"), true));
        }
        self.shared.in_flight.store(0, Ordering::Relaxed);
        self.config.capacity.notify_one();
        let _ = self.config.events.send(Event::Closed {
            id: self.id,
            cause,
            served: self.served,
            leftover,
        });
    }

    /// Sends `held` and whatever else is queued for this connection while h2 is ready for
    /// another stream, without going back through the select loop for each push. What cannot
    /// be sent yet stays in `held`, where the loop waits for readiness (or its error).
    fn pump(&mut self, send: &mut h2::client::SendRequest<Bytes>, held: &mut Option<Job>) {
        loop {
            let Some(job) = held.take().or_else(|| self.jobs.try_recv().ok()) else {
                return;
            };
            match poll_fn(|cx| send.poll_ready(cx)).now_or_never() {
                Some(Ok(())) => self.send(send, job),
                _ => {
                    *held = Some(job);
                    return;
                }
            }
        }
    }

    fn going_away(&mut self, cause: CloseCause) {
        self.shared.max_streams.store(0, Ordering::Relaxed);
        // Pushes queued here were never sent: resend them elsewhere now rather than after
        // this connection's last stream ends.
        while let Ok(job) = self.jobs.try_recv() {
            self.hand_back(job, Reason::new("GoAway"), true);
        }
        let _ = self.config.events.send(Event::GoingAway {
            id: self.id,
            cause,
            served: self.served,
        });
    }

    fn send(&mut self, send: &mut h2::client::SendRequest<Bytes>, mut job: Job) {
        if job.abandoned() {
            self.release();
            return;
        }
        let now = Instant::now();
        if now >= job.deadline {
            self.release();
            job.deadline_exceeded();
            return;
        }
        job.attempts += 1;
        job.sent_at = Some(now);
        let expiration = self.expiration.value(SystemTime::now());
        let request = self
            .config
            .template
            .request_with(&job.push.token, expiration);
        let body = payload(&job.push.magic);
        let deadline = job.deadline;
        match send.send_request(request, false) {
            Ok((response, mut stream)) => {
                // A body smaller than the initial window is buffered by h2 and sent as soon
                // as the stream opens.
                if let Err(e) = stream.send_data(body, true) {
                    self.release();
                    self.retry(job, stream_reason(&e), is_unprocessed(&e));
                    return;
                }
                let key = self.slab.insert(job);
                self.inflight.push(Box::pin(async move {
                    let answer =
                        match tokio::time::timeout_at(deadline, read_answer(response)).await {
                            Ok(a) => a,
                            Err(_) => Answer::TimedOut,
                        };
                    (key, answer)
                }));
            }
            Err(e) => {
                self.release();
                self.retry(job, stream_reason(&e), is_unprocessed(&e));
            }
        }
    }

    /// An answer; only a real one from the server proves the connection alive.
    fn on_answer_heard(&mut self, key: usize, answer: Answer, activity: &ActivityClock) {
        if matches!(answer, Answer::Verdict(_)) {
            activity.touch();
        }
        self.on_answer(key, answer);
    }

    fn on_answer(&mut self, key: usize, answer: Answer) {
        self.release();
        if matches!(answer, Answer::Verdict(_)) {
            self.served = true;
        }
        let Some(job) = self.slab.remove(key) else {
            return;
        };
        match answer {
            Answer::Verdict(Verdict::Delivered { apns_id }) => {
                if self.config.rejected.load(Ordering::Relaxed) {
                    if let Some(sent_at) = job.sent_at {
                        let _ = self.config.events.send(Event::Recovered { sent_at });
                    }
                }
                job.delivered(apns_id);
            }
            Answer::Verdict(Verdict::CertificateRejected(reason)) if self.retired() => {
                // This connection presents a certificate that has since been replaced:
                // the push deserves another try with the new one.
                self.retry(job, reason, false);
            }
            Answer::Verdict(Verdict::Final(e)) => job.finish(Err(e)),
            Answer::Verdict(Verdict::CertificateRejected(reason)) => {
                let _ = self.config.events.send(Event::CertificateRejected {
                    id: self.id,
                    reason: reason.clone(),
                });
                job.finish(Err(PushError::CertificateRejected {
                    detail: format!(
                        "APNs answered 403 {reason}: the push certificate is not accepted \
                         (expired, revoked, or for another environment)"
                    ),
                    reason,
                }));
            }
            Answer::Verdict(Verdict::Retry(reason)) => self.retry(job, reason, false),
            Answer::StreamError(e) => self.retry(job, stream_reason(&e), is_unprocessed(&e)),
            Answer::TimedOut => job.deadline_exceeded(),
        }
    }

    /// The pool has replaced the certificate this connection presents.
    fn retired(&self) -> bool {
        self.config.current_generation.load(Ordering::Relaxed) != self.config.generation
    }

    fn retry(&mut self, mut job: Job, reason: Reason, unprocessed: bool) {
        job.avoid = Some(self.slot);
        let _ = self.config.events.send(Event::Retry {
            job,
            reason,
            unprocessed,
        });
    }

    fn hand_back(&mut self, job: Job, reason: Reason, unprocessed: bool) {
        self.release();
        self.retry(job, reason, unprocessed);
    }

    /// One stream slot is free again.
    fn release(&self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.config.capacity.notify_one();
    }
}

async fn read_answer(response: h2::client::ResponseFuture) -> Answer {
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return Answer::StreamError(e),
    };
    let status = response.status().as_u16();
    let apns_id = response
        .headers()
        .get("apns-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    if status != 200 {
        while let Some(chunk) = body.data().await {
            match chunk {
                Ok(chunk) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    if bytes.len() < 8192 {
                        bytes.extend_from_slice(&chunk);
                    }
                }
                Err(e) => return Answer::StreamError(e),
            }
        }
    }
    Answer::Verdict(classify(status, apns_id.as_deref(), &bytes))
}

/// Whether the server never processed the stream: refused, or above a GOAWAY's
/// last-stream-id, or never opened.
fn is_unprocessed(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

fn stream_reason(e: &h2::Error) -> Reason {
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        Reason::new("RefusedStream")
    } else if e.is_go_away() {
        Reason::new("GoAway")
    } else if e.is_io() {
        Reason::new("ConnectionLost")
    } else if e.is_reset() {
        Reason::new(format!("StreamReset({:?})", e.reason()))
    } else {
        Reason::new("ConnectionLost")
    }
}

fn close_cause(e: &h2::Error) -> CloseCause {
    if let Some(reason) = e.get_io().and_then(crate::transport::certificate_alert) {
        return CloseCause::CertificateRejected(reason);
    }
    if e.is_go_away() && e.is_remote() {
        CloseCause::GoAway
    } else {
        CloseCause::Lost
    }
}

/// Milliseconds since the connection opened when it last heard from the server.
struct ActivityClock {
    start: Instant,
    last_ms: AtomicUsize,
}

impl ActivityClock {
    fn new() -> Self {
        ActivityClock {
            start: Instant::now(),
            last_ms: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as usize;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed) as u64);
        self.start.elapsed().saturating_sub(last)
    }
}

/// PINGs the server whenever nothing was heard from it for `interval` — or, while pushes
/// are waiting for answers, for `timeout` already (a connection that swallows requests must
/// not wait for an idle minute). A PING unanswered within `timeout` declares the
/// connection dead.
async fn keepalive(
    mut ping: h2::PingPong,
    activity: Arc<ActivityClock>,
    shared: Arc<ConnShared>,
    dead: Arc<Notify>,
    interval: Duration,
    timeout: Duration,
) {
    let check = interval.min(timeout).max(Duration::from_millis(10));
    loop {
        let idle = activity.idle();
        let busy = shared.in_flight.load(Ordering::Relaxed) > 0;
        let limit = if busy {
            interval.min(timeout)
        } else {
            interval
        };
        if idle < limit {
            tokio::time::sleep((limit - idle).min(check)).await;
            continue;
        }
        match tokio::time::timeout(timeout, ping.ping(h2::Ping::opaque())).await {
            Ok(Ok(_pong)) => activity.touch(),
            // A PING error means the connection is already failing; the driver sees that
            // through the connection future. Only silence is this task's to report.
            Ok(Err(_)) => return,
            Err(_) => {
                dead.notify_one();
                return;
            }
        }
    }
}

/// A small slab so that in-flight jobs can be recovered when a connection dies.
#[derive(Default)]
struct Slab {
    entries: Vec<Option<Job>>,
    free: Vec<usize>,
}

impl Slab {
    fn insert(&mut self, job: Job) -> usize {
        match self.free.pop() {
            Some(i) => {
                self.entries[i] = Some(job);
                i
            }
            None => {
                self.entries.push(Some(job));
                self.entries.len() - 1
            }
        }
    }

    fn remove(&mut self, key: usize) -> Option<Job> {
        let job = self.entries.get_mut(key)?.take();
        if job.is_some() {
            self.free.push(key);
        }
        job
    }

    fn drain(&mut self) -> impl Iterator<Item = Job> + '_ {
        self.free.clear();
        self.entries.drain(..).flatten()
    }
}
