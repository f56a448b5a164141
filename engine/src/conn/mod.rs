//! One open APNs connection: sends the pushes the dispatcher hands it, reads their answers,
//! keeps the connection alive with PINGs, and hands back whatever it could not finish.

mod streams;

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::{mpsc, Notify};

use self::streams::{Answer, Streams};
use crate::apns::request::{payload, RequestTemplate};
use crate::apns::response::Verdict;
use crate::cause::CertificateAlert;
use crate::cause::Reason;
use crate::cause::{Cause, EngineCause};
use crate::job::Job;
use crate::outcome::PushError;
use crate::pool::plan::CloseCause;
use crate::pool::refusal::{on_certificate_refusal, RefusalAction};
use crate::transport::Connected;

/// How often the connection task re-reads its stream limit when idle, and ends streams past
/// their deadline (so a deadline may be reported up to this much late).
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
        leftover: Vec<(Job, Cause, bool)>,
    },
    /// A push met a transient failure. `unprocessed`: the server never looked at it.
    Retry {
        job: Job,
        reason: Cause,
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
        streams: Streams::default(),
        answered: Vec::new(),
        served: false,
        headers: config.template.header_cache(),
        delivered: crate::metrics::DeliveredMetrics::new(
            config.template.topic().to_str().unwrap_or(""),
        ),
        freed: false,
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
    /// Open streams and their jobs.
    streams: Streams,
    /// Answers taken from `streams` in one wake-up (kept to reuse its allocation).
    answered: Vec<(Job, Answer)>,
    /// Whether the server answered at least one push here.
    served: bool,
    headers: crate::apns::request::HeaderCache,
    delivered: crate::metrics::DeliveredMetrics,
    /// Stream slots were freed and the dispatcher has not been told yet.
    freed: bool,
}

