//! Whether a new push certificate may replace the registered one.
//!
//! A renewal made with "Renew" in the Apple Push Certificates Portal keeps the topic; one made
//! with "Create" (or with another Apple ID) gets a new topic, and devices enrolled under the old
//! topic never receive a push again. The seed manual calls that refusal E320.

use time::OffsetDateTime;

use super::info::{format_date, CertificateInfo};

/// Why a candidate certificate cannot replace the registered one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenewalError {
    /// E320: the candidate's topic (Bundle Identifier) differs from the registered one.
    #[error("{}", topic_mismatch_message(current, candidate))]
    TopicMismatch {
        /// The registered certificate.
        current: Box<CertificateInfo>,
        /// The uploaded certificate.
        candidate: Box<CertificateInfo>,
    },

    /// The candidate does not expire later than the registered certificate (an old copy was
    /// uploaded, or the same certificate again).
    #[error(
        "the new certificate expires {} — not later than the registered certificate ({}); upload the certificate downloaded after \"Renew\" in the Apple Push Certificates Portal.\n  registered: {}\n  new:        {}",
        format_date(candidate.not_after()),
        format_date(current.not_after()),
        current.identity(),
        candidate.identity()
    )]
    NotLater {
        /// The registered certificate.
        current: Box<CertificateInfo>,
        /// The uploaded certificate.
        candidate: Box<CertificateInfo>,
    },

    /// The candidate's validity has not started yet (check the server's clock).
    #[error(
        "the new certificate is not valid yet: it is valid from {} (now {}); check this server's clock, or wait.\n  new: {}",
        format_date(candidate.not_before()),
        format_date(*now),
        candidate.identity()
    )]
    NotYetValid {
        /// The uploaded certificate.
        candidate: Box<CertificateInfo>,
        /// The time of the check.
        now: OffsetDateTime,
    },

    /// The candidate has already expired.
    #[error(
        "the new certificate has already expired ({}, now {}); renew it again in the Apple Push Certificates Portal and upload the new download.\n  new: {}",
        format_date(candidate.not_after()),
        format_date(*now),
        candidate.identity()
    )]
    Expired {
        /// The uploaded certificate.
        candidate: Box<CertificateInfo>,
        /// The time of the check.
        now: OffsetDateTime,
    },
}

impl RenewalError {
    /// The seed manual's error code, when there is one (`E320` for a topic mismatch).
    pub fn code(&self) -> Option<&'static str> {
        match self {
            RenewalError::TopicMismatch { .. } => Some("E320"),
            _ => None,
        }
    }
}

/// Accepts `candidate` as the renewal of `current` only if it has the same topic, expires
/// later, and is valid at `now`. The topic is checked first: it is the mistake that loses
/// devices.
pub fn check_renewal(
    current: &CertificateInfo,
    candidate: &CertificateInfo,
    now: OffsetDateTime,
) -> Result<(), RenewalError> {
    if current.topic() != candidate.topic() {
        return Err(RenewalError::TopicMismatch {
            current: Box::new(current.clone()),
            candidate: Box::new(candidate.clone()),
        });
    }
    if candidate.is_expired(now) {
        return Err(RenewalError::Expired {
            candidate: Box::new(candidate.clone()),
            now,
        });
    }
    if candidate.is_not_yet_valid(now) {
        return Err(RenewalError::NotYetValid {
            candidate: Box::new(candidate.clone()),
            now,
        });
    }
    if candidate.not_after() <= current.not_after() {
        return Err(RenewalError::NotLater {
            current: Box::new(current.clone()),
            candidate: Box::new(candidate.clone()),
        });
    }
    Ok(())
}

