//! The pool's connection lifecycle as a plain state machine: when each connection slot
//! (re)connects, how long it backs off, and when the pool considers its certificate rejected.
//! Driven by `on_*` inputs with the time passed in; it never touches a socket.

use std::time::Duration;

use tokio::time::Instant;

use crate::cause::Cause;
use crate::cause::CertificateAlert;
use crate::cause::Reason;
use crate::pool::backoff::Backoff;

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseCause {
    /// The server sent GOAWAY; in-flight streams were allowed to finish.
    GoAway,
    /// The connection failed (I/O error, reset, protocol error).
    Lost,
    /// A keepalive PING went unanswered.
    PingTimeout,
    /// The server refused the certificate with a TLS alert.
    CertificateRejected(CertificateAlert),
    /// Closed by the pool (certificate replaced, shutdown).
    Retired,
}

/// Where one slot is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// A connection attempt should start now.
    Due,
    /// A connection attempt is under way.
    Connecting,
    /// Open since this instant.
    Open(Instant),
    /// Backing off until this instant.
    Waiting(Instant),
    /// Not wanted: the pool has no work, or no connection to spare in the budget shared
    /// with other topics. It connects again once [`Plan::wake_one`] is called.
    Idle,
}

#[derive(Debug, Clone)]
struct Slot {
    phase: Phase,
    failures: u32,
    /// When this slot last reconnected without waiting.
    last_immediate: Option<Instant>,
}

/// A connection that lived at least this long before ending resets its slot's failure count.
const HEALTHY_LIFETIME: Duration = Duration::from_secs(10);

/// A slot reconnects without waiting at most once in this interval, however useful its
/// connections were: a server that answers once and then sends GOAWAY gets no storm.
const IMMEDIATE_RECONNECT_SPACING: Duration = Duration::from_secs(1);

/// 403 answers naming the certificate count towards a verdict for this long.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(60);

/// The pool plan: one entry per connection slot.
#[derive(Debug, Clone)]
pub struct Plan {
    slots: Vec<Slot>,
    reconnect: Backoff,
    rejected_backoff: Backoff,
    rejected: Option<Rejection>,
    /// Recent 403 certificate refusals: (connection, when), newest last, within
    /// [`REFUSAL_WINDOW`].
    refusals: Vec<(u64, Instant)>,
}

/// The certificate-rejected state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// What refused it: APNs's 403 reason (`BadCertificate`, …) or a TLS alert.
    pub reason: Cause,
    /// When the pool entered the state.
    pub since: Instant,
    /// Until when pushes fail fast without being sent.
    pub fail_fast_until: Instant,
    strikes: u32,
}

impl Plan {
    /// A plan for `connections` slots, all due to connect.
    pub fn new(connections: usize, reconnect: Backoff, rejected_backoff: Backoff) -> Self {
        Plan {
            slots: vec![
                Slot {
                    phase: Phase::Due,
                    failures: 0,
                    last_immediate: None,
                };
                connections.max(1)
            ],
            reconnect,
            rejected_backoff,
            rejected: None,
            refusals: Vec::new(),
        }
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Never true: a plan has at least one slot.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// A slot's phase.
    pub fn phase(&self, slot: usize) -> Phase {
        self.slots[slot].phase
    }

    /// Slots whose connection attempt should start at `now`; they move to `Connecting`.
    pub fn take_due(&mut self, now: Instant) -> Vec<usize> {
        let mut due = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            let ready = match s.phase {
                Phase::Due => true,
                Phase::Waiting(until) => until <= now,
                _ => false,
            };
            if ready {
                s.phase = Phase::Connecting;
                due.push(i);
            }
        }
        due
    }

    /// Parks `slot` ([`Phase::Idle`]): its connection was closed for idleness or to make
    /// room for another topic, or it could not start for lack of room. Its failure count is
    /// kept, so a parked slot that failed before still backs off when woken.
    pub fn park(&mut self, slot: usize) {
        self.slots[slot].phase = Phase::Idle;
    }

