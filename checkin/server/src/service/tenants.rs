//! Tenants: the business customers one server serves, one per push certificate topic. A tenant
//! is its certificate (and so its topic), a display name and the Apple ID memo (the seed's
//! note of which Apple ID renews it); its devices are those that enrolled with its topic.
//!
//! This module holds the tenants in memory as the service and its push tasks share them
//! ([`CertWatch`]), with what the certificates' life keeps beside them ([`PushCertState`]:
//! requests, history, events). The store keeps all of it (`crate::service::pushcert` writes
//! every change through before it is answered).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use utoipa::ToSchema;

use magicpush_engine::cert::CertificateInfo;
use magicpush_engine::{PushError, PushResult};
use magicpush_store::connectivity::ConnState;
use magicpush_store::{rfc3339, PushCertLog};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::notify::Notifier;
use crate::pushcert::expiry::{self, names, CertEvent, CertState, Thresholds};
use crate::pushcert::history::{HistoryEntry, HISTORY_LIMIT};
use crate::pushcert::journal::Journal;
use crate::pushcert::pending::PendingRequests;
use crate::pushcert::request::{Subject, VendorIdentity};

use super::listing::{Pages, PAGE};
use super::{Service, ServiceError};

/// Settings of the certificates' life: warning thresholds, request defaults, the vendor.
#[derive(Debug, Default)]
pub struct PushCertSettings {
    /// `--expiry-warn-days`.
    pub thresholds: Thresholds,
    /// `--csr-email`, `--csr-cn`, `--csr-country`: the request's subject when the body names
    /// none.
    pub csr_subject: Subject,
    /// `--vendor-cert`/`--vendor-key`: requests are vendor-signed.
    pub vendor: Option<Arc<VendorIdentity>>,
    /// `--vendor-name` (else the vendor certificate's; else `MAGICPUSH`).
    pub vendor_name: Option<String>,
}

/// APNs's refusal of a tenant's certificate, seen from push outcomes.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    any: AtomicBool,
    detail: Mutex<Option<(String, OffsetDateTime)>>,
}

impl Refusals {
    /// The refusal and since when, if APNs refuses the certificate.
    pub(crate) fn detail(&self) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.detail)
            .as_ref()
            .map(|(d, at)| format!("{d}, since {}", rfc3339(*at)))
    }

    /// Forgets the refusal; true if there was one.
    pub(crate) fn clear(&self) -> bool {
        if !self.any.swap(false, Ordering::AcqRel) {
            return false;
        }
        lock(&self.detail).take().is_some()
    }

    /// Notes a refusal; true if it is the first since the last [`Refusals::clear`].
    fn note(&self, detail: &str, now: OffsetDateTime) -> bool {
        let mut slot = lock(&self.detail);
        let first = slot.is_none();
        if first {
            *slot = Some((detail.to_owned(), now));
        }
        self.any.store(true, Ordering::Release);
        first
    }
}

/// One tenant: its certificate in use, APNs's refusal of it, its name and Apple ID memo.
#[derive(Debug)]
pub(crate) struct Tenant {
    cert: RwLock<CertificateInfo>,
    pub(crate) refusals: Refusals,
    pub(crate) memo: RwLock<Option<String>>,
    pub(crate) name: RwLock<Option<String>>,
}

impl Tenant {
    pub(crate) fn new(cert: CertificateInfo) -> Tenant {
        Tenant {
            cert: RwLock::new(cert),
            refusals: Refusals::default(),
            memo: RwLock::new(None),
            name: RwLock::new(None),
        }
    }

    /// The certificate in use.
    pub(crate) fn info(&self) -> CertificateInfo {
        read(&self.cert).clone()
    }

    /// Its topic (the key of the tenant; a renewal keeps it).
    pub(crate) fn topic(&self) -> String {
        read(&self.cert).topic().to_owned()
    }

