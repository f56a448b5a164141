//! Device identity: which certificate a device request comes with, and whether it is one the
//! device CA issued. Pure functions over bytes and a time; no I/O.
//!
//! - [`signature`]: the `Mdm-Signature` header, a detached CMS SignedData over the body.
//! - [`header`]: a certificate forwarded by a TLS-terminating proxy (RFC 9440, nginx).
//! - [`trust`]: the chain to the built-in device CA or `--device-ca` (and
//!   `--device-intermediates`), validity, EKU.
//! - [`cache`]: verdicts of [`trust`] kept per certificate hash (bounded).
//! - [`authenticator`]: the three sources in the configured order, one verdict per request.
//!
//! Binding a verified identity to an enrollment (the store's side) is the service's job
//! (`crate::service::certauth`), and so is refusing a revoked certificate (the serials of
//! deleted devices' certificates, kept in the store: [`Refusal::Revoked`]). Every refusal here is a [`Refusal`]: the HTTP edge answers
//! 403 with its text, never 401 (a 401 makes the device delete its MDM profile).

pub mod authenticator;
pub mod cache;
pub mod header;
pub mod signature;
pub mod trust;

use std::sync::Arc;

use time::OffsetDateTime;

pub use authenticator::{DeviceAuthenticator, IdentitySource, SourceListError};
pub use trust::{DeviceTrust, TrustError};

/// Largest `Mdm-Signature` header accepted (base64 text), refused before any parsing.
pub const MAX_SIGNATURE_HEADER: usize = 16 * 1024;

/// A device identity certificate that verified against the device CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIdentity {
    /// SHA-256 of the certificate's DER: what an enrollment is bound to.
    pub sha256: [u8; 32],
    /// The subject, as text.
    pub subject: String,
    /// The serial number, upper-case hex.
    pub serial: String,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The subject's first organizational unit: the enrollment id the built-in device CA
    /// writes there (an invitation's id for a device enrolled through one).
    pub enrollment_id: Option<String>,
}

impl DeviceIdentity {
    /// The hash as lower-case hex.
    pub fn sha256_hex(&self) -> String {
        hex::encode(self.sha256)
    }
}

/// RFC 3339 text of a time, for refusals.
fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// A verified identity, shared between the cache and requests.
pub type SharedIdentity = Arc<DeviceIdentity>;

/// Why a device request's identity was refused. Each variant has its own metric label
/// ([`Refusal::reason`]) and a one-line text for the 403 body and the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// No identity came with the request from any configured source.
    #[error("no device identity: {0}")]
    Missing(String),
    /// The `Mdm-Signature` header is larger than [`MAX_SIGNATURE_HEADER`].
    #[error(
        "Mdm-Signature header of {0} bytes is larger than the {MAX_SIGNATURE_HEADER} accepted"
    )]
    Oversized(usize),
    /// The header is not base64, or the CMS structure does not parse.
    #[error("malformed Mdm-Signature: {0}")]
    Malformed(String),
    /// The SignedData does not have exactly one signer.
    #[error("Mdm-Signature must have exactly one signer, it has {0}")]
    SignerCount(usize),
    /// The signer's certificate is not in the SignedData's certificate set.
    #[error("Mdm-Signature: the signer's certificate is not in the message")]
    SignerCertificateMissing,
    /// A digest or signature algorithm this server does not accept.
    #[error("Mdm-Signature: unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    /// The signed attributes are missing or not as required (contentType, messageDigest).
    #[error("Mdm-Signature: {0}")]
    SignedAttributes(String),
    /// The messageDigest attribute is not the digest of the body: the body was altered.
    #[error("Mdm-Signature: the body's digest does not match the signed messageDigest (the body was altered)")]
    DigestMismatch,
    /// The signature does not verify with the signer certificate's key.
    #[error("Mdm-Signature: the signature does not verify with the signer certificate's key")]
    BadSignature,
    /// The signingTime attribute lies outside the signer certificate's validity.
    #[error("Mdm-Signature: signingTime {signing_time} is outside the certificate's validity")]
    SigningTime {
        /// As signed (RFC 3339).
        signing_time: String,
    },
    /// A proxy-forwarded certificate header that does not hold one certificate.
    #[error("malformed {header} header: {detail}")]
    HeaderMalformed {
        /// The header's name.
        header: String,
        /// What is wrong.
        detail: String,
    },
    /// The certificate does not chain to the device CA.
    #[error("identity certificate {subject} is not issued by the device CA: {detail}")]
    Untrusted {
        /// Its subject.
        subject: String,
        /// The verifier's reason.
        detail: String,
    },
    /// The certificate (or its chain) is outside its validity now.
    #[error("identity certificate {subject} is not valid now: {detail}")]
    Expired {
        /// Its subject.
        subject: String,
        /// Dates.
        detail: String,
    },
    /// The certificate has an extended key usage without clientAuth.
    #[error("identity certificate {subject} is not for client authentication (its extended key usage lacks clientAuth)")]
    NotForClientAuth {
        /// Its subject.
        subject: String,
    },
    /// The certificate is valid but is not the one the device enrolled with.
    #[error("{0}")]
    Unbound(String),
    /// At Authenticate: the certificate is already bound to another device.
    #[error("{0}")]
    InUse(String),
    /// The certificate was revoked (its device was deleted): the device must enroll again.
    #[error("identity certificate {subject} (serial {serial}) is revoked: its device was deleted and must enroll again")]
    Revoked {
        /// Its subject.
        subject: String,
        /// Its serial, hex.
        serial: String,
    },
    /// At Authenticate: the certificate came from an enrollment invitation for another
    /// tenant than the topic the device names.
    #[error("identity certificate {subject} was issued through an invitation for topic {invited}, not {topic}: enroll with that tenant's profile")]
    OtherTenant {
        /// Its subject.
        subject: String,
        /// The invitation's topic.
        invited: String,
        /// The topic the Authenticate names.
        topic: String,
    },
}

impl Refusal {
    /// A bounded metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Missing(_) => "missing",
            Refusal::Oversized(_) => "oversized",
            Refusal::Malformed(_) => "malformed",
            Refusal::SignerCount(_) => "signer_count",
            Refusal::SignerCertificateMissing => "signer_certificate_missing",
            Refusal::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            Refusal::SignedAttributes(_) => "signed_attributes",
            Refusal::DigestMismatch => "digest_mismatch",
            Refusal::BadSignature => "bad_signature",
            Refusal::SigningTime { .. } => "signing_time",
            Refusal::HeaderMalformed { .. } => "header_malformed",
            Refusal::Untrusted { .. } => "untrusted",
            Refusal::Expired { .. } => "expired",
            Refusal::NotForClientAuth { .. } => "not_client_auth",
            Refusal::Unbound(_) => "unbound",
            Refusal::InUse(_) => "in_use",
            Refusal::Revoked { .. } => "revoked",
            Refusal::OtherTenant { .. } => "other_tenant",
        }
    }
}
