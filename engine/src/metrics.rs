//! Metric names and the few helpers that record them (through the `metrics` facade; the
//! application installs the exporter).

use std::time::Duration;

use crate::outcome::PushResult;

/// Pushes by `topic`, `outcome` (`delivered`, `unregistered`, `rejected`, `certificate_rejected`,
/// `retries_exhausted`, `deadline_exceeded`, `no_certificate`, `shutdown`) and `reason`
/// ([`Cause::label`](crate::cause::Cause::label): a fixed set, `other` for any APNs reason
/// not known).
pub const PUSHES: &str = "magicpush_pushes_total";
/// Submission-to-outcome latency, seconds.
pub const LATENCY: &str = "magicpush_push_latency_seconds";
/// Streams sent and not answered, by `topic`. The pool's gauges (this one, [`QUEUED`],
/// [`CONNECTIONS`], [`CERT_DAYS_LEFT`], [`CERT_REJECTED`]) carry the `topic` label: one series
/// per registered topic.
pub const IN_FLIGHT: &str = "magicpush_pushes_in_flight";
/// Pushes accepted by the client and not yet sent.
pub const QUEUED: &str = "magicpush_pushes_queued";
/// Open APNs connections.
pub const CONNECTIONS: &str = "magicpush_connections_open";
/// Connection attempts after the first, by `topic`.
pub const RECONNECTS: &str = "magicpush_reconnects_total";
/// Resends, by `reason` and `topic`.
pub const RETRIES: &str = "magicpush_push_retries_total";
/// Days until the push certificate expires.
pub const CERT_DAYS_LEFT: &str = "magicpush_certificate_days_left";
/// 1 while APNs refuses the certificate.
pub const CERT_REJECTED: &str = "magicpush_certificate_rejected";
/// Connections open or opening, all topics together (unlabelled).
pub const CONNECTIONS_TOTAL: &str = "magicpush_connections_total_in_use";
/// The budget of connections for all topics together.
pub const CONNECTIONS_BUDGET: &str = "magicpush_connections_budget";

/// One topic's pool gauges, registered once per topic.
pub(crate) struct TopicGauges {
    pub(crate) connections: metrics::Gauge,
    pub(crate) in_flight: metrics::Gauge,
    pub(crate) queued: metrics::Gauge,
    pub(crate) days_left: metrics::Gauge,
    pub(crate) rejected: metrics::Gauge,
}

impl TopicGauges {
    pub(crate) fn new(topic: &str) -> TopicGauges {
        let label = || [("topic", topic.to_owned())];
        TopicGauges {
            connections: metrics::gauge!(CONNECTIONS, &label()),
            in_flight: metrics::gauge!(IN_FLIGHT, &label()),
            queued: metrics::gauge!(QUEUED, &label()),
            days_left: metrics::gauge!(CERT_DAYS_LEFT, &label()),
            rejected: metrics::gauge!(CERT_REJECTED, &label()),
        }
    }

    /// The topic is gone: its series read zero (an exporter keeps a series once seen).
    pub(crate) fn clear(&self) {
        for g in [
            &self.connections,
            &self.in_flight,
            &self.queued,
            &self.days_left,
            &self.rejected,
        ] {
            g.set(0.0);
        }
    }
}

/// Describes every metric once (idempotent enough to call per client).
pub fn describe() {
    metrics::describe_counter!(PUSHES, "Pushes by outcome and APNs reason");
    metrics::describe_histogram!(
        LATENCY,
        metrics::Unit::Seconds,
        "From submission to outcome"
    );
    metrics::describe_gauge!(IN_FLIGHT, "Pushes sent and not yet answered");
    metrics::describe_gauge!(QUEUED, "Pushes waiting to be sent");
    metrics::describe_gauge!(CONNECTIONS, "Open APNs connections");
    metrics::describe_counter!(RECONNECTS, "APNs connection attempts after the first");
    metrics::describe_counter!(RETRIES, "Pushes resent after a transient failure");
    metrics::describe_gauge!(CERT_DAYS_LEFT, "Days until the push certificate expires");
    metrics::describe_gauge!(CERT_REJECTED, "1 while APNs refuses the push certificate");
    metrics::describe_gauge!(
        CONNECTIONS_TOTAL,
        "APNs connections open or opening, all topics together"
    );
    metrics::describe_gauge!(
        CONNECTIONS_BUDGET,
        "Most APNs connections, all topics together"
    );
}

/// The handles a delivered push records to, looked up once per connection rather than once
/// per push (a lookup hashes the name and labels in the recorder's registry).
#[derive(Clone)]
pub(crate) struct DeliveredMetrics {
    pushes: metrics::Counter,
    latency: metrics::Histogram,
}

impl DeliveredMetrics {
    /// Handles from the recorder installed now, for pushes of `topic`.
    pub(crate) fn new(topic: &str) -> Self {
        DeliveredMetrics {
            pushes: delivered_counter(topic),
            latency: metrics::histogram!(LATENCY),
        }
    }

    pub(crate) fn record(&self, latency: Duration) {
        self.latency.record(latency.as_secs_f64());
        self.pushes.increment(1);
    }
}

fn delivered_counter(topic: &str) -> metrics::Counter {
    let labels = [
        ("outcome", "delivered".to_owned()),
        ("reason", String::new()),
        ("topic", topic.to_owned()),
    ];
    metrics::counter!(PUSHES, &labels)
}

/// Counts a push's outcome; `topic` is its pool's (empty for a push that never reached one).
pub(crate) fn record_outcome(result: &PushResult, latency: Duration, topic: &str) {
    use crate::outcome::PushError as E;
    metrics::histogram!(LATENCY).record(latency.as_secs_f64());
    match result {
        Ok(_) => delivered_counter(topic).increment(1),
        Err(e) => {
            let outcome = match e {
                E::Unregistered { .. } => "unregistered",
                E::Rejected { .. } => "rejected",
                E::CertificateRejected { .. } => "certificate_rejected",
                E::RetriesExhausted { .. } => "retries_exhausted",
                E::DeadlineExceeded { .. } => "deadline_exceeded",
                E::NoCertificate | E::UnknownTopic { .. } | E::TopicRequired { .. } => {
                    "no_certificate"
                }
                E::Shutdown => "shutdown",
            };
            let labels = [
                ("outcome", outcome.to_owned()),
                ("reason", e.reason().label().to_owned()),
                ("topic", topic.to_owned()),
            ];
            metrics::counter!(PUSHES, &labels).increment(1);
        }
    }
}
