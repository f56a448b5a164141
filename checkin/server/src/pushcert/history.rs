//! Every push certificate ever registered: `GET /v1/pushcert/history`. The seed's manual asks
//! the administrator to tell certificates apart by serial number and expiry, and to note which
//! Apple ID renews each; this list keeps that for every one that served.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use magicpush_engine::cert::CertificateInfo;
use time::OffsetDateTime;

use magicpush_store::rfc3339;

/// Entries kept, all tenants' (a renewal a year: ten years of a thousand tenants).
pub const HISTORY_LIMIT: usize = 10_000;

/// One registered certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
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
    #[schema(required = true)]
    pub replaced_at: Option<String>,
    /// The Apple ID memo while it was in use.
    #[schema(required = true)]
    pub apple_id: Option<String>,
}

/// Records `info` as its topic's certificate in use from `now`: the one that topic used
/// before (if another) is marked replaced. A certificate already in use is left as it is.
pub fn register(
    entries: &mut Vec<HistoryEntry>,
    info: &CertificateInfo,
    apple_id: Option<String>,
    now: OffsetDateTime,
) {
    let in_use = entries.iter().rev().find(|e| e.topic == info.topic());
    if in_use.is_some_and(|e| e.replaced_at.is_none() && e.serial == info.serial()) {
        return;
    }
    end_current(entries, info.topic(), now);
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

/// Marks the certificate `topic` uses as replaced (or removed) at `now`.
pub fn end_current(entries: &mut [HistoryEntry], topic: &str, now: OffsetDateTime) {
    let in_use = |e: &&mut HistoryEntry| e.replaced_at.is_none() && e.topic == topic;
    for e in entries.iter_mut().filter(in_use) {
        e.replaced_at = Some(rfc3339(now));
    }
}

/// Sets the Apple ID memo of the certificate `topic` uses.
pub fn set_memo(entries: &mut [HistoryEntry], topic: &str, apple_id: Option<String>) {
    let in_use = |e: &&mut HistoryEntry| e.replaced_at.is_none() && e.topic == topic;
    if let Some(current) = entries.iter_mut().rev().find(in_use) {
        current.apple_id = apple_id;
    }
}

#[cfg(test)]
mod tests {
    use magicpush_fixtures::{push_cert, Ca, KeyKind};
    use time::Duration;

    use super::*;

    fn cert(ca: &Ca, uuid: &str, days: i64) -> CertificateInfo {
        let now = OffsetDateTime::now_utc();
        let c = push_cert(
            ca,
            uuid,
            now - Duration::days(1),
            now + Duration::days(days),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        CertificateInfo::from_pem(c.cert_pem.as_bytes()).unwrap()
    }

    #[test]
    fn each_topic_keeps_its_own_certificate_in_use() {
        let ca = Ca::new("test", KeyKind::EcdsaP256).unwrap();
        let a = cert(&ca, "aaaaaaaa-0000-0000-0000-000000000000", 300);
        let a2 = cert(&ca, "aaaaaaaa-0000-0000-0000-000000000000", 600);
        let b = cert(&ca, "bbbbbbbb-0000-0000-0000-000000000000", 300);
        let now = OffsetDateTime::now_utc();
        let mut h = Vec::new();
        register(&mut h, &a, Some("a@example.jp".into()), now);
        register(&mut h, &b, None, now);
        register(&mut h, &b, None, now);
        assert_eq!(h.len(), 2, "a certificate in use is not recorded twice");
        assert!(h.iter().all(|e| e.replaced_at.is_none()), "{h:?}");
        // A's renewal ends A's entry only.
        register(&mut h, &a2, None, now);
        assert!(h[0].replaced_at.is_some());
        assert!(h[1].replaced_at.is_none(), "B is still in use");
        set_memo(&mut h, b.topic(), Some("b@example.jp".into()));
        assert_eq!(h[1].apple_id.as_deref(), Some("b@example.jp"));
        assert_eq!(h[2].apple_id, None, "A's renewal keeps its own memo");
        end_current(&mut h, b.topic(), now);
        assert!(h[1].replaced_at.is_some());
        assert!(h[2].replaced_at.is_none());
    }
}
