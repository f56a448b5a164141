//! The counters a device request bumps, with their handles taken from the recorder once, at
//! the first request, instead of a registry lookup (a hash of the name and labels) on every
//! check-in and report. Taken lazily so that the recorder is installed first.

use std::sync::OnceLock;

use metrics::Counter;

use magicpush_mdm::Status;

/// The `message_type` label of `magicpush_checkins_total`: a fixed set.
const CHECKIN_KINDS: [&str; 6] = [
    "Authenticate",
    "TokenUpdate",
    "CheckOut",
    "SetBootstrapToken",
    "GetBootstrapToken",
    "unsupported",
];

/// The index in [`CHECKIN_KINDS`] of a check-in's MessageType.
fn checkin_kind(message_type: &str) -> usize {
    CHECKIN_KINDS[..5]
        .iter()
        .position(|k| *k == message_type)
        .unwrap_or(5)
}

struct Handles {
    checkins: Vec<Counter>,
    reports: Vec<Counter>,
    enrollments: Counter,
    push_answered: Counter,
}

/// `magicpush_checkins_total{message_type}`, `magicpush_reports_total{status}`,
/// `magicpush_enrollments_total` and `magicpush_push_answered_total`.
#[derive(Default)]
pub(super) struct DeviceMetrics {
    handles: OnceLock<Handles>,
}

impl DeviceMetrics {
    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles {
            checkins: CHECKIN_KINDS
                .iter()
                .map(|&k| metrics::counter!("magicpush_checkins_total", "message_type" => k))
                .collect(),
            reports: Status::ALL
                .iter()
                .map(|s| metrics::counter!("magicpush_reports_total", "status" => s.as_str()))
                .collect(),
            enrollments: metrics::counter!("magicpush_enrollments_total"),
            push_answered: metrics::counter!("magicpush_push_answered_total"),
        })
    }

    /// A check-in of this MessageType arrived.
    pub(super) fn checkin(&self, message_type: &str) {
        self.handles().checkins[checkin_kind(message_type)].increment(1);
    }

    /// A report with this status arrived.
    pub(super) fn report(&self, status: Status) {
        let i = Status::ALL.iter().position(|s| *s == status).unwrap_or(0);
        self.handles().reports[i].increment(1);
    }

    /// A device finished its enrollment.
    pub(super) fn enrolled(&self) {
        self.handles().enrollments.increment(1);
    }

    /// A report answered a push.
    pub(super) fn push_answered(&self) {
        self.handles().push_answered.increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_types_map_to_their_own_label_or_unsupported() {
        for (i, k) in CHECKIN_KINDS[..5].iter().enumerate() {
            assert_eq!(checkin_kind(k), i);
        }
        assert_eq!(
            CHECKIN_KINDS[checkin_kind("DeclarativeManagement")],
            "unsupported"
        );
        assert_eq!(CHECKIN_KINDS[checkin_kind("")], "unsupported");
    }
}
