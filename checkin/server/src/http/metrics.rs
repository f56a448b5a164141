//! The process-wide Prometheus recorder behind `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often the recorder's upkeep runs without a scrape.
///
/// A histogram sample (every request's duration, every push's latency) waits in the recorder
/// until upkeep folds it into its summary. A scrape of `/metrics` runs upkeep; with the
/// recorder installed as here, nothing else does. So a server that nobody scrapes kept every
/// sample: 16.5 bytes each, measured, or 165 MB per 10 million requests, without end.
const UPKEEP_EVERY: Duration = if cfg!(test) {
    Duration::from_millis(50)
} else {
    Duration::from_secs(5)
};

/// Upkeep runs of the thread below, for the test that it runs.
static UPKEEPS: AtomicU64 = AtomicU64::new(0);

/// Installs the Prometheus recorder the first time it is called and returns its handle.
/// `None` when another recorder was installed first (then `/metrics` says so). Also starts
/// the thread that runs the recorder's upkeep every [`UPKEEP_EVERY`].
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => {
                start_upkeep(handle.clone());
                Some(handle)
            }
            Err(err) => {
                tracing::warn!("metrics recorder not installed: {err}");
                None
            }
        })
        .as_ref()
}

fn start_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
            UPKEEPS.fetch_add(1, Ordering::Relaxed);
        });
    if let Err(err) = spawned {
        tracing::warn!(
            "metrics upkeep thread not started ({err}): histogram samples are kept until \
             /metrics is scraped"
        );
    }
}

/// The current metrics in the Prometheus text format.
pub fn render() -> Option<String> {
    let handle = handle()?;
    handle.run_upkeep();
    Some(handle.render())
}

/// The `route` label of every request metric: a fixed set, so the handles are looked up once.
pub(crate) const ROUTES: [&str; 11] = [
    "mdm_checkin",
    "mdm_server",
    "mdm",
    "healthz",
    "metrics",
    "v1_devices",
    "v1_pushcert",
    "v1_refresh",
    "v1_commands",
    "v1_connectivity",
    "other",
];

/// The index in [`ROUTES`] of a request path's label.
pub(crate) fn route_index(path: &str) -> usize {
    match path {
        "/mdm/checkin" => 0,
        "/mdm/server" => 1,
        "/mdm" => 2,
        "/healthz" => 3,
        "/metrics" => 4,
        p if p.starts_with("/v1/devices") => 5,
        p if p.starts_with("/v1/pushcert") => 6,
        "/v1/refresh" => 7,
        "/v1/commands" => 8,
        "/v1/connectivity" => 9,
        _ => 10,
    }
}

/// `magicpush_http_request_seconds{route}` and `magicpush_http_responses_total{route,status}`,
/// with their handles taken from the recorder once (per route, and per status when first
/// seen) instead of on every request: the registry lookup, its key and the status label's
/// allocation were a few per cent of a check-in. Made after the recorder is installed.
pub(crate) struct RequestMetrics {
    durations: Vec<metrics::Histogram>,
    responses: dashmap::DashMap<(usize, u16), metrics::Counter>,
}

impl RequestMetrics {
    pub(crate) fn new() -> Self {
        RequestMetrics {
            durations: ROUTES
                .iter()
                .map(|&route| metrics::histogram!("magicpush_http_request_seconds", "route" => route))
                .collect(),
            responses: dashmap::DashMap::new(),
        }
    }

    /// Records one answered request.
    pub(crate) fn record(&self, route: usize, status: http::StatusCode, seconds: f64) {
        let route = route.min(ROUTES.len() - 1);
        self.durations[route].record(seconds);
        let key = (route, status.as_u16());
        if let Some(counter) = self.responses.get(&key) {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(
            "magicpush_http_responses_total",
            "route" => ROUTES[route],
            "status" => status.as_str().to_owned()
        );
        counter.increment(1);
        self.responses.insert(key, counter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Histogram samples are folded in without a scrape, so an unscraped server does not keep
    /// every request's sample.
    #[test]
    fn upkeep_runs_without_a_scrape() {
        handle().expect("the recorder is installed");
        let start = UPKEEPS.load(Ordering::Relaxed);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while UPKEEPS.load(Ordering::Relaxed) < start + 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "no upkeep ran in 30 s (every {UPKEEP_EVERY:?} expected)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn every_route_has_a_label() {
        for path in [
            "/mdm/checkin",
            "/mdm",
            "/v1/devices/x",
            "/v1/pushcert/csr",
            "/nope",
        ] {
            assert!(route_index(path) < ROUTES.len());
        }
        assert_eq!(ROUTES[route_index("/v1/devices/abc")], "v1_devices");
        assert_eq!(ROUTES[route_index("/unknown")], "other");
    }
}
