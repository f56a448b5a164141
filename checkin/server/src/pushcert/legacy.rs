//! The push certificates' state as data directories kept it before it moved into the store:
//! five files beside the database. [`migrate`] reads each into the store at start and renames
//! it `<name>.migrated` (kept as a backup, mode unchanged: 0600); a file that does not read is
//! left where it is, with a warning, and migrated at a later start once it reads.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::PrivatePkcs8KeyDer;

use magicpush_engine::cert::PushCertificate;
use magicpush_mdm::Secret;
use magicpush_store::{PushCertLog, PushCertStore, StoreError, StoredPushCert, StoredRequest};

use super::pending::PendingRequest;

/// The certificate and key installed through `PUT /v1/pushcert`, PEM.
pub const CERT_FILE: &str = "pushcert.pem";
/// `{"apple_id": "…"}`.
pub const MEMO_FILE: &str = "pushcert-memo.json";
/// The history, a JSON array.
pub const HISTORY_FILE: &str = "pushcert-history.json";
/// The expiry events, a JSON array.
pub const EVENTS_FILE: &str = "pushcert-events.json";
/// `<id>.json` and `<id>.key` (PKCS#8 PEM) of each pending request.
pub const PENDING_DIR: &str = "pushcert-pending";

/// What a migration could not do.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The store refused a write: nothing more was migrated, no file was renamed after it.
    #[error("cannot migrate {file} into the store: {cause}")]
    Store {
        /// The file being migrated.
        file: PathBuf,
        /// The store's error.
        cause: StoreError,
    },
    /// A migrated file could not be renamed to its backup name.
    #[error("cannot rename {file} after migrating it: {cause}")]
    Rename {
        /// The file.
        file: PathBuf,
        /// The failure.
        cause: std::io::Error,
    },
}

/// Moves the files of `dir` into `store`; the backups made, in order. Nothing to do (no such
/// file) is the usual case after the first start.
pub async fn migrate<S: PushCertStore + ?Sized>(
    dir: &Path,
    store: &S,
    now: time::OffsetDateTime,
) -> Result<Vec<PathBuf>, MigrateError> {
    let mut backups = Vec::new();
    let cert_path = dir.join(CERT_FILE);
    let mut topic = String::new();
    if cert_path.is_file() {
        match PushCertificate::from_pem_bundle_file(&cert_path) {
            Ok(cert) => {
                let (chain_pem, key_pem) = crate::service::pushcert::stored_parts(&cert);
                topic = cert.topic().to_owned();
                let stored = StoredPushCert {
                    topic: topic.clone(),
                    chain_pem,
                    key_pem: Secret::new(key_pem.into_bytes()),
                    registered_at: now,
                };
                let written = store.put_push_cert(&stored).await;
                done(&cert_path, written, &mut backups)?;
            }
            Err(e) => tracing::warn!(file = %cert_path.display(), "not migrated: {e}"),
        }
    }
    let memo_path = dir.join(MEMO_FILE);
    if let Some(value) = read_json(&memo_path) {
        let apple_id = value.get("apple_id").and_then(|a| a.as_str());
        let written = store.set_pushcert_memo(&topic, apple_id).await;
        done(&memo_path, written, &mut backups)?;
    }
    for (name, log) in [
        (HISTORY_FILE, PushCertLog::History),
        (EVENTS_FILE, PushCertLog::Events),
    ] {
        let path = dir.join(name);
        let Some(value) = read_json(&path) else {
            continue;
        };
        let Some(records) = value.as_array() else {
            tracing::warn!(file = %path.display(), "not migrated: not a JSON array");
            continue;
        };
        let records: Vec<String> = records.iter().map(|r| r.to_string()).collect();
        let written = store.set_pushcert_log(log, &records).await;
        done(&path, written, &mut backups)?;
    }
    let pending = dir.join(PENDING_DIR);
    if pending.is_dir() {
        let mut all_read = true;
        for request in read_pending(&pending, &mut all_read) {
            let written = store.add_pushcert_request(&request).await;
            if let Ok(false) = written {
                tracing::warn!(request = %request.id, "not migrated: too many requests wait already");
                all_read = false;
            }
            written.map_err(|cause| MigrateError::Store {
                file: pending.clone(),
                cause,
            })?;
        }
        if all_read {
            done(&pending, Ok(()), &mut backups)?;
        }
    }
    Ok(backups)
}

/// After a file's write into the store: its rename to the backup name.
fn done(
    path: &Path,
    written: Result<impl Sized, StoreError>,
    backups: &mut Vec<PathBuf>,
) -> Result<(), MigrateError> {
    written.map_err(|cause| MigrateError::Store {
        file: path.to_owned(),
        cause,
    })?;
    let mut backup = path.as_os_str().to_owned();
    backup.push(".migrated");
    let backup = PathBuf::from(backup);
    std::fs::rename(path, &backup).map_err(|cause| MigrateError::Rename {
        file: path.to_owned(),
        cause,
    })?;
    backups.push(backup);
    Ok(())
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(file = %path.display(), "not migrated: {e}");
            None
        }
    }
}