    /// The first parked slot becomes due: the pool has work and no connection, or all of its
    /// connections are busy. A pool opens its connections one at a time, as its load asks
    /// for them, not all at once: with many topics sharing one budget, a topic's idle extra
    /// connections would be another topic's first.
    pub fn wake_one(&mut self) {
        if let Some(s) = self.slots.iter_mut().find(|s| s.phase == Phase::Idle) {
            s.phase = Phase::Due;
        }
    }

    /// Whether every slot is open or parked: none is due, connecting or backing off.
    pub fn settled(&self) -> bool {
        self.slots
            .iter()
            .all(|s| matches!(s.phase, Phase::Open(_) | Phase::Idle))
    }

    /// Whether any slot is parked.
    pub fn any_parked(&self) -> bool {
        self.slots.iter().any(|s| s.phase == Phase::Idle)
    }

    /// Whether every slot is parked.
    pub fn all_parked(&self) -> bool {
        self.slots.iter().all(|s| s.phase == Phase::Idle)
    }

    /// The earliest instant at which [`Plan::take_due`] will return something, if any slot waits.
    pub fn next_wake(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|s| match s.phase {
                Phase::Waiting(t) => Some(t),
                _ => None,
            })
            .min()
    }

    /// The connection attempt for `slot` succeeded.
    pub fn on_connected(&mut self, slot: usize, now: Instant) {
        self.slots[slot].phase = Phase::Open(now);
    }

    /// The connection attempt for `slot` failed. `certificate` is set when the TLS layer
    /// refused the certificate. `jitter` is uniform in `[0, 1)`.
    pub fn on_connect_failed(
        &mut self,
        slot: usize,
        now: Instant,
        certificate: Option<CertificateAlert>,
        jitter: f64,
    ) {
        if let Some(alert) = certificate {
            let _ = self.on_certificate_rejected(alert.into(), now, jitter);
        }
        let s = &mut self.slots[slot];
        s.failures = s.failures.saturating_add(1);
        let backoff = if self.rejected.is_some() {
            self.rejected_backoff
        } else {
            self.reconnect
        };
        s.phase = Phase::Waiting(now + backoff.delay(s.failures, jitter));
    }

    /// The open connection of `slot` ended. A connection that was useful — it answered at
    /// least one push (`served`), or lived a healthy while — reconnects at once, whatever
    /// ended it (servers rotate connections with GOAWAY routinely), but at most once per
    /// second per slot; anything else backs off exponentially.
    pub fn on_closed(
        &mut self,
        slot: usize,
        now: Instant,
        cause: CloseCause,
        served: bool,
        jitter: f64,
    ) {
        if let CloseCause::CertificateRejected(alert) = cause {
            let _ = self.on_certificate_rejected(alert.into(), now, jitter);
        }
        let rejected = self.rejected.is_some();
        let s = &mut self.slots[slot];
        let lived = match s.phase {
            Phase::Open(since) => now.saturating_duration_since(since),
            _ => Duration::ZERO,
        };
        if lived >= HEALTHY_LIFETIME {
            s.failures = 0;
        }
        let useful = served || lived >= HEALTHY_LIFETIME;
        let spaced = s
            .last_immediate
            .is_none_or(|t| now.saturating_duration_since(t) >= IMMEDIATE_RECONNECT_SPACING);
        if useful && spaced && !rejected {
            s.last_immediate = Some(now);
            s.phase = Phase::Due;
            return;
        }
        s.failures = s.failures.saturating_add(1);
        let backoff = if rejected {
            self.rejected_backoff
        } else {
            self.reconnect
        };
        s.phase = Phase::Waiting(now + backoff.delay(s.failures, jitter));
    }

    /// APNs or TLS refused the certificate: enter (or stay in) the certificate-rejected state.
    /// Pushes fail fast for a while; a refusal seen after that window (a failed probe) adds a
    /// strike and lengthens the next window, while the other refusals of the same burst do
    /// not. Returns whether this was a new strike (worth a log line).
    pub fn on_certificate_rejected(&mut self, reason: Cause, now: Instant, jitter: f64) -> bool {
        if let Some(r) = &self.rejected {
            if now < r.fail_fast_until {
                return false;
            }
        }
        let strikes = self.rejected.as_ref().map_or(0, |r| r.strikes) + 1;
        let since = self.rejected.as_ref().map_or(now, |r| r.since);
        self.rejected = Some(Rejection {
            reason,
            since,
            fail_fast_until: now + self.rejected_backoff.delay(strikes, jitter),
            strikes,
        });
        true
    }

    /// APNs answered one push with a 403 whose reason names the certificate (or whose body
    /// does not parse) on connection `conn`. One such answer is not a verdict on the
    /// certificate — a proxy, a glitch or one bad frontend can send it — so it fails that push
    /// only; the pool enters the certificate-rejected state once answers like it came from
    /// more than one connection within [`REFUSAL_WINDOW`] (or at once while already in it: a
    /// failed probe). A TLS alert is a verdict by itself ([`Plan::on_certificate_rejected`]).
    /// Returns whether this made a new strike.
    pub fn on_certificate_refusal(
        &mut self,
        conn: u64,
        reason: Reason,
        now: Instant,
        jitter: f64,
    ) -> bool {
        if self.rejected.is_some() {
            return self.on_certificate_rejected(reason.into(), now, jitter);
        }
        self.refusals
            .retain(|(c, at)| *c != conn && now.saturating_duration_since(*at) < REFUSAL_WINDOW);
        self.refusals.push((conn, now));
        if self.refusals.len() < 2 {
            return false;
        }
        self.refusals.clear();
        self.on_certificate_rejected(reason.into(), now, jitter)
    }

    /// The connection whose lone certificate refusal awaits a second opinion: new pushes go
    /// to another connection while one has room, so that a certificate APNs really refuses
    /// is recognised at the next push even when one connection carries all the load.
    pub fn suspect(&self, now: Instant) -> Option<u64> {
        self.refusals
            .last()
            .filter(|(_, at)| now.saturating_duration_since(*at) < REFUSAL_WINDOW)
            .map(|(conn, _)| *conn)
    }

    /// A push sent at `sent_at` was delivered. If it was sent after the certificate was
    /// refused, APNs accepts it again: leave the rejected state and reconnect the slots that
    /// were backing off because of it.
    pub fn on_delivered(&mut self, sent_at: Instant) {
        let Some(r) = &self.rejected else {
            return;
        };
        if sent_at < r.since {
            return;
        }
        self.rejected = None;
        for s in &mut self.slots {
            if matches!(s.phase, Phase::Waiting(_)) {
                s.phase = Phase::Due;
                s.failures = 0;
            }
        }
    }

    /// A new certificate was installed: forget the rejection and failure counts; every slot
    /// that is not parked reconnects at once (the caller drains the old connections).
    pub fn on_certificate_replaced(&mut self) {
        self.rejected = None;
        self.refusals.clear();
        for s in &mut self.slots {
            s.failures = 0;
            if s.phase != Phase::Idle {
                s.phase = Phase::Due;
            }
        }
    }

    /// The certificate-rejected state, if the pool is in it.
    pub fn rejection(&self) -> Option<&Rejection> {
        self.rejected.as_ref()
    }

    /// Whether a push arriving at `now` must fail fast with the certificate rejection.
    pub fn fail_fast(&self, now: Instant) -> Option<&Cause> {
        self.rejected
            .as_ref()
            .filter(|r| now < r.fail_fast_until)
            .map(|r| &r.reason)
    }
}

