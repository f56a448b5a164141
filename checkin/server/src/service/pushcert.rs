//! The push certificate as the admin sees it: its details and state, the Apple ID memo (the
//! seed's note of which Apple ID renews it), hot replacement with the E320 topic check,
//! removal for the new-topic procedure, the history, the expiry watch and APNs's refusals.
//! The request side (CSR issue, pending keys) is in `pushcert_request`.
//!
//! All of it is kept in the store ([`magicpush_store::PushCertStore`]), keyed by topic where a
//! topic applies: the certificate and its key in use (so a restart uses what
//! `PUT /v1/pushcert` installed), the Apple ID memo of each topic, the history of registered certificates, the expiry
//! warnings announced, the keys of issued requests. [`Service::load_pushcert_state`] reads it
//! at start; every change is written through before it is answered. Data directories that
//! kept these in files are migrated at start (`crate::pushcert::legacy`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use magicpush_engine::cert::{self, CertificateInfo, PushCertificate};
use magicpush_engine::{PushError, PushResult};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;

use crate::notify::Notifier;
use crate::pushcert::expiry::{self, names, CertEvent, CertState, Thresholds};
use crate::pushcert::history::{self, HistoryEntry, HISTORY_LIMIT};
use crate::pushcert::journal::Journal;
use crate::pushcert::pending::{PendingRequest, PendingRequests};
use crate::pushcert::request::{self, Subject, VendorIdentity};
use magicpush_mdm::Secret;
use magicpush_store::{rfc3339, PushCertLog, StoredPushCert};

use super::{Service, ServiceError};

/// What `GET /v1/pushcert` and `/healthz` say when no certificate is registered.
pub const NO_CERTIFICATE: &str = "no push certificate registered: issue a request (POST /v1/pushcert/csr or `magicpush cert csr`), upload it to the Apple Push Certificates Portal, then upload Apple's certificate with PUT /v1/pushcert";

/// The certificate's details for `GET /v1/pushcert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushCertView {
    /// Subject DN, OpenSSL style.
    pub subject: String,
    /// The APNs topic (UID attribute).
    pub topic: String,
    /// The id in `CN=APSP:…`, what the portal lists.
    pub apsp: Option<String>,
    /// Serial number, hex.
    pub serial: String,
    /// Issuer DN.
    pub issuer: String,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// Whole days until expiry (negative once expired).
    pub days_left: i64,
    /// True once expired.
    pub expired: bool,
    /// `production` or `development`, from Apple's extensions.
    pub environment: &'static str,
    /// `valid`, `expiring`, `expired` or `rejected`.
    pub state: CertState,
    /// What the administrator should do, one line each.
    pub warnings: Vec<String>,
    /// The Apple ID memo, if set.
    pub apple_id: Option<String>,
    /// Issued requests still waiting for Apple's certificate.
    pub pending_requests: Vec<PendingRequest>,
}

/// Settings of the certificate's life: warning thresholds, request defaults, the vendor.
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

/// APNs's refusal of the certificate in use, seen from push outcomes.
#[derive(Debug, Default)]
pub(crate) struct Refusals {
    any: AtomicBool,
    detail: Mutex<Option<(String, OffsetDateTime)>>,
}

impl Refusals {
    fn detail(&self) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.detail)
            .as_ref()
            .map(|(d, at)| format!("{d}, since {}", rfc3339(*at)))
    }

    fn clear(&self) -> bool {
        if !self.any.swap(false, Ordering::AcqRel) {
            return false;
        }
        lock(&self.detail).take().is_some()
    }
}

/// What push tasks share with the certificate state: the refusal flag, the certificate's
/// facts for the webhook, the webhook.
#[derive(Debug, Default)]
pub(crate) struct CertWatch {
    current: RwLock<Option<CertificateInfo>>,
    refusals: Refusals,
    notifier: Option<Notifier>,
}

