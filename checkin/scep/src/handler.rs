//! [`handle`]: one PKIOperation request in, one CertRep out. Pure: the challenge store, the
//! revocation check, the clock and the randomness come from the caller. [`prepare`] and
//! [`Prepared::answer`] are the same in two steps, for stores that cannot be asked from
//! inside a synchronous call.

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
///
/// The same as [`prepare`], asking the [`Question`] of the store or the revocation check,
/// then [`Prepared::answer`]: callers whose stores are asynchronous use those two steps.
pub fn handle_with(
    request: &[u8],
    ca: &DeviceCa,
    challenges: &mut dyn ChallengeStore,
    revoked: &dyn RevocationCheck,
    policy: &Policy,
    now: SystemTime,
    rng: &mut impl CryptoRngCore,
) -> Result<PkiResponse, ScepError> {
    let prepared = prepare(request, ca, now, rng)?;
    let verdict = match prepared.question() {
        Question::Challenge(challenge) => match challenges.consume(challenge, now) {
            Some(id) => Verdict::Enroll(id),
            None => Verdict::Refuse,
        },
        Question::Revoked(id) => {
            if revoked.is_revoked(id) {
                Verdict::Refuse
            } else {
                Verdict::Enroll(id.enrollment_id.clone())
            }
        }
        Question::None => Verdict::Refuse,
    };
    prepared.answer(ca, verdict, policy, now, rng)
}

/// A request checked as far as the CA can alone: what is left is a question for the caller's
/// stores ([`Prepared::question`]), then the answer ([`Prepared::answer`]).
#[derive(Debug)]
pub struct Prepared {
    request: message::Request,
    stage: Result<Stage, Refusal>,
}

#[derive(Debug)]
struct Stage {
    csr: csr::Csr,
    cipher: envelope::ContentCipher,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    /// PKCSReq: the CSR's challengePassword.
    Enrollment { challenge: String },
    /// RenewalReq: the signer's certificate, issued by this CA and valid now.
    Renewal { certificate: CertificateId },
}

/// What the caller must find out before [`Prepared::answer`].
#[derive(Debug, PartialEq, Eq)]
pub enum Question<'a> {
    /// PKCSReq: consume this challenge; its enrollment id, or a refusal.
    Challenge(&'a str),
    /// RenewalReq: is this certificate revoked? If not, its enrollment id carries over.
    Revoked(&'a CertificateId),
    /// Nothing: the request is refused already (answer with any verdict).
    None,
}

/// The caller's finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Issue a certificate for this enrollment id.
    Enroll(String),
    /// The challenge is unknown, used or expired; or the certificate is revoked.
    Refuse,
}

/// Parses and checks a PKIOperation request with the CA alone: the signature, the message
/// type, the envelope, the CSR, and for a renewal the signer's certificate (issued by this
/// CA, valid at `now`). No store is touched.
pub fn prepare(
    request: &[u8],
    ca: &DeviceCa,
    now: SystemTime,
    rng: &mut impl CryptoRngCore,
) -> Result<Prepared, ScepError> {
    if request.len() > crate::MAX_MESSAGE {
        return Err(ScepError::Oversized(request.len()));
    }
    let request = message::parse(request)?;
    let stage = request.verify().and_then(|_| stage(&request, ca, now, rng));
    Ok(Prepared { request, stage })
}

