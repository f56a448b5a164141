//! [`handle`]: one PKIOperation request in, one CertRep out. Pure: the challenge store, the
//! revocation check, the clock and the randomness come from the caller.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use der::Encode;
use rand_core::CryptoRngCore;
use x509_cert::Certificate;

use crate::attrs::MessageType;
use crate::ca::{enrollment_id_of, DeviceCa, DeviceCertRequest, DEFAULT_DEVICE_VALIDITY};
use crate::csr;
use crate::digest::Digest;
use crate::envelope;
use crate::error::{FailInfo, Refusal, ScepError};
use crate::message;
use crate::reply::{self, Outcome, PkiStatus};

/// The one-time enrollment challenges (the SCEP payload's `Challenge`).
pub trait ChallengeStore {
    /// Consumes `challenge` if it is known, unused and unexpired at `now`, and returns the
    /// enrollment id it was made for; `None` otherwise. A challenge is good for one
    /// certificate: once returned, never again. Compare secrets in constant time
    /// ([`crate::ct_eq`]) or look them up by a digest.
    fn consume(&mut self, challenge: &str, now: SystemTime) -> Option<String>;
}

/// Which issued certificates may no longer renew.
pub trait RevocationCheck {
    /// Whether the certificate is revoked.
    fn is_revoked(&self, certificate: &CertificateId) -> bool;
}

/// A certificate of this CA presented for renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateId {
    /// Its serial number, lowercase hex of the DER INTEGER's bytes.
    pub serial_hex: String,
    /// SHA-256 of its DER, lowercase hex.
    pub sha256_hex: String,
    /// The enrollment id it carries.
    pub enrollment_id: String,
}

/// Nothing is revoked (tests, or before a revocation list exists).
#[derive(Debug, Clone, Copy, Default)]
pub struct NothingRevoked;

impl RevocationCheck for NothingRevoked {
    fn is_revoked(&self, _: &CertificateId) -> bool {
        false
    }
}

/// The CA's choices for what it issues.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// How long an issued device certificate is valid.
    pub device_validity: Duration,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            device_validity: DEFAULT_DEVICE_VALIDITY,
        }
    }
}

/// The answer to a PKIOperation: the CertRep to send (`application/x-pki-message`), and what
/// it says, for the caller's log and store.
#[derive(Debug, Clone)]
pub struct PkiResponse {
    /// The CertRep, DER.
    pub bytes: Vec<u8>,
    /// SUCCESS or FAILURE.
    pub status: PkiStatus,
    /// Why it failed (FAILURE only).
    pub fail_info: Option<FailInfo>,
    /// The operator-facing reason of a failure (never sent to the client).
    pub reason: Option<String>,
    /// The request's messageType (`None`: not a number).
    pub message_type: Option<MessageType>,
    /// The request's transactionID, echoed.
    pub transaction_id: String,
    /// The issued certificate, DER (SUCCESS only).
    pub certificate: Option<Vec<u8>>,
    /// The enrollment the certificate was issued for (SUCCESS only).
    pub enrollment_id: Option<String>,
}

/// What `decide` settles on for an acceptable request.
struct Issued {
    certificate: Vec<u8>,
    enrollment_id: String,
    cipher: envelope::ContentCipher,
}

/// [`handle_with`] with the default [`Policy`] (one-year device certificates).
pub fn handle(
    request: &[u8],
    ca: &DeviceCa,
    challenges: &mut dyn ChallengeStore,
    revoked: &dyn RevocationCheck,
    now: SystemTime,
    rng: &mut impl CryptoRngCore,
) -> Result<PkiResponse, ScepError> {
    handle_with(
        request,
        ca,
        challenges,
        revoked,
        &Policy::default(),
        now,
        rng,
    )
}

/// Answers one PKIOperation message (the HTTP body of a POST, or the base64-decoded
/// `message` of a GET). A message that cannot be answered — oversized, not CMS SignedData,
/// without transactionID or senderNonce — is a [`ScepError`] (HTTP 400); every other
/// refusal is a CertRep FAILURE with its failInfo.
pub fn handle_with(
    request: &[u8],
    ca: &DeviceCa,
    challenges: &mut dyn ChallengeStore,
    revoked: &dyn RevocationCheck,
    policy: &Policy,
    now: SystemTime,
    rng: &mut impl CryptoRngCore,
) -> Result<PkiResponse, ScepError> {
    if request.len() > crate::MAX_MESSAGE {
        return Err(ScepError::Oversized(request.len()));
    }
    let parsed = message::parse(request)?;
    let verified = parsed.verify();
    // Answer with the request's digest when it is one we have, else SHA-256.
    let reply_digest = parsed.digest.unwrap_or(Digest::Sha256);
    let decision =
        verified.and_then(|_| decide(&parsed, ca, challenges, revoked, policy, now, rng));
    let (outcome, issued, refusal) = match &decision {
        Ok(issued) => (
            Outcome::Issued {
                certificate: &issued.certificate,
                recipient: &parsed.signer,
                cipher: issued.cipher,
            },
            Some(issued),
            None,
        ),
        Err(refusal) => (Outcome::Refused(refusal.fail_info), None, Some(refusal)),
    };
    let status = match outcome {
        Outcome::Issued { .. } => PkiStatus::Success,
        Outcome::Refused(_) => PkiStatus::Failure,
    };
    let bytes = reply::cert_rep(
        ca,
        reply_digest,
        &parsed.transaction_id,
        &parsed.sender_nonce,
        outcome,
        rng,
    )
    .map_err(ScepError::Reply)?;
    Ok(PkiResponse {
        bytes,
        status,
        fail_info: refusal.map(|r| r.fail_info),
        reason: refusal.map(|r| r.reason.clone()),
        message_type: parsed.message_type,
        transaction_id: parsed.transaction_id.clone(),
        certificate: issued.map(|i| i.certificate.clone()),
        enrollment_id: issued.map(|i| i.enrollment_id.clone()),
    })
}

