//! Read models for the admin API: devices with their connectivity state, the CSV export and
//! the connectivity report.

use serde_json::Value;

use crate::connectivity::{self, ConnState};
use crate::http::csv;
use crate::store::{rfc3339, Device};

use super::{Service, ServiceError};

/// Devices read from the store at a time by the listings and the connectivity report.
const LISTING_PAGE: usize = 1_000;

/// The CSV export's header (and column order).
pub const CSV_HEADER: [&str; 8] = [
    "Device name",
    "Model",
    "OS version",
    "Serial number",
    "Collected at",
    "Enrolled at",
    "State",
    "Last seen",
];

impl Service {
    /// Every device (or those in `only` state) as a JSON array, in text: the store's fields
    /// plus `state` and `push_latency_ms`. Written one device at a time, so a large fleet costs
    /// its JSON text rather than a document tree of every device (a tree of 50,000 devices
    /// took about 280 MB).
    pub async fn devices_json(&self, only: Option<ConnState>) -> Result<Vec<u8>, ServiceError> {
        let now = Self::now();
        let mut out = vec![b'['];
        let mut first = true;
        self.each_device(|d| {
            if only.is_some_and(|s| self.state(d, now) != s) {
                return;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &self.device_value(d, now));
        })
        .await?;
        out.push(b']');
        Ok(out)
    }

    /// Calls `each` for every device in UDID order, reading the store [`LISTING_PAGE`]
    /// devices at a time: a listing holds one page of devices, not the whole fleet. Pages are
    /// read one after the other, not in one snapshot: a device written meanwhile is seen
    /// before or after that write, and every device once.
    async fn each_device(&self, mut each: impl FnMut(&Device) + Send) -> Result<(), ServiceError> {
        let mut after: Option<String> = None;
        loop {
            let page = self
                .store
                .devices_page(after.as_deref(), LISTING_PAGE)
                .await?;
            page.iter().for_each(&mut each);
            match page.last() {
                Some(last) if page.len() == LISTING_PAGE => after = Some(last.udid.clone()),
                _ => return Ok(()),
            }
        }
    }

    /// One device as JSON; [`ServiceError::NotFound`] if unknown.
    pub async fn device_json(&self, udid: &str) -> Result<Value, ServiceError> {
        let device = self
            .store
            .device(udid)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("no device {udid}")))?;
        Ok(self.device_value(&device, Self::now()))
    }

    /// The device's queued commands and recorded results:
    /// `{"queued": [{"command_uuid", "request_type", "queued_at", "not_now_at", "expires_at"}],
    ///   "results": [{"command_uuid", "request_type", "status", "error_chain", "at", "raw"}]}`.
    pub async fn device_commands_json(&self, udid: &str) -> Result<Value, ServiceError> {
        if self.store.device(udid).await?.is_none() {
            return Err(ServiceError::NotFound(format!("no device {udid}")));
        }
        let queued = self.store.queued(udid).await?;
        let results = self.store.results(udid).await?;
        let queued: Vec<Value> = queued
            .iter()
            .map(|q| {
                serde_json::json!({
                    "command_uuid": q.uuid,
                    "request_type": q.request_type,
                    "queued_at": rfc3339(q.queued_at),
                    "not_now_at": q.not_now_at.map(rfc3339),
                    "expires_at": q.expires_at.map(rfc3339),
                })
            })
            .collect();
        let results: Vec<Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "command_uuid": r.command_uuid,
                    "request_type": r.request_type,
                    "status": r.status.as_str(),
                    "error_chain": r.error_chain,
                    "at": rfc3339(r.at),
                    "raw": String::from_utf8_lossy(&r.raw),
                })
            })
            .collect();
        Ok(serde_json::json!({ "queued": queued, "results": results }))
    }

    /// The CSV export (header row first, CRLF line ends), of every device or those in `only`
    /// state.
    pub async fn devices_csv(&self, only: Option<ConnState>) -> Result<String, ServiceError> {
        let now = Self::now();
        let mut out = String::new();
        csv::write_record(&mut out, &CSV_HEADER);
        self.each_device(|d| {
            let state = self.state(d, now);
            if only.is_some_and(|s| s != state) {
                return;
            }
            let time = |t: Option<time::OffsetDateTime>| t.map(rfc3339).unwrap_or_default();
            let text = |s: &Option<String>| s.clone().unwrap_or_default();
            let model = d
                .info
                .model_name
                .as_ref()
                .or(d.info.product_name.as_ref())
                .or(d.info.model.as_ref())
                .cloned()
                .unwrap_or_default();
            csv::write_record(
                &mut out,
                &[
                    text(&d.info.device_name),
                    model,
                    text(&d.info.os_version),
                    text(&d.info.serial_number),
                    time(d.info_collected_at),
                    time(d.enrolled_at),
                    state.as_str().to_owned(),
                    time(d.last_seen_at),
                ],
            );
        })
        .await?;
        Ok(out)
    }

    /// The connectivity report as JSON:
    /// `{"states": {"responded": N, …}, "latency_ms": {"p50", "p99", "max", "count"}, …}`.
    pub async fn connectivity_json(&self) -> Result<Value, ServiceError> {
        let now = Self::now();
        let mut tally = connectivity::Tally::new(now, self.config.unreachable_after);
        self.each_device(|d| tally.add(d)).await?;
        let total = tally.total();
        let mut value = serde_json::to_value(tally.finish()).unwrap_or_default();
        if let Value::Object(map) = &mut value {
            map.insert("total".into(), total.into());
            map.insert(
                "unreachable_after_s".into(),
                self.config.unreachable_after.as_secs().into(),
            );
            map.insert("generated_at".into(), rfc3339(now).into());
        }
        Ok(value)
    }

    /// The device's connectivity state now.
    pub fn state(&self, device: &Device, now: time::OffsetDateTime) -> ConnState {
        connectivity::state(device, now, self.config.unreachable_after)
    }

    fn device_value(&self, device: &Device, now: time::OffsetDateTime) -> Value {
        let mut value = serde_json::to_value(device).unwrap_or_default();
        if let Value::Object(map) = &mut value {
            map.insert("state".into(), self.state(device, now).as_str().into());
            map.insert(
                "push_latency_ms".into(),
                device
                    .push_latency()
                    .map(|l| Value::from(u64::try_from(l.as_millis()).unwrap_or(u64::MAX)))
                    .unwrap_or(Value::Null),
            );
        }
        value
    }
}

