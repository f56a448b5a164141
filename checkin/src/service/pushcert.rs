//! The push certificate as the admin sees it: its details, the Apple ID memo (the seed's note
//! of which Apple ID renews it), and hot replacement with the E320 topic check.
//!
//! Files in the state directory (the data dir):
//! - `pushcert.pem`: the last certificate + key installed through `PUT /v1/pushcert`
//!   (mode 0600), so a restart uses it;
//! - `pushcert-memo.json`: `{"apple_id": "…"}`.

use std::path::{Path, PathBuf};
use std::sync::RwLock;

use magicpush_engine::cert::{self, CertificateInfo, PushCertificate};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::private::write_private;
use crate::store::rfc3339;

use super::{Service, ServiceError};

/// File name of the persisted certificate bundle in the state directory.
pub const STORED_CERT_FILE: &str = "pushcert.pem";
/// File name of the Apple ID memo in the state directory.
pub const MEMO_FILE: &str = "pushcert-memo.json";

/// The certificate's details for `GET /v1/pushcert`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PushCertView {
    /// Subject DN, OpenSSL style.
    pub subject: String,
    /// The APNs topic (UID attribute).
    pub topic: String,
    /// Serial number, hex.
    pub serial: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// Whole days until expiry (negative once expired).
    pub days_left: i64,
    /// True once expired.
    pub expired: bool,
    /// The Apple ID memo, if set.
    pub apple_id: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Memo {
    apple_id: Option<String>,
}

/// The current certificate's facts and the memo; persisted in the state directory.
#[derive(Debug)]
pub struct PushCertState {
    current: RwLock<Option<CertificateInfo>>,
    memo: RwLock<Option<String>>,
    dir: Option<PathBuf>,
    /// Held through each change (check, file, engine, state), so that two uploads at once
    /// end as one of them entirely, never as a mix.
    updates: tokio::sync::Mutex<()>,
}

impl PushCertState {
    /// The state for the certificate the pusher was built with (`None`: no certificate,
    /// `GET /v1/pushcert` answers 404). Reads the memo from `dir` if present.
    pub fn new(current: Option<CertificateInfo>, dir: Option<PathBuf>) -> Self {
        let memo = dir
            .as_deref()
            .and_then(|d| std::fs::read(d.join(MEMO_FILE)).ok())
            .and_then(|bytes| serde_json::from_slice::<Memo>(&bytes).ok())
            .and_then(|m| m.apple_id);
        PushCertState {
            current: RwLock::new(current),
            memo: RwLock::new(memo),
            dir,
            updates: tokio::sync::Mutex::new(()),
        }
    }

    /// The topic of the current certificate.
    pub fn topic(&self) -> Option<String> {
        read(&self.current).as_ref().map(|c| c.topic().to_owned())
    }

    /// The current certificate's facts.
    pub fn info(&self) -> Option<CertificateInfo> {
        read(&self.current).clone()
    }

    fn view(&self, now: OffsetDateTime) -> Result<PushCertView, ServiceError> {
        let current = read(&self.current);
        let info = current
            .as_ref()
            .ok_or_else(|| ServiceError::NotFound("no push certificate is loaded".into()))?;
        Ok(PushCertView {
            subject: info.subject().to_owned(),
            topic: info.topic().to_owned(),
            serial: info.serial().to_owned(),
            not_after: rfc3339(info.not_after()),
            days_left: info.days_left(now),
            expired: info.is_expired(now),
            apple_id: read(&self.memo).clone(),
        })
    }
}

/// The certificate stored by an earlier `PUT /v1/pushcert`, if the state directory has one.
pub fn stored_certificate(dir: &Path) -> Option<PathBuf> {
    let path = dir.join(STORED_CERT_FILE);
    path.is_file().then_some(path)
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // The guarded values are replaced whole; a poisoned lock still holds a consistent value.
    lock.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|e| e.into_inner())
}

impl Service {
    /// `GET /v1/pushcert`.
    pub fn pushcert(&self) -> Result<PushCertView, ServiceError> {
        self.pushcert.view(Self::now())
    }

    /// `PUT /v1/pushcert/memo`: sets (or, with an empty string, clears) the Apple ID memo.
    pub async fn set_pushcert_memo(&self, apple_id: String) -> Result<PushCertView, ServiceError> {
        let apple_id = Some(apple_id.trim().to_owned()).filter(|s| !s.is_empty());
        let _one_at_a_time = self.pushcert.updates.lock().await;
        if let Some(dir) = self.pushcert.dir.clone() {
            let bytes = serde_json::to_vec_pretty(&Memo {
                apple_id: apple_id.clone(),
            })
            .unwrap_or_default();
            tokio::task::spawn_blocking(move || write_private(&dir, MEMO_FILE, &bytes))
                .await
                .map_err(|e| ServiceError::Persist(format!("cannot save the memo: {e}")))?
                .map_err(|e| ServiceError::Persist(format!("cannot save the memo: {e}")))?;
        }
        *write(&self.pushcert.memo) = apple_id;
        self.pushcert()
    }

    /// `PUT /v1/pushcert`: the PEM certificate followed by its PEM private key. Refuses an
    /// expired or not-yet-valid certificate, a mismatched key, and — while devices are
    /// enrolled — a different topic (E320). On success the pusher uses the new certificate
    /// for the next pushes and the bundle is saved for restarts.
    pub async fn replace_pushcert(&self, pem: &[u8]) -> Result<PushCertView, ServiceError> {
        let _one_at_a_time = self.pushcert.updates.lock().await;
        let now = Self::now();
        let new = PushCertificate::from_pem_bundle(pem)
            .map_err(|e| ServiceError::BadRequest(format!("push certificate refused: {e}")))?;
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
        if let Some(current) = self.pushcert.info() {
            if let Err(err) = cert::check_renewal(&current, &new_info, now) {
                let topic_change = current.topic() != new_info.topic();
                let enrolled: u64 = if topic_change {
                    self.store.enrolled_topics().await?.values().sum()
                } else {
                    0
                };
                if !topic_change || enrolled > 0 {
                    let note = if topic_change {
                        format!(
                            " ({enrolled} device(s) are enrolled with topic {})",
                            current.topic()
                        )
                    } else {
                        String::new()
                    };
                    return Err(ServiceError::Conflict(format!("{err}{note}")));
                }
                tracing::warn!(
                    "push certificate topic changes from {} to {} with no enrolled device",
                    current.topic(),
                    new_info.topic()
                );
            }
        }
        if let Some(dir) = self.pushcert.dir.clone() {
            let bytes = pem.to_vec();
            tokio::task::spawn_blocking(move || write_private(&dir, STORED_CERT_FILE, &bytes))
                .await
                .map_err(|e| ServiceError::Persist(format!("cannot save the certificate: {e}")))?
                .map_err(|e| ServiceError::Persist(format!("cannot save the certificate: {e}")))?;
        }
        self.pusher.replace_certificate(new).map_err(|e| {
            ServiceError::Persist(format!(
                "{e}; the certificate was saved and will be used after a restart"
            ))
        })?;
        tracing::info!(subject = %new_info.subject(), serial = %new_info.serial(), not_after = %rfc3339(new_info.not_after()), "push certificate replaced");
        *write(&self.pushcert.current) = Some(new_info);
        self.pushcert()
    }
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
