//! Each tenant's push certificate as the admin sees it: its details and state, the Apple ID
//! memo (the seed's note of which Apple ID renews it), adding a tenant, hot renewal with the
//! E320 topic check, removal for the new-topic procedure, the history, the expiry watch and
//! APNs's refusals. The tenants themselves are in `tenants`; the request side (CSR issue,
//! pending keys) is in `pushcert_request`.
//!
//! All of it is kept in the store ([`magicpush_store::PushCertStore`]), keyed by topic where a
//! topic applies: the certificates and their keys in use (so a restart uses what
//! `PUT /v1/pushcert` and `POST /v1/topics` installed), each topic's Apple ID memo and name,
//! the history of registered certificates, the expiry warnings announced, the keys of issued
//! requests. [`Service::load_pushcert_state`] reads it
//! at start; every change is written through before it is answered. What other nodes sharing
//! the store change is put in place by `super::pushcert_sync`. Data directories that
//! kept these in files are migrated at start (`crate::pushcert::legacy`).

use std::sync::Arc;
use std::time::Duration;
use utoipa::ToSchema;

use magicpush_engine::cert::{self, CertificateInfo, PushCertificate};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::CertificateDer;
use serde::Serialize;
use time::OffsetDateTime;

use crate::pushcert::expiry::{self, names, CertEvent, CertState};
use crate::pushcert::history::{self, HistoryEntry};
use crate::pushcert::pending::PendingRequest;
use crate::pushcert::request;
use magicpush_mdm::Secret;
use magicpush_store::{rfc3339, StoredPushCert};

use super::tenants::{read, write, Tenant};
use super::{Service, ServiceError};

/// What `GET /v1/pushcert` and `/healthz` say when no certificate is registered.
pub const NO_CERTIFICATE: &str = "no push certificate registered: issue a request (POST /v1/pushcert/csr or `magicpush cert csr`), upload it to the Apple Push Certificates Portal, then upload Apple's certificate with PUT /v1/pushcert";

/// The certificate's details for `GET /v1/pushcert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct PushCertView {
    /// Subject DN, OpenSSL style.
    pub subject: String,
    /// The APNs topic (UID attribute): the tenant.
    pub topic: String,
    /// The tenant's display name, if set.
    #[schema(required = true)]
    pub name: Option<String>,
    /// The id in `CN=APSP:…`, what the portal lists.
    #[schema(required = true)]
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
    #[schema(required = true)]
    pub apple_id: Option<String>,
    /// Issued requests still waiting for Apple's certificate.
    pub pending_requests: Vec<PendingRequest>,
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

/// How a certificate is being registered.
#[derive(Debug, Clone, Copy)]
enum Registration<'a> {
    /// `POST /v1/topics`: a new tenant, named by the certificate's topic.
    Add,
    /// `PUT /v1/pushcert[?topic=]`: the renewal of a tenant's certificate (or, while no
    /// certificate is registered at all, the first one).
    Renew(Option<&'a str>),
}

impl Service {
    /// The tenant `topic` names; without a topic, the only one. 404 for an unknown topic or
    /// none registered, 400 when several are registered and none is named.
    pub(crate) fn tenant(&self, topic: Option<&str>) -> Result<Arc<Tenant>, ServiceError> {
        let watch = self.pushcert.watch();
        if let Some(topic) = topic {
            return watch
                .tenant(topic)
                .ok_or_else(|| ServiceError::UnknownTenant {
                    topic: topic.to_owned(),
                    known: watch.some_topics(),
                });
        }
        match watch.len() {
            0 => Err(ServiceError::NotFound(self.pushcert.missing_message())),
            1 => watch
                .only()
                .ok_or_else(|| ServiceError::NotFound(self.pushcert.missing_message())),
            count => Err(ServiceError::TopicRequired {
                count,
                topics: watch.some_topics(),
            }),
        }
    }

