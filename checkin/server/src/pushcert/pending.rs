//! Pending requests: the private keys of issued push certificate requests, waiting for
//! Apple's certificate. Each is kept in the store ([`StoredRequest`]: the request and its
//! facts as JSON, the PKCS#8 key sealed like every secret) until a certificate for its key is
//! registered; then it is retired. Keys are never returned by any API.

use std::sync::Mutex;
use utoipa::ToSchema;

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use magicpush_mdm::Secret;
use magicpush_store::{PushCertStore, StoreError, StoredRequest};

/// Most pending requests kept at once; issuing more is refused until one is registered or
/// withdrawn (a request already handed out is never destroyed to make room).
pub const MAX_PENDING: usize = magicpush_store::MAX_PENDING_REQUESTS;

/// What is known of an issued request (never its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PendingRequest {
    /// Its id (also the files' stem).
    pub id: String,
    /// The request file's name, `PushCertificate_<VENDOR>_<YYYYMMDDHHMM>.csr`.
    pub file_name: String,
    /// When it was issued, RFC 3339.
    pub created_at: String,
    /// Whether the file is vendor-signed (else a PEM CSR).
    pub vendor_signed: bool,
    /// The request's subject, OpenSSL style.
    pub subject: String,
    /// SHA-256 of the key's SubjectPublicKeyInfo, hex — what a certificate is matched on.
    pub public_key_sha256: String,
    /// The file's text.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub request: String,
}

impl PendingRequest {
    /// The facts without the request text (for listings).
    pub fn summary(&self) -> PendingRequest {
        PendingRequest {
            request: String::new(),
            ..self.clone()
        }
    }
}

struct Entry {
    request: PendingRequest,
    key_pkcs8: Vec<u8>,
}

/// The pending requests: read from the store at start (and again when another node changed
/// them), kept in memory, written through. Each is its own row in the store, so two nodes
/// issuing or retiring requests never undo each other's.
#[derive(Default)]
pub struct PendingRequests {
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for PendingRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRequests")
            .field("count", &self.lock().len())
            .finish()
    }
}

/// Why a pending request could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum PendingError {
    /// Too many requests wait for a certificate.
    #[error(
        "{MAX_PENDING} requests already wait for Apple's certificate; register one (PUT \
         /v1/pushcert) or withdraw one (DELETE /v1/pushcert/csr/{{id}}) first"
    )]
    Full,
    /// The store failed.
    #[error("cannot keep the pending request: {0}")]
    Store(#[from] StoreError),
}

impl PendingRequests {
    /// Reads the requests kept in `store`. One whose facts do not read is skipped with a
    /// warning, never deleted.
    pub async fn load<S: PushCertStore + ?Sized>(&self, store: &S) -> Result<(), StoreError> {
        let mut entries = Vec::new();
        for stored in store.pushcert_requests().await? {
            match serde_json::from_str::<PendingRequest>(&stored.facts) {
                Ok(request) => entries.push(Entry {
                    request,
                    key_pkcs8: stored.key_pkcs8.expose().to_vec(),
                }),
                Err(e) => tracing::warn!(
                    request = %stored.id,
                    "a pending push certificate request cannot be read and is ignored: {e}"
                ),
            }
        }
        *self.lock() = entries;
        Ok(())
    }

    /// Keeps a new request with its key (PKCS#8 DER): in the store first, then in memory.
    /// `created_at` orders the requests.
    pub async fn add<S: PushCertStore + ?Sized>(
        &self,
        store: &S,
        request: PendingRequest,
        key_pkcs8: Vec<u8>,
        created_at: time::OffsetDateTime,
    ) -> Result<(), PendingError> {
        if self.is_full() {
            return Err(PendingError::Full);
        }
        let stored = StoredRequest {
            id: request.id.clone(),
            created_at,
            facts: serde_json::to_string(&request).unwrap_or_default(),
            key_pkcs8: Secret::new(key_pkcs8.clone()),
        };
        if !store.add_pushcert_request(&stored).await? {
            return Err(PendingError::Full);
        }
        // Read back: another node sharing the store may have issued or retired some.
        if let Err(e) = self.load(store).await {
            tracing::debug!("cannot read the pending requests back: {e}");
            self.lock().push(Entry { request, key_pkcs8 });
        }
        Ok(())
    }

