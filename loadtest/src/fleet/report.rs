//! The fleet run's result: figures, the check of the server's state counts against the
//! injected fractions, and the final table. No I/O.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Devices per role, as injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Injected {
    /// Answer their push.
    pub online: u64,
    /// Pushed (accepted) but never answer.
    pub offline: u64,
    /// APNs answers 410.
    pub unregistered: u64,
}

/// Which server states each injected role must end in.
pub fn expected_states(injected: Injected) -> BTreeMap<&'static str, u64> {
    BTreeMap::from([
        ("responded", injected.online),
        ("pending+unreachable", injected.offline),
        ("unregistered", injected.unregistered),
        ("other", 0),
    ])
}

/// Whether the server's counts by state are exactly what the injected roles give: online →
/// `responded`, offline → `pending` or `unreachable`, unregistered → `unregistered`, nothing
/// anywhere else.
pub fn counts_match(states: &BTreeMap<String, u64>, injected: Injected) -> bool {
    let get = |s: &str| states.get(s).copied().unwrap_or(0);
    let other: u64 = states
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_str(),
                "responded" | "pending" | "unreachable" | "unregistered"
            )
        })
        .map(|(_, v)| v)
        .sum();
    get("responded") == injected.online
        && get("pending") + get("unreachable") == injected.offline
        && get("unregistered") == injected.unregistered
        && other == 0
}

/// Latency figures in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// How many values.
    pub count: u64,
}

impl LatencyMs {
    /// From a histogram of microseconds.
    pub fn from_micros(h: &hdrhistogram::Histogram<u64>) -> LatencyMs {
        let ms = |us: u64| (us as f64 / 1000.0 * 10.0).round() / 10.0;
        if h.is_empty() {
            return LatencyMs::default();
        }
        LatencyMs {
            p50: ms(h.value_at_quantile(0.5)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
            count: h.len(),
        }
    }
}

/// Wall time of each phase, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Certificates, mock APNs, server start.
    pub setup_s: f64,
    /// Authenticate + TokenUpdate for every device.
    pub enroll_s: f64,
    /// `POST /v1/refresh` until every push was answered and every online device reported.
    pub push_report_s: f64,
    /// Until the server's connectivity report shows the final counts.
    pub settle_s: f64,
    /// Reading the device list to compute `lost`.
    pub verify_s: f64,
}

/// The phases of the floor run (the trivial MDM stand-in).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FloorPhases {
    /// Authenticate + TokenUpdate for every device.
    pub enroll_s: f64,
    /// Refresh until every online device reported.
    pub push_report_s: f64,
}

/// Everything a fleet run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// Devices simulated.
    pub devices: u64,
    /// How they authenticated.
    pub device_auth: super::FleetDeviceAuth,
    /// Enrollment through refresh until the server's report settled (phases
    /// enroll + push_report + settle), in seconds.
    pub wall_s: f64,
    /// The same workload against the trivial MDM stand-in (enroll + push_report), in
    /// seconds; with `--baseline` or `--json`.
    pub floor_s: Option<f64>,
    /// `wall_s / floor_s`.
    pub wall_over_floor: Option<f64>,
    /// The stand-in run's phases.
    pub floor: Option<FloorPhases>,
    /// When the devices sign: the same workload against the stand-in that also verifies
    /// every signature as the server does (enroll + push_report), in seconds.
    pub floor_verifying_s: Option<f64>,
    /// `wall_s / floor_verifying_s`: the server's work beyond the verifications it must make.
    pub wall_over_verifying_floor: Option<f64>,
    /// The verifying stand-in run's phases.
    pub floor_verifying: Option<FloorPhases>,
    /// The whole run including setup and verification, in seconds.
    pub total_s: f64,
    /// The server's own counts by state (`GET /v1/connectivity`).
    pub states: BTreeMap<String, u64>,
    /// What the injected roles require.
    pub expected: BTreeMap<&'static str, u64>,
    /// Devices per role.
    pub injected: Injected,
    /// Whether `states` is exactly `expected`.
    pub counts_match: bool,
    /// Devices that reported (answer 200) that the server does not show as `responded`.
    pub lost: u64,
    /// Devices whose server state is not the one their role requires (includes `lost`).
    pub misplaced: u64,
    /// Devices enrolled (both check-ins answered 200).
    pub enrolled: u64,
    /// Enrollment rate, devices per second (two check-ins each).
    pub enroll_per_s: f64,
    /// Check-ins per second during enrollment.
    pub checkins_per_s: f64,
    /// Pushes the mock APNs answered (accepted or 410).
    pub pushes: u64,
    /// Pushes per second, from the refresh request to the last push answered.
    pub push_per_s: f64,
    /// Seconds from the refresh request to the last push answered.
    pub push_s: f64,
    /// Online devices that completed Idle → command → Acknowledged.
    pub reported: u64,
    /// Push accepted by the mock → Acknowledged answered 200, measured by the devices.
    pub latency_ms: LatencyMs,
    /// The server's push→report latency figures (`latency_ms` of its report).
    pub server_latency_ms: serde_json::Value,
    /// Wall time per phase.
    pub phases: Phases,
    /// Peak resident memory of the server process over the whole run, including the final
    /// `GET /v1/devices` of every device (None: not measured, e.g. `--server`).
    pub server_peak_rss_mb: Option<f64>,
    /// Peak resident memory of the server process before that device list: enrollment,
    /// pushes, reports and the connectivity report.
    pub server_job_peak_rss_mb: Option<f64>,
    /// Peak resident memory of the load generator (with the in-process mock APNs).
    pub loadgen_peak_rss_mb: Option<f64>,
    /// Requests that failed (transport errors or unexpected answers).
    pub errors: u64,
    /// The first few failures, for the operator.
    pub error_samples: Vec<String>,
}