    fn view(&self, tenant: &Tenant, now: OffsetDateTime) -> PushCertView {
        let info = tenant.info();
        let rejected = tenant.refusals.detail();
        let apple_id = read(&tenant.memo).clone();
        let thresholds = &self.pushcert.settings.thresholds;
        PushCertView {
            subject: info.subject().to_owned(),
            topic: info.topic().to_owned(),
            name: read(&tenant.name).clone(),
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
            pending_requests: self.pushcert.pending.list(),
        }
    }

    /// `GET /v1/pushcert[?topic=]`.
    pub fn pushcert(&self, topic: Option<&str>) -> Result<PushCertView, ServiceError> {
        self.pushcert_at(topic, Self::now())
    }

    /// `GET /v1/pushcert[?topic=]` as it reads at `now`.
    pub fn pushcert_at(
        &self,
        topic: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<PushCertView, ServiceError> {
        Ok(self.view(&*self.tenant(topic)?, now))
    }

    /// The certificates' state for `/healthz`: the worst tenant's, `missing` without one.
    pub fn pushcert_state(&self) -> &'static str {
        self.pushcert
            .state(Self::now())
            .map(CertState::as_str)
            .unwrap_or("missing")
    }

    /// Refuses to push without any registered certificate.
    pub(crate) fn require_pushcert(&self) -> Result<(), ServiceError> {
        if self.pushcert.watch().len() == 0 {
            return Err(ServiceError::NoCertificate {
                waiting: self.pushcert.waiting_requests(),
            });
        }
        Ok(())
    }

    /// `GET /v1/pushcert/history[?topic=]`: every certificate registered, oldest first:
    /// every tenant's, or those `topic` registered (also after its tenant was removed).
    pub fn pushcert_history(&self, topic: Option<&str>) -> Vec<HistoryEntry> {
        let mut entries = self.pushcert.history.records();
        if let Some(topic) = topic {
            entries.retain(|e| e.topic == topic);
        }
        entries
    }

    /// The expiry events announced so far, oldest first.
    pub fn pushcert_events(&self) -> Vec<CertEvent> {
        self.pushcert.events.records()
    }

    /// Reads the tenants' state from the store (memos, names, the history, the events, the
    /// pending requests) and records the certificates in use in the history where they are
    /// new there. Once, at start, before the service answers.
    pub async fn load_pushcert_state(&self) -> Result<(), ServiceError> {
        let state = &self.pushcert;
        state.pending.load(&*self.store).await?;
        state.history.load(&*self.store).await?;
        state.events.load(&*self.store).await?;
        *write(&state.noted_memo) = self.store.pushcert_memo("").await?;
        let names = self.store.tenant_names().await?;
        let tenants = state.watch().all();
        let mut in_use = Vec::with_capacity(tenants.len());
        for tenant in &tenants {
            let topic = tenant.topic();
            let memo = self.store.pushcert_memo(&topic).await?;
            *write(&tenant.memo) = memo.clone();
            *write(&tenant.name) = names.get(&topic).cloned();
            in_use.push((tenant.info(), memo));
        }
        if in_use.is_empty() {
            return Ok(());
        }
        let now = Self::now();
        if let Err(e) = state
            .history
            .update(&*self.store, |h| {
                for (info, memo) in in_use {
                    history::register(h, &info, memo, now);
                }
            })
            .await
        {
            tracing::warn!("cannot record the push certificates in their history: {e}");
        }
        Ok(())
    }

