//! Read models for the admin API: devices with their connectivity state, the CSV export and
//! the connectivity report.

use std::sync::Arc;
use utoipa::ToSchema;

use serde::Serialize;

use super::csv;
use magicpush_mdm::ErrorChainItem;
use magicpush_store::connectivity::{self, ConnState, Report};
use magicpush_store::{rfc3339, CommandResult, Device, QueuedCommand};

use super::listing::{Listing, Pages, Render, PAGE};
use super::paging::{Cursor, PageAssembly, PageLimit};
use super::search::Search;
use super::{Service, ServiceError};

/// The CSV export's header (and column order).
pub const CSV_HEADER: [&str; 9] = [
    "UDID",
    "Device name",
    "Model",
    "OS version",
    "Serial number",
    "Collected at",
    "Enrolled at",
    "State",
    "Last seen",
];

/// Which devices a listing shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFilter {
    /// Only those in this state.
    pub state: Option<ConnState>,
    /// Only those enrolled with this topic (one tenant's).
    pub topic: Option<String>,
    /// Only those whose UDID, serial number or name holds this text.
    pub search: Option<Search>,
}

impl DeviceFilter {
    /// Whether `device`, in `state` now, is shown.
    fn shows(&self, device: &Device, state: impl FnOnce() -> ConnState) -> bool {
        if let Some(topic) = &self.topic {
            if device.topic.as_deref() != Some(topic.as_str()) {
                return false;
            }
        }
        if self.search.as_ref().is_some_and(|q| !q.matches(device)) {
            return false;
        }
        self.state.is_none_or(|s| s == state())
    }
}

impl From<Option<ConnState>> for DeviceFilter {
    fn from(state: Option<ConnState>) -> Self {
        DeviceFilter {
            state,
            ..DeviceFilter::default()
        }
    }
}

impl Service {
    /// A listing's topic must be a tenant's or one devices enrolled with (those of a tenant
    /// since removed, or enrolled before any certificate): a typo should not read as a
    /// tenant without devices.
    async fn check_listing_topic(&self, topic: Option<&str>) -> Result<(), ServiceError> {
        let Some(topic) = topic else { return Ok(()) };
        let watch = self.pushcert.watch();
        if watch.len() == 0 || watch.tenant(topic).is_some() {
            return Ok(());
        }
        if self.store.enrolled_topics().await?.contains_key(topic) {
            return Ok(());
        }
        Err(ServiceError::UnknownTenant {
            topic: topic.to_owned(),
            known: watch.some_topics(),
        })
    }

