//! The dispatcher: one task that owns the pool. It takes pushes from the bounded queue, hands
//! each to the least-loaded open connection, opens and replaces connections as the
//! [`Plan`](crate::pool::plan::Plan) says, and resends what connections hand back.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit};

use crate::apns::request::RequestTemplate;
use crate::cause::Cause;
use crate::conn::{self, ConnConfig, ConnId, Event, Live};
use crate::endpoint::Endpoint;
use crate::job::Job;
use crate::metrics as m;
use crate::outcome::PushError;
use crate::pool::budget::{self, Budget, GiveBack, Usage};
use crate::pool::pick::{pick, SlotLoad};
use crate::pool::plan::{CloseCause, Plan, Resend, RetryPolicy};
use crate::transport;

/// Most pushes taken from the intake queue in one wake-up.
const DISPATCH_BATCH: usize = 256;

/// Requests to the dispatcher from the client handle.
pub(crate) enum Control {
    ReplaceCertificate {
        tls: Arc<rustls::ClientConfig>,
        template: Arc<RequestTemplate>,
        certificate: crate::cert::PushCertificate,
    },
    Status(oneshot::Sender<PoolStatus>),
    /// Stop: fail what is queued with this error, let streams in flight finish, close.
    Shutdown {
        done: oneshot::Sender<()>,
        error: PushError,
    },
}

/// A snapshot of the pool for operators.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStatus {
    /// Connections open and taking pushes.
    pub open_connections: usize,
    /// Connections finishing their streams after a GOAWAY or a certificate swap.
    pub draining_connections: usize,
    /// Pushes sent and not answered.
    pub in_flight: usize,
    /// Pushes waiting for a free stream or a retry time.
    pub waiting: usize,
    /// Set while APNs refuses the certificate: APNs's reason or the TLS alert.
    pub certificate_rejected: Option<Cause>,
    /// The most recent connection failure, if the last attempt failed.
    pub last_connect_error: Option<String>,
    /// Connection attempts made after the first round.
    pub reconnects: u64,
}

/// The pool's most recent connection failure, while its most recent connection attempt
/// failed. The dispatcher sets and clears it; the pushes that end past their deadline report
/// it, whether the dispatcher ends them or the client's own deadline does. It is touched when
/// a connection opens or fails and when a push ends past its deadline, never on a push's way
/// to APNs.
#[derive(Debug, Default)]
pub(crate) struct LastConnectError(std::sync::Mutex<Option<Arc<str>>>);

impl LastConnectError {
    /// The last connection error, if the most recent attempt failed.
    pub(crate) fn get(&self) -> Option<Arc<str>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, error: Option<Arc<str>>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = error;
    }
}

pub(crate) struct Settings {
    pub endpoint: Endpoint,
    /// The HTTP proxy every connection tunnels through, if any.
    pub proxy: Option<Arc<transport::Proxy>>,
    pub max_streams: usize,
    pub connect_timeout: Duration,
    pub keepalive: Duration,
    pub ping_timeout: Duration,
    pub retry: RetryPolicy,
    /// Most pushes the dispatcher holds (waiting for a stream or a retry time).
    pub held_limit: usize,
    /// The certificate in use, for the days-left gauge.
    pub certificate: crate::cert::PushCertificate,
    pub plan: Plan,
    /// The connections of every topic together.
    pub budget: Arc<Budget>,
    /// Connections close after this long without work.
    pub idle_timeout: Duration,
}

/// A wait in line for a connection of the budget.
type PermitWait = Pin<Box<dyn Future<Output = OwnedSemaphorePermit> + Send>>;

