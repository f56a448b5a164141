//! Read models for the admin API: devices with their connectivity state, the CSV export and
//! the connectivity report.

use serde_json::Value;

use crate::connectivity::{self, ConnState};
use crate::http::csv;
use crate::store::{rfc3339, Device};

use super::{Service, ServiceError};

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
        let devices = self.store.devices().await?;
        let mut out = Vec::with_capacity(2 + 768 * devices.len());
        out.push(b'[');
        let selected = devices
            .iter()
            .filter(|d| only.is_none_or(|s| self.state(d, now) == s));
        for (i, d) in selected.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // Writing a `Value` into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut out, &self.device_value(d, now));
        }
        out.push(b']');
        Ok(out)
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
        let devices = self.store.devices().await?;
        let mut out = String::with_capacity(128 * (devices.len() + 1));
        csv::write_record(&mut out, &CSV_HEADER);
        for d in &devices {
            let state = self.state(d, now);
            if only.is_some_and(|s| s != state) {
                continue;
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
        }
        Ok(out)
    }

    /// The connectivity report as JSON:
    /// `{"states": {"responded": N, …}, "latency_ms": {"p50", "p99", "max", "count"}, …}`.
    pub async fn connectivity_json(&self) -> Result<Value, ServiceError> {
        let now = Self::now();
        let devices = self.store.devices().await?;
        let report = connectivity::Report::compute(&devices, now, self.config.unreachable_after);
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        if let Value::Object(map) = &mut value {
            map.insert("total".into(), devices.len().into());
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