impl CertWatch {
    /// Notes a push outcome: a certificate refusal marks the certificate `rejected` (once,
    /// logged and announced); a delivery clears it.
    pub(crate) fn observe(&self, result: &PushResult) {
        match result {
            Ok(_) => {
                if self.refusals.any.load(Ordering::Acquire) && self.refusals.clear() {
                    tracing::info!("APNs accepts the push certificate again");
                }
            }
            Err(PushError::CertificateRejected { detail, .. }) => {
                let now = Service::now();
                let first = {
                    let mut slot = lock(&self.refusals.detail);
                    let first = slot.is_none();
                    if first {
                        *slot = Some((detail.clone(), now));
                    }
                    self.refusals.any.store(true, Ordering::Release);
                    first
                };
                if first {
                    tracing::warn!("APNs refused the push certificate: {detail}");
                    if let Some(info) = read(&self.current).as_ref() {
                        let event = CertEvent::new(names::REJECTED, info, now);
                        self.announce(&event, Some(detail));
                    }
                }
            }
            Err(_) => {}
        }
    }

    /// Sends an event to the webhook, if one is configured.
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

    pub(crate) fn current(&self) -> Option<CertificateInfo> {
        read(&self.current).clone()
    }
}

/// The certificate in use and everything about its life, as read from the store at start
/// ([`Service::load_pushcert_state`]) and written through on every change.
#[derive(Debug)]
pub struct PushCertState {
    watch: Arc<CertWatch>,
    /// The Apple ID memo of the certificate in use (without one: the memo noted meanwhile).
    memo: RwLock<Option<String>>,
    settings: PushCertSettings,
    pub(crate) pending: PendingRequests,
    history: Journal<HistoryEntry>,
    events: Journal<CertEvent>,
    /// Held through each change (check, store, engine, state), so that two uploads at once
    /// end as one of them entirely, never as a mix.
    pub(crate) updates: tokio::sync::Mutex<()>,
}

impl PushCertState {
    /// The state for the certificate the pusher was built with (`None`: none registered yet),
    /// empty until [`Service::load_pushcert_state`] reads the rest from the store.
    pub fn new(current: Option<CertificateInfo>) -> Self {
        Self::with_settings(current, PushCertSettings::default(), None)
    }

    /// [`PushCertState::new`] with settings and an optional webhook.
    pub fn with_settings(
        current: Option<CertificateInfo>,
        settings: PushCertSettings,
        notifier: Option<Notifier>,
    ) -> Self {
        PushCertState {
            watch: Arc::new(CertWatch {
                current: RwLock::new(current),
                refusals: Refusals::default(),
                notifier,
            }),
            memo: RwLock::new(None),
            events: Journal::new(PushCertLog::Events, expiry::EVENTS_LIMIT),
            pending: PendingRequests::default(),
            history: Journal::new(PushCertLog::History, HISTORY_LIMIT),
            settings,
            updates: tokio::sync::Mutex::new(()),
        }
    }

    /// The topic the memo is kept under: the certificate's, or `""` without one.
    fn memo_topic(&self) -> String {
        self.topic().unwrap_or_default()
    }

    /// The topic of the current certificate.
    pub fn topic(&self) -> Option<String> {
        read(&self.watch.current)
            .as_ref()
            .map(|c| c.topic().to_owned())
    }

    /// The current certificate's topic, if there is a certificate and its topic is not
    /// `topic` (a check-in's): no allocation when they match, as on every check-in.
    pub fn other_topic_than(&self, topic: &str) -> Option<String> {
        read(&self.watch.current)
            .as_ref()
            .map(|c| c.topic())
            .filter(|ours| *ours != topic)
            .map(str::to_owned)
    }

    /// The current certificate's facts.
    pub fn info(&self) -> Option<CertificateInfo> {
        self.watch.current()
    }

    /// The settings.
    pub fn settings(&self) -> &PushCertSettings {
        &self.settings
    }

    pub(crate) fn watch(&self) -> &Arc<CertWatch> {
        &self.watch
    }

    /// The state of the certificate in use at `now`, `None` without one.
    pub fn state(&self, now: OffsetDateTime) -> Option<CertState> {
        let info = self.info()?;
        Some(expiry::state(
            &info,
            now,
            &self.settings.thresholds,
            self.watch.refusals.detail().is_some(),
        ))
    }