    /// Puts a renewal in place.
    pub(crate) fn renew(&self, cert: CertificateInfo) {
        *write(&self.cert) = cert;
    }

    /// The certificate's state at `now`.
    pub(crate) fn state(&self, now: OffsetDateTime, thresholds: &Thresholds) -> CertState {
        expiry::state(
            &read(&self.cert),
            now,
            thresholds,
            self.refusals.detail().is_some(),
        )
    }
}

/// The tenants, shared with push tasks: the refusal flags, the certificates' facts for the
/// webhook, the webhook.
#[derive(Debug, Default)]
pub(crate) struct CertWatch {
    tenants: RwLock<BTreeMap<String, Arc<Tenant>>>,
    /// Tenants whose certificate APNs refuses now: while none is, a delivery has nothing to
    /// clear and needs no lookup.
    refused: AtomicUsize,
    notifier: Option<Notifier>,
}

impl CertWatch {
    /// The tenant of `topic`.
    pub(crate) fn tenant(&self, topic: &str) -> Option<Arc<Tenant>> {
        read(&self.tenants).get(topic).cloned()
    }

    /// Every tenant, by topic.
    pub(crate) fn all(&self) -> Vec<Arc<Tenant>> {
        read(&self.tenants).values().cloned().collect()
    }

    /// The topics, sorted.
    pub(crate) fn topics(&self) -> Vec<String> {
        read(&self.tenants).keys().cloned().collect()
    }

    /// A few of the topics for a message ([`some_topics`]), without copying them all.
    pub(crate) fn some_topics(&self) -> String {
        some_topics(read(&self.tenants).keys())
    }

    /// How many tenants there are.
    pub(crate) fn len(&self) -> usize {
        read(&self.tenants).len()
    }

    /// The only tenant, when there is exactly one.
    pub(crate) fn only(&self) -> Option<Arc<Tenant>> {
        let tenants = read(&self.tenants);
        match tenants.len() {
            1 => tenants.values().next().cloned(),
            _ => None,
        }
    }

    /// Whether a check-in with `topic` is served: its topic is a tenant's, or no tenant is
    /// registered at all. No allocation: it runs on every check-in.
    pub(crate) fn serves(&self, topic: &str) -> bool {
        let tenants = read(&self.tenants);
        tenants.is_empty() || tenants.contains_key(topic)
    }

    pub(crate) fn insert(&self, tenant: Arc<Tenant>) {
        write(&self.tenants).insert(tenant.topic(), tenant);
    }

    pub(crate) fn remove(&self, topic: &str) -> Option<Arc<Tenant>> {
        let tenant = write(&self.tenants).remove(topic)?;
        self.clear_refusal(&tenant);
        Some(tenant)
    }

    /// Forgets APNs's refusal of `tenant`'s certificate (a new one is in place); true if
    /// there was one.
    pub(crate) fn clear_refusal(&self, tenant: &Tenant) -> bool {
        let cleared = tenant.refusals.clear();
        if cleared {
            self.refused.fetch_sub(1, Ordering::AcqRel);
        }
        cleared
    }

    /// Notes a push outcome for its tenant: a certificate refusal marks the certificate
    /// `rejected` (once, logged and announced); a delivery clears it. `topic` is the push's
    /// (`None`: the only tenant's).
    pub(crate) fn observe(&self, topic: Option<&str>, result: &PushResult) {
        let refusal = matches!(result, Err(PushError::CertificateRejected { .. }));
        if !refusal && self.refused.load(Ordering::Acquire) == 0 {
            return;
        }
        let tenant = match topic {
            Some(t) => self.tenant(t),
            None => self.only(),
        };
        let Some(tenant) = tenant else { return };
        match result {
            Ok(_) => {
                if tenant.refusals.any.load(Ordering::Acquire) && self.clear_refusal(&tenant) {
                    tracing::info!(topic = %tenant.topic(), "APNs accepts the push certificate again");
                }
            }
            Err(PushError::CertificateRejected { detail, .. }) => {
                let now = Service::now();
                if tenant.refusals.note(detail, now) {
                    self.refused.fetch_add(1, Ordering::AcqRel);
                    let info = tenant.info();
                    tracing::warn!(topic = %info.topic(), "APNs refused the push certificate: {detail}");
                    let event = CertEvent::new(names::REJECTED, &info, now);
                    self.announce(&event, Some(detail));
                }
            }
            Err(_) => {}
        }
    }

