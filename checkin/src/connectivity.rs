//! Connectivity: one state per device from its push outcome and its next report, and the
//! push→report latency percentiles. Pure functions of a device list and the current time.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::store::{Device, PushOutcome};

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
    if !device.is_enrolled() {
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
        let mut states: BTreeMap<ConnState, usize> =
            ConnState::ALL.into_iter().map(|s| (s, 0)).collect();
        let mut latencies = Vec::new();
        for d in devices {
            let st = state(d, now, unreachable_after);
            *states.entry(st).or_default() += 1;
            if st == ConnState::Responded {
                if let Some(l) = d.push_latency() {
                    latencies.push(u64::try_from(l.as_millis()).unwrap_or(u64::MAX));
                }
            }
        }
        Report {
            states,
            latency_ms: Latency::from_millis(latencies),
        }
    }
}