    /// `PUT /v1/pushcert/memo[?topic=]`: sets (or, with an empty string, clears) the Apple ID
    /// memo of a tenant. While no tenant is registered, it is noted for the first one (and
    /// the answer is 404 "no push certificate", as for `GET`).
    pub async fn set_pushcert_memo(
        &self,
        topic: Option<&str>,
        apple_id: String,
    ) -> Result<PushCertView, ServiceError> {
        let apple_id = Some(apple_id.trim().to_owned()).filter(|s| !s.is_empty());
        let _one_at_a_time = self.pushcert_update().await?;
        if topic.is_none() && self.pushcert.watch().len() == 0 {
            self.store
                .set_pushcert_memo("", apple_id.as_deref())
                .await?;
            *write(&self.pushcert.noted_memo) = apple_id;
            return Err(ServiceError::NotFound(self.pushcert.missing_message()));
        }
        let tenant = self.tenant(topic)?;
        self.write_memo(&tenant, apple_id).await?;
        self.pushcert(Some(&tenant.topic()))
    }

    /// Keeps a tenant's memo (the caller holds `updates`).
    pub(crate) async fn write_memo(
        &self,
        tenant: &Tenant,
        apple_id: Option<String>,
    ) -> Result<(), ServiceError> {
        let topic = tenant.topic();
        self.store
            .set_pushcert_memo(&topic, apple_id.as_deref())
            .await?;
        let memo = apple_id.clone();
        if let Err(e) = self
            .pushcert
            .history
            .update(&*self.store, |h| history::set_memo(h, &topic, memo))
            .await
        {
            tracing::warn!("cannot record the memo in the certificate history: {e}");
        }
        *write(&tenant.memo) = apple_id;
        Ok(())
    }

    /// The memo of `topic`, a tenant about to be added: its own, or else the memo noted
    /// while no certificate was registered (which then moves to `topic`). A new topic (the
    /// new-topic procedure, after the Apple ID was lost) starts without the old one's.
    async fn memo_for(&self, topic: &str) -> Result<Option<String>, ServiceError> {
        if let Some(memo) = self.store.pushcert_memo(topic).await? {
            return Ok(Some(memo));
        }
        if self.pushcert.watch().len() > 0 {
            return Ok(None);
        }
        let Some(noted) = self.store.pushcert_memo("").await? else {
            return Ok(None);
        };
        self.store.set_pushcert_memo(topic, Some(&noted)).await?;
        self.store.set_pushcert_memo("", None).await?;
        *write(&self.pushcert.noted_memo) = None;
        Ok(Some(noted))
    }

    /// `PUT /v1/pushcert[?topic=]`: renews a tenant's certificate with Apple's certificate
    /// alone (PEM or DER; matched by public key to the key of an issued request) or the PEM
    /// certificate followed by its PEM key. Refuses an expired or not-yet-valid certificate,
    /// a mismatched key, a certificate no issued request matches (422), one that does not
    /// expire later, and one with another topic (E320: a renewal never becomes a new tenant;
    /// `POST /v1/topics` adds one). While no certificate is registered at all, it registers
    /// the first. On success the pusher uses the new certificate for the next pushes, the
    /// store keeps it for restarts, the history records it and the used request is retired.
    pub async fn replace_pushcert(
        &self,
        topic: Option<&str>,
        upload: &[u8],
    ) -> Result<PushCertView, ServiceError> {
        let _one_at_a_time = self.pushcert_update().await?;
        let (new, used_request) = self.read_upload(upload)?;
        self.install_pushcert(new, used_request, Registration::Renew(topic))
            .await
    }

    /// [`Service::replace_pushcert`] with a PKCS#12 file (certificate and key, as Keychain
    /// exports them) and its password (`""` for none).
    pub async fn replace_pushcert_pkcs12(
        &self,
        topic: Option<&str>,
        der: &[u8],
        password: &str,
    ) -> Result<PushCertView, ServiceError> {
        let _one_at_a_time = self.pushcert_update().await?;
        let new = read_pkcs12(der, password)?;
        self.install_pushcert(new, None, Registration::Renew(topic))
            .await
    }

    /// `POST /v1/topics`: adds the tenant of the uploaded certificate (as `PUT /v1/pushcert`
    /// takes it: alone, matched to an issued request, or followed by its key). 409 when its
    /// topic is a tenant's already: that is a renewal.
    pub async fn add_tenant(&self, upload: &[u8]) -> Result<PushCertView, ServiceError> {
        let _one_at_a_time = self.pushcert_update().await?;
        let (new, used_request) = self.read_upload(upload)?;
        self.install_pushcert(new, used_request, Registration::Add)
            .await
    }

