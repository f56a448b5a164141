//! The certificate's state and its expiry warnings, decided from the certificate, the time
//! and the events already recorded — pure, time passed in.
//!
//! A threshold (days before expiry, `--expiry-warn-days 60,30,14,7,3,1`) is *crossed* when
//! the whole days left fall to it or below. Each crossing is announced once per certificate
//! (serial): the events are stored, so a restart does not announce it again. When several
//! thresholds are crossed at once (a server started 5 days before expiry), one event is
//! announced for the tightest and covers the looser ones.

use magicpush_engine::cert::CertificateInfo;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use magicpush_store::rfc3339;

/// The default `--expiry-warn-days`.
pub const DEFAULT_THRESHOLDS: &str = "60,30,14,7,3,1";

/// Events kept, all tenants': every threshold of a few thousand certificates in use (events
/// of certificates no longer in use are dropped as new ones are added).
pub const EVENTS_LIMIT: usize = 20_000;

/// Warning thresholds in days before expiry, largest first, each at least 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds(Vec<u32>);

impl Thresholds {
    /// Parses `60,30,14,7` (any order, duplicates merged). Empty → no warnings.
    pub fn parse(text: &str) -> Result<Thresholds, String> {
        let mut days = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let d: u32 = part
                .parse()
                .map_err(|_| format!("{part:?} is not a whole number of days"))?;
            if d == 0 || d > 3650 {
                return Err(format!("{d}: a threshold is 1 to 3650 days"));
            }
            days.push(d);
        }
        days.sort_unstable_by(|a, b| b.cmp(a));
        days.dedup();
        Ok(Thresholds(days))
    }

    /// The thresholds, largest first.
    pub fn days(&self) -> &[u32] {
        &self.0
    }

    /// The largest threshold: inside it the certificate is `expiring`.
    pub fn widest(&self) -> Option<u32> {
        self.0.first().copied()
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds::parse(DEFAULT_THRESHOLDS).unwrap_or(Thresholds(Vec::new()))
    }
}

/// What `GET /v1/pushcert` says of the certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CertState {
    /// In use, not near expiry.
    Valid,
    /// Inside the widest warning threshold.
    Expiring,
    /// Past its expiry: APNs refuses it.
    Expired,
    /// APNs refused it (a TLS alert or 403 `BadCertificate`) although it has not expired.
    Rejected,
}

impl CertState {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            CertState::Valid => "valid",
            CertState::Expiring => "expiring",
            CertState::Expired => "expired",
            CertState::Rejected => "rejected",
        }
    }
}

/// The state at `now`: expired beats rejected beats expiring.
pub fn state(
    info: &CertificateInfo,
    now: OffsetDateTime,
    thresholds: &Thresholds,
    rejected: bool,
) -> CertState {
    if info.is_expired(now) {
        CertState::Expired
    } else if rejected {
        CertState::Rejected
    } else if thresholds
        .widest()
        .is_some_and(|w| info.days_left(now) <= i64::from(w))
    {
        CertState::Expiring
    } else {
        CertState::Valid
    }
}

/// The event names of the webhook and the stored events.
pub mod names {
    /// A warning threshold was crossed.
    pub const EXPIRING: &str = "pushcert.expiring";
    /// The certificate expired.
    pub const EXPIRED: &str = "pushcert.expired";
    /// APNs refused the certificate.
    pub const REJECTED: &str = "pushcert.rejected";
    /// A certificate replaced the one in use.
    pub const RENEWED: &str = "pushcert.renewed";
    /// A refresh's pushes have all ended.
    pub const REFRESH_COMPLETED: &str = "refresh.completed";
}

/// A recorded event about a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertEvent {
    /// One of [`names`].
    pub event: String,
    /// The certificate's serial, hex.
    pub serial: String,
    /// Its topic.
    pub topic: String,
    /// The tightest threshold crossed (`pushcert.expiring`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_days: Option<u32>,
    /// Whole days left at the time.
    pub days_left: i64,
    /// Its expiry, RFC 3339.
    pub not_after: String,
    /// When, RFC 3339.
    pub at: String,
}

impl CertEvent {
    /// An event of kind `event` for `info` at `now`.
    pub fn new(event: &str, info: &CertificateInfo, now: OffsetDateTime) -> CertEvent {
        CertEvent {
            event: event.to_owned(),
            serial: info.serial().to_owned(),
            topic: info.topic().to_owned(),
            threshold_days: None,
            days_left: info.days_left(now),
            not_after: rfc3339(info.not_after()),
            at: rfc3339(now),
        }
    }
}

/// The expiry event due for `info` at `now`, given the events recorded so far: `expired` once
/// past expiry, else `expiring` for the tightest newly crossed threshold; `None` when nothing
/// new happened.
pub fn due(
    info: &CertificateInfo,
    now: OffsetDateTime,
    thresholds: &Thresholds,
    recorded: &[CertEvent],
) -> Option<CertEvent> {
    let mine = || recorded.iter().filter(|e| e.serial == info.serial());
    if info.is_expired(now) {
        if mine().any(|e| e.event == names::EXPIRED) {
            return None;
        }
        return Some(CertEvent::new(names::EXPIRED, info, now));
    }
    let days_left = info.days_left(now);
    // The tightest threshold announced so far covers every looser one.
    let announced = mine()
        .filter(|e| e.event == names::EXPIRING)
        .filter_map(|e| e.threshold_days)
        .min();
    let tightest_crossed = thresholds
        .days()
        .iter()
        .copied()
        .filter(|t| days_left <= i64::from(*t))
        .min()?;
    if announced.is_some_and(|a| a <= tightest_crossed) {
        return None;
    }
    let mut event = CertEvent::new(names::EXPIRING, info, now);
    event.threshold_days = Some(tightest_crossed);
    Some(event)
}

