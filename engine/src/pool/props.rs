//! Property tests of the pool's plan and backoff: random configurations and random event
//! sequences, with time passed in (a virtual clock that only moves forward).
//!
//! Every property runs [`CASES`] cases (proptest's default, stated here so that a change of
//! default does not change these tests silently).

use std::time::Duration;

use proptest::prelude::*;
use tokio::time::Instant;

use super::backoff::Backoff;
use super::plan::{CloseCause, Phase, Plan, Resend, RetryDecision, RetryPolicy};
use crate::cause::{CertificateAlert, Reason};

/// Cases per property.
const CASES: u32 = 256;

/// A backoff as [`ClientBuilder`](crate::ClientBuilder) accepts it: base more than 0, max at
/// least base, both at most a day.
fn backoff() -> impl Strategy<Value = Backoff> {
    const DAY_MS: u64 = 86_400_000;
    (1..=DAY_MS)
        .prop_flat_map(|base| (Just(base), base..=DAY_MS))
        .prop_map(|(base, max)| Backoff {
            base: Duration::from_millis(base),
            max: Duration::from_millis(max),
        })
}

/// Jitter as the pool draws it (`[0, 1)`), and values it never draws: the delay must stay
/// within bounds even then.
fn jitter() -> impl Strategy<Value = f64> {
    prop_oneof![
        8 => 0.0..1.0f64,
        1 => Just(1.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        1 => any::<f64>(),
    ]
}

fn alert() -> impl Strategy<Value = CertificateAlert> {
    proptest::sample::select(CertificateAlert::ALL)
}

fn close_cause() -> impl Strategy<Value = CloseCause> {
    prop_oneof![
        Just(CloseCause::GoAway),
        Just(CloseCause::Lost),
        Just(CloseCause::PingTimeout),
        Just(CloseCause::Retired),
        alert().prop_map(CloseCause::CertificateRejected),
    ]
}

/// One input to the plan, as the dispatcher gives them.
#[derive(Debug, Clone)]
enum Event {
    /// The clock moves on.
    Advance(Duration),
    /// The dispatcher starts the attempts that are due.
    TakeDue,
    /// A slot's attempt succeeded (applied to a slot that is connecting).
    Connected(usize),
    /// A slot's attempt failed, maybe with a TLS alert (applied to a slot that is connecting).
    ConnectFailed(usize, Option<CertificateAlert>, f64),
    /// A slot's connection ended (applied to an open slot).
    Closed(usize, CloseCause, bool, f64),
    /// APNs answered 403 for the certificate on a connection.
    Refusal(u64, f64),
    /// A verdict on the certificate by itself.
    Rejected(f64),
    /// A push sent this long ago was delivered.
    Delivered(Duration),
    /// A new certificate was installed.
    Replaced,
}

fn event() -> impl Strategy<Value = Event> {
    let slot = 0..4usize;
    let ms = |max: u64| (0..=max).prop_map(Duration::from_millis);
    prop_oneof![
        // Mostly small steps, sometimes long ones (past any backoff's maximum).
        4 => ms(5_000).prop_map(Event::Advance),
        1 => ms(3 * 86_400_000).prop_map(Event::Advance),
        4 => Just(Event::TakeDue),
        3 => slot.clone().prop_map(Event::Connected),
        3 => (slot.clone(), proptest::option::of(alert()), jitter())
            .prop_map(|(s, a, j)| Event::ConnectFailed(s, a, j)),
        3 => (slot, close_cause(), any::<bool>(), jitter())
            .prop_map(|(s, c, served, j)| Event::Closed(s, c, served, j)),
        2 => (1..5u64, jitter()).prop_map(|(conn, j)| Event::Refusal(conn, j)),
        1 => jitter().prop_map(Event::Rejected),
        1 => ms(120_000).prop_map(Event::Delivered),
        1 => Just(Event::Replaced),
    ]
}

/// Applies `event` at `*now` (moving `*now` for [`Event::Advance`]). Slot events are applied
/// only in the phase in which the dispatcher can send them.
fn apply(plan: &mut Plan, now: &mut Instant, event: Event) {
    let slot_of = |plan: &Plan, s: usize| s % plan.len();
    match event {
        Event::Advance(d) => *now += d,
        Event::TakeDue => {
            plan.take_due(*now);
        }
        Event::Connected(s) => {
            let s = slot_of(plan, s);
            if plan.phase(s) == Phase::Connecting {
                plan.on_connected(s, *now);
            }
        }
        Event::ConnectFailed(s, alert, jitter) => {
            let s = slot_of(plan, s);
            if plan.phase(s) == Phase::Connecting {
                plan.on_connect_failed(s, *now, alert, jitter);
            }
        }
        Event::Closed(s, cause, served, jitter) => {
            let s = slot_of(plan, s);
            if matches!(plan.phase(s), Phase::Open(_)) {
                plan.on_closed(s, *now, cause, served, jitter);
            }
        }
        Event::Refusal(conn, jitter) => {
            plan.on_certificate_refusal(conn, Reason::BadCertificate, *now, jitter);
        }
        Event::Rejected(jitter) => {
            plan.on_certificate_rejected(Reason::Forbidden.into(), *now, jitter);
        }
        Event::Delivered(ago) => {
            if let Some(sent_at) = now.checked_sub(ago) {
                plan.on_delivered(sent_at);
            }
        }
        Event::Replaced => plan.on_certificate_replaced(),
    }
}

/// What must hold of `plan` at `now`, whatever came before: no wait and no fail-fast window
/// reaches past the longest backoff configured, and once that has passed, the plan lets every
/// slot that is not connecting or open connect again and no push fails fast.
fn check(plan: &Plan, now: Instant, longest: Duration) -> Result<(), TestCaseError> {
    let horizon = now + longest;
    for s in 0..plan.len() {
        if let Phase::Waiting(until) = plan.phase(s) {
            prop_assert!(until <= horizon, "slot {s} waits past the longest backoff");
        }
    }
    if let Some(r) = plan.rejection() {
        prop_assert!(r.since <= now);
        prop_assert!(
            r.fail_fast_until <= horizon,
            "the fail-fast window ends within the rejected backoff's maximum"
        );
    }
    if let Some(wake) = plan.next_wake() {
        prop_assert!(wake <= horizon);
    }
    // After the hold time: a push is sent (as a probe) rather than failed, and every slot
    // that is not connecting or open may connect.
    prop_assert!(plan.fail_fast(horizon).is_none());
    let idle: Vec<usize> = (0..plan.len())
        .filter(|&s| matches!(plan.phase(s), Phase::Due | Phase::Waiting(_)))
        .collect();
    let mut later = plan.clone();
    prop_assert_eq!(later.take_due(horizon), idle);
    prop_assert_eq!(later.next_wake(), None);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// The `n`th failure waits between half the base and the maximum, never more than the
    /// full (un-jittered) exponential step, and never less as failures add up.
    #[test]
    fn backoff_delay_stays_within_its_bounds(
        b in backoff(),
        failures in prop_oneof![0..70u32, any::<u32>()],
        jitter in jitter(),
    ) {
        let d = b.delay(failures, jitter);
        if failures == 0 {
            prop_assert_eq!(d, Duration::ZERO);
            return Ok(());
        }
        prop_assert!(d <= b.max, "{d:?} > max {:?}", b.max);
        prop_assert!(d >= b.base / 2, "{d:?} < half the base {:?}", b.base);
        let step = b.base.saturating_mul(1 << (failures - 1).min(30)).min(b.max);
        prop_assert!(d <= step && d >= step / 2, "{d:?} outside [{:?}, {step:?}]", step / 2);
        if jitter.is_finite() {
            prop_assert!(b.delay(failures.saturating_add(1), jitter) >= d);
        }
    }

    /// A push's resend waits no longer than its backoff's maximum and is never scheduled at
    /// or past its deadline.
    #[test]
    fn retry_waits_within_the_backoff_and_the_deadline(
        b in backoff(),
        max_attempts in 1..20u32,
        attempts in 0..25u32,
        unprocessed in any::<bool>(),
        deadline_ms in 0..200_000u64,
        jitter in jitter(),
        shutting_down in any::<bool>(),
    ) {
        let policy = RetryPolicy { backoff: b, max_attempts };
        let now = Instant::now();
        let deadline = now + Duration::from_millis(deadline_ms);
        match policy.decide(attempts, unprocessed, now, deadline, jitter) {
            RetryDecision::At(at) => {
                prop_assert!(attempts < max_attempts);
                prop_assert!(at >= now && at < deadline);
                prop_assert!(at - now <= b.max);
                if unprocessed {
                    prop_assert_eq!(at, now);
                }
            }
            RetryDecision::GiveUp => {}
        }
        let resend = policy.resend(attempts, unprocessed, now, deadline, jitter, shutting_down);
        match resend {
            Resend::Shutdown => prop_assert!(shutting_down),
            Resend::Now | Resend::At(_) | Resend::Exhausted => prop_assert!(!shutting_down),
        }
        if let Resend::At(at) = resend {
            prop_assert!(at > now && at < deadline && at - now <= b.max);
        }
    }

    /// Whatever happens — failed connects, TLS alerts, 403s on any connection, GOAWAYs,
    /// deliveries, certificate swaps, at any pace — no slot waits and no fail-fast window
    /// lasts past the longest configured backoff, after which the plan lets every idle slot
    /// connect again: the certificate-rejected state always ends its hold.
    #[test]
    fn certificate_rejection_always_ends_and_waits_stay_bounded(
        slots in 1..5usize,
        reconnect in backoff(),
        rejected in backoff(),
        events in proptest::collection::vec(event(), 0..80),
    ) {
        let mut plan = Plan::new(slots, reconnect, rejected);
        let longest = reconnect.max.max(rejected.max);
        let mut now = Instant::now();
        check(&plan, now, longest)?;
        for event in events {
            apply(&mut plan, &mut now, event);
            check(&plan, now, longest)?;
        }
    }
}