    /// Whether [`MAX_PENDING`] requests wait already.
    pub fn is_full(&self) -> bool {
        self.lock().len() >= MAX_PENDING
    }

    /// Every pending request, oldest first, without their text.
    pub fn list(&self) -> Vec<PendingRequest> {
        self.lock().iter().map(|e| e.request.summary()).collect()
    }

    /// The newest request, with its text.
    pub fn latest(&self) -> Option<PendingRequest> {
        self.lock().last().map(|e| e.request.clone())
    }

    /// Every pending key with its request id.
    pub fn keys(&self) -> Vec<(String, PrivateKeyDer<'static>)> {
        self.lock()
            .iter()
            .map(|e| {
                let key = PrivatePkcs8KeyDer::from(e.key_pkcs8.clone());
                (e.request.id.clone(), PrivateKeyDer::Pkcs8(key))
            })
            .collect()
    }

    /// Forgets a request and destroys its key; false when there is none with this id.
    /// Asks the store, not this list: another node sharing the store may have issued it.
    pub async fn retire<S: PushCertStore + ?Sized>(
        &self,
        store: &S,
        id: &str,
    ) -> Result<bool, StoreError> {
        let removed = store.remove_pushcert_request(id).await?;
        self.lock().retain(|e| e.request.id != id);
        Ok(removed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // Entries are pushed or removed whole; a poisoned lock still holds a consistent list.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use magicpush_store::MemoryStore;

    use super::*;

    fn request(id: &str) -> PendingRequest {
        PendingRequest {
            id: id.into(),
            file_name: format!("PushCertificate_X_{id}.csr"),
            created_at: format!("2026-01-01T00:00:0{id}Z"),
            vendor_signed: false,
            subject: "CN=x".into(),
            public_key_sha256: "00".into(),
            request: "text".into(),
        }
    }

    fn at(i: i64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(1_780_000_000 + i).unwrap()
    }

    #[tokio::test]
    async fn kept_in_the_store_and_read_back() {
        let store = MemoryStore::new();
        let pending = PendingRequests::default();
        pending
            .add(&store, request("1"), vec![1, 2, 3], at(1))
            .await
            .unwrap();
        pending
            .add(&store, request("2"), vec![4, 5, 6], at(2))
            .await
            .unwrap();
        let again = PendingRequests::default();
        again.load(&store).await.unwrap();
        assert_eq!(again.list().len(), 2);
        assert_eq!(again.latest().unwrap().id, "2");
        assert_eq!(again.latest().unwrap().request, "text");
        assert!(again.list()[0].request.is_empty(), "listings carry no text");
        let keys = again.keys();
        assert_eq!(keys[0].1.secret_der(), &[1, 2, 3]);
        assert!(again.retire(&store, "1").await.unwrap());
        assert!(!again.retire(&store, "1").await.unwrap());
        let third = PendingRequests::default();
        third.load(&store).await.unwrap();
        assert_eq!(third.list().len(), 1);
    }

    #[tokio::test]
    async fn bounded_and_never_evicts() {
        let store = MemoryStore::new();
        let pending = PendingRequests::default();
        for i in 0..MAX_PENDING {
            pending
                .add(&store, request(&i.to_string()), vec![0], at(i as i64))
                .await
                .unwrap();
        }
        assert!(matches!(
            pending.add(&store, request("x"), vec![0], at(99)).await,
            Err(PendingError::Full)
        ));
        assert_eq!(pending.list().len(), MAX_PENDING);
    }
}