    /// [`Service::add_tenant`] with a PKCS#12 file and its password.
    pub async fn add_tenant_pkcs12(
        &self,
        der: &[u8],
        password: &str,
    ) -> Result<PushCertView, ServiceError> {
        let _one_at_a_time = self.pushcert_update().await?;
        let new = read_pkcs12(der, password)?;
        self.install_pushcert(new, None, Registration::Add).await
    }

    /// The certificate of an upload, with the pending request it answers (if sent alone).
    fn read_upload(
        &self,
        upload: &[u8],
    ) -> Result<(PushCertificate, Option<String>), ServiceError> {
        let (chain, has_key) = parse_upload(upload)?;
        if has_key {
            let new = PushCertificate::from_pem_bundle(upload)
                .map_err(|e| ServiceError::BadRequest(format!("push certificate refused: {e}")))?;
            Ok((new, None))
        } else {
            self.match_pending_key(chain)
        }
    }

    /// Registers `new` (checked here: validity, the tenant it renews or adds, E320, the
    /// enrolled topics), retiring the pending request it was issued for. The caller holds
    /// `updates`.
    async fn install_pushcert(
        &self,
        new: PushCertificate,
        used_request: Option<String>,
        how: Registration<'_>,
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
        let topic = new_info.topic().to_owned();
        let renewed = self.tenant_renewed(&new_info, how, now).await?;
        let (chain_pem, key_pem) = stored_parts(&new);
        let stored = StoredPushCert {
            topic: topic.clone(),
            chain_pem,
            key_pem: Secret::new(key_pem.into_bytes()),
            registered_at: now,
        };
        self.store.put_push_cert(&stored).await?;
        let apple_id = match &renewed {
            Some(tenant) => read(&tenant.memo).clone(),
            None => self.memo_for(&topic).await?,
        };
        let engine = match &renewed {
            Some(_) => self.pusher.replace_certificate(new),
            None => self.pusher.add_certificate(new),
        };
        engine.map_err(|e| {
            ServiceError::Persist(format!(
                "{e}; the certificate was stored and will be used after a restart"
            ))
        })?;
        tracing::info!(topic = %topic, subject = %new_info.subject(), serial = %new_info.serial(), not_after = %rfc3339(new_info.not_after()), "push certificate registered");
        let tenant = match renewed.clone() {
            Some(tenant) => {
                tenant.renew(new_info.clone());
                if self.pushcert.watch().clear_refusal(&tenant) {
                    tracing::info!(topic = %topic, "the refused push certificate was replaced");
                }
                tenant
            }
            None => {
                let tenant = Arc::new(Tenant::new(new_info.clone()));
                *write(&tenant.memo) = apple_id.clone();
                self.pushcert.watch().insert(Arc::clone(&tenant));
                tenant
            }
        };
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
        if renewed.is_some() {
            self.pushcert
                .watch()
                .announce(&CertEvent::new(names::RENEWED, &new_info, now), None);
        }
        let recorded = self.pushcert.events.records();
        self.check_tenant_expiry(&tenant, now, &recorded).await;
        Ok(self.view(&tenant, now))
    }