impl FleetReport {
    /// Whether the run met its correctness bar: nothing lost, exact counts, no failed request.
    pub fn passed(&self) -> bool {
        self.lost == 0 && self.counts_match && self.misplaced == 0 && self.errors == 0
    }

    /// A human-readable table of the figures.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<28} {v}");
        };
        row("devices", self.devices.to_string());
        row(
            "injected",
            format!(
                "{} online, {} offline, {} unregistered",
                self.injected.online, self.injected.offline, self.injected.unregistered
            ),
        );
        if let (Some(floor), Some(ratio)) = (self.floor_s, self.wall_over_floor) {
            row(
                "floor (trivial MDM stand-in)",
                format!("{floor:.2} s; wall / floor = {ratio:.2}"),
            );
        }
        if let (Some(floor), Some(ratio)) = (self.floor_verifying_s, self.wall_over_verifying_floor)
        {
            row(
                "floor that verifies signatures",
                format!("{floor:.2} s; wall / floor = {ratio:.2}"),
            );
        }
        row(
            "wall time (enroll→settled)",
            format!("{:.2} s (total {:.2} s)", self.wall_s, self.total_s),
        );
        row(
            "phases",
            format!(
                "setup {:.2} s, enroll {:.2} s, push+report {:.2} s, settle {:.2} s, verify {:.2} s",
                self.phases.setup_s,
                self.phases.enroll_s,
                self.phases.push_report_s,
                self.phases.settle_s,
                self.phases.verify_s
            ),
        );
        row(
            "enroll rate",
            format!(
                "{:.0} devices/s ({:.0} check-ins/s)",
                self.enroll_per_s, self.checkins_per_s
            ),
        );
        row(
            "push rate",
            format!(
                "{:.0} pushes/s ({} pushes in {:.2} s)",
                self.push_per_s, self.pushes, self.push_s
            ),
        );
        row(
            "push→report latency",
            format!(
                "p50 {} ms, p99 {} ms, max {} ms (devices); server: {}",
                self.latency_ms.p50,
                self.latency_ms.p99,
                self.latency_ms.max,
                self.server_latency_ms
            ),
        );
        let states = self
            .states
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ");
        row("server states", states);
        row(
            "counts match injection",
            if self.counts_match { "yes" } else { "NO" }.to_string(),
        );
        row("lost", self.lost.to_string());
        row("misplaced", self.misplaced.to_string());
        row("request errors", self.errors.to_string());
        let mb = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{v:.1} MB"));
        row(
            "server peak RSS",
            format!(
                "{} ({} before listing every device)",
                mb(self.server_peak_rss_mb),
                mb(self.server_job_peak_rss_mb)
            ),
        );
        row("load generator peak RSS", mb(self.loadgen_peak_rss_mb));
        for sample in &self.error_samples {
            row("error", sample.clone());
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn states(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    #[test]
    fn counts_match_only_when_every_role_lands_in_its_state() {
        let inj = Injected {
            online: 90,
            offline: 7,
            unregistered: 3,
        };
        assert!(counts_match(
            &states(&[
                ("responded", 90),
                ("pending", 5),
                ("unreachable", 2),
                ("unregistered", 3)
            ]),
            inj
        ));
        // Zero counts for other states are fine; a non-zero one is not.
        assert!(counts_match(
            &states(&[
                ("responded", 90),
                ("pending", 7),
                ("unregistered", 3),
                ("no_token", 0)
            ]),
            inj
        ));
        assert!(!counts_match(
            &states(&[
                ("responded", 89),
                ("pending", 7),
                ("unregistered", 3),
                ("never_pushed", 1)
            ]),
            inj
        ));
        assert!(!counts_match(
            &states(&[("responded", 90), ("pending", 7), ("push_failed", 3)]),
            inj
        ));
        assert!(!counts_match(&states(&[]), inj));
    }

    #[test]
    fn latency_from_micros() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).unwrap();
        assert_eq!(LatencyMs::from_micros(&h), LatencyMs::default());
        for us in 1..=1000u64 {
            h.record(us * 1000).unwrap();
        }
        let l = LatencyMs::from_micros(&h);
        assert!((l.p50 - 500.0).abs() < 1.0, "{l:?}");
        assert!((l.p99 - 990.0).abs() < 1.5, "{l:?}");
        assert!((l.max - 1000.0).abs() < 1.0, "{l:?}");
        assert_eq!(l.count, 1000);
    }
}