    /// Sends an event to the webhook, if one is configured. Events carry their topic.
    pub(crate) fn announce(&self, event: &CertEvent, reason: Option<&str>) {
        let Some(notifier) = &self.notifier else {
            return;
        };
        let mut body = serde_json::json!({
            "event": event.event,
            "topic": event.topic,
            "serial": event.serial,
            "days_left": event.days_left,
            "not_after": event.not_after,
            "at": event.at,
        });
        if let Some(t) = event.threshold_days {
            body["threshold_days"] = t.into();
        }
        if let Some(r) = reason {
            body["reason"] = r.into();
        }
        notifier.send(&body);
    }

    pub(crate) fn notifier(&self) -> Option<&Notifier> {
        self.notifier.as_ref()
    }
}

/// The tenants and everything about their certificates' life, as read from the store at
/// start ([`Service::load_pushcert_state`]), written through on every change, and read again
/// when another node sharing the store changed it ([`Service::sync_pushcerts`]).
#[derive(Debug)]
pub struct PushCertState {
    pub(crate) watch: Arc<CertWatch>,
    /// The Apple ID memo noted while no tenant is registered (it moves to the first).
    pub(crate) noted_memo: RwLock<Option<String>>,
    pub(crate) settings: PushCertSettings,
    pub(crate) pending: PendingRequests,
    /// Every certificate registered, all tenants' (each entry names its topic).
    pub(crate) history: Journal<HistoryEntry>,
    /// The expiry events announced, all tenants' (each names its topic and serial).
    pub(crate) events: Journal<CertEvent>,
    /// Held through each change (check, store, engine, state), so that two uploads at once
    /// end as one of them entirely, never as a mix; and through each re-read of what other
    /// nodes changed (`pushcert_sync`).
    pub(crate) updates: tokio::sync::Mutex<()>,
    /// The certificates given at start that the store does not keep (`serve --cert-dir`,
    /// `--push-cert`), topic → serial: while a tenant uses its own, re-reading the store
    /// neither removes it nor puts back an older stored one (see `pushcert_sync`).
    pub(crate) given_at_start: BTreeMap<String, String>,
}

impl PushCertState {
    /// The state for the certificates the pusher was built with (none: none registered yet),
    /// empty until [`Service::load_pushcert_state`] reads the rest from the store.
    pub fn new(certificates: impl IntoIterator<Item = CertificateInfo>) -> Self {
        Self::with_settings(certificates, PushCertSettings::default(), None)
    }

    /// [`PushCertState::new`] with settings and an optional webhook.
    pub fn with_settings(
        certificates: impl IntoIterator<Item = CertificateInfo>,
        settings: PushCertSettings,
        notifier: Option<Notifier>,
    ) -> Self {
        let tenants = certificates
            .into_iter()
            .map(|c| (c.topic().to_owned(), Arc::new(Tenant::new(c))))
            .collect();
        PushCertState {
            watch: Arc::new(CertWatch {
                tenants: RwLock::new(tenants),
                refused: AtomicUsize::new(0),
                notifier,
            }),
            noted_memo: RwLock::new(None),
            events: Journal::new(PushCertLog::Events, expiry::EVENTS_LIMIT),
            pending: PendingRequests::default(),
            history: Journal::new(PushCertLog::History, HISTORY_LIMIT),
            settings,
            updates: tokio::sync::Mutex::new(()),
            given_at_start: BTreeMap::new(),
        }
    }