/// The requests of the pending directory; `all_read` is cleared when one does not read.
fn read_pending(dir: &Path, all_read: &mut bool) -> Vec<StoredRequest> {
    let mut out = Vec::new();
    let Ok(listing) = std::fs::read_dir(dir) else {
        *all_read = false;
        return out;
    };
    for file in listing.flatten() {
        let path = file.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match read_request(&path) {
            Ok(r) => out.push(r),
            Err(why) => {
                tracing::warn!(file = %path.display(), "not migrated: {why}");
                *all_read = false;
            }
        }
    }
    out
}

fn read_request(json_path: &Path) -> Result<StoredRequest, String> {
    let facts = std::fs::read_to_string(json_path).map_err(|e| e.to_string())?;
    let request: PendingRequest = serde_json::from_str(&facts).map_err(|e| e.to_string())?;
    let key_path = json_path.with_extension("key");
    let pem = std::fs::read(&key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
    let key = PrivatePkcs8KeyDer::from_pem_slice(&pem)
        .map_err(|e| format!("{}: {e}", key_path.display()))?;
    let created_at = time::OffsetDateTime::parse(
        &request.created_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map_err(|e| format!("created_at {:?}: {e}", request.created_at))?;
    Ok(StoredRequest {
        id: request.id.clone(),
        created_at,
        facts,
        key_pkcs8: Secret::new(key.secret_pkcs8_der().to_vec()),
    })
}

#[cfg(test)]
mod tests {
    use magicpush_fixtures::TestPki;
    use magicpush_store::{MemoryStore, PushCertStore};

    use super::*;

    /// A data directory as an earlier magicpush left it: every file is moved into the store
    /// and kept as `<name>.migrated`; a second start finds nothing to do.
    #[tokio::test]
    async fn every_file_moves_into_the_store_and_is_kept_as_a_backup() {
        let pki = TestPki::generate().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let bundle = format!("{}{}", pki.push.cert_pem, pki.push.key_pem);
        std::fs::write(d.join(CERT_FILE), &bundle).unwrap();
        std::fs::write(d.join(MEMO_FILE), br#"{"apple_id": "admin@example.jp"}"#).unwrap();
        std::fs::write(
            d.join(HISTORY_FILE),
            br#"[{"serial": "01", "topic": "t"}, {"serial": "02", "topic": "t"}]"#,
        )
        .unwrap();
        std::fs::write(d.join(EVENTS_FILE), br#"[{"event": "pushcert.expiring"}]"#).unwrap();
        let pending = d.join(PENDING_DIR);
        std::fs::create_dir(&pending).unwrap();
        let request = PendingRequest {
            id: "r1".into(),
            file_name: "PushCertificate_X_202601010000.csr".into(),
            created_at: "2026-01-01T00:00:00Z".into(),
            vendor_signed: false,
            subject: "CN=x".into(),
            public_key_sha256: "00".into(),
            request: "text".into(),
        };
        std::fs::write(
            pending.join("r1.json"),
            serde_json::to_vec(&request).unwrap(),
        )
        .unwrap();
        std::fs::write(pending.join("r1.key"), &pki.push.key_pem).unwrap();

        let store = MemoryStore::new();
        let now = time::OffsetDateTime::now_utc();
        let backups = migrate(d, &store, now).await.unwrap();
        assert_eq!(backups.len(), 5, "{backups:?}");
        for name in [CERT_FILE, MEMO_FILE, HISTORY_FILE, EVENTS_FILE, PENDING_DIR] {
            assert!(!d.join(name).exists(), "{name} moved");
            assert!(d.join(format!("{name}.migrated")).exists(), "{name} kept");
        }
        let certs = store.push_certs().await.unwrap();
        assert_eq!(certs.len(), 1);
        let cert = crate::service::pushcert::from_stored(&certs[0]).unwrap();
        assert_eq!(cert.topic(), pki.topic);
        assert_eq!(
            store.pushcert_memo(cert.topic()).await.unwrap().as_deref(),
            Some("admin@example.jp")
        );
        assert_eq!(
            store
                .pushcert_log(PushCertLog::History)
                .await
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            store.pushcert_log(PushCertLog::Events).await.unwrap().len(),
            1
        );
        let requests = store.pushcert_requests().await.unwrap();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].id, "r1");
        assert!(!requests[0].key_pkcs8.expose().is_empty());

        assert!(migrate(d, &store, now).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_file_that_does_not_read_stays_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(HISTORY_FILE), b"{not json").unwrap();
        std::fs::write(dir.path().join(CERT_FILE), b"not a certificate").unwrap();
        let store = MemoryStore::new();
        let backups = migrate(dir.path(), &store, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
        assert!(backups.is_empty());
        assert!(dir.path().join(HISTORY_FILE).exists());
        assert!(dir.path().join(CERT_FILE).exists());
        assert!(store.push_certs().await.unwrap().is_empty());
    }
}