fn topic_mismatch_message(current: &CertificateInfo, candidate: &CertificateInfo) -> String {
    let apsp = |c: &CertificateInfo| {
        c.apsp_uuid()
            .map(|u| format!("CN = APSP:{u}"))
            .unwrap_or_else(|| format!("subject {}", c.subject()))
    };
    format!(
        "E320: the new certificate's topic (Bundle Identifier) does not match the registered certificate's topic.\n\
         \x20 registered: topic {}\n\
         \x20             {}, serial {}, expires {}\n\
         \x20 new:        topic {}\n\
         \x20             {}, serial {}, expires {}\n\
         The new certificate was not made by renewing the registered one (it was created as a new certificate, \
         or with another Apple ID). Devices enrolled under the registered topic would never be reached again, so it was refused.\n\
         In the Apple Push Certificates Portal, sign in with the same Apple ID that created the registered certificate, \
         find it in the list by comparing the APSP part of the subject (CN = APSP:…), the serial number and the expiry date \
         with the values above, choose \"Renew\" for that certificate (not \"Create a Certificate\"), and upload the renewed certificate.",
        current.topic(),
        apsp(current),
        current.serial(),
        format_date(current.not_after()),
        candidate.topic(),
        apsp(candidate),
        candidate.serial(),
        format_date(candidate.not_after()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use magicpush_fixtures::{push_cert, Ca, KeyKind, TestPki};
    use time::{macros::datetime, Duration};

    fn info(pem: &str) -> CertificateInfo {
        CertificateInfo::from_pem(pem.as_bytes()).unwrap()
    }

    fn committed(name: &str) -> CertificateInfo {
        CertificateInfo::from_pem(&magicpush_fixtures::read(name)).unwrap()
    }

    const NOW: OffsetDateTime = datetime!(2026-11-25 12:00 UTC);

    #[test]
    fn a_renewal_with_the_same_topic_and_a_later_expiry_is_accepted() {
        let pki = TestPki::generate().unwrap();
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            check_renewal(
                &info(&pki.push.cert_pem),
                &info(&pki.push_renewal.cert_pem),
                now
            ),
            Ok(())
        );
        assert_eq!(
            check_renewal(
                &committed("certs/push.pem"),
                &committed("certs/push-renewal.pem"),
                NOW
            ),
            Ok(())
        );
    }

    #[test]
    fn another_topic_is_e320_naming_both_certificates() {
        let current = committed("certs/push.pem");
        let candidate = committed("certs/push-other-topic.pem");
        let err = check_renewal(&current, &candidate, NOW).unwrap_err();
        assert!(matches!(err, RenewalError::TopicMismatch { .. }));
        assert_eq!(err.code(), Some("E320"));
        let msg = err.to_string();
        assert!(msg.starts_with("E320:"), "{msg}");
        for needle in [
            current.topic(),
            candidate.topic(),
            current.apsp_uuid().unwrap(),
            candidate.apsp_uuid().unwrap(),
            current.serial(),
            candidate.serial(),
            "2036-01-01",
            "Renew",
            "same Apple ID",
        ] {
            assert!(msg.contains(needle), "missing {needle:?} in {msg}");
        }
    }

    #[test]
    fn topic_is_checked_before_dates() {
        // Another topic AND expired: the topic is what the administrator must fix.
        let pki = TestPki::generate().unwrap();
        let other_expired = {
            let now = OffsetDateTime::now_utc();
            push_cert(
                &pki.ca,
                "11111111-2222-3333-4444-555555555555",
                now - Duration::days(10),
                now - Duration::days(1),
                KeyKind::EcdsaP256,
            )
            .unwrap()
        };
        let err = check_renewal(
            &info(&pki.push.cert_pem),
            &info(&other_expired.cert_pem),
            OffsetDateTime::now_utc(),
        )
        .unwrap_err();
        assert!(matches!(err, RenewalError::TopicMismatch { .. }), "{err}");
    }

    #[test]
    fn an_older_candidate_is_refused() {
        // The registered one is the renewal; the "new" one is the older original.
        let err = check_renewal(
            &committed("certs/push-renewal.pem"),
            &committed("certs/push.pem"),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, RenewalError::NotLater { .. }), "{err}");
        assert!(err.to_string().contains("not later"));
        // The same certificate uploaded again is not a renewal either.
        let same = committed("certs/push.pem");
        assert!(matches!(
            check_renewal(&same, &same, NOW),
            Err(RenewalError::NotLater { .. })
        ));
    }

    #[test]
    fn a_candidate_not_yet_valid_is_refused() {
        let err = check_renewal(
            &committed("certs/push.pem"),
            &committed("certs/push-not-yet-valid.pem"),
            NOW,
        )
        .unwrap_err();
        assert!(matches!(err, RenewalError::NotYetValid { .. }), "{err}");
        assert!(err.to_string().contains("2040-01-01"));
    }

    #[test]
    fn an_expired_candidate_is_refused() {
        let ca = Ca::new("ca", KeyKind::EcdsaP256).unwrap();
        let uuid = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee";
        let current = push_cert(
            &ca,
            uuid,
            datetime!(2020-01-01 00:00 UTC),
            datetime!(2021-01-01 00:00 UTC),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        let candidate = push_cert(
            &ca,
            uuid,
            datetime!(2020-06-01 00:00 UTC),
            datetime!(2022-01-01 00:00 UTC),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        let err =
            check_renewal(&info(&current.cert_pem), &info(&candidate.cert_pem), NOW).unwrap_err();
        assert!(matches!(err, RenewalError::Expired { .. }), "{err}");
        // The same pair, checked back when the candidate was valid, is accepted.
        assert_eq!(
            check_renewal(
                &info(&current.cert_pem),
                &info(&candidate.cert_pem),
                datetime!(2021-06-01 00:00 UTC)
            ),
            Ok(())
        );
    }
}