    fn view(&self, now: OffsetDateTime) -> Result<PushCertView, ServiceError> {
        let info = self
            .info()
            .ok_or_else(|| ServiceError::NotFound(self.missing_message()))?;
        let rejected = self.watch.refusals.detail();
        let apple_id = read(&self.memo).clone();
        let thresholds = &self.settings.thresholds;
        Ok(PushCertView {
            subject: info.subject().to_owned(),
            topic: info.topic().to_owned(),
            apsp: info.apsp_uuid().map(str::to_owned),
            serial: info.serial().to_owned(),
            issuer: info.issuer().to_owned(),
            not_before: rfc3339(info.not_before()),
            not_after: rfc3339(info.not_after()),
            days_left: info.days_left(now),
            expired: info.is_expired(now),
            environment: info.environment().as_str(),
            state: expiry::state(&info, now, thresholds, rejected.is_some()),
            warnings: expiry::warnings(
                &info,
                now,
                thresholds,
                rejected.as_deref(),
                apple_id.as_deref(),
            ),
            apple_id,
            pending_requests: self.pending.list(),
        })
    }

    /// "No certificate", with the pending requests if any.
    pub fn missing_message(&self) -> String {
        no_certificate_message(&self.waiting_requests())
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

/// [`NO_CERTIFICATE`], with the requests issued and waiting (their file names) if any.
pub(crate) fn no_certificate_message(waiting: &[String]) -> String {
    if waiting.is_empty() {
        NO_CERTIFICATE.to_owned()
    } else {
        format!(
            "{NO_CERTIFICATE} (requests issued and waiting: {})",
            waiting.join(", ")
        )
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The guarded values are replaced whole; a poisoned lock still holds a consistent value.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// An upload: the certificate (PEM or DER, perhaps with its chain), with or without its key.
fn parse_upload(bytes: &[u8]) -> Result<(Vec<CertificateDer<'static>>, bool), ServiceError> {
    let bad = |why: String| ServiceError::BadRequest(format!("push certificate refused: {why}"));
    let text_start = bytes.trim_ascii_start();
    if text_start.starts_with(b"-----") {
        let has_key = bytes
            .windows(b"PRIVATE KEY-----".len())
            .any(|w| w == b"PRIVATE KEY-----");
        let certs = CertificateDer::pem_slice_iter(bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("the PEM does not read: {e}")))?;
        if certs.is_empty() {
            return Err(bad("the upload holds no CERTIFICATE".into()));
        }
        Ok((certs, has_key))
    } else if bytes.first() == Some(&0x30) {
        Ok((vec![CertificateDer::from(bytes.to_vec())], false))
    } else {
        Err(bad(
            "give Apple's certificate (PEM or DER, as downloaded from the portal), or the certificate followed by its key (PEM)".into(),
        ))
    }
}

impl Service {
    /// `GET /v1/pushcert`.
    pub fn pushcert(&self) -> Result<PushCertView, ServiceError> {
        self.pushcert_at(Self::now())
    }

    /// `GET /v1/pushcert` as it reads at `now`.
    pub fn pushcert_at(&self, now: OffsetDateTime) -> Result<PushCertView, ServiceError> {
        self.pushcert.view(now)
    }

    /// The certificate state for `/healthz`: `missing` without one.
    pub fn pushcert_state(&self) -> &'static str {
        self.pushcert
            .state(Self::now())
            .map(CertState::as_str)
            .unwrap_or("missing")
    }

    /// Refuses to push without a registered certificate.
    pub(crate) fn require_pushcert(&self) -> Result<(), ServiceError> {
        if self.pushcert.info().is_none() {
            return Err(ServiceError::NoCertificate {
                waiting: self.pushcert.waiting_requests(),
            });
        }
        Ok(())
    }

    /// `GET /v1/pushcert/history`: every certificate registered, oldest first.
    pub fn pushcert_history(&self) -> Vec<HistoryEntry> {
        self.pushcert.history.records()
    }

    /// The expiry events announced so far, oldest first.
    pub fn pushcert_events(&self) -> Vec<CertEvent> {
        self.pushcert.events.records()
    }

    /// Reads the push certificates' state from the store (the memo, the history, the events,
    /// the pending requests) and records the certificate in use in the history if it is new
    /// there. Once, at start, before the service answers.
    pub async fn load_pushcert_state(&self) -> Result<(), ServiceError> {
        let state = &self.pushcert;
        state.pending.load(&*self.store).await?;
        state.history.load(&*self.store).await?;
        state.events.load(&*self.store).await?;
        let memo = self.store.pushcert_memo(&state.memo_topic()).await?;
        *write(&state.memo) = memo.clone();
        if let Some(info) = state.info() {
            let now = Self::now();
            if let Err(e) = state
                .history
                .update(&*self.store, |h| history::register(h, &info, memo, now))
                .await
            {
                tracing::warn!("cannot record the push certificate in its history: {e}");
            }
        }
        Ok(())
    }

    /// `PUT /v1/pushcert/memo`: sets (or, with an empty string, clears) the Apple ID memo of
    /// the certificate in use (without one, the memo the next certificate registered takes
    /// if its topic has none).
    pub async fn set_pushcert_memo(&self, apple_id: String) -> Result<PushCertView, ServiceError> {
        let apple_id = Some(apple_id.trim().to_owned()).filter(|s| !s.is_empty());
        let _one_at_a_time = self.pushcert.updates.lock().await;
        self.store
            .set_pushcert_memo(&self.pushcert.memo_topic(), apple_id.as_deref())
            .await?;
        let memo = apple_id.clone();
        if let Err(e) = self
            .pushcert
            .history
            .update(&*self.store, |h| history::set_memo(h, memo))
            .await
        {
            tracing::warn!("cannot record the memo in the certificate history: {e}");
        }
        *write(&self.pushcert.memo) = apple_id;
        self.pushcert()
    }

    /// The memo of `topic`, the certificate about to be registered: its own, or else the memo
    /// noted while no certificate was registered (which then moves to `topic`). A new topic
    /// (the new-topic procedure, after the Apple ID was lost) starts without the old one's.
    async fn memo_for(&self, topic: &str) -> Result<Option<String>, ServiceError> {
        if let Some(memo) = self.store.pushcert_memo(topic).await? {
            return Ok(Some(memo));
        }
        let Some(noted) = self.store.pushcert_memo("").await? else {
            return Ok(None);
        };
        self.store.set_pushcert_memo(topic, Some(&noted)).await?;
        self.store.set_pushcert_memo("", None).await?;
        Ok(Some(noted))
    }

    /// `PUT /v1/pushcert`: Apple's certificate alone (PEM or DER; matched by public key to the
    /// key of an issued request) or the PEM certificate followed by its PEM key. Refuses an
    /// expired or not-yet-valid certificate, a mismatched key, a certificate no issued request
    /// matches (422), and — while devices are enrolled — a different topic (E320). On success
    /// the pusher uses the new certificate for the next pushes, the bundle is saved for
    /// restarts, the history records it and the used request is retired.
    pub async fn replace_pushcert(&self, upload: &[u8]) -> Result<PushCertView, ServiceError> {
        let _one_at_a_time = self.pushcert.updates.lock().await;
        let (chain, has_key) = parse_upload(upload)?;
        let (new, used_request) = if has_key {
            let new = PushCertificate::from_pem_bundle(upload)
                .map_err(|e| ServiceError::BadRequest(format!("push certificate refused: {e}")))?;
            (new, None)
        } else {
            self.match_pending_key(chain)?
        };
        self.install_pushcert(new, used_request).await
    }

    /// [`Service::replace_pushcert`] with a PKCS#12 file (certificate and key, as Keychain
    /// exports them) and its password (`""` for none).
    pub async fn replace_pushcert_pkcs12(
        &self,
        der: &[u8],
        password: &str,
    ) -> Result<PushCertView, ServiceError> {
        let _one_at_a_time = self.pushcert.updates.lock().await;
        let new = PushCertificate::from_pkcs12(der, password).map_err(|e| match e.root() {
            cert::CertError::WrongPassword if password.is_empty() => ServiceError::BadRequest(
                "push certificate refused: the PKCS#12 file is protected by a password; send it in the X-Magicpush-P12-Password header".into(),
            ),
            cert::CertError::WrongPassword => ServiceError::BadRequest(
                "push certificate refused: wrong PKCS#12 password (X-Magicpush-P12-Password)".into(),
            ),
            _ => ServiceError::BadRequest(format!("push certificate refused: {e}")),
        })?;
        self.install_pushcert(new, None).await
    }

    /// Registers `new` (checked here: validity, E320, enrolled topics), retiring the pending
    /// request it was issued for. The caller holds `updates`.
    async fn install_pushcert(
        &self,
        new: PushCertificate,
        used_request: Option<String>,
    ) -> Result<PushCertView, ServiceError> {
        let now = Self::now();
        let new_info = new.info().clone();
        if new_info.is_expired(now) {
            return Err(ServiceError::BadRequest(format!(
                "push certificate refused: it expired on {}",
                rfc3339(new_info.not_after())
            )));
        }
        if new_info.is_not_yet_valid(now) {
            return Err(ServiceError::BadRequest(format!(
                "push certificate refused: it is not valid before {}",
                rfc3339(new_info.not_before())
            )));
        }
        let previous = self.pushcert.info();
        if let Some(current) = &previous {
            if let Err(err) = cert::check_renewal(current, &new_info, now) {
                if current.topic() == new_info.topic() {
                    return Err(ServiceError::Conflict(err.to_string()));
                }
                let enrolled: u64 = self.store.enrolled_topics().await?.values().sum();
                if enrolled > 0 {
                    return Err(ServiceError::TopicChange {
                        current: current.topic().to_owned(),
                        new: new_info.topic().to_owned(),
                        enrolled,
                        refusal: Box::new(err),
                    });
                }
                tracing::warn!(
                    "push certificate topic changes from {} to {} with no enrolled device",
                    current.topic(),
                    new_info.topic()
                );
            }
        } else {
            // No certificate in use (a first registration, or after DELETE): devices still
            // enrolled with another topic would be orphaned.
            let enrolled = self.store.enrolled_topics().await?;
            if let Err(e) = check_topic_at_start(new_info.topic(), &enrolled) {
                return Err(ServiceError::Conflict(e.to_string()));
            }
        }
        let (chain_pem, key_pem) = stored_parts(&new);
        let stored = StoredPushCert {
            topic: new_info.topic().to_owned(),
            chain_pem,
            key_pem: Secret::new(key_pem.into_bytes()),
            registered_at: now,
        };
        self.store.put_push_cert(&stored).await?;
        if let Some(old) = previous.as_ref().filter(|p| p.topic() != new_info.topic()) {
            self.store.delete_push_cert(old.topic()).await?;
        }
        let apple_id = if previous.as_ref().map(|p| p.topic()) == Some(new_info.topic()) {
            read(&self.pushcert.memo).clone()
        } else {
            self.memo_for(new_info.topic()).await?
        };
        self.pusher.replace_certificate(new).map_err(|e| {
            ServiceError::Persist(format!(
                "{e}; the certificate was stored and will be used after a restart"
            ))
        })?;
        tracing::info!(subject = %new_info.subject(), serial = %new_info.serial(), not_after = %rfc3339(new_info.not_after()), "push certificate registered");
        *write(&self.pushcert.watch.current) = Some(new_info.clone());
        if self.pushcert.watch.refusals.clear() {
            tracing::info!("the refused push certificate was replaced");
        }
        *write(&self.pushcert.memo) = apple_id.clone();
        if let Err(e) = self
            .pushcert
            .history
            .update(&*self.store, |h| {
                history::register(h, &new_info, apple_id, now)
            })
            .await
        {
            tracing::warn!("cannot record the push certificate in its history: {e}");
        }
        if let Some(id) = used_request {
            if let Err(e) = self.pushcert.pending.retire(&*self.store, &id).await {
                tracing::warn!(request = %id, "cannot retire the used request: {e}");
            }
        }
        if previous.is_some() {
            self.pushcert
                .watch
                .announce(&CertEvent::new(names::RENEWED, &new_info, now), None);
        }
        self.check_pushcert_expiry(now).await;
        self.pushcert()
    }

    /// The certificate of an upload without key, with the pending key whose public key it
    /// carries; 422 when none does.
    fn match_pending_key(
        &self,
        chain: Vec<CertificateDer<'static>>,
    ) -> Result<(PushCertificate, Option<String>), ServiceError> {
        let info = CertificateInfo::from_der(chain[0].clone())
            .map_err(|e| ServiceError::BadRequest(format!("push certificate refused: {e}")))?;
        if !info.topic().starts_with(cert::MDM_TOPIC_PREFIX) {
            return Err(ServiceError::BadRequest(format!(
                "push certificate refused: {} is not an MDM push certificate (its topic {:?} does not start with {})",
                info.identity(),
                info.topic(),
                cert::MDM_TOPIC_PREFIX
            )));
        }
        let pending = self.pushcert.pending.keys();
        for (id, key) in pending {
            match PushCertificate::from_parts(chain.clone(), vec![key]) {
                Ok(cert) => return Ok((cert, Some(id))),
                Err(e) if matches!(e.root(), cert::CertError::KeyMismatch { .. }) => {}
                // Not an MDM push certificate, or a key type that cannot sign: no pending key
                // can fix that.
                Err(e) => {
                    return Err(ServiceError::BadRequest(format!(
                        "push certificate refused: {e}"
                    )))
                }
            }
        }
        let waiting: Vec<String> = self
            .pushcert
            .pending
            .list()
            .iter()
            .map(|p| format!("{} (issued {})", p.file_name, p.created_at))
            .collect();
        let listing = if waiting.is_empty() {
            "no request is waiting: issue one with POST /v1/pushcert/csr, or upload the certificate followed by its key".to_owned()
        } else {
            format!("requests waiting: {}", waiting.join(", "))
        };
        Err(ServiceError::Unprocessable(format!(
            "no issued request matches this certificate ({}): it was made for another key; {listing}",
            info.identity()
        )))
    }

    /// `DELETE /v1/pushcert`: stops using the certificate — only while no device is enrolled
    /// (the new-topic procedure: delete the devices first).
    pub async fn delete_pushcert(&self) -> Result<(), ServiceError> {
        let _one_at_a_time = self.pushcert.updates.lock().await;
        let Some(info) = self.pushcert.info() else {
            return Err(ServiceError::NotFound(NO_CERTIFICATE.into()));
        };
        let enrolled: u64 = self.store.enrolled_topics().await?.values().sum();
        if enrolled > 0 {
            return Err(ServiceError::Conflict(format!(
                "{enrolled} device(s) are enrolled with topic {}: removing its certificate would orphan them. For a new topic (the Apple ID is lost), delete every device first: DELETE /v1/devices?all=true&confirm={}",
                info.topic(),
                info.topic()
            )));
        }
        self.store.delete_push_cert(info.topic()).await?;
        self.pusher.remove_certificate(info.topic());
        *write(&self.pushcert.watch.current) = None;
        self.pushcert.watch.refusals.clear();
        let now = Self::now();
        *write(&self.pushcert.memo) = self.store.pushcert_memo("").await?;
        if let Err(e) = self
            .pushcert
            .history
            .update(&*self.store, |h| history::end_current(h, now))
            .await
        {
            tracing::warn!("cannot record the removal in the certificate history: {e}");
        }
        tracing::warn!(topic = %info.topic(), serial = %info.serial(), "push certificate removed through the admin API");
        Ok(())
    }

    /// Announces what is due for the certificate in use at `now` (an expiry threshold crossed,
    /// the expiry itself) — logged at WARN, stored, sent to the webhook — and updates the
    /// gauges. The events announced now.
    pub async fn check_pushcert_expiry(&self, now: OffsetDateTime) -> Vec<CertEvent> {
        let Some(info) = self.pushcert.info() else {
            return Vec::new();
        };
        ::metrics::gauge!("magicpush_pushcert_not_after_timestamp_seconds")
            .set(info.not_after().unix_timestamp() as f64);
        // Days left are the engine's gauge (`magicpush_certificate_days_left`), kept current
        // by the pool; the expiry instant above lets alerts compute them too.
        let recorded = self.pushcert.events.records();
        let Some(event) = expiry::due(&info, now, &self.pushcert.settings.thresholds, &recorded)
        else {
            return Vec::new();
        };
        if let Err(e) = self
            .pushcert
            .events
            .update(&*self.store, |r| r.push(event.clone()))
            .await
        {
            // Announced anyway; it may be announced again after a restart.
            tracing::warn!("cannot store the push certificate event: {e}");
        }
        let apple = read(&self.pushcert.memo)
            .clone()
            .unwrap_or_else(|| "the Apple ID that created it".into());
        if event.event == names::EXPIRED {
            tracing::warn!(topic = %info.topic(), serial = %info.serial(), not_after = %event.not_after, "the push certificate has EXPIRED: no device can be pushed; renew it in the Apple Push Certificates Portal with {apple} and upload it with PUT /v1/pushcert");
        } else {
            tracing::warn!(topic = %info.topic(), serial = %info.serial(), days_left = event.days_left, not_after = %event.not_after, "the push certificate expires in {} day(s): renew it in the Apple Push Certificates Portal (\"Renew\", {apple}) and upload it with PUT /v1/pushcert", event.days_left);
        }
        self.pushcert.watch.announce(&event, None);
        vec![event]
    }

    /// Checks the certificate's expiry now and then every `every`, until aborted.
    pub fn spawn_pushcert_watch(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                service.check_pushcert_expiry(Self::now()).await;
            }
        })
    }
}