fn decide(
    request: &message::Request,
    ca: &DeviceCa,
    challenges: &mut dyn ChallengeStore,
    revoked: &dyn RevocationCheck,
    policy: &Policy,
    now: SystemTime,
    rng: &mut impl CryptoRngCore,
) -> Result<Issued, Refusal> {
    let renewal = match request.message_type {
        Some(MessageType::PkcsReq) => false,
        Some(MessageType::RenewalReq) => true,
        other => {
            return Err(Refusal::new(
                FailInfo::BadRequest,
                format!("messageType {other:?} is not served"),
            ))
        }
    };
    let content = request
        .content
        .as_deref()
        .ok_or_else(|| Refusal::new(FailInfo::BadRequest, "the request has no content"))?;
    let opened = envelope::open(content, ca.certificate(), ca.key(), rng)?;
    let csr = csr::parse(&opened.plaintext)?;

    let enrollment_id = if renewal {
        renewal_enrollment(&request.signer, ca, revoked, now)?
    } else {
        // PKCSReq: the self-signed signer certificate carries the CSR's key (RFC 8894 §2.3).
        let signer_key = request
            .signer
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| Refusal::new(FailInfo::BadRequest, e.to_string()))?;
        if signer_key != csr.public_key_der {
            return Err(Refusal::new(
                FailInfo::BadRequest,
                "the signer's key is not the CSR's key",
            ));
        }
        let challenge = csr.challenge.as_deref().ok_or_else(|| {
            Refusal::new(FailInfo::BadRequest, "the CSR has no challengePassword")
        })?;
        challenges.consume(challenge, now).ok_or_else(|| {
            Refusal::new(
                FailInfo::BadRequest,
                "the challenge is unknown, used or expired",
            )
        })?
    };
    let certificate = ca
        .issue(
            &DeviceCertRequest {
                public_key_der: &csr.public_key_der,
                common_name: &csr.common_name,
                enrollment_id: &enrollment_id,
                validity: policy.device_validity,
            },
            now,
            rng,
        )
        .map_err(|e| Refusal::new(FailInfo::BadRequest, format!("issuing: {e}")))?;
    Ok(Issued {
        certificate,
        enrollment_id,
        cipher: opened.cipher,
    })
}

/// RenewalReq: the signer must hold a certificate this CA issued, valid now, not revoked,
/// with an enrollment id, which the new certificate keeps.
fn renewal_enrollment(
    signer: &Certificate,
    ca: &DeviceCa,
    revoked: &dyn RevocationCheck,
    now: SystemTime,
) -> Result<String, Refusal> {
    if !ca.issued(signer) {
        return Err(Refusal::new(
            FailInfo::BadRequest,
            "a renewal signed with a certificate this CA did not issue",
        ));
    }
    let validity = signer.tbs_certificate().validity();
    let now = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    if now < validity.not_before.to_unix_duration() || now > validity.not_after.to_unix_duration() {
        return Err(Refusal::new(
            FailInfo::BadTime,
            "the certificate presented for renewal is not valid now",
        ));
    }
    let enrollment_id = enrollment_id_of(signer).ok_or_else(|| {
        Refusal::new(
            FailInfo::BadRequest,
            "the certificate presented for renewal has no enrollment id",
        )
    })?;
    let der = signer
        .to_der()
        .map_err(|e| Refusal::new(FailInfo::BadRequest, e.to_string()))?;
    let id = CertificateId {
        serial_hex: hex::encode(signer.tbs_certificate().serial_number().as_bytes()),
        sha256_hex: hex::encode(Digest::Sha256.hash(&der)),
        enrollment_id: enrollment_id.clone(),
    };
    if revoked.is_revoked(&id) {
        return Err(Refusal::new(
            FailInfo::BadRequest,
            "the certificate presented for renewal is revoked",
        ));
    }
    Ok(enrollment_id)
}