    /// Notes which of the certificates started with were given at start and are not the
    /// ones the store keeps (`serve --cert-dir`), so that another node's changes in the
    /// store do not undo them. `certificates`: their topics and serials.
    pub fn given_at_start(
        mut self,
        certificates: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        self.given_at_start = certificates.into_iter().collect();
        self
    }

    /// The topic of the only tenant (`None` with none or several).
    pub fn topic(&self) -> Option<String> {
        self.watch.only().map(|t| t.topic())
    }

    /// The only tenant's certificate (`None` with none or several).
    pub fn info(&self) -> Option<CertificateInfo> {
        self.watch.only().map(|t| t.info())
    }

    /// The settings.
    pub fn settings(&self) -> &PushCertSettings {
        &self.settings
    }

    pub(crate) fn watch(&self) -> &Arc<CertWatch> {
        &self.watch
    }

    /// The certificates' state at `now` for `/healthz`: the worst of the tenants' (rejected,
    /// then expired, then expiring), `None` without a tenant.
    pub fn state(&self, now: OffsetDateTime) -> Option<CertState> {
        let rank = |s: &CertState| match s {
            CertState::Valid => 0,
            CertState::Expiring => 1,
            CertState::Expired => 2,
            CertState::Rejected => 3,
        };
        self.watch
            .all()
            .iter()
            .map(|t| t.state(now, &self.settings.thresholds))
            .max_by_key(rank)
    }

    /// "No certificate", with the pending requests if any.
    pub fn missing_message(&self) -> String {
        super::pushcert::no_certificate_message(&self.waiting_requests())
    }

    /// The file names of the requests issued and waiting for Apple's certificate.
    pub(crate) fn waiting_requests(&self) -> Vec<String> {
        self.pending
            .list()
            .into_iter()
            .map(|p| p.file_name)
            .collect()
    }
}

/// A tenant's entry in `GET /v1/topics`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantSummary {
    /// The topic: the tenant's key.
    pub topic: String,
    /// Its display name, if set.
    #[schema(required = true)]
    pub name: Option<String>,
    /// The Apple ID memo, if set.
    #[schema(required = true)]
    pub apple_id: Option<String>,
    /// Its certificate in use.
    pub certificate: CertSummary,
    /// Its devices (those enrolled with its topic) by connectivity state.
    pub devices: DeviceCounts,
}

/// A certificate in a tenant listing.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CertSummary {
    /// Subject DN.
    pub subject: String,
    /// Serial number, hex.
    pub serial: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// Whole days until expiry (negative once expired).
    pub days_left: i64,
    /// `valid`, `expiring`, `expired` or `rejected`.
    pub state: CertState,
}

/// Devices counted by connectivity state.
#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct DeviceCounts {
    /// Every device counted.
    pub total: usize,
    /// Count per state (states with none left out).
    #[schema(value_type = crate::http::openapi::StateCounts)]
    pub states: BTreeMap<ConnState, usize>,
}

/// `GET /v1/topics`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantList {
    /// Every tenant, by topic.
    pub topics: Vec<TenantSummary>,
    /// Devices whose topic is no tenant's (enrolled before any certificate was registered, or
    /// with a tenant since removed): they are refused at check-in and never pushed.
    pub unassigned: DeviceCounts,
    /// When the counts were taken, RFC 3339.
    pub generated_at: String,
}

/// `PUT /v1/topics/{topic}`: the fields to set (absent: unchanged; empty: cleared).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantUpdate {
    /// The display name.
    pub name: Option<String>,
    /// The Apple ID memo.
    pub apple_id: Option<String>,
}

/// The longest display name, in characters.
const NAME_MAX: usize = 200;