    /// The tenant `new` renews (`None`: it adds one), or why it may not be registered as
    /// `how` asks.
    async fn tenant_renewed(
        &self,
        new: &CertificateInfo,
        how: Registration<'_>,
        now: OffsetDateTime,
    ) -> Result<Option<Arc<Tenant>>, ServiceError> {
        let watch = self.pushcert.watch();
        let first = watch.len() == 0;
        let topic = match how {
            Registration::Add => {
                if watch.tenant(new.topic()).is_some() {
                    return Err(ServiceError::TenantExists {
                        topic: new.topic().to_owned(),
                    });
                }
                None
            }
            Registration::Renew(topic) if first => {
                if let Some(named) = topic.filter(|t| *t != new.topic()) {
                    return Err(ServiceError::UnknownTenant {
                        topic: named.to_owned(),
                        known: String::new(),
                    });
                }
                None
            }
            Registration::Renew(topic) => Some(self.tenant(topic)?),
        };
        let Some(current) = topic else {
            if first {
                // The first registration: devices still enrolled with another topic would be
                // orphaned.
                let enrolled = self.store.enrolled_topics().await?;
                if let Err(e) = check_topic_at_start(new.topic(), &enrolled) {
                    return Err(ServiceError::Conflict(e.to_string()));
                }
            }
            return Ok(None);
        };
        let current_info = current.info();
        let Err(refusal) = cert::check_renewal(&current_info, new, now) else {
            return Ok(Some(current));
        };
        if current_info.topic() == new.topic() {
            return Err(ServiceError::Conflict(refusal.to_string()));
        }
        let enrolled = self
            .store
            .enrolled_topics()
            .await?
            .get(current_info.topic())
            .copied()
            .unwrap_or(0);
        Err(ServiceError::TopicChange {
            current: current_info.topic().to_owned(),
            new: new.topic().to_owned(),
            enrolled,
            other_tenant: watch.tenant(new.topic()).is_some(),
            refusal: Box::new(refusal),
        })
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

    /// `DELETE /v1/pushcert[?topic=]`: removes a tenant and its certificate — only while no
    /// device is enrolled with its topic (the new-topic procedure: delete its devices first).
    pub async fn delete_pushcert(&self, topic: Option<&str>) -> Result<(), ServiceError> {
        let _one_at_a_time = self.pushcert_update().await?;
        let tenant = self.tenant(topic)?;
        let info = tenant.info();
        let topic = info.topic();
        let enrolled = self
            .store
            .enrolled_topics()
            .await?
            .get(topic)
            .copied()
            .unwrap_or(0);
        if enrolled > 0 {
            return Err(ServiceError::Conflict(format!(
                "{enrolled} device(s) are enrolled with topic {topic}: removing its certificate would orphan them. For a new topic (the Apple ID is lost), delete the tenant's devices first: DELETE /v1/devices?all=true&confirm={topic}"
            )));
        }
        self.store.delete_push_cert(topic).await?;
        self.store.set_tenant_name(topic, None).await?;
        self.pusher.remove_certificate(topic);
        self.pushcert.watch().remove(topic);
        let now = Self::now();
        if let Err(e) = self
            .pushcert
            .history
            .update(&*self.store, |h| history::end_current(h, topic, now))
            .await
        {
            tracing::warn!("cannot record the removal in the certificate history: {e}");
        }
        tracing::warn!(topic = %topic, serial = %info.serial(), "push certificate removed through the admin API");
        Ok(())
    }

    /// Announces what is due for every tenant's certificate at `now` (an expiry threshold
    /// crossed, the expiry itself) — logged at WARN, stored, sent to the webhook — and
    /// updates the gauges. The events announced now.
    pub async fn check_pushcert_expiry(&self, now: OffsetDateTime) -> Vec<CertEvent> {
        // Read once for every tenant: each tenant's events are its own certificate's.
        let recorded = self.pushcert.events.records();
        let mut announced = Vec::new();
        for tenant in self.pushcert.watch().all() {
            announced.extend(self.check_tenant_expiry(&tenant, now, &recorded).await);
        }
        announced
    }

    /// [`Service::check_pushcert_expiry`] for one tenant.
    /// `recorded` are the events announced so far.
    async fn check_tenant_expiry(
        &self,
        tenant: &Tenant,
        now: OffsetDateTime,
        recorded: &[CertEvent],
    ) -> Option<CertEvent> {
        let info = tenant.info();
        ::metrics::gauge!("magicpush_pushcert_not_after_timestamp_seconds", "topic" => info.topic().to_owned())
            .set(info.not_after().unix_timestamp() as f64);
        // Days left are the engine's gauge (`magicpush_certificate_days_left`), kept current
        // by the pool; the expiry instant above lets alerts compute them too.
        let event = expiry::due(&info, now, &self.pushcert.settings.thresholds, recorded)?;
        let in_use: std::collections::HashSet<String> = self
            .pushcert
            .watch()
            .all()
            .iter()
            .map(|t| t.info().serial().to_owned())
            .collect();
        if let Err(e) = self
            .pushcert
            .events
            .update(&*self.store, |r| {
                if r.len() >= expiry::EVENTS_LIMIT {
                    // Full: the events of certificates no longer in use go first.
                    r.retain(|e| in_use.contains(&e.serial));
                }
                r.push(event.clone())
            })
            .await
        {
            // Announced anyway; it may be announced again after a restart.
            tracing::warn!("cannot store the push certificate event: {e}");
        }
        let apple = read(&tenant.memo)
            .clone()
            .unwrap_or_else(|| "the Apple ID that created it".into());
        let topic = info.topic();
        if event.event == names::EXPIRED {
            tracing::warn!(topic = %topic, serial = %info.serial(), not_after = %event.not_after, "the push certificate has EXPIRED: no device of this tenant can be pushed; renew it in the Apple Push Certificates Portal with {apple} and upload it with PUT /v1/pushcert?topic={topic}");
        } else {
            tracing::warn!(topic = %topic, serial = %info.serial(), days_left = event.days_left, not_after = %event.not_after, "the push certificate expires in {} day(s): renew it in the Apple Push Certificates Portal (\"Renew\", {apple}) and upload it with PUT /v1/pushcert?topic={topic}", event.days_left);
        }
        self.pushcert.watch().announce(&event, None);
        Some(event)
    }

    /// Checks the certificates' expiry now and then every `every`, until aborted.
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

/// A PKCS#12 upload's certificate and key.
fn read_pkcs12(der: &[u8], password: &str) -> Result<PushCertificate, ServiceError> {
    PushCertificate::from_pkcs12(der, password).map_err(|e| match e.root() {
        cert::CertError::WrongPassword if password.is_empty() => ServiceError::BadRequest(
            "push certificate refused: the PKCS#12 file is protected by a password; send it in the X-Magicpush-P12-Password header".into(),
        ),
        cert::CertError::WrongPassword => ServiceError::BadRequest(
            "push certificate refused: wrong PKCS#12 password (X-Magicpush-P12-Password)".into(),
        ),
        _ => ServiceError::BadRequest(format!("push certificate refused: {e}")),
    })
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
    "E320: {count} enrolled device(s) in this data directory have a topic no push \
     certificate given has ({others}; the certificates' topics: {topic}). Starting without \
     theirs would orphan them: they accept pushes only for their own topic. Start with the registered certificate or its \
     renewal (\"Renew\" in the Apple Push Certificates Portal with the same Apple ID keeps \
     the topic). If that Apple ID is lost, the devices must re-enroll under the new topic: \
     remove them first (or start with a new, empty --data-dir) and re-enroll them."
)]
pub struct TopicAtStart {
    /// The certificates' topics.
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
    check_topics_at_start(&[topic], enrolled)
}

/// Whether the certificates for `topics` (every tenant's) may serve the devices enrolled as
/// `enrolled`: yes when none is enrolled with a topic none of them has.
pub fn check_topics_at_start(
    topics: &[&str],
    enrolled: &std::collections::BTreeMap<String, u64>,
) -> Result<(), TopicAtStart> {
    let others: Vec<(&String, &u64)> = enrolled
        .iter()
        .filter(|(t, _)| !topics.contains(&t.as_str()))
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    Err(TopicAtStart {
        topic: topics.join(", "),
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
