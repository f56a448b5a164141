//! Classifying an APNs answer: what it means for this push, without I/O.

use serde::Deserialize;

use crate::cause::Reason;
use crate::cause::{Cause, EngineCause};
use crate::outcome::PushError;

/// What the engine must do with a push after APNs answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 200: accepted.
    Delivered {
        /// The `apns-id` header (empty if APNs sent none).
        apns_id: String,
    },
    /// A final answer for this push that retrying cannot change.
    Final(PushError),
    /// The certificate was refused (403): fail this push and put the pool in its
    /// certificate-rejected state.
    CertificateRejected(Reason),
    /// Transient: resend later, with backoff, within the deadline.
    Retry(Cause),
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
}

/// Reads `{"reason": "...", "timestamp": ms}`; a body that is not that JSON yields no reason.
pub fn parse_error_body(body: &[u8]) -> (Option<Reason>, Option<u64>) {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.reason.map(Reason::new), b.timestamp),
        Err(_) => (None, None),
    }
}

/// Classifies an answer by HTTP status and body. Unknown reasons are kept verbatim; a missing
/// reason becomes APNs's usual one for the status where APNs documents one (403 `Forbidden`,
/// 410 `Unregistered`, 429 `TooManyRequests`, …), so that summaries still group it, and
/// [`EngineCause::HttpStatus`] otherwise.
pub fn classify(status: u16, apns_id: Option<&str>, body: &[u8]) -> Verdict {
    if status == 200 {
        return Verdict::Delivered {
            apns_id: apns_id.unwrap_or_default().to_owned(),
        };
    }
    let (reason, timestamp_ms) = parse_error_body(body);
    let reason = reason.or_else(|| default_reason(status));
    match status {
        410 => Verdict::Final(PushError::Unregistered {
            reason: reason.unwrap_or(Reason::Unregistered),
            timestamp_ms,
        }),
        403 => {
            let reason = reason.unwrap_or(Reason::Forbidden);
            if is_certificate_reason(&reason) {
                Verdict::CertificateRejected(reason)
            } else {
                // Token-auth reasons (ExpiredProviderToken, …) cannot occur with certificate
                // auth; if they do, this request is wrong, not the certificate.
                Verdict::Final(PushError::Rejected {
                    status,
                    reason: reason.into(),
                })
            }
        }
        _ if status >= 500 => Verdict::Retry(or_status(reason, status)),
        429 => Verdict::Retry(or_status(reason, status)),
        _ => Verdict::Final(PushError::Rejected {
            status,
            reason: or_status(reason, status),
        }),
    }
}

/// APNs's reason, or the bare status when there is none.
fn or_status(reason: Option<Reason>, status: u16) -> Cause {
    match reason {
        Some(reason) => Cause::Apns(reason),
        None => Cause::Engine(EngineCause::HttpStatus(status)),
    }
}

/// 403 reasons that mean the push certificate itself is refused.
pub fn is_certificate_reason(reason: &Reason) -> bool {
    *reason == Reason::BadCertificate
        || *reason == Reason::BadCertificateEnvironment
        || *reason == Reason::Forbidden
}

/// The reason APNs documents for a status, for an answer whose body names none.
fn default_reason(status: u16) -> Option<Reason> {
    Some(match status {
        403 => Reason::Forbidden,
        404 => Reason::BadPath,
        405 => Reason::MethodNotAllowed,
        410 => Reason::Unregistered,
        413 => Reason::PayloadTooLarge,
        429 => Reason::TooManyRequests,
        500 => Reason::InternalServerError,
        503 => Reason::ServiceUnavailable,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(u16, &str, Verdict)] = &[
            (
                200,
                "",
                Verdict::Delivered {
                    apns_id: "ID".into(),
                },
            ),
            (
                410,
                r#"{"reason":"Unregistered","timestamp":1700000000000}"#,
                Verdict::Final(PushError::Unregistered {
                    reason: Reason::Unregistered,
                    timestamp_ms: Some(1_700_000_000_000),
                }),
            ),
            (
                410,
                r#"{"reason":"ExpiredToken"}"#,
                Verdict::Final(PushError::Unregistered {
                    reason: Reason::ExpiredToken,
                    timestamp_ms: None,
                }),
            ),
            (
                400,
                r#"{"reason":"BadDeviceToken"}"#,
                Verdict::Final(PushError::Rejected {
                    status: 400,
                    reason: Reason::BadDeviceToken.into(),
                }),
            ),
            (
                400,
                r#"{"reason":"DeviceTokenNotForTopic"}"#,
                Verdict::Final(PushError::Rejected {
                    status: 400,
                    reason: Reason::DeviceTokenNotForTopic.into(),
                }),
            ),
            (
                403,
                r#"{"reason":"BadCertificate"}"#,
                Verdict::CertificateRejected(Reason::BadCertificate),
            ),
            (
                403,
                r#"{"reason":"BadCertificateEnvironment"}"#,
                Verdict::CertificateRejected(Reason::BadCertificateEnvironment),
            ),
            (
                403,
                r#"{"reason":"ExpiredProviderToken"}"#,
                Verdict::Final(PushError::Rejected {
                    status: 403,
                    reason: Reason::ExpiredProviderToken.into(),
                }),
            ),
            (
                429,
                r#"{"reason":"TooManyRequests"}"#,
                Verdict::Retry(Reason::TooManyRequests.into()),
            ),
            (500, "", Verdict::Retry(Reason::InternalServerError.into())),
            (502, "", Verdict::Retry(EngineCause::HttpStatus(502).into())),
            (403, "", Verdict::CertificateRejected(Reason::Forbidden)),
            (
                410,
                "",
                Verdict::Final(PushError::Unregistered {
                    reason: Reason::Unregistered,
                    timestamp_ms: None,
                }),
            ),
            (
                400,
                "",
                Verdict::Final(PushError::Rejected {
                    status: 400,
                    reason: EngineCause::HttpStatus(400).into(),
                }),
            ),
            (
                503,
                r#"{"reason":"Shutdown"}"#,
                Verdict::Retry(Reason::Shutdown.into()),
            ),
            (
                413,
                "not json",
                Verdict::Final(PushError::Rejected {
                    status: 413,
                    reason: Reason::PayloadTooLarge.into(),
                }),
            ),
            (
                400,
                r#"{"reason":"BrandNewReason"}"#,
                Verdict::Final(PushError::Rejected {
                    status: 400,
                    reason: Reason::new("BrandNewReason").into(),
                }),
            ),
            (
                418,
                "",
                Verdict::Final(PushError::Rejected {
                    status: 418,
                    reason: EngineCause::HttpStatus(418).into(),
                }),
            ),
        ];
        for (status, body, want) in cases {
            assert_eq!(
                &classify(*status, Some("ID"), body.as_bytes()),
                want,
                "status {status} body {body}"
            );
        }
    }
}
