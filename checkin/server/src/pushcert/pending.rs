//! Pending requests: the private keys of issued push certificate requests, waiting for
//! Apple's certificate. Each is kept in the data directory (`pushcert-pending/<id>.key`,
//! PKCS#8 PEM, mode 0600, and `<id>.json`, the request and its facts) until a certificate
//! for its key is registered; then it is retired. Keys are never returned by any API.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};

use magicpush_store::private::write_private;

/// Sub-directory of the data directory that holds the pending keys.
pub const PENDING_DIR: &str = "pushcert-pending";

/// Most pending requests kept at once; issuing more is refused until one is registered or
/// withdrawn (a request already handed out is never destroyed to make room).
pub const MAX_PENDING: usize = 16;

/// What is known of an issued request (never its key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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

/// The pending requests, in memory and (with a data directory) on disk.
pub struct PendingRequests {
    dir: Option<PathBuf>,
    entries: Mutex<Vec<Entry>>,
}

impl std::fmt::Debug for PendingRequests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingRequests")
            .field("dir", &self.dir)
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
    /// The files could not be written or removed.
    #[error("cannot keep the pending request in {dir}: {source}")]
    Io {
        /// The directory.
        dir: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
}

impl PendingRequests {
    /// The requests kept in `state_dir/pushcert-pending` (none without a directory). Files
    /// that do not read are skipped with a warning, never deleted.
    pub fn load(state_dir: Option<&Path>) -> PendingRequests {
        let dir = state_dir.map(|d| d.join(PENDING_DIR));
        let mut entries = Vec::new();
        if let Some(dir) = &dir {
            if let Ok(listing) = std::fs::read_dir(dir) {
                for file in listing.flatten() {
                    let path = file.path();
                    if path.extension().and_then(|e| e.to_str()) != Some("json") {
                        continue;
                    }
                    match read_entry(&path) {
                        Ok(entry) => entries.push(entry),
                        Err(why) => tracing::warn!(
                            file = %path.display(),
                            "a pending push certificate request cannot be read and is ignored: {why}"
                        ),
                    }
                }
            }
        }
        entries.sort_by(|a: &Entry, b: &Entry| a.request.created_at.cmp(&b.request.created_at));
        PendingRequests {
            dir,
            entries: Mutex::new(entries),
        }
    }

    /// Keeps a new request with its key (PKCS#8 DER): files first, then memory.
    pub fn add(&self, request: PendingRequest, key_pkcs8: Vec<u8>) -> Result<(), PendingError> {
        let mut entries = self.lock();
        if entries.len() >= MAX_PENDING {
            return Err(PendingError::Full);
        }
        if let Some(dir) = &self.dir {
            let io = |source| PendingError::Io {
                dir: dir.clone(),
                source,
            };
            let key_pem = super::request::pem("PRIVATE KEY", &key_pkcs8);
            write_private(dir, &format!("{}.key", request.id), key_pem.as_bytes()).map_err(io)?;
            let json = serde_json::to_vec_pretty(&request).unwrap_or_default();
            write_private(dir, &format!("{}.json", request.id), &json).map_err(io)?;
        }
        entries.push(Entry { request, key_pkcs8 });
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

    /// Forgets a request and deletes its files; false when there is none with this id.
    pub fn retire(&self, id: &str) -> Result<bool, PendingError> {
        let mut entries = self.lock();
        let Some(index) = entries.iter().position(|e| e.request.id == id) else {
            return Ok(false);
        };
        if let Some(dir) = &self.dir {
            for name in [format!("{id}.json"), format!("{id}.key")] {
                match std::fs::remove_file(dir.join(name)) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(PendingError::Io {
                            dir: dir.clone(),
                            source,
                        })
                    }
                }
            }
        }
        entries.remove(index);
        Ok(true)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        // Entries are pushed or removed whole; a poisoned lock still holds a consistent list.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn read_entry(json_path: &Path) -> Result<Entry, String> {
    let bytes = std::fs::read(json_path).map_err(|e| e.to_string())?;
    let request: PendingRequest = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let key_path = json_path.with_extension("key");
    let pem = std::fs::read(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    Ok(Entry {
        request,
        key_pkcs8: key.secret_pkcs8_der().to_vec(),
    })
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn kept_on_disk_with_private_modes_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let pending = PendingRequests::load(Some(dir.path()));
        pending.add(request("1"), vec![1, 2, 3]).unwrap();
        pending.add(request("2"), vec![4, 5, 6]).unwrap();
        #[cfg(unix)]
        for name in ["1.key", "1.json"] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(PENDING_DIR).join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let again = PendingRequests::load(Some(dir.path()));
        assert_eq!(again.list().len(), 2);
        assert_eq!(again.latest().unwrap().id, "2");
        assert_eq!(again.latest().unwrap().request, "text");
        assert!(again.list()[0].request.is_empty(), "listings carry no text");
        let keys = again.keys();
        assert_eq!(keys[0].1.secret_der(), &[1, 2, 3]);
        assert!(again.retire("1").unwrap());
        assert!(!again.retire("1").unwrap());
        assert!(!dir.path().join(PENDING_DIR).join("1.key").exists());
        assert_eq!(PendingRequests::load(Some(dir.path())).list().len(), 1);
    }

    #[test]
    fn bounded_and_never_evicts() {
        let pending = PendingRequests::load(None);
        for i in 0..MAX_PENDING {
            pending.add(request(&i.to_string()), vec![0]).unwrap();
        }
        assert!(matches!(
            pending.add(request("x"), vec![0]),
            Err(PendingError::Full)
        ));
        assert_eq!(pending.list().len(), MAX_PENDING);
    }
}
