//! Several nodes on one store: what another node changed in the push certificates' state
//! reaches this node's engine and tenants.
//!
//! [`Service::sync_pushcerts`] re-reads the stored certificates and reconciles the engine
//! with them ([`reconcile`]: a topic new here is added, a renewal put in place, a removed
//! tenant dropped), then re-reads the memos, names, pending requests, history and events.
//! [`Service::spawn_pushcert_sync`] runs it on every change the store's feed reports
//! ([`magicpush_store::PushCertStore::pushcert_changes`], PostgreSQL's `LISTEN`/`NOTIFY`),
//! within a second of the other node's commit, and on a timer besides (30 s in `serve`) in
//! case the feed missed one. A store without a feed (memory, SQLite) is one node's alone: nothing to
//! run.
//!
//! Each node serializes its own changes (the `updates` lock), catches up with the store
//! before deciding one (`Service::pushcert_update`) and writes it through before answering,
//! so changes made one after the other on different nodes all land. Two
//! admin requests changing the same tenant on two nodes in the same instant are not ordered
//! against each other: the last write to the store wins, and both nodes converge on it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use magicpush_engine::cert::{CertificateInfo, PushCertificate};
use time::OffsetDateTime;

use super::pushcert::from_stored;
use super::tenants::{write, Tenant};
use super::{Service, ServiceError};

/// How long a burst of changes (one registration writes the certificate, the history and the
/// request it used, each a commit) is let finish before re-reading once.
const COALESCE: Duration = Duration::from_millis(25);

/// What [`reconcile`] compares of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertFacts {
    /// Serial number, hex.
    pub(crate) serial: String,
    /// Expiry.
    pub(crate) not_after: OffsetDateTime,
}

impl CertFacts {
    fn of(info: &CertificateInfo) -> CertFacts {
        CertFacts {
            serial: info.serial().to_owned(),
            not_after: info.not_after(),
        }
    }
}

/// A tenant's certificate in use on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InUse {
    pub(crate) cert: CertFacts,
    /// It was given at start (`serve --cert-dir`) and the store does not keep it.
    pub(crate) given_at_start: bool,
}

/// What to change on this node to match the store, by topic.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// Tenants another node added.
    pub added: Vec<String>,
    /// Tenants whose certificate another node renewed.
    pub renewed: Vec<String>,
    /// Tenants another node removed.
    pub removed: Vec<String>,
}

impl SyncPlan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.renewed.is_empty() && self.removed.is_empty()
    }
}

/// What changes to match the store. `stored`: each topic's stored certificate, `None` when
/// it does not read (kept as it is here: a node never drops a tenant for a record it cannot
/// read). The rules for a certificate given at start are `serve`'s own at start: it stays
/// until the store holds a later renewal of it that has not expired, and it is not removed
/// for being absent from the store.
pub(crate) fn reconcile(
    in_use: &BTreeMap<String, InUse>,
    stored: &BTreeMap<String, Option<CertFacts>>,
    now: OffsetDateTime,
) -> SyncPlan {
    let mut plan = SyncPlan::default();
    for (topic, stored) in stored {
        let Some(stored) = stored else { continue };
        match in_use.get(topic) {
            None => plan.added.push(topic.clone()),
            Some(current) if current.cert.serial == stored.serial => {}
            Some(current) if current.given_at_start => {
                if stored.not_after > current.cert.not_after && stored.not_after > now {
                    plan.renewed.push(topic.clone());
                }
            }
            Some(_) => plan.renewed.push(topic.clone()),
        }
    }
    for (topic, current) in in_use {
        if !stored.contains_key(topic) && !current.given_at_start {
            plan.removed.push(topic.clone());
        }
    }
    plan
}

impl Service {
    /// Re-reads the push certificates' state from the store and puts what other nodes
    /// changed in place here: the engine's certificates and the tenants (see [`reconcile`]),
    /// their memos and names, the pending requests, the history and the events. What
    /// changed in the engine, by topic. The engine and the tenants change only once every read
    /// succeeded.
    pub async fn sync_pushcerts(&self) -> Result<SyncPlan, ServiceError> {
        let _one_at_a_time = self.pushcert.updates.lock().await;
        self.sync_locked().await
    }

