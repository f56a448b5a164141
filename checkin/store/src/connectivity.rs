//! Connectivity: one state per device from its push outcome and its next report, and the
//! push→report latency percentiles. Pure functions of a device list and the current time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::{Device, PushOutcome};

/// A device's connectivity state. The serialised names are a contract of the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnState {
    /// Pushed, then reported after the push ("update succeeded").
    Responded,
    /// Push accepted (or in flight), no report yet, within the window ("updating").
    Pending,
    /// Push accepted, no report within the window.
    Unreachable,
    /// APNs answered 410, or the device checked out ("MDM profile removed"), with no
    /// TokenUpdate since.
    Unregistered,
    /// The last push ended in another error: a permanent rejection (BadDeviceToken, BadTopic…)
    /// or the engine giving up (deadline, retries, certificate refused). The device's
    /// `push_outcome` says which.
    PushFailed,
    /// Enrolled with a token, not pushed since (its current) token.
    NeverPushed,
    /// Known (Authenticate) but no device-channel TokenUpdate: cannot be pushed.
    NoToken,
}

impl ConnState {
    /// Every state, in report order.
    pub const ALL: [ConnState; 7] = [
        ConnState::Responded,
        ConnState::Pending,
        ConnState::Unreachable,
        ConnState::Unregistered,
        ConnState::PushFailed,
        ConnState::NeverPushed,
        ConnState::NoToken,
    ];

    /// The contract string (`responded`, `push_failed`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            ConnState::Responded => "responded",
            ConnState::Pending => "pending",
            ConnState::Unreachable => "unreachable",
            ConnState::Unregistered => "unregistered",
            ConnState::PushFailed => "push_failed",
            ConnState::NeverPushed => "never_pushed",
            ConnState::NoToken => "no_token",
        }
    }
}

impl std::fmt::Display for ConnState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of `device` at `now`; a push unanswered for `unreachable_after` or longer is
/// `unreachable`.
///
/// Precedence: unregistered (CheckOut or a token-invalidating push answer, neither followed by
/// a TokenUpdate) › no_token › never_pushed › responded (a report at or after the last push
/// attempt, whatever the engine said) › push_failed › pending/unreachable.
pub fn state(device: &Device, now: OffsetDateTime, unreachable_after: Duration) -> ConnState {
    if device.is_checked_out() {
        return ConnState::Unregistered;
    }
    if device.is_token_invalidated()
        && matches!(device.push_outcome, Some(PushOutcome::Unregistered { .. }))
    {
        return ConnState::Unregistered;
    }
    if !device.is_enrolled() || device.awaiting_token_update {
        return ConnState::NoToken;
    }
    let Some(pushed_at) = device.last_push_at else {
        return ConnState::NeverPushed;
    };
    // A token-invalidating answer followed by a fresh TokenUpdate: the current token has not
    // been pushed yet.
    let superseded = device.push_outcome.as_ref().is_some_and(|o| {
        o.is_token_invalid()
            && match (device.push_outcome_at, device.token_updated_at) {
                (Some(o), Some(t)) => t > o,
                _ => false,
            }
    });
    if device.first_report_after_push_at.is_some() {
        return ConnState::Responded;
    }
    if superseded {
        return ConnState::NeverPushed;
    }
    match &device.push_outcome {
        Some(PushOutcome::Rejected { .. } | PushOutcome::Failed { .. }) => ConnState::PushFailed,
        // 410 not superseded was handled above; superseded returned never_pushed.
        Some(PushOutcome::Unregistered { .. }) => ConnState::Unregistered,
        Some(PushOutcome::Accepted) | None => {
            let waited = now - pushed_at;
            if waited >= unreachable_after {
                ConnState::Unreachable
            } else {
                ConnState::Pending
            }
        }
    }
}

/// Push→report latency percentiles over the devices that responded, in milliseconds. `None`
/// when no device has a latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Latency {
    /// Median (nearest rank).
    pub p50: Option<u64>,
    /// 99th percentile (nearest rank).
    pub p99: Option<u64>,
    /// Largest.
    pub max: Option<u64>,
    /// Devices with a latency.
    pub count: usize,
}

impl Latency {
    /// From latencies in milliseconds, any order.
    pub fn from_millis(mut ms: Vec<u64>) -> Self {
        ms.sort_unstable();
        Latency {
            p50: percentile(&ms, 50),
            p99: percentile(&ms, 99),
            max: ms.last().copied(),
            count: ms.len(),
        }
    }
}

/// Nearest-rank percentile of sorted values: the smallest value with at least `p`% of the
/// values at or below it.
fn percentile(sorted: &[u64], p: usize) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

/// The connectivity report: devices per state (every state present, zeros included) and
/// push→report latency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Count per state.
    pub states: BTreeMap<ConnState, usize>,
    /// Push→report latency of devices whose last push was answered.
    pub latency_ms: Latency,
}