pub(crate) struct Dispatcher {
    settings: Settings,
    tls: Arc<rustls::ClientConfig>,
    template: Arc<RequestTemplate>,
    intake: mpsc::Receiver<Job>,
    control: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedReceiver<Event>,
    events_tx: mpsc::UnboundedSender<Event>,
    capacity: Arc<Notify>,
    rejected: Arc<AtomicBool>,
    /// Bumped by every certificate replacement; connections remember theirs.
    generation: Arc<AtomicU64>,
    slots: Vec<Option<Live>>,
    /// The attempt each slot is waiting for; older attempts' results are discarded.
    attempts: Vec<u64>,
    next_attempt: u64,
    next_conn: ConnId,
    draining: Vec<Draining>,
    waiting: VecDeque<Job>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    delayed_seq: u64,
    last_connect_error: Arc<LastConnectError>,
    reconnects: u64,
    started: Vec<bool>,
    shutting_down: Option<oneshot::Sender<()>>,
    /// Scratch space for [`Dispatcher::dispatch`], kept to reuse its allocation.
    loads: Vec<SlotLoad>,
    /// The budget permit of each slot's connection (opening or open).
    permits: Vec<Option<OwnedSemaphorePermit>>,
    /// A permit won by waiting in line, for the next connection to start.
    spare: Option<OwnedSemaphorePermit>,
    /// Waiting in line: the pool has work and no connection.
    permit_wait: Option<PermitWait>,
    /// When the pool last had work.
    last_busy: Instant,
    /// Since when another topic has been waiting for a connection while this pool held some.
    others_waiting_since: Option<Instant>,
    gauges: m::TopicGauges,
}

/// A connection that takes no new pushes and finishes its streams. Dropping its job sender
/// (when it is made from a [`Live`]) is what tells it to stop taking work.
struct Draining {
    id: ConnId,
    shared: Arc<crate::conn::ConnShared>,
    /// Its place in the budget, given back when it has closed.
    _permit: Option<OwnedSemaphorePermit>,
    /// Leave to close for a starving topic, held until the permit is free (declared after
    /// it: fields drop in order).
    _promise: Option<budget::Promise>,
}

struct Delayed {
    at: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

impl Dispatcher {
    pub(crate) fn new(
        settings: Settings,
        tls: Arc<rustls::ClientConfig>,
        template: Arc<RequestTemplate>,
        intake: mpsc::Receiver<Job>,
        control: mpsc::UnboundedReceiver<Control>,
        last_connect_error: Arc<LastConnectError>,
    ) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut settings = settings;
        let n = settings.plan.len();
        // Nothing connects before the first push.
        for slot in 0..n {
            settings.plan.park(slot);
        }
        let gauges = m::TopicGauges::new(settings.certificate.topic());
        Dispatcher {
            settings,
            tls,
            template,
            intake,
            control,
            events,
            events_tx,
            capacity: Arc::new(Notify::new()),
            rejected: Arc::new(AtomicBool::new(false)),
            generation: Arc::new(AtomicU64::new(0)),
            slots: (0..n).map(|_| None).collect(),
            attempts: vec![0; n],
            next_attempt: 1,
            next_conn: 1,
            draining: Vec::new(),
            waiting: VecDeque::new(),
            delayed: BinaryHeap::new(),
            delayed_seq: 0,
            last_connect_error,
            reconnects: 0,
            started: vec![false; n],
            shutting_down: None,
            loads: Vec::new(),
            permits: (0..n).map(|_| None).collect(),
            spare: None,
            permit_wait: None,
            last_busy: Instant::now(),
            others_waiting_since: None,
            gauges,
        }
    }