/// The certificate chain and its key, PEM, as the store keeps them.
pub fn stored_parts(cert: &PushCertificate) -> (String, String) {
    let chain: String = cert
        .cert_chain()
        .iter()
        .map(|c| request::pem("CERTIFICATE", c))
        .collect();
    let key = cert.private_key();
    let label = match &key {
        rustls_pki_types::PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        rustls_pki_types::PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    };
    (chain, request::pem(label, key.secret_der()))
}

/// The certificate a store keeps, ready to push with.
pub fn from_stored(stored: &StoredPushCert) -> Result<PushCertificate, cert::CertError> {
    let mut bundle = stored.chain_pem.clone().into_bytes();
    bundle.extend_from_slice(stored.key_pem.expose());
    PushCertificate::from_pem_bundle(&bundle)
}

/// E320 at start: `serve` given a push certificate whose topic is not the one its enrolled
/// devices use would orphan them (they accept pushes for their own topic only).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "E320: the push certificate's topic {topic} is not the topic of the {count} enrolled \
     device(s) in this data directory ({others}). Starting with it would orphan them: they \
     accept pushes only for their own topic. Start with the registered certificate or its \
     renewal (\"Renew\" in the Apple Push Certificates Portal with the same Apple ID keeps \
     the topic). If that Apple ID is lost, the devices must re-enroll under the new topic: \
     remove them first (or start with a new, empty --data-dir) and re-enroll them."
)]
pub struct TopicAtStart {
    /// The certificate's topic.
    pub topic: String,
    /// Enrolled devices with another topic.
    pub count: u64,
    /// Those topics, with their device counts.
    pub others: String,
}