impl Report {
    /// Computes the report for `devices` at `now`.
    pub fn compute(devices: &[Device], now: OffsetDateTime, unreachable_after: Duration) -> Self {
        let mut tally = Tally::new(now, unreachable_after);
        devices.iter().for_each(|d| tally.add(d));
        tally.finish()
    }
}

/// A [`Report`] counted one device at a time, for a fleet read from the store in pages.
#[derive(Debug, Clone)]
pub struct Tally {
    now: OffsetDateTime,
    unreachable_after: Duration,
    states: BTreeMap<ConnState, usize>,
    latencies: Vec<u64>,
}

impl Tally {
    /// An empty tally of the states at `now`.
    pub fn new(now: OffsetDateTime, unreachable_after: Duration) -> Self {
        Tally {
            now,
            unreachable_after,
            states: ConnState::ALL.into_iter().map(|s| (s, 0)).collect(),
            latencies: Vec::new(),
        }
    }

    /// Counts one device.
    pub fn add(&mut self, device: &Device) {
        let st = state(device, self.now, self.unreachable_after);
        *self.states.entry(st).or_default() += 1;
        if st == ConnState::Responded {
            if let Some(l) = device.push_latency() {
                self.latencies
                    .push(u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
            }
        }
    }

    /// Devices counted so far.
    pub fn total(&self) -> usize {
        self.states.values().sum()
    }

    /// The report of every device counted.
    pub fn finish(self) -> Report {
        Report {
            states: self.states,
            latency_ms: Latency::from_millis(self.latencies),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(600);

    fn t(secs: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_780_000_000 + secs).unwrap()
    }

    fn authenticated() -> Device {
        let mut d = Device::new("D");
        d.authenticated_at = Some(t(0));
        d
    }

    fn enrolled() -> Device {
        let mut d = authenticated();
        d.token = Some("ab".repeat(32));
        d.push_magic = Some("magic".into());
        d.enrolled_at = Some(t(1));
        d.token_updated_at = Some(t(1));
        d
    }

    fn pushed(outcome: Option<PushOutcome>) -> Device {
        let mut d = enrolled();
        d.last_push_at = Some(t(100));
        d.push_outcome_at = outcome.as_ref().map(|_| t(101));
        d.push_outcome = outcome;
        d
    }

    fn reported(mut d: Device, at: i64) -> Device {
        d.last_report_at = Some(t(at));
        d.first_report_after_push_at = Some(t(at));
        d
    }

    fn gone() -> PushOutcome {
        PushOutcome::Unregistered {
            reason: "Unregistered".into(),
            timestamp_ms: Some(5),
        }
    }

    fn rejected(reason: &str) -> PushOutcome {
        PushOutcome::Rejected {
            reason: magicpush_engine::Reason::new(reason).into(),
        }
    }

    #[test]
    fn states_table() {
        let failed = PushOutcome::Failed {
            reason: magicpush_engine::EngineCause::DeadlineExceeded.into(),
        };
        let cases: Vec<(&str, Device, i64, ConnState)> = vec![
            ("authenticated only", authenticated(), 0, ConnState::NoToken),
            (
                "token without magic",
                {
                    let mut d = enrolled();
                    d.push_magic = None;
                    d
                },
                0,
                ConnState::NoToken,
            ),
            (
                "enrolled, never pushed",
                enrolled(),
                5000,
                ConnState::NeverPushed,
            ),
            ("push in flight", pushed(None), 150, ConnState::Pending),
            (
                "in flight past window",
                pushed(None),
                100 + 600,
                ConnState::Unreachable,
            ),
            (
                "accepted, waiting",
                pushed(Some(PushOutcome::Accepted)),
                699,
                ConnState::Pending,
            ),
            (
                "accepted, window exactly over",
                pushed(Some(PushOutcome::Accepted)),
                700,
                ConnState::Unreachable,
            ),
            (
                "accepted, long silent",
                pushed(Some(PushOutcome::Accepted)),
                90_000,
                ConnState::Unreachable,
            ),
            (
                "clock behind push",
                pushed(Some(PushOutcome::Accepted)),
                50,
                ConnState::Pending,
            ),
            (
                "accepted then reported",
                reported(pushed(Some(PushOutcome::Accepted)), 103),
                90_000,
                ConnState::Responded,
            ),
            (
                "reported before the outcome arrived",
                reported(pushed(None), 100),
                101,
                ConnState::Responded,
            ),
            (
                "engine gave up but device reported",
                reported(pushed(Some(failed.clone())), 150),
                200,
                ConnState::Responded,
            ),
            ("410", pushed(Some(gone())), 200, ConnState::Unregistered),
            (
                "410 even if reported",
                reported(pushed(Some(gone())), 150),
                200,
                ConnState::Unregistered,
            ),
            (
                "410 then new token",
                {
                    let mut d = pushed(Some(gone()));
                    d.token_updated_at = Some(t(300));
                    d
                },
                400,
                ConnState::NeverPushed,
            ),
            (
                "check-out",
                {
                    let mut d = reported(pushed(Some(PushOutcome::Accepted)), 103);
                    d.checked_out_at = Some(t(500));
                    d
                },
                600,
                ConnState::Unregistered,
            ),
            (
                "check-out of a never-enrolled device",
                {
                    let mut d = authenticated();
                    d.checked_out_at = Some(t(5));
                    d
                },
                600,
                ConnState::Unregistered,
            ),
            (
                "check-out then re-enrolled",
                {
                    let mut d = enrolled();
                    d.checked_out_at = Some(t(0));
                    d
                },
                600,
                ConnState::NeverPushed,
            ),
            (
                "bad device token",
                pushed(Some(rejected("BadDeviceToken"))),
                200,
                ConnState::PushFailed,
            ),
            (
                "bad device token then new token",
                {
                    let mut d = pushed(Some(rejected("BadDeviceToken")));
                    d.token_updated_at = Some(t(300));
                    d
                },
                400,
                ConnState::NeverPushed,
            ),
            (
                "bad topic, then re-sent TokenUpdate",
                {
                    let mut d = pushed(Some(rejected("BadTopic")));
                    d.token_updated_at = Some(t(300));
                    d
                },
                400,
                ConnState::PushFailed,
            ),
            (
                "deadline exceeded",
                pushed(Some(failed)),
                200,
                ConnState::PushFailed,
            ),
            (
                "certificate refused",
                pushed(Some(PushOutcome::Failed {
                    reason: magicpush_engine::Reason::BadCertificate.into(),
                })),
                200,
                ConnState::PushFailed,
            ),
        ];
        for (name, device, now, want) in cases {
            assert_eq!(state(&device, t(now), WINDOW), want, "{name}");
        }
    }

    #[test]
    fn state_names_are_the_contract() {
        let names: Vec<String> = ConnState::ALL
            .iter()
            .map(|s| serde_json::to_string(s).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "\"responded\"",
                "\"pending\"",
                "\"unreachable\"",
                "\"unregistered\"",
                "\"push_failed\"",
                "\"never_pushed\"",
                "\"no_token\""
            ]
        );
        for s in ConnState::ALL {
            assert_eq!(format!("\"{s}\""), serde_json::to_string(&s).unwrap());
        }
    }

    #[test]
    fn percentiles_nearest_rank() {
        assert_eq!(Latency::from_millis(vec![]), Latency::default());
        let one = Latency::from_millis(vec![42]);
        assert_eq!(
            (one.p50, one.p99, one.max, one.count),
            (Some(42), Some(42), Some(42), 1)
        );
        let hundred = Latency::from_millis((1..=100).rev().collect());
        assert_eq!(
            (hundred.p50, hundred.p99, hundred.max),
            (Some(50), Some(99), Some(100))
        );
        let two = Latency::from_millis(vec![10, 1000]);
        assert_eq!((two.p50, two.p99), (Some(10), Some(1000)));
        let odd = Latency::from_millis(vec![3, 1, 2]);
        assert_eq!(odd.p50, Some(2));
    }

    #[test]
    fn report_counts_every_state_and_latency_of_responders() {
        let devices = vec![
            authenticated(),
            enrolled(),
            pushed(Some(PushOutcome::Accepted)),
            reported(pushed(Some(PushOutcome::Accepted)), 102),
            reported(pushed(Some(PushOutcome::Accepted)), 110),
            reported(pushed(Some(gone())), 105),
        ];
        let r = Report::compute(&devices, t(200), WINDOW);
        assert_eq!(r.states.len(), ConnState::ALL.len(), "zeros included");
        assert_eq!(r.states[&ConnState::NoToken], 1);
        assert_eq!(r.states[&ConnState::NeverPushed], 1);
        assert_eq!(r.states[&ConnState::Pending], 1);
        assert_eq!(r.states[&ConnState::Responded], 2);
        assert_eq!(r.states[&ConnState::Unregistered], 1);
        assert_eq!(r.states[&ConnState::Unreachable], 0);
        assert_eq!(r.states[&ConnState::PushFailed], 0);
        assert_eq!(
            r.latency_ms.count, 2,
            "the 410 device's report does not count"
        );
        assert_eq!(r.latency_ms.p50, Some(2000));
        assert_eq!(r.latency_ms.max, Some(10_000));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["states"]["push_failed"], 0);
        assert_eq!(json["states"]["responded"], 2);
        assert_eq!(json["latency_ms"]["p99"], 10_000);
        assert_eq!(json["latency_ms"]["count"], 2);

        let later = Report::compute(&devices, t(100 + 600), WINDOW);
        assert_eq!(later.states[&ConnState::Unreachable], 1);
        assert_eq!(later.states[&ConnState::Pending], 0);
    }
}
