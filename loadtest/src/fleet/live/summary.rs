//! What a live fleet did: counters kept while it runs, and the summary printed at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use super::super::Failures;
use super::answers::Answer;

/// Counters of a live fleet, updated by its devices.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Pushes the mock APNs accepted.
    pub(crate) pushes_accepted: AtomicU64,
    /// Of those, pushes to offline devices (never answered).
    pub(crate) pushes_unanswered: AtomicU64,
    /// Report exchanges completed (Idle … empty answer), after pushes and after enrollment.
    pub(crate) reports: AtomicU64,
    /// Commands answered, by request type and answer.
    commands: Mutex<BTreeMap<(String, bool), u64>>,
    /// Failed device requests.
    pub(crate) failures: Failures,
}

impl Counters {
    /// Counts a command answered.
    pub(crate) fn command(&self, request_type: &str, answer: Answer) {
        let key = (request_type.to_owned(), answer == Answer::Acknowledged);
        let mut commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        *commands.entry(key).or_default() += 1;
    }

    /// The commands answered `Acknowledged` and `Error`, each by request type.
    fn commands(&self) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
        let commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        let (mut acknowledged, mut refused) = (BTreeMap::new(), BTreeMap::new());
        for ((request_type, ok), n) in commands.iter() {
            let map = if *ok { &mut acknowledged } else { &mut refused };
            map.insert(request_type.clone(), *n);
        }
        (acknowledged, refused)
    }
}

/// How a live fleet ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StoppedBy {
    /// SIGINT or SIGTERM.
    Signal,
    /// `--for-s` elapsed.
    Time,
}

/// The summary of a live fleet (`demo --json`).
#[derive(Debug, Clone, Serialize)]
pub struct LiveSummary {
    /// Devices simulated.
    pub devices: u64,
    /// Devices whose enrollment succeeded.
    pub enrolled: u64,
    /// Devices that answer their pushes.
    pub online: u64,
    /// Devices that never answer.
    pub offline: u64,
    /// Devices whose pushes APNs answers 410.
    pub unregistered: u64,
    /// Pushes the mock APNs accepted.
    pub pushes_accepted: u64,
    /// Of those, pushes to offline devices.
    pub pushes_unanswered: u64,
    /// Report exchanges the devices completed (including each device's first, after
    /// enrollment).
    pub reports: u64,
    /// Commands answered `Acknowledged`, by request type.
    pub commands_acknowledged: BTreeMap<String, u64>,
    /// Commands answered `Error` (an unknown request type), by request type.
    pub commands_error: BTreeMap<String, u64>,
    /// Failed device requests.
    pub errors: u64,
    /// The first few failures.
    pub error_samples: Vec<String>,
    /// Seconds from the start to the stop.
    pub ran_s: f64,
    /// Why it stopped.
    pub stopped_by: StoppedBy,
}

/// Who the devices are, for the summary.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Population {
    pub(crate) devices: u64,
    pub(crate) enrolled: u64,
    pub(crate) online: u64,
    pub(crate) offline: u64,
    pub(crate) unregistered: u64,
}

impl LiveSummary {
    pub(crate) fn new(
        population: Population,
        counters: &Counters,
        ran_s: f64,
        stopped_by: StoppedBy,
    ) -> LiveSummary {
        let (commands_acknowledged, commands_error) = counters.commands();
        LiveSummary {
            devices: population.devices,
            enrolled: population.enrolled,
            online: population.online,
            offline: population.offline,
            unregistered: population.unregistered,
            pushes_accepted: counters.pushes_accepted.load(Ordering::Relaxed),
            pushes_unanswered: counters.pushes_unanswered.load(Ordering::Relaxed),
            reports: counters.reports.load(Ordering::Relaxed),
            commands_acknowledged,
            commands_error,
            errors: counters.failures.count(),
            error_samples: counters.failures.samples(),
            ran_s: (ran_s * 10.0).round() / 10.0,
            stopped_by,
        }
    }
}