/// What to do with a push that met a transient failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send again at this instant (now, for a stream the server never processed).
    At(Instant),
    /// The deadline or the attempt budget does not allow another try.
    GiveUp,
}

/// What becomes of a push handed back after a transient failure, all things considered: the
/// retry budget, the deadline, and whether the pool is shutting down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Send it again as soon as a connection has room.
    Now,
    /// Hold it until this instant, then send it again.
    At(Instant),
    /// End it with [`PushError::Shutdown`](crate::PushError::Shutdown): the pool is shutting
    /// down and sends nothing new.
    Shutdown,
    /// End it with [`PushError::RetriesExhausted`](crate::PushError::RetriesExhausted): no
    /// attempt or no time is left.
    Exhausted,
}

/// Retry budget for one push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Backoff between attempts after a 429/500/503.
    pub backoff: Backoff,
    /// Most attempts in all (first send included).
    pub max_attempts: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            backoff: Backoff::PUSH_RETRY,
            max_attempts: 8,
        }
    }
}

impl RetryPolicy {
    /// After `attempts` sends, the last failing with a transient error: when to resend.
    /// `unprocessed` marks a stream the server never looked at (REFUSED_STREAM, above a
    /// GOAWAY's last stream id, or never sent): it is resent at once and does not count
    /// against the budget's backoff.
    pub fn decide(
        &self,
        attempts: u32,
        unprocessed: bool,
        now: Instant,
        deadline: Instant,
        jitter: f64,
    ) -> RetryDecision {
        if attempts >= self.max_attempts || now >= deadline {
            return RetryDecision::GiveUp;
        }
        let at = if unprocessed {
            now
        } else {
            now + self.backoff.delay(attempts, jitter)
        };
        if at >= deadline {
            RetryDecision::GiveUp
        } else {
            RetryDecision::At(at)
        }
    }