    pub(crate) async fn run(mut self) {
        let mut gauges = tokio::time::interval(Duration::from_millis(250));
        gauges.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut intake_open = true;
        // One timer for the whole life of the loop, moved to each new wake-up time: a fresh
        // timer per pass would be registered and removed in the timer wheel every time.
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(24 * 3600)));
        loop {
            let now = Instant::now();
            self.wake_for_work(now);
            self.start_due_connections(now);
            self.release_delayed(now);
            self.dispatch(now);
            self.give_back(now);
            if self.shutting_down.is_some() && self.finished_draining() {
                break;
            }
            let wake = self.next_wake();
            if let Some(at) = wake {
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
            }
            // Pushes stay in the bounded intake queue (where callers feel back-pressure) until
            // a connection has room for them — or until they can only fail fast.
            let has_room = self.has_room();
            // A parked pool takes its first push in to know it has work.
            let parked = self.settings.plan.all_parked() && self.permit_wait.is_none();
            // With room on a connection, or pushes that can only fail fast, pushes are taken
            // in a batch at a time; a parked pool takes only the one that tells it has work,
            // and the rest stay in the bounded queue.
            let batch = has_room || self.fail_fast_reason(now).is_some();
            let want_jobs = intake_open
                && self.shutting_down.is_none()
                && self.waiting.is_empty()
                && self.delayed.len() < self.settings.held_limit
                && (batch || parked);
            let in_line = self.permit_wait.is_some();
            let permit_wait = self.permit_wait.as_mut();
            tokio::select! {
                biased;
                Some(event) = self.events.recv() => self.on_event(event),
                Some(control) = self.control.recv() => self.on_control(control),
                permit = async move {
                    match permit_wait {
                        Some(wait) => wait.as_mut().await,
                        None => std::future::pending().await,
                    }
                }, if in_line => {
                    self.permit_wait = None;
                    self.spare = Some(permit);
                    self.settings.plan.wake_one();
                }
                () = self.capacity.notified(), if !self.waiting.is_empty() || !has_room => {}
                job = self.intake.recv(), if want_jobs => match job {
                    Some(job) => {
                        self.waiting.push_back(job);
                        // Take a batch while we are here: one wake-up, many pushes.
                        while batch && self.waiting.len() < DISPATCH_BATCH {
                            match self.intake.try_recv() {
                                Ok(job) => self.waiting.push_back(job),
                                Err(_) => break,
                            }
                        }
                    }
                    None => intake_open = false,
                },
                () = &mut timer, if wake.is_some() => {}
                _ = gauges.tick() => {
                    self.update_gauges();
                    self.sweep_expired_intake(Instant::now());
                }
            }
            if !intake_open && self.shutting_down.is_none() && self.all_idle() {
                // Every client handle is gone and nothing is left to do.
                break;
            }
        }
        self.gauges.clear();
        if let Some(done) = self.shutting_down.take() {
            let _ = done.send(());
        }
    }

    /// Work for a pool with no connection: one slot becomes due (or, when the budget has no
    /// connection to spare, the pool waits in line for one). Work that keeps every open
    /// connection busy opens one more, while the budget has room and no topic waits; so
    /// does a lone connection's certificate refusal, which needs a second opinion.
    fn wake_for_work(&mut self, now: Instant) {
        if self.shutting_down.is_some() || self.permit_wait.is_some() {
            return;
        }
        let plan = &self.settings.plan;
        if !plan.any_parked() {
            return;
        }
        let open = self.slots.iter().flatten().count();
        let second_opinion = open == 1 && plan.suspect(now).is_some();
        if !second_opinion && !self.has_work() {
            return;
        }
        if plan.all_parked() {
            self.settings.plan.wake_one();
            return;
        }
        let budget = &self.settings.budget;
        let room = budget.starving() == 0 && budget.in_use() < budget.max();
        if room && plan.settled() && (second_opinion || self.busy_enough_to_grow()) {
            self.settings.plan.wake_one();
        }
    }

    /// Whether the open connections carry at least half the streams they may: another one
    /// would spread the load (and its CPU) further.
    fn busy_enough_to_grow(&self) -> bool {
        let (mut in_flight, mut streams) = (0usize, 0usize);
        for live in self.slots.iter().flatten() {
            in_flight += live.shared.in_flight.load(Ordering::Acquire);
            streams += live.shared.max_streams.load(Ordering::Acquire);
        }
        streams > 0 && in_flight * 2 >= streams
    }

    fn start_due_connections(&mut self, now: Instant) {
        if self.shutting_down.is_some() {
            return;
        }
        for slot in self.settings.plan.take_due(now) {
            let permit = match self.spare.take() {
                Some(p) => p,
                None => match self.settings.budget.try_take() {
                    Some(p) => p,
                    None => {
                        self.settings.plan.park(slot);
                        continue;
                    }
                },
            };
            self.permits[slot] = Some(permit);
            if self.started[slot] {
                self.reconnects += 1;
                let topic = self.settings.certificate.topic().to_owned();
                metrics::counter!(m::RECONNECTS, "topic" => topic).increment(1);
            }
            self.started[slot] = true;
            let attempt = self.next_attempt;
            self.next_attempt += 1;
            self.attempts[slot] = attempt;
            let endpoint = self.settings.endpoint.clone();
            let proxy = self.settings.proxy.clone();
            let tls = self.tls.clone();
            let timeout = self.settings.connect_timeout;
            let events = self.events_tx.clone();
            tokio::spawn(async move {
                let event = match transport::connect(&endpoint, proxy, tls, timeout).await {
                    Ok(connected) => Event::Connected {
                        slot,
                        attempt,
                        connected,
                    },
                    Err(error) => Event::ConnectFailed {
                        slot,
                        attempt,
                        error,
                    },
                };
                let _ = events.send(event);
            });
        }
        // Work, and not one connection: wait in line for the budget's next free one.
        if self.permit_wait.is_none()
            && self.settings.plan.all_parked()
            && self.permits.iter().all(Option::is_none)
            && self.has_work()
        {
            self.permit_wait = Some(Box::pin(self.settings.budget.wait()));
        }
    }

    /// Pushes waiting anywhere in the pool, or in flight.
    fn has_work(&self) -> bool {
        !self.waiting.is_empty()
            || !self.delayed.is_empty()
            || !self.intake.is_empty()
            || self
                .slots
                .iter()
                .flatten()
                .any(|l| l.shared.in_flight.load(Ordering::Relaxed) > 0)
    }

    /// Gives connections back to the budget as [`budget::decide`] says: all of them after the
    /// idle time (or at once while another topic waits in line), all but one while another
    /// topic waits and this one is busy. Connections still opening are left to open first.
    fn give_back(&mut self, now: Instant) {
        let busy = self.has_work();
        if busy {
            self.last_busy = now;
        }
        let connections = self.slots.iter().flatten().count();
        let starving = self.settings.budget.starving();
        let waiting_since = if starving > 0 && connections > 0 {
            *self.others_waiting_since.get_or_insert(now)
        } else {
            self.others_waiting_since = None;
            now
        };
        let usage = Usage {
            connections,
            busy,
            idle_for: now.saturating_duration_since(self.last_busy),
            others_waited: now.saturating_duration_since(waiting_since),
        };
        let keep = match budget::decide(usage, starving, self.settings.idle_timeout) {
            GiveBack::Nothing => return,
            GiveBack::All => None,
            // The busiest connection stays.
            GiveBack::AllButOne => (0..self.slots.len()).max_by_key(|&i| {
                self.slots[i]
                    .as_ref()
                    .map_or(0, |l| 1 + l.shared.in_flight.load(Ordering::Relaxed))
            }),
        };
        // The least busy go first.
        let mut order: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].is_some() && Some(i) != keep)
            .collect();
        order.sort_by_key(|&i| {
            self.slots[i]
                .as_ref()
                .map_or(0, |l| l.shared.in_flight.load(Ordering::Relaxed))
        });
        for slot in order {
            // For a starving topic, one connection closes per topic waiting, not one in
            // every pool; after the idle time, every connection closes.
            let promise = if starving > 0 {
                match self.settings.budget.promise() {
                    Some(p) => Some(p),
                    None => break,
                }
            } else {
                None
            };
            self.retire(slot, promise);
            self.settings.plan.park(slot);
        }
        if self.slots.iter().all(Option::is_none) {
            self.others_waiting_since = None;
        }
    }

    /// Moves the slot's connection to draining (it takes no new push, finishes its streams
    /// and closes), with its budget permit.
    fn retire(&mut self, slot: usize, promise: Option<budget::Promise>) {
        if let Some(live) = self.slots[slot].take() {
            self.draining.push(Draining {
                id: live.id,
                shared: live.shared,
                _permit: self.permits[slot].take(),
                _promise: promise,
            });
        }
    }

    fn release_delayed(&mut self, now: Instant) {
        while let Some(Reverse(d)) = self.delayed.peek() {
            if d.at > now {
                break;
            }
            let Reverse(d) = self.delayed.pop().expect("peeked");
            self.waiting.push_front(d.job);
        }
    }

    /// Hands waiting pushes to connections while any has room.
    fn dispatch(&mut self, now: Instant) {
        let fail_fast = self.fail_fast_reason(now);
        let mut loads = std::mem::take(&mut self.loads);
        self.fill_loads(&mut loads);
        // A connection that alone answered 403 for the certificate: ask the others first.
        let suspect = self
            .settings
            .plan
            .suspect(now)
            .and_then(|id| self.slot_of(id));
        while let Some(job) = self.waiting.pop_front() {
            if job.abandoned() {
                continue;
            }
            if now >= job.deadline {
                job.deadline_exceeded(self.last_connect_error.get());
                continue;
            }
            if let Some(reason) = &fail_fast {
                let rejection = self
                    .settings
                    .plan
                    .rejection()
                    .expect("fail_fast implies rejection");
                let detail = format!(
                    "APNs refused the push certificate ({reason}) {:.0?} ago; pushes fail fast \
                     until a new certificate is installed or the next probe succeeds",
                    now.saturating_duration_since(rejection.since)
                );
                job.finish(Err(PushError::CertificateRejected {
                    reason: reason.clone(),
                    detail,
                }));
                continue;
            }
            let Some(i) = pick(&loads, job.avoid.or(suspect)) else {
                self.waiting.push_front(job);
                break;
            };
            let live = self.slots[i].as_ref().expect("pick returns open slots");
            live.shared.in_flight.fetch_add(1, Ordering::AcqRel);
            loads[i].in_flight += 1;
            if let Err(mpsc::error::SendError(job)) = live.jobs.send(job) {
                // The connection task is gone without saying so (it panicked, or its
                // Closed event is still on the way): the slot is dead either way.
                tracing::warn!(conn = live.id, "APNs connection task ended unexpectedly");
                self.slots[i] = None;
                self.settings
                    .plan
                    .on_closed(i, now, CloseCause::Lost, false, fastrand::f64());
                loads[i].open = false;
                self.waiting.push_front(job);
            }
        }
        self.loads = loads;
    }

    /// While no connection has room, pushes wait in the intake queue where nothing looks at
    /// them; this ends the ones whose deadline has passed (they are in submission order, so
    /// it stops at the first live one, which then waits here with its deadline watched).
    fn sweep_expired_intake(&mut self, now: Instant) {
        if self.has_room() || !self.waiting.is_empty() {
            return;
        }
        while let Ok(job) = self.intake.try_recv() {
            if job.abandoned() {
                continue;
            }
            if now >= job.deadline {
                job.deadline_exceeded(self.last_connect_error.get());
            } else {
                self.waiting.push_back(job);
                break;
            }
        }
    }

    /// Why pushes must fail at once: the fail-fast window after a certificate rejection, or
    /// the rejection itself while no connection is open to probe with.
    fn fail_fast_reason(&self, now: Instant) -> Option<Cause> {
        let plan = &self.settings.plan;
        if let Some(reason) = plan.fail_fast(now) {
            return Some(reason.clone());
        }
        let rejection = plan.rejection()?;
        self.slots
            .iter()
            .all(Option::is_none)
            .then(|| rejection.reason.clone())
    }

    fn has_room(&self) -> bool {
        self.slots.iter().flatten().any(|l| {
            l.shared.in_flight.load(Ordering::Acquire)
                < l.shared.max_streams.load(Ordering::Acquire)
        })
    }

    fn fill_loads(&self, loads: &mut Vec<SlotLoad>) {
        loads.clear();
        loads.extend(self.slots.iter().map(|s| match s {
            Some(live) => SlotLoad {
                open: true,
                in_flight: live.shared.in_flight.load(Ordering::Acquire),
                max_streams: live.shared.max_streams.load(Ordering::Acquire),
            },
            None => SlotLoad {
                open: false,
                in_flight: 0,
                max_streams: 0,
            },
        }));
    }

    fn next_wake(&self) -> Option<Instant> {
        let mut wake = self.settings.plan.next_wake();
        if self.slots.iter().any(Option::is_some) {
            let idle_end = self.last_busy + self.settings.idle_timeout;
            wake = Some(wake.map_or(idle_end, |w| w.min(idle_end)));
        }
        if let Some(Reverse(d)) = self.delayed.peek() {
            wake = Some(wake.map_or(d.at, |w| w.min(d.at)));
        }
        if let Some(job) = self.waiting.front() {
            wake = Some(wake.map_or(job.deadline, |w| w.min(job.deadline)));
        }
        if let Some(r) = self.settings.plan.rejection() {
            // Only a window still to come is worth waking for; a past one would spin.
            if !self.waiting.is_empty() && r.fail_fast_until > Instant::now() {
                wake = Some(wake.map_or(r.fail_fast_until, |w| w.min(r.fail_fast_until)));
            }
        }
        wake
    }

    fn on_event(&mut self, event: Event) {
        let now = Instant::now();
        match event {
            Event::Connected {
                slot,
                attempt,
                connected,
            } => {
                if self.attempts[slot] != attempt || self.shutting_down.is_some() {
                    // Stale (certificate replaced meanwhile) or shutting down: close it.
                    drop(connected);
                    self.permits[slot] = None;
                    return;
                }
                let id = self.next_conn;
                self.next_conn += 1;
                let config = Arc::new(ConnConfig {
                    generation: self.generation.load(Ordering::Relaxed),
                    current_generation: self.generation.clone(),
                    template: self.template.clone(),
                    max_streams_cap: self.settings.max_streams,
                    keepalive: self.settings.keepalive,
                    ping_timeout: self.settings.ping_timeout,
                    events: self.events_tx.clone(),
                    capacity: self.capacity.clone(),
                    rejected: self.rejected.clone(),
                });
                let live = conn::spawn(id, slot, connected, config);
                tracing::debug!(
                    conn = id,
                    slot,
                    max_streams = live.shared.max_streams.load(Ordering::Relaxed),
                    "APNs connection open"
                );
                self.slots[slot] = Some(live);
                self.settings.plan.on_connected(slot, now);
                self.last_connect_error.set(None);
            }
            Event::ConnectFailed {
                slot,
                attempt,
                error,
            } => {
                if self.attempts[slot] != attempt {
                    return;
                }
                self.permits[slot] = None;
                let certificate = error.certificate_alert();
                if certificate.is_some() {
                    tracing::error!(%error, "APNs refused the push certificate; pushes fail fast and reconnects slow down until it is replaced");
                } else {
                    tracing::warn!(%error, slot, "APNs connection attempt failed");
                }
                self.last_connect_error
                    .set(Some(Arc::from(error.to_string())));
                self.settings
                    .plan
                    .on_connect_failed(slot, now, certificate, fastrand::f64());
                self.sync_rejected();
            }
            Event::GoingAway { id, cause, served } => {
                if let Some(slot) = self.slot_of(id) {
                    self.retire(slot, None);
                    self.settings
                        .plan
                        .on_closed(slot, now, cause, served, fastrand::f64());
                    self.sync_rejected();
                }
            }
            Event::Closed {
                id,
                cause,
                served,
                leftover,
            } => {
                if let Some(slot) = self.slot_of(id) {
                    self.slots[slot] = None;
                    self.permits[slot] = None;
                    if cause != CloseCause::Retired {
                        tracing::info!(conn = id, ?cause, "APNs connection closed");
                    }
                    self.settings
                        .plan
                        .on_closed(slot, now, cause, served, fastrand::f64());
                    self.sync_rejected();
                }
                self.draining.retain(|l| l.id != id);
                for (job, reason, unprocessed) in leftover {
                    self.retry(job, reason, unprocessed, now);
                }
            }
            Event::Retry {
                job,
                reason,
                unprocessed,
            } => self.retry(job, reason, unprocessed, now),
            Event::CertificateRejected { id, reason } => {
                // A connection already replaced (certificate swap) speaks for the old
                // certificate, not the current one.
                if self.slot_of(id).is_none() {
                    return;
                }
                let strike = self.settings.plan.on_certificate_refusal(
                    id,
                    reason.clone(),
                    now,
                    fastrand::f64(),
                );
                if strike {
                    tracing::error!(%reason, "APNs answered 403: the push certificate is refused; pushes fail fast until it is replaced or a probe succeeds");
                }
                self.sync_rejected();
            }
            Event::Recovered { sent_at } => {
                if self.settings.plan.rejection().is_some() {
                    self.settings.plan.on_delivered(sent_at);
                    if self.settings.plan.rejection().is_none() {
                        tracing::info!("APNs accepts the push certificate again");
                    }
                    self.sync_rejected();
                }
            }
        }
    }

    fn sync_rejected(&self) {
        let rejected = self.settings.plan.rejection().is_some();
        self.rejected.store(rejected, Ordering::Relaxed);
        self.gauges.rejected.set(if rejected { 1.0 } else { 0.0 });
    }

    fn retry(&mut self, mut job: Job, reason: Cause, unprocessed: bool, now: Instant) {
        if job.abandoned() {
            return;
        }
        let topic = self.settings.certificate.topic().to_owned();
        metrics::counter!(m::RETRIES, "reason" => reason.label(), "topic" => topic).increment(1);
        let resend = self.settings.retry.resend(
            job.attempts,
            unprocessed,
            now,
            job.deadline,
            fastrand::f64(),
            self.shutting_down.is_some(),
        );
        job.last = Some(reason.clone());
        match resend {
            Resend::Now => self.waiting.push_front(job),
            Resend::At(at) => {
                self.delayed_seq += 1;
                self.delayed.push(Reverse(Delayed {
                    at,
                    seq: self.delayed_seq,
                    job,
                }));
            }
            Resend::Shutdown => job.finish(Err(PushError::Shutdown)),
            Resend::Exhausted => {
                let attempts = job.attempts;
                job.finish(Err(PushError::RetriesExhausted {
                    last: reason,
                    attempts,
                }))
            }
        }
    }

    fn on_control(&mut self, control: Control) {
        match control {
            Control::ReplaceCertificate {
                tls,
                template,
                certificate,
            } => {
                tracing::info!("push certificate replaced; new connections use it, old ones drain");
                if certificate.topic() != self.settings.certificate.topic() {
                    self.gauges.clear();
                    self.gauges = m::TopicGauges::new(certificate.topic());
                }
                self.settings.certificate = certificate;
                self.update_gauges();
                self.tls = tls;
                self.template = template;
                self.generation.fetch_add(1, Ordering::Relaxed);
                for slot in 0..self.slots.len() {
                    // Dropping the job sender retires the connection: it finishes its streams.
                    self.retire(slot, None);
                    // Attempts under way with the old certificate are discarded on arrival
                    // (their permits stay taken until then: the budget counts them).
                    self.attempts[slot] = 0;
                }
                self.settings.plan.on_certificate_replaced();
                self.sync_rejected();
            }
            Control::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Control::Shutdown { done, error } => {
                self.intake.close();
                while let Ok(job) = self.intake.try_recv() {
                    job.finish(Err(error.clone()));
                }
                for job in self.waiting.drain(..) {
                    job.finish(Err(error.clone()));
                }
                for Reverse(d) in self.delayed.drain() {
                    d.job.finish(Err(error.clone()));
                }
                for slot in 0..self.slots.len() {
                    self.retire(slot, None);
                    self.attempts[slot] = 0;
                }
                self.permit_wait = None;
                self.spare = None;
                self.shutting_down = Some(done);
            }
        }
    }

    fn status(&self) -> PoolStatus {
        let open: Vec<&Live> = self.slots.iter().flatten().collect();
        PoolStatus {
            open_connections: open.len(),
            draining_connections: self.draining.len(),
            in_flight: open
                .iter()
                .map(|l| &l.shared)
                .chain(self.draining.iter().map(|d| &d.shared))
                .map(|s| s.in_flight.load(Ordering::Relaxed))
                .sum(),
            waiting: self.waiting.len() + self.delayed.len(),
            certificate_rejected: self.settings.plan.rejection().map(|r| r.reason.clone()),
            last_connect_error: self.last_connect_error.get().map(|e| e.to_string()),
            reconnects: self.reconnects,
        }
    }

    fn update_gauges(&self) {
        let s = self.status();
        self.gauges.connections.set(s.open_connections as f64);
        self.gauges.in_flight.set(s.in_flight as f64);
        let queued = self.intake.len() + s.waiting;
        self.gauges.queued.set(queued as f64);
        let days_left = self
            .settings
            .certificate
            .info()
            .days_left(time::OffsetDateTime::now_utc());
        self.gauges.days_left.set(days_left as f64);
        let budget = &self.settings.budget;
        metrics::gauge!(m::CONNECTIONS_TOTAL).set(budget.in_use() as f64);
        metrics::gauge!(m::CONNECTIONS_BUDGET).set(budget.max() as f64);
    }

    fn slot_of(&self, id: ConnId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|l| l.id == id))
    }

    fn finished_draining(&self) -> bool {
        self.draining.is_empty() && self.slots.iter().all(Option::is_none)
    }

    fn all_idle(&self) -> bool {
        self.waiting.is_empty()
            && self.delayed.is_empty()
            && self
                .slots
                .iter()
                .flatten()
                .map(|l| &l.shared)
                .chain(self.draining.iter().map(|d| &d.shared))
                .all(|s| s.in_flight.load(Ordering::Relaxed) == 0)
    }
}