/// How long a retired connection may take to close gracefully before it is dropped.
const GRACEFUL_CLOSE: Duration = Duration::from_secs(1);

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
        let mut next_sweep = Instant::now() + TICK;
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
                    self.streams.take_answers(&mut self.answered);
                    self.on_answers(None);
                    break;
                }
                // Every answer that is in, in this one wake-up.
                () = poll_fn(|cx| self.streams.poll_answers(cx, &mut self.answered)),
                    if !self.streams.is_empty() => self.on_answers(Some(&activity)),
                ready = poll_fn(|cx| send.poll_ready(cx)), if held.is_some() => {
                    match ready {
                        Ok(()) => self.pump(&mut send, &mut held),
                        Err(e) => {
                            let job = held.take().expect("guarded by held.is_some()");
                            // GOAWAY or a dead connection: this push never left.
                            self.hand_back(job, stream_reason(&e).into(), true);
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
                // Only wakes the loop: the deadline sweep below runs on every pass.
                _ = tick.tick() => {}
                () = dead.notified() => {
                    cause = CloseCause::PingTimeout;
                    self.streams.take_answers(&mut self.answered);
                    self.on_answers(None);
                    tracing::warn!(conn = self.id, "APNs connection did not answer a keepalive PING; replacing it");
                    break;
                }
            }
            let now = Instant::now();
            if now >= next_sweep {
                next_sweep = now + TICK;
                self.end_overdue(now, &mut held);
            }
            self.tell_freed();
            if accepting {
                let max = send
                    .current_max_send_streams()
                    .min(self.config.max_streams_cap);
                if max != self.shared.max_streams.load(Ordering::Relaxed) {
                    self.shared.max_streams.store(max, Ordering::Relaxed);
                    self.config.capacity.notify_one();
                }
            } else if held.is_none() && self.streams.is_empty() {
                break;
            }
        }
        keepalive.abort();
        drop(send);
        if cause == CloseCause::Retired {
            // Retired with nothing in flight: let h2 end the connection as the protocol wants
            // (GOAWAY, TLS close_notify, FIN) rather than dropping the socket, so that the
            // server has seen the close before this connection's place in the budget is
            // given to the next one. Bounded: a server that does not take part is dropped.
            let _ = tokio::time::timeout(GRACEFUL_CLOSE, &mut connection).await;
        }
        self.shared.max_streams.store(0, Ordering::Relaxed);
        let mut leftover = Vec::new();
        if let Some(job) = held.take() {
            leftover.push((job, EngineCause::ConnectionClosed.into(), true));
        }
        // Streams that never got an answer: the server may or may not have processed them.
        for job in self.streams.drain() {
            leftover.push((job, EngineCause::ConnectionLost.into(), false));
        }
        while let Ok(job) = self.jobs.try_recv() {
            leftover.push((job, EngineCause::ConnectionClosed.into(), true));
        }
        self.jobs.close();
        while let Some(job) = self.jobs.recv().await {
            leftover.push((job, EngineCause::ConnectionClosed.into(), true));
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
        // One reading of the clocks serves the whole batch.
        let mut clock = None;
        loop {
            let Some(job) = held.take().or_else(|| self.jobs.try_recv().ok()) else {
                return;
            };
            match poll_fn(|cx| send.poll_ready(cx)).now_or_never() {
                Some(Ok(())) => {
                    let (now, wall) =
                        *clock.get_or_insert_with(|| (Instant::now(), SystemTime::now()));
                    self.send(send, job, now, wall);
                }
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
            self.hand_back(job, EngineCause::GoAway.into(), true);
        }
        let _ = self.config.events.send(Event::GoingAway {
            id: self.id,
            cause,
            served: self.served,
        });
    }

    /// Opens a stream for `job` at `now` (`wall`: the same moment by the wall clock).
    fn send(
        &mut self,
        send: &mut h2::client::SendRequest<Bytes>,
        mut job: Job,
        now: Instant,
        wall: SystemTime,
    ) {
        if job.abandoned() {
            self.release();
            return;
        }
        if now >= job.deadline {
            self.release();
            // Handed to an open connection: no connection error kept it back.
            job.deadline_exceeded(None);
            return;
        }
        job.attempts += 1;
        job.sent_at = Some(now);
        let headers = self.headers.headers(wall);
        let request = self.config.template.request_with(&job.push.token, headers);
        let body = payload(&job.push.magic);
        match send.send_request(request, false) {
            Ok((response, mut stream)) => {
                // A body smaller than the initial window is buffered by h2 and sent as soon
                // as the stream opens.
                if let Err(e) = stream.send_data(body, true) {
                    self.release();
                    self.retry(job, stream_reason(&e).into(), is_unprocessed(&e));
                    return;
                }
                self.streams.insert(job, response);
            }
            Err(e) => {
                self.release();
                self.retry(job, stream_reason(&e).into(), is_unprocessed(&e));
            }
        }
    }

    /// Handles the answers in `self.answered`. Only a real answer from the server proves the
    /// connection alive (to `activity`, when the connection is still in use).
    fn on_answers(&mut self, activity: Option<&ActivityClock>) {
        let mut answered = std::mem::take(&mut self.answered);
        if let Some(activity) = activity {
            if answered
                .iter()
                .any(|(_, a)| matches!(a, Answer::Verdict(_)))
            {
                activity.touch();
            }
        }
        let now = Instant::now();
        for (job, answer) in answered.drain(..) {
            self.on_answer(job, answer, now);
        }
        self.answered = answered;
    }

    /// Ends what is past its deadline: streams still waiting for an answer (h2 cancels them)
    /// and a push held for a free stream.
    fn end_overdue(&mut self, now: Instant, held: &mut Option<Job>) {
        // These pushes ended on an open connection: no connection error kept them back.
        for job in self.streams.expire(now) {
            self.release();
            job.deadline_exceeded(None);
        }
        if held.as_ref().is_some_and(|j| now >= j.deadline) {
            self.release();
            held.take().expect("checked above").deadline_exceeded(None);
        }
    }

    /// One stream's end; `now` is when its answer was read.
    fn on_answer(&mut self, job: Job, answer: Answer, now: Instant) {
        self.release();
        if matches!(answer, Answer::Verdict(_)) {
            self.served = true;
        }
        match answer {
            Answer::Verdict(Verdict::Delivered { apns_id }) => {
                if self.config.rejected.load(Ordering::Relaxed) {
                    if let Some(sent_at) = job.sent_at {
                        let _ = self.config.events.send(Event::Recovered { sent_at });
                    }
                }
                job.delivered(apns_id, now, &self.delivered);
            }
            Answer::Verdict(Verdict::Final(e)) => job.finish(Err(e)),
            Answer::Verdict(Verdict::CertificateRejected(reason)) => {
                let current = self.config.current_generation.load(Ordering::Relaxed);
                match on_certificate_refusal(self.config.generation, current) {
                    RefusalAction::Resend => self.retry(job, reason.into(), false),
                    RefusalAction::Report => {
                        let _ = self.config.events.send(Event::CertificateRejected {
                            id: self.id,
                            reason: reason.clone(),
                        });
                        job.finish(Err(PushError::CertificateRejected {
                            detail: format!(
                                "APNs answered 403 {reason}: the push certificate is not \
                                 accepted (expired, revoked, or for another environment)"
                            ),
                            reason: reason.into(),
                        }));
                    }
                }
            }
            Answer::Verdict(Verdict::Retry(reason)) => self.retry(job, reason, false),
            Answer::StreamError(e) => self.retry(job, stream_reason(&e).into(), is_unprocessed(&e)),
        }
    }

    fn retry(&mut self, mut job: Job, reason: Cause, unprocessed: bool) {
        job.avoid = Some(self.slot);
        let _ = self.config.events.send(Event::Retry {
            job,
            reason,
            unprocessed,
        });
    }

    fn hand_back(&mut self, job: Job, reason: Cause, unprocessed: bool) {
        self.release();
        self.retry(job, reason, unprocessed);
    }

    /// One stream slot is free again. The dispatcher hears of it once per pass of the loop
    /// (see [`Driver::tell_freed`]), not once per stream.
    fn release(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.freed = true;
    }

    /// Wakes the dispatcher if stream slots were freed since it was last told.
    fn tell_freed(&mut self) {
        if std::mem::take(&mut self.freed) {
            self.config.capacity.notify_one();
        }
    }
}

/// Whether the server never processed the stream: refused, or above a GOAWAY's
/// last-stream-id, or never opened.
fn is_unprocessed(e: &h2::Error) -> bool {
    e.reason() == Some(h2::Reason::REFUSED_STREAM) || (e.is_go_away() && e.is_remote())
}

/// Why a stream ended without an answer.
fn stream_reason(e: &h2::Error) -> EngineCause {
    if e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        EngineCause::RefusedStream
    } else if e.is_go_away() {
        EngineCause::GoAway
    } else if e.is_io() {
        EngineCause::ConnectionLost
    } else if let (true, Some(code)) = (e.is_reset(), e.reason()) {
        EngineCause::StreamReset(code.into())
    } else {
        EngineCause::ConnectionLost
    }
}

fn close_cause(e: &h2::Error) -> CloseCause {
    if let Some(alert) = e.get_io().and_then(CertificateAlert::from_io_error) {
        return CloseCause::CertificateRejected(alert);
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