/// Parses a state name of the admin API (`responded`, `push_failed`, …).
pub fn parse_state(text: &str) -> Option<ConnState> {
    ConnState::ALL.into_iter().find(|s| s.as_str() == text)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::push::FakePusher;
    use crate::service::{PushCertState, ServiceConfig};
    use crate::store::conformance::{authenticate, t, token_update};
    use crate::store::{MemoryStore, Store};

    /// The listings and the report read the store in pages: a fleet of two pages and one
    /// device more is listed whole, in order, each device once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_span_pages_and_hold_every_device_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let n = 2 * LISTING_PAGE + 1;
        for i in 0..n {
            let udid = format!("D{i:05}");
            store
                .authenticate(&authenticate(&udid), None, t(0))
                .await
                .unwrap();
            if i % 2 == 0 {
                store
                    .token_update(&token_update(&udid, 1), t(0))
                    .await
                    .unwrap();
            }
        }
        let service = Service::new(
            Arc::clone(&store),
            FakePusher::new(),
            PushCertState::new(None, None),
            ServiceConfig::default(),
        );

        let json: Vec<Value> = serde_json::from_slice(&service.devices_json(None).await.unwrap())
            .expect("devices_json writes a JSON array");
        let udids: Vec<&str> = json.iter().map(|d| d["udid"].as_str().unwrap()).collect();
        let expected: Vec<String> = (0..n).map(|i| format!("D{i:05}")).collect();
        assert_eq!(udids, expected, "every device once, in UDID order");

        let enrolled = n.div_ceil(2);
        let never_pushed = service
            .devices_json(Some(ConnState::NeverPushed))
            .await
            .unwrap();
        let never_pushed: Vec<Value> = serde_json::from_slice(&never_pushed).unwrap();
        assert_eq!(
            never_pushed.len(),
            enrolled,
            "the filter applies on every page"
        );

        let csv = service.devices_csv(None).await.unwrap();
        assert_eq!(csv.lines().count(), n + 1, "a header and a line per device");

        let report = service.connectivity_json().await.unwrap();
        assert_eq!(report["total"], n);
        let counted: u64 = report["states"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum();
        assert_eq!(counted, n as u64);
        assert_eq!(report["states"]["never_pushed"], enrolled);
    }
}
