//! The fleet run's result: figures, the check of the server's state counts against the
//! injected fractions and of the pushes each tenant's devices got, and the final table. No I/O.

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

/// A topic whose pushes the mock accepted are not the ones its tenant's devices require.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicCount {
    /// The topic (a tenant's, or one the fleet does not know).
    pub topic: String,
    /// Pushes its devices require (online and offline, enrolled).
    pub expected: u64,
    /// Pushes the mock accepted for it.
    pub accepted: u64,
}

/// Per-tenant exactness of the accepted pushes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicCheck {
    /// Tenants whose count is exact.
    pub exact: u64,
    /// The first few topics whose count is not (tenants, then unknown topics).
    pub wrong: Vec<TopicCount>,
}

/// How many wrong topics a report lists.
const TOPIC_SAMPLES: usize = 8;

/// Compares the mock's accepted pushes by topic with what each tenant requires: tenant `i`
/// (topic `topics[i]`) `expected[i]`; a topic of no tenant must have none.
pub fn topic_counts(
    topics: &[String],
    expected: &[u64],
    accepted: &BTreeMap<String, u64>,
) -> TopicCheck {
    let mut check = TopicCheck::default();
    let got = |t: &str| accepted.get(t).copied().unwrap_or(0);
    let tenants = topics
        .iter()
        .zip(expected)
        .map(|(t, e)| (t.as_str(), *e, got(t)));
    let unknown = accepted
        .iter()
        .filter(|(t, _)| !topics.contains(t))
        .map(|(t, n)| (t.as_str(), 0, *n));
    for (topic, expected, accepted) in tenants.chain(unknown) {
        if expected == accepted {
            check.exact += 1;
        } else if check.wrong.len() < TOPIC_SAMPLES {
            check.wrong.push(TopicCount {
                topic: topic.to_owned(),
                expected,
                accepted,
            });
        }
    }
    check
}

/// The value of the unlabelled (or first labelled) sample `name` in a Prometheus text
/// exposition.
pub fn prometheus_value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let rest = match rest.chars().next()? {
            ' ' | '\t' => rest,
            '{' => &rest[rest.find('}')? + 1..],
            _ => return None,
        };
        rest.split_whitespace().next()?.parse().ok()
    })
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

/// `--enroll`: the devices' identities from invitations and `/scep`, before they check in
/// (not in `wall_s` or `phases`). In the JSON, these keys are at the top level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct EnrollmentReport {
    /// Invitations created (`POST /v1/enrollments`, one per 96 devices of a tenant: the
    /// server hands out at most 100 profiles of one invitation that wait unused).
    pub invitations: u64,
    /// Creating them and GetCACert, before `enroll_s`, in seconds.
    pub invite_s: f64,
    /// The devices' first profile request through the last certificate issued (a profile
    /// and a PKIOperation each), in seconds.
    pub enroll_s: f64,
    /// Certificates issued.
    pub enrollments: u64,
    /// `enrollments / enroll_s`.
    pub enrollments_per_s: f64,
    /// RSA-2048 keys in the pool the devices share (device `i` has key `i % pool`): a key is
    /// the device's cost, not the server's, and is generated before anything is timed.
    pub enroll_key_pool: u64,
    /// Generating that pool (in parallel, part of setup), seconds.
    pub enroll_key_pool_s: f64,
    /// One RSA-2048 private-key operation on this machine in this run (the median of 41,
    /// one thread, measured in setup), milliseconds.
    pub rsa2048_private_op_ms: f64,
    /// The enrollment phase's CPU per certificate (`enroll_s` × the cores ÷ `enrollments`:
    /// server and devices share the machine) in RSA-2048 private-key operations: the server
    /// does three RSA-3072 ones (decrypt, sign the certificate, sign the CertRep), each
    /// device three RSA-2048 ones (sign the CSR and the request, decrypt the answer).
    pub enroll_cpu_rsa2048_ops: f64,
    /// The floors were measured without enrollment (the stand-in has no SCEP), with the
    /// fleet's own identities (RSA-2048 keys, a pool as large, certificates from its device
    /// CA): `wall_over_floor` compares the check-ins and pushes only, signed alike.
    pub floor_without_enrollment: bool,
}

/// One server node of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeReport {
    /// Its base URL.
    pub url: String,
    /// Device requests sent to it (check-ins and reports; retries not counted).
    pub requests: u64,
    /// Its peak resident memory over the whole run (None: not measured, e.g. `--server`).
    pub peak_rss_mb: Option<f64>,
    /// Its peak resident memory before the final device list.
    pub job_peak_rss_mb: Option<f64>,
}

