//! Snapshots of the mock's counters.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;

use super::judge::Reason;
use super::state::Shared;

/// The mock's counters at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MockStats {
    /// TLS connections that completed the handshake.
    pub connections_opened: u64,
    /// Connections still open.
    pub connections_open: u64,
    /// The most connections open at once (after their handshake).
    pub connections_peak: u64,
    /// Handshakes refused (bad or expired client certificate, no ALPN h2, timeout).
    pub handshake_failures: u64,
    /// Streams received.
    pub requests: u64,
    /// Pushes answered 200.
    pub accepted: u64,
    /// Pushes answered 200, by `apns-topic`.
    pub accepted_by_topic: BTreeMap<String, u64>,
    /// Error answers by reason.
    pub rejected: BTreeMap<Reason, u64>,
    /// Streams refused at random (`reset_rate`).
    pub resets_injected: u64,
    /// Streams refused because they exceeded an acknowledged stream limit.
    pub refused_over_limit: u64,
    /// GOAWAY frames sent.
    pub goaways_sent: u64,
    /// Connections closed abruptly by the mock.
    pub drops: u64,
    /// Per connection, in the order they opened.
    pub connections: Vec<ConnectionStats>,
}

/// One connection's figures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStats {
    /// 1-based, in order of opening.
    pub id: u64,
    /// The client certificate's topic, if it presented one.
    pub topic: Option<String>,
    /// Still open.
    pub open: bool,
    /// Streams received.
    pub requests: u64,
    /// Most streams open at once, as counted by the server (never more than the client had).
    pub peak_streams: u32,
    /// Streams opened beyond a stream limit the client had acknowledged.
    pub limit_violations: u64,
    /// The last stream limit the client acknowledged.
    pub acknowledged_limit: Option<u32>,
    /// Writes to the connection: flushes that carried data (answers, SETTINGS, PINGs…).
    pub writes: u64,
}

impl MockStats {
    /// Error answers with `reason`.
    pub fn rejected_with(&self, reason: Reason) -> u64 {
        self.rejected.get(&reason).copied().unwrap_or(0)
    }

    /// All error answers.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// The highest peak of concurrent streams over all connections.
    pub fn peak_streams(&self) -> u32 {
        self.connections
            .iter()
            .map(|c| c.peak_streams)
            .max()
            .unwrap_or(0)
    }

    /// Stream limit violations over all connections.
    pub fn limit_violations(&self) -> u64 {
        self.connections.iter().map(|c| c.limit_violations).sum()
    }
}

impl fmt::Display for MockStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "connections: {} opened, {} open ({} at most at once), {} handshake failures, {} dropped, {} GOAWAYs",
            self.connections_opened,
            self.connections_open,
            self.connections_peak,
            self.handshake_failures,
            self.drops,
            self.goaways_sent
        )?;
        writeln!(
            f,
            "requests: {}, accepted: {}, refused streams: {} injected, {} over limit",
            self.requests, self.accepted, self.resets_injected, self.refused_over_limit
        )?;
        for (reason, n) in &self.rejected {
            writeln!(f, "  {} {}: {}", reason.status(), reason, n)?;
        }
        write!(
            f,
            "peak concurrent streams on one connection: {}, limit violations: {}",
            self.peak_streams(),
            self.limit_violations()
        )
    }
}

pub(crate) fn snapshot(shared: &Shared) -> MockStats {
    let rejected = Reason::ALL
        .iter()
        .filter_map(|r| {
            let n = shared.by_reason[*r as usize].load(Ordering::Relaxed);
            (n > 0).then_some((*r, n))
        })
        .collect();
    let connections: Vec<ConnectionStats> = shared
        .connections
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|c| ConnectionStats {
            id: c.id,
            topic: c.topic.clone(),
            open: c.open.load(Ordering::Relaxed),
            requests: c.requests.load(Ordering::Relaxed),
            peak_streams: c.peak.load(Ordering::Relaxed),
            limit_violations: c.limit_violations.load(Ordering::Relaxed),
            acknowledged_limit: c.limits.acknowledged(),
            writes: c.writes.load(Ordering::Relaxed),
        })
        .collect();
    MockStats {
        connections_opened: shared.connections_opened.load(Ordering::Relaxed),
        connections_open: connections.iter().filter(|c| c.open).count() as u64,
        connections_peak: shared.connections_peak.load(Ordering::Relaxed),
        handshake_failures: shared.handshake_failures.load(Ordering::Relaxed),
        requests: connections.iter().map(|c| c.requests).sum(),
        accepted: shared.accepted.load(Ordering::Relaxed),
        accepted_by_topic: shared.accepted_by_topic.snapshot().into_iter().collect(),
        rejected,
        resets_injected: shared.resets_injected.load(Ordering::Relaxed),
        refused_over_limit: shared.refused_over_limit.load(Ordering::Relaxed),
        goaways_sent: shared.goaways_sent.load(Ordering::Relaxed),
        drops: shared.drops.load(Ordering::Relaxed),
        connections,
    }
}