/// Whether a certificate for `topic` may serve the devices enrolled as `enrolled` (topic →
/// enrolled devices): yes when none is enrolled with another topic.
pub fn check_topic_at_start(
    topic: &str,
    enrolled: &std::collections::BTreeMap<String, u64>,
) -> Result<(), TopicAtStart> {
    let others: Vec<(&String, &u64)> = enrolled.iter().filter(|(t, _)| *t != topic).collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(TopicAtStart {
        topic: topic.to_owned(),
        count: others.iter().map(|(_, n)| **n).sum(),
        others: others
            .iter()
            .map(|(t, n)| format!("{t}: {n}"))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod start_tests {
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn another_topic_with_enrolled_devices_is_e320() {
        let mut enrolled = BTreeMap::new();
        assert!(
            check_topic_at_start("t.a", &enrolled).is_ok(),
            "nobody enrolled"
        );
        enrolled.insert("t.a".to_owned(), 5);
        assert!(check_topic_at_start("t.a", &enrolled).is_ok());
        enrolled.insert("t.b".to_owned(), 2);
        let err = check_topic_at_start("t.a", &enrolled).unwrap_err();
        assert_eq!(err.count, 2);
        let text = err.to_string();
        assert!(text.starts_with("E320:"), "{text}");
        assert!(text.contains("t.a") && text.contains("t.b: 2"), "{text}");
        assert!(text.contains("Renew"), "{text}");
    }
}