/// The warnings `GET /v1/pushcert` lists for the certificate in use: expiry (inside the
/// widest threshold or past it), APNs's refusal, a missing Apple ID memo.
pub fn warnings(
    info: &CertificateInfo,
    now: OffsetDateTime,
    thresholds: &Thresholds,
    rejected: Option<&str>,
    apple_id: Option<&str>,
) -> Vec<String> {
    let mut out = Vec::new();
    let renew = match apple_id {
        Some(id) => format!(
            "renew it in the Apple Push Certificates Portal (\"Renew\", signed in as {id}) and upload it with PUT /v1/pushcert"
        ),
        None => "renew it in the Apple Push Certificates Portal (\"Renew\", with the Apple ID that created it) and upload it with PUT /v1/pushcert".to_owned(),
    };
    let not_after = rfc3339(info.not_after());
    if info.is_expired(now) {
        out.push(format!(
            "expired on {not_after}: APNs refuses it and no device can be reached; {renew}"
        ));
    } else if state(info, now, thresholds, false) == CertState::Expiring {
        let days = info.days_left(now);
        out.push(format!("expires in {days} day(s), on {not_after}; {renew}"));
    }
    if let Some(detail) = rejected {
        out.push(format!(
            "APNs refused this certificate ({detail}): pushes fail until a valid certificate is registered"
        ));
    }
    if apple_id.is_none() {
        out.push(
            "no Apple ID memo: record which Apple ID renews it (PUT /v1/pushcert/memo); a lost Apple ID means re-enrolling every device".to_owned(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use magicpush_fixtures::{push_cert, Ca, KeyKind};
    use time::Duration;

    use super::*;

    fn cert(expires_in_days: i64) -> (CertificateInfo, OffsetDateTime) {
        let now = OffsetDateTime::now_utc();
        let ca = Ca::new("test", KeyKind::EcdsaP256).unwrap();
        let c = push_cert(
            &ca,
            "11111111-2222-3333-4444-555555555555",
            now - Duration::days(300),
            now + Duration::days(expires_in_days),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        (
            CertificateInfo::from_pem(c.cert_pem.as_bytes()).unwrap(),
            now,
        )
    }

    #[test]
    fn thresholds_parse_sorted_and_checked() {
        assert_eq!(
            Thresholds::parse("7, 60,30,7").unwrap().days(),
            &[60, 30, 7]
        );
        assert!(Thresholds::parse("").unwrap().days().is_empty());
        assert!(Thresholds::parse("0").is_err());
        assert!(Thresholds::parse("x").is_err());
        assert_eq!(Thresholds::default().days(), &[60, 30, 14, 7, 3, 1]);
    }

    #[test]
    fn each_crossing_once_as_the_clock_moves() {
        let (info, start) = cert(90);
        let t = Thresholds::default();
        let mut recorded: Vec<CertEvent> = Vec::new();
        let mut announced = Vec::new();
        // Hour by hour for 92 days.
        for hour in 0..(92 * 24) {
            let now = start + Duration::hours(hour);
            if let Some(e) = due(&info, now, &t, &recorded) {
                announced.push((e.event.clone(), e.threshold_days));
                recorded.push(e);
            }
        }
        let expected: Vec<(String, Option<u32>)> = [60, 30, 14, 7, 3, 1]
            .iter()
            .map(|d| (names::EXPIRING.to_owned(), Some(*d)))
            .chain([(names::EXPIRED.to_owned(), None)])
            .collect();
        assert_eq!(announced, expected);
    }

    #[test]
    fn a_jump_announces_the_tightest_once() {
        let (info, now) = cert(5);
        let t = Thresholds::default();
        let e = due(&info, now, &t, &[]).unwrap();
        assert_eq!(e.threshold_days, Some(7));
        assert_eq!(due(&info, now, &t, std::slice::from_ref(&e)), None);
        let (other, _) = cert(5);
        assert!(
            due(&other, now, &t, &[e]).is_some(),
            "another serial is another certificate"
        );
    }

    #[test]
    fn states_and_warnings() {
        let t = Thresholds::default();
        let (far, now) = cert(200);
        assert_eq!(state(&far, now, &t, false), CertState::Valid);
        assert_eq!(state(&far, now, &t, true), CertState::Rejected);
        let (near, _) = cert(20);
        assert_eq!(state(&near, now, &t, false), CertState::Expiring);
        let w = warnings(&near, now, &t, None, Some("a@b.jp"));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("expires in 19 day") && w[0].contains("a@b.jp"),
            "{w:?}"
        );
        let (gone, _) = cert(-1);
        assert_eq!(state(&gone, now, &t, true), CertState::Expired);
        let w = warnings(&gone, now, &t, None, None);
        assert!(w[0].starts_with("expired on"), "{w:?}");
        assert!(w[1].contains("no Apple ID memo"), "{w:?}");
    }
}