impl Service {
    /// `GET /v1/topics`: every tenant with its certificate and its devices counted by state
    /// (one walk over the store, a page at a time).
    pub async fn topics(&self) -> Result<TenantList, ServiceError> {
        let now = Self::now();
        let thresholds = &self.pushcert.settings.thresholds;
        let tenants = self.pushcert.watch().all();
        let mut counts: BTreeMap<String, DeviceCounts> = tenants
            .iter()
            .map(|t| (t.topic(), DeviceCounts::default()))
            .collect();
        let mut unassigned = DeviceCounts::default();
        let mut pages = Pages::new(Arc::clone(&self.store), PAGE);
        while let Some(page) = pages.next().await? {
            for device in &page {
                let tally = match device.topic.as_deref().and_then(|t| counts.get_mut(t)) {
                    Some(tally) => tally,
                    None => &mut unassigned,
                };
                tally.total += 1;
                *tally.states.entry(self.state(device, now)).or_default() += 1;
            }
        }
        let topics = tenants
            .iter()
            .map(|t| {
                let info = t.info();
                TenantSummary {
                    topic: info.topic().to_owned(),
                    name: read(&t.name).clone(),
                    apple_id: read(&t.memo).clone(),
                    certificate: CertSummary {
                        subject: info.subject().to_owned(),
                        serial: info.serial().to_owned(),
                        not_after: rfc3339(info.not_after()),
                        days_left: info.days_left(now),
                        state: t.state(now, thresholds),
                    },
                    devices: counts.remove(info.topic()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(TenantList {
            topics,
            unassigned,
            generated_at: rfc3339(now),
        })
    }

    /// `PUT /v1/topics/{topic}`: sets a tenant's display name and/or Apple ID memo.
    pub async fn set_tenant(
        &self,
        topic: &str,
        update: TenantUpdate,
    ) -> Result<super::PushCertView, ServiceError> {
        if update.name.is_none() && update.apple_id.is_none() {
            return Err(ServiceError::BadRequest(
                "give {\"name\": …} and/or {\"apple_id\": …} (an empty string clears it)".into(),
            ));
        }
        let name = update
            .name
            .map(|n| Some(n.trim().to_owned()).filter(|n| !n.is_empty()))
            .map(|n| validate_name(n.as_deref()).map(|()| n))
            .transpose()?;
        let _one_at_a_time = self.pushcert_update().await?;
        let tenant = self.tenant(Some(topic))?;
        if let Some(name) = name {
            self.store.set_tenant_name(topic, name.as_deref()).await?;
            *write(&tenant.name) = name;
        }
        if let Some(apple_id) = update.apple_id {
            let apple_id = Some(apple_id.trim().to_owned()).filter(|s| !s.is_empty());
            self.write_memo(&tenant, apple_id).await?;
        }
        self.pushcert(Some(topic))
    }
}

/// A display name is at most [`NAME_MAX`] characters, without control characters.
fn validate_name(name: Option<&str>) -> Result<(), ServiceError> {
    let Some(name) = name else { return Ok(()) };
    if name.chars().count() > NAME_MAX {
        return Err(ServiceError::BadRequest(format!(
            "the name is longer than {NAME_MAX} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ServiceError::BadRequest(
            "the name holds a control character".into(),
        ));
    }
    Ok(())
}

/// A few topics for a message, and how many more there are.
pub(crate) fn some_topics<I>(topics: I) -> String
where
    I: IntoIterator,
    I::IntoIter: ExactSizeIterator,
    I::Item: AsRef<str>,
{
    const SHOWN: usize = 5;
    let topics = topics.into_iter();
    let more = topics.len().saturating_sub(SHOWN);
    let mut text = String::new();
    for (i, topic) in topics.take(SHOWN).enumerate() {
        if i > 0 {
            text.push_str(", ");
        }
        text.push_str(topic.as_ref());
    }
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

pub(crate) fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The guarded values are replaced whole; a poisoned lock still holds a consistent value.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_topics_then_how_many_more() {
        let topics: Vec<String> = (0..7).map(|i| format!("t.{i}")).collect();
        assert_eq!(some_topics(&topics[..2]), "t.0, t.1");
        assert_eq!(some_topics(&topics), "t.0, t.1, t.2, t.3, t.4 and 2 more");
    }

    fn tenant(ca: &magicpush_fixtures::Ca, uuid: &str) -> Arc<Tenant> {
        use magicpush_fixtures::{push_cert, KeyKind};
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let cert = push_cert(ca, uuid, now - day, now + day, KeyKind::EcdsaP256).unwrap();
        Arc::new(Tenant::new(
            CertificateInfo::from_pem(cert.cert_pem.as_bytes()).unwrap(),
        ))
    }

    #[test]
    fn a_refusal_marks_its_own_tenant_and_a_delivery_clears_it() {
        use magicpush_engine::{Delivered, Reason};
        let ca =
            magicpush_fixtures::Ca::new("test", magicpush_fixtures::KeyKind::EcdsaP256).unwrap();
        let watch = CertWatch::default();
        let (a, b) = (tenant(&ca, "a"), tenant(&ca, "b"));
        watch.insert(Arc::clone(&a));
        watch.insert(Arc::clone(&b));
        let refused: PushResult = Err(PushError::CertificateRejected {
            reason: Reason::new("BadCertificate").into(),
            detail: "403 BadCertificate".into(),
        });
        watch.observe(Some("com.apple.mgmt.External.a"), &refused);
        assert!(a.refusals.detail().is_some());
        assert!(b.refusals.detail().is_none(), "B's certificate is not A's");
        // B's delivery clears nothing of A's.
        let delivered: PushResult = Ok(Delivered {
            apns_id: "00000000-0000-0000-0000-000000000000".into(),
            latency: std::time::Duration::from_millis(1),
            attempts: 1,
        });
        watch.observe(Some("com.apple.mgmt.External.b"), &delivered);
        assert!(a.refusals.detail().is_some());
        watch.observe(Some("com.apple.mgmt.External.a"), &delivered);
        assert!(a.refusals.detail().is_none());
        assert_eq!(watch.refused.load(Ordering::Relaxed), 0);
        // A tenant removed while refused leaves no refusal counted.
        watch.observe(Some("com.apple.mgmt.External.b"), &refused);
        assert_eq!(watch.refused.load(Ordering::Relaxed), 1);
        watch.remove("com.apple.mgmt.External.b");
        assert_eq!(watch.refused.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn names_are_bounded_and_printable() {
        assert!(validate_name(None).is_ok());
        assert!(validate_name(Some("株式会社サンプル")).is_ok());
        assert!(validate_name(Some(&"x".repeat(NAME_MAX + 1))).is_err());
        assert!(validate_name(Some("a\u{7}b")).is_err());
    }

    #[test]
    fn no_tenant_serves_every_topic_and_one_serves_its_own() {
        use magicpush_fixtures::{push_cert, Ca, KeyKind};
        let watch = CertWatch::default();
        assert!(watch.serves("t.any"));
        assert!(watch.only().is_none());
        let ca = Ca::new("test", KeyKind::EcdsaP256).unwrap();
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        let cert = push_cert(&ca, "a", now - day, now + day, KeyKind::EcdsaP256).unwrap();
        let info = CertificateInfo::from_pem(cert.cert_pem.as_bytes()).unwrap();
        watch.insert(Arc::new(Tenant::new(info)));
        assert!(watch.serves("com.apple.mgmt.External.a"));
        assert!(
            !watch.serves("t.any"),
            "once a tenant exists, other topics are refused"
        );
        assert_eq!(watch.topics(), vec!["com.apple.mgmt.External.a".to_owned()]);
        assert!(watch.only().is_some());
        assert!(watch.remove("com.apple.mgmt.External.a").is_some());
        assert!(watch.serves("t.any"));
    }
}