    /// The dispatcher's decision for a push that met a transient failure after `attempts`
    /// sends (see [`RetryPolicy::decide`] for `unprocessed` and `jitter`). While the pool is
    /// `shutting_down` nothing is resent: the push ends as [`Resend::Shutdown`], whatever its
    /// budget.
    pub fn resend(
        &self,
        attempts: u32,
        unprocessed: bool,
        now: Instant,
        deadline: Instant,
        jitter: f64,
        shutting_down: bool,
    ) -> Resend {
        if shutting_down {
            return Resend::Shutdown;
        }
        match self.decide(attempts, unprocessed, now, deadline, jitter) {
            RetryDecision::At(at) if at <= now => Resend::Now,
            RetryDecision::At(at) => Resend::At(at),
            RetryDecision::GiveUp => Resend::Exhausted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(n: usize) -> Plan {
        Plan::new(n, Backoff::RECONNECT, Backoff::CERTIFICATE_REJECTED)
    }

    #[test]
    fn all_slots_connect_at_start() {
        let mut p = plan(3);
        let now = Instant::now();
        assert_eq!(p.take_due(now), vec![0, 1, 2]);
        assert!(p.take_due(now).is_empty());
        assert_eq!(p.phase(1), Phase::Connecting);
        assert_eq!(p.next_wake(), None);
    }

    #[test]
    fn failed_connects_back_off_exponentially_up_to_a_minute() {
        let mut p = plan(1);
        let t0 = Instant::now();
        p.take_due(t0);
        let mut waits = Vec::new();
        let mut now = t0;
        for _ in 0..10 {
            p.on_connect_failed(0, now, None, 1.0);
            let wake = p.next_wake().unwrap();
            waits.push(wake - now);
            assert!(p.take_due(wake - Duration::from_millis(1)).is_empty());
            assert_eq!(p.take_due(wake), vec![0]);
            now = wake;
        }
        let secs: Vec<u64> = waits.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, vec![1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
    }

    #[test]
    fn healthy_connection_reconnects_at_once_then_backs_off_if_it_keeps_dying() {
        let mut p = plan(1);
        let t0 = Instant::now();
        p.take_due(t0);
        p.on_connected(0, t0);
        let t1 = t0 + Duration::from_secs(3600);
        p.on_closed(0, t1, CloseCause::GoAway, false, 0.5);
        assert_eq!(p.phase(0), Phase::Due, "first reconnect is immediate");
        assert_eq!(p.take_due(t1), vec![0]);
        p.on_connected(0, t1);
        // Dies young without doing anything: backs off.
        p.on_closed(
            0,
            t1 + Duration::from_millis(10),
            CloseCause::Lost,
            false,
            1.0,
        );
        assert!(matches!(p.phase(0), Phase::Waiting(_)));
        let wait = p.next_wake().unwrap() - (t1 + Duration::from_millis(10));
        assert_eq!(wait, Duration::from_secs(1));
    }

    #[test]
    fn goaway_after_serving_reconnects_at_once_but_never_storms() {
        let mut p = plan(1);
        let t0 = Instant::now();
        p.take_due(t0);
        p.on_connected(0, t0);
        let t1 = t0 + Duration::from_millis(30);
        p.on_closed(0, t1, CloseCause::GoAway, true, 1.0);
        assert_eq!(
            p.phase(0),
            Phase::Due,
            "a useful connection is replaced at once"
        );
        p.take_due(t1);
        p.on_connected(0, t1);
        // Answered once, then GOAWAY again 30 ms later: this time it waits.
        let t2 = t1 + Duration::from_millis(30);
        p.on_closed(0, t2, CloseCause::GoAway, true, 1.0);
        assert_eq!(p.phase(0), Phase::Waiting(t2 + Duration::from_secs(1)));
        // A second later it may reconnect at once again.
        p.take_due(t2 + Duration::from_secs(1));
        p.on_connected(0, t2 + Duration::from_secs(1));
        let t3 = t2 + Duration::from_millis(1100);
        p.on_closed(0, t3, CloseCause::GoAway, true, 1.0);
        assert_eq!(p.phase(0), Phase::Due);
    }

    #[test]
    fn one_403_is_not_a_verdict_two_connections_are() {
        let t0 = Instant::now();
        let mut p = plan(3);
        assert_eq!(p.suspect(t0), None);
        assert!(!p.on_certificate_refusal(1, Reason::Forbidden, t0, 0.5));
        assert!(p.fail_fast(t0).is_none(), "a lone 403 fails its push only");
        assert_eq!(
            p.suspect(t0),
            Some(1),
            "the next pushes ask another connection"
        );
        assert_eq!(p.suspect(t0 + REFUSAL_WINDOW), None);
        // The same connection again: still one connection's word.
        assert!(!p.on_certificate_refusal(
            1,
            Reason::BadCertificate,
            t0 + Duration::from_secs(1),
            0.5
        ));
        assert!(p.rejection().is_none());
        // Another connection, long after: the first has expired from the window.
        let late = t0 + REFUSAL_WINDOW + Duration::from_secs(2);
        assert!(!p.on_certificate_refusal(2, Reason::BadCertificate, late, 0.5));
        assert!(p.rejection().is_none());
        // A third connection within the window of the second: a verdict.
        let t1 = late + Duration::from_secs(1);
        assert!(p.on_certificate_refusal(3, Reason::BadCertificate, t1, 0.5));
        assert_eq!(p.fail_fast(t1), Some(&Reason::BadCertificate.into()));
        // While rejected, a probe's refusal counts at once (after the window, a new strike).
        let until = p.rejection().unwrap().fail_fast_until;
        assert!(p.on_certificate_refusal(1, Reason::BadCertificate, until, 0.5));
        // A new certificate forgets the partial count too.
        p.on_certificate_replaced();
        assert!(!p.on_certificate_refusal(1, Reason::BadCertificate, until, 0.5));
        p.on_certificate_replaced();
        assert!(!p.on_certificate_refusal(2, Reason::BadCertificate, until, 0.5));
        assert!(p.rejection().is_none());
    }

    #[test]
    fn certificate_rejection_fails_fast_and_slows_reconnects() {
        let mut p = plan(2);
        let t0 = Instant::now();
        p.take_due(t0);
        p.on_connect_failed(0, t0, Some(CertificateAlert::CertificateExpired), 1.0);
        let r = p.rejection().unwrap();
        assert_eq!(r.reason, Cause::from(CertificateAlert::CertificateExpired));
        assert!(p.fail_fast(t0).is_some());
        assert!(p.next_wake().unwrap() - t0 >= Duration::from_secs(30));
        // Second slot refused in the same burst: the state persists, no new strike.
        let until = p.rejection().unwrap().fail_fast_until;
        p.on_connect_failed(1, t0, Some(CertificateAlert::CertificateExpired), 1.0);
        assert_eq!(p.rejection().unwrap().fail_fast_until, until);
        assert_eq!(until - t0, Duration::from_secs(30));
        assert!(
            p.fail_fast(until).is_none(),
            "after the window a push probes"
        );
        // The probe is refused too: a new strike doubles the window.
        assert!(p.on_certificate_rejected(Reason::BadCertificate.into(), until, 1.0));
        let next = p.rejection().unwrap().fail_fast_until;
        assert_eq!(next - until, Duration::from_secs(60));
        // A new certificate clears everything.
        p.on_certificate_replaced();
        assert!(p.rejection().is_none());
        assert_eq!(p.take_due(t0), vec![0, 1]);
    }

    #[test]
    fn only_a_push_sent_after_the_rejection_clears_it() {
        let mut p = plan(2);
        let t0 = Instant::now();
        p.take_due(t0);
        p.on_connect_failed(0, t0, Some(CertificateAlert::BadCertificate), 0.0);
        assert!(p.fail_fast(t0).is_some());
        p.on_delivered(t0 - Duration::from_millis(1));
        assert!(
            p.rejection().is_some(),
            "an answer to an older push proves nothing"
        );
        p.on_delivered(t0 + Duration::from_secs(31));
        assert!(p.fail_fast(t0).is_none());
        assert_eq!(
            p.phase(0),
            Phase::Due,
            "slots backing off reconnect at once"
        );
    }

    #[test]
    fn resends_end_in_shutdown_while_the_pool_shuts_down() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        let deadline = now + Duration::from_secs(30);
        assert_eq!(
            policy.resend(1, true, now, deadline, 0.5, false),
            Resend::Now,
            "a stream the server never processed goes back in line at once"
        );
        assert_eq!(
            policy.resend(1, false, now, deadline, 1.0, false),
            Resend::At(now + Duration::from_millis(100))
        );
        assert_eq!(
            policy.resend(8, false, now, deadline, 0.0, false),
            Resend::Exhausted
        );
        assert_eq!(
            policy.resend(1, false, deadline, deadline, 0.0, false),
            Resend::Exhausted
        );
        // Shutting down: nothing is resent, whatever the budget says.
        for (attempts, unprocessed, at) in [(1, true, now), (1, false, now), (8, false, now)] {
            assert_eq!(
                policy.resend(attempts, unprocessed, at, deadline, 0.5, true),
                Resend::Shutdown
            );
        }
        assert_eq!(
            policy.resend(1, false, deadline, deadline, 0.5, true),
            Resend::Shutdown,
            "shutdown takes precedence over an exhausted budget"
        );
    }

    #[test]
    fn retry_decisions_respect_budget_and_deadline() {
        let policy = RetryPolicy::default();
        let now = Instant::now();
        let deadline = now + Duration::from_secs(30);
        assert_eq!(
            policy.decide(1, true, now, deadline, 0.5),
            RetryDecision::At(now)
        );
        assert_eq!(
            policy.decide(1, false, now, deadline, 1.0),
            RetryDecision::At(now + Duration::from_millis(100))
        );
        assert_eq!(
            policy.decide(8, false, now, deadline, 0.0),
            RetryDecision::GiveUp
        );
        let close = now + Duration::from_millis(50);
        assert_eq!(
            policy.decide(1, false, now, close, 1.0),
            RetryDecision::GiveUp,
            "a backoff that ends past the deadline is not worth waiting for"
        );
        assert_eq!(
            policy.decide(1, true, deadline, deadline, 0.0),
            RetryDecision::GiveUp
        );
    }

    #[test]
    fn parked_slots_wake_one_at_a_time() {
        let now = Instant::now();
        let mut p = plan(3);
        for slot in 0..3 {
            p.park(slot);
        }
        assert!(p.all_parked() && p.settled());
        p.wake_one();
        assert!(!p.settled(), "one is due");
        assert_eq!(p.take_due(now), vec![0]);
        p.on_connected(0, now);
        assert!(p.settled() && p.any_parked());
        p.wake_one();
        assert_eq!(p.take_due(now), vec![1]);
    }
}