    /// Every device (or those in `only` state) as a JSON array, in text: the store's fields
    /// plus `state` and `push_latency_ms`. Streamed a page of devices at a time
    /// ([`Listing`]): a large fleet costs a page of devices and of text, not the whole list
    /// (built whole, a million devices took 2.8 GB).
    pub async fn devices_json(
        self: &Arc<Self>,
        only: impl Into<DeviceFilter>,
    ) -> Result<Listing, ServiceError> {
        let only = only.into();
        self.check_listing_topic(only.topic.as_deref()).await?;
        let topic = only.topic.clone();
        let now = Self::now();
        let mut first = true;
        let render: Render = Box::new(move |service, d, out| {
            if !only.shows(d, || service.state(d, now)) {
                return;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            // Writing a device into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, &service.device_view(d, now));
        });
        self.listing(topic.as_deref(), b"[".to_vec(), b"]", render)
            .await
    }

    /// One page of the device list: at most `limit` devices `only` shows, in UDID order,
    /// after `cursor` (from the first without one). A request examines at most
    /// [`super::paging::scan_bound`] devices, so its cost does not grow with the fleet
    /// whatever the filter matches; the page may then be short, or empty, with a cursor.
    pub async fn devices_page(
        &self,
        only: DeviceFilter,
        limit: PageLimit,
        cursor: Option<Cursor>,
    ) -> Result<DevicePage, ServiceError> {
        self.check_listing_topic(only.topic.as_deref()).await?;
        let now = Self::now();
        let mut assembly = PageAssembly::new(limit, cursor);
        while let Some(read) = assembly.next_read() {
            let devices = match only.topic.as_deref() {
                Some(topic) => {
                    self.store
                        .topic_devices_page(topic, read.after, read.count)
                        .await?
                }
                None => self.store.devices_page(read.after, read.count).await?,
            };
            assembly.take(devices, |d| only.shows(d, || self.state(d, now)));
        }
        let page = assembly.finish();
        let udids: Vec<String> = page.devices.iter().map(|d| d.udid.clone()).collect();
        let mut invitations: std::collections::HashMap<String, String> = self
            .store
            .device_invitations(&udids)
            .await?
            .into_iter()
            .map(|d| (d.udid, d.invitation_id))
            .collect();
        Ok(DevicePage {
            devices: page
                .devices
                .into_iter()
                .map(|device| DeviceView {
                    state: self.state(&device, now).as_str(),
                    push_latency_ms: push_latency_ms(&device),
                    invitation: invitations.remove(&device.udid),
                    device,
                })
                .collect(),
            next_cursor: page.next.map(|c| c.encode()),
            generated_at: rfc3339(now),
        })
    }

    /// One device; [`ServiceError::NoDevice`] if unknown.
    pub async fn device(&self, udid: &str) -> Result<DeviceView, ServiceError> {
        let device = self
            .store
            .device(udid)
            .await?
            .ok_or_else(|| ServiceError::NoDevice {
                udid: udid.to_owned(),
            })?;
        let now = Self::now();
        let invitation = self
            .store
            .device_invitations(std::slice::from_ref(&device.udid))
            .await?
            .into_iter()
            .next()
            .map(|d| d.invitation_id);
        Ok(DeviceView {
            state: self.state(&device, now).as_str(),
            push_latency_ms: push_latency_ms(&device),
            invitation,
            device,
        })
    }

    /// The device's queued commands and recorded results.
    pub async fn device_commands(&self, udid: &str) -> Result<DeviceCommands, ServiceError> {
        if self.store.device(udid).await?.is_none() {
            return Err(ServiceError::NoDevice {
                udid: udid.to_owned(),
            });
        }
        let queued = self.store.queued(udid).await?;
        let results = self.store.results(udid).await?;
        Ok(DeviceCommands {
            queued: queued.into_iter().map(QueuedView::from).collect(),
            results: results.into_iter().map(ResultView::from).collect(),
        })
    }

    /// The CSV export (header row first, CRLF line ends), of every device or those in `only`
    /// state. Streamed like [`Service::devices_json`].
    pub async fn devices_csv(
        self: &Arc<Self>,
        only: impl Into<DeviceFilter>,
    ) -> Result<Listing, ServiceError> {
        let only = only.into();
        self.check_listing_topic(only.topic.as_deref()).await?;
        let topic = only.topic.clone();
        let now = Self::now();
        let mut head = String::new();
        csv::write_record(&mut head, &CSV_HEADER);
        let mut line = String::new();
        let render: Render = Box::new(move |service, d, out| {
            let state = service.state(d, now);
            if !only.shows(d, || state) {
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
            line.clear();
            csv::write_record(
                &mut line,
                &[
                    d.udid.clone(),
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
            out.extend_from_slice(line.as_bytes());
        });
        self.listing(topic.as_deref(), head.into_bytes(), b"", render)
            .await
    }

    /// The connectivity report of every device, or (`topic`) one tenant's.
    pub async fn connectivity(
        &self,
        topic: Option<&str>,
    ) -> Result<ConnectivityReport, ServiceError> {
        self.check_listing_topic(topic).await?;
        let now = Self::now();
        let window = self.unreachable_after();
        let mut tally = connectivity::Tally::new(now, window);
        let mut pages = Pages::new(Arc::clone(&self.store), PAGE).of_topic(topic);
        while let Some(page) = pages.next().await? {
            page.iter().for_each(|d| tally.add(d));
        }
        Ok(ConnectivityReport {
            total: tally.total(),
            report: tally.finish(),
            unreachable_after_s: window.as_secs(),
            generated_at: rfc3339(now),
        })
    }

    /// The device's connectivity state now.
    pub fn state(&self, device: &Device, now: time::OffsetDateTime) -> ConnState {
        connectivity::state(device, now, self.unreachable_after())
    }

    fn device_view<'a>(
        &self,
        device: &'a Device,
        now: time::OffsetDateTime,
    ) -> DeviceView<&'a Device> {
        DeviceView {
            device,
            state: self.state(device, now).as_str(),
            push_latency_ms: push_latency_ms(device),
            invitation: None,
        }
    }
}

/// A device as the admin API shows it: the store's fields plus its connectivity state and
/// its last push→report latency.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceView<D = Device> {
    /// The store's fields (flattened).
    #[serde(flatten)]
    pub device: D,
    /// The connectivity state now (`responded`, `push_failed`, …).
    pub state: &'static str,
    /// From the last push to the next report, if the last push was answered.
    pub push_latency_ms: Option<u64>,
    /// The enrollment invitation the device enrolled through, if it did (in a page of the
    /// list and a device's view; the streamed whole list leaves it out).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
}

fn push_latency_ms(device: &Device) -> Option<u64> {
    device
        .push_latency()
        .map(|l| u64::try_from(l.as_millis()).unwrap_or(u64::MAX))
}

/// One page of the device list (`GET /v1/devices?limit=N`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DevicePage {
    /// The devices shown, in UDID order, as the whole list shows them.
    #[schema(value_type = Vec<crate::http::openapi::Device>)]
    pub devices: Vec<DeviceView>,
    /// Pass as `cursor` for the next page; `null` once the list has been read to its end.
    /// A short or empty page with a cursor is not the end: the request stopped at its
    /// scan bound.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
    /// When the states were computed, RFC 3339.
    pub generated_at: String,
}