impl Prepared {
    /// What the caller must look up (see [`Question`]).
    pub fn question(&self) -> Question<'_> {
        match &self.stage {
            Ok(Stage {
                kind: Kind::Enrollment { challenge },
                ..
            }) => Question::Challenge(challenge),
            Ok(Stage {
                kind: Kind::Renewal { certificate },
                ..
            }) => Question::Revoked(certificate),
            Err(_) => Question::None,
        }
    }

    /// The request's messageType.
    pub fn message_type(&self) -> Option<MessageType> {
        self.request.message_type
    }

    /// The request's transactionID.
    pub fn transaction_id(&self) -> &str {
        &self.request.transaction_id
    }

    /// Builds the CertRep: the certificate when the request passed and the verdict is
    /// [`Verdict::Enroll`], else FAILURE with the failInfo (badRequest for a refused verdict).
    pub fn answer(
        self,
        ca: &DeviceCa,
        verdict: Verdict,
        policy: &Policy,
        now: SystemTime,
        rng: &mut impl CryptoRngCore,
    ) -> Result<PkiResponse, ScepError> {
        let request = self.request;
        let decision = self.stage.and_then(|stage| {
            let enrollment_id = match (verdict, &stage.kind) {
                (Verdict::Enroll(id), _) => id,
                (Verdict::Refuse, Kind::Enrollment { .. }) => {
                    return Err(Refusal::new(
                        FailInfo::BadRequest,
                        "the challenge is unknown, used or expired",
                    ))
                }
                (Verdict::Refuse, Kind::Renewal { .. }) => {
                    return Err(Refusal::new(
                        FailInfo::BadRequest,
                        "the certificate presented for renewal is revoked",
                    ))
                }
            };
            let certificate = ca
                .issue(
                    &DeviceCertRequest {
                        public_key_der: &stage.csr.public_key_der,
                        common_name: &stage.csr.common_name,
                        enrollment_id: &enrollment_id,
                        validity: policy.device_validity,
                    },
                    now,
                    rng,
                )
                .map_err(|e| Refusal::new(FailInfo::BadRequest, format!("issuing: {e}")))?;
            Ok((certificate, enrollment_id, stage.cipher))
        });
        // Answer with the request's digest when it is one we have, else SHA-256.
        let reply_digest = request.digest.unwrap_or(Digest::Sha256);
        let (outcome, refusal) = match &decision {
            Ok((certificate, _, cipher)) => (
                Outcome::Issued {
                    certificate,
                    recipient: &request.signer,
                    cipher: *cipher,
                },
                None,
            ),
            Err(refusal) => (Outcome::Refused(refusal.fail_info), Some(refusal)),
        };
        let status = match outcome {
            Outcome::Issued { .. } => PkiStatus::Success,
            Outcome::Refused(_) => PkiStatus::Failure,
        };
        let bytes = reply::cert_rep(
            ca,
            reply_digest,
            &request.transaction_id,
            &request.sender_nonce,
            outcome,
            rng,
        )
        .map_err(ScepError::Reply)?;
        let refusal = refusal.cloned();
        let issued = decision.ok();
        Ok(PkiResponse {
            bytes,
            status,
            fail_info: refusal.as_ref().map(|r| r.fail_info),
            reason: refusal.map(|r| r.reason),
            message_type: request.message_type,
            transaction_id: request.transaction_id,
            certificate: issued.as_ref().map(|i| i.0.clone()),
            enrollment_id: issued.map(|i| i.1),
        })
    }
}

/// Everything the CA checks alone, after the signature.
fn stage(
    request: &message::Request,
    ca: &DeviceCa,
    now: SystemTime,
    rng: &mut impl CryptoRngCore,
) -> Result<Stage, Refusal> {
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

    let kind = if renewal {
        Kind::Renewal {
            certificate: renewal_certificate(&request.signer, ca, now)?,
        }
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
        let challenge = csr.challenge.clone().ok_or_else(|| {
            Refusal::new(FailInfo::BadRequest, "the CSR has no challengePassword")
        })?;
        Kind::Enrollment { challenge }
    };
    Ok(Stage {
        csr,
        cipher: opened.cipher,
        kind,
    })
}

/// RenewalReq: the signer must hold a certificate this CA issued, valid now, with an
/// enrollment id (which the new certificate keeps); whether it is revoked is the caller's.
fn renewal_certificate(
    signer: &Certificate,
    ca: &DeviceCa,
    now: SystemTime,
) -> Result<CertificateId, Refusal> {
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
    Ok(CertificateId {
        serial_hex: hex::encode(signer.tbs_certificate().serial_number().as_bytes()),
        sha256_hex: hex::encode(Digest::Sha256.hash(&der)),
        enrollment_id,
    })
}