    /// Takes the `updates` lock for an admin change. On a store other nodes share, their
    /// changes are put in place first, so that the change is decided on the state as stored
    /// (a request issued on another node a moment ago, a tenant it has just added) rather
    /// than on the state as last heard.
    pub(crate) async fn pushcert_update(
        &self,
    ) -> Result<tokio::sync::MutexGuard<'_, ()>, ServiceError> {
        let guard = self.pushcert.updates.lock().await;
        if self.store.pushcert_changes().is_some() {
            self.sync_locked().await?;
        }
        Ok(guard)
    }

    /// [`Service::sync_pushcerts`]; the caller holds `updates`.
    async fn sync_locked(&self) -> Result<SyncPlan, ServiceError> {
        let now = Self::now();
        let stored_certs = self.store.push_certs().await?;
        let memos = self.store.pushcert_memos().await?;
        let names = self.store.tenant_names().await?;
        // Each replaces its list whole once read; the engine changes only once all are read.
        let state = &self.pushcert;
        state.pending.load(&*self.store).await?;
        state.history.load(&*self.store).await?;
        state.events.load(&*self.store).await?;
        // Only the certificates are read here (cheap); the keys of those that change are
        // read below, as the engine needs them.
        let mut stored = BTreeMap::new();
        for s in &stored_certs {
            let facts = match CertificateInfo::from_pem(s.chain_pem.as_bytes()) {
                Ok(info) => Some(CertFacts::of(&info)),
                Err(e) => {
                    // `serve` warned at start; another node's upload was checked there.
                    tracing::debug!(topic = %s.topic, "a stored push certificate does not read: {e}");
                    None
                }
            };
            stored.insert(s.topic.clone(), facts);
        }
        let watch = self.pushcert.watch();
        let given = &self.pushcert.given_at_start;
        let in_use: BTreeMap<String, InUse> = watch
            .all()
            .iter()
            .map(|t| {
                let info = t.info();
                let in_use = InUse {
                    given_at_start: given.get(info.topic()).map(String::as_str)
                        == Some(info.serial()),
                    cert: CertFacts::of(&info),
                };
                (info.topic().to_owned(), in_use)
            })
            .collect();
        let mut plan = reconcile(&in_use, &stored, now);
        let mut certs: BTreeMap<String, PushCertificate> = BTreeMap::new();
        for s in &stored_certs {
            if !plan.added.contains(&s.topic) && !plan.renewed.contains(&s.topic) {
                continue;
            }
            match from_stored(s) {
                Ok(cert) => {
                    certs.insert(s.topic.clone(), cert);
                }
                Err(e) => {
                    tracing::warn!(topic = %s.topic, "cannot use the push certificate another node stored: {e}")
                }
            }
        }
        plan.added.retain(|topic| {
            let Some(cert) = certs.remove(topic) else {
                return false;
            };
            let info = cert.info().clone();
            if let Err(e) = self.pusher.add_certificate(cert) {
                tracing::warn!(topic = %topic, "cannot use the push certificate another node registered: {e}");
                return false;
            }
            watch.insert(Arc::new(Tenant::new(info.clone())));
            tracing::info!(topic = %topic, serial = %info.serial(), "push certificate of topic {topic} registered on another node: in use here");
            true
        });
        plan.renewed.retain(|topic| {
            let (Some(cert), Some(tenant)) = (certs.remove(topic), watch.tenant(topic)) else {
                return false;
            };
            let info = cert.info().clone();
            if let Err(e) = self.pusher.replace_certificate(cert) {
                tracing::warn!(topic = %topic, "cannot use the push certificate another node renewed: {e}");
                return false;
            }
            tenant.renew(info.clone());
            watch.clear_refusal(&tenant);
            tracing::info!(topic = %topic, serial = %info.serial(), "push certificate of topic {topic} renewed on another node: the renewal is in use here");
            true
        });
        for topic in &plan.removed {
            self.pusher.remove_certificate(topic);
            watch.remove(topic);
            tracing::warn!(topic = %topic, "push certificate of topic {topic} removed on another node: no longer used here");
        }
        for tenant in watch.all() {
            let topic = tenant.topic();
            *write(&tenant.memo) = memos.get(&topic).cloned();
            *write(&tenant.name) = names.get(&topic).cloned();
        }
        *write(&self.pushcert.noted_memo) = memos.get("").cloned();
        Ok(plan)
    }

    /// Keeps this node in step with the others sharing its store: runs
    /// [`Service::sync_pushcerts`] on every change the store's feed reports (a burst as one)
    /// and every `every` besides (a change the feed missed, while it was cut); the stored
    /// settings are re-read then too ([`Service::reload_settings`]). `None` when
    /// the store has no feed: no other node writes it. A failed re-read (the database away)
    /// is logged and tried again at the next change or tick; the task runs until aborted.
    pub fn spawn_pushcert_sync(
        self: &Arc<Self>,
        every: Duration,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let mut changes = self.store.pushcert_changes()?;
        let service = Arc::clone(self);
        Some(tokio::spawn(async move {
            let every = every.max(Duration::from_millis(10));
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut feed_open = true;
            let mut failing = false;
            loop {
                tokio::select! {
                    changed = changes.changed(), if feed_open => {
                        if changed.is_err() {
                            // The store is gone; the ticks go on until the task is aborted.
                            feed_open = false;
                            continue;
                        }
                        tokio::time::sleep(COALESCE).await;
                        changes.borrow_and_update();
                    }
                    _ = ticks.tick() => {}
                }
                // The feed carries settings changes too (PUT /v1/settings on another node).
                if let Err(e) = service.reload_settings().await {
                    tracing::debug!("re-reading the stored settings failed: {e}");
                }
                match service.sync_pushcerts().await {
                    Ok(_) if failing => {
                        failing = false;
                        tracing::info!("push certificates in step with the other nodes again");
                    }
                    Ok(_) => {}
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!("cannot re-read the push certificates other nodes changed: {e}; retrying every {}s", every.as_secs());
                    }
                    Err(e) => tracing::debug!("re-reading the push certificates failed again: {e}"),
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(days: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap() + time::Duration::days(days)
    }

    fn facts(serial: &str, expires_in_days: i64) -> CertFacts {
        CertFacts {
            serial: serial.into(),
            not_after: at(expires_in_days),
        }
    }

    fn using(serial: &str, days: i64, given_at_start: bool) -> InUse {
        InUse {
            cert: facts(serial, days),
            given_at_start,
        }
    }

    fn map<V>(entries: Vec<(&str, V)>) -> BTreeMap<String, V> {
        entries
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    #[test]
    fn new_renewed_and_removed_topics() {
        let in_use = map(vec![
            ("t.same", using("01", 300, false)),
            ("t.renewed", using("02", 30, false)),
            ("t.gone", using("03", 300, false)),
        ]);
        let stored = map(vec![
            ("t.same", Some(facts("01", 300))),
            ("t.renewed", Some(facts("12", 395))),
            ("t.new", Some(facts("04", 365))),
        ]);
        let plan = reconcile(&in_use, &stored, at(0));
        assert_eq!(
            plan,
            SyncPlan {
                added: vec!["t.new".into()],
                renewed: vec!["t.renewed".into()],
                removed: vec!["t.gone".into()],
            }
        );
        assert!(
            reconcile(
                &in_use,
                &map(vec![
                    ("t.same", Some(facts("01", 300))),
                    ("t.renewed", Some(facts("02", 30))),
                    ("t.gone", Some(facts("03", 300))),
                ]),
                at(0)
            )
            .is_empty(),
            "in step"
        );
    }

    #[test]
    fn a_stored_certificate_that_does_not_read_changes_nothing() {
        let in_use = map(vec![("t.a", using("01", 300, false))]);
        let stored = map(vec![("t.a", None), ("t.b", None)]);
        assert!(reconcile(&in_use, &stored, at(0)).is_empty());
    }

    #[test]
    fn a_certificate_given_at_start_yields_only_to_a_later_renewal() {
        let in_use = map(vec![("t.a", using("01", 100, true))]);
        // Not in the store: kept.
        assert!(reconcile(&in_use, &BTreeMap::new(), at(0)).is_empty());
        // An older stored one: kept.
        let older = map(vec![("t.a", Some(facts("00", 50)))]);
        assert!(reconcile(&in_use, &older, at(0)).is_empty());
        // A later renewal, expired by now: kept.
        let expired = map(vec![("t.a", Some(facts("02", 200)))]);
        assert!(reconcile(&in_use, &expired, at(201)).is_empty());
        // A later renewal: put in place.
        let later = map(vec![("t.a", Some(facts("02", 200)))]);
        assert_eq!(
            reconcile(&in_use, &later, at(0)).renewed,
            vec!["t.a".to_owned()]
        );
    }

    #[test]
    fn any_other_stored_certificate_replaces_one_from_the_store() {
        // The admin API checked the renewal where it was uploaded; here the store is the
        // reference, even for an earlier expiry (a registration undone by hand).
        let in_use = map(vec![("t.a", using("01", 100, false))]);
        let stored = map(vec![("t.a", Some(facts("02", 50)))]);
        assert_eq!(
            reconcile(&in_use, &stored, at(0)).renewed,
            vec!["t.a".to_owned()]
        );
    }
}