/// A device's queued commands and recorded results.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeviceCommands {
    /// The commands waiting for the device, in queue order.
    pub queued: Vec<QueuedView>,
    /// The results the device reported.
    pub results: Vec<ResultView>,
}

/// A queued command, without its body.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueuedView {
    /// `CommandUUID`.
    pub command_uuid: String,
    /// `RequestType`.
    pub request_type: String,
    /// RFC 3339.
    pub queued_at: String,
    /// The last NotNow, RFC 3339.
    #[schema(required = true)]
    pub not_now_at: Option<String>,
    /// Not sent after, RFC 3339.
    #[schema(required = true)]
    pub expires_at: Option<String>,
}

impl From<QueuedCommand> for QueuedView {
    fn from(q: QueuedCommand) -> Self {
        QueuedView {
            command_uuid: q.uuid,
            request_type: q.request_type,
            queued_at: rfc3339(q.queued_at),
            not_now_at: q.not_now_at.map(rfc3339),
            expires_at: q.expires_at.map(rfc3339),
        }
    }
}

/// A recorded command result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ResultView {
    /// `CommandUUID` as reported.
    pub command_uuid: String,
    /// The command's RequestType, if the store knows the command.
    #[schema(required = true)]
    pub request_type: Option<String>,
    /// The status reported (`Acknowledged`, `Error`, …).
    pub status: &'static str,
    /// The report's `ErrorChain`.
    #[schema(value_type = Vec<crate::http::openapi::ErrorChainItem>)]
    pub error_chain: Vec<ErrorChainItem>,
    /// When it was recorded, RFC 3339.
    pub at: String,
    /// The whole report (an XML plist), as text.
    pub raw: String,
}

impl From<CommandResult> for ResultView {
    fn from(r: CommandResult) -> Self {
        ResultView {
            status: r.status.as_str(),
            raw: String::from_utf8_lossy(&r.raw).into_owned(),
            command_uuid: r.command_uuid,
            request_type: r.request_type,
            error_chain: r.error_chain,
            at: rfc3339(r.at),
        }
    }
}

/// The connectivity report: devices per state and push→report latency, with the total and
/// the threshold of `unreachable`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectivityReport {
    /// `states` and `latency_ms` (flattened).
    #[serde(flatten)]
    #[schema(value_type = crate::http::openapi::ConnectivityCounts)]
    pub report: Report,
    /// Devices counted.
    pub total: usize,
    /// A device is `unreachable` this long after an accepted push it did not answer.
    pub unreachable_after_s: u64,
    /// When the report was made, RFC 3339.
    pub generated_at: String,
}

/// Parses a state name of the admin API (`responded`, `push_failed`, …).
pub fn parse_state(text: &str) -> Option<ConnState> {
    ConnState::ALL.into_iter().find(|s| s.as_str() == text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{PushCertState, ServiceConfig};
    use magicpush_store::{MemoryStore, Store};
    use magicpush_testkit::conformance::{authenticate, t, token_update};
    use magicpush_testkit::FakePusher;

    /// The listings and the report read the store in pages: a fleet of two pages and one
    /// device more is listed whole, in order, each device once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn listings_span_pages_and_hold_every_device_once() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        let n = 2 * PAGE + 1;
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
        let service = Arc::new(Service::new(
            Arc::clone(&store),
            FakePusher::new(),
            PushCertState::new(None),
            ServiceConfig::default(),
        ));
        let text = |listing: Listing| async move { listing.collect().await.unwrap() };

        let json = text(service.devices_json(None).await.unwrap()).await;
        let json: Vec<serde_json::Value> = serde_json::from_slice(&json).expect("a JSON array");
        let udids: Vec<&str> = json.iter().map(|d| d["udid"].as_str().unwrap()).collect();
        let expected: Vec<String> = (0..n).map(|i| format!("D{i:05}")).collect();
        assert_eq!(udids, expected, "every device once, in UDID order");

        let enrolled = n.div_ceil(2);
        let never_pushed = text(
            service
                .devices_json(Some(ConnState::NeverPushed))
                .await
                .unwrap(),
        )
        .await;
        let never_pushed: Vec<serde_json::Value> = serde_json::from_slice(&never_pushed).unwrap();
        assert_eq!(
            never_pushed.len(),
            enrolled,
            "the filter applies on every page"
        );

        let csv = text(service.devices_csv(None).await.unwrap()).await;
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), n + 1, "a header and a line per device");

        let report = serde_json::to_value(service.connectivity(None).await.unwrap()).unwrap();
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
