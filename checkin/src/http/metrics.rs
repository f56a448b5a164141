//! The process-wide Prometheus recorder behind `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder the first time it is called and returns its handle.
/// `None` when another recorder was installed first (then `/metrics` says so).
pub fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::warn!("metrics recorder not installed: {err}");
                None
            }
        })
        .as_ref()
}

/// The current metrics in the Prometheus text format.
pub fn render() -> Option<String> {
    let handle = handle()?;
    handle.run_upkeep();
    Some(handle.render())
}