/// Everything a fleet run measured.
#[derive(Debug, Clone, Serialize)]
pub struct FleetReport {
    /// Devices simulated.
    pub devices: u64,
    /// How they authenticated.
    pub device_auth: super::FleetDeviceAuth,
    /// Tenants (`--topics`): push certificates with a topic each, the devices spread over
    /// them round robin.
    pub topics: u64,
    /// Each tenant's devices had adjacent UDIDs (`--udids-by-tenant`), not random ones.
    pub udids_by_tenant: bool,
    /// Issuing the push certificates of tenants 2.. (part of setup), in seconds.
    pub tenant_certs_s: f64,
    /// Registering tenants 2.. through `POST /v1/topics`, after setup and before enrollment
    /// (in no other phase), in seconds.
    pub register_s: f64,
    /// The most connections the mock APNs had open at once during the server's run.
    pub apns_connections_peak: u64,
    /// Connections the mock APNs accepted during the server's run (more than the peak:
    /// connections were closed and opened again, each a TLS handshake).
    pub apns_connections_opened: u64,
    /// The server's APNs connection budget for all topics together (its `/metrics`
    /// `magicpush_connections_budget`; None: not shown).
    pub apns_connection_budget: Option<u64>,
    /// Tenants whose accepted pushes (the mock's count for their topic) are exactly those
    /// of their enrolled online and offline devices.
    pub topics_exact: u64,
    /// The first few topics whose count is not exact (expected and accepted).
    pub topic_count_errors: Vec<TopicCount>,
    /// Pushes the mock refused because their topic was not their connection certificate's
    /// (400 TopicDisallowed).
    pub topic_disallowed: u64,
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
    /// The spawned nodes' store (`sqlite` or `postgres`; None: `--server`, not known).
    pub store: Option<super::nodes::StoreKind>,
    /// The run's PostgreSQL schema (dropped at the end), with `--database-url`.
    pub database_schema: Option<String>,
    /// Index in `nodes` of the node the refresh was started on and the counts read from.
    pub refresh_node: usize,
    /// The server nodes, in start order, with the device requests each got. With several,
    /// `server_peak_rss_mb` and `server_job_peak_rss_mb` are the largest node's.
    pub nodes: Vec<NodeReport>,
    /// With `--enroll`: the enrollment phase (its keys flattened into the report).
    #[serde(flatten)]
    pub enrollment: Option<EnrollmentReport>,
}

impl FleetReport {
    /// Whether the run met its correctness bar: nothing lost, exact counts (server states,
    /// and pushes per tenant), no push to a wrong topic, no failed request.
    pub fn passed(&self) -> bool {
        self.lost == 0
            && self.counts_match
            && self.misplaced == 0
            && self.errors == 0
            && self.topic_count_errors.is_empty()
            && self.topics_exact == self.topics
            && self.topic_disallowed == 0
    }

