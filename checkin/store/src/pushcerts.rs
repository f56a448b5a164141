//! The push certificates' state as a store keeps it, so that it lives with the devices (in
//! one database, for every tenant and every node) rather than in files beside them:
//! - the certificates in use and their keys, keyed by topic;
//! - the keys of issued requests, waiting for Apple's certificate (a request has no topic
//!   until Apple issues it);
//! - the Apple ID memo of each topic;
//! - two bounded logs of JSON records: the certificates registered, the expiry events
//!   announced.
//!
//! Private keys are [`Secret`]s: a store that seals secrets (SQLite with a secrets key) seals
//! them too. What the records mean (history, expiry rules) is the server's business; the
//! store keeps them whole and in order.

use magicpush_mdm::Secret;
use time::OffsetDateTime;

use crate::StoreFuture;

/// Requests kept waiting at most ([`PushCertStore::add_pushcert_request`] refuses more).
pub const MAX_PENDING_REQUESTS: usize = 16;

/// A push certificate in use: its chain and key, PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPushCert {
    /// The certificate's topic (its UID attribute): the key.
    pub topic: String,
    /// The certificate, then any chain, PEM.
    pub chain_pem: String,
    /// Its private key, PEM.
    pub key_pem: Secret,
    /// When it was registered.
    pub registered_at: OffsetDateTime,
}

/// An issued request waiting for Apple's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRequest {
    /// Its id.
    pub id: String,
    /// When it was issued (requests are listed in this order).
    pub created_at: OffsetDateTime,
    /// What the server knows of it (its file, subject…), JSON; opaque to the store.
    pub facts: String,
    /// Its private key, PKCS#8 DER.
    pub key_pkcs8: Secret,
}

/// The bounded logs of the certificates' life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PushCertLog {
    /// Every certificate registered.
    History,
    /// The expiry warnings announced.
    Events,
}

impl PushCertLog {
    /// Its stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            PushCertLog::History => "history",
            PushCertLog::Events => "events",
        }
    }
}

/// The push certificates' state. Every write is durable when its future resolves, as for
/// [`Store`](crate::Store)'s.
pub trait PushCertStore: Send + Sync {
    /// Every certificate in use, by topic.
    fn push_certs(&self) -> StoreFuture<'_, Vec<StoredPushCert>>;

    /// Keeps `cert` as the certificate of its topic, replacing the one there.
    fn put_push_cert<'a>(&'a self, cert: &'a StoredPushCert) -> StoreFuture<'a, ()>;

    /// Forgets the certificate of `topic`; false when there was none.
    fn delete_push_cert<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, bool>;

    /// The requests waiting, oldest first.
    fn pushcert_requests(&self) -> StoreFuture<'_, Vec<StoredRequest>>;

    /// Keeps a new request; false (nothing written) when [`MAX_PENDING_REQUESTS`] wait already.
    fn add_pushcert_request<'a>(&'a self, request: &'a StoredRequest) -> StoreFuture<'a, bool>;

    /// Forgets a request and its key; false when there is none with this id.
    fn remove_pushcert_request<'a>(&'a self, id: &'a str) -> StoreFuture<'a, bool>;

    /// The Apple ID memo of `topic` (`""`: the memo noted while no certificate is registered).
    fn pushcert_memo<'a>(&'a self, topic: &'a str) -> StoreFuture<'a, Option<String>>;

    /// Every memo kept, by topic (the memo noted without a certificate under `""`): one read
    /// for every tenant, when another node may have changed them.
    fn pushcert_memos(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, String>>;

    /// Sets (`Some`) or clears (`None`) the memo of `topic`.
    fn set_pushcert_memo<'a>(
        &'a self,
        topic: &'a str,
        apple_id: Option<&'a str>,
    ) -> StoreFuture<'a, ()>;

    /// Every tenant's display name, by topic.
    fn tenant_names(&self) -> StoreFuture<'_, std::collections::BTreeMap<String, String>>;

    /// Sets (`Some`) or clears (`None`) the display name of the tenant of `topic`.
    fn set_tenant_name<'a>(&'a self, topic: &'a str, name: Option<&'a str>) -> StoreFuture<'a, ()>;

    /// The records of `log`, oldest first.
    fn pushcert_log(&self, log: PushCertLog) -> StoreFuture<'_, Vec<String>>;

    /// Replaces the records of `log`.
    fn set_pushcert_log<'a>(
        &'a self,
        log: PushCertLog,
        records: &'a [String],
    ) -> StoreFuture<'a, ()>;

    /// The feed of changes other processes make to this state (and to the run-time settings,
    /// [`crate::SettingsStore`]), for a store that several server nodes share: a counter
    /// that moves on after every write another node committed here, and also whenever the feed itself was cut and restored (changes may have been
    /// missed meanwhile), so that a node re-reads the state when it moves. A receiver sees
    /// the latest value only: a burst of changes may show as one step.
    ///
    /// `None` (the default): no other process writes this store (memory, SQLite in its
    /// locked data directory), so what a node wrote itself is all there is.
    fn pushcert_changes(&self) -> Option<PushCertChanges> {
        None
    }
}

/// See [`PushCertStore::pushcert_changes`].
pub type PushCertChanges = tokio::sync::watch::Receiver<u64>;
