//! Every push certificate ever registered: `GET /v1/pushcert/history`. The seed's manual asks
//! the administrator to tell certificates apart by serial number and expiry, and to note which
//! Apple ID renews each; this list keeps that for every one that served.

use serde::{Deserialize, Serialize};

use magicpush_engine::cert::CertificateInfo;
use time::OffsetDateTime;

use magicpush_store::rfc3339;

/// Entries kept (a renewal a year: centuries).
pub const HISTORY_LIMIT: usize = 1_000;

/// One registered certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Serial number, hex.
    pub serial: String,
    /// The topic.
    pub topic: String,
    /// Subject DN.
    pub subject: String,
    /// Expiry, RFC 3339.
    pub not_after: String,
    /// When this server started using it, RFC 3339.
    pub registered_at: String,
    /// When another replaced it (or it was removed), RFC 3339; `None` while in use.
    pub replaced_at: Option<String>,
    /// The Apple ID memo while it was in use.
    pub apple_id: Option<String>,
}

/// Records `info` as the certificate in use from `now`: the one in use before (if another)
/// is marked replaced. A certificate already in use is left as it is.
pub fn register(
    entries: &mut Vec<HistoryEntry>,
    info: &CertificateInfo,
    apple_id: Option<String>,
    now: OffsetDateTime,
) {
    if let Some(last) = entries.last() {
        if last.replaced_at.is_none() && last.serial == info.serial() && last.topic == info.topic()
        {
            return;
        }
    }
    end_current(entries, now);
    entries.push(HistoryEntry {
        serial: info.serial().to_owned(),
        topic: info.topic().to_owned(),
        subject: info.subject().to_owned(),
        not_after: rfc3339(info.not_after()),
        registered_at: rfc3339(now),
        replaced_at: None,
        apple_id,
    });
}

/// Marks the certificate in use as replaced (or removed) at `now`.
pub fn end_current(entries: &mut [HistoryEntry], now: OffsetDateTime) {
    for e in entries.iter_mut().filter(|e| e.replaced_at.is_none()) {
        e.replaced_at = Some(rfc3339(now));
    }
}

/// Sets the Apple ID memo of the certificate in use.
pub fn set_memo(entries: &mut [HistoryEntry], apple_id: Option<String>) {
    if let Some(current) = entries.iter_mut().rev().find(|e| e.replaced_at.is_none()) {
        current.apple_id = apple_id;
    }
}