    /// A human-readable table of the figures.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let mut row = |k: &str, v: String| {
            let _ = writeln!(t, "  {k:<28} {v}");
        };
        row("devices", self.devices.to_string());
        row(
            "server nodes",
            format!(
                "{} on {}{}; refresh through node {}",
                self.nodes.len(),
                self.store
                    .map_or("an unknown store (--server)", |s| s.as_str()),
                self.database_schema
                    .as_ref()
                    .map_or(String::new(), |s| format!(" (schema {s}, dropped)")),
                self.refresh_node + 1
            ),
        );
        let total: u64 = self.nodes.iter().map(|n| n.requests).sum();
        for (i, n) in self.nodes.iter().enumerate() {
            row(
                &format!("node {}", i + 1),
                format!(
                    "{}: {} device requests ({:.1} %), peak RSS {}",
                    n.url,
                    n.requests,
                    100.0 * n.requests as f64 / total.max(1) as f64,
                    n.peak_rss_mb
                        .map_or("n/a".to_string(), |v| format!("{v:.1} MB"))
                ),
            );
        }
        row(
            "injected",
            format!(
                "{} online, {} offline, {} unregistered",
                self.injected.online, self.injected.offline, self.injected.unregistered
            ),
        );
        row(
            "topics",
            if self.topics > 1 {
                format!(
                    "{} (certificates {:.2} s; {} registered through POST /v1/topics in {:.2} s)",
                    self.topics,
                    self.tenant_certs_s,
                    self.topics - 1,
                    self.register_s
                )
            } else {
                self.topics.to_string()
            },
        );
        if self.udids_by_tenant {
            row(
                "UDIDs",
                "by tenant (--udids-by-tenant: each tenant's devices adjacent in key order)"
                    .to_owned(),
            );
        }
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
        if let Some(e) = &self.enrollment {
            row(
                "SCEP enrollment (--enroll)",
                format!(
                    "{} certificates in {:.2} s, {:.1} enrollments/s (profile + /scep per device)",
                    e.enrollments, e.enroll_s, e.enrollments_per_s
                ),
            );
            row(
                "enrollment CPU",
                format!(
                    "{:.1} RSA-2048 private-key operations per certificate (one: {:.2} ms here)",
                    e.enroll_cpu_rsa2048_ops, e.rsa2048_private_op_ms
                ),
            );
            row(
                "invitations",
                format!("{} created in {:.2} s (before)", e.invitations, e.invite_s),
            );
            row(
                "device RSA keys",
                format!(
                    "a pool of {} RSA-2048 keys ({:.2} s, in setup); device i has key i % {}",
                    e.enroll_key_pool, e.enroll_key_pool_s, e.enroll_key_pool
                ),
            );
            if e.floor_without_enrollment {
                row(
                    "floors",
                    "without enrollment (the stand-in has no SCEP), with the fleet's own \
                     RSA-2048 identities; wall time excludes enrollment"
                        .to_string(),
                );
            }
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
            "pushes per topic",
            format!(
                "{} of {} topics exact, {} refused for a wrong topic",
                self.topics_exact, self.topics, self.topic_disallowed
            ),
        );
        for t in &self.topic_count_errors {
            row(
                "topic count wrong",
                format!(
                    "{}: {} accepted, {} expected",
                    t.topic, t.accepted, t.expected
                ),
            );
        }
        row(
            "APNs connections",
            format!(
                "{} open at most at once, {} opened (server budget {})",
                self.apns_connections_peak,
                self.apns_connections_opened,
                self.apns_connection_budget
                    .map_or("n/a".to_string(), |b| b.to_string())
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
    fn topic_counts_exact_per_tenant_and_none_elsewhere() {
        let topics: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let accepted = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> { states(pairs) };
        let check = topic_counts(&topics, &[2, 1, 0], &accepted(&[("a", 2), ("b", 1)]));
        assert_eq!(
            check,
            TopicCheck {
                exact: 3,
                wrong: vec![]
            }
        );
        // A short tenant, and a topic of no tenant.
        let check = topic_counts(
            &topics,
            &[2, 1, 0],
            &accepted(&[("a", 2), ("b", 0), ("x", 4)]),
        );
        assert_eq!(check.exact, 2);
        assert_eq!(
            check.wrong,
            [
                TopicCount {
                    topic: "b".into(),
                    expected: 1,
                    accepted: 0
                },
                TopicCount {
                    topic: "x".into(),
                    expected: 0,
                    accepted: 4
                }
            ]
        );
        // The list is capped; the exact count is not.
        let many: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
        let check = topic_counts(&many, &[1; 20], &BTreeMap::new());
        assert_eq!((check.exact, check.wrong.len()), (0, TOPIC_SAMPLES));
    }

    #[test]
    fn prometheus_values_by_name() {
        let text = "# HELP magicpush_connections_budget Most APNs connections\n\
                    # TYPE magicpush_connections_budget gauge\n\
                    magicpush_connections_budget_extra 7\n\
                    magicpush_connections_budget 1000\n\
                    magicpush_connections{topic=\"a b\"} 3 1700000000\n";
        assert_eq!(
            prometheus_value(text, "magicpush_connections_budget"),
            Some(1000.0)
        );
        assert_eq!(prometheus_value(text, "magicpush_connections"), Some(3.0));
        assert_eq!(prometheus_value(text, "magicpush_nothing"), None);
        assert_eq!(prometheus_value("", "x"), None);
    }

    /// A passing report of `topics` tenants, 10 devices.
    fn report(topics: u64) -> FleetReport {
        let injected = Injected {
            online: 10,
            offline: 0,
            unregistered: 0,
        };
        FleetReport {
            devices: 10,
            device_auth: super::super::FleetDeviceAuth::Signature,
            topics,
            udids_by_tenant: false,
            tenant_certs_s: 0.1,
            register_s: 0.25,
            apns_connections_peak: 4,
            apns_connections_opened: 4,
            apns_connection_budget: Some(1000),
            topics_exact: topics,
            topic_count_errors: Vec::new(),
            topic_disallowed: 0,
            wall_s: 1.0,
            floor_s: None,
            wall_over_floor: None,
            floor: None,
            floor_verifying_s: None,
            wall_over_verifying_floor: None,
            floor_verifying: None,
            total_s: 2.0,
            states: states(&[("responded", 10)]),
            expected: expected_states(injected),
            injected,
            counts_match: true,
            lost: 0,
            misplaced: 0,
            enrolled: 10,
            enroll_per_s: 10.0,
            checkins_per_s: 20.0,
            pushes: 10,
            push_per_s: 10.0,
            push_s: 1.0,
            reported: 10,
            latency_ms: LatencyMs::default(),
            server_latency_ms: serde_json::Value::Null,
            phases: Phases::default(),
            server_peak_rss_mb: None,
            server_job_peak_rss_mb: None,
            loadgen_peak_rss_mb: None,
            errors: 0,
            error_samples: Vec::new(),
            store: Some(super::super::nodes::StoreKind::Sqlite),
            database_schema: None,
            refresh_node: 0,
            nodes: vec![NodeReport {
                url: "http://127.0.0.1:1".into(),
                requests: 30,
                peak_rss_mb: Some(20.0),
                job_peak_rss_mb: Some(19.0),
            }],
            enrollment: None,
        }
    }

    fn line<'a>(table: &'a str, key: &str) -> &'a str {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("no {key} row in\n{table}"))
    }

    #[test]
    fn table_shows_topics_registration_and_connections() {
        let one = report(1).table();
        assert_eq!(line(&one, "topics").split_whitespace().last(), Some("1"));
        assert!(line(&one, "pushes per topic")
            .ends_with("1 of 1 topics exact, 0 refused for a wrong topic"));
        assert!(line(&one, "APNs connections")
            .ends_with("4 open at most at once, 4 opened (server budget 1000)"));

        let mut many = report(3);
        many.apns_connection_budget = None;
        let t = many.table();
        assert!(
            line(&t, "topics").ends_with(
                "3 (certificates 0.10 s; 2 registered through POST /v1/topics in 0.25 s)"
            ),
            "{t}"
        );
        assert!(line(&t, "APNs connections").ends_with("(server budget n/a)"));
        assert!(!t.contains("topic count wrong"));
        let json = serde_json::to_value(&many).unwrap();
        for key in [
            "topics",
            "tenant_certs_s",
            "register_s",
            "apns_connections_peak",
            "apns_connections_opened",
            "apns_connection_budget",
            "topics_exact",
            "topic_count_errors",
            "topic_disallowed",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }

    #[test]
    fn table_and_json_name_the_nodes_and_the_store() {
        let one = report(1);
        let t = one.table();
        assert!(
            line(&t, "server nodes").ends_with("1 on sqlite; refresh through node 1"),
            "{t}"
        );
        assert!(line(&t, "node 1").contains("http://127.0.0.1:1: 30 device requests (100.0 %)"));

        let mut three = report(1);
        three.store = Some(super::super::nodes::StoreKind::Postgres);
        three.database_schema = Some("fleet_00ff".into());
        three.refresh_node = 2;
        three.nodes = (1..=3)
            .map(|i| NodeReport {
                url: format!("http://127.0.0.1:{i}"),
                requests: 10 * i,
                peak_rss_mb: None,
                job_peak_rss_mb: None,
            })
            .collect();
        let t = three.table();
        assert!(
            line(&t, "server nodes")
                .ends_with("3 on postgres (schema fleet_00ff, dropped); refresh through node 3"),
            "{t}"
        );
        assert!(line(&t, "node 3").ends_with("30 device requests (50.0 %), peak RSS n/a"));
        let json = serde_json::to_value(&three).unwrap();
        assert_eq!(json["store"], "postgres");
        assert_eq!(json["refresh_node"], 2);
        assert_eq!(json["database_schema"], "fleet_00ff");
        assert_eq!(json["nodes"][1]["requests"], 20);
        assert_eq!(json["nodes"][0]["url"], "http://127.0.0.1:1");
        // The keys other tools read are still there.
        for key in [
            "devices",
            "wall_s",
            "lost",
            "counts_match",
            "server_peak_rss_mb",
        ] {
            assert!(json.get(key).is_some(), "{key} in {json}");
        }
    }

    #[test]
    fn a_wrong_topic_count_or_a_disallowed_push_fails_the_run() {
        assert!(report(3).passed());
        let mut short = report(3);
        short.topics_exact = 2;
        short.topic_count_errors = vec![TopicCount {
            topic: "b".into(),
            expected: 4,
            accepted: 3,
        }];
        assert!(!short.passed());
        assert!(line(&short.table(), "topic count wrong").ends_with("b: 3 accepted, 4 expected"));
        let mut disallowed = report(3);
        disallowed.topic_disallowed = 1;
        assert!(!disallowed.passed());
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
